"""Which input files are done, decided on the workers as it happens (docs/resume.md).

A file is done once every one of its events is acknowledged by Segment, dropped, or rejected
with its reject durable (and, for a file that would not read to its end, once that reject is
durable too); never earlier. Done files are appended to the per-file record
(transforms/records.py) in small pieces within a fraction of a second, so a stopped or killed
run is resumed by sending again only what was in flight.

The steps from reading to the rejects run fused, in one bundle on one thread (Beam fuses
ParDos that no shuffle separates, on every runner): the read step opens a `Completion` for the
bundle (`begin`), the steps after it settle events in it (`current`), and the rejects step, the
last, writes the rejects, settles them, writes the record, and closes it at the end of the
bundle (`end`). A bundle's events are all settled within the bundle (batches are flushed at its
end), so what a retried bundle does again is recorded again: entries are a set, so nothing
counts twice.

The same accounting gives the coverage of a run: per event type and `date=` hour, how many files
and events were read, dropped, sent and rejected (COLUMNS), emitted as data at the end of each
bundle, so a retried bundle's figures are discarded with it.
"""
import threading
import time
import uuid
import weakref
from typing import Dict, List, Optional, Tuple

from transforms.layout import hour_key
from transforms.records import Recorded, piece_name, record_lines, records_dir, write_whole

COLUMNS = ('files', 'files_rejected', 'read', 'dropped_no_external_user_id', 'sent', 'rejected')
FILES, FILES_REJECTED, READ, DROPPED, SENT, REJECTED = range(len(COLUMNS))
FLUSH_SECONDS = 0.25   # how often a bundle's rejects and done files are made durable
Cell = Tuple[str, str]   # (Currents event type, hour name)


class _File:
    __slots__ = ('event_type', 'size', 'stamp', 'expected', 'settled', 'counts', 'done')

    def __init__(self, event_type: Optional[str], size: int, stamp: float):
        self.event_type = event_type
        self.size = size
        self.stamp = stamp
        self.expected: Optional[int] = None    # known once the file has been read to its end
        self.settled = 0
        self.counts = [1, 0, 0, 0, 0, 0]
        self.done = False


class RecordWriter:
    """Writes done files as record pieces under `<rejects>/delivered/` (None: record nothing,
    as in a dry run)."""

    def __init__(self, rejects: str, run_id: str, wave: str):
        self.folder = records_dir(rejects)
        self.run_id = run_id
        self.wave = wave
        self.writer = uuid.uuid4().hex[:12]
        self.number = 0
        self.written = 0

    def write(self, entries: List[Recorded]) -> str:
        self.number += 1
        path = f'{self.folder}/{piece_name(self.run_id, self.wave, self.writer, self.number)}'
        write_whole(path, record_lines(entries))
        self.written += len(entries)
        return path


class Completion:
    """One bundle's files: events expected, events settled, and which files are done."""

    def __init__(self, recorder: Optional[RecordWriter] = None):
        self.recorder = recorder
        self.files: Dict[str, _File] = {}
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.completed: List[Recorded] = []
        self.recorded_files = 0
        self.recorded_events = 0

    # -- the read step ---------------------------------------------------------------------
    def opened(self, path: str, event_type: Optional[str], size: int, stamp: float) -> None:
        with self.lock:
            self.files[path] = _File(event_type, size, stamp)

    def typed(self, path: str, event_type: str) -> None:
        """The file's type, once its header said it (files whose path names none)."""
        with self.lock:
            found = self.files.get(path)
            if found is not None:
                found.event_type = event_type

    def read_done(self, path: str, events: int, file_rejected: bool = False) -> None:
        """The file was read to its end (or to where it would not read: one file reject)."""
        with self.lock:
            found = self.files.get(path)
            if found is None:
                return
            found.counts[READ] = events
            found.expected = events + (1 if file_rejected else 0)
            self._check(path, found)

    def read_stopped(self, path: str, events: int) -> None:
        """Reading stopped part way (the run is stopping): the file is never done here."""
        with self.lock:
            found = self.files.get(path)
            if found is not None:
                found.counts[READ] = events
                found.expected = -1

    # -- the steps after it ----------------------------------------------------------------
    def settle(self, path: str, column: int, n: int = 1) -> None:
        """n events of the file are sent, dropped or durably rejected (column says which)."""
        with self.lock:
            found = self.files.get(path)
            if found is None:
                return
            found.settled += n
            found.counts[column] += n
            self._check(path, found)

    def settle_many(self, paths: Dict[str, int], column: int) -> None:
        for path, n in paths.items():
            self.settle(path, column, n)

    def _check(self, path: str, found: _File) -> None:
        if not found.done and found.expected is not None and found.settled == found.expected:
            found.done = True
            if self.recorder is not None:
                self.completed.append((path, found.size, found.stamp))
                self.recorded_files += 1
                self.recorded_events += found.counts[READ]

    # -- the rejects step ------------------------------------------------------------------
    def write_record(self) -> int:
        """Appends the files done since the last call to the record; how many."""
        with self.write_lock:
            with self.lock:
                done, self.completed = self.completed, []
            if done and self.recorder is not None:
                try:
                    self.recorder.write(done)
                except BaseException:
                    with self.lock:
                        self.completed[:0] = done   # written next time, or never: resent
                    raise
            return len(done)

    flush = write_record   # what the Flusher calls every FLUSH_SECONDS

    def coverage(self) -> Dict[Cell, List[int]]:
        """Per (event type, hour): the COLUMNS of this bundle's files."""
        cells: Dict[Cell, List[int]] = {}
        with self.lock:
            for path, found in self.files.items():
                if found.event_type is None:
                    continue   # not of a type this run reads: skipped, not read
                key = (found.event_type, hour_key(path))
                cell = cells.setdefault(key, [0] * len(COLUMNS))
                for i, value in enumerate(found.counts):
                    cell[i] += value
        return cells

    def unfinished(self) -> Tuple[int, int]:
        """(files not done, their events already settled): what --resume sends again."""
        with self.lock:
            left = [f for f in self.files.values() if not f.done]
            return len(left), sum(f.settled - f.counts[FILES_REJECTED] for f in left)


class Flusher:
    """One thread per process that calls each registered flush every FLUSH_SECONDS, so rejects
    and done files become durable while the bundle goes on (a bundle may last the whole run)."""

    def __init__(self, period: float = FLUSH_SECONDS):
        self.period = period
        self.targets: 'weakref.WeakSet' = weakref.WeakSet()
        self.lock = threading.Lock()
        self.thread: Optional[threading.Thread] = None

    def register(self, target) -> None:
        with self.lock:
            self.targets.add(target)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name='durable-flush',
                                               daemon=True)
                self.thread.start()

    def unregister(self, target) -> None:
        with self.lock:
            self.targets.discard(target)

    def _run(self) -> None:
        while True:
            time.sleep(self.period)
            with self.lock:
                targets = list(self.targets)
            for target in targets:
                try:
                    target.flush()
                except Exception:   # noqa: BLE001 - the bundle's own flush raises it again
                    pass


FLUSHER = Flusher()


_local = threading.local()


def begin(recorder: Optional[RecordWriter] = None) -> Completion:
    """A new bundle on this thread: its files are accounted in a new Completion, whose done
    files are recorded every FLUSH_SECONDS."""
    end()
    _local.completion = Completion(recorder)
    FLUSHER.register(_local.completion)
    return _local.completion


def current() -> Optional[Completion]:
    """The bundle's Completion on this thread (None where no read step opened one: replay)."""
    return getattr(_local, 'completion', None)


def end() -> None:
    found = getattr(_local, 'completion', None)
    if found is not None:
        FLUSHER.unregister(found)
    _local.completion = None




def files_by_source(sources: List[str]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for source in sources:
        counts[source] = counts.get(source, 0) + 1
    return counts
