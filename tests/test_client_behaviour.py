"""What the Segment client really puts on the wire and how it waits: a recording session and a
fake clock, no network."""
import datetime
import gzip
import json
import random
import re
import types

import pytest
import requests

from transforms import segment_client
from transforms.model import SegmentBatch, SegmentMessage
from transforms.segment_client import (RateLimiter, SegmentClient, SegmentConfigurationError,
                                       sent_at_now, shared_rate_limiter)
from transforms.send import SendBatchesFn
from transforms.write_key import WriteKeySource

URL = 'https://api.segment.io/v1/batch'
SENT_AT = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')


def msg(i):
    body = {'type': 'track', 'event': 'Email Sent', 'userId': 'u', 'messageId': f'id{i}'}
    return SegmentMessage('users.messages.email.Send', f'id{i}',
                          json.dumps(body, separators=(',', ':')).encode(), 'file.avro')


class Clock:
    def __init__(self, now=1000.0):
        self.now = now
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class Answer:
    def __init__(self, status, text='', headers=None):
        self.status_code = status
        self.text = text
        self.headers = headers or {}


class RecordingSession:
    """Keeps every request as sent (raw bytes, headers, the time it arrived) and answers from a
    script of statuses, Answers or exceptions (200 once the script is spent)."""

    def __init__(self, script=(), clock=None, takes=0.0):
        self.script = list(script)
        self.clock = clock
        self.takes = takes
        self.requests = []

    def post(self, url, data, headers, timeout, allow_redirects=True):
        at = self.clock() if self.clock else None
        self.requests.append({'url': url, 'data': data, 'headers': dict(headers),
                              'timeout': timeout, 'at': at})
        if self.clock is not None:
            self.clock.now += self.takes
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, Exception):
            raise step
        return step if isinstance(step, Answer) else Answer(step, '{"success":true}')


def make_client(session, clock, limiter=None, sleep=None, **kw):
    return SegmentClient(session, URL, 'KEY', clock=clock, sleep=sleep or clock.sleep,
                         rng=random.Random(1),
                         limiter=limiter or RateLimiter(0, clock, clock.sleep), **kw)


# -- what goes on the wire -----------------------------------------------------------------------
def test_headers_url_and_timeout():
    clock = Clock()
    session = RecordingSession()
    make_client(session, clock).deliver([msg(1)])
    [sent] = session.requests
    assert sent['url'] == URL and sent['timeout'] == 30.0
    assert sent['headers'] == {'Content-Type': 'application/json',
                               'Authorization': 'Basic S0VZOg==',
                               'User-Agent': 'currents-to-segment'}
    body = json.loads(sent['data'])
    assert [m['messageId'] for m in body['batch']] == ['id1']


def test_gzip_body_is_really_compressed_and_decompresses_to_the_plain_body():
    clock = Clock()
    plain, zipped = RecordingSession(), RecordingSession()
    messages = [msg(i) for i in range(200)]
    make_client(plain, clock).deliver(messages)
    make_client(zipped, clock, use_gzip=True, timeout=5.0).deliver(messages)
    raw_plain, raw_zipped = plain.requests[0]['data'], zipped.requests[0]['data']
    assert raw_zipped[:2] == b'\x1f\x8b'                      # a gzip stream
    assert len(raw_zipped) < len(raw_plain) // 5              # repetitive JSON shrinks a lot
    unzipped = json.loads(gzip.decompress(raw_zipped))
    assert unzipped['batch'] == json.loads(raw_plain)['batch']
    assert zipped.requests[0]['headers']['Content-Encoding'] == 'gzip'
    assert zipped.requests[0]['headers']['Content-Type'] == 'application/json'
    assert zipped.requests[0]['timeout'] == 5.0
    assert 'Content-Encoding' not in plain.requests[0]['headers']


def test_the_body_is_the_batch_then_the_given_sent_at():
    batch = SegmentBatch((msg(1), msg(2)))
    assert batch.body('2024-05-01T12:00:00.000Z') == (
        b'{"batch":[' + msg(1).payload + b',' + msg(2).payload
        + b'],"sentAt":"2024-05-01T12:00:00.000Z"}')


def test_sent_at_now_is_utc_with_milliseconds():
    before = datetime.datetime.now(datetime.timezone.utc)
    text = sent_at_now()
    after = datetime.datetime.now(datetime.timezone.utc)
    assert SENT_AT.match(text), text
    parsed = datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%S.%fZ').replace(
        tzinfo=datetime.timezone.utc)
    assert before - datetime.timedelta(milliseconds=1) <= parsed <= after


@pytest.mark.parametrize('microsecond,text', [
    (0, '2024-05-01T12:34:56.000Z'), (1_000, '2024-05-01T12:34:56.001Z'),
    (999, '2024-05-01T12:34:56.000Z'), (999_999, '2024-05-01T12:34:56.999Z'),
])
def test_sent_at_milliseconds_are_truncated_not_rounded(monkeypatch, microsecond, text):
    fixed = datetime.datetime(2024, 5, 1, 12, 34, 56, microsecond, tzinfo=datetime.timezone.utc)

    class FixedNow(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            assert tz is datetime.timezone.utc
            return fixed

    monkeypatch.setattr(segment_client, 'datetime',
                        types.SimpleNamespace(datetime=FixedNow, timezone=datetime.timezone))
    assert sent_at_now() == text


# -- statuses at the edges ------------------------------------------------------------------------
def test_299_is_delivered():
    outcome = make_client(RecordingSession([299]), Clock()).deliver([msg(1)])
    assert [m.message_id for m in outcome.sent] == ['id1'] and outcome.rejects == []
    assert outcome.statuses == {'299': 1} and outcome.requests == 1 and outcome.retries == 0


@pytest.mark.parametrize('status', [199, 499, 600])
def test_statuses_outside_the_known_ranges_reject_without_retrying(status):
    clock = Clock()
    session = RecordingSession([Answer(status, 'no')])
    outcome = make_client(session, clock).deliver([msg(1), msg(2)])
    assert outcome.sent == [] and len(session.requests) == 1 and clock.sleeps == []
    assert [(r.reason, r.message['messageId']) for r in outcome.rejects] == [
        ('segment_rejected', 'id1'), ('segment_rejected', 'id2')]
    assert outcome.rejects[0].detail == f'HTTP {status}: no'
    assert outcome.statuses == {str(status): 1} and outcome.retries == 0


@pytest.mark.parametrize('status', [300, 302, 307, 399])
def test_a_redirect_is_a_configuration_error_never_followed(status):
    session = RecordingSession([Answer(status, 'moved')])
    with pytest.raises(SegmentConfigurationError):
        make_client(session, Clock()).deliver([msg(1)])
    assert len(session.requests) == 1


def test_a_rejected_answer_keeps_its_first_500_characters():
    outcome = make_client(RecordingSession([Answer(499, 'x' * 3000)]), Clock()).deliver([msg(1)])
    assert outcome.rejects[0].detail == 'HTTP 499: ' + 'x' * 500 + '...'


def test_a_lone_message_that_segment_refuses_is_rejected_not_split():
    session = RecordingSession([Answer(400, 'bad')])
    outcome = make_client(session, Clock()).deliver([msg(1)])
    assert len(session.requests) == 1
    assert [(r.reason, r.detail) for r in outcome.rejects] == [('segment_rejected', 'HTTP 400: bad')]


def test_a_400_splits_the_batch_in_halves():
    session = RecordingSession([400, 200, 200])
    outcome = make_client(session, Clock()).deliver([msg(i) for i in range(5)])
    sent_ids = [[m['messageId'] for m in json.loads(r['data'])['batch']] for r in session.requests]
    assert sent_ids == [['id0', 'id1', 'id2', 'id3', 'id4'], ['id0', 'id1'], ['id2', 'id3', 'id4']]
    assert len(outcome.sent) == 5 and outcome.statuses == {'400': 1, '200': 2}


def test_configuration_error_names_the_status_and_endpoint():
    with pytest.raises(SegmentConfigurationError) as caught:
        make_client(RecordingSession([401]), Clock()).deliver([msg(1)])
    assert str(caught.value) == (f'Segment answered HTTP 401 at {URL}: the write key, region or '
                                 'endpoint is wrong; nothing more is sent')


# -- waiting: backoff, Retry-After, the retry budget ----------------------------------------------
def test_backoff_grows_between_attempts_inside_the_client():
    clock = Clock()
    session = RecordingSession([503] * 5, clock=clock)
    outcome = make_client(session, clock).deliver([msg(1)])
    assert outcome.retries == 5 and outcome.requests == 6 and len(outcome.sent) == 1
    bounds = [(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0)]
    assert len(clock.sleeps) == 5
    for slept, (low, high) in zip(clock.sleeps, bounds):
        assert low <= slept <= high
    # Each request waits for the one before it: arrival times are the running sum of sleeps.
    arrivals = [r['at'] for r in session.requests]
    assert [round(b - a, 9) for a, b in zip(arrivals, arrivals[1:])] == \
        [round(s, 9) for s in clock.sleeps]


@pytest.mark.parametrize('status', [429, 503])
def test_retry_after_replaces_the_backoff(status):
    clock = Clock()
    session = RecordingSession([Answer(status, '', {'Retry-After': '7'})], clock=clock)
    outcome = make_client(session, clock).deliver([msg(1)])
    assert len(outcome.sent) == 1
    assert [r['at'] for r in session.requests] == [1000.0, 1007.0]


def test_retry_after_nan_falls_back_to_the_backoff():
    clock = Clock()
    session = RecordingSession([Answer(503, '', {'Retry-After': 'nan'})])
    outcome = make_client(session, clock).deliver([msg(1)])
    assert len(outcome.sent) == 1 and len(clock.sleeps) == 1
    assert 0.25 <= clock.sleeps[0] <= 0.5


def test_a_wait_that_ends_exactly_at_the_budget_is_still_taken():
    clock = Clock()
    session = RecordingSession([Answer(503, '', {'Retry-After': '10'})])
    outcome = make_client(session, clock, max_retry_seconds=10).deliver([msg(1)])
    assert len(outcome.sent) == 1 and clock.sleeps == [10.0]


def test_a_wait_past_the_budget_gives_up_with_the_last_answer():
    clock = Clock()
    session = RecordingSession([Answer(503, 'y' * 1500, {'Retry-After': '11'})])
    outcome = make_client(session, clock, max_retry_seconds=10).deliver([msg(1)])
    assert outcome.sent == [] and clock.sleeps == [] and len(session.requests) == 1
    assert [r.reason for r in outcome.rejects] == ['retries_exhausted']
    assert outcome.rejects[0].detail == ('gave up after 1 attempts in 10s; last: HTTP 503: '
                                         + 'y' * 500 + '...')


def test_no_answer_at_all_is_named_in_the_reject():
    clock = Clock()
    session = RecordingSession([requests.ConnectionError('reset')])
    outcome = make_client(session, clock, max_retry_seconds=0.0).deliver([msg(1)])
    assert outcome.statuses == {'ConnectionError': 1}
    assert outcome.rejects[0].detail == ('gave up after 1 attempts in 0s; '
                                         'last: ConnectionError (no answer from Segment)')


def test_each_request_is_reported_with_its_duration_and_size():
    clock = Clock()
    seen = []
    session = RecordingSession([503], clock=clock, takes=0.25)
    make_client(session, clock, on_request=lambda *a: seen.append(a)).deliver([msg(1), msg(2)])
    assert seen == [('503', 0.25, 2), ('200', 0.25, 2)]


# -- pacing: the rate limiter and a 429 -----------------------------------------------------------
def test_a_429_pauses_every_sender_sharing_the_limiter():
    clock = Clock()
    limiter = RateLimiter(0, clock, clock.sleep)
    # Sender A meets a 429 with Retry-After: 5 and, with no retry budget, gives up at once...
    a = make_client(RecordingSession([Answer(429, '', {'Retry-After': '5'})]), clock, limiter,
                    max_retry_seconds=0)
    assert [r.reason for r in a.deliver([msg(1)]).rejects] == ['retries_exhausted']
    assert clock.sleeps == []
    # ...yet sender B, which never saw the 429, waits out those 5 seconds before it sends.
    b_session = RecordingSession(clock=clock)
    b = make_client(b_session, clock, limiter)
    assert len(b.deliver([msg(2)]).sent) == 1
    assert clock.sleeps == [5.0] and b_session.requests[0]['at'] == 1005.0


def test_a_429_without_retry_after_pauses_one_second():
    clock = Clock()
    limiter = RateLimiter(0, clock, clock.sleep)
    make_client(RecordingSession([429]), clock, limiter, max_retry_seconds=0).deliver([msg(1)])
    assert limiter.acquire(1) == 1.0


def test_other_retryable_answers_do_not_pause_the_other_senders():
    clock = Clock()
    limiter = RateLimiter(0, clock, clock.sleep)
    make_client(RecordingSession([Answer(503, '', {'Retry-After': '5'})]), clock, limiter,
                max_retry_seconds=0).deliver([msg(1)])
    assert limiter.acquire(1) == 0.0


def test_a_rate_spaces_the_clients_requests():
    clock = Clock()
    session = RecordingSession(clock=clock)
    client = make_client(session, clock, RateLimiter(100, clock, clock.sleep))
    for i in range(3):
        client.deliver([msg(i) for i in range(50)])     # 50 events at 100/s: 0.5 s apart
    assert [r['at'] for r in session.requests] == [1000.0, 1000.5, 1001.0]


def test_the_limiter_reports_each_wait():
    clock = Clock()
    limiter = RateLimiter(10, clock, clock.sleep)
    assert [limiter.acquire(5) for _ in range(3)] == [0.0, 0.5, 0.5]
    clock.now += 10            # idle time is not banked as a burst
    assert limiter.acquire(5) == 0.0 and limiter.acquire(5) == 0.5
    limiter.pause(3)
    assert limiter.acquire(1) == 3.0
    limiter.pause(1)           # a shorter pause never shortens a longer one
    limiter.pause(0.5)
    assert limiter.acquire(1) == 1.0


def test_a_rate_below_one_event_per_second_still_paces():
    clock = Clock()
    limiter = RateLimiter(0.5, clock, clock.sleep)
    assert [limiter.acquire(1) for _ in range(3)] == [0.0, 2.0, 2.0]
    assert clock.now == 1004.0


def test_rate_zero_never_waits():
    clock = Clock(now=0.0)
    for limiter in (RateLimiter(0, clock, clock.sleep), RateLimiter(clock=clock, sleep=clock.sleep)):
        assert [limiter.acquire(10_000) for _ in range(5)] == [0.0] * 5
    assert clock.sleeps == []


def test_a_limiter_first_acquired_at_time_zero_does_not_wait():
    clock = Clock(now=0.0)
    limiter = RateLimiter(10, clock, clock.sleep)
    assert limiter.acquire(5) == 0.0 and limiter.acquire(5) == 0.5


def test_a_client_built_without_a_limiter_or_rng_sends_unpaced_and_still_backs_off():
    clock = Clock()
    session = RecordingSession([503], clock=clock)
    client = SegmentClient(session, URL, 'KEY', clock=clock, sleep=clock.sleep)
    for i in range(3):
        client.deliver([msg(j) for j in range(50)])
    assert len(session.requests) == 4 and len(clock.sleeps) == 1
    assert 0.25 <= clock.sleeps[0] <= 0.5     # the one backoff; no pacing waits


def test_the_default_retry_budget_is_600_seconds():
    clock = Clock()
    session = RecordingSession([Answer(503, 'busy', {'Retry-After': '300'})] * 5, clock=clock)
    outcome = make_client(session, clock).deliver([msg(1)])
    assert [r['at'] for r in session.requests] == [1000.0, 1300.0, 1600.0]
    assert outcome.rejects[0].detail == 'gave up after 3 attempts in 600s; last: HTTP 503: busy'


def test_one_shared_limiter_per_rate():
    assert shared_rate_limiter(123.0) is shared_rate_limiter(123.0)
    assert shared_rate_limiter(123.0).rate == 123.0
    assert shared_rate_limiter(124.0) is not shared_rate_limiter(123.0)


@pytest.mark.parametrize('rate', [250.0, 0.0])
def test_the_send_step_paces_with_the_rate_it_was_given(monkeypatch, rate):
    monkeypatch.setenv('CURRENTS_TEST_WRITE_KEY', 'KEY')
    fn = SendBatchesFn(URL, WriteKeySource(env_var='CURRENTS_TEST_WRITE_KEY'),
                       events_per_second=rate)
    fn.setup()
    try:
        assert fn.client.limiter is shared_rate_limiter(rate)
        assert fn.client.limiter.rate == rate
    finally:
        fn.pool.shutdown()
        fn.session.close()
