"""Builds a corpus of bad and odd Currents input, and records what a correct run must make of it.

Used by tests/test_bad_input.py (and the fuzz tests for the base files). Everything is
deterministic. The builder knows every record it wrote; for each file it records the outcome the
pipeline must reach, decided from the *bytes it wrote* and the contract (docs/CONTRACT.md), never from the pipeline:

- ``read``: every record of the file is decoded;
- ``unreadable``: the first ``len(records)`` records decode, the rest of the file is exactly one
  ``unreadable_file`` reject (CONTRACT §5);
- ``skipped``: never opened or not one of the 34 types (counted in ``files_skipped``).
- ``not_listed``: in an ``event_type=`` folder of a type the run does not read: never listed
  (the folder is named in ``event_types_not_selected``).

Truncation points are computed from the Avro block layout (block offsets, sizes and record
counts), so the expected number of decoded records of a truncated file does not depend on the
decoder. Only for random byte flips inside a block, whose effect depends on what the flipped byte
meant, the expectation comes from a reference decode with fastavro (the flip may even go unnoticed:
Avro's null codec has no checksum). Each record's fate (dropped / sent / invalid_record /
message_id_too_long / message_too_large) is decided by :func:`expected_fate`, which restates
CONTRACT §3-§4 independently of ``transforms.mapping``.
"""
from __future__ import annotations

import copy
import gzip
import io
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import fastavro

from devtools.sample import load_schema
from transforms.events import BY_CURRENTS_TYPE, COMMON_PROPERTIES

CONNECTION = 'dataexport.prod-01.GCS.integration.0123456789abcdef01234567'
AVRO_MAGIC = b'Obj\x01'
MAX_MESSAGE_ID = 100
MAX_MESSAGE_BYTES = 32_000
# Builder-side estimate of the message envelope (type, event, timestamp, context.library, keys).
ENVELOPE_BYTES = 1_500
HUGE = 900_000          # ~900 KB string: one record of ~900 KB
ABSURD_TIME = 2 ** 62   # beyond what gmtime can represent: invalid_record, never guessed

# Every string field of the unicode files gets one of these (plus a unique tag).
NASTY = (
    '\x00\x01\x02\x07\x08\x0b\x0c\x0e\x1b\x1f\x7f',        # C0 controls and DEL
    '\t\r\n',                                              # whitespace controls inside text
    '\u0080\u0085\u009f',                                  # C1 controls (NEL)
    '\u2028\u2029\u200b\u200e\u202e\ufeff\ufffd',          # separators, ZWSP, bidi, BOM, FFFD
    'é漢字ÿĀ🎉\U0001F600\U0010FFFF',                       # BMP, astral, last code point
    '"\\\'<>&%{}[]/`',                                     # JSON and HTML specials
    'e\u0301 A\u030a',                                     # combining marks
)


def nasty(tag: str, k: int) -> str:
    return f'{tag}|{NASTY[k % len(NASTY)]}|{k}'


def plain_record(tag: str, i: int, external: Optional[str] = 'ext', **extra) -> dict:
    """A record that fits every schema used here (fields a schema lacks are ignored)."""
    r = {'id': f'{tag}-{i}', 'user_id': f'user-{tag}-{i}', 'external_user_id': external,
         'time': 1714564800 + i, 'app_id': 'app', 'email_address': f'u{i}@example.com',
         'platform': 'ios', 'content_card_id': 'card', 'card_id': 'card', 'canvas_id': 'cv',
         'canvas_variation_id': 'cvv', 'campaign_id': 'cmp', 'campaign_name': 'Spring',
         'in_control_group': False, 'subscription_group_id': 'sg',
         'subscription_status': 'Subscribed', 'state_change_source': 'src',
         'to_phone_number': '+15555550100', 'inbound_phone_number': '+15555550101',
         'user_phone_number': '+1555', 'action': 'a', 'message_body': 'b', 'url': 'https://x',
         'machine_open': 'true', 'user_agent': 'ua', 'link_id': 'l1', 'button_id': '0'}
    r.update(extra)
    return r


def external_for(i: int) -> Optional[str]:
    """Mostly present; every 10th null, every 17th blank (dropped, CONTRACT §3)."""
    if i % 10 == 9:
        return None
    if i % 17 == 16:
        return ' \t\u3000' if i % 2 else ''
    return f'ext-{i}'


def forwarded_fields(event_type: str) -> List[str]:
    spec = BY_CURRENTS_TYPE[event_type]
    names = ['id', 'external_user_id', 'user_id', *COMMON_PROPERTIES,
             *(f for _, f in spec.properties)]
    if spec.is_email:
        names.append('email_address')
    return names


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def expected_fate(event_type: str, record: dict, prefix: str = '') -> str:
    """CONTRACT §3-§4, restated: what one decoded record must become."""
    if _blank(record.get('external_user_id')):
        return 'dropped'
    if _blank(record.get('id')):
        return 'invalid_record'
    t = record.get('time')
    if isinstance(t, bool) or not isinstance(t, int):
        return 'invalid_record'
    if abs(t) >= 2 ** 60:
        return 'invalid_record'
    assert -2 ** 31 <= t < 4_102_444_800, f'builder writes only plainly valid or absurd times: {t}'
    if len(prefix + str(record['id'])) > MAX_MESSAGE_ID:
        return 'message_id_too_long'
    size = ENVELOPE_BYTES
    for name in forwarded_fields(event_type):
        value = record.get(name)
        if value is not None:
            # JSON-escaped worst case for control characters is 6 bytes each.
            size += len(name) + 6 * len(str(value).encode('utf-8'))
    if size > MAX_MESSAGE_BYTES:
        text = sum(len(str(record.get(n) or '').encode()) for n in forwarded_fields(event_type))
        assert text > 2 * MAX_MESSAGE_BYTES, 'builder avoids sizes near the 32,000-byte limit'
        return 'message_too_large'
    return 'sent'


@dataclass
class FileCase:
    path: str
    kind: str                       # what was done to it (for messages and the report)
    outcome: str                    # 'read' | 'unreadable' | 'skipped' | 'not_listed'
    event_type: Optional[str]       # the type the pipeline attributes (path, else header)
    records: List[dict] = field(default_factory=list)   # records that must decode, in order

    @property
    def decoded(self) -> int:
        return len(self.records)


def block_layout(data: bytes):
    """[(start, data_end, end, records)] per Avro block; the 16-byte sync starts at data_end."""
    spans = []
    for b in fastavro.block_reader(io.BytesIO(data)):
        spans.append((b.offset, b.offset + b.size - 16, b.offset + b.size, b.num_records))
    return spans


def truncation_outcome(data: bytes, records: List[dict], cut: int):
    """(outcome, records decoded) for data[:cut], from the block layout alone."""
    spans = block_layout(data)
    header_end = spans[0][0]
    if cut == 0 or cut < header_end:
        return 'unreadable', []
    if cut == header_end:
        return 'read', []          # a header and no block: a valid, empty Avro file
    done = 0
    for start, data_end, end, n in spans:
        if cut >= data_end:        # the block's data is whole: its records are yielded
            done += n
        if cut == end:
            return 'read', records[:done]   # ends on a block boundary: indistinguishable
    return 'unreadable', records[:done]


def reference_decode(data: bytes):
    """(records decoded, error or None): the oracle for random byte flips only.

    fastavro's record reader, plus the rule the pipeline's reader adds: a block's records must
    use exactly its bytes (fastavro alone trusts a damaged record count and silently skips the
    rest of the block); such a block ends decoding after its records.
    """
    counted, error = [], None
    try:
        for block in fastavro.block_reader(io.BytesIO(data)):
            if block.num_records < 0:
                raise ValueError('negative record count')
            counted.extend(block)
            if block.bytes_.read(1):
                return counted, ValueError('block has bytes beyond its records')
    except Exception as exc:  # noqa: BLE001 - any decoder error means: unreadable rest
        error = exc
    if error is None:
        return counted, None
    out = []
    try:
        for r in fastavro.reader(io.BytesIO(data)):
            out.append(r)
    except Exception:  # noqa: BLE001 - the same damage, seen record by record
        pass
    return out, error


def avro(schema: dict, records: List[dict], codec: str = 'null', sync_interval: int = 16000,
         sync_marker: bytes = b'\x5a' * 16) -> bytes:
    buf = io.BytesIO()
    parsed = fastavro.parse_schema(copy.deepcopy(schema))
    fastavro.writer(buf, parsed, records, codec=codec, sync_interval=sync_interval,
                    sync_marker=sync_marker)
    return buf.getvalue()


_FILL = {'string': 'x', 'int': 0, 'long': 0, 'boolean': False, 'double': 0.0, 'float': 0.0}


def fit(schema: dict, record: dict) -> dict:
    """The record restricted to the schema's fields (what will actually be written); a required
    field the record lacks gets a neutral value of its type."""
    out = {}
    for f in schema['fields']:
        v = record.get(f['name'])
        if v is None and not (isinstance(f['type'], list) and 'null' in f['type']):
            v = _FILL.get(f['type'] if isinstance(f['type'], str) else '', v)
        out[f['name']] = v
    return out


def nullable_variant(schema: dict, *names: str, drop: tuple = ()) -> dict:
    """A schema drift variant: `names` made nullable (Currents did this), `drop` removed."""
    s = copy.deepcopy(schema)
    fields = []
    for f in s['fields']:
        if f['name'] in drop:
            continue
        if f['name'] in names and not (isinstance(f['type'], list) and 'null' in f['type']):
            base = 'long' if f['type'] in ('int', 'long') else f['type']
            f = dict(f, type=['null', base], default=None)
        fields.append(f)
    s['fields'] = fields
    return s


class BadCorpus:
    """Writes the corpus under `root` and knows what every file must become."""

    def __init__(self, root):
        self.root = Path(root)
        self.cases: List[FileCase] = []
        self._n = 0

    # -- writing ---------------------------------------------------------------------------------
    def path(self, event_type: Optional[str], name: Optional[str] = None,
             date: str = '2024-05-01-12', tail: str = 'version=10/us-01') -> Path:
        self._n += 1
        name = name or f'{CONNECTION}+0+{self._n}.avro'
        if event_type is None:   # no event_type= segment: the writer schema says the type
            return self.root / 'no-type-segment' / f'date={date}' / name
        return self.root / CONNECTION / f'event_type={event_type}' / f'date={date}' / tail / name

    def write(self, path: Path, raw: bytes, kind: str, outcome: str, event_type: Optional[str],
              records: List[dict] = ()) -> FileCase:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert not path.exists(), f'duplicate corpus path {path}'
        path.write_bytes(raw)
        case = FileCase(str(path), kind, outcome, event_type, list(records))
        self.cases.append(case)
        return case

    def good(self, event_type: str, records: List[dict], kind: str = 'good', codec='null',
             schema: Optional[dict] = None, path: Optional[Path] = None, sync_interval=16000,
             header_type: Optional[str] = None) -> FileCase:
        schema = schema or load_schema(event_type)
        written = [fit(schema, r) for r in records]
        raw = avro(schema, written, codec=codec, sync_interval=sync_interval)
        path = path or self.path(event_type)
        return self.write(path, raw, kind, 'read', header_type or event_type, written)

    # -- reading back ----------------------------------------------------------------------------
    def listed(self) -> List[str]:
        out = []
        for dirpath, _, files in os.walk(self.root):
            out += [os.path.join(dirpath, f) for f in files]
        return sorted(out)

    def expected(self, prefix: str = '') -> dict:
        """The summary a correct run must print, plus sent ids and unreadable files."""
        by_type: Dict[str, Counter] = {}
        reasons: Counter = Counter()
        sent_ids: Counter = Counter()
        files = Counter()
        unreadable = {}
        for case in self.cases:
            files[case.outcome] += 1
            if case.outcome in ('skipped', 'not_listed'):
                continue
            if case.outcome == 'unreadable':
                reasons['unreadable_file'] += 1
                unreadable[case.path] = case
            row = by_type.setdefault(case.event_type, Counter())
            for r in case.records:
                fate = expected_fate(case.event_type, r, prefix)
                row['read'] += 1
                if fate == 'dropped':
                    row['dropped_no_external_user_id'] += 1
                elif fate == 'sent':
                    row['sent'] += 1
                    sent_ids[prefix + str(r['id'])] += 1
                else:
                    row['rejected'] += 1
                    reasons[fate] += 1
        totals = Counter()
        for row in by_type.values():
            totals.update(row)
        return {
            'read': totals['read'],
            'dropped_no_external_user_id': totals['dropped_no_external_user_id'],
            'sent': totals['sent'], 'rejected': totals['rejected'],
            'files_read': files['read'], 'files_rejected': files['unreadable'],
            'files_skipped': files['skipped'], 'files_not_listed': files['not_listed'],
            'types_not_selected': sorted({c.event_type for c in self.cases
                                          if c.outcome == 'not_listed'}),
            'by_type': {t: dict(r) for t, r in by_type.items() if r['read']},
            'rejected_by_reason': dict(reasons),
            'sent_ids': sent_ids, 'unreadable': unreadable,
        }

    def kinds(self) -> Counter:
        return Counter(c.kind for c in self.cases)


# ------------------------------------------------------------------------------------------------
TRUNCATED_TYPE = 'users.messages.email.Open'
CORRUPT_TYPE = 'users.messages.sms.Delivery'


def multi_block_file(tag: str, n: int = 400, codec: str = 'null', event_type=TRUNCATED_TYPE):
    """(schema, records, bytes) of a file of ~17 blocks (sync_interval 2,000 bytes)."""
    schema = load_schema(event_type)
    records = [fit(schema, plain_record(tag, i, external_for(i))) for i in range(n)]
    return schema, records, avro(schema, records, codec=codec, sync_interval=2000)


def truncation_offsets(data: bytes) -> List[int]:
    """20 cut points: in the magic, in the header, header end, mid-block, in sync markers, on a
    block boundary and one byte short of the end."""
    spans = block_layout(data)
    header_end = spans[0][0]
    cuts = [2, 4, 60, header_end - 1, header_end, header_end + 1, header_end + 3]
    for k in (0, 2, 5, 9, 13):
        start, data_end, end, _ = spans[k]
        cuts.append((start + data_end) // 2)            # in the middle of block k's data
    cuts += [spans[1][1] - 1, spans[3][1], spans[6][1] + 8, spans[8][2]]  # sync edges, boundary
    cuts += [spans[-1][1] + 1, len(data) - 1, spans[-1][0] + 3, spans[11][0] + 1]
    assert len(cuts) == len(set(cuts)) == 20, cuts
    return cuts


def build(root) -> BadCorpus:
    """Writes the whole bad-input corpus under `root`; returns what it must produce."""
    c = BadCorpus(root)
    rng = random.Random(20240501)

    # 1. Control: intact files of several types and codecs (~10% dropped by external_user_id).
    for k, (t, codec) in enumerate((('users.messages.email.Send', 'null'),
                                    ('users.canvas.Entry', 'deflate'),
                                    ('users.messages.pushnotification.Send', 'snappy'),
                                    (TRUNCATED_TYPE, 'null'), (CORRUPT_TYPE, 'null'))):
        c.good(t, [plain_record(f'good{k}', i, external_for(i)) for i in range(120)],
               codec=codec, kind=f'good_{codec}')

    # 2. Truncated: one multi-block file cut at 20 offsets (plus the intact original).
    schema, records, data = multi_block_file('trunc')
    c.write(c.path(TRUNCATED_TYPE), data, 'truncation_base', 'read', TRUNCATED_TYPE, records)
    for cut in truncation_offsets(data):
        outcome, decoded = truncation_outcome(data, records, cut)
        kind = ('truncated_header_only' if decoded == [] and outcome == 'read' else
                'truncated_on_block_boundary' if outcome == 'read' else 'truncated')
        c.write(c.path(TRUNCATED_TYPE), data[:cut], kind, outcome, TRUNCATED_TYPE, decoded)
    # Truncated files whose type only the header can tell: header cut, then mid-block.
    spans = block_layout(data)
    c.write(c.path(None), data[:spans[0][0] - 7], 'truncated_no_type_segment', 'unreadable', None)
    header_typed = [fit(schema, plain_record('trunc-nt', i, external_for(i))) for i in range(200)]
    nt = avro(schema, header_typed, sync_interval=2000)
    nt_spans = block_layout(nt)
    cut = (nt_spans[3][0] + nt_spans[3][1]) // 2
    c.write(c.path(None), nt[:cut], 'truncated_no_type_segment', 'unreadable', TRUNCATED_TYPE,
            truncation_outcome(nt, header_typed, cut)[1])

    # 3. Zero-byte files (with and without an event_type= segment).
    c.write(c.path(CORRUPT_TYPE), b'', 'zero_byte', 'unreadable', CORRUPT_TYPE)
    c.write(c.path(None), b'', 'zero_byte', 'unreadable', None)

    # 4. Not Avro at all, named .avro.
    html = b'<html><body><h1>403 Forbidden</h1></body></html>\n'
    for raw in (json.dumps({'id': 'x', 'time': 1}).encode(), gzip.compress(data[:3000]),
                b'PAR1' + bytes(rng.randrange(256) for _ in range(2000)) + b'PAR1', html,
                bytes(rng.randrange(256) for _ in range(5000)), b'O', b'\n' * 64):
        c.write(c.path(CORRUPT_TYPE), raw, 'not_avro', 'unreadable', CORRUPT_TYPE)

    # 5. Wrong magic on otherwise valid files (version byte, case, byte order).
    _, small, small_data = multi_block_file('magic', n=60, event_type=CORRUPT_TYPE)
    for magic in (b'Obj\x02', b'obj\x01', b'\x01jbO', b'Obj\x00'):
        c.write(c.path(CORRUPT_TYPE), magic + small_data[4:], 'wrong_magic', 'unreadable',
                CORRUPT_TYPE)

    # 6. Corrupt blocks.
    _, recs, blk = multi_block_file('corrupt', n=300, event_type=CORRUPT_TYPE)
    spans = block_layout(blk)
    before = lambda k: sum(s[3] for s in spans[:k])   # noqa: E731 - records in blocks 0..k-1
    for k in (0, 4, 9):   # the sync marker after block k is damaged: blocks 0..k decode
        d = bytearray(blk)
        d[spans[k][1] + 5] ^= 0xFF
        c.write(c.path(CORRUPT_TYPE), bytes(d), 'corrupt_sync_marker', 'unreadable',
                CORRUPT_TYPE, recs[:before(k + 1)])
    for k in (1, 7):      # block k claims 2^40 bytes of data: blocks 0..k-1 decode
        start = spans[k][0]
        n_count = _varint_len(blk[start:start + 10])
        n_size = _varint_len(blk[start + n_count:start + n_count + 10])
        d = blk[:start + n_count] + _zigzag(2 ** 40) + blk[start + n_count + n_size:]
        c.write(c.path(CORRUPT_TYPE), d, 'corrupt_block_size', 'unreadable', CORRUPT_TYPE,
                recs[:before(k)])
    # Random byte flips inside block data, three codecs: the oracle decides (see module doc).
    for codec in ('null', 'null', 'null', 'deflate', 'deflate', 'snappy', 'snappy'):
        _, recs2, blk2 = multi_block_file(f'flip-{codec}-{rng.randrange(10**6)}', n=200,
                                          codec=codec, event_type=CORRUPT_TYPE)
        spans2 = block_layout(blk2)
        start, data_end, _, _ = spans2[rng.randrange(1, len(spans2) - 1)]
        d = bytearray(blk2)
        for _ in range(3):
            d[rng.randrange(start + 4, data_end)] ^= 1 << rng.randrange(8)
        decoded, err = reference_decode(bytes(d))
        c.write(c.path(CORRUPT_TYPE), bytes(d), f'corrupt_flip_{codec}',
                'unreadable' if err else 'read', CORRUPT_TYPE, decoded)

    # 7. A ~900 KB record: forwarded (message_too_large) and not forwarded (sent).
    t = 'users.messages.email.Click'
    big = [plain_record('big', 0, 'ext', campaign_name='c' * HUGE),
           plain_record('big', 1, 'ext', device_model='d' * HUGE),
           plain_record('big', 2, 'ext', url='https://example.com/?q=' + 'u' * HUGE),
           *[plain_record('big', i, external_for(i)) for i in range(3, 40)]]
    c.good(t, big, kind='huge_record')

    # 8. Unicode and control characters in every string field, three types.
    for u, t in enumerate(('users.messages.email.Click', 'users.messages.sms.InboundReceive',
                           'users.behaviors.subscriptiongroup.StateChange')):
        schema = load_schema(t)
        rows = []
        for i in range(len(NASTY) * 3):
            r = {}
            for f in schema['fields']:
                types = f['type'] if isinstance(f['type'], list) else [f['type']]
                if 'string' in types:
                    r[f['name']] = nasty(f"{f['name'][:6]}{u}.{i}", i)
                elif any(isinstance(x, dict) and x.get('type') == 'array' for x in types):
                    r[f['name']] = [nasty('arr', i), '']
                else:
                    r[f['name']] = plain_record('u', i).get(f['name'])
            r['time'] = 1714564800 + i
            if i % 7 == 6:
                r['external_user_id'] = '\u3000\t ' if 'string' in str(schema) else None
            rows.append(r)
        c.good(t, rows, kind='unicode_control_chars')

    # 9. Missing id / time: the nullable schema variant, and variants without the fields.
    t = 'users.messages.sms.Send'
    nullable = nullable_variant(load_schema(t), 'id', 'time', 'user_id')
    rows = [plain_record('nul', 0), plain_record('nul', 1, id=None),
            plain_record('nul', 2, time=None), plain_record('nul', 3, id=None, time=None),
            plain_record('nul', 4, id=''), plain_record('nul', 5, id=' \t'),
            plain_record('nul', 6, time=ABSURD_TIME), plain_record('nul', 7, time=-ABSURD_TIME),
            plain_record('nul', 8, id='x' * 101), plain_record('nul', 9, id='y' * 100),
            plain_record('nul', 10, None, id=None), plain_record('nul', 11, '', time=None),
            plain_record('nul', 12, user_id=None), plain_record('nul', 13, time=-1),
            plain_record('nul', 14, time=0), plain_record('nul', 15, id='z' * 99 + '\u00e9')]
    c.good(t, rows, schema=nullable, kind='nullable_id_time')
    for drop in (('time',), ('id',), ('external_user_id',), ('id', 'time', 'user_id')):
        variant = nullable_variant(load_schema(t), drop=drop)
        c.good(t, [plain_record(f"miss-{'-'.join(drop)}", i, external_for(i))
                   for i in range(25)], schema=variant, kind='missing_fields')

    # 10. Types the run must not read: unknown / other Currents types, non-.avro names.
    bogus_schema = dict(load_schema('users.messages.email.Send'), name='Bogus')
    for other in ('users.messages.email.Bogus', 'users.behaviors.CustomEvent',
                  'users.messages.whatsapp.Send', 'not-a-type'):
        raw = avro(bogus_schema, [fit(bogus_schema, plain_record('other', i)) for i in range(5)])
        c.write(c.path(other), raw, 'unknown_event_type_dir', 'not_listed', other)
    for name in ('_SUCCESS', 'README.txt', 'part-0.avro.tmp', 'part-1.avro.crc', 'manifest.json',
                 'noextension'):
        c.write(c.path('users.messages.email.Send', name=name), b'not read', 'not_avro_name',
                'skipped', None)
    # No event_type= segment: the writer schema's full name decides (CONTRACT §1).
    unknown = dict(load_schema('users.messages.email.Send'), name='Mystery',
                   namespace='dataexport.S3.inner.users.messages.mystery')
    c.write(c.path(None), avro(unknown, [fit(unknown, plain_record('myst', 0))]),
            'unknown_type_in_header', 'skipped', None)
    for t in ('users.messages.email.Send', 'users.messages.sms.Send'):
        c.good(t, [plain_record(f'hdr-{t[-8:]}', i, external_for(i)) for i in range(30)],
               path=c.path(None), kind='type_from_header')
    # Empty but valid Avro (a header, no block).
    c.good('users.canvas.Entry', [], kind='valid_empty')

    # 11. Odd file and folder names.
    odd_names = ('with space +0+1.avro', 'a+b+c+0+2.avro', 'ünïcødé-ファイル+0+3.avro',
                 'pct%20name+0+4.avro', 'brack[1]+0+5.avro', 'hash#q?+0+6.avro',
                 '.hidden+0+7.avro', 'UPPER+0+8.AVRO', 'eq=sign+0+9.avro', 'x' * 200 + '.avro',
                 "quote'dq\"+0+10.avro", 'star*+0+11.avro', 'semi;colon&amp+0+12.avro')
    for k, name in enumerate(odd_names):
        c.good('users.canvas.Conversion', [plain_record(f'odd{k}', i, external_for(i))
                                           for i in range(11)],
               path=c.path('users.canvas.Conversion', name=name), kind='odd_file_name')
    for k, (date, tail) in enumerate((('2024-05-01-12', 'version=10/us 01 (copy)'),
                                      ('2024-05-01-12', 'ünï/çødé'),
                                      ('2024-13-45-99', 'version=10/us-01'),
                                      ('2024-05-01', '7/us-01'))):
        c.good('users.canvas.Conversion', [plain_record(f'odd-dir{k}', i) for i in range(7)],
               path=c.path('users.canvas.Conversion', date=date, tail=tail), kind='odd_folder_name')
    return c


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _varint_len(data: bytes) -> int:
    for i, b in enumerate(data):
        if not b & 0x80:
            return i + 1
    raise ValueError('no varint end')


def corrupt_block_count(data: bytes, block: int, new_count: int) -> bytes:
    """The file with block `block`'s record count replaced (its data and sync left intact)."""
    start = block_layout(data)[block][0]
    n = _varint_len(data[start:start + 10])
    return data[:start] + _zigzag(new_count) + data[start + n:]
