"""What a wave writes once it is over: its coverage, its manifest, and `--since_last_run`'s window.

The rejects step ends each bundle with a tally of it (its files' coverage and the reject files it
wrote), emitted only once the bundle's rejects are durable. The tallies are summed into one
(`SumTallies`), so the step after it (`WaveDoneFn`) runs once, when every bundle of the wave is
done, and writes next to the rejects (any store):

- the coverage: per event type and `date=` hour, the files and events read, dropped, sent and
  rejected (the summary's `by_hour`);
- the manifest: which input partitions (event type × date= hour) the wave completed. It names the
  input it was written for, so `--resume` ignores manifests of other inputs; the files themselves
  are recorded as they complete (transforms/completion.py), so a stopped wave is resumed file by
  file. A `--since_last_run` wave writes a done marker instead (a submitted job's lock waits for
  it);
- the window of `--since_last_run`'s next pass (pipeline/ledger.py).

A wave stopped by SIGINT/SIGTERM left events unsent: it writes its coverage, nothing else. One
combine and one step, so that a runner that starts a worker per stage (Beam's portable job
server) pays for two stages, not six.
"""
import json
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam

from transforms.completion import COLUMNS
from transforms.layout import UNDATED
from transforms.packing import PackedList
from transforms.progress import LiveChannel
from transforms.records import write_whole

Cell = Tuple[str, str]


def tally(cells: Dict[Cell, List[int]], reject_files: int) -> dict:
    """What one bundle of the rejects step did: its files' coverage, the reject files written."""
    return {'cells': cells, 'reject_files': reject_files}


class SumTallies(beam.CombineFn):
    """The bundles' tallies summed into the wave's."""

    def create_accumulator(self):
        return tally({}, 0)

    def add_input(self, total, one):
        for key, figures in one['cells'].items():
            found = total['cells'].setdefault(key, [0] * len(figures))
            for i, value in enumerate(figures):
                found[i] += value
        total['reject_files'] += one['reject_files']
        return total

    def merge_accumulators(self, totals):
        merged = self.create_accumulator()
        for total in totals:
            self.add_input(merged, total)
        return merged

    def extract_output(self, total):
        return total


class Manifest(NamedTuple):
    """The manifest a wave writes when it completes."""
    path: str
    run_id: str
    partitions: Iterable[str]
    files: int
    input_id: str = ''
    kind: str = 'backfill'


class WindowUpdate(NamedTuple):
    """Where `--since_last_run`'s next window starts: the newest date= hour listed (`newest`,
    when the launcher listed), never before `previous` (the window's hour this pass read)."""
    newest: Optional[str] = None
    previous: Optional[str] = None


def newest_hour(cells: Dict[Cell, List[int]]) -> Optional[str]:
    """The newest date= hour among coverage cells with files."""
    hours = [key[1] for key, figures in cells.items() if figures[0] and key[1] != UNDATED]
    return max(hours) if hours else None


class WaveDoneFn(beam.DoFn):
    """Runs once, with the wave's summed tally, after every bundle's rejects are durable."""

    def __init__(self, coverage_path: str, manifest: Optional[Manifest] = None,
                 window_path: Optional[str] = None, window: Optional[WindowUpdate] = None,
                 live: LiveChannel = LiveChannel()):
        self.coverage_path = coverage_path
        self.manifest = manifest
        if manifest is not None:   # small in the job graph
            self.manifest = manifest._replace(partitions=PackedList(sorted(set(
                manifest.partitions))))
        self.window_path = window_path
        self.window = window
        self.live = live

    def process(self, total):
        rows = sorted([list(key) + list(figures) for key, figures in total['cells'].items()])
        write_whole(self.coverage_path, json.dumps({'columns': list(COLUMNS), 'cells': rows},
                                                   separators=(',', ':')).encode('utf-8'),
                    'application/json')
        if self.live.stop().is_set():   # a stopped wave left events unsent: not completed
            return []
        if self.manifest is not None:
            m = self.manifest
            write_whole(m.path, json.dumps({
                'run_id': m.run_id, 'input': m.input_id, 'files': m.files, 'kind': m.kind,
                'partitions': list(m.partitions), 'rejects_files': total['reject_files']},
                indent=1).encode('utf-8'), 'application/json')
        if self.window is not None and self.window_path:
            hours = [h for h in (self.window.newest, self.window.previous,
                                 newest_hour(total['cells'])) if h and h != UNDATED]
            if hours:
                write_whole(self.window_path, json.dumps({
                    'from': max(hours), 'run_id': self.manifest.run_id if self.manifest
                    else ''}).encode('utf-8'), 'application/json')
        return []
