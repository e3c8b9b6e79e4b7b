"""The run's records of completed work, written by the pipeline itself as its last step.

Both are kept next to the rejects (local or gs://) and written only after the wave's rejects are
durable, so a wave is recorded only when every one of its events is sent, dropped or in the
rejects:

- the resume manifest: which input partitions (event type × date= hour) a wave completed, one
  small JSON file per wave (read by `--resume`);
- the per-file record: which input files a wave delivered, with their size and modification
  stamp, one small JSON Lines segment per wave (read by `--since_last_run`, pipeline/ledger.py),
  written by the launcher as a pending object and committed here by renaming it.

A manifest names the input it was written for (the run's identity), so --resume ignores
manifests of other inputs. A wave stopped by SIGINT/SIGTERM left events unsent: it records
neither.
"""
import json
from typing import Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.packing import PackedList
from transforms.progress import LiveChannel

class WriteManifestFn(beam.DoFn):
    """Runs once, after the rejects are written (its input is their count)."""

    def __init__(self, path: str, run_id: str, partitions: Iterable[str], files: int,
                 input_id: str = '', live: LiveChannel = LiveChannel()):
        self.path = path
        self.body = {'run_id': run_id, 'input': input_id, 'files': files}
        self.partitions = PackedList(sorted(set(partitions)))   # small in the job graph
        self.live = live

    def process(self, rejects_files_written):
        if self.live.stop().is_set():   # a stopped wave left events unsent: not completed
            return []
        with FileSystems.create(self.path, mime_type='application/json') as f:
            f.write(json.dumps(dict(self.body, partitions=list(self.partitions),
                                    rejects_files=rejects_files_written),
                               indent=1).encode('utf-8'))
        return []


class CommitDeliveredFn(beam.DoFn):
    """Runs once, after the rejects are written: commits the wave's per-file record.

    The launcher writes the record beforehand as a pending object (pipeline/ledger.py); this
    step only renames it into place, so the job graph carries two paths, not one entry per file
    (~0.5 MB for a month's 20,000 files, pickled and unpickled again by every worker). A retried
    step finds the record already committed and is done.
    """

    def __init__(self, pending: str, path: str, live: LiveChannel = LiveChannel()):
        self.pending = pending
        self.path = path
        self.live = live

    def process(self, rejects_files_written):
        if self.live.stop().is_set():   # a stopped wave left events unsent: not delivered
            return []
        try:
            FileSystems.rename([self.pending], [self.path])
        except Exception:
            if FileSystems.exists(self.pending) or not FileSystems.exists(self.path):
                raise
        return []
