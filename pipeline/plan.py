"""--plan: what a run would read and how long sending would take, before anything is sent."""
from collections import defaultdict
from typing import Dict, FrozenSet, List, Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.paths import hour_from_path
from pipeline.waves import (as_wave_size, make_waves, partitions_of, unit_wave_lines, unit_waves,
                            wave_lines)
from transforms.events import event_type_from_schema_name
from transforms.profiles import CLASSIC, row_name, row_names
from transforms.read import block_headers, read_header


def _events_per_byte(path: str) -> Tuple[Optional[str], float]:
    """Reads one file's Avro header and block headers (record counts), with the reader's limits;
    the data blocks are skipped, never read or decompressed."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            header = read_header(f)
            records = sum(count for count, _ in block_headers(f, header))
            size = f.tell() or 1
        return event_type_from_schema_name(header.writer.fullname), records / size
    except Exception:
        return None, 0.0


def _type_from_header(path: str, event_types: FrozenSet[str]) -> Tuple[bool, Optional[str]]:
    """(readable, event type) from a file's writer schema, as the run's reader decides it."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            header = read_header(f)
        return True, event_type_from_schema_name(header.writer.fullname, event_types)
    except Exception:
        return False, None


def decide_by_header(files: List[Tuple[str, Optional[str], int]], event_types: FrozenSet[str]):
    """Files whose path names no event type: read their header, as the run's workers do.

    A type not selected is skipped (as the run counts it); an unreadable header stays to be
    read (the run makes it an `unreadable_file` reject).
    """
    kept, skipped = [], 0
    for path, event_type, size in files:
        if event_type is None:
            readable, event_type = _type_from_header(path, event_types)
            if readable and (event_type is None or event_type not in event_types):
                skipped += 1
                continue
        kept.append((path, event_type, size))
    return kept, skipped


def estimate_events(files: List[Tuple[str, Optional[str], int]]) -> int:
    """Events in these files, from the Avro block headers of the largest file per type."""
    samples = {}
    for path, event_type, size in files:
        if event_type not in samples or size > samples[event_type][1]:
            samples[event_type] = (path, size)
    ratios = {t: _events_per_byte(path)[1] for t, (path, _) in samples.items()}
    return int(round(sum(size * ratios[t] for _, t, size in files)))


SKIP_NAMES = {'skip_type': 'other_event_type', 'skip_range': 'outside_start_end',
              'skip_not_avro': 'not_avro_name', 'skip_done': 'completed_by_earlier_run'}
SAMPLE_UNITS = 8   # units a plan of a range the workers list lists here, for its estimate


def skip_reasons(skipped: Dict[str, int]) -> Dict[str, int]:
    """Skip counts under the names the summary JSON uses (`files_skipped_by_reason`)."""
    named: Dict[str, int] = {}
    for key, value in skipped.items():
        name = SKIP_NAMES.get(key, key)
        named[name] = named.get(name, 0) + value
    return dict(sorted(named.items()))


def sample_listing(listing, options=None) -> Tuple[List[Tuple[str, Optional[str], int]], float]:
    """A range the workers list: files of a few of its units, listed here, and the share of the
    range's hours they hold (for an estimate of the whole)."""
    from transforms import listing as stores
    hourly = [u for u in listing.units if u.kind == 'hours' and u.start and u.end]
    if listing.sample:
        return listing.sample, 0.0
    if not hourly:
        return [], 0.0
    step = max(1, len(hourly) // SAMPLE_UNITS)
    chosen = hourly[::step][:SAMPLE_UNITS]
    counter = stores.Counter()
    store = stores.store_for(chosen[0].path, counter, options)
    files = [(path, u.event_type, size) for u in chosen for path, size, _ in
             stores.list_unit(store, u)]
    hours = lambda units: sum((u.end - u.start).total_seconds() / 3600 for u in units)  # noqa
    return files, hours(chosen) / max(1.0, hours(hourly))


def plan_gaps(files, rows: dict, mapping: str, start=None, end=None) -> List[str]:
    """The gaps the listing shows (pipeline/coverage.py), one line each: hours of an event with
    no file between hours with files, an event that stops or starts late in the range."""
    from pipeline.coverage import gaps_from_hours
    hours: Dict[str, set] = {}
    for path, event_type, _ in files:
        hour = hour_from_path(path)
        if hour is not None and event_type:
            hours.setdefault(row_name(mapping, event_type), set()).add(hour)
    events = {name: row['events_estimate'] for name, row in rows.items()}
    return [gap.text for gap in gaps_from_hours(hours, events, start, end)]


def make_plan(listing, wave_size, max_events_per_second: float, mapping: str = CLASSIC,
              event_types: Optional[FrozenSet[str]] = None, undated: int = 0,
              options=None, start=None, end=None) -> dict:
    """What a run of this listing would do. `wave_size`: a waves.WaveSize (or an int of hours),
    as the run would cut its input. A range the workers list is estimated from a sample of its
    units (the plan says so)."""
    skipped = dict(listing.skipped)
    files = listing.files
    share = 1.0
    if listing.on_workers:
        files, share = sample_listing(listing, options)
    if event_types is not None:
        files, by_header = decide_by_header(files, event_types)
        if by_header:
            skipped['skip_type'] = skipped.get('skip_type', 0) + by_header
    wave_size = as_wave_size(wave_size)
    if listing.on_workers:
        waves = unit_waves(listing.units, wave_size, files)
        lines = unit_wave_lines(waves)
    else:
        waves = make_waves(files, wave_size)
        lines = wave_lines(waves)
    by_type = defaultdict(lambda: {'files': 0, 'bytes': 0, 'sample': None})
    for path, event_type, size in files:
        row = by_type[event_type or '(from schema)']
        row['files'] += 1
        row['bytes'] += size
        if row['sample'] is None or size > row['sample'][1]:
            row['sample'] = (path, size)
    scale = 1.0 / share if share else 1.0
    estimate = 0
    rows = {}
    for event_type, row in sorted(by_type.items()):
        _, ratio = _events_per_byte(row['sample'][0]) if row['sample'] else (None, 0.0)
        events = int(round(row['bytes'] * ratio * scale))
        estimate += events
        name = row_name(mapping, event_type)
        found = rows.setdefault(name, {'files': 0, 'bytes': 0, 'events_estimate': 0})
        found['files'] += int(round(row['files'] * scale))
        found['bytes'] += int(round(row['bytes'] * scale))
        found['events_estimate'] += events
    order = {name: i for i, name in enumerate(dict.fromkeys(row_names(mapping).values()))}
    rows = dict(sorted(rows.items(), key=lambda kv: order.get(kv[0], len(order))))
    hours = sorted(h for h in (hour_from_path(p) for p, _, _ in files) if h is not None)
    seconds = estimate / max_events_per_second if max_events_per_second > 0 else None
    return {
        'files': int(round(len(files) * scale)),
        'bytes': int(round(sum(size for _, _, size in files) * scale)),
        'partitions': int(round(len(partitions_of(files)) * scale)),
        'first_hour': hours[0].strftime('%Y-%m-%d-%H') if hours else None,
        'last_hour': hours[-1].strftime('%Y-%m-%d-%H') if hours else None,
        'events_estimate': estimate,
        'send_seconds_estimate': seconds,
        'waves': len(waves),
        'wave_size': wave_size.describe(),
        'wave_lines': lines,
        'files_skipped': skip_reasons(skipped),
        'files_without_date_hour': undated,
        'by_event': rows,
        'list_requests': listing.requests,
        'objects_listed': listing.objects,
        'event_types_not_selected': list(listing.types_skipped),
        'listed_by_workers': (None if not listing.on_workers else
                              {'units': len(listing.units), 'sampled_share': round(share, 4)}),
        # From a whole listing only: a sample of a range the workers list has holes of its own.
        'gaps': None if listing.on_workers else plan_gaps(files, rows, mapping, start, end),
    }


def gap_lines(gaps: Optional[List[str]], limit: int = 20) -> List[str]:
    if gaps is None:
        return ['gaps: not looked for in a range the workers list (plan a shorter range)']
    if not gaps:
        return ['gaps: none (every event type has files in every hour between its first and '
                'last, and over the whole range)']
    lines = [f'gaps: {len(gaps)} (see docs/report.md, "What counts as a gap")']
    lines += [f'  {text}' for text in gaps[:limit]]
    if len(gaps) > limit:
        lines.append(f'  ... {len(gaps) - limit} more')
    return lines


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return 'unthrottled (set --max_events_per_second; Segment documents ~1,000/s per workspace)'
    days, rest = divmod(int(seconds), 86400)
    return (f'{days} d ' if days else '') + f'{rest // 3600} h {rest % 3600 // 60} min'


def plan_text(plan: dict, rate: float) -> str:
    workers = plan.get('listed_by_workers')
    about = '~' if workers else ''
    hours = (f'hours {plan["first_hour"]} .. {plan["last_hour"]}' if plan['first_hour']
             else 'no date= hours')
    skipped = plan['files_skipped']
    lines = [f'files to read: {about}{plan["files"]:,} ({about}{plan["bytes"]:,} bytes) in '
             f'{about}{plan["partitions"]:,} partitions (event type x date= hour), {hours}, '
             f'{plan["waves"]} wave(s) ({plan["wave_size"]})',
             *plan['wave_lines'],
             f'files skipped: {sum(skipped.values())}'
             + (' (' + ', '.join(f'{name} {n}' for name, n in skipped.items()) + ')'
                if skipped else ''),
             *([f'read regardless: no date= hour in path: {plan["files_without_date_hour"]} '
                f'files (--start/--end cannot prune them)']
               if plan.get('files_without_date_hour') else []),
             f'listing: {plan["list_requests"]:,} LIST requests, {plan["objects_listed"]:,} '
             f'objects listed'
             + (f'; {len(plan["event_types_not_selected"])} event type folders not read '
                f'(never listed)' if plan['event_types_not_selected'] else ''),
             *([f'listed by the workers: {workers["units"]} units; the figures above are '
                f'estimated from {workers["sampled_share"]:.1%} of the range, listed here']
               if workers else []),
             *gap_lines(plan.get('gaps')),
             f'events (estimate from Avro block headers of one file per type): '
             f'{plan["events_estimate"]:,}',
             f'sending time at {rate:g} events/s: {_duration(plan["send_seconds_estimate"])}'
             if rate > 0 else f'sending time: {_duration(None)}',
             f'{"Segment event":<34}{"files":>8}{"bytes":>14}{"events (est.)":>15}']
    for name, row in plan['by_event'].items():
        lines.append(f'{name:<34}{row["files"]:>8}{row["bytes"]:>14,}{row["events_estimate"]:>15,}')
    return '\n'.join(lines)
