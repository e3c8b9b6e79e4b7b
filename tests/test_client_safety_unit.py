"""What the client keeps out of rejects and how it stops: scrubbing, redirects, stop requests.

Fast unit tests of `transforms/segment_client.py` with a fake session and clock (no network),
literal expected values, so a one-token change is noticed (scripts/mutation_check.py).
"""
import base64
import json
import random

import pytest

from transforms.model import SEGMENT_REJECTED, SegmentMessage
from transforms.segment_client import (MAX_RESPONSE_TEXT, RateLimiter, SegmentClient,
                                       SegmentConfigurationError, scrub_response)


# ------------------------------------------------------------------------------ scrub_response
def test_given_secrets_are_replaced_wherever_they_appear():
    assert scrub_response('echo s3cr3t-KEY!s3cr3t-KEY!', ('s3cr3t-KEY!',)) == \
        'echo [redacted][redacted]'
    assert scrub_response('nothing secret', ('', 'zzz')) == 'nothing secret'


@pytest.mark.parametrize('text,scrubbed', [
    ('Bearer abc.DEF-123', 'Bearer [redacted]'),
    ('auth basic dXNlcjo= ok', 'auth basic [redacted] ok'),
    ('write_key=wk123', 'write_key=[redacted]'),
    ('{"writeKey": "wk123", "x": 1}', '{"writeKey": "[redacted]", "x": 1}'),
    ('Authorization: Basic dXNlcjo=', 'Authorization: [redacted]'),
    ("api_key='k1' apikey:k2", "api_key='[redacted]' apikey:[redacted]"),
])
def test_credential_shapes_are_redacted_keeping_their_label(text, scrubbed):
    assert scrub_response(text) == scrubbed


def test_the_answer_becomes_one_line_with_single_spaces():
    assert scrub_response('  a\n\n  b\tc\r\n') == 'a b c'


def test_the_answer_is_cut_at_exactly_500_characters():
    assert MAX_RESPONSE_TEXT == 500
    assert scrub_response('x' * 500) == 'x' * 500
    assert scrub_response('x' * 501) == 'x' * 500 + '...'
    assert scrub_response('x' * 499 + ' y') == 'x' * 499 + ' ...'


# ------------------------------------------------------------------------------ a fake Segment
class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        assert len(self.sleeps) < 200, 'sleeping in a loop that never ends'
        self.now += seconds


class Response:
    def __init__(self, status, text='', headers=None):
        self.status_code, self.text, self.headers = status, text, headers or {}


class Session:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.posts = []

    def post(self, url, **kwargs):
        self.posts.append(kwargs)
        return self.answers.pop(0) if self.answers else Response(200, '{"success":true}')


def message(i):
    return SegmentMessage('users.messages.email.Send', f'id{i}',
                          json.dumps({'type': 'track', 'messageId': f'id{i}'}).encode(), 'f.avro')


def client(session, key='wk-secret-1', clock=None, **kw):
    clock = clock or Clock()
    return SegmentClient(session, 'https://api.segment.io/v1/batch', key, clock=clock,
                         sleep=clock.sleep, rng=random.Random(1),
                         limiter=RateLimiter(0, clock, clock.sleep), **kw), clock


# ------------------------------------------------------------------------------ secrets in answers
def test_every_form_of_the_write_key_is_scrubbed_from_a_reject():
    key = 'wk-secret-1'
    token = base64.b64encode(b'wk-secret-1:').decode()      # the Authorization value after Basic
    raw = base64.b64encode(b'wk-secret-1').decode()
    echo = f'you sent {key} as {token} and {raw}'
    outcome = client(Session(Response(400, echo)), key)[0].deliver([message(1)])
    assert [(r.reason, r.detail) for r in outcome.rejects] == [
        (SEGMENT_REJECTED, 'HTTP 400: you sent [redacted] as [redacted] and [redacted]')]


def test_a_write_key_of_four_characters_is_scrubbed_a_shorter_one_is_not_searched_for():
    outcome = client(Session(Response(400, 'got abcd')), 'abcd')[0].deliver([message(1)])
    assert outcome.rejects[0].detail == 'HTTP 400: got [redacted]'
    outcome = client(Session(Response(400, 'got abc')), 'abc')[0].deliver([message(1)])
    assert outcome.rejects[0].detail == 'HTTP 400: got abc'


# ------------------------------------------------------------------------------ redirects
@pytest.mark.parametrize('status', [301, 302, 307, 308, 399])
def test_a_redirect_is_never_followed_and_stops_the_run_after_one_request(status):
    seen = []
    session = Session(Response(status, '', {'Location': 'https://elsewhere.example/'}))
    c, _ = client(session, on_request=lambda label, took, n: seen.append((label, took, n)))
    with pytest.raises(SegmentConfigurationError) as stopped:
        c.deliver([message(1), message(2)])
    assert 'redirects are not followed' in str(stopped.value)
    assert [p['allow_redirects'] for p in session.posts] == [False]
    assert seen == [(str(status), 0.0, 2)]


def test_requests_never_follow_redirects_even_when_answered_200():
    session = Session()
    client(session)[0].deliver([message(1)])
    assert session.posts[0]['allow_redirects'] is False


# ------------------------------------------------------------------------------ retries and stops
def test_each_retry_is_announced_with_the_failing_answer_and_the_delay():
    announced = []
    session = Session(Response(503, 'busy', {'Retry-After': '7'}), Response(200))
    outcome = client(session, on_retry=lambda label, delay: announced.append((label, delay)))[0] \
        .deliver([message(1)])
    assert announced == [('503', 7.0)]
    assert [m.message_id for m in outcome.sent] == ['id1'] and outcome.retries == 1


def test_a_stoppable_client_waits_in_slices_of_at_most_0_2_seconds():
    session = Session(Response(503, '', {'Retry-After': '1'}), Response(200))
    c, clock = client(session, stopped=lambda: False)
    outcome = c.deliver([message(1)])
    assert len(outcome.sent) == 1 and len(session.posts) == 2
    assert max(clock.sleeps) == 0.2 and len(clock.sleeps) in (5, 6)
    assert sum(clock.sleeps) == pytest.approx(1.0)


def test_a_wait_that_ends_exactly_on_its_deadline_returns():
    session = Session(Response(503, '', {'Retry-After': '0.2'}), Response(200))
    c, clock = client(session, stopped=lambda: False)
    assert len(c.deliver([message(1)]).sent) == 1
    assert clock.sleeps == [0.2]


def test_a_stop_during_a_wait_is_seen_within_one_slice_and_leaves_the_batch_unsent():
    clock = Clock()
    session = Session(Response(503, '', {'Retry-After': '30'}))
    c, _ = client(session, clock=clock, stopped=lambda: len(clock.sleeps) >= 3)
    batch = [message(1), message(2)]
    outcome = c.deliver(batch)
    assert clock.sleeps == [0.2, 0.2, 0.2]
    assert outcome.unsent == batch and outcome.sent == [] and outcome.rejects == []
    assert outcome.requests == 1


def test_a_stop_before_sending_sends_nothing_and_leaves_the_batch_unsent():
    session = Session()
    outcome = client(session, stopped=lambda: True)[0].deliver([message(1)])
    assert session.posts == [] and outcome.requests == 0
    assert [m.message_id for m in outcome.unsent] == ['id1'] and outcome.rejects == []


def test_a_stop_while_waiting_for_the_rate_limit_sends_nothing():
    checks = []

    def stopped():
        checks.append(1)
        return len(checks) > 1          # not stopped before the limiter, stopped after it
    session = Session()
    outcome = client(session, stopped=stopped)[0].deliver([message(1)])
    assert session.posts == [] and outcome.requests == 0 and len(checks) == 2
    assert [m.message_id for m in outcome.unsent] == ['id1'] and outcome.sent == []


def test_an_unstoppable_client_has_no_unsent_messages():
    outcome = client(Session())[0].deliver([message(1)])
    assert outcome.unsent == [] and [m.message_id for m in outcome.sent] == ['id1']
