"""Delivery decisions (CONTRACT §4) with a fake session and clock: unit tests, no network."""
import json
import random

import pytest
import requests

from transforms.model import RETRIES_EXHAUSTED, SEGMENT_REJECTED, SegmentMessage
from transforms.retry import (CONFIG, OK, REJECT, RETRY, SPLIT, backoff_seconds, classify,
                              retry_after_seconds)
from pipeline.endpoint import endpoint_for
from transforms.segment_client import (RateLimiter, SegmentClient, SegmentConfigurationError,
                                       basic_auth)


def msg(i):
    body = {'type': 'track', 'event': 'Email Sent', 'userId': 'u', 'messageId': f'id{i}'}
    return SegmentMessage('users.messages.email.Send', f'id{i}',
                          json.dumps(body, separators=(',', ':')).encode(), 'file.avro')


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class Response:
    def __init__(self, status, text='', headers=None):
        self.status_code = status
        self.text = text
        self.headers = headers or {}


class FakeSession:
    """Answers from a script: a status, an exception, or a function of the posted ids."""

    def __init__(self, script):
        self.script = list(script)
        self.posts = []

    def post(self, url, data, headers, timeout, allow_redirects=True):
        body = json.loads(data)
        ids = [m['messageId'] for m in body['batch']]
        self.posts.append({'ids': ids, 'headers': headers, 'sentAt': body.get('sentAt'),
                           'allow_redirects': allow_redirects})
        step = self.script.pop(0) if self.script else 200
        if callable(step):
            step = step(ids)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, Response):
            return step
        return Response(step, '{"success":%s}' % ('true' if step < 300 else 'false'))


def client(session, clock=None, **kw):
    clock = clock or FakeClock()
    return SegmentClient(session, 'https://api.segment.io/v1/batch', 'KEY', clock=clock,
                         sleep=clock.sleep, rng=random.Random(1),
                         limiter=RateLimiter(kw.pop('rate', 0), clock, clock.sleep), **kw), clock


@pytest.mark.parametrize('status,kind', [
    (200, OK), (202, OK), (408, RETRY), (410, RETRY), (429, RETRY), (460, RETRY), (500, RETRY),
    (502, RETRY), (503, RETRY), (599, RETRY), (501, REJECT), (505, REJECT), (400, SPLIT),
    (413, SPLIT), (422, SPLIT), (401, CONFIG), (403, CONFIG), (404, CONFIG), (405, REJECT),
    (302, REJECT)])
def test_classify(status, kind):
    assert classify(status) == kind


def test_retry_after_forms():
    assert retry_after_seconds('3') == 3.0
    assert retry_after_seconds('0.5') == 0.5
    assert retry_after_seconds('100000') == 300.0
    assert retry_after_seconds(None) is None and retry_after_seconds('soon') is None
    when = 'Wed, 21 Oct 2015 07:28:10 GMT'
    import email.utils
    now = email.utils.parsedate_to_datetime(when).timestamp() - 7
    assert retry_after_seconds(when, now=now) == pytest.approx(7.0)


def test_backoff_grows_with_jitter_and_cap():
    rng = random.Random(0)
    delays = [backoff_seconds(a, rng) for a in range(12)]
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0
    assert all(d <= 60 for d in delays) and delays[-1] >= 30
    assert len({round(d, 6) for d in delays[:6]}) == 6


def test_no_sent_at_by_default():
    session = FakeSession([200])
    c, _ = client(session)
    c.deliver([msg(1)])
    assert session.posts[0]['sentAt'] is None


def test_success_sends_basic_auth_and_fresh_sent_at():
    session = FakeSession([503, 200])
    c, clock = client(session, sent_at=True)
    outcome = c.deliver([msg(1), msg(2)])
    assert all(p['sentAt'].endswith('Z') for p in session.posts)
    assert [m.message_id for m in outcome.sent] == ['id1', 'id2']
    assert session.posts[0]['headers']['Authorization'] == basic_auth('KEY') == 'Basic S0VZOg=='
    assert outcome.requests == 2 and outcome.retries == 1
    assert outcome.statuses == {'503': 1, '200': 1}


def test_transient_errors_are_retried():
    session = FakeSession([requests.ConnectionError('reset'), requests.Timeout('slow'), 500, 200])
    c, clock = client(session)
    outcome = c.deliver([msg(1)])
    assert len(outcome.sent) == 1 and outcome.retries == 3
    assert len(clock.sleeps) == 3


def test_retry_after_is_honoured():
    session = FakeSession([Response(429, '', {'Retry-After': '7'}), 200])
    c, clock = client(session)
    outcome = c.deliver([msg(1)])
    assert len(outcome.sent) == 1
    assert 7.0 in clock.sleeps or sum(clock.sleeps) >= 7.0


def test_budget_spent_rejects_every_message():
    session = FakeSession([503] * 100)
    c, clock = client(session, max_retry_seconds=10)
    outcome = c.deliver([msg(1), msg(2)])
    assert outcome.sent == []
    assert [r.reason for r in outcome.rejects] == [RETRIES_EXHAUSTED] * 2
    assert 'HTTP 503' in outcome.rejects[0].detail
    assert outcome.rejects[0].message['messageId'] == 'id1'
    assert sum(clock.sleeps) <= 10


def test_400_splits_to_isolate_the_bad_message():
    bad = 'id5'
    session = FakeSession([lambda ids: 400 if bad in ids else 200 for _ in range(50)])
    c, _ = client(session)
    outcome = c.deliver([msg(i) for i in range(8)])
    assert sorted(m.message_id for m in outcome.sent) == sorted(f'id{i}' for i in range(8) if i != 5)
    assert [(r.reason, r.message['messageId']) for r in outcome.rejects] == [(SEGMENT_REJECTED, bad)]
    assert 'HTTP 400' in outcome.rejects[0].detail
    assert len(session.posts) <= 1 + 2 * 3  # a binary search, not one request per message


@pytest.mark.parametrize('status', [401, 403, 404])
def test_configuration_errors_stop_without_the_key(status):
    c, _ = client(FakeSession([status]))
    with pytest.raises(SegmentConfigurationError) as caught:
        c.deliver([msg(1)])
    assert str(status) in str(caught.value) and 'KEY' not in str(caught.value)


def test_rate_limiter_spaces_requests():
    clock = FakeClock()
    limiter = RateLimiter(100, clock, clock.sleep)
    start = clock.now
    for _ in range(10):
        limiter.acquire(50)   # 500 events at 100/s: the 10th starts at 4.5 s
    assert clock.now - start == pytest.approx(4.5)
    limiter.pause(3)
    before = clock.now
    limiter.acquire(1)
    assert clock.now - before >= 3


def test_endpoints():
    assert endpoint_for('us') == 'https://api.segment.io/v1/batch'
    assert endpoint_for('eu') == 'https://events.eu1.segmentapis.com/v1/batch'
    assert endpoint_for('us', 'http://127.0.0.1:9/v1/batch') == 'http://127.0.0.1:9/v1/batch'
    assert endpoint_for('us', 'http://localhost:9/v1/batch')
    assert endpoint_for('us', 'http://[::1]:9/v1/batch')
    for bad in ('http://example.com/v1/batch', 'http://10.0.0.1/v1/batch', 'ftp://x/y'):
        with pytest.raises(ValueError):
            endpoint_for('us', bad)
