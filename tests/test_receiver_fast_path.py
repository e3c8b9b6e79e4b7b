"""The receiver's fast path (devtools/receiver.py `_all_valid`) answers exactly as the full path.

The fast path may only say "every item is fine"; whenever it does, the full path must agree,
and the stored messages and counters must be the same. Each case is run twice, through a
receiver with the fast path and through one without it.
"""
import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools import receiver as receiver_module
from devtools.receiver import SegmentReceiver

KEY = 'test-write-key'


class Handler:
    """What `_accept` reads off a request handler: its headers."""

    def __init__(self, **extra):
        self.headers = {'Authorization': 'Basic ' + base64.b64encode(f'{KEY}:'.encode()).decode(),
                        'Content-Type': 'application/json', **extra}


def message(i, **kw):
    m = {'type': 'track', 'userId': f'u{i}', 'event': 'Email Opened', 'messageId': f'm-{i}',
         'timestamp': '2024-05-01T12:00:00.000Z', 'properties': {'n': i, 'ok': True}}
    m.update(kw)
    return {k: v for k, v in m.items() if v is not DELETE}


class _Delete:
    def __repr__(self):
        return 'DELETE'


DELETE = _Delete()   # in a change: drop the key


def outcome(body: bytes, fast=True, **receiver_kw):
    """(status, answer, stats without timings, stored messages) for one request."""
    rec = SegmentReceiver(**receiver_kw)
    if fast:
        status, answer = rec._accept(Handler(), body, 0.0)
    else:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(receiver_module, '_all_valid', lambda *a: None)
            status, answer = rec._accept(Handler(), body, 0.0)
    stats = rec.stats()
    stats.pop('arrivals')
    stored = rec.messages()
    for m in stored:   # an id the receiver assigned is random
        if m['messageId'].startswith('receiver-'):
            m['messageId'] = 'receiver-*'
    return status, answer, stats, stored


def same_answer(body: bytes, **receiver_kw):
    fast = outcome(body, **receiver_kw)
    assert fast == outcome(body, fast=False, **receiver_kw)
    return fast


def encode(batch, style='compact', **envelope):
    obj = {'batch': batch, 'sentAt': '2024-05-02T00:00:00.000Z', **envelope}
    if style == 'compact':
        return json.dumps(obj, separators=(',', ':'), ensure_ascii=False).encode()
    if style == 'ascii':
        return json.dumps(obj).encode()
    return json.dumps(obj, indent=1, ensure_ascii=False).encode()


def test_a_clean_request_takes_the_fast_path_and_is_stored_as_sent():
    body = encode([message(i) for i in range(3)])
    found = receiver_module._all_valid(body, 2500, 32_000)
    assert found is not None
    items, sent_at = found
    assert [m.messageId for m in items] == ['m-0', 'm-1', 'm-2']
    assert sent_at == '2024-05-02T00:00:00.000Z'
    status, answer, stats, stored = same_answer(body)
    assert (status, answer) == (200, {'success': True})
    assert stored == [message(i) for i in range(3)]
    assert stats['accepted'] == 3 and stats['bodies_with_sent_at'] == 1


# One change to item 1 of three; each must leave the fast path (it answers only "all fine").
LEAVES = [
    {'type': DELETE}, {'type': None}, {'type': 'click'}, {'type': 42},
    {'userId': DELETE}, {'userId': None}, {'userId': ''}, {'userId': 42},
    {'userId': DELETE, 'anonymousId': ''},
    {'event': DELETE}, {'event': None}, {'event': ''}, {'event': 7},
    {'type': 'page', 'name': 5}, {'type': 'screen', 'name': None},
    {'properties': [1]}, {'properties': None}, {'properties': 'x'},
    {'traits': None}, {'context': 3}, {'integrations': []},
    {'messageId': DELETE}, {'messageId': ''}, {'messageId': 'm' * 101}, {'messageId': 42},
    {'timestamp': 'yesterday'}, {'timestamp': None}, {'timestamp': 5},
]


@pytest.mark.parametrize('change', LEAVES, ids=[repr(c)[:40] for c in LEAVES])
def test_an_item_the_full_path_must_judge_leaves_the_fast_path(change):
    body = encode([message(0), message(1, **change), message(2)])
    assert receiver_module._all_valid(body, 2500, 32_000) is None
    same_answer(body)


# Valid items the fast path keeps: its checks are no stricter than Segment's.
STAYS = [
    {'userId': DELETE, 'anonymousId': 'a1'}, {'anonymousId': 'a1'}, {'userId': None, 'anonymousId': 'a'},
    {'type': 'page', 'event': DELETE, 'name': 'Home'}, {'type': 'page', 'event': DELETE},
    {'type': 'identify', 'event': 7, 'traits': {'x': [1, {'y': None}]}},
    {'type': 'alias', 'name': 5}, {'messageId': 'm' * 100}, {'messageId': '€' * 100},
    {'timestamp': DELETE}, {'timestamp': '2024-05-01T12:00:00+02:00'},
    {'properties': {}}, {'context': {'ip': '1.2.3.4'}}, {'integrations': {'All': False}},
]


@pytest.mark.parametrize('change', STAYS, ids=[repr(c)[:40] for c in STAYS])
def test_a_valid_item_stays_on_the_fast_path(change):
    body = encode([message(0), message(1, **change)])
    assert receiver_module._all_valid(body, 2500, 32_000) is not None
    status, _, stats, _ = same_answer(body)
    assert status == 200 and stats['accepted'] == 2


@pytest.mark.parametrize('envelope', [{'context': {'ip': '0'}}, {'integrations': {'All': True}},
                                      {'context': 5}])
def test_an_envelope_to_merge_leaves_the_fast_path(envelope):
    body = encode([message(0)], **envelope)
    assert receiver_module._all_valid(body, 2500, 32_000) is None
    same_answer(body)


@pytest.mark.parametrize('item', [5, [], None, 'x'])
def test_an_item_that_is_not_an_object_leaves_the_fast_path(item):
    body = encode([message(0), item])
    assert receiver_module._all_valid(body, 2500, 32_000) is None
    same_answer(body)


def test_empty_and_over_2500_batches_leave_the_fast_path():
    for n in (0, 2501):
        body = encode([message(i) for i in range(n)])
        assert receiver_module._all_valid(body, 2500, 32_000) is None
        same_answer(body)
    body = encode([message(i) for i in range(2500)])
    assert receiver_module._all_valid(body, 2500, 32_000) is not None
    assert same_answer(body)[2]['accepted'] == 2500


def padded(size: int, i: int = 1) -> dict:
    """A message whose compact UTF-8 JSON is exactly `size` bytes."""
    m = message(i, properties={'pad': ''})
    short = len(json.dumps(m, separators=(',', ':'), ensure_ascii=False).encode())
    m['properties']['pad'] = 'x' * (size - short)
    return m


@pytest.mark.parametrize('size, status', [(32_000, 200), (32_001, 400)])
def test_the_32000_byte_limit_at_its_boundary(size, status):
    big = padded(size)
    assert len(json.dumps(big, separators=(',', ':'), ensure_ascii=False).encode()) == size
    for style in ('compact', 'indent'):
        body = encode([message(0), big, message(2)], style)
        assert same_answer(body)[0] == status


def test_a_message_longer_once_re_encoded_than_its_span_is_refused():
    # `1e15` re-encodes as 1000000000000000.0: 31,000 bytes in the body, ~110,000 compact.
    numbers = b','.join([b'1e15'] * 6_200)
    item = b'{"type":"track","userId":"u","event":"e","messageId":"big","properties":{"v":[' + \
        numbers + b']}}'
    assert len(item) < 32_000
    body = b'{"batch":[' + item + b',' + encode([message(0)])[10:]
    assert receiver_module._all_valid(body, 2500, 32_000) is None
    status, answer, _, _ = same_answer(body)
    assert (status, answer['code']) == (400, 'payload_too_large')


def test_bytes_that_are_not_utf8_leave_the_fast_path():
    body = encode([message(0, properties={'name': 'Zoë'})])
    bad = body.replace('ë'.encode(), b'\xff')
    assert receiver_module._all_valid(bad, 2500, 32_000) is None
    status, answer, _, _ = same_answer(bad)
    assert status == 400 and answer['code'] == 'invalid_request'
    assert receiver_module._all_valid(body, 2500, 32_000) is not None   # UTF-8 is fine


def test_duplicate_keys_read_as_the_full_path_reads_them():
    body = (b'{"batch":[{"type":"track","userId":"u","event":"e","messageId":"a",'
            b'"messageId":"b","type":"click"}]}')
    assert receiver_module._all_valid(body, 2500, 32_000) is None   # the last "type" counts
    assert same_answer(body)[1]['code'] == 'type_invalid'


def test_receivers_that_need_the_full_path_do_not_take_the_fast_one(tmp_path):
    body = encode([message(0), message(1)])
    assert same_answer(body, poison_message_ids={'m-1'})[1]['code'] == 'poison'
    rec = SegmentReceiver(store_path=str(tmp_path / 'store.jsonl')).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(receiver_module, '_all_valid', lambda *a: pytest.fail('fast path taken'))
            assert rec._accept(Handler(), body, 0.0)[0] == 200
    finally:
        rec.stop()
    assert len((tmp_path / 'store.jsonl').read_text().splitlines()) == 2


def test_a_bad_key_is_never_judged_by_the_fast_path():
    rec = SegmentReceiver(write_key='other')
    assert rec._accept(Handler(), encode([message(0)]), 0.0)[0] == 401


# Random requests: mostly valid items, some changed, in any JSON layout.
changes = st.sampled_from(LEAVES + STAYS + [{}] * 20)
requests_ = st.tuples(st.lists(changes, min_size=1, max_size=6),
                      st.sampled_from(['compact', 'ascii', 'indent']),
                      st.booleans())


@settings(max_examples=150, deadline=None)
@given(requests_)
def test_random_requests_answer_the_same_on_both_paths(request):
    changed, style, duplicate = request
    batch = [message(i, **c) for i, c in enumerate(changed)]
    if duplicate:
        batch.append(message(0))
    same_answer(encode(batch, style))
