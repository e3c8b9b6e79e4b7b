"""Map: Currents events → serialized Segment messages; drops and rejects flow as data/counts."""
import apache_beam as beam

from transforms import counts
from transforms.mapping import DROPPED, Invalid, MessageMapper, serialize
from transforms.model import INVALID_RECORD, CurrentsEvent, Reject, SegmentMessage

REJECTS = 'rejects'


class MapToSegmentFn(beam.DoFn):
    """One Segment message per event, serialized once here so later steps do byte arithmetic."""

    def __init__(self, message_id_prefix='', library_version='', integrations=None):
        self.settings = (message_id_prefix, library_version, integrations)
        self.mapper = None

    def setup(self):
        self.mapper = MessageMapper(*self.settings)

    def process(self, event: CurrentsEvent):
        # Returns lists rather than yielding: no generator per event on this hot path.
        try:
            message = self.mapper.to_message(event.event_type, event.record)
        except Invalid as exc:
            return [beam.pvalue.TaggedOutput(REJECTS, Reject(
                exc.reason, event.event_type, event.source, exc.detail, record=event.record))]
        except Exception as exc:  # odd data the schema allowed; dead-letter, never crash
            return [beam.pvalue.TaggedOutput(REJECTS, Reject(
                INVALID_RECORD, event.event_type, event.source,
                f'mapping failed: {type(exc).__name__}: {exc}', record=event.record))]
        if message is DROPPED:
            counts.counter(counts.DROPPED, event.event_type).inc()
            return ()
        return [SegmentMessage(event.event_type, message['messageId'], serialize(message),
                               event.source)]


class MapToSegment(beam.PTransform):
    """CurrentsEvent → (SegmentMessage PCollection, Reject PCollection)."""

    def __init__(self, message_id_prefix='', library_version='', integrations=None):
        super().__init__()
        self.fn = MapToSegmentFn(message_id_prefix, library_version, integrations)

    def expand(self, events):
        result = events | 'ToTrackMessage' >> beam.ParDo(self.fn).with_outputs(
            REJECTS, main='messages')
        return result.messages, result[REJECTS]
