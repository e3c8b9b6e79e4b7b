"""Delivery of one batch to Segment's batch endpoint, whatever Segment answers (CONTRACT §4).

Beam-free: the sending DoFn wraps it; unit tests drive it with a fake session and clock.
"""
import base64
import datetime
import gzip
import random
import re
import threading
import time
from collections import Counter
from typing import Callable, List, Optional, Sequence

import requests

from transforms.model import (RETRIES_EXHAUSTED, SEGMENT_REJECTED, Reject, SegmentBatch,
                              SegmentMessage, reject_for_message)
from transforms.retry import (CONFIG, OK, RETRY, SPLIT, backoff_seconds, classify,
                              retry_after_seconds)

US_ENDPOINT = 'https://api.segment.io/v1/batch'
EU_ENDPOINT = 'https://events.eu1.segmentapis.com/v1/batch'
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError)


STOPPED = -1   # pseudo status: the run was asked to stop before this batch was answered
MAX_RESPONSE_TEXT = 500   # characters of Segment's answer kept in a reject or an error line
_CREDENTIALS = re.compile(r'(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]+|'
                          r'(authorization|write_?key|api_?key)(["\'\s:=]+)(?:(?:basic|bearer)\s+)?'
                          r'[^\s"\',;}]+')


class SegmentConfigurationError(RuntimeError):
    """Segment refused the configuration (401/403/404, or a redirect): the run must stop."""


def scrub_response(text: str, secrets=()) -> str:
    """An endpoint's answer made safe for a reject or a line: no credentials, one line, short.

    An endpoint that echoes the request would otherwise put the Authorization header (the write
    key) into the rejects.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, '[redacted]')
    text = _CREDENTIALS.sub(lambda m: (m.group(1) + ' [redacted]') if m.group(1)
                            else f'{m.group(2)}{m.group(3)}[redacted]', text)
    text = ' '.join(text.split())
    return text[:MAX_RESPONSE_TEXT] + ('...' if len(text) > MAX_RESPONSE_TEXT else '')


def sent_at_now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime('%Y-%m-%dT%H:%M:%S.') + f'{now.microsecond // 1000:03d}Z'


def basic_auth(write_key: str) -> str:
    return 'Basic ' + base64.b64encode(f'{write_key}:'.encode('utf-8')).decode('ascii')


class RateLimiter:
    """Spaces requests so events/s stays at a target, and pauses everyone after a 429.

    Each acquire reserves the next slot (n events / rate), so the long-run rate is exact rather
    than bursty; shared by all sender threads of a process.
    """

    def __init__(self, events_per_second: float = 0.0, clock=time.monotonic, sleep=time.sleep):
        self.rate = events_per_second
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.Lock()
        self.next_free = 0.0
        self.paused_until = 0.0

    def acquire(self, events: int, sleep=None) -> float:
        """Waits for this request's slot; `sleep` may be one that wakes on a stop request."""
        with self.lock:
            now = self.clock()
            start = max(now, self.paused_until)
            if self.rate > 0:
                start = max(start, self.next_free)
                self.next_free = start + events / self.rate
        wait = start - now
        if wait > 0:
            (sleep or self.sleep)(wait)
        return max(wait, 0.0)

    def pause(self, seconds: float) -> None:
        with self.lock:
            self.paused_until = max(self.paused_until, self.clock() + seconds)


_shared_limiters = {}
_shared_lock = threading.Lock()


def shared_rate_limiter(events_per_second: float) -> RateLimiter:
    """One limiter per process and rate, so every DoFn instance and thread draws on it."""
    with _shared_lock:
        limiter = _shared_limiters.get(events_per_second)
        if limiter is None:
            limiter = _shared_limiters[events_per_second] = RateLimiter(events_per_second)
        return limiter


class DeliveryOutcome:
    """What became of a batch: messages accepted, rejects, and request statistics."""

    def __init__(self):
        self.sent: List[SegmentMessage] = []
        self.rejects: List[Reject] = []
        self.statuses: Counter = Counter()   # '200', '429', 'connection_error', ...
        self.unsent: List[SegmentMessage] = []   # not sent because the run is stopping
        self.requests = 0
        self.retries = 0


class SegmentClient:
    """Posts batches with retries, backoff, Retry-After, splitting on 400, and a retry budget."""

    def __init__(self, session, endpoint: str, write_key: str, timeout: float = 30.0,
                 use_gzip: bool = False, max_retry_seconds: float = 600.0,
                 limiter: Optional[RateLimiter] = None, clock=time.monotonic, sleep=time.sleep,
                 rng: Optional[random.Random] = None,
                 on_request: Optional[Callable[[str, float, int], None]] = None,
                 sent_at: bool = False,
                 stopped: Optional[Callable[[], bool]] = None,
                 on_retry: Optional[Callable[[str, float], None]] = None):
        self.session = session
        self.endpoint = endpoint
        self.headers = {'Content-Type': 'application/json', 'Authorization': basic_auth(write_key),
                        'User-Agent': 'currents-to-segment'}
        self._secrets = tuple(s for s in {
            write_key, basic_auth(write_key)[6:],
            base64.b64encode(write_key.encode('utf-8')).decode('ascii')} if len(s) >= 4)
        if use_gzip:
            self.headers['Content-Encoding'] = 'gzip'
        self.timeout = timeout
        self.use_gzip = use_gzip
        self.max_retry_seconds = max_retry_seconds
        self.limiter = limiter or RateLimiter(0, clock, sleep)
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.on_request = on_request
        self.sent_at = sent_at          # sentAt in bodies only when asked (--segment_sent_at)
        self.stoppable = stopped is not None
        self.stopped = stopped or (lambda: False)
        self.on_retry = on_retry        # (failing answer, seconds until the retry)

    def deliver(self, messages: Sequence[SegmentMessage]) -> DeliveryOutcome:
        outcome = DeliveryOutcome()
        self._deliver(tuple(messages), outcome)
        return outcome

    def _deliver(self, messages, outcome: DeliveryOutcome) -> None:
        status, text = self._post_with_retries(messages, outcome)
        if status == STOPPED:   # the run is stopping: neither sent nor rejected, sent by --resume
            outcome.unsent.extend(messages)
            return
        if status is None:  # retry budget spent
            outcome.rejects.extend(reject_for_message(m, RETRIES_EXHAUSTED, text) for m in messages)
            return
        kind = classify(status)
        if kind == OK:
            outcome.sent.extend(messages)
        elif kind == CONFIG:
            raise SegmentConfigurationError(
                f'Segment answered HTTP {status} at {self.endpoint}: the write key, region or '
                f'endpoint is wrong; nothing more is sent')
        elif kind == SPLIT and len(messages) > 1:
            half = len(messages) // 2
            self._deliver(messages[:half], outcome)
            self._deliver(messages[half:], outcome)
        else:
            detail = f'HTTP {status}: {text}'
            outcome.rejects.extend(reject_for_message(m, SEGMENT_REJECTED, detail)
                                   for m in messages)

    def _post_with_retries(self, messages, outcome):
        """(final status, response text), or (None, last error) once the retry budget is spent."""
        deadline = self.clock() + self.max_retry_seconds
        attempt = 0
        while True:
            if self.stopped():
                return STOPPED, ''
            self.limiter.acquire(len(messages),
                                 self._sleep_unless_stopped if self.stoppable else None)
            if self.stopped():
                return STOPPED, ''
            body = SegmentBatch(messages).body(sent_at_now() if self.sent_at else None)
            if self.use_gzip:
                body = gzip.compress(body, compresslevel=6)
            started = self.clock()
            outcome.requests += 1
            retry_after = None
            try:
                response = self.session.post(self.endpoint, data=body, headers=self.headers,
                                             timeout=self.timeout, allow_redirects=False)
            except TRANSIENT_ERRORS as exc:
                label, last = type(exc).__name__, f'{type(exc).__name__} (no answer from Segment)'
            else:
                status = response.status_code
                if 300 <= status < 400:   # never followed: the key would go to another host
                    self._record(outcome, str(status), started, len(messages))
                    raise SegmentConfigurationError(
                        f'the endpoint answered HTTP {status} (a redirect) at {self.endpoint}: '
                        f'redirects are not followed, so the write key only goes to the '
                        f'endpoint given; fix --segment_endpoint/--segment_region')
                text = scrub_response(response.text, self._secrets)
                label, last = str(status), f'HTTP {status}: {text}'
                if classify(status) != RETRY:
                    self._record(outcome, label, started, len(messages))
                    return status, text
                retry_after = retry_after_seconds(response.headers.get('Retry-After'))
                if status == 429:
                    self.limiter.pause(retry_after if retry_after is not None else 1.0)
            self._record(outcome, label, started, len(messages))
            delay = retry_after if retry_after is not None else backoff_seconds(attempt, self.rng)
            if self.clock() + delay > deadline:
                return None, (f'gave up after {attempt + 1} attempts in '
                              f'{self.max_retry_seconds:g}s; last: {last}')
            if self.on_retry is not None:
                self.on_retry(label, delay)
            outcome.retries += 1
            attempt += 1
            self._sleep_unless_stopped(delay)

    def _sleep_unless_stopped(self, seconds: float) -> None:
        """Sleeps in short slices so a stop request is seen within a fraction of a second."""
        if not self.stoppable:
            self.sleep(seconds)
            return
        deadline = self.clock() + seconds
        while not self.stopped():
            left = deadline - self.clock()
            if left <= 0:
                return
            self.sleep(min(left, 0.2))

    def _record(self, outcome, label, started, n):
        outcome.statuses[label] += 1
        if self.on_request is not None:
            self.on_request(label, self.clock() - started, n)
