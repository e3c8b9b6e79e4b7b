"""Send: batches → Segment (or to --dry_run_output); the messages that fail become rejects."""
import concurrent.futures
import hashlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from transforms import completion, counts, progress
from transforms.model import SegmentBatch
from transforms.progress import LiveChannel
from transforms.records import write_whole
from transforms.segment_client import (SegmentClient, sent_at_now, shared_rate_limiter)
from transforms.write_key import WriteKeySource


def _count_by_type(kind, messages):
    per_type = {}
    for m in messages:
        per_type[m.event_type] = per_type.get(m.event_type, 0) + 1
    for event_type, n in per_type.items():
        counts.counter(kind, event_type).inc(n)


def _count_sent(messages):
    """Counts messages Segment accepted (or a dry run wrote), and settles them for their files."""
    _count_by_type(counts.SENT, messages)
    done = completion.current()
    if done is not None:
        done.settle_many(completion.files_by_source([m.source for m in messages]),
                         completion.SENT)


def _count_unsent(messages):
    """Messages left alone because the run is stopping: not recorded as done (--resume)."""
    _count_by_type(counts.UNSENT, messages)


def configure_session(session, endpoint: str, use_env_proxy: bool = False) -> None:
    """The write key goes only to the endpoint (docs/security.md, "Where the write key goes").

    No proxy, netrc or CA bundle from the environment (`trust_env=False`): HTTP_PROXY would hand
    the key to whoever runs the proxy. With --use_env_proxy, the environment's proxy is used for
    https endpoints only (the proxy then sees a TLS tunnel, not the key), NO_PROXY honoured.
    """
    import os
    from requests.utils import get_environ_proxies
    session.trust_env = False
    session.proxies = {}
    if use_env_proxy and endpoint.startswith('https://'):
        proxy = get_environ_proxies(endpoint).get('https')
        if proxy:
            session.proxies = {'https': proxy}
        bundle = os.environ.get('REQUESTS_CA_BUNDLE') or os.environ.get('CURL_CA_BUNDLE')
        if bundle:
            session.verify = bundle


class WriteRequestBodiesFn(beam.DoFn):
    """Dry run: writes each exact request body to a file instead of sending it.

    Named by a hash of the batch's messageIds, so a retried bundle rewrites the same file.
    """

    reporter, stop = progress.NO_REPORTER, progress.NO_STOP   # until setup()

    def __init__(self, output_dir: str, sent_at: bool = False, live: LiveChannel = LiveChannel()):
        self.output_dir = output_dir
        self.sent_at = sent_at
        self.live = live

    def setup(self):
        self.reporter = self.live.reporter()
        self.stop = self.live.stop()

    def process(self, batch: SegmentBatch):
        if self.stop.is_set():
            _count_unsent(batch.messages)
            return []
        digest = hashlib.sha1('\n'.join(m.message_id for m in batch.messages).encode()).hexdigest()
        path = FileSystems.join(self.output_dir, f'batch-{digest[:20]}.json')
        write_whole(path, batch.body(sent_at_now() if self.sent_at else None),
                    'application/json')
        _count_sent(batch.messages)
        self.reporter.add(progress.SENT, len(batch.messages))
        return []


class SendBatchesFn(beam.DoFn):
    """Posts batches with one pooled Session per worker and a few requests in flight.

    Requests overlap (a thread pool) so a worker does not sit idle on network latency; results
    are collected on the bundle thread, as Beam requires for outputs.
    """

    reporter, stop = progress.NO_REPORTER, progress.NO_STOP   # until setup()

    def __init__(self, endpoint, key_source: WriteKeySource, timeout=30.0, use_gzip=False,
                 max_retry_seconds=600.0, events_per_second=0.0, max_in_flight=4,
                 sent_at=False, live: LiveChannel = LiveChannel(), use_env_proxy=False):
        self.endpoint = endpoint
        self.use_env_proxy = use_env_proxy
        self.key_source = key_source
        self.timeout = timeout
        self.use_gzip = use_gzip
        self.max_retry_seconds = max_retry_seconds
        self.events_per_second = events_per_second
        self.max_in_flight = max(1, max_in_flight)
        self.sent_at = sent_at
        self.live = live
        self.requests = Metrics.counter(counts.NAMESPACE, 'requests')
        self.retried = Metrics.counter(counts.NAMESPACE, 'requests_retried')
        self.batch_events = Metrics.distribution(counts.NAMESPACE, 'batch_events')
        self.latency_ms = Metrics.distribution(counts.NAMESPACE, 'request_latency_ms')

    def setup(self):
        import requests
        from requests.adapters import HTTPAdapter
        self.session = requests.Session()
        configure_session(self.session, self.endpoint, self.use_env_proxy)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.max_in_flight, max_retries=0)
        self.session.mount('https://', adapter)
        self.session.mount('http://', adapter)
        self.reporter = self.live.reporter()
        self.stop = self.live.stop()
        self.client = SegmentClient(
            self.session, self.endpoint, self.key_source.resolve(), timeout=self.timeout,
            use_gzip=self.use_gzip, max_retry_seconds=self.max_retry_seconds,
            limiter=shared_rate_limiter(self.events_per_second), on_request=self._on_request,
            sent_at=self.sent_at, stopped=self.stop.is_set, on_retry=self._on_retry)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.max_in_flight,
                                                          thread_name_prefix='segment-send')
        self.pending = {}

    def _on_request(self, label, seconds, n):
        # Metrics are per-thread in Beam; record on the bundle thread instead (see _collect).
        self._request_log.append((label, seconds, n))
        self.reporter.add(progress.STATUS_PREFIX + label)
        if label.startswith('2'):
            self.reporter.set(progress.NEXT_RETRY, 0)

    def _on_retry(self, label, delay):
        """Failing requests show in the launcher's next progress line, not after the budget."""
        import time
        self.reporter.add(progress.FAILING_PREFIX + label)
        self.reporter.set(progress.NEXT_RETRY, time.time() + delay)

    def start_bundle(self):
        self.pending = {}
        self._request_log = []

    def process(self, batch: SegmentBatch, window=beam.DoFn.WindowParam,
                timestamp=beam.DoFn.TimestampParam):
        if self.stop.is_set():   # stopping: what is not in flight stays for --resume
            _count_unsent(batch.messages)
            return
        future = self.pool.submit(self.client.deliver, batch.messages)
        self.pending[future] = (timestamp, window)
        if len(self.pending) >= self.max_in_flight:
            done, _ = concurrent.futures.wait(self.pending,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            yield from self._collect(done)

    def finish_bundle(self):
        done, _ = concurrent.futures.wait(self.pending)
        yield from self._collect(done)

    def _collect(self, done):
        for future in done:
            timestamp, window = self.pending.pop(future)
            try:
                outcome = future.result()
            except BaseException:
                for other in self.pending:
                    other.cancel()
                raise
            _count_sent(outcome.sent)
            _count_unsent(outcome.unsent)
            self.reporter.add(progress.SENT, len(outcome.sent))
            self.batch_events.update(len(outcome.sent) + len(outcome.rejects))
            self.retried.inc(outcome.retries)
            for label, n in outcome.statuses.items():
                counts.counter('requests_by_status', label).inc(n)
            for reject in outcome.rejects:
                yield WindowedValue(reject, timestamp, (window,))
        log, self._request_log = self._request_log, []
        for label, seconds, n in log:
            self.requests.inc()
            self.latency_ms.update(int(seconds * 1000))

    def teardown(self):
        pool = getattr(self, 'pool', None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        session = getattr(self, 'session', None)
        if session is not None:
            session.close()


class SendToSegment(beam.PTransform):
    """SegmentBatch → Reject PCollection (sent messages are counted, failures become data)."""

    def __init__(self, fn: beam.DoFn):
        super().__init__()
        self.fn = fn

    def expand(self, batches):
        return batches | 'PostBatches' >> beam.ParDo(self.fn)
