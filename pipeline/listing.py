"""Listing --input once in the launcher: which files a run reads, decided from their paths alone."""
import os
from collections import Counter
from typing import Callable, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline.paths import FileSelector, UsageError, is_glob, partition_of
from pipeline.walk import take_ahead, walk_folder


OBJECT_STORES = ('gs://', 's3://', 'azfs://')


def _store_root(input_path: str) -> str:
    """The part of an object-store URL above any key: gs://B, s3://B or azfs://ACCOUNT/C."""
    scheme, rest = input_path.split('://', 1)
    depth = 2 if scheme == 'azfs' else 1
    return f'{scheme}://' + '/'.join(rest.split('/')[:depth])


def input_pattern(input_path: str) -> str:
    """A match pattern for --input: a glob as given, a file as is, a folder read recursively.

    The same on every store: in gs://, s3:// and azfs:// a "folder" is a key prefix, so a path
    that is not one object is read as the prefix `path/` (never `path-old/`).
    """
    if is_glob(input_path):
        return input_path
    if not input_path.startswith(OBJECT_STORES):
        if os.path.isdir(input_path):
            return input_path.rstrip('/') + '/**'
        return input_path
    if input_path.endswith('/') or input_path.rstrip('/') == _store_root(input_path):
        return input_path.rstrip('/') + '/**'  # a prefix, or the whole bucket / container
    try:
        found = FileSystems.match([input_path], limits=[1])[0].metadata_list
    except Exception as exc:  # BeamIOError carries per-pattern details
        if not _not_found(exc):
            raise UsageError(f'cannot list --input {input_path}: {type(exc).__name__}: '
                             f'{str(exc).splitlines()[0][:200]}') from None
        found = []
    if found and found[0].path == input_path:
        return input_path
    return input_path + '/**'


def _not_found(exc: BaseException) -> bool:
    """Beam 2.77's Azure filesystem raises (code 404) where the others say "does not exist"."""
    if getattr(exc, 'code', None) == 404:
        return True
    details = getattr(exc, 'exception_details', None) or {}
    return any(isinstance(e, BaseException) and _not_found(e) for e in details.values())


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
    """Lists the pattern once (Beam's filesystems: local, gs://, s3:// or azfs://),
    deciding from paths alone.

    Listing in the launcher lets a run plan, prune, resume and split into waves before any
    worker starts; no file is opened here.
    """
    try:
        folder = _local_folder(pattern)
        found = (local_entries(folder) if folder is not None
                 else [(m.path, m.size_in_bytes, m.last_updated_in_seconds)
                       for m in FileSystems.match([pattern])[0].metadata_list])
    except Exception as exc:  # BeamIOError carries per-pattern details
        raise UsageError(f'cannot list --input {pattern}: {type(exc).__name__}: '
                         f'{str(exc).splitlines()[0][:200]}') from None
    files, skipped, stamps = [], Counter(), {}
    for path, size, stamp in sorted(found):   # by path: paths are unique
        if path.endswith('/'):
            continue  # a "folder" placeholder object (GCS/S3 consoles), not a file
        decision = selector.decide(path)
        if decision.action.startswith('skip_'):
            skipped[decision.action] += 1
        elif done_partitions and partition_key(path) in done_partitions:
            skipped['skip_done'] += 1
        elif delivered and delivered(path, size, stamp):
            skipped[DELIVERED] += 1
        else:
            files.append((path, decision.event_type, size))
            stamps[path] = (size, stamp)
    return Listing(files, dict(skipped), stamps)


def _local_folder(pattern: str) -> Optional[str]:
    """The folder of a local `folder/**` pattern (what input_pattern makes of a folder)."""
    if '://' in pattern or not pattern.endswith('/**') or is_glob(pattern[:-3]):
        return None
    return pattern[:-3] if os.path.isdir(pattern[:-3]) else None


def local_entries(folder: str) -> List[Tuple[str, int, float]]:
    """(path, bytes, modification time) of every file under a local folder, as Beam's local
    filesystem lists `folder/**` (pipeline/walk.py): the walk the command started ahead for
    this folder, else a new one."""
    entries = take_ahead(folder)
    return walk_folder(folder) if entries is None else entries


def partition_key(path: str) -> str:
    """`event_type/date-hour` where the path has both, else the file itself (for resume)."""
    return partition_of(path) or path
