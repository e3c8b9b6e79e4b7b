"""List this range on this store: the one place that knows how each store lists a Currents export.

A bucket only grows (Braze never deletes Currents files), so a run must list what its range
holds, not the bucket's history. Currents keys sort as `.../event_type=T/date=YYYY-MM-DD-HH/...`:
per event type a time range is one contiguous run of keys. So the listing

- walks the top of the input with delimiter listings (folders, not objects) until it reaches the
  `event_type=` folders; a type the run does not read is never listed below its folder name;
- lists, per type folder, only the keys of the range's `date=` hours: Cloud Storage with
  `startOffset`/`endOffset`, S3 with `StartAfter` (stopping at the end key), Azure Blob Storage by
  day prefixes (it has neither), a local folder by reading only the matching `date=` folders;
- lists everything below a `date=` folder in range, below a folder `MAX_DEPTH` levels down, and
  the whole type folder of a run without a range.

Inside an `event_type=` folder a ranged run lists only its valid `date=` hours: a file elsewhere in a
type folder (Braze writes none there) is read by runs without a range. Files in trees without
`event_type=` folders are listed as they are (nothing to prune on) and read whatever the range.

The work comes as `Unit`s, listed by the launcher for small runs and by the workers for large
ones (pipeline/listing.py decides). Every store counts its LIST requests, so `--plan` and the
progress lines can say what the listing cost. The clients are the ones Beam's own filesystems use
(google-cloud-storage, boto3, azure-storage-blob), made with the same settings; their modules are
imported only when a store of theirs is listed (this module imports nothing from Beam at the top:
the walk started ahead of the launcher's imports uses it).
"""
import datetime
import os
import threading
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from transforms.layout import (DATE_FOLDER, DAY, HOUR, TYPE_FOLDER, FileSelector, day_names,
                               folder_hour, hour_from_path, hour_name, name_prefixes, range_cap)

Entry = Tuple[str, int, float]   # path, bytes, modification stamp (as Beam's FileMetadata)
MAX_DEPTH = 4    # folder levels walked with delimiter listings below --input before listing flat
# Files the launcher lists itself before it hands a range to the workers instead: ~0.35 KB of
# launcher memory each (a month of a 34-type export is ~22,000 files).
LAUNCHER_BUDGET = 200_000
UNIT_DAYS = 31   # an 'hours' unit the workers list covers at most this many days
SCHEMES = ('gs://', 's3://', 'azfs://')


class Unit(NamedTuple):
    """A piece of the input listed as one.

    kind 'hours': the `date=` hours [start, end) of the type folder `path`; kind 'all': every
    object under the folder `path`; kind 'file': the object `path` itself, listed already
    (`size`, `stamp`).
    """
    kind: str
    path: str
    start: Optional[datetime.datetime] = None
    end: Optional[datetime.datetime] = None
    event_type: Optional[str] = None
    size: int = 0
    stamp: float = 0.0

    def describe(self) -> str:
        if self.kind == 'hours':
            return f'{self.path} {hour_name(self.start)} .. {hour_name(self.end)}'
        return self.path


class Counter:
    """LIST requests and objects listed, counted across threads."""

    def __init__(self):
        self.requests = 0
        self.objects = 0
        self._lock = threading.Lock()

    def add(self, requests: int = 0, objects: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.objects += objects


class Store:
    """One store's listing. Paths are full (`gs://b/k`, `/abs/folder/file`); folders end in '/'."""

    def __init__(self, counter: Optional[Counter] = None):
        self.counter = counter or Counter()

    def children(self, folder: str) -> Tuple[List[Entry], List[str]]:
        """The objects directly in `folder` and its subfolders (one delimiter listing)."""
        raise NotImplementedError

    def under(self, prefix: str) -> Iterator[Entry]:
        """Every object whose path starts with `prefix` (a folder or a name prefix)."""
        raise NotImplementedError

    def hours(self, type_folder: str, start: datetime.datetime, end: datetime.datetime,
              marker: str = DATE_FOLDER) -> Iterator[Entry]:
        """The objects in the hour folders (`<marker>YYYY-MM-DD-HH/`) of [start, end), and
        possibly a few more, which the caller filters out: by year, month and day prefixes,
        where a store has no key offsets."""
        for prefix in name_prefixes(start, end):
            yield from self.under(f'{type_folder}{marker}{prefix}')

    def first_hour(self, type_folder: str) -> Optional[datetime.datetime]:
        """The earliest `date=` hour under a type folder, from its first key (one request)."""
        raise NotImplementedError

    def first_under(self, prefix: str) -> Optional[Entry]:
        """The first object whose path starts with `prefix` (one request of one result): the
        object named `prefix` itself if there is one, as keys sort."""
        raise NotImplementedError

    def under_range(self, prefix: str, first: str, end: str) -> Iterator[Entry]:
        """Objects under `prefix` whose paths sort in [first, end): stores with key offsets."""
        raise NotImplementedError

    def _key_range_hours(self, type_folder: str, start: datetime.datetime,
                         end: datetime.datetime, marker: str) -> Iterator[Entry]:
        """`hours` for a store with key offsets: one run of keys.

        A folder named by its day only (`date=YYYY-MM-DD/`, hour 00) sorts after every hour
        folder of its day, so when the range takes its hour 00 but ends inside that day it is
        listed on its own (a second request)."""
        base = f'{type_folder}{marker}'
        yield from self.under_range(base, base + hour_name(start), base + hour_name(end))
        last_day = (end - HOUR).replace(hour=0)
        if start <= last_day < end < last_day + DAY:
            yield from self.under(f'{base}{last_day:%Y-%m-%d}/')


def _join(folder: str, name: str) -> str:
    return folder + name if folder.endswith('/') else f'{folder}/{name}'


# ---------------------------------------------------------------------------------- local
class LocalStore(Store):
    """A local folder, as Beam's local filesystem lists `folder/**`: symlinked folders are not
    entered, files that vanish or cannot be stat'ed are left out. A folder read counts as one
    request."""

    def children(self, folder: str) -> Tuple[List[Entry], List[str]]:
        files, folders = [], []
        self._scan(folder.rstrip('/') or '/', folders, files)
        return files, [f + '/' for f in folders]

    def _scan(self, folder: str, folders: List[str], files: List[Entry]) -> None:
        self.counter.add(1)
        try:
            entries = os.scandir(folder)
        except OSError:
            return   # as os.walk: an unreadable folder is skipped
        found = 0
        with entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if not entry.is_symlink():
                        folders.append(entry.path)
                    continue
                try:
                    stat = entry.stat()
                except OSError:
                    continue
                files.append((entry.path, stat.st_size, stat.st_mtime))
                found += 1
        self.counter.add(0, found)

    def walk(self, folders: Sequence[str]) -> List[Entry]:
        """Every file under these folders."""
        stack, files = [f.rstrip('/') or '/' for f in folders], []
        while stack:
            self._scan(stack.pop(), stack, files)
        return files

    def under(self, prefix: str) -> Iterator[Entry]:
        if prefix.endswith('/'):
            yield from self.walk([prefix])
            return
        parent, _, name = prefix.rpartition('/')
        files, folders = self.children(parent + '/')
        yield from (f for f in files if f[0].rsplit('/', 1)[-1].startswith(name))
        yield from self.walk([f for f in folders if f.rstrip('/').rsplit('/', 1)[-1]
                              .startswith(name)])

    def first_under(self, prefix):
        if os.path.isfile(prefix):
            stat = os.stat(prefix)
            return prefix, stat.st_size, stat.st_mtime
        return next(iter(self.under(prefix)), None)

    def _date_folders(self, type_folder: str,
                      marker: str = DATE_FOLDER) -> List[Tuple[datetime.datetime, str]]:
        """(hour, folder) of the type folder's valid hour folders (names only, no stat)."""
        self.counter.add(1)
        try:
            with os.scandir(type_folder) as entries:
                names = [e.name for e in entries if e.name.startswith(marker)]
        except OSError:
            return []
        found = [(folder_hour(n[len(marker):]), _join(type_folder, n)) for n in names]
        return [(hour, path) for hour, path in found if hour is not None]

    def hours(self, type_folder, start, end, marker=DATE_FOLDER):
        yield from self.walk([path for hour, path in self._date_folders(type_folder, marker)
                              if start <= hour < end])

    def first_hour(self, type_folder):
        hours = [hour for hour, _ in self._date_folders(type_folder)]
        return min(hours) if hours else None


# --------------------------------------------------------------------------- Cloud Storage
class GcsStore(Store):
    """gs:// with the google-cloud-storage client Beam's GCS filesystem makes."""

    def __init__(self, client, counter: Optional[Counter] = None):
        super().__init__(counter)
        self.client = client

    @staticmethod
    def _split(path: str) -> Tuple[str, str]:
        bucket, _, key = path[len('gs://'):].partition('/')
        return bucket, key

    def _pages(self, path: str, **kwargs):
        bucket, key = self._split(path)
        blobs = self.client.list_blobs(bucket, prefix=key, **kwargs)
        for page in blobs.pages:
            self.counter.add(1, page.num_items)
            yield bucket, page

    def _entries(self, bucket, page) -> List[Entry]:
        from apache_beam.io.gcp.gcsio import GcsIO
        return [(f'gs://{bucket}/{blob.name}', blob.size or 0,
                 GcsIO._updated_to_seconds(blob.updated)) for blob in page
                if not blob.name.endswith('/')]

    def children(self, folder):
        files, folders = [], []
        for bucket, page in self._pages(folder, delimiter='/'):
            files += self._entries(bucket, page)
            folders += [f'gs://{bucket}/{p}' for p in page.prefixes]
        return files, sorted(set(folders))

    def under(self, prefix):
        for bucket, page in self._pages(prefix):
            yield from self._entries(bucket, page)

    def first_under(self, prefix):
        for bucket, page in self._pages(prefix, max_results=1):
            return next(iter(self._entries(bucket, page)), None)
        return None

    def under_range(self, prefix, first, end):
        for bucket, page in self._pages(prefix, start_offset=self._split(first)[1],
                                        end_offset=self._split(end)[1]):
            yield from self._entries(bucket, page)

    def hours(self, type_folder, start, end, marker=DATE_FOLDER):
        yield from self._key_range_hours(type_folder, start, end, marker)

    def first_hour(self, type_folder):
        bucket, key = self._split(type_folder)
        blobs = self.client.list_blobs(bucket, prefix=key + DATE_FOLDER, max_results=1)
        self.counter.add(1)
        for blob in blobs:
            return hour_from_path(blob.name)
        return None


# ------------------------------------------------------------------------------------- S3
class S3Store(Store):
    """s3:// with a boto3 client made as Beam's S3 filesystem makes it."""

    def __init__(self, client, counter: Optional[Counter] = None):
        super().__init__(counter)
        self.client = client

    @staticmethod
    def _split(path: str) -> Tuple[str, str]:
        bucket, _, key = path[len('s3://'):].partition('/')
        return bucket, key

    def _pages(self, path: str, **kwargs):
        bucket, key = self._split(path)
        paginator = self.client.get_paginator('list_objects_v2')
        for page in paginator.paginate(Bucket=bucket, Prefix=key, **kwargs):
            self.counter.add(1, page.get('KeyCount', 0))
            yield bucket, page

    @staticmethod
    def _entries(bucket, page, end_key: Optional[str] = None) -> Tuple[List[Entry], bool]:
        """The page's objects before `end_key`, and whether the end was reached."""
        from apache_beam.io.aws.s3io import S3IO
        found = []
        for item in page.get('Contents', ()):
            if end_key is not None and item['Key'] >= end_key:
                return found, True
            if not item['Key'].endswith('/'):
                found.append((f's3://{bucket}/{item["Key"]}', item['Size'],
                              S3IO._updated_to_seconds(item['LastModified'])))
        return found, False

    def children(self, folder):
        files, folders = [], []
        for bucket, page in self._pages(folder, Delimiter='/'):
            files += self._entries(bucket, page)[0]
            folders += [f's3://{bucket}/{p["Prefix"]}' for p in page.get('CommonPrefixes', ())]
        return files, sorted(set(folders))

    def under(self, prefix):
        for bucket, page in self._pages(prefix):
            yield from self._entries(bucket, page)[0]

    def first_under(self, prefix):
        for bucket, page in self._pages(prefix, PaginationConfig={'MaxItems': 1,
                                                                  'PageSize': 1}):
            return next(iter(self._entries(bucket, page)[0]), None)
        return None

    def under_range(self, prefix, first, end):
        # every key of the first hour sorts after its folder name without the '/'
        end_key = self._split(end)[1]
        for bucket, page in self._pages(prefix, StartAfter=self._split(first)[1]):
            found, ended = self._entries(bucket, page, end_key)
            yield from found
            if ended:
                return   # the rest sorts after the range: never asked for

    def hours(self, type_folder, start, end, marker=DATE_FOLDER):
        yield from self._key_range_hours(type_folder, start, end, marker)

    def first_hour(self, type_folder):
        bucket, key = self._split(type_folder)
        response = self.client.list_objects_v2(Bucket=bucket, Prefix=key + DATE_FOLDER, MaxKeys=1)
        self.counter.add(1)
        for item in response.get('Contents', ()):
            return hour_from_path(item['Key'])
        return None


# --------------------------------------------------------------------------------- Azure
class AzureStore(Store):
    """azfs://ACCOUNT/CONTAINER/... with a BlobServiceClient made as Beam's Azure filesystem
    makes it. Azure lists by name prefix only, so ranges are listed by day prefixes."""

    def __init__(self, client, counter: Optional[Counter] = None):
        super().__init__(counter)
        self.client = client

    @staticmethod
    def _split(path: str) -> Tuple[str, str, str]:
        account, _, rest = path[len('azfs://'):].partition('/')
        container, _, key = rest.partition('/')
        return account, container, key

    def _container(self, path: str):
        account, container, key = self._split(path)
        return account, container, key, self.client.get_container_client(container)

    def _entries(self, account, container, page) -> Tuple[List[Entry], List[str]]:
        from apache_beam.io.azure.blobstorageio import BlobStorageIO
        files, folders = [], []
        for item in page:
            name = item.name
            if not hasattr(item, 'size') or name.endswith('/'):   # a BlobPrefix
                if name.endswith('/'):
                    folders.append(f'azfs://{account}/{container}/{name}')
                continue
            files.append((f'azfs://{account}/{container}/{name}', item.size,
                          BlobStorageIO._updated_to_seconds(item.last_modified)))
        return files, folders

    def children(self, folder):
        account, container, key, client = self._container(folder)
        files, folders = [], []
        for page in client.walk_blobs(name_starts_with=key or None, delimiter='/').by_page():
            items = list(page)
            self.counter.add(1, len(items))
            found, subfolders = self._entries(account, container, items)
            files += found
            folders += subfolders
        return files, sorted(set(folders))

    def under(self, prefix):
        account, container, key, client = self._container(prefix)
        for page in client.list_blobs(name_starts_with=key or None).by_page():
            items = list(page)
            self.counter.add(1, len(items))
            yield from self._entries(account, container, items)[0]

    def first_under(self, prefix):
        account, container, key, client = self._container(prefix)
        pages = client.list_blobs(name_starts_with=key or None, results_per_page=1).by_page()
        self.counter.add(1)
        return next(iter(self._entries(account, container, list(next(iter(pages), [])))[0]),
                    None)

    def first_hour(self, type_folder):
        account, container, key, client = self._container(type_folder)
        pages = client.list_blobs(name_starts_with=key + DATE_FOLDER, results_per_page=1).by_page()
        self.counter.add(1)
        for item in next(iter(pages), []):
            return hour_from_path(item.name)
        return None


# ----------------------------------------------------------------------------- the stores
def store_for(path: str, counter: Optional[Counter] = None, options=None) -> Store:
    """The store holding `path`, with the client Beam's filesystem for it would use.

    `options`: the run's PipelineOptions (the launcher); workers take Beam's (FileSystems')."""
    if path.startswith('gs://'):
        from apache_beam.io.gcp.gcsio import create_storage_client
        return GcsStore(create_storage_client(_options(options)), counter)
    if path.startswith('s3://'):
        return S3Store(_s3_client(_options(options)), counter)
    if path.startswith('azfs://'):
        return AzureStore(_azure_client(_options(options)), counter)
    return LocalStore(counter)


def object_exists(path: str, options=None) -> bool:
    """Whether the object `path` exists (one request of one result). Beam 2.77's Azure
    filesystem raises on a missing blob where the others answer False."""
    if '://' not in path:
        return os.path.isfile(path)
    first = store_for(path, options=options).first_under(path)
    return first is not None and first[0] == path


def _options(options):
    if options is not None:
        return options
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    return FileSystems._pipeline_options or PipelineOptions()


def _s3_client(options):
    """Beam's boto3 client (endpoint, region, TLS from the S3 options; credentials from boto3's
    chain, which reads AWS_ENDPOINT_URL_S3 and the keys the launcher or worker installed)."""
    from apache_beam.io.aws.clients.s3.boto3_client import Client
    return Client(options).client


def _azure_client(options):
    from apache_beam.io.azure.blobstorageio import BlobStorageIO
    return BlobStorageIO(pipeline_options=options).client


# ------------------------------------------------------------------------- finding units
class Layout(NamedTuple):
    """What the top of an input holds: units to list, objects found on the way, and the type
    folders a run does not read (never listed below their names)."""
    units: List[Unit]
    files: List[Entry]
    types_skipped: List[str]


def top_unit(root: str, selector: FileSelector) -> Optional[Unit]:
    """The unit an --input that is itself inside a type or hour folder makes, else None."""
    name = root.rstrip('/').rsplit('/', 1)[-1]
    folder = root if root.endswith('/') else root + '/'
    if name.startswith(TYPE_FOLDER):
        return type_unit(folder, name[len(TYPE_FOLDER):], selector)
    hour = hour_from_path(folder)
    if hour is not None:
        return Unit('all', folder, hour, hour + HOUR) if selector.hour_in_range(hour) else \
            Unit('all', '', hour, hour)   # an hour outside the range: nothing to list
    return None


def type_unit(folder: str, event_type: str, selector: FileSelector) -> Optional[Unit]:
    if event_type not in selector.event_types:
        return None
    if not selector.bounded:
        return Unit('all', folder, event_type=event_type)
    return Unit('hours', folder, selector.start, selector.end, event_type)


def find_units(store: Store, root: str, selector: FileSelector,
               max_depth: int = MAX_DEPTH) -> Layout:
    """Walks the top of `root` (a folder, ending in '/') with delimiter listings into units."""
    units, files, skipped = [], [], []
    own = top_unit(root, selector)
    if own is not None or root.rstrip('/').rsplit('/', 1)[-1].startswith(TYPE_FOLDER):
        if own is None:
            skipped.append(root.rstrip('/').rsplit('/', 1)[-1][len(TYPE_FOLDER):])
        elif own.path:
            units.append(own)
        return Layout(units, files, skipped)

    def walk(folder: str, depth: int) -> None:
        found, folders = store.children(folder)
        files.extend(found)
        for sub in folders:
            name = sub.rstrip('/').rsplit('/', 1)[-1]
            if name.startswith(TYPE_FOLDER):
                unit = type_unit(sub, name[len(TYPE_FOLDER):], selector)
                if unit is None:
                    skipped.append(name[len(TYPE_FOLDER):])
                else:
                    units.append(unit)
            elif name.startswith(DATE_FOLDER):
                hour = folder_hour(name[len(DATE_FOLDER):])
                if hour is None or selector.hour_in_range(hour):
                    units.append(Unit('all', sub))
            elif depth >= max_depth:
                units.append(Unit('all', sub))
            else:
                walk(sub, depth + 1)

    walk(root, 1)
    return Layout(units, files, skipped)


def bounded(unit: Unit, store: Store) -> Unit:
    """An 'hours' unit with both ends: no --end stops at `range_cap`, no --start begins at the
    type folder's first hour (one request)."""
    if unit.kind != 'hours' or (unit.start is not None and unit.end is not None):
        return unit
    start = unit.start if unit.start is not None else store.first_hour(unit.path)
    end = unit.end if unit.end is not None else range_cap()
    if start is None:
        start = end   # no date= hour at all: nothing in range
    return unit._replace(start=start, end=end)


def list_unit(store: Store, unit: Unit) -> Iterator[Entry]:
    """The objects of one unit (an 'hours' unit's, only those of its hours)."""
    if unit.kind == 'file':
        yield unit.path, unit.size, unit.stamp
        return
    if unit.kind == 'all':
        yield from store.under(unit.path)
        return
    unit = bounded(unit, store)
    if unit.start >= unit.end:
        return
    for entry in store.hours(unit.path, unit.start, unit.end):
        hour = hour_from_path(entry[0])
        if hour is not None and unit.start <= hour < unit.end:
            yield entry


def split_unit(unit: Unit, days: int = 31) -> List[Unit]:
    """An 'hours' unit in pieces of at most `days` days, cut at midnight UTC: the workers list
    them in parallel."""
    if unit.kind != 'hours' or unit.start is None or unit.end is None:
        return [unit]
    pieces, start = [], unit.start
    while start < unit.end:
        cut = min(unit.end, start.replace(hour=0) + days * DAY)
        pieces.append(unit._replace(start=start, end=cut))
        start = cut
    return pieces


def plan_units(store: Store, root: str, selector: FileSelector) -> Tuple[Layout, List[Unit]]:
    """The layout of `root` and its units, 'hours' units with both ends: one per type folder,
    listed by the launcher in one run of keys (split_unit cuts them for the workers)."""
    layout = find_units(store, root, selector)
    return layout, [bounded(unit, store) for unit in layout.units]


def by_hours(store: Store, units: Sequence[Unit]) -> List[Unit]:
    """Whole type folders (a run without a range) as the hours they hold, so the workers can
    list them month by month and a run can cut them into waves: one delimiter listing of each
    folder (its hour folders' names, ~1,000 a request). What else a type folder holds is kept
    as it is: its files, and its folders not named by an hour, listed whole."""
    found = []
    for unit in units:
        if unit.kind != 'all' or unit.event_type is None:
            found.append(unit)
            continue
        files, folders = store.children(unit.path)
        hours = []
        for folder in folders:
            name = folder.rstrip('/').rsplit('/', 1)[-1]
            hour = folder_hour(name[len(DATE_FOLDER):]) if name.startswith(DATE_FOLDER) else None
            if hour is None:
                found.append(Unit('all', folder))
            else:
                hours.append(hour)
        found += [Unit('file', path, size=size, stamp=stamp) for path, size, stamp in files]
        if hours:
            found.append(Unit('hours', unit.path, min(hours), max(hours) + HOUR,
                              unit.event_type))
    return found


def hours_present(store: Store, unit: Unit) -> List[datetime.datetime]:
    """The `date=` hours a type-folder unit holds, from its hour folders' names (delimiter
    listings, one per day of an 'hours' unit; no object below them is listed)."""
    if isinstance(store, LocalStore):
        found = [hour for hour, _ in store._date_folders(unit.path)]
    else:
        if unit.kind == 'hours':
            unit = bounded(unit, store)
            prefixes = [f'{unit.path}{DATE_FOLDER}{day}' for day in day_names(unit.start, unit.end)]
        else:
            prefixes = [unit.path]
        names = [folder.rstrip('/').rsplit('/', 1)[-1] for prefix in prefixes
                 for folder in store.children(prefix)[1]]
        found = [folder_hour(n[len(DATE_FOLDER):]) for n in names if n.startswith(DATE_FOLDER)]
    if unit.kind == 'hours':
        unit = bounded(unit, store)
        return sorted({h for h in found if h is not None and unit.start <= h < unit.end})
    return sorted({h for h in found if h is not None})


def apply_to_units(units: Sequence[Unit], fn: Callable[[Unit], None], threads: int = 8) -> None:
    """Runs `fn` on every unit, a few at a time: object stores answer a LIST in tens of ms."""
    if threads <= 1 or len(units) <= 1:
        for unit in units:
            fn(unit)
        return
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(threads, len(units))) as pool:
        for _ in pool.map(fn, units):
            pass
