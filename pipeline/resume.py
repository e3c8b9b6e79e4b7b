"""Reading the resume manifests that earlier runs' last steps wrote (transforms/manifest.py).

A manifest carries the identity of the run that wrote it (its input); one written for another
input, or not shaped as this tool writes them, is ignored with a line instead of trusted.
"""
import json
import os
import sys
from typing import FrozenSet

from apache_beam.io.filesystems import FileSystems

MANIFEST_DIR = 'manifest'


def manifest_dir(rejects: str) -> str:
    return FileSystems.join(rejects, MANIFEST_DIR)


def input_identity(input_path: str) -> str:
    """--input as recorded in manifests and rejects: an absolute path for local input."""
    if '://' in input_path:
        return input_path.rstrip('/') or input_path
    return os.path.abspath(input_path)


def completed_partitions(rejects: str, input_path: str = None, err=None) -> FrozenSet[str]:
    """Every partition recorded as completed by earlier runs over the same input."""
    err = err or sys.stderr
    wanted = input_identity(input_path) if input_path is not None else None
    pattern = FileSystems.join(manifest_dir(rejects), 'wave-*.json')
    done = set()
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        name = metadata.path.rsplit('/', 1)[-1]
        try:
            with FileSystems.open(metadata.path) as f:
                body = json.loads(f.read(1_000_001).decode('utf-8'))
            partitions = body['partitions']
            recorded = body.get('input')
            if not isinstance(partitions, list) or not all(isinstance(p, str)
                                                           for p in partitions):
                raise ValueError('partitions is not a list of names')
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            print(f'resume: ignoring manifest {name}: not one this tool wrote ({exc})', file=err)
            continue
        if wanted is not None and recorded != wanted:
            print(f'resume: ignoring manifest {name}: written for input {recorded!r}, '
                  f'not this run\'s {wanted!r}', file=err)
            continue
        done.update(partitions)
    return frozenset(done)
