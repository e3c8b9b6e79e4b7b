"""Reading the resume manifests that earlier runs' last steps wrote (transforms/manifest.py)."""
import json
from typing import FrozenSet

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
