"""Sample Braze Currents exports for tests and benchmarks.

Real exports cannot be shared (PII), so this writes look-alike ones: Braze's folder layout (both the
`version=<n>/<env>/` and the older `<schema-id>/<zone>/` form), the 34 event types with the project's
own copies of their writer schemas (`devtools/schemas/`), realistic value sizes, users without an
`external_user_id` (to be dropped), and a few files of other types (to be skipped). Output is
deterministic per seed so a failing end-to-end run can be reproduced, and the returned report says what
the pipeline should find.

With `mapping='current'` (`--mapping current`) it writes the 80 types of the `current` mapping
profile instead, each with Braze's real writer schema read at generation time from the shared
reference data (`$CURRENTS_SHARED/currents-schemas/`, default `../shared` beside the repository,
as the tests use); this package is not shipped, and those schemas are not copied into it.
Without that folder (a clone on its own) the 80 types get look-alike schemas made from the
repository (`lookalike_schema`): the project's own schema where it has one, else the fields the
`current` mapping table reads, typed as the project's schemas type a field of that name.

    python -m devtools.sample --output DIR --events N --seed S [--mapping current] [--deliberate-gaps]
"""
import argparse
import datetime as dt
import json
import math
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import fastavro

from transforms.profiles import CLASSIC, CURRENT, PROFILES, currents_types

SCHEMA_DIR = Path(__file__).resolve().parent / 'schemas'
REPO = Path(__file__).resolve().parent.parent
CODECS = ('null', 'deflate', 'snappy')
CLUSTER = 'prod-01'
CONNECTION = 'GCS'
CURRENTS_VERSION = 10
ENVIRONMENT = 'us-01'

# Relative volumes, roughly as a mid-size Braze workspace sees them: sends and deliveries dominate,
# engagement is a fraction of that, News Feed (deprecated) and uninstalls are rare.
TYPE_WEIGHTS: Dict[str, float] = {
    'users.messages.pushnotification.Send': 18.0,
    'users.messages.pushnotification.Open': 2.5,
    'users.messages.pushnotification.Bounce': 0.8,
    'users.messages.pushnotification.IosForeground': 0.4,
    'users.messages.email.Send': 20.0,
    'users.messages.email.Delivery': 19.0,
    'users.messages.email.Open': 8.0,
    'users.messages.email.Click': 2.0,
    'users.messages.email.Bounce': 0.6,
    'users.messages.email.SoftBounce': 0.6,
    'users.messages.email.MarkAsSpam': 0.05,
    'users.messages.email.Unsubscribe': 0.2,
    'users.messages.sms.Send': 3.0,
    'users.messages.sms.CarrierSend': 2.8,
    'users.messages.sms.Delivery': 2.6,
    'users.messages.sms.DeliveryFailure': 0.2,
    'users.messages.sms.Rejection': 0.15,
    'users.messages.sms.InboundReceive': 0.3,
    'users.behaviors.subscriptiongroup.StateChange': 0.8,
    'users.messages.inappmessage.Impression': 3.0,
    'users.messages.inappmessage.Click': 0.5,
    'users.messages.contentcard.Send': 3.0,
    'users.messages.contentcard.Impression': 2.0,
    'users.messages.contentcard.Click': 0.3,
    'users.messages.contentcard.Dismiss': 0.4,
    'users.behaviors.app.NewsFeedImpression': 0.02,
    'users.messages.newsfeedcard.Impression': 0.02,
    'users.messages.newsfeedcard.Click': 0.01,
    'users.messages.webhook.Send': 1.5,
    'users.campaigns.Conversion': 1.0,
    'users.canvas.Conversion': 1.0,
    'users.canvas.Entry': 3.0,
    'users.campaigns.EnrollInControl': 0.5,
    'users.behaviors.Uninstall': 0.05,
}

# The `current` profile: the weights above, plus its own types (custom events and sessions are
# frequent); a type not listed weighs 1.0.
CURRENT_TYPE_WEIGHTS: Dict[str, float] = dict(TYPE_WEIGHTS, **{
    'users.behaviors.CustomEvent': 12.0, 'users.behaviors.app.SessionStart': 8.0,
    'users.behaviors.app.SessionEnd': 7.5, 'users.behaviors.app.FirstSession': 0.5,
    'users.behaviors.Purchase': 1.0, 'users.behaviors.Location': 0.8,
    'users.messages.whatsapp.Send': 2.0, 'users.messages.whatsapp.Delivery': 1.9,
    'users.messages.whatsapp.Read': 1.2, 'users.canvasstep.Progression': 3.0,
    'users.messages.banner.Impression': 2.0, 'users.messages.featureflag.Impression': 1.5,
})

# Types Currents also exports that the pipeline must skip, cycled through for other_type_files.
OTHER_TYPES = ('users.behaviors.CustomEvent', 'users.messages.email.Abort',
               'users.behaviors.app.SessionStart', 'users.messages.pushnotification.Abort',
               'users.behaviors.Purchase')
# The same for the `current` profile: types Currents exports that it does not map.
OTHER_TYPES_CURRENT = ('users.messages.banner.Dismiss', 'users.canvas.costep.Send',
                       'agentconsole.AgentExecuted', 'users.UserDeleteRequest',
                       'users.messages.email.Retry')


@dataclass
class SampleReport:
    """What was written, so tests can check the pipeline's counts against it."""
    files: List[str] = field(default_factory=list)
    other_files: List[str] = field(default_factory=list)
    events: int = 0
    eligible: int = 0
    by_type: Dict[str, Dict[str, int]] = field(default_factory=dict)
    partitions: Set[Tuple[str, str]] = field(default_factory=set)
    eligible_ids: Set[str] = field(default_factory=set)
    root: str = ''            # the dataexport.<cluster>.GCS.integration.<id> folder
    other_events: int = 0     # events in other_files (never eligible)
    rejected: int = 0         # with `gaps`: events whose id is too long to send (not eligible)
    lookalike: bool = False   # `current` types written with look-alike schemas (not Braze's)


@dataclass(frozen=True)
class SampleGaps:
    """Holes made on purpose, so the report and `--plan` have gaps to show (docs/report.md, "What counts as
    gaps"). Hours are indexes from the first hour; types are Currents types."""
    missing: Tuple[Tuple[str, int], ...] = ()     # no file of that type in that hour
    stops: Tuple[Tuple[str, int], ...] = ()       # no file of that type from that hour on
    rejected: Tuple[Tuple[str, int], ...] = ()    # every event's id longer than a messageId
                                                  # may be: all rejected message_id_too_long

    def omits(self, currents_type: str, hour: int) -> bool:
        return (currents_type, hour) in self.missing or any(
            t == currents_type and hour >= h for t, h in self.stops)


# Busy types of both mapping profiles (hundreds of events an hour in a 20,000-event sample).
GAP_TYPES = ('users.messages.email.Open', 'users.messages.sms.Delivery',
             'users.messages.contentcard.Send')


def deliberate_gaps(hours: int) -> SampleGaps:
    """The sample's deliberate gaps over `hours` hours (at least 4): Email Opened misses the
    middle hour, SMS Delivered stops for the last third, every Content Card Sent event of the
    hour at a quarter is rejected."""
    if hours < 4:
        raise ValueError(f'deliberate gaps need at least 4 hours, got {hours}')
    opened, delivered, card = GAP_TYPES
    return SampleGaps(missing=((opened, hours // 2),),
                      stops=((delivered, hours - max(1, hours // 3)),),
                      rejected=((card, hours // 4),))


def shared_schema_dir() -> Path:
    """Braze's real writer schemas: `$CURRENTS_SHARED/currents-schemas` (dev time only)."""
    return Path(os.environ.get('CURRENTS_SHARED', REPO.parent / 'shared')) / 'currents-schemas'


def schema_path(currents_type: str, mapping: str = CLASSIC) -> Path:
    if mapping == CURRENT:
        return shared_schema_dir() / f'{currents_type}.avsc'
    return SCHEMA_DIR / f'{currents_type}.avsc'


def load_schema(currents_type: str, mapping: str = CLASSIC) -> dict:
    """The writer schema of a type (JSON dict): the project's own for the 34 classic types,
    Braze's real one (shared reference data) for the `current` profile's 80."""
    path = schema_path(currents_type, mapping)
    if mapping == CURRENT and not path.is_file():
        raise ValueError(f'Braze writer schema not found: {path} (set CURRENTS_SHARED to the '
                         f'folder holding currents-schemas/)')
    with open(path) as fh:
        return json.load(fh)


def _field_types() -> Dict[str, object]:
    """Field name -> Avro type, as the project's own schemas (devtools/schemas/) type it."""
    types: Dict[str, object] = {}
    for path in sorted(SCHEMA_DIR.glob('*.avsc')):
        with open(path) as fh:
            for f in json.load(fh)['fields']:
                types.setdefault(f['name'], f['type'])
    return types


def lookalike_schema(currents_type: str) -> dict:
    """A writer schema for a `current` type without Braze's: the project's own copy for the
    classic types, else the identity fields and every Avro field the `current` table reads
    (typed as the project's schemas type that name; other fields nullable strings, a custom
    event's `name` a string). Sample data only: Braze's real types may differ."""
    own = SCHEMA_DIR / f'{currents_type}.avsc'
    if own.is_file():
        with open(own) as fh:
            return json.load(fh)
    from transforms.profiles import CURRENT_EVENTS
    spec = next(s for s in CURRENT_EVENTS if s.currents_type == currents_type)
    types = _field_types()
    fields = [{'name': 'id', 'type': 'string'}, {'name': 'user_id', 'type': 'string'},
              {'name': 'external_user_id', 'type': ['null', 'string'], 'default': None},
              {'name': 'time', 'type': 'int'}]
    if spec.segment_event is None:
        fields.append({'name': 'name', 'type': 'string'})
    named = {f['name'] for f in fields}
    for _, avro_field in spec.context + spec.properties:
        if avro_field in named or avro_field in spec.absent_from_writer_schema:
            continue
        named.add(avro_field)
        ftype = types.get(avro_field, ['null', 'string'])
        fields.append({'name': avro_field, 'type': ftype, 'default': None}
                      if _is_optional(ftype) else {'name': avro_field, 'type': ftype})
    namespace, name = currents_type.rsplit('.', 1)
    return {'type': 'record', 'name': name, 'namespace': f'dataexport.S3.inner.{namespace}',
            'doc': f'currents-to-segment look-alike of {currents_type} (sample data only)',
            'fields': fields}


def _other_schema(currents_type: str) -> dict:
    ns, name = currents_type.rsplit('.', 1)
    nullable = lambda n: {'name': n, 'type': ['null', 'string'], 'default': None}  # noqa: E731
    return {'type': 'record', 'name': name, 'namespace': f'dataexport.S3.inner.{ns}', 'fields': [
        {'name': 'id', 'type': 'string'}, {'name': 'user_id', 'type': 'string'},
        nullable('external_user_id'), {'name': 'time', 'type': 'int'}, nullable('app_group_id')]}


def parse_hour(text: str) -> dt.datetime:
    """`YYYY-MM-DD-HH` (or `YYYY-MM-DD`, hour 00) as an aware UTC datetime."""
    for fmt in ('%Y-%m-%d-%H', '%Y-%m-%d'):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc)
        except (TypeError, ValueError):
            pass
    raise ValueError(f'start_hour must be YYYY-MM-DD-HH, got {text!r}')


def _allocate(total: int, weights: List[float]) -> List[int]:
    """Split `total` in proportion to `weights` (largest remainder, deterministic)."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    out = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[:total - sum(out)]:
        out[i] += 1
    return out


# ---------------------------------------------------------------------------------------------
# Value pools. Built once per corpus from the seeded RNG; records are cheap copies of templates.

_WORDS_THEME = ('Spring Sale', 'Summer Kickoff', 'Back to School', 'Black Friday', 'Loyalty Points',
                'Welcome Series', 'Cart Abandonment', 'Price Drop', 'New Arrivals', 'Win-Back',
                'Subscription Renewal', 'Weekly Digest', 'Product Launch', 'Referral Bonus',
                'Flash Deal', 'Onboarding', 'Re-Engagement', 'Holiday Gift Guide', 'VIP Early Access')
_WORDS_KIND = ('Email', 'Push', 'SMS', 'Reminder', 'Announcement', 'Nudge', 'Follow-up', 'Journey',
               'Blast', 'Drip', 'Triggered Message', 'Multichannel')
_WORDS_AUDIENCE = ('Lapsed Buyers', 'All Users', 'New Signups', 'High LTV', 'iOS Users',
                   'Android Users', 'Trial Users', 'EU Customers', 'US East', 'Dormant 30d',
                   'Engaged Last 7d', 'Gold Tier')
_LOCALES = ('EN', 'DE', 'FR', 'ES', 'PT-BR', 'JA')
_TIMEZONES = ('America/New_York', 'America/Chicago', 'America/Denver', 'America/Los_Angeles',
              'Europe/London', 'Europe/Berlin', 'Europe/Paris', 'Asia/Tokyo', 'Australia/Sydney',
              'America/Sao_Paulo', 'Asia/Kolkata')
_FIRST = ('james', 'mary', 'john', 'patricia', 'robert', 'jennifer', 'michael', 'linda', 'wei',
          'fatima', 'lukas', 'sofia', 'hiroshi', 'amara', 'carlos', 'ines', 'olga', 'arjun')
_LAST = ('smith', 'johnson', 'garcia', 'mueller', 'rossi', 'kim', 'nguyen', 'tanaka', 'silva',
         'kowalski', 'okafor', 'dubois', 'jensen', 'patel', 'cohen', 'haddad')
_MAIL_DOMAINS = ('gmail.com', 'yahoo.com', 'outlook.com', 'hotmail.com', 'icloud.com', 'gmx.de',
                 'proton.me', 'aol.com', 'example.org', 'fastmail.com')
_USER_AGENTS = (
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) '
    'Mobile/15E148',
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) '
    'Chrome/124.0.0.0 Safari/537.36',
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) '
    'Version/17.4 Safari/605.1.15',
    'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) '
    'Chrome/124.0.6367.82 Mobile Safari/537.36',
    'Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) '
    'Chrome/123.0.6312.99 Mobile Safari/537.36',
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0',
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) '
    'Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67',
    'Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)',
    'Mozilla/5.0 (iPad; CPU OS 16_7_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) '
    'Version/16.6 Mobile/15E148 Safari/604.1',
)
# (platform, os_version, device_model, ad_id_type)
_DEVICES = (
    ('ios', 'iOS 17.4.1', 'iPhone15,2', 'ios_idfa'), ('ios', 'iOS 16.7.7', 'iPhone12,1', 'ios_idfa'),
    ('ios', 'iPadOS 17.4', 'iPad13,16', 'ios_idfa'), ('android', 'Android 14', 'Pixel 8', 'google_ad_id'),
    ('android', 'Android 13', 'SM-S918B', 'google_ad_id'),
    ('android', 'Android 12', 'moto g stylus 5G', 'google_ad_id'),
    ('web', 'Windows 10', 'Chrome', None), ('web', 'Mac OS X 10.15.7', 'Safari', None))
_LANDING_HOSTS = ('www.acme-outfitters.com', 'shop.acme-outfitters.com', 'help.acme-outfitters.com',
                  'links.acme-outfitters.com', 'app.acme-outfitters.com')
_PATH_WORDS = ('collections', 'spring-2024', 'mens', 'womens', 'sale', 'new-arrivals', 'account',
               'orders', 'product', 'running-shoes', 'rain-jackets', 'gift-cards', 'loyalty',
               'preferences', 'blog', 'stories', 'how-to-choose-a-tent')
_BOUNCE_REASONS = (
    '550 5.1.1 The email account that you tried to reach does not exist.',
    '552 5.2.2 The email account that you tried to reach is over quota.',
    '554 5.7.1 Message rejected due to content restrictions',
    '421 4.7.0 Try again later, closing connection.',
    '550 5.7.26 Unauthenticated email from this domain is not accepted due to DMARC policy')
_SMS_ERRORS = (('Undeliverable', '30003'), ('Unknown destination handset', '30005'),
               ('Landline or unreachable carrier', '30006'), ('Carrier violation', '30007'),
               ('Unknown error', '30008'))
_INBOUND = (('STOP', 'Opt-Out'), ('START', 'Opt-In'), ('HELP', 'Help'), ('YES', 'Opt-In'),
            ('unsubscribe please', 'Opt-Out'), ('When does the sale end?', 'Other'),
            ('Is my order shipped?', 'Other'))


class _Pools:
    """Per-corpus shared values (campaigns, canvases, apps, links) so records look related."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.app_group_id = self.uuid()
        self.apps = {p: self.uuid() for p in ('ios', 'android', 'web')}
        self.campaigns = [(self.uuid(), self.name(),
                           [(self.uuid(), n) for n in self._variation_names()])
                          for _ in range(60)]
        self.canvases = [(self.uuid(), self.name(),
                          [(self.uuid(), n) for n in self._variation_names()],
                          [(self.uuid(), f'Step {i + 1} - {rng.choice(_WORDS_KIND)}')
                           for i in range(rng.randint(2, 6))])
                         for _ in range(30)]
        self.content_cards = [self.uuid() for _ in range(150)]
        self.news_cards = [self.uuid() for _ in range(12)]
        self.sub_groups = [(self.uuid(), 'email') for _ in range(3)] + [(self.uuid(), 'sms') for _ in range(2)]
        self.links = [(self.hex(12), rng.choice(('cta_button', 'hero_image', 'footer_unsubscribe',
                                                 'product_1', 'product_2', 'view_in_browser', None)),
                       self.url()) for _ in range(80)]
        self.sending_ips = [f'198.51.100.{rng.randrange(2, 250)}' for _ in range(6)]
        self.from_phones = [self.phone() for _ in range(3)]

    def uuid(self) -> str:
        return _uuid4(self.rng.getrandbits(128))

    def hex(self, n: int) -> str:
        return '%0*x' % (n, self.rng.getrandbits(4 * n))

    def name(self) -> str:
        """A campaign/canvas name of 20-60 characters."""
        rng = self.rng
        while True:
            s = f'{rng.choice(("2024-04", "2024-05", "Q2", "Evergreen"))} {rng.choice(_WORDS_THEME)} ' \
                f'{rng.choice(_WORDS_KIND)}'
            if rng.random() < 0.7:
                s += f' - {rng.choice(_WORDS_AUDIENCE)}'
            if rng.random() < 0.4:
                s += f' ({rng.choice(_LOCALES)})'
            if 20 <= len(s) <= 60:
                return s

    def _variation_names(self) -> List[str]:
        n = self.rng.randint(1, 3)
        names = [f'Variant {chr(65 + i)}' for i in range(n)]
        return names + ['Control Group'] if self.rng.random() < 0.3 else names

    def url(self) -> str:
        """An 80-200 character tracked landing-page URL."""
        rng = self.rng
        path = '/'.join(rng.choice(_PATH_WORDS) for _ in range(rng.randint(1, 4)))
        s = (f'https://{rng.choice(_LANDING_HOSTS)}/{path}?utm_source=braze&utm_medium=email'
             f'&utm_campaign={rng.choice(_WORDS_THEME).lower().replace(" ", "-")}')
        if rng.random() < 0.6:
            s += f'&utm_content={self.hex(8)}'
        if rng.random() < 0.3:
            s += f'&ref={self.hex(24)}'
        while len(s) < 80:
            s += f'&sid={self.hex(8)}'
        return s[:200]

    def phone(self) -> str:
        """An E.164 number (mostly US/CA, some UK/DE/BR)."""
        rng = self.rng
        r = rng.random()
        if r < 0.75:
            return f'+1{rng.randrange(201, 990)}{rng.randrange(200, 1000)}{rng.randrange(10000):04d}'
        if r < 0.85:
            return f'+447{rng.randrange(100000000, 1000000000)}'
        if r < 0.93:
            return f'+4915{rng.randrange(10000000, 100000000)}'
        return f'+55119{rng.randrange(10000000, 100000000)}'

    def email(self) -> str:
        rng = self.rng
        return (f'{rng.choice(_FIRST)}{rng.choice((".", "_", ""))}{rng.choice(_LAST)}'
                f'{rng.randrange(1000) if rng.random() < 0.6 else ""}@{rng.choice(_MAIL_DOMAINS)}')


def _uuid4(n: int) -> str:
    """Format 128 random bits as a version-4 UUID (no uuid.UUID object: this runs per event)."""
    n = (n & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
    h = '%032x' % n
    return f'{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}'


_CAMPAIGN_FIELDS = ('campaign_id', 'campaign_name', 'message_variation_id', 'message_variation_name')
_CANVAS_FIELDS = ('canvas_id', 'canvas_name', 'canvas_variation_id', 'canvas_variation_name',
                  'canvas_step_id', 'canvas_step_name', 'canvas_step_message_variation_id')
# Fields taken from the event's user, per event: name -> index in the user tuple.
_USER_FIELDS = {'email_address': 2, 'to_phone_number': 3, 'user_phone_number': 3, 'phone_number': 3}
_PER_EVENT = ('id', 'user_id', 'external_user_id', 'time')
_NULL_SHARE = 0.2   # share of optional fields left null


def _is_optional(ftype) -> bool:
    return isinstance(ftype, list) and 'null' in ftype


def _base_type(ftype):
    if isinstance(ftype, list):
        rest = [t for t in ftype if t != 'null']
        return rest[0] if rest else 'null'
    return ftype


class _Templates:
    """Pools of pre-filled records per event type; each event copies one and sets its identity."""

    SIZE = 256

    def __init__(self, pools: _Pools, currents_type: str, schema: dict):
        self.p = pools
        self.rng = pools.rng
        self.type = currents_type
        self.fields = schema['fields']
        names = {f['name'] for f in self.fields}
        self.has_user_id_null = any(f['name'] == 'user_id' and _is_optional(f['type'])
                                    for f in self.fields)
        self.items = [self._make(names) for _ in range(self.SIZE)]

    def _make(self, names: Set[str]):
        rng, p = self.rng, self.p
        ctx: Dict[str, object] = {}
        # A message comes from a campaign or from a canvas step, not both.
        req = {f['name'] for f in self.fields if not _is_optional(f['type'])}
        if 'campaign_id' in req:
            source = 'campaign'
        elif 'canvas_id' in req:
            source = 'canvas'
        elif 'campaign_id' in names or 'canvas_id' in names:
            source = 'campaign' if rng.random() < 0.45 else 'canvas'
        else:
            source = None
        if source == 'campaign':
            cid, cname, variations = rng.choice(p.campaigns)
            vid, vname = rng.choice(variations)
            ctx.update(campaign_id=cid, campaign_name=cname, message_variation_id=vid,
                       message_variation_name=vname)
        elif source == 'canvas':
            cid, cname, variations, steps = rng.choice(p.canvases)
            vid, vname = rng.choice(variations)
            sid, sname = rng.choice(steps)
            ctx.update(canvas_id=cid, canvas_name=cname, canvas_variation_id=vid,
                       canvas_variation_name=vname, canvas_step_id=sid, canvas_step_name=sname,
                       canvas_step_message_variation_id=p.uuid())
        device = rng.choice(_DEVICES)
        if self.type.startswith('users.messages.pushnotification.') and device[0] == 'web':
            device = rng.choice(_DEVICES[:6])
        if self.type.endswith('IosForeground'):
            device = rng.choice(_DEVICES[:3])
        picks = {'device': device, 'sub_group': rng.choice(p.sub_groups), 'link': rng.choice(p.links),
                 'inbound': rng.choice(_INBOUND), 'sms_error': rng.choice(_SMS_ERRORS)}
        rec: Dict[str, object] = {}
        for f in self.fields:
            name, ftype = f['name'], f['type']
            if name in _PER_EVENT:
                rec[name] = None
                continue
            optional = _is_optional(ftype)
            if name in _CAMPAIGN_FIELDS or name in _CANVAS_FIELDS:
                value = ctx.get(name)
                if value is not None and optional and name.endswith('_name') and rng.random() < 0.1:
                    value = None
                rec[name] = value
                continue
            if optional and name not in _USER_FIELDS and rng.random() < _NULL_SHARE:
                rec[name] = None
                continue
            rec[name] = self._value(name, _base_type(ftype), picks)
        uf = tuple((n, i) for n, i in _USER_FIELDS.items() if rec.get(n, None) is not None)
        if rec.get('channel_identifier') is not None:
            uf += (('channel_identifier', 2 if picks['sub_group'][1] == 'email' else 3),)
        anon = self.has_user_id_null and rng.random() < 0.05
        return rec, uf, anon

    def _value(self, name: str, btype, picks: dict):
        """A realistic value for one field of a template (most are shared pool values)."""
        rng, p = self.rng, self.p
        platform, os_version, device_model, ad_id_type = picks['device']
        sub_group, link = picks['sub_group'], picks['link']
        if name in ('app_id',):
            return p.apps[platform]
        if name == 'app_group_id':
            return p.app_group_id
        if name == 'platform':
            return platform
        if name == 'os_version':
            return os_version
        if name == 'device_model':
            return device_model
        if name == 'ad_id_type':
            return ad_id_type
        if name == 'ad_id':
            return p.uuid().upper() if platform == 'ios' else p.uuid()
        if name in ('timezone',):
            return rng.choice(_TIMEZONES)
        if name == 'locale_key':
            return rng.choice(('en-US', 'en-GB', 'de-DE', 'fr-FR', 'es-ES', 'ja-JP'))
        if name in _USER_FIELDS:
            # Replaced per event by the user's value; a subscription change names one channel.
            if self.type.endswith('subscriptiongroup.StateChange'):
                wanted = 'email' if name == 'email_address' else 'sms'
                return 'user' if sub_group[1] == wanted else None
            return 'user'
        if name == 'user_agent':
            return rng.choice(_USER_AGENTS)
        if name == 'url':
            return link[2]
        if name == 'link_id':
            return link[0]
        if name == 'link_alias':
            return link[1]
        if name == 'machine_open':
            return 'true' if rng.random() < 0.3 else None
        if name == 'suspected_bot_click_reason':
            return rng.sample(['user_agent', 'ip_address', 'click_time', 'hidden_link'], rng.randint(1, 2))
        if name == 'media_urls':
            return [f'https://api.twilio.com/2010-04-01/Accounts/AC{p.hex(32)}/Messages/MM{p.hex(32)}'
                    f'/Media/ME{p.hex(32)}' for _ in range(rng.randint(1, 2))]
        if name == 'device_class':
            return 'Desktop' if platform == 'web' else 'Tablet' if 'iPad' in device_model else 'Mobile'
        if name == 'device_os':
            return os_version.rsplit(' ', 1)[0]
        if name == 'browser':
            return rng.choice(('Chrome', 'Safari', 'Firefox', 'Edge', 'Apple Mail'))
        if name == 'mailbox_provider':
            return rng.choice(('Gmail', 'Yahoo', 'Microsoft', 'Apple', 'Other'))
        if name == 'ip_pool':
            return rng.choice(('default', 'marketing', 'transactional'))
        if name == 'sending_ip':
            return rng.choice(p.sending_ips)
        if name == 'esp':
            return rng.choice(('SendGrid', 'SparkPost', 'Amazon SES'))
        if name == 'from_domain':
            return rng.choice(('mail.acme-outfitters.com', 'news.acme-outfitters.com'))
        if name == 'bounce_reason':
            return rng.choice(_BOUNCE_REASONS)
        if name == 'message_extras':
            return json.dumps({'promo_code': f'SAVE{rng.randrange(5, 50, 5)}', 'locale': 'en-US'})
        if name == 'push_token':
            return p.hex(64) if platform == 'ios' else f'{p.hex(22)}:APA91b{p.hex(134)}'
        if name == 'button_action_type':
            return rng.choice(('uri', 'deep_link', 'close'))
        if name == 'button_string':
            return rng.choice(('Open', 'Shop now', 'Later', 'View order'))
        if name == 'button_id':
            return str(rng.randrange(2))
        if name == 'from_phone_number':
            return rng.choice(p.from_phones)
        if name == 'inbound_phone_number':
            return rng.choice(p.from_phones)
        if name in ('message_body', 'action'):
            body, action = picks['inbound']
            return body if name == 'message_body' else action
        if name == 'category':
            return rng.choice(('Opt-In', 'Opt-Out', 'Help', 'Other'))
        if name in ('error', 'provider_error_code'):
            err = picks['sms_error']
            return err[0] if name == 'error' else err[1]
        if name == 'subscription_group_id':
            return sub_group[0]
        if name == 'subscription_status':
            return rng.choice(('Subscribed', 'Unsubscribed'))
        if name == 'channel':
            return sub_group[1]
        if name == 'channel_identifier':
            return 'user'
        if name == 'state_change_source':
            return rng.choice(('SDK', 'REST API', 'Dashboard', 'CSV Import', 'Subscription Center'))
        if name == 'content_card_id':
            return rng.choice(p.content_cards)
        if name == 'card_id':
            return rng.choice(p.news_cards)
        if name == 'conversion_behavior_index':
            return rng.randrange(3)
        if name == 'conversion_behavior':
            return json.dumps({'type': rng.choice(('perform_purchase', 'start_session', 'custom_event')),
                               'window': 259200})
        if name == 'in_control_group':
            return rng.random() < 0.1
        if name == 'name' and btype == 'string':   # a custom event's name
            return rng.choice(('Added To Cart', 'Viewed Product', 'Started Checkout',
                               'Searched', 'Completed Onboarding', 'Shared Item'))
        if name == 'properties' and btype == 'string':
            return json.dumps({'item': p.hex(8), 'quantity': rng.randint(1, 3)})
        if name == 'currency':
            return rng.choice(('USD', 'EUR', 'GBP'))
        # Fields added by a future schema: fill by type so the record stays valid.
        if btype == 'boolean':
            return rng.random() < 0.5
        if btype in ('int', 'long'):
            return rng.randrange(100)
        if btype in ('float', 'double'):
            return round(rng.uniform(0, 200), 2)
        if isinstance(btype, dict) and btype.get('type') == 'array':
            return [p.uuid()]
        return p.uuid() if name.endswith('_id') else p.hex(12)


def _make_users(rng: random.Random, pools: _Pools, n: int, no_external_fraction: float):
    """(user_id, external_user_id, email, phone) tuples; a fixed share has no external id.

    The share is per user (a Braze user either has an external id or not), and users are picked
    uniformly, so the expected share of events is the same. About 1 in 8 of them is "" not null.
    """
    n_noext = round(n * no_external_fraction)
    noext = set(rng.sample(range(n), n_noext))
    users = []
    k = 0
    for i in range(n):
        user_id = '%024x' % rng.getrandbits(96)
        if i in noext:
            ext = '' if k % 8 == 3 else None
            k += 1
        else:
            ext = pools.uuid() if rng.random() < 0.7 else f'cust-{rng.randrange(10 ** 8):08d}'
        users.append((user_id, ext, pools.email(), pools.phone()))
    return users


def _rel_path(currents_type: str, date_hour: str, old: bool, schema_id: int, filename: str) -> str:
    tail = f'{schema_id}/{ENVIRONMENT}' if old else f'version={CURRENTS_VERSION}/{ENVIRONMENT}'
    return f'event_type={currents_type}/date={date_hour}/{tail}/{filename}'


def _validate(events, hours, no_external_fraction, codec, events_per_file, other_type_files,
              old_layout_fraction):
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)
    if not is_int(events) or events < 0:
        raise ValueError(f'events must be an integer >= 0, got {events!r}')
    if not is_int(hours) or not 1 <= hours <= 24 * 366:
        raise ValueError(f'hours must be an integer between 1 and 8784, got {hours!r}')
    if not is_int(events_per_file) or events_per_file < 1:
        raise ValueError(f'events_per_file must be an integer >= 1, got {events_per_file!r}')
    if not is_int(other_type_files) or other_type_files < 0:
        raise ValueError(f'other_type_files must be an integer >= 0, got {other_type_files!r}')
    for name, v in (('no_external_fraction', no_external_fraction),
                    ('old_layout_fraction', old_layout_fraction)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            raise ValueError(f'{name} must be between 0 and 1, got {v!r}')
    if codec not in CODECS:
        raise ValueError(f'codec must be one of {", ".join(CODECS)}, got {codec!r}')


def generate(output_dir, events: int = 10000, seed: int = 0, start_hour: str = '2024-05-01-00',
             hours: int = 3, no_external_fraction: float = 0.1, codec: str = 'null',
             events_per_file: int = 5000, other_type_files: int = 2,
             old_layout_fraction: float = 0.25, mapping: str = CLASSIC,
             codecs: Optional[Sequence[str]] = None,
             gaps: Optional[SampleGaps] = None,
             lookalike: Optional[bool] = None) -> SampleReport:
    """Write a sample Currents export under `<output_dir>/currents/` and describe it.

    `mapping` picks the event types (and writer schemas) of that mapping profile. Existing files
    are overwritten, others left alone: use a fresh directory so the report matches everything
    the pipeline will read. `codecs` (e.g. ('null', 'deflate', 'snappy')) mixes codecs, file by
    file in turn, instead of one `codec` for every file; the records are the same.
    `lookalike` (current only): True, the repository's look-alike schemas; False, Braze's
    (an error without them); None, Braze's where found, else look-alike ones.
    """
    for c in (codecs or (codec,)):
        _validate(events, hours, no_external_fraction, c, events_per_file, other_type_files,
                  old_layout_fraction)
    file_codecs = tuple(codecs) if codecs else (codec,)
    if mapping not in PROFILES:
        raise ValueError(f'mapping must be one of {", ".join(PROFILES)}, got {mapping!r}')
    if lookalike is None:
        lookalike = not shared_schema_dir().is_dir()
    if mapping == CURRENT and not lookalike and not shared_schema_dir().is_dir():
        raise ValueError(f'Braze writer schemas not found at {shared_schema_dir()} (set '
                         f'CURRENTS_SHARED to the folder holding currents-schemas/)')
    lookalike = lookalike and mapping == CURRENT
    start = parse_hour(start_hour)
    rng = random.Random(seed)
    pools = _Pools(rng)
    integration = pools.hex(24)
    conn_name = f'dataexport.{CLUSTER}.{CONNECTION}.integration.{integration}'
    root = Path(output_dir) / 'currents' / conn_name
    hour_starts = [start + dt.timedelta(hours=h) for h in range(hours)]
    hour_names = [h.strftime('%Y-%m-%d-%H') for h in hour_starts]
    hour_epochs = [int(h.timestamp()) for h in hour_starts]
    # Hourly volume varies; keep it within +-30% of the mean.
    hour_weights = [0.7 + 0.6 * rng.random() for _ in range(hours)]

    types = list(currents_types(mapping))
    others = OTHER_TYPES_CURRENT if mapping == CURRENT else OTHER_TYPES
    weights = [(CURRENT_TYPE_WEIGHTS if mapping == CURRENT else TYPE_WEIGHTS).get(t, 1.0)
               for t in types]
    if events >= len(types):
        counts = [1 + c for c in _allocate(events - len(types), weights)]
    else:
        ranked = sorted(range(len(types)), key=lambda i: (-weights[i], i))[:events]
        counts = [1 if i in ranked else 0 for i in range(len(types))]

    # Plan: (type, hour index, number of events) per file, in a fixed order.
    plan: List[Tuple[str, int, int]] = []
    for t, n in zip(types, counts):
        for h, nh in enumerate(_allocate(n, hour_weights) if n else [0] * hours):
            if nh and not (gaps and gaps.omits(t, h)):
                nfiles = math.ceil(nh / events_per_file)
                plan.extend((t, h, len(part)) for part in _split(nh, nfiles))
    other_plan = [(others[i % len(others)], rng.randrange(hours), rng.randint(10, 60))
                  for i in range(other_type_files)]

    n_old = _old_count(len(plan), old_layout_fraction)
    old_files = set(rng.sample(range(len(plan)), n_old))
    schema_ids: Dict[str, int] = {}
    offsets: Dict[Tuple[str, int], int] = {}
    users = _make_users(rng, pools, max(50, min(events // 4, 200_000)), no_external_fraction)
    n_users = len(users)
    report = SampleReport(root=str(root), lookalike=lookalike)
    report.by_type = {t: {'events': 0, 'eligible': 0} for t in types}
    eligible_ids = report.eligible_ids
    getrandbits, randrange, rand = rng.getrandbits, rng.randrange, rng.random

    def file_path(t: str, h: int, n: int, old: bool) -> Path:
        partition = randrange(4)
        key = (t, partition)
        offset = offsets.get(key)
        if offset is None:
            offset = randrange(10 ** 6)
        offsets[key] = offset + n
        sid = schema_ids.setdefault(t, randrange(2, 12))
        name = f'{conn_name}+{partition}+{offset}.avro'
        return root / _rel_path(t, hour_names[h], old, sid, name)

    written = [0]

    def write(path: Path, schema, records) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_codec = file_codecs[written[0] % len(file_codecs)]
        written[0] += 1
        with open(path, 'wb') as fh:
            fastavro.writer(fh, schema, records, codec=file_codec,
                            sync_marker=getrandbits(128).to_bytes(16, 'big'))

    templates: Dict[str, _Templates] = {}
    parsed: Dict[str, dict] = {}
    for idx, (t, h, n) in enumerate(plan):
        if t not in templates:
            schema = lookalike_schema(t) if lookalike else load_schema(t, mapping)
            parsed[t] = fastavro.parse_schema(schema)
            templates[t] = _Templates(pools, t, schema)
        items = templates[t].items
        size = len(items)
        base = hour_epochs[h]
        records = []
        eligible = 0
        too_long = bool(gaps) and (t, h) in gaps.rejected
        for _ in range(n):
            tpl, uf, anon = items[randrange(size)]
            rec = tpl.copy()
            eid = _uuid4(getrandbits(128))
            if too_long:   # 127 characters: past Segment's 100 for a messageId
                eid += '-' + 'x' * 90
            rec['id'] = eid
            u = users[randrange(n_users)]
            if anon:
                rec['user_id'] = None
                ext = None
            else:
                rec['user_id'] = u[0]
                ext = u[1]
            rec['external_user_id'] = ext
            # Mostly inside the queue hour; a few queued minutes after they happened.
            rec['time'] = base + randrange(3600) if rand() >= 0.03 else base - 1 - randrange(300)
            for fname, ui in uf:
                rec[fname] = u[ui]
            if ext and ext.strip():
                if too_long:
                    report.rejected += 1
                else:
                    eligible += 1
                    eligible_ids.add(eid)
            records.append(rec)
        path = file_path(t, h, n, idx in old_files)
        write(path, parsed[t], records)
        report.files.append(str(path))
        report.partitions.add((t, hour_names[h]))
        report.events += n
        report.eligible += eligible
        bt = report.by_type[t]
        bt['events'] += n
        bt['eligible'] += eligible

    for t, h, n in other_plan:
        schema = fastavro.parse_schema(_other_schema(t))
        records = []
        for _ in range(n):
            u = users[randrange(n_users)]
            records.append({'id': _uuid4(getrandbits(128)), 'user_id': u[0], 'external_user_id': u[1],
                            'time': hour_epochs[h] + randrange(3600), 'app_group_id': pools.app_group_id})
        path = file_path(t, h, n, rand() < old_layout_fraction)
        write(path, schema, records)
        report.other_files.append(str(path))
        report.other_events += n
    return report


def _split(n: int, parts: int) -> List[range]:
    """`n` events in `parts` near-equal consecutive chunks."""
    size, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        step = size + (1 if i < extra else 0)
        out.append(range(start, start + step))
        start += step
    return out


def _old_count(nfiles: int, fraction: float) -> int:
    """Files to write in the older layout; both layouts appear whenever there are 2+ files."""
    n = round(nfiles * fraction)
    if nfiles >= 2:
        if fraction > 0:
            n = max(n, 1)
        if fraction < 1:
            n = min(n, nfiles - 1)
    return n


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        print(f'{self.prog}: error: {message}', file=sys.stderr)
        sys.exit(2)


def main(argv: Optional[List[str]] = None) -> int:
    parser = _Parser(prog='python -m devtools.sample',
                     description='Write a sample Braze Currents export (Avro) for tests and benchmarks.')
    parser.add_argument('--output', required=True, help='directory to write <output>/currents/... into')
    parser.add_argument('--events', type=int, default=10000, help='events of the profile\'s types (default 10000)')
    parser.add_argument('--seed', type=int, default=0, help='RNG seed; same seed, same bytes (default 0)')
    parser.add_argument('--start-hour', default='2024-05-01-00', help='first date= hour, YYYY-MM-DD-HH')
    parser.add_argument('--hours', type=int, default=3, help='number of date= hour folders (default 3)')
    parser.add_argument('--codec', default='null', choices=CODECS, help='Avro codec (default null)')
    parser.add_argument('--events-per-file', type=int, default=5000, help='max events per file')
    parser.add_argument('--no-external-fraction', type=float, default=0.1,
                        help='share of events without external_user_id (default 0.1)')
    parser.add_argument('--other-type-files', type=int, default=2,
                        help='files of types the profile skips (default 2)')
    parser.add_argument('--old-layout-fraction', type=float, default=0.25,
                        help='share of files in the older <schema-id>/<zone>/ layout (default 0.25)')
    parser.add_argument('--deliberate-gaps', action='store_true',
                        help='leave gaps for the report to show (at least 4 hours): one type '
                             'misses an hour, one stops early, one hour of one type is all '
                             'rejected')
    parser.add_argument('--mapping', default=CLASSIC, choices=PROFILES,
                        help='event types of this mapping profile: classic (34, default) or '
                             'current (80, with Braze\'s writer schemas from $CURRENTS_SHARED, '
                             'else look-alike ones made from the repository)')
    args = parser.parse_args(argv)
    try:
        report = generate(args.output, events=args.events, seed=args.seed, start_hour=args.start_hour,
                          hours=args.hours, no_external_fraction=args.no_external_fraction,
                          codec=args.codec, events_per_file=args.events_per_file,
                          other_type_files=args.other_type_files,
                          old_layout_fraction=args.old_layout_fraction, mapping=args.mapping,
                          gaps=deliberate_gaps(args.hours) if args.deliberate_gaps else None)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f'{parser.prog}: error: cannot write {args.output}: {exc.strerror or exc}', file=sys.stderr)
        return 1
    if report.lookalike:
        print(f'{parser.prog}: Braze writer schemas not found at {shared_schema_dir()}: the '
              f'current types use look-alike schemas made from the repository (set '
              f'CURRENTS_SHARED to the folder holding currents-schemas/ for Braze\'s own)',
              file=sys.stderr)
    print(f'files={len(report.files)} other_files={len(report.other_files)} events={report.events} '
          f'eligible={report.eligible} root={report.root}'
          + (f' rejected={report.rejected}' if args.deliberate_gaps else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
