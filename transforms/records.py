"""The per-file record of completed input files: what `--resume` and `--since_last_run` skip.

A file is recorded once every one of its events is sent, dropped or durably rejected
(transforms/completion.py). The workers append the record as they go, in small pieces, and the
launcher folds the pieces into one object per `date=` hour at the end of each wave
(pipeline/ledger.py), so that a run reads the record of its own hours only:

    <rejects>/delivered/piece-<run>-<wave>-<writer>-<n>.jsonl      pieces, as the workers wrote them
    <rejects>/delivered/hours/YYYY-MM-DD-HH/<name>.jsonl[.gz]       folded, one folder per hour
    <rejects>/delivered/hours/undated/...                           files without a date= hour

Each line is one file: `[path, bytes, modification stamp]` as `json.dumps` writes it. A file counts
as recorded only in the version recorded (same path, size and stamp): a file rewritten since is
read again, and its events keep their messageIds, so Segment de-duplicates what it already has.
Records written by older versions of this tool (`segment-*.jsonl`, `compacted-*.jsonl.gz` directly
in `delivered/`) are read as pieces and folded like them.
"""
import datetime
import gzip
import json
import logging
import math
import os
import uuid
from typing import Dict, Iterable, List, Optional, Tuple

from transforms.layout import UNDATED
from transforms.listing import Counter, Store, store_for

RECORDS_DIR = 'delivered'
HOURS_DIR = 'hours'
PIECE_PREFIX = 'piece-'
OLD_PIECES = (('segment-', '.jsonl'), ('compacted-', '.jsonl.gz'))
SUFFIX, GZ_SUFFIX = '.jsonl', '.jsonl.gz'

Recorded = Tuple[str, int, float]   # path, bytes, modification stamp as listed
# a str as JSON with ensure_ascii, as json.dumps writes it (the C escaper json itself uses)
_json_string = json.encoder.encode_basestring_ascii
log = logging.getLogger(__name__)


def records_dir(rejects: str) -> str:
    return _join(rejects, RECORDS_DIR)


def hours_dir(rejects: str) -> str:
    return _join(records_dir(rejects), HOURS_DIR)


def _join(base: str, *names: str) -> str:
    return '/'.join([base.rstrip('/')] + list(names)) if base else '/'.join(names)


def record_lines(entries: Iterable[Recorded]) -> bytes:
    """One JSON array `[path, bytes, stamp]` per line, as `json.dumps` writes it. An entry of the
    usual types (str, int, finite float) is written with json's own string escaper and the
    numbers' repr, which is what `json.dumps` does for them (2.4x faster)."""
    lines = []
    for path, size, stamp in entries:
        if (type(path) is str and type(size) is int and type(stamp) is float
                and math.isfinite(stamp)):
            lines.append(f'[{_json_string(path)}, {size!r}, {stamp!r}]\n')
        else:
            lines.append(json.dumps([path, size, stamp]) + '\n')
    return ''.join(lines).encode('ascii')   # json.dumps escapes everything else (ensure_ascii)


def is_piece(path: str) -> bool:
    name = path.rsplit('/', 1)[-1]
    return ((name.startswith(PIECE_PREFIX) and name.endswith(SUFFIX))
            or any(name.startswith(p) and name.endswith(s) for p, s in OLD_PIECES))


def is_record_object(path: str) -> bool:
    name = path.rsplit('/', 1)[-1]
    return name.endswith(SUFFIX) or name.endswith(GZ_SUFFIX)


def write_whole(path: str, data: bytes, mime_type: str = 'application/x-ndjson',
                in_place: bool = False) -> None:
    """An object written so that it is seen complete or not at all: object stores publish an
    upload only once it is complete; a local file is written under a hidden name and renamed
    (complete for any process once renamed, even if this one is killed; like Beam's own file
    sinks, it does not wait for the disk)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    if '://' in path:
        f = FileSystems.create(path, mime_type=mime_type,
                               compression_type=CompressionTypes.UNCOMPRESSED)
        try:
            f.write(data)
            f.close()
        except BaseException:
            _abandon(f)
            raise
        return
    folder, name = os.path.split(path)
    folder = folder or '.'
    os.makedirs(folder, exist_ok=True)
    if in_place:   # a file the user named (--summary_output, --report): written as named,
        with open(path, 'wb') as f:   # never replaced (it may be a link or a device)
            f.write(data)
        return
    hidden = os.path.join(folder, f'.{name}.{uuid.uuid4().hex[:8]}.tmp')
    with open(hidden, 'wb') as f:
        f.write(data)
    os.replace(hidden, path)


def _abandon(writer) -> None:
    """A store writer whose upload failed is dropped for good. Left as it is, GCS's BlobWriter
    (under Beam's gs:// filesystem) is still open, and closing it when it is collected uploads
    again, retrying for up to two minutes: a run that failed at once would hang on its way out."""
    buffer = getattr(writer, '_buffer', None)
    try:
        if buffer is not None:
            buffer.close()
    except Exception:   # noqa: BLE001 - only the retry on collection is being prevented
        pass


def read_object(path: str) -> bytes:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        raw = f.read()
    return gzip.decompress(raw) if path.endswith(GZ_SUFFIX) else raw


def parse_lines(raw: bytes) -> Tuple[List[Recorded], int]:
    """The entries of a record object, and how many lines were not entries (e.g. a piece cut
    short by a crash: those files are sent again)."""
    entries, bad = [], 0
    for line in raw.splitlines():
        try:
            path, size, stamp = json.loads(line)
            entries.append((str(path), int(size), float(stamp)))
        except (ValueError, TypeError):
            bad += 1
    return entries, bad


class Records:
    """What earlier runs recorded: path -> (bytes, stamp) of the newest version of each file."""

    def __init__(self):
        self.files: Dict[str, Tuple[int, float]] = {}
        self.pieces: List[str] = []          # piece objects read
        self.hour_objects: Dict[str, List[str]] = {}   # hour -> folded objects read
        self.bad_lines = 0

    def add(self, path: str, size: int, stamp: float) -> None:
        """Keeps the newest version of each file (by stamp, then size), whatever the order."""
        old = self.files.get(path)
        if old is None or (stamp, size) > (old[1], old[0]):
            self.files[path] = (size, stamp)

    def add_object(self, path: str) -> List[Recorded]:
        entries, bad = parse_lines(read_object(path))
        self.bad_lines += bad
        for entry in entries:
            self.add(*entry)
        return entries

    def recorded(self, path: str, size: int, stamp: float) -> bool:
        return self.files.get(path) == (size, stamp)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def objects_read(self) -> int:
        return len(self.pieces) + sum(len(v) for v in self.hour_objects.values())


def list_pieces(store: Store, rejects: str) -> List[str]:
    """The pieces not folded yet (one delimiter listing of the records folder)."""
    files, _ = store.children(records_dir(rejects) + '/')
    return sorted(path for path, _, _ in files if is_piece(path))


def hour_objects(store: Store, rejects: str, start: Optional[datetime.datetime] = None,
                 end: Optional[datetime.datetime] = None) -> Dict[str, List[str]]:
    """hour -> folded record objects of the hours [start, end) and of files without an hour
    (every hour when unbounded): a range's record costs what the range holds."""
    base = hours_dir(rejects) + '/'
    if start is None or end is None:
        listed = store.under(base)
    else:
        listed = (*store.hours(base, start, end, marker=''), *store.under(f'{base}{UNDATED}/'))
    found: Dict[str, List[str]] = {}
    for path, _, _ in listed:
        hour = path[len(base):].split('/', 1)[0] if path.startswith(base) else None
        if hour is not None and is_record_object(path) and '/' in path[len(base):]:
            found.setdefault(hour, []).append(path)
    if start is not None and end is not None:
        found = {h: v for h, v in found.items() if h == UNDATED or _in(h, start, end)}
    return {h: sorted(v) for h, v in found.items()}


def _in(hour: str, start, end) -> bool:
    try:
        moment = datetime.datetime.strptime(hour, '%Y-%m-%d-%H')
    except ValueError:
        return False
    return start <= moment < end


def load_records(rejects: str, start: Optional[datetime.datetime] = None,
                 end: Optional[datetime.datetime] = None, store: Optional[Store] = None,
                 counter: Optional[Counter] = None, pieces: bool = True) -> Records:
    """The record of the hours [start, end) (all hours when unbounded), with the pieces not
    folded yet. A missing records folder is an empty record."""
    store = store or store_for(rejects, counter)
    records = Records()
    if pieces:
        for path in list_pieces(store, rejects):
            records.add_object(path)
            records.pieces.append(path)
    for hour, paths in hour_objects(store, rejects, start, end).items():
        for path in paths:
            records.add_object(path)
        records.hour_objects[hour] = paths
    if records.bad_lines:
        log.warning('per-file record: %d unreadable lines ignored (those files are sent again)',
                    records.bad_lines)
    return records


def piece_name(run_id: str, wave: str, writer: str, number: int) -> str:
    return f'{PIECE_PREFIX}{run_id}-{wave}-{writer}-{number:05d}{SUFFIX}'
