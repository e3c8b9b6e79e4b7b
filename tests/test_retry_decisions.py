"""How each Segment answer is handled, at the edges of every status range and header form."""
import email.utils

import pytest

from transforms.retry import backoff_seconds, classify, retry_after_seconds


@pytest.mark.parametrize('status,kind', [
    (199, 'reject'), (200, 'ok'), (299, 'ok'), (300, 'reject'),
    (407, 'reject'), (408, 'retry'), (409, 'reject'), (410, 'retry'), (411, 'reject'),
    (428, 'reject'), (429, 'retry'), (430, 'reject'),
    (459, 'reject'), (460, 'retry'), (461, 'reject'),
    (399, 'reject'), (400, 'split'), (401, 'config'), (402, 'reject'), (403, 'config'),
    (404, 'config'), (412, 'reject'), (413, 'split'), (414, 'reject'),
    (421, 'reject'), (422, 'split'), (423, 'reject'),
    (499, 'reject'), (500, 'retry'), (501, 'reject'), (502, 'retry'), (504, 'retry'),
    (505, 'reject'), (506, 'retry'), (599, 'retry'), (600, 'reject'),
])
def test_every_status_range_edge(status, kind):
    assert classify(status) == kind


@pytest.mark.parametrize('value', ['nan', 'NaN', '-nan', 'soon', '', None, 'Wed, 99 Foo 2015'])
def test_unusable_retry_after_is_ignored(value):
    assert retry_after_seconds(value) is None


@pytest.mark.parametrize('value,seconds', [
    ('0', 0.0), ('7', 7.0), (' 7 ', 7.0), ('0.25', 0.25), ('-5', 0.0),
    ('299.5', 299.5), ('300', 300.0), ('301', 300.0), ('inf', 300.0), ('1e9', 300.0),
])
def test_retry_after_seconds_are_kept_between_0_and_300(value, seconds):
    assert retry_after_seconds(value) == seconds


def test_retry_after_as_an_http_date():
    when = 'Wed, 21 Oct 2015 07:28:10 GMT'
    at = email.utils.parsedate_to_datetime(when).timestamp()
    assert retry_after_seconds(when, now=at - 12.5) == 12.5
    assert retry_after_seconds(when, now=at + 60) == 0.0          # already past
    assert retry_after_seconds(when, now=at - 1000) == 300.0      # capped
    assert retry_after_seconds(when) == 0.0                       # against the real clock: past
    assert retry_after_seconds('Fri, 01 Jan 9999 00:00:00 GMT') == 300.0


class FixedRandom:
    """random() always returns `value`: the bounds of the jitter."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


@pytest.mark.parametrize('attempt,low,high', [
    (0, 0.25, 0.5), (1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (6, 16.0, 32.0),
    (7, 30.0, 60.0), (30, 30.0, 60.0), (10_000, 30.0, 60.0),
])
def test_backoff_doubles_per_attempt_with_jitter_up_to_60_seconds(attempt, low, high):
    assert backoff_seconds(attempt, FixedRandom(0.0)) == low
    assert backoff_seconds(attempt, FixedRandom(1.0)) == high
    assert backoff_seconds(attempt, FixedRandom(0.5)) == (low + high) / 2


def test_backoff_base_and_cap_can_be_chosen():
    assert backoff_seconds(0, FixedRandom(1.0), base=2.0) == 2.0
    assert backoff_seconds(3, FixedRandom(1.0), base=2.0, cap=10.0) == 10.0
    assert backoff_seconds(3, FixedRandom(0.0), base=2.0, cap=10.0) == 5.0
