"""The values that flow between the steps, named after what they are in the domain."""
import base64
import json
from typing import Any, Dict, NamedTuple, Optional, Tuple


class CurrentsEvent(NamedTuple):
    """One record decoded from a Currents Avro file."""
    event_type: str          # Currents type, e.g. users.messages.email.Click
    source: str              # the file it came from
    record: Dict[str, Any]
    # (profile, include_anonymous) to map it with, when not the run's own: a replayed reject's.
    mapping: Optional[Tuple[str, bool]] = None


class SegmentMessage(NamedTuple):
    """One Segment `track` message, serialized once (compact UTF-8 JSON) and kept as bytes."""
    event_type: str          # Currents type (the summary and rejects are keyed by it)
    message_id: str
    payload: bytes
    source: str = ''


class SegmentBatch(NamedTuple):
    """Messages that fit together in one request to the batch endpoint."""
    messages: Tuple[SegmentMessage, ...]

    def body(self, sent_at: Optional[str] = None) -> bytes:
        """The exact request body, without `sentAt` unless given (then set per attempt).

        With `sentAt` Segment may recompute each message's `timestamp` from it, which puts
        historical events at risk (docs/mapping.md, "Why no sentAt").
        """
        head = b'{"batch":[' + b','.join(m.payload for m in self.messages)
        if sent_at is None:
            return head + b']}'
        return head + b'],"sentAt":"' + sent_at.encode('ascii') + b'"}'


class Reject(NamedTuple):
    """An event (or a whole unreadable file) that could not be delivered, with why.

    Exactly one of `message` (the mapped Segment message) or `record` (the original Currents
    record) is kept so the reject can be replayed once the cause is fixed. A kept record also
    keeps the mapping profile and --include_anonymous it was mapped with, so a replay maps it
    the same way.
    """
    reason: str
    event_type: Optional[str]
    source: str
    detail: str
    message: Optional[Dict[str, Any]] = None
    record: Optional[Dict[str, Any]] = None
    mapping: Optional[str] = None
    include_anonymous: bool = False
    input: Optional[str] = None     # the run's --input: replay re-reads only files under it

    @property
    def is_file(self) -> bool:
        return self.reason == UNREADABLE_FILE

    def to_json(self) -> str:
        out = {'reason': self.reason, 'event_type': self.event_type, 'source': self.source,
               'detail': self.detail}
        if self.message is not None:
            out['message'] = self.message
        if self.record is not None:
            out['record'] = self.record
        if self.mapping is not None:
            out['mapping'] = self.mapping
            out['include_anonymous'] = bool(self.include_anonymous)
        if self.input is not None:
            out['input'] = self.input
        return json.dumps(out, ensure_ascii=False, separators=(',', ':'), default=_json_safe)


def _json_safe(value: Any) -> Any:
    """Avro `bytes`/`fixed` values and other odd types, made JSON-safe without loss."""
    if isinstance(value, (bytes, bytearray)):
        return {'$base64': base64.b64encode(bytes(value)).decode('ascii')}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def reject_for_message(message: SegmentMessage, reason: str, detail: str) -> Reject:
    return Reject(reason, message.event_type, message.source, detail,
                  message=json.loads(message.payload))


# Reject reasons (CONTRACT §5).
INVALID_RECORD = 'invalid_record'
MESSAGE_TOO_LARGE = 'message_too_large'
MESSAGE_ID_TOO_LONG = 'message_id_too_long'
SEGMENT_REJECTED = 'segment_rejected'
RETRIES_EXHAUSTED = 'retries_exhausted'
UNREADABLE_FILE = 'unreadable_file'
REASONS = (INVALID_RECORD, MESSAGE_TOO_LARGE, MESSAGE_ID_TOO_LONG, SEGMENT_REJECTED,
           RETRIES_EXHAUSTED, UNREADABLE_FILE)
