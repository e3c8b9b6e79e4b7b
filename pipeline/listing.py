"""Listing --input once in the launcher: which files a run reads, decided from their paths alone."""
import os
from collections import Counter
from typing import Callable, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline.paths import FileSelector, UsageError, is_glob, partition_of


def input_pattern(input_path: str) -> str:
    """A match pattern for --input: a glob as given, a file as is, a folder read recursively."""
    if is_glob(input_path):
        return input_path
    if not input_path.startswith('gs://'):
        if os.path.isdir(input_path):
            return input_path.rstrip('/') + '/**'
        return input_path
    if input_path.endswith('/') or '/' not in input_path[len('gs://'):]:
        return input_path.rstrip('/') + '/**'  # a prefix, or the whole bucket
    try:
        found = FileSystems.match([input_path], limits=[1])[0].metadata_list
    except Exception as exc:  # BeamIOError carries per-pattern details
        raise UsageError(f'cannot list --input {input_path}: {type(exc).__name__}: '
                         f'{str(exc).splitlines()[0][:200]}') from None
    if found and found[0].path == input_path:
        return input_path
    return input_path + '/**'


class Listing(NamedTuple):
    """What --input holds for this run: files to read and, by reason, files skipped unopened."""
    files: List[Tuple[str, Optional[str], int]]     # (path, event type if the path says, bytes)
    skipped: Dict[str, int]
    # path -> (bytes, modification stamp) of the files to read, for the per-file record
    stamps: Optional[Dict[str, Tuple[int, float]]] = None


DELIVERED = 'delivered_by_earlier_run'


def list_currents_files(pattern: str, selector: FileSelector,
                        done_partitions: FrozenSet[str] = frozenset(),
                        delivered: Optional[Callable[[str, int, float], bool]] = None) -> Listing:
    """Lists the pattern once (Beam's filesystems, local or gs://), deciding from paths alone.

    Listing in the launcher lets a run plan, prune, resume and split into waves before any
    worker starts; no file is opened here.
    """
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # BeamIOError carries per-pattern details
        raise UsageError(f'cannot list --input {pattern}: {type(exc).__name__}: '
                         f'{str(exc).splitlines()[0][:200]}') from None
    files, skipped, stamps = [], Counter(), {}
    for metadata in sorted(found, key=lambda m: m.path):
        path = metadata.path
        if path.endswith('/'):
            continue  # a GCS "folder" placeholder object, not a file
        decision = selector.decide(path)
        if decision.action.startswith('skip_'):
            skipped[decision.action] += 1
        elif done_partitions and partition_key(path) in done_partitions:
            skipped['skip_done'] += 1
        elif delivered and delivered(path, metadata.size_in_bytes,
                                     metadata.last_updated_in_seconds):
            skipped[DELIVERED] += 1
        else:
            files.append((path, decision.event_type, metadata.size_in_bytes))
            stamps[path] = (metadata.size_in_bytes, metadata.last_updated_in_seconds)
    return Listing(files, dict(skipped), stamps)


def partition_key(path: str) -> str:
    """`event_type/date-hour` where the path has both, else the file itself (for resume)."""
    return partition_of(path) or path
