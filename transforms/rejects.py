"""Rejects: every undeliverable event or unreadable file, as replayable JSON Lines (CONTRACT §5).

The rejects are the last step, so they are also where the run's progress becomes durable: each
reject is written within a fraction of a second, in a small piece of its own
(`rejects-<run id>-<wave>-<writer>-<n>.jsonl`, complete or absent, never half written), and only
then counts as settled for its file; files whose every event is settled are then appended to
the per-file record (transforms/completion.py). At the end of each bundle the step emits the
bundle's tally (its files' coverage per event type and hour, the reject files it wrote) as data,
once its rejects are durable (transforms/manifest.py).
"""
import threading
import uuid
from typing import Optional, Tuple

import apache_beam as beam
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import MAX_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms import completion, counts, progress
from transforms.manifest import tally
from transforms.model import Reject
from transforms.progress import LiveChannel
from transforms.records import write_whole

FLUSH_LINES = 1000       # a piece is written at the latest when this many rejects wait
_GLOBAL = beam_window.GlobalWindow()


def count_and_serialize(reject: Reject, input_id: Optional[str] = None,
                        profile: Optional[Tuple[str, bool]] = None) -> str:
    """Counts a reject for the summary (per event type and reason) and makes its JSON line.

    Each line names the run's input, so replay re-reads only files under it; a file's line
    also names the run's mapping `profile` (name, include_anonymous), so replay maps its
    records as the run would have."""
    if input_id and reject.input is None:
        reject = reject._replace(input=input_id)
    if profile and reject.is_file and reject.mapping is None:
        reject = reject._replace(mapping=profile[0], include_anonymous=profile[1])
    if reject.is_file:
        counts.counter(counts.REASON, reject.reason).inc()
    else:
        counts.counter(counts.REJECTED, reject.event_type or '').inc()
        counts.counter(counts.REASON, reject.reason).inc()
    return reject.to_json()


def _in_global_window(value):
    return WindowedValue(value, MAX_TIMESTAMP, (_GLOBAL,))


class WriteRejectsFn(beam.DoFn):
    """Counts and writes the rejects durably; settles them; records the files they complete."""

    reporter = progress.NO_REPORTER   # until setup()

    def __init__(self, file_path_prefix: str, input_id: Optional[str] = None,
                 live: LiveChannel = LiveChannel(),
                 profile: Optional[Tuple[str, bool]] = None):
        self.file_path_prefix = file_path_prefix
        self.input_id = input_id
        self.live = live
        self.profile = profile

    def setup(self):
        self.reporter = self.live.reporter()
        self.lock = threading.Lock()
        self.flush_lock = threading.Lock()

    def start_bundle(self):
        self.waiting = []          # (line, source, completion column) not yet durable
        self.written = []          # pieces written in this bundle
        self.writer = uuid.uuid4().hex[:12]
        # The read step opens the bundle's Completion in its start_bundle, which Beam calls
        # after this one's (downstream first): it is taken on the bundle thread when needed.
        self.completion = None
        completion.FLUSHER.register(self)

    def process(self, reject: Reject):
        if self.completion is None:
            self.completion = completion.current()
        line = count_and_serialize(reject, self.input_id, self.profile)
        if not reject.is_file:
            self.reporter.add(progress.REJECTED)
        column = completion.FILES_REJECTED if reject.is_file else completion.REJECTED
        with self.lock:
            self.waiting.append((line, reject.source, column))
            full = len(self.waiting) >= FLUSH_LINES
        if full:
            self.flush()
        return ()

    def flush(self) -> None:
        """Writes the waiting rejects as one piece, settles them, then records what is done."""
        with self.flush_lock:
            with self.lock:
                waiting, self.waiting = self.waiting, []
            if waiting:
                path = (f'{self.file_path_prefix}-{self.writer}-{len(self.written):05d}'
                        f'.jsonl')
                try:
                    write_whole(path, ''.join(line + '\n' for line, _, _ in waiting)
                                .encode('utf-8'))
                except BaseException:
                    with self.lock:
                        self.waiting[:0] = waiting
                    raise
                self.written.append(path)
                if self.completion is not None:
                    for _, source, column in waiting:
                        self.completion.settle(source, column)
            if self.completion is not None:
                self.completion.write_record()   # the files these rejects completed, at once

    def finish_bundle(self):
        completion.FLUSHER.unregister(self)
        if self.completion is None:
            self.completion = completion.current()
        self.flush()
        done = self.completion
        cells = {}
        if done is not None:
            counts.counter(counts.RECORDED_FILES).inc(done.recorded_files)
            counts.counter(counts.RECORDED_EVENTS).inc(done.recorded_events)
            files, events = done.unfinished()
            counts.counter(counts.UNFINISHED_FILES).inc(files)
            counts.counter(counts.UNFINISHED_EVENTS).inc(events)
            cells = done.coverage()
            completion.end()
        yield _in_global_window(tally(cells, len(self.written)))

    def teardown(self):
        completion.FLUSHER.unregister(self)


class WriteRejects(beam.PTransform):
    """Flattens the rejects of every step and writes them under --rejects (any store).

    Returns the tallies of the rejects step's bundles, each emitted once its rejects are
    durable (transforms/manifest.py sums them)."""

    def __init__(self, file_path_prefix: str, input_id: Optional[str] = None,
                 live: LiveChannel = LiveChannel(),
                 profile: Optional[Tuple[str, bool]] = None):
        super().__init__()
        self.file_path_prefix = file_path_prefix
        self.input_id = input_id
        self.live = live
        self.profile = profile

    def expand(self, reject_pcolls):
        return (reject_pcolls
                | 'AllRejects' >> beam.Flatten()
                | 'GlobalWindow' >> beam.WindowInto(beam_window.GlobalWindows())
                | 'WriteJsonLines' >> beam.ParDo(WriteRejectsFn(
                    self.file_path_prefix, self.input_id, self.live, self.profile)))
