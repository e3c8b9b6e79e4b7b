"""Splitting a listed input into waves of whole date= hours, each one pipeline run (for --resume).

Every wave is a pipeline of its own (graph, workers, rejects and record stages: ~0.7 CPU-s and
~0.55 s locally), so a local run cuts its input by volume: whole hours, in time order, until a
wave holds at least `--wave_mb` of input (default 512 MiB, about a million events) or
MAX_WAVE_FILES files (the process tree's memory grows with the files of a wave, ~10 KB each in
PSS). Inputs up to that size are one pipeline; a long backfill still gets a checkpoint per wave
(docs/resume.md, "Waves"). `--wave_hours H` cuts by time instead.
"""
import datetime
import functools
import operator
from typing import Dict, List, NamedTuple, Optional, Tuple

from pipeline.paths import UsageError, event_type_from_path, hour_from_path
from pipeline.listing import partition_key
from transforms.listing import Unit

EPOCH = datetime.datetime(1970, 1, 1)
MIB = 1024 * 1024
DEFAULT_WAVE_MB = 512
MAX_WAVE_FILES = 25_000     # ~250 MB of per-file memory over the process tree (PSS)

ListedFile = Tuple[str, Optional[str], int]     # (path, event type if the path says, bytes)
_size = operator.itemgetter(2)   # a ListedFile's bytes (reverse=True keeps ties in order)


class WaveSize(NamedTuple):
    """How a run cuts its input: by `hours` of date= hours, by `bytes` of input (or `files`,
    whichever comes first), or not at all (all 0)."""
    hours: int = 0
    bytes: int = 0
    files: int = 0

    def describe(self) -> str:
        if self.hours:
            return f'{self.hours} date= hour(s) each'
        if self.bytes:
            return (f'whole date= hours until a wave holds >= {self.bytes / MIB:g} MiB'
                    + (f' or {self.files:,} files' if self.files else ''))
        return 'one wave'


def wave_size(wave_hours: Optional[int], wave_mb: Optional[float], dataflow: bool,
              wait: bool, remote: Optional[bool] = None) -> WaveSize:
    """The run's waves from the options: an explicit --wave_hours or --wave_mb (0 = one wave);
    else by volume locally, and one job where the workers may be other machines (`remote`;
    Dataflow by default): their per-pipeline costs are not a local run's."""
    if wave_hours is not None and wave_mb is not None:
        raise UsageError('--wave_hours and --wave_mb both cut the input into waves: give one')
    if dataflow and not wait and (wave_hours or wave_mb):
        raise UsageError('--wave_hours/--wave_mb on Dataflow run one job per wave and need --wait')
    if wave_hours is not None:
        return WaveSize(hours=wave_hours)
    if wave_mb is not None:
        return WaveSize(bytes=int(wave_mb * MIB), files=MAX_WAVE_FILES if wave_mb else 0)
    one_job = dataflow if remote is None else remote
    return WaveSize() if one_job else WaveSize(bytes=DEFAULT_WAVE_MB * MIB, files=MAX_WAVE_FILES)


def as_wave_size(size) -> WaveSize:
    """A WaveSize as is; an int as hours."""
    return size if isinstance(size, WaveSize) else WaveSize(hours=int(size or 0))


def _hour_number(path: str) -> int:
    """Hours since 1970 of the file's date= hour; -1 for files without one (they come first)."""
    return _hours_since_epoch(hour_from_path(path))


@functools.lru_cache(maxsize=4096)
def _hours_since_epoch(hour: Optional[datetime.datetime]) -> int:
    return -1 if hour is None else int((hour - EPOCH).total_seconds() // 3600)


def make_waves(files: List[ListedFile], size) -> List[List[ListedFile]]:
    """The files in waves, in time order; a partition (event type × hour) never spans two.

    `size` is a WaveSize (an int means hours). By hours: one wave per
    `hours`-long span of date= hours. By bytes: whole hours are added to a wave until it holds
    at least `bytes` (or `files` files, if set), so an input smaller than that is one wave.
    Files without a date= hour are taken first: on their own by hours, ahead of the first hours
    by bytes.
    """
    size = as_wave_size(size)
    if not files:
        return []
    if not size.hours and not size.bytes:
        return [list(files)]
    by_hour: Dict[int, List[ListedFile]] = {}
    for entry in files:
        by_hour.setdefault(_hour_number(entry[0]), []).append(entry)
    if size.hours:
        buckets: Dict[int, List[ListedFile]] = {}
        for hour in sorted(by_hour):
            key = -1 if hour < 0 else hour // size.hours
            buckets.setdefault(key, []).extend(by_hour[hour])
        return [buckets[k] for k in sorted(buckets)]
    waves, wave, held = [], [], 0
    for hour in sorted(by_hour):
        wave.extend(by_hour[hour])
        held += sum(entry[2] for entry in by_hour[hour])
        if held >= size.bytes or (size.files and len(wave) >= size.files):
            waves.append(wave)
            wave, held = [], 0
    if wave:
        waves.append(wave)
    return waves


def wave_lines(waves: List[List[ListedFile]], limit: int = 12) -> List[str]:
    """One line per wave for --plan (hours, files, bytes), the middle elided past `limit`."""
    lines = []
    for number, wave in enumerate(waves):
        hours = sorted(h for h in (hour_from_path(p) for p, _, _ in wave) if h is not None)
        span = (f'{hours[0]:%Y-%m-%d-%H} .. {hours[-1]:%Y-%m-%d-%H}' if hours
                else 'files without a date= hour')
        if hours and len(hours) != len(wave):
            span += ' (+ files without a date= hour)'
        lines.append(f'  wave {number + 1}: {span}, {len(wave)} files, '
                     f'{sum(size for _, _, size in wave):,} bytes')
    if len(lines) > limit:
        half = limit // 2
        lines = lines[:half] + [f'  ... {len(lines) - 2 * half} more waves ...'] + lines[-half:]
    return lines


def largest_first(files: List[ListedFile]) -> List[Tuple[str, Optional[str]]]:
    """(path, event type) of each file, largest first: the order a wave's files are dealt to
    the workers (transforms/read.py), so that they finish together."""
    return [(path, event_type) for path, event_type, _ in sorted(files, key=_size, reverse=True)]


def partitions_of(files) -> List[str]:
    return sorted({partition_key(entry[0]) for entry in files})


# ------------------------------------------------------------- waves of units (workers list)
def unit_waves(units: List[Unit], size, sample: Optional[List[ListedFile]] = None
               ) -> List[List[Unit]]:
    """A range the workers list, in waves of whole date= hours in time order: by `hours`, or
    by `bytes` (and files) as estimated from the files the launcher listed before handing the
    range over (`sample`); units without hours (folders listed whole, single files) first."""
    size = as_wave_size(size)
    hourly = [u for u in units if u.kind == 'hours' and u.start is not None and u.end is not None]
    others = [u for u in units if u not in hourly]
    if not hourly or (not size.hours and not size.bytes):
        return [list(units)] if units else []
    start, end = min(u.start for u in hourly), max(u.end for u in hourly)
    if not size.hours and not sample:
        return [list(units)]   # nothing to estimate the volume from: one wave
    span = size.hours or _hours_holding(size, sample, len({u.event_type for u in hourly}))
    waves, cut = [], start
    while cut < end:
        stop = min(end, cut + datetime.timedelta(hours=span))
        wave = [u._replace(start=max(u.start, cut), end=min(u.end, stop)) for u in hourly
                if u.start < stop and u.end > cut]
        if wave:
            waves.append(wave)
        cut = stop
    if others:
        waves.insert(0, others)
    return waves


def _hours_holding(size: WaveSize, sample: Optional[List[ListedFile]], types: int) -> int:
    """Hours of `types` event types that hold about `size` (bytes or files), from a sample of
    listed files: its bytes and files per event type and hour."""
    cells = {(entry[1] or event_type_from_path(entry[0]), _hour_number(entry[0]))
             for entry in sample if hour_from_path(entry[0]) is not None}
    if not cells:
        return 1 << 30   # no dated file to tell a rate by: one wave
    per_hour = max(1, types)
    hours = []
    if size.bytes:
        bytes_per_cell = sum(entry[2] for entry in sample) / len(cells)
        hours.append(size.bytes / max(1.0, bytes_per_cell * per_hour))
    if size.files:
        hours.append(size.files / max(1.0, len(sample) / len(cells) * per_hour))
    return max(1, int(min(hours)))


def unit_wave_lines(waves: List[List[Unit]], limit: int = 12) -> List[str]:
    """One line per wave of units for --plan (its hours and how many units)."""
    lines = []
    for number, wave in enumerate(waves):
        hourly = [u for u in wave if u.kind == 'hours']
        span = (f'{min(u.start for u in hourly):%Y-%m-%d-%H} .. '
                f'{max(u.end for u in hourly) - datetime.timedelta(hours=1):%Y-%m-%d-%H}'
                if hourly else 'folders without a date= range')
        lines.append(f'  wave {number + 1}: {span}, {len(wave)} units listed by the workers')
    if len(lines) > limit:
        half = limit // 2
        lines = lines[:half] + [f'  ... {len(lines) - 2 * half} more waves ...'] + lines[-half:]
    return lines
