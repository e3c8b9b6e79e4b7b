"""Launcher side of a run's live view: progress lines on stderr, and stopping on SIGINT/SIGTERM.

Workers report running totals as UDP datagrams on loopback (transforms/progress.py); this
module receives them, prints a line every --progress_seconds, and turns the first SIGINT or
SIGTERM into a stop request the workers see (a file), a second one into an immediate exit.
On Dataflow (with --wait) and other runners whose workers may be elsewhere the workers cannot
reach the launcher: the job's counters are polled instead (`poll`), and the stop request is an
object on the rejects store (pipeline/remote.py).
"""
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from typing import Callable, Dict, Optional, Union

from transforms import progress as live
from transforms.progress import LiveChannel

SIGNAL_NAMES = {signal.SIGINT: 'SIGINT', signal.SIGTERM: 'SIGTERM'}
RECEIVE_TIMEOUT = 0.2   # how often the progress receiver looks up from its socket


def format_duration(seconds: float) -> str:
    """H:MM:SS (days as '2 d 3:04:05'): short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    text = f'{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}'
    return f'{days} d {text}' if days else text


def eta_seconds(done: float, total: float, rate: float) -> Optional[float]:
    """Seconds left to process `total` events at `rate` events/s; None when unknown."""
    if total <= 0 or rate <= 0:
        return None
    return max(0.0, total - done) / rate


def merge_totals(by_reporter: Dict[str, Dict[str, float]], now: float) -> Dict[str, float]:
    """Sums the workers' totals; the next retry is the soonest one still ahead."""
    merged: Dict[str, float] = {}
    retries = []
    for totals in by_reporter.values():
        for name, value in totals.items():
            if name == live.NEXT_RETRY:
                if value and value > now:
                    retries.append(value)
            else:
                merged[name] = merged.get(name, 0) + value
    if retries:
        merged[live.NEXT_RETRY] = min(retries)
    return merged


def progress_line(elapsed: float, totals: Dict[str, float], files_total: int,
                  events_per_second: float, eta: Optional[float],
                  failing_since_last: Dict[str, float], now: float) -> str:
    """One progress line: files, events, rate, ETA, and failing requests if any."""
    get = lambda name: int(totals.get(name, 0))   # noqa: E731
    files = f'files {get(live.FILES_DONE)}/{files_total}' if files_total else (
        f'files {get(live.FILES_DONE)} (the workers list them: {get(live.LISTED):,} objects '
        f'in {get(live.LIST_REQUESTS):,} LIST requests so far)')
    parts = [f'progress {format_duration(elapsed)}: {files}',
             f'events read {get(live.READ):,}, sent {get(live.SENT):,}, '
             f'dropped {get(live.DROPPED):,}, rejected {get(live.REJECTED):,}',
             f'{events_per_second:,.0f} events/s']
    if eta is not None:
        parts.append(f'ETA {format_duration(eta)}')
    failing = {k: int(v) for k, v in failing_since_last.items() if v}
    next_retry = totals.get(live.NEXT_RETRY)
    if failing or (next_retry and next_retry > now):
        text = 'requests failing: ' + (', '.join(
            f'{label} {n}' for label, n in sorted(failing.items())) or 'retrying')
        if next_retry and next_retry > now:
            text += f'; next retry in {max(1, round(next_retry - now))} s'
        parts.append(text)
    return ' | '.join(parts)


class ProgressMonitor:
    """Receives the workers' datagrams and prints a progress line every `period` seconds."""

    def __init__(self, period: float, files_total: int, estimate: Union[int, Callable[[], int]],
                 throttle: float, out, poll: Optional[Callable[[], Dict[str, float]]] = None,
                 status: Optional[Callable[[], str]] = None,
                 no_metrics: str = 'no live metrics from the runner yet'):
        """`estimate`: the events expected, or what works them out, called by the first
        progress line (reading a block header per event type: off the launcher's way to the
        workers). `status`: the job as its runner sees it, for polled runs ('job RUNNING, ...'),
        shown in every line and instead of zeros while the runner has no counters."""
        self.period = period
        self.files_total = files_total
        self._estimate = estimate
        self.throttle = throttle
        self.out = out
        self.poll = poll
        self.status = status
        self.no_metrics = no_metrics
        self.by_reporter: Dict[str, Dict[str, float]] = {}
        self.seq: Dict[str, int] = {}
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.sock = None
        self.threads = []
        self.started = time.monotonic()
        self.last_failing: Dict[str, float] = {}
        self.last_done = 0.0
        self.last_time = self.started

    @property
    def estimate(self) -> int:
        if callable(self._estimate):
            self._estimate = self._estimate()
        return self._estimate

    @property
    def address(self):
        return self.sock.getsockname() if self.sock else None

    def start(self) -> 'ProgressMonitor':
        if self.poll is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(('127.0.0.1', 0))
            self.sock.settimeout(RECEIVE_TIMEOUT)
            self.threads.append(threading.Thread(target=self._receive, daemon=True,
                                                 name='progress-receiver'))
        if self.period > 0:
            self.threads.append(threading.Thread(target=self._print_every_period, daemon=True,
                                                 name='progress-printer'))
        for thread in self.threads:
            thread.start()
        return self

    def _receive(self):
        while not self.closing.is_set():
            try:
                data = self.sock.recv(65536)
                report = json.loads(data)
                rid, seq, totals = report['id'], report['seq'], report['t']
            except socket.timeout:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                if self.closing.is_set():
                    return
                continue
            with self.lock:
                if seq > self.seq.get(rid, 0):   # datagrams may arrive out of order
                    self.seq[rid], self.by_reporter[rid] = seq, totals

    def totals(self) -> Dict[str, float]:
        if self.poll is not None:
            try:
                return self.poll()
            except Exception:   # noqa: BLE001 - a failed poll only delays a progress line
                return {}
        with self.lock:
            return merge_totals(self.by_reporter, time.time())

    def line(self) -> str:
        now = time.monotonic()
        totals = self.totals()
        if self.status is not None:
            status = _quietly(self.status, 'job state unknown')
            if not totals:
                elapsed = format_duration(now - self.started)
                return f'progress {elapsed}: {status}; {self.no_metrics}'
            return f'{self._counters_line(now, totals)} | {status}'
        return self._counters_line(now, totals)

    def _counters_line(self, now: float, totals: Dict[str, float]) -> str:
        done = sum(totals.get(k, 0) for k in (live.SENT, live.DROPPED, live.REJECTED))
        recent = (done - self.last_done) / max(now - self.last_time, 1e-6)
        self.last_done, self.last_time = done, now
        overall = done / max(now - self.started, 1e-6)
        rate = self.throttle if self.throttle > 0 else overall
        eta = eta_seconds(done, self.estimate, rate) if done else None
        failing = {k[len(live.FAILING_PREFIX):]: v for k, v in totals.items()
                   if k.startswith(live.FAILING_PREFIX)}
        new_failures = {k: v - self.last_failing.get(k, 0) for k, v in failing.items()}
        self.last_failing = failing
        return progress_line(now - self.started, totals, self.files_total, recent, eta,
                             new_failures, time.time())

    def _print_every_period(self):
        while not self.closing.wait(self.period):
            text = self.line()
            try:
                print(text, file=self.out, flush=True)
            except (OSError, ValueError):
                return

    def close(self) -> None:
        self.closing.set()
        if self.sock is not None:   # wake the receiver now, not at its next timeout
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waker:
                    waker.sendto(b'', self.sock.getsockname())
            except OSError:
                pass
        for thread in self.threads:
            thread.join(1.0)
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _quietly(ask: Callable[[], str], otherwise: str) -> str:
    try:
        return ask()
    except Exception:   # noqa: BLE001 - a runner that cannot answer only costs a detail
        return otherwise


def dataflow_poll(result) -> Callable[[], Dict[str, float]]:
    """A running job's counters (attempted where the runner has them), named as the workers'
    live totals: Dataflow's, and any runner's whose result answers `metrics()` while it runs.

    Beam's PortableRunner result keeps the first answer for good, even one taken before any
    counter existed: each poll asks its job service again.
    """
    from apache_beam.metrics.metric import MetricsFilter
    from transforms import counts

    def poll() -> Dict[str, float]:
        if getattr(result, '_metrics', None) is not None and hasattr(result, '_job_service'):
            result._metrics = None
        query = result.metrics().query(MetricsFilter().with_namespace(counts.NAMESPACE))
        totals: Dict[str, float] = {}
        for c in query['counters']:
            kind, key = counts.split_name(c.key.metric.name)
            name = {counts.READ: live.READ, counts.DROPPED: live.DROPPED,
                    counts.SENT: live.SENT, counts.REJECTED: live.REJECTED,
                    counts.FILES_READ: live.FILES_DONE, counts.FILES_REJECTED: live.FILES_DONE,
                    'requests_by_status': live.STATUS_PREFIX + key}.get(kind)
            if name:
                totals[name] = totals.get(name, 0) + (c.attempted or c.committed or 0)
        return totals
    return poll


class StopOnSignal:
    """First SIGINT/SIGTERM: ask the workers to stop (a file they look for) and let the run
    finish what is in flight; a second one: leave at once.

    `marker`: for workers elsewhere, the stop request is this object on a store (written from
    a thread, so the handler returns at once even if the store is slow)."""

    def __init__(self, console, on_second: Callable[[int], None], marker: Optional[str] = None):
        self.console = console
        self.on_second = on_second
        self.folder = None if marker else tempfile.mkdtemp(prefix='currents-to-segment-run-')
        self.path = marker or os.path.join(self.folder, 'stop')
        self.signum: Optional[int] = None
        self.requested_at: Optional[float] = None
        self.marked = threading.Event()
        self.note = ''   # what else the stop does, for the line the first signal prints
        self.previous = {}

    @property
    def name(self) -> str:
        return SIGNAL_NAMES.get(self.signum, str(self.signum))

    def install(self) -> 'StopOnSignal':
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNAL_NAMES:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def request(self, signum: int) -> None:
        self.signum = signum
        self.requested_at = time.monotonic()
        if self.folder is None:
            threading.Thread(target=self._mark_store, args=(signum,), daemon=True,
                             name='stop-marker').start()
            return
        with open(self.path, 'w') as f:
            f.write(f'{signum}\n')
        self.marked.set()

    def _mark_store(self, signum: int) -> None:
        from transforms.records import write_whole
        try:
            write_whole(self.path, f'{signum}\n'.encode('ascii'), 'text/plain')
            self.marked.set()
        except Exception as exc:   # noqa: BLE001 - the runner's cancel still ends the job
            try:
                print(f'could not write the stop request {self.path} ({type(exc).__name__}): '
                      f'the job is cancelled through the runner instead', file=self.console,
                      flush=True)
            except (OSError, ValueError):
                pass

    def _handle(self, signum, frame):
        if self.signum is not None:
            self.on_second(signum)
            return
        self.request(signum)
        try:
            print(f'{SIGNAL_NAMES.get(signum, signum)}: stopping: no new requests; waiting for '
                  f'those in flight, then writing the rejects and the summary{self.note} (again '
                  f'to exit at once)', file=self.console, flush=True)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def live_channel(monitor: Optional[ProgressMonitor], stop: Optional[StopOnSignal]) -> LiveChannel:
    return LiveChannel(monitor.address if monitor else None, stop.path if stop else None)
