"""Batches stay within Segment's limits and are as full as the limits allow."""
import json

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.batch import BatchMessages
from transforms.model import MESSAGE_TOO_LARGE, SegmentBatch, SegmentMessage
from transforms.sizing import (ENVELOPE_BYTES, MAX_BATCH_MESSAGES, MAX_BODY_BYTES,
                               MAX_MESSAGE_BYTES, BatchPacker, pack)

SENT_AT = '2026-11-28T12:00:00.000Z'


def message(i: int, size: int) -> SegmentMessage:
    """A valid JSON message of exactly `size` bytes (size >= 40)."""
    head = {'messageId': f'm{i}', 'pad': ''}
    base = len(json.dumps(head, separators=(',', ':')))
    head['pad'] = 'x' * (size - base)
    payload = json.dumps(head, separators=(',', ':')).encode()
    assert len(payload) == size
    return SegmentMessage('users.canvas.Entry', f'm{i}', payload)


def check_batches(batches, messages):
    out = [m for b in batches for m in b]
    assert out == list(messages)  # nothing lost, nothing duplicated, order kept
    for b in batches:
        body = SegmentBatch(b).body(SENT_AT)
        assert len(body) <= MAX_BODY_BYTES
        assert 1 <= len(b) <= MAX_BATCH_MESSAGES
        assert json.loads(body)['batch'][0]['messageId'] == b[0].message_id
    # As full as the limits allow: the next batch's first message would not have fitted.
    for b, nxt in zip(batches, batches[1:]):
        grown = SegmentBatch(b + (nxt[0],)).body(SENT_AT)
        assert len(grown) > MAX_BODY_BYTES or len(b) == MAX_BATCH_MESSAGES


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=40, max_value=MAX_MESSAGE_BYTES), min_size=0,
                max_size=400))
def test_random_sizes_respect_every_limit(sizes):
    messages = [message(i, s) for i, s in enumerate(sizes)]
    check_batches(pack(messages), messages)


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=7000), st.integers(min_value=40, max_value=200))
def test_many_small_messages_split_at_2500(count, size):
    messages = [message(i, size) for i in range(count)]
    batches = pack(messages)
    check_batches(batches, messages)
    assert max(len(b) for b in batches) <= 2500


def test_exact_fit_to_the_byte():
    # n messages of size s: body = envelope + n*s + (n-1) commas.
    s = 20_000
    n = (MAX_BODY_BYTES - ENVELOPE_BYTES + 1) // (s + 1)
    messages = [message(i, s) for i in range(n + 1)]
    batches = pack(messages)
    assert [len(b) for b in batches] == [n, 1]
    assert len(SegmentBatch(batches[0]).body(SENT_AT)) <= MAX_BODY_BYTES


def test_packer_rejects_a_budget_that_cannot_hold_a_message():
    import pytest
    with pytest.raises(ValueError):
        BatchPacker(max_body_bytes=1000)


def _run_batching(messages, windowed=False):
    options = PipelineOptions(['--runner=FnApiRunner'])
    with TestPipeline(options=options) as p:
        pcoll = p | beam.Create(messages)
        if windowed:
            pcoll = (pcoll
                     | 'Stamp' >> beam.Map(lambda m: window.TimestampedValue(
                         m, int(m.message_id[1:]) * 60))
                     | 'Window' >> beam.WindowInto(window.FixedWindows(600)))
        batches, rejects = pcoll | BatchMessages()
        return p, batches, rejects


def test_oversize_message_is_rejected_and_the_rest_batched():
    messages = [message(i, 1000) for i in range(10)] + [message(99, MAX_MESSAGE_BYTES + 1)]
    options = PipelineOptions(['--runner=FnApiRunner'])
    with TestPipeline(options=options) as p:
        batches, rejects = p | beam.Create(messages) | BatchMessages()
        assert_that(batches | beam.FlatMap(lambda b: [m.message_id for m in b.messages]),
                    equal_to([f'm{i}' for i in range(10)]), label='batched')
        assert_that(rejects | beam.Map(lambda r: (r.reason, r.message['messageId'])),
                    equal_to([(MESSAGE_TOO_LARGE, 'm99')]), label='rejected')


def test_batches_never_mix_windows():
    messages = [message(i, 500) for i in range(100)]  # one per minute → 10 windows of 10

    def window_of(batch, w=beam.DoFn.WindowParam):
        return (w.start.micros // 1_000_000, sorted(int(m.message_id[1:]) for m in batch.messages))

    options = PipelineOptions(['--runner=FnApiRunner'])
    with TestPipeline(options=options) as p:
        pcoll = (p | beam.Create(messages)
                 | 'Stamp' >> beam.Map(lambda m: window.TimestampedValue(
                     m, int(m.message_id[1:]) * 60))
                 | 'Window' >> beam.WindowInto(window.FixedWindows(600)))
        batches, _ = pcoll | BatchMessages()
        assert_that(batches | beam.Map(window_of),
                    equal_to([(w * 600, list(range(w * 10, w * 10 + 10))) for w in range(10)]))
