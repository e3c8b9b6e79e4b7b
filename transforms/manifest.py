"""The resume manifest: which input partitions (event type × date= hour) a run completed.

Kept next to the rejects (local or gs://), one small JSON file per completed wave, written by the
pipeline itself as its last step — only after the wave's rejects are durable — so a wave is
recorded only when every one of its events is sent, dropped or in the rejects. It names the
input it was written for (the run's identity), so --resume ignores manifests of other inputs.
"""
import json
from typing import Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.progress import LiveChannel


class WriteManifestFn(beam.DoFn):
    """Runs once, after the rejects are written (its input is their count)."""

    def __init__(self, path: str, run_id: str, partitions: Iterable[str], files: int,
                 input_id: str = '', live: LiveChannel = LiveChannel()):
        self.path = path
        self.body = {'run_id': run_id, 'input': input_id, 'files': files,
                     'partitions': sorted(set(partitions))}
        self.live = live

    def process(self, rejects_files_written):
        if self.live.stop().is_set():   # a stopped wave left events unsent: not completed
            return []
        with FileSystems.create(self.path, mime_type='application/json') as f:
            f.write(json.dumps(dict(self.body, rejects_files=rejects_files_written),
                               indent=1).encode('utf-8'))
        return []
