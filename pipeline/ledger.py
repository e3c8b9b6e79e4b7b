"""The per-file record in the launcher: folding the workers' pieces into hours, and the window.

The workers append done files to the record in small pieces as they go (transforms/records.py,
transforms/completion.py). At the end of each wave, and before a run that reads the record,
the launcher folds every piece into one object per `date=` hour (written first, then the pieces
deleted, so a crash in between leaves both, which read the same) and merges an hour's objects
once there are more than COMPACT_AFTER of them (a run every five minutes adds one to the
current hour each time). A run that reads the record thus reads one object or a few per hour
of its range, however long the history.

`--since_last_run` keeps one more object, `window.json`: the oldest hour the next run must look
at again (docs/incremental.md).
"""
import datetime
import json
import logging
import uuid
from typing import Dict, List, NamedTuple, Optional

from apache_beam.io.filesystems import FileSystems

from transforms.layout import UNDATED, hour_key
from transforms.listing import Counter, Store, object_exists, store_for
from transforms.records import (Records, hours_dir, list_pieces, parse_lines, read_object,
                                record_lines, records_dir, write_whole)

COMPACT_AFTER = 8       # objects in one hour folder before they are merged into one
WINDOW = 'window.json'
log = logging.getLogger(__name__)


class Folded(NamedTuple):
    pieces: int = 0
    hours: int = 0
    files: int = 0


def _name(tag: str) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')
    return f'{tag}-{stamp}-{uuid.uuid4().hex[:8]}.jsonl'


def _delete(paths: List[str]) -> None:
    """Deletes what was folded; what cannot be deleted is read again next time (the same
    entries: harmless)."""
    if not paths:
        return
    try:
        FileSystems.delete(paths)
    except Exception as exc:  # noqa: BLE001 - e.g. another run folded it first
        log.warning('could not delete %d folded record objects: %s', len(paths),
                    str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)


def fold_pieces(rejects: str, store: Optional[Store] = None) -> Folded:
    """Every piece not folded yet into the hour folders of its files; the pieces deleted."""
    store = store or store_for(rejects)
    pieces = list_pieces(store, rejects)
    if not pieces:
        return Folded()
    by_hour: Dict[str, list] = {}
    for path in pieces:
        entries, _ = parse_lines(read_object(path))
        for entry in entries:
            by_hour.setdefault(hour_key(entry[0]), []).append(entry)
    base = hours_dir(rejects)
    for hour, entries in sorted(by_hour.items()):
        write_whole(f'{base}/{hour}/{_name("r")}', record_lines(sorted(set(entries))))
    _delete(pieces)
    return Folded(len(pieces), len(by_hour), sum(len(v) for v in by_hour.values()))


def compact_hours(rejects: str, records: Records, after: int = COMPACT_AFTER) -> int:
    """Merges the objects of each hour that has more than `after` of them; how many hours."""
    merged = 0
    base = hours_dir(rejects)
    for hour, objects in records.hour_objects.items():
        if len(objects) <= after:
            continue
        entries = sorted((path, size, stamp) for path, (size, stamp) in records.files.items()
                         if hour_key(path) == hour)
        path = f'{base}/{hour}/{_name("c")}'
        write_whole(path, record_lines(entries))
        _delete(objects)
        records.hour_objects[hour] = [path]
        merged += 1
    return merged


def window_path(rejects: str) -> str:
    return f'{records_dir(rejects)}/{WINDOW}'


def read_window(rejects: str) -> Optional[datetime.datetime]:
    """The first hour `--since_last_run` must look at again, if a run recorded one."""
    path = window_path(rejects)
    try:
        if not object_exists(path):
            return None
        body = json.loads(read_object(path).decode('utf-8'))
        return datetime.datetime.strptime(body['from'], '%Y-%m-%d-%H')
    except (ValueError, KeyError, TypeError) as exc:
        log.warning('ignoring %s (%s): the next run looks at the whole input', path, exc)
        return None


def load_window_records(rejects: str, start: Optional[datetime.datetime],
                        end: Optional[datetime.datetime], counter: Optional[Counter] = None,
                        compact: bool = True) -> Records:
    """Folds the pieces left by earlier runs, then reads the record of [start, end) (every
    hour when either is None), merging hours that hold many objects."""
    from transforms.records import load_records
    store = store_for(rejects, counter)
    fold_pieces(rejects, store)
    bounded = start is not None and end is not None
    records = load_records(rejects, start if bounded else None, end if bounded else None,
                           store=store, pieces=False)
    if compact:
        compact_hours(rejects, records)
    return records


def is_undated(hour: str) -> bool:
    return hour == UNDATED
