"""Segment's limits at the exact boundary, with the numbers written out (not imported).

2,500 messages per request, 500,000 bytes per request body, 32,000 bytes per message,
100 characters per messageId; and the years 1000-9999 a timestamp can express.
"""
import json

import pytest
from apache_beam.pvalue import TaggedOutput

from transforms.batch import BatchGlobalWindowFn, BatchMessagesFn
from transforms.mapping import Invalid, MessageMapper
from transforms.model import (INVALID_RECORD, MESSAGE_ID_TOO_LONG, MESSAGE_TOO_LARGE,
                              SegmentBatch, SegmentMessage)
from transforms.sizing import BatchPacker, pack

SENT_AT = '2024-05-01T12:00:00.000Z'   # a sentAt is always 24 characters


def message(i: int, size: int) -> SegmentMessage:
    """A valid JSON message of exactly `size` bytes (size >= 30)."""
    head = {'messageId': f'm{i}', 'pad': ''}
    pad = size - len(json.dumps(head, separators=(',', ':')))
    head['pad'] = 'x' * pad
    payload = json.dumps(head, separators=(',', ':')).encode()
    assert len(payload) == size
    return SegmentMessage('users.canvas.Entry', f'm{i}', payload, 'file.avro')


def body_length(batch) -> int:
    return len(SegmentBatch(tuple(batch)).body(SENT_AT))


# -- 2,500 messages per request ------------------------------------------------------------------
def test_2500_messages_fit_in_one_request():
    messages = [message(i, 40) for i in range(2500)]
    batches = pack(messages)
    assert [len(b) for b in batches] == [2500]
    assert body_length(batches[0]) < 500_000   # the count, not the size, is the limit here


def test_the_2501st_message_starts_a_new_request():
    messages = [message(i, 40) for i in range(2501)]
    batches = pack(messages)
    assert [len(b) for b in batches] == [2500, 1]
    assert batches[1][0].message_id == 'm2500'
    assert [m for b in batches for m in b] == messages


def test_5001_messages_make_three_requests():
    batches = pack([message(i, 40) for i in range(5001)])
    assert [len(b) for b in batches] == [2500, 2500, 1]


# -- 500,000 bytes per request body --------------------------------------------------------------
# The body is {"batch":[m1,m2,...,m16],"sentAt":"<24 characters>"}: 48 bytes of envelope plus
# the messages plus one comma between each two. 15 messages of 31,250 bytes (468,750) + 15
# commas + 48 = 468,813, so a 16th message of 31,187 bytes makes the body exactly 500,000.
FIFTEEN = 15 * [31_250]


def test_a_body_of_exactly_500000_bytes_is_one_request():
    messages = [message(i, s) for i, s in enumerate(FIFTEEN + [31_187])]
    batches = pack(messages)
    assert [len(b) for b in batches] == [16]
    assert body_length(batches[0]) == 500_000


def test_one_byte_more_splits_the_body():
    messages = [message(i, s) for i, s in enumerate(FIFTEEN + [31_188])]
    assert body_length(messages) == 500_001
    batches = pack(messages)
    assert [len(b) for b in batches] == [15, 1]
    assert body_length(batches[0]) == 468_812   # 15 messages, 14 commas


def test_the_next_request_is_also_filled_to_the_byte():
    # Two exact 500,000-byte bodies in a row: the second batch's budget starts afresh (its first
    # message carries no comma), then one byte more overflows it into a third.
    sizes = FIFTEEN + [31_187] + FIFTEEN + [31_187]
    batches = pack([message(i, s) for i, s in enumerate(sizes)])
    assert [len(b) for b in batches] == [16, 16]
    assert [body_length(b) for b in batches] == [500_000, 500_000]
    sizes = FIFTEEN + [31_187] + FIFTEEN + [31_188]
    batches = pack([message(i, s) for i, s in enumerate(sizes)])
    assert [len(b) for b in batches] == [16, 15, 1]


def test_many_small_messages_fill_the_body_counting_every_comma():
    # 2,000 messages of 249 bytes: 48 + 2,000*249 + 1,999 commas = 500,047 > 500,000, so the
    # request takes 1,999 of them (48 + 1,999*249 + 1,998 = 499,797) and leaves one.
    batches = pack([message(i, 249) for i in range(2000)])
    assert [len(b) for b in batches] == [1999, 1]
    assert body_length(batches[0]) == 499_797


def test_the_packer_hands_back_each_full_batch_as_it_closes():
    packer = BatchPacker()
    first = [message(i, s) for i, s in enumerate(FIFTEEN + [31_187])]
    assert all(packer.add(m) is None for m in first)
    extra = message(99, 100)
    assert packer.add(extra) == tuple(first)
    assert packer.flush() == (extra,)
    assert packer.flush() is None
    assert pack([]) == []


def test_a_custom_body_limit_must_hold_the_envelope_and_one_full_message():
    # 48 bytes of envelope + one 32,000-byte message.
    BatchPacker(max_body_bytes=32_048)
    with pytest.raises(ValueError, match='^max_body_bytes too small to hold one message$'):
        BatchPacker(max_body_bytes=32_047)


def test_custom_limits_are_honoured():
    batches = pack([message(i, 100) for i in range(7)], max_body_bytes=500_000, max_messages=3)
    assert [len(b) for b in batches] == [3, 3, 1]
    # Four 10,000-byte messages make a body of 48 + 40,000 + 3 commas = 40,051 bytes.
    batches = pack([message(i, 10_000) for i in range(4)], max_body_bytes=40_050)
    assert [len(b) for b in batches] == [3, 1]
    batches = pack([message(i, 10_000) for i in range(4)], max_body_bytes=40_051)
    assert [len(b) for b in batches] == [4]


# -- 32,000 bytes per message --------------------------------------------------------------------
@pytest.mark.parametrize('fn_class', [BatchGlobalWindowFn, BatchMessagesFn])
def test_a_message_of_exactly_32000_bytes_is_sent(fn_class):
    fn = fn_class()
    fn.start_bundle()
    out = list(fn.process(message(1, 32_000))) if fn_class is BatchGlobalWindowFn else \
        list(fn.process(message(1, 32_000), window='w'))
    assert out == []
    if fn_class is BatchMessagesFn:
        assert fn.packers['w'].flush() == (message(1, 32_000),)
    else:
        [flushed] = list(fn.finish_bundle())
        assert flushed.value.messages == (message(1, 32_000),)


@pytest.mark.parametrize('fn_class', [BatchGlobalWindowFn, BatchMessagesFn])
def test_a_message_of_32001_bytes_is_rejected_message_too_large(fn_class):
    fn = fn_class()
    fn.start_bundle()
    args = () if fn_class is BatchGlobalWindowFn else ('w',)
    [out] = list(fn.process(message(1, 32_001), *args))
    assert isinstance(out, TaggedOutput) and out.tag == 'rejects'
    reject = out.value
    assert reject.reason == MESSAGE_TOO_LARGE == 'message_too_large'
    assert reject.detail == '32001 bytes serialized; Segment allows 32000'
    assert reject.message['messageId'] == 'm1' and reject.source == 'file.avro'


# -- 100 characters per messageId ----------------------------------------------------------------
def _record(event_id, time=1714564800):
    return {'id': event_id, 'user_id': 'u', 'external_user_id': 'e', 'time': time}


def test_a_message_id_of_100_characters_is_kept():
    message_id = MessageMapper().to_message('users.canvas.Entry', _record('a' * 100))['messageId']
    assert message_id == 'a' * 100
    prefixed = MessageMapper('dev-').to_message('users.canvas.Entry', _record('a' * 96))
    assert prefixed['messageId'] == 'dev-' + 'a' * 96


@pytest.mark.parametrize('prefix,id_length', [('', 101), ('dev-', 97)])
def test_a_message_id_of_101_characters_is_rejected(prefix, id_length):
    with pytest.raises(Invalid) as caught:
        MessageMapper(prefix).to_message('users.canvas.Entry', _record('a' * id_length))
    assert caught.value.reason == MESSAGE_ID_TOO_LONG == 'message_id_too_long'
    assert caught.value.detail == 'messageId has 101 characters, Segment allows 100'


# -- timestamps: years 1000 to 9999 --------------------------------------------------------------
@pytest.mark.parametrize('seconds,timestamp', [
    (-30_610_224_000, '1000-01-01T00:00:00.000Z'),
    (253_402_300_799, '9999-12-31T23:59:59.000Z'),
])
def test_first_and_last_second_of_the_iso_years_map(seconds, timestamp):
    mapped = MessageMapper().to_message('users.canvas.Entry', _record('x', seconds))
    assert mapped['timestamp'] == timestamp


@pytest.mark.parametrize('seconds', [-30_610_224_001, 253_402_300_800])
def test_one_second_outside_the_iso_years_is_invalid(seconds):
    with pytest.raises(Invalid) as caught:
        MessageMapper().to_message('users.canvas.Entry', _record('x', seconds))
    assert caught.value.reason == INVALID_RECORD
    assert caught.value.detail == f'time out of range (years 1000-9999): {seconds}'
