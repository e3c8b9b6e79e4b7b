"""Map: Currents events → serialized Segment messages; drops and rejects flow as data/counts."""
import apache_beam as beam

from transforms import completion, counts, progress
from transforms.mapping import DROPPED, Invalid, mapper_for, serialize
from transforms.model import INVALID_RECORD, CurrentsEvent, Reject, SegmentMessage
from transforms.profiles import CLASSIC
from transforms.progress import LiveChannel

REJECTS = 'rejects'


class MapToSegmentFn(beam.DoFn):
    """One Segment message per event, serialized once here so later steps do byte arithmetic.

    Events map with the run's profile (`mapping`, `include_anonymous`); a replayed record that
    names the profile it was first mapped with uses that one.
    """

    reporter, stop = progress.NO_REPORTER, progress.NO_STOP   # until setup()

    def __init__(self, message_id_prefix='', library_version='', integrations=None,
                 mapping=CLASSIC, include_anonymous=False, live: LiveChannel = LiveChannel()):
        self.settings = (message_id_prefix, library_version, integrations)
        self.choice = (mapping, bool(include_anonymous))
        self.live = live
        self.mapper = None
        self.mappers = {}

    def setup(self):
        self.mapper = self._mapper(self.choice)
        self.reporter = self.live.reporter()

    def _mapper(self, choice):
        found = self.mappers.get(choice)
        if found is None:
            found = self.mappers[choice] = mapper_for(choice[0], *self.settings,
                                                      include_anonymous=choice[1])
        return found

    def process(self, event: CurrentsEvent):
        # Returns lists rather than yielding: no generator per event on this hot path.
        choice = event.mapping
        try:
            if choice is None:
                choice, mapper = self.choice, self.mapper
            else:
                mapper = self._mapper(choice)
            message = mapper.to_message(event.event_type, event.record)
        except Invalid as exc:
            return [beam.pvalue.TaggedOutput(REJECTS, Reject(
                exc.reason, event.event_type, event.source, exc.detail, record=event.record,
                mapping=choice[0], include_anonymous=choice[1]))]
        except Exception as exc:  # odd data the schema allowed; dead-letter, never crash
            return [beam.pvalue.TaggedOutput(REJECTS, Reject(
                INVALID_RECORD, event.event_type, event.source,
                f'mapping failed: {type(exc).__name__}: {exc}', record=event.record,
                mapping=choice[0], include_anonymous=choice[1]))]
        if message is DROPPED:
            counts.counter(counts.DROPPED, event.event_type).inc()
            self.reporter.add(progress.DROPPED)
            done = completion.current()
            if done is not None:   # a dropped event is settled for its file at once
                done.settle(event.source, completion.DROPPED)
            return ()
        return [SegmentMessage(event.event_type, message['messageId'], serialize(message),
                               event.source)]


class MapToSegment(beam.PTransform):
    """CurrentsEvent → (SegmentMessage PCollection, Reject PCollection)."""

    def __init__(self, message_id_prefix='', library_version='', integrations=None,
                 mapping=CLASSIC, include_anonymous=False, live: LiveChannel = LiveChannel()):
        super().__init__()
        self.fn = MapToSegmentFn(message_id_prefix, library_version, integrations, mapping,
                                 include_anonymous, live)

    def expand(self, events):
        result = events | 'ToTrackMessage' >> beam.ParDo(self.fn).with_outputs(
            REJECTS, main='messages')
        return result.messages, result[REJECTS]
