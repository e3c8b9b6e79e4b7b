"""Batch: messages → requests within Segment's limits, per window, without a shuffle."""
import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from transforms.model import MESSAGE_TOO_LARGE, SegmentBatch, SegmentMessage, reject_for_message
from transforms.sizing import MAX_BATCH_MESSAGES, MAX_BODY_BYTES, MAX_MESSAGE_BYTES, BatchPacker

REJECTS = 'rejects'
GLOBAL = GlobalWindow()


class BatchMessagesFn(beam.DoFn):
    """Packs a bundle's messages into batches, one packer per window.

    Bundle-level (like BigQueryWriteFn) rather than GroupIntoBatches: no shuffle of every
    event, and the local runner stays on FnApiRunner. Windows are respected so the same step
    serves an event-time windowed (streaming) run.
    """

    def __init__(self, max_body_bytes=MAX_BODY_BYTES, max_messages=MAX_BATCH_MESSAGES,
                 max_message_bytes=MAX_MESSAGE_BYTES):
        self.max_body_bytes = max_body_bytes
        self.max_messages = max_messages
        self.max_message_bytes = max_message_bytes
        self.packers = {}

    def start_bundle(self):
        self.packers = {}

    def too_large(self, message: SegmentMessage):
        return beam.pvalue.TaggedOutput(REJECTS, reject_for_message(
            message, MESSAGE_TOO_LARGE,
            f'{len(message.payload)} bytes serialized; Segment allows {self.max_message_bytes}'))

    def process(self, message: SegmentMessage, window=beam.DoFn.WindowParam):
        if len(message.payload) > self.max_message_bytes:
            yield self.too_large(message)
            return
        packer = self.packers.get(window)
        if packer is None:
            packer = self.packers[window] = BatchPacker(self.max_body_bytes, self.max_messages)
        full = packer.add(message)
        if full:
            yield SegmentBatch(full)

    def finish_bundle(self):
        for window, packer in self.packers.items():
            rest = packer.flush()
            if rest:
                yield WindowedValue(SegmentBatch(rest), window.max_timestamp(), (window,))
        self.packers = {}


class BatchGlobalWindowFn(BatchMessagesFn):
    """The same packing for the global window (a batch backfill): without the per-element
    window parameter, Beam calls `process` on its fast path."""

    def start_bundle(self):
        super().start_bundle()
        self.packer = BatchPacker(self.max_body_bytes, self.max_messages)
        self.packers[GLOBAL] = self.packer

    def process(self, message: SegmentMessage):
        if len(message.payload) > self.max_message_bytes:
            return [self.too_large(message)]
        full = self.packer.add(message)
        return [SegmentBatch(full)] if full else ()


class BatchMessages(beam.PTransform):
    """SegmentMessage → (SegmentBatch PCollection, Reject PCollection for oversize messages)."""

    def __init__(self, max_body_bytes=MAX_BODY_BYTES, max_messages=MAX_BATCH_MESSAGES):
        super().__init__()
        self.limits = (max_body_bytes, max_messages)

    def expand(self, messages):
        windowed = not isinstance(messages.windowing.windowfn, GlobalWindows)
        fn = (BatchMessagesFn if windowed else BatchGlobalWindowFn)(*self.limits)
        result = messages | 'PackBatches' >> beam.ParDo(fn).with_outputs(
            REJECTS, main='batches')
        return result.batches, result[REJECTS]
