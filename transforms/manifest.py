"""The resume manifest: which input partitions (event type × date= hour) a run completed.

Kept next to the rejects (local or gs://), one small JSON file per completed wave, written by the
pipeline itself as its last step — only after the wave's rejects are durable — so a wave is
recorded only when every one of its events is sent, dropped or in the rejects.
"""
import json
from typing import FrozenSet, Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

MANIFEST_DIR = 'manifest'


def manifest_dir(rejects: str) -> str:
    return FileSystems.join(rejects, MANIFEST_DIR)


def completed_partitions(rejects: str) -> FrozenSet[str]:
    """Every partition recorded as completed by earlier runs writing to these rejects."""
    pattern = FileSystems.join(manifest_dir(rejects), 'wave-*.json')
    done = set()
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(metadata.path) as f:
            done.update(json.loads(f.read().decode('utf-8'))['partitions'])
    return frozenset(done)


class WriteManifestFn(beam.DoFn):
    """Runs once, after the rejects are written (its input is their count)."""

    def __init__(self, path: str, run_id: str, partitions: Iterable[str], files: int):
        self.path = path
        self.body = {'run_id': run_id, 'files': files, 'partitions': sorted(set(partitions))}

    def process(self, rejects_files_written):
        with FileSystems.create(self.path, mime_type='application/json') as f:
            f.write(json.dumps(dict(self.body, rejects_files=rejects_files_written),
                               indent=1).encode('utf-8'))
        return []
