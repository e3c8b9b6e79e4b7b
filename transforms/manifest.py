"""What a wave writes once it is over: its manifest, its coverage, and `--since_last_run`'s window.

Each runs once, after the wave's rejects are durable (its input is their count), next to the
rejects (any store):

- the manifest: which input partitions (event type × date= hour) a wave completed, one small
  JSON file per wave. It names the input it was written for, so `--resume` ignores manifests of
  other inputs; the files themselves are recorded as they complete (transforms/completion.py),
  so a stopped wave is resumed file by file. A wave stopped by SIGINT/SIGTERM writes none.
- the coverage: per event type and `date=` hour, the files and events read, dropped, sent and
  rejected (the summary's `by_hour`);
- the window of `--since_last_run` (pipeline/ledger.py).
"""
import json
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam

from transforms.completion import COLUMNS
from transforms.layout import UNDATED
from transforms.packing import PackedList
from transforms.progress import LiveChannel
from transforms.records import write_whole

class WriteManifestFn(beam.DoFn):
    """Runs once, after the rejects are written (its input is their count)."""

    def __init__(self, path: str, run_id: str, partitions: Iterable[str], files: int,
                 input_id: str = '', live: LiveChannel = LiveChannel(), kind: str = 'backfill'):
        self.path = path
        self.body = {'run_id': run_id, 'input': input_id, 'files': files, 'kind': kind}
        self.partitions = PackedList(sorted(set(partitions)))   # small in the job graph
        self.live = live

    def process(self, rejects_files_written):
        if self.live.stop().is_set():   # a stopped wave left events unsent: not completed
            return []
        write_whole(self.path, json.dumps(dict(self.body, partitions=list(self.partitions),
                                               rejects_files=rejects_files_written),
                                          indent=1).encode('utf-8'), 'application/json')
        return []


class WindowUpdate(NamedTuple):
    """Where `--since_last_run`'s next window starts: the newest date= hour listed (`newest`,
    when the launcher listed), never before `previous` (the window's hour this pass read)."""
    newest: Optional[str] = None
    previous: Optional[str] = None


class RecordWindowFn(beam.DoFn):
    """Runs once, after the rejects are written: the last wave of a `--since_last_run` that
    completed records the newest date= hour it listed, where the next pass's window starts
    (minus --lookback_hours; pipeline/ledger.py): the launcher's figure when it listed the
    input, else the newest hour the wave read, and never earlier than `previous`. Written by
    the job itself, so that a submitted Dataflow job moves the window too."""

    def __init__(self, path: str, newest: Optional[str], previous: Optional[str], run_id: str,
                 live: LiveChannel = LiveChannel()):
        self.path = path
        self.newest = newest
        self.previous = previous
        self.run_id = run_id
        self.live = live

    def process(self, rejects_files_written, newest_read=None):
        if self.live.stop().is_set():   # a stopped wave left files unsent: keep the window
            return []
        hours = [h for h in (self.newest, self.previous, newest_read) if h and h != UNDATED]
        if hours:
            write_whole(self.path, json.dumps({'from': max(hours), 'run_id': self.run_id})
                        .encode('utf-8'), 'application/json')
        return []


def newest_hour(cells) -> Optional[str]:
    """The newest date= hour among coverage cells ((type, hour), figures) with files."""
    hours = [key[1] for key, figures in cells if figures[0] and key[1] != UNDATED]
    return max(hours) if hours else None


class WriteCoverageFn(beam.DoFn):
    """Writes a wave's coverage cells (per event type and hour) as one JSON object."""

    def __init__(self, path: str):
        self.path = path

    def process(self, cells):
        rows = sorted([list(key) + list(figures) for key, figures in cells])
        write_whole(self.path, json.dumps({'columns': list(COLUMNS), 'cells': rows},
                                          separators=(',', ':')).encode('utf-8'),
                    'application/json')
        return []
