"""Which files a run reads, decided in the launcher from the layout, not from a full listing.

A bucket only grows, so the launcher lists what the run's range holds (transforms/listing.py:
the `event_type=` folders it reads, only their `date=` hours in range) and decides from paths
alone: no file is opened here. A small run is listed here whole, so it can be planned, pruned,
resumed and cut into waves by volume; a run on a runner whose workers are other machines, or
one whose range holds more than BUDGET files, is handed to the workers as units instead
(transforms/expand.py), so the launcher's memory and the job graph do not grow with the file
count.
"""
import datetime
import os
import threading
from collections import Counter
from typing import Callable, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline.paths import FileSelector, UsageError, is_glob, partition_of
from transforms import listing as stores
from transforms.layout import hour_from_path
from transforms.listing import Entry, Unit
from pipeline.walk import take_ahead

OBJECT_STORES = stores.SCHEMES
BUDGET = stores.LAUNCHER_BUDGET

ListedFile = Tuple[str, Optional[str], int]     # (path, event type if the path says, bytes)


def _store_root(input_path: str) -> str:
    """The part of an object-store URL above any key: gs://B, s3://B or azfs://ACCOUNT/C."""
    scheme, rest = input_path.split('://', 1)
    depth = 2 if scheme == 'azfs' else 1
    return f'{scheme}://' + '/'.join(rest.split('/')[:depth])


class Input(NamedTuple):
    """--input as a run reads it: a 'folder' (a prefix, ending in '/'), one 'file', or a
    'glob' pattern."""
    kind: str
    path: str


def resolve_input(input_path: str, options=None) -> Input:
    """A local path that exists is taken literally (a folder named `exp [prod]` included), a
    glob only when no such path exists. On object stores `*`, `?` and `[` make a glob, and a
    path that is not one object is the prefix `path/` (never `path-old/`)."""
    if '://' not in input_path:
        if os.path.isdir(input_path):
            return Input('folder', input_path.rstrip('/') + '/')
        if os.path.exists(input_path) or not is_glob(input_path):
            return Input('file', input_path)
        return Input('glob', input_path)
    if is_glob(input_path):
        return Input('glob', input_path)   # keys hold no such characters in Currents' layout
    if input_path.endswith('/') or input_path.rstrip('/') == _store_root(input_path):
        return Input('folder', input_path.rstrip('/') + '/')
    try:
        first = stores.store_for(input_path, options=options).first_under(input_path)
        exact = first is not None and first[0] == input_path
    except Exception as exc:   # noqa: BLE001 - the store's own errors, as one line
        if not _not_found(exc):
            raise UsageError(f'cannot list --input {input_path}: {_short(exc)}') from None
        exact = []
    return Input('file' if exact else 'folder', input_path if exact else input_path + '/')


def input_pattern(input_path: str) -> str:
    """What a run lists for --input, as a Beam match pattern (`folder/**` for a folder)."""
    found = resolve_input(input_path)
    return found.path + '**' if found.kind == 'folder' else found.path


def _not_found(exc: BaseException) -> bool:
    """Beam 2.77's Azure filesystem raises (code 404) where the others say "does not exist"."""
    if getattr(exc, 'code', None) == 404 or getattr(exc, 'status_code', None) == 404:
        return True
    name = type(exc).__name__
    if name in ('NotFound', 'NoSuchBucket', 'ResourceNotFoundError'):
        return True
    details = getattr(exc, 'exception_details', None) or {}
    return any(isinstance(e, BaseException) and _not_found(e) for e in details.values())


def _short(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {(str(exc).splitlines() or [""])[0][:200]}'


class Listing(NamedTuple):
    """What --input holds for this run: files to read and, by reason, files skipped unopened;
    or, for a range the workers list, the units they list (`units` set, `files` empty)."""
    files: List[ListedFile]
    skipped: Dict[str, int]
    # path -> (bytes, modification stamp) of the files to read, for the per-file record
    stamps: Optional[Dict[str, Tuple[int, float]]] = None
    units: Optional[List[Unit]] = None
    requests: int = 0            # LIST requests (folders read, locally) the listing made
    objects: int = 0             # objects they returned
    types_skipped: Tuple[str, ...] = ()   # type folders the run does not read, never listed
    sample: Optional[List[ListedFile]] = None   # what was listed before handing over
    newest_hour: Optional[datetime.datetime] = None   # the newest date= hour listed

    @property
    def on_workers(self) -> bool:
        return self.units is not None


DELIVERED = 'delivered_by_earlier_run'
DONE = 'skip_done'


class Skip(NamedTuple):
    """What earlier runs did that this one skips: completed partitions (--resume manifests)
    and a per-file record predicate, each counted under its reason."""
    partitions: FrozenSet[str] = frozenset()
    recorded: Optional[Callable[[str, int, float], bool]] = None
    reason: str = DONE


class _OverBudget(Exception):
    pass


def list_input(input_path: str, selector: FileSelector, skip: Skip = Skip(), options=None,
               on_workers: bool = False, budget: int = BUDGET) -> Listing:
    """Lists --input for a run: here, or (on_workers, or past `budget` files) as units."""
    found = resolve_input(input_path, options)
    counter = stores.Counter()
    try:
        if found.kind != 'folder':
            entries = _match(found.path)
            return decide(entries, selector, skip, counter)
        store = stores.store_for(found.path, counter, options)
        ahead = None if on_workers or '://' in found.path else take_ahead(found.path, selector)
        if ahead is not None and not ahead.over_budget:
            counter.add(ahead.requests, ahead.objects)
            listing = decide(ahead.entries, selector, skip, counter)
            return listing._replace(types_skipped=tuple(sorted(set(ahead.types_skipped))))
        layout, units = stores.plan_units(store, found.path, selector)
        if on_workers:
            return _for_workers(stores.by_hours(store, units), layout, counter)
        if ahead is not None:   # the walk ahead passed the budget: the workers list
            return _for_workers(stores.by_hours(store, units), layout, counter,
                                sample=ahead.entries)
        entries = list(layout.files)
        try:
            _list_units(store, units, entries, budget)
        except _OverBudget:
            return _for_workers(stores.by_hours(store, units), layout, counter, sample=entries)
        listing = decide(entries, selector, skip, counter)
        return listing._replace(types_skipped=tuple(sorted(set(layout.types_skipped))))
    except UsageError:
        raise
    except Exception as exc:  # the store's own errors (BeamIOError carries per-pattern details)
        raise UsageError(f'cannot list --input {input_path}: {_short(exc)}') from None


def _for_workers(units, layout, counter, sample=None) -> Listing:
    """Units the workers list: 'hours' units cut into months (they list them in parallel),
    the files found on the way as 'file' units."""
    files = [Unit('file', path, event_type=None, size=size, stamp=stamp)
             for path, size, stamp in layout.files]
    units = [piece for unit in units for piece in stores.split_unit(unit, stores.UNIT_DAYS)]
    return Listing([], {}, {}, units=units + files, requests=counter.requests,
                   objects=counter.objects, types_skipped=tuple(sorted(set(layout.types_skipped))),
                   sample=[(p, None, s) for p, s, _ in sample] if sample else None)


def _list_units(store, units: List[Unit], entries: List[Entry], budget: int) -> None:
    """Lists the units (a few at a time on object stores) into `entries`, up to `budget`."""
    lock = threading.Lock()

    def one(unit: Unit) -> None:
        for entry in stores.list_unit(store, unit):
            with lock:
                if len(entries) >= budget:
                    raise _OverBudget()
                entries.append(entry)

    stores.apply_to_units(units, one, 1 if isinstance(store, stores.LocalStore) else 8)


def _match(pattern: str) -> List[Entry]:
    """A glob or one file, listed by Beam's filesystems (a glob is matched whole). An existing
    local file is asked for by name: its path may hold `[`, `*` or `?`."""
    if '://' not in pattern and os.path.isfile(pattern):
        found = [FileSystems.get_filesystem(pattern).metadata(pattern)]
    else:
        found = FileSystems.match([pattern])[0].metadata_list
    return [(m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in found]


def decide(entries: List[Entry], selector: FileSelector, skip: Skip = Skip(),
           counter: Optional[stores.Counter] = None) -> Listing:
    """Decides each listed object from its path: read it, or skip it (counted by reason)."""
    files, skipped, stamps, newest = [], Counter(), {}, None
    for path, size, stamp in sorted(set(entries)):   # by path: each path once
        if path.endswith('/'):
            continue  # a "folder" placeholder object (GCS/S3 consoles), not a file
        hour = hour_from_path(path)
        if hour is not None and (newest is None or hour > newest):
            newest = hour
        decision = selector.decide(path)
        if decision.action.startswith('skip_'):
            skipped[decision.action] += 1
        elif skip.partitions and partition_key(path) in skip.partitions:
            skipped[DONE] += 1
        elif skip.recorded is not None and skip.recorded(path, size, stamp):
            skipped[skip.reason] += 1
        else:
            files.append((path, decision.event_type, size))
            stamps[path] = (size, stamp)
    counter = counter or stores.Counter()
    return Listing(files, dict(skipped), stamps, requests=counter.requests,
                   objects=counter.objects, newest_hour=newest)


def list_currents_files(pattern: str, selector: FileSelector,
                        done_partitions: FrozenSet[str] = frozenset(),
                        delivered: Optional[Callable[[str, int, float], bool]] = None) -> Listing:
    """The files of a match pattern (`input_pattern`'s), listed and decided in the launcher."""
    input_path = pattern[:-2] if pattern.endswith('/**') else pattern
    return list_input(input_path, selector, Skip(done_partitions, delivered,
                                                 DELIVERED if delivered else DONE),
                      budget=1 << 62)


def partition_key(path: str) -> str:
    """`event_type/date-hour` where the path has both, else the file itself (for resume)."""
    return partition_of(path) or path


def undated(files: List[ListedFile]) -> int:
    return sum(1 for path, _, _ in files if hour_from_path(path) is None)
