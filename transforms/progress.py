"""Live progress from the workers to the launcher, and the launcher's request to stop.

Beam's committed counters arrive per bundle, and a local run executes a stage as one bundle, so
they say nothing until the end. Instead each worker process keeps running totals (events read,
dropped, sent, rejected, files done, request answers) and sends them a few times a second as one
UDP datagram on loopback to the address the launcher passed to the DoFns (fire and forget: a
lost datagram is superseded by the next, since each carries totals, not deltas).

The stop request goes the other way as a file: the launcher creates it on SIGINT/SIGTERM; the
DoFns look for it (at most every 0.2 s) and then stop reading and sending. Events not processed
are simply not recorded as done, so `--resume` sends them later.

Workers that may be on other machines (pipeline/runners.py) cannot reach the launcher's loopback
address or disk: they report nothing (the launcher polls the runner's metrics instead) and the
stop request is an object on the run's rejects store, which a background thread of each worker
process looks for every few seconds (StoreStopSignal); that thread also leaves one object saying
the process started, so the launcher can tell a job whose workers never came up.
"""
import json
import os
import socket
import threading
import time
import uuid
from typing import Dict, NamedTuple, Optional, Tuple

from transforms.credentials import bare_worker_filesystems

FLUSH_SECONDS = 0.25
CHECK_SECONDS = 0.2
STORE_CHECK_SECONDS = 3.0   # a store read per worker process this often, not per element
MAX_DATAGRAM = 60000
WORKER_PREFIX = 'worker-'   # beside a store stop marker: one object per started worker process


class LiveChannel(NamedTuple):
    """What the launcher hands the DoFns: where to report, and which file means "stop"."""
    address: Optional[Tuple[str, int]] = None   # UDP on loopback; None: report nothing
    stop_path: Optional[str] = None             # exists once the launcher asks to stop

    def reporter(self) -> 'Reporter':
        bare_worker_filesystems()   # every DoFn's setup() comes here first
        return reporter_for(self.address)

    def stop(self) -> 'StopSignal':
        bare_worker_filesystems()
        return stop_signal_for(self.stop_path)


class Reporter:
    """Running totals of one worker process, sent to the launcher a few times a second."""

    def __init__(self, address: Optional[Tuple[str, int]]):
        self.address = address
        self.id = f'{os.getpid()}-{uuid.uuid4().hex[:8]}'
        self.totals: Dict[str, float] = {}
        self.lock = threading.Lock()
        self.seq = 0
        self.dirty = False
        self.sock = None
        self.thread = None
        if address is not None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.thread = threading.Thread(target=self._run, name='progress-reporter',
                                           daemon=True)
            self.thread.start()

    def add(self, name: str, n: float = 1) -> None:
        if self.sock is None or not n:
            return
        with self.lock:
            self.totals[name] = self.totals.get(name, 0) + n
            self.dirty = True

    def set(self, name: str, value: float) -> None:
        if self.sock is None:
            return
        with self.lock:
            self.totals[name] = value
            self.dirty = True

    def flush(self) -> None:
        with self.lock:
            if not self.dirty:
                return
            self.dirty = False
            self.seq += 1
            payload = json.dumps({'id': self.id, 'seq': self.seq, 't': self.totals},
                                 separators=(',', ':')).encode('utf-8')
        try:
            self.sock.sendto(payload[:MAX_DATAGRAM], self.address)
        except OSError:
            pass   # the launcher is gone or busy: progress is best effort

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()


_reporters: Dict[Optional[Tuple[str, int]], Reporter] = {}
_stops: Dict[Optional[str], 'StopSignal'] = {}
_lock = threading.Lock()


def reporter_for(address) -> Reporter:
    """One reporter per process and launcher address, shared by every DoFn and thread."""
    address = tuple(address) if address else None
    with _lock:
        found = _reporters.get(address)
        if found is None:
            found = _reporters[address] = Reporter(address)
        return found


class StopSignal:
    """Whether the launcher asked to stop; cheap to ask often (a stat every 0.2 s at most)."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self.checked = 0.0
        self.stopped = False

    def is_set(self) -> bool:
        if self.stopped or self.path is None:
            return self.stopped
        now = time.monotonic()
        if now - self.checked >= CHECK_SECONDS:
            self.checked = now
            self.stopped = os.path.exists(self.path)
        return self.stopped

    def sleep(self, seconds: float) -> bool:
        """Sleeps up to `seconds`, waking early on a stop request; True if stopped."""
        deadline = time.monotonic() + seconds
        while True:
            if self.is_set():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, CHECK_SECONDS))


class StoreStopSignal(StopSignal):
    """The stop marker as an object on a store (gs://, s3://, azfs://) that remote workers
    reach: one background thread per process looks for it every STORE_CHECK_SECONDS, so
    `is_set()` costs a flag read. It first leaves `worker-<host>-<pid>-<id>` beside the marker:
    the launcher counts those to tell a job whose workers never started."""

    def __init__(self, path: str, check_seconds: float = STORE_CHECK_SECONDS):
        super().__init__(path)
        self.check_seconds = check_seconds
        self.thread = threading.Thread(target=self._watch, name='stop-watch', daemon=True)
        self.thread.start()

    def is_set(self) -> bool:
        return self.stopped

    def _watch(self) -> None:
        from apache_beam.io.filesystems import FileSystems
        folder = self.path.rsplit('/', 1)[0]
        announced = False
        while not self.stopped:
            try:
                if not announced:
                    from transforms.records import write_whole
                    write_whole(f'{folder}/{WORKER_PREFIX}{socket.gethostname()}-'
                                f'{os.getpid()}-{uuid.uuid4().hex[:6]}', b'',
                                'application/octet-stream')
                    announced = True
                self.stopped = FileSystems.exists(self.path)
            except Exception:   # noqa: BLE001 - a store hiccup only delays the next look
                pass
            if not self.stopped:
                time.sleep(self.check_seconds)


def stop_signal_for(path: Optional[str]) -> StopSignal:
    """One per process and marker: a file on this machine, or an object on a store."""
    with _lock:
        found = _stops.get(path)
        if found is None:
            kind = StoreStopSignal if path and '://' in path else StopSignal
            found = _stops[path] = kind(path)
        return found


# Names of the live totals (the launcher's progress line reads them).
READ, DROPPED, SENT, REJECTED, FILES_DONE = 'read', 'dropped', 'sent', 'rejected', 'files'
# Listing on the workers (a range the launcher hands over): objects listed, LIST requests made.
LISTED, LIST_REQUESTS = 'listed', 'list_requests'
STATUS_PREFIX = 'status:'        # request answers by label ('200', '503', 'ConnectionError')
FAILING_PREFIX = 'failing:'      # answers that are being retried, by label
NEXT_RETRY = 'next_retry_at'     # wall-clock time of the next retry of a failing request

# What a DoFn uses before setup() (unit tests call process() directly): report and stop nothing.
NO_REPORTER = reporter_for(None)
NO_STOP = stop_signal_for(None)
