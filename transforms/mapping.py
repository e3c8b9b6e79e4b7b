"""Currents record → Segment `track` message, exactly as Braze's connector maps it.

One mapper per mapping profile (docs/mapping.md): `MessageMapper`
for `classic`, `CurrentMessageMapper` for `current`; `mapper_for` picks one.
Pure functions: no Beam here, so the mapping is tested fast and reused by the replay path.
"""
import json
import time

import orjson
from typing import Any, Dict, Optional, Union

from transforms.events import BY_CURRENTS_TYPE, COMMON_PROPERTIES
from transforms.profiles import CLASSIC, CURRENT, CURRENT_EVENTS, PROFILES
from transforms.model import INVALID_RECORD, MESSAGE_ID_TOO_LONG

MAX_MESSAGE_ID_CHARS = 100
# ISO-8601 needs a four-digit year: 1000-01-01 .. 9999-12-31 (a `time` in milliseconds by
# mistake lands far past the end, so it is rejected, never guessed).
MIN_SECONDS, MAX_SECONDS = -30_610_224_000, 253_402_300_800
LIBRARY_NAME = 'currents-to-segment'


class Dropped(str):
    """Marker result: the event is dropped (no external_user_id), not rejected."""


DROPPED = Dropped('dropped_no_external_user_id')


class Invalid(Exception):
    """The record cannot become a message; `reason` is a CONTRACT §5 reject reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def as_string(value: Any) -> str:
    """The connector documents every property as String: true/false, decimal numbers."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False, separators=(',', ':'), default=str)


def iso_timestamp(seconds: int) -> str:
    """Unix seconds (UTC) → ISO-8601 with milliseconds and Z."""
    return time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(seconds))


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


class MessageMapper:
    """Builds messages for one run's settings (prefix, library version, integrations).

    Per event type the property list (common, then event-specific) is worked out once, since
    this runs for every event of a backfill.
    """

    def __init__(self, message_id_prefix: str = '', library_version: str = '',
                 integrations: Optional[Dict[str, Any]] = None, include_anonymous: bool = False):
        self.prefix = message_id_prefix or ''
        self.library = {'name': LIBRARY_NAME, 'version': library_version}
        self.integrations = integrations
        self.include_anonymous = include_anonymous
        self.plans = {
            spec.currents_type: (spec.segment_event, spec.is_email,
                                 tuple((n, n) for n in COMMON_PROPERTIES) + spec.properties)
            for spec in BY_CURRENTS_TYPE.values()}
        self._hours: Dict[int, str] = {}

    def _timestamp(self, seconds: int) -> str:
        hour, rest = divmod(seconds, 3600)
        prefix = self._hours.get(hour)
        if prefix is None:
            if len(self._hours) > 10000:
                self._hours.clear()
            prefix = self._hours[hour] = time.strftime('%Y-%m-%dT%H:', time.gmtime(hour * 3600))
        return f'{prefix}{rest // 60:02d}:{rest % 60:02d}.000Z'

    def to_message(self, event_type: str, record: Dict[str, Any]) -> Union[Dict[str, Any], Dropped]:
        """The Segment message for a record, or DROPPED; raises Invalid for bad records."""
        event_name, is_email, pairs = self.plans[event_type]
        get = record.get
        message = self._head(event_name, get)
        if message is DROPPED:
            return DROPPED
        properties = {}
        for name, field in pairs:
            value = get(field)
            if value is not None:
                properties[name] = value if value.__class__ is str else as_string(value)
        message['properties'] = properties
        email = get('email_address') if is_email else None
        if email is not None:
            message['context'] = {'traits': {'email': as_string(email)}, 'library': self.library}
        else:
            message['context'] = {'library': self.library}
        if self.integrations is not None:
            message['integrations'] = self.integrations
        return message

    def _head(self, event_name: Optional[str], get) -> Union[Dict[str, Any], Dropped]:
        """type, event, userId, anonymousId, messageId, timestamp, in this order; or DROPPED.

        The drop (no external_user_id) is decided before any validity check.
        """
        external_id = get('external_user_id')
        if not _present(external_id):
            # Braze's "include events from anonymous users": sent with anonymousId only.
            if not (self.include_anonymous and _present(get('user_id'))):
                return DROPPED
            external_id = None
        event_id = get('id')
        if not _present(event_id):
            raise Invalid(INVALID_RECORD, 'record has no id')
        seconds = get('time')
        if seconds.__class__ is not int:
            if isinstance(seconds, bool) or not isinstance(seconds, int):
                raise Invalid(INVALID_RECORD, 'record has no integer time' if seconds is None
                              else f'time is not an integer: {seconds!r}')
        if not MIN_SECONDS <= seconds < MAX_SECONDS:
            raise Invalid(INVALID_RECORD, f'time out of range (years 1000-9999): {seconds}')
        timestamp = self._timestamp(seconds)
        message_id = self.prefix + (event_id if event_id.__class__ is str else as_string(event_id))
        if len(message_id) > MAX_MESSAGE_ID_CHARS:
            raise Invalid(MESSAGE_ID_TOO_LONG,
                          f'messageId has {len(message_id)} characters, Segment allows '
                          f'{MAX_MESSAGE_ID_CHARS}')
        message = {'type': 'track', 'event': event_name}
        if external_id is not None:
            message['userId'] = (external_id if external_id.__class__ is str
                                 else as_string(external_id))
        user_id = get('user_id')
        if _present(user_id):
            message['anonymousId'] = user_id if user_id.__class__ is str else as_string(user_id)
        message['messageId'] = message_id
        message['timestamp'] = timestamp
        return message


class CurrentMessageMapper(MessageMapper):
    """The `current` profile: Braze's connector as its event glossary documents it today.

    Per type: the Segment event (a custom event's is the record's `name`), context paths and
    properties each set from their Avro field when it is non-null, with the value exactly as
    Avro decoded it (strings, booleans, numbers, arrays); nothing is converted or guessed.
    """

    def __init__(self, message_id_prefix: str = '', library_version: str = '',
                 integrations: Optional[Dict[str, Any]] = None, include_anonymous: bool = False):
        super().__init__(message_id_prefix, library_version, integrations, include_anonymous)
        self.plans = {
            spec.currents_type: (
                spec.segment_event,
                tuple((tuple(path.split('.')[1:]), field) for path, field in spec.context),
                spec.properties)
            for spec in CURRENT_EVENTS}

    def to_message(self, event_type: str, record: Dict[str, Any]) -> Union[Dict[str, Any], Dropped]:
        plan = self.plans.get(event_type)
        if plan is None:
            raise Invalid(INVALID_RECORD, f'{event_type} is not a type of the current mapping')
        event_name, context_paths, pairs = plan
        get = record.get
        message = self._head(event_name, get)
        if message is DROPPED:
            return DROPPED
        if event_name is None:
            name = get('name')
            if name.__class__ is not str or not name.strip():
                raise Invalid(INVALID_RECORD, 'custom event has no name' if name is None
                              or name.__class__ is str else f'name is not a string: {name!r}')
            message['event'] = name
        properties = {}
        for segment_name, field in pairs:
            value = get(field)
            if value is not None:
                properties[segment_name] = value
        message['properties'] = properties
        context = {}
        for path, field in context_paths:
            value = get(field)
            if value is not None:
                node = context
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = value
        context['library'] = self.library
        message['context'] = context
        if self.integrations is not None:
            message['integrations'] = self.integrations
        return message


def mapper_for(profile: str = CLASSIC, message_id_prefix: str = '', library_version: str = '',
               integrations: Optional[Dict[str, Any]] = None,
               include_anonymous: bool = False) -> MessageMapper:
    """The mapper of a mapping profile (`classic` or `current`)."""
    if profile not in PROFILES:
        raise ValueError(f'unknown mapping profile {profile!r} (known: {", ".join(PROFILES)})')
    cls = CurrentMessageMapper if profile == CURRENT else MessageMapper
    return cls(message_id_prefix, library_version, integrations, include_anonymous)


def serialize(message: Dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that go into the request body.

    orjson (already a Beam dependency) is ~10x faster than the json module on this hot path;
    the json module covers what orjson refuses (integers beyond 64 bits in --integrations, lone
    surrogates from a hand-edited rejects file), escaping to ASCII so the bytes are always valid.
    """
    try:
        return orjson.dumps(message)
    except TypeError:
        return json.dumps(message, separators=(',', ':')).encode('ascii')
