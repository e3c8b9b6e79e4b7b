"""--plan: what a run would read and how long sending would take, before anything is sent."""
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import fastavro
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.waves import as_wave_size, make_waves, partitions_of, wave_lines
from transforms.events import BY_CURRENTS_TYPE, event_type_from_schema_name
from pipeline.paths import hour_from_path


def _events_per_byte(path: str) -> Tuple[Optional[str], float]:
    """Reads one file's Avro block headers (record counts), not its records."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            reader = fastavro.block_reader(f)
            name = reader.writer_schema.get('name', '') if isinstance(
                reader.writer_schema, dict) else ''
            records = sum(block.num_records for block in reader)
            size = f.tell() or 1
        return event_type_from_schema_name(name), records / size
    except Exception:
        return None, 0.0


def make_plan(files: List[Tuple[str, Optional[str], int]], skipped: Dict[str, int],
              wave_size, max_events_per_second: float) -> dict:
    """`wave_size`: a waves.WaveSize (or an int of hours), as the run would cut its input."""
    wave_size = as_wave_size(wave_size)
    waves = make_waves(files, wave_size)
    by_type = defaultdict(lambda: {'files': 0, 'bytes': 0, 'sample': None})
    for path, event_type, size in files:
        row = by_type[event_type or '(from schema)']
        row['files'] += 1
        row['bytes'] += size
        if row['sample'] is None or size > row['sample'][1]:
            row['sample'] = (path, size)
    estimate = 0
    rows = {}
    for event_type, row in sorted(by_type.items()):
        _, ratio = _events_per_byte(row['sample'][0]) if row['sample'] else (None, 0.0)
        events = int(round(row['bytes'] * ratio))
        estimate += events
        name = BY_CURRENTS_TYPE[event_type].segment_event if event_type in BY_CURRENTS_TYPE \
            else event_type
        rows[name] = {'files': row['files'], 'bytes': row['bytes'], 'events_estimate': events}
    hours = sorted(h for h in (hour_from_path(p) for p, _, _ in files) if h is not None)
    seconds = estimate / max_events_per_second if max_events_per_second > 0 else None
    return {
        'files': len(files),
        'bytes': sum(size for _, _, size in files),
        'partitions': len(partitions_of(files)),
        'first_hour': hours[0].strftime('%Y-%m-%d-%H') if hours else None,
        'last_hour': hours[-1].strftime('%Y-%m-%d-%H') if hours else None,
        'events_estimate': estimate,
        'send_seconds_estimate': seconds,
        'waves': len(waves),
        'wave_size': wave_size.describe(),
        'wave_lines': wave_lines(waves),
        'files_skipped': dict(skipped),
        'by_event': rows,
    }


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return 'unthrottled (set --max_events_per_second; Segment documents ~1,000/s per workspace)'
    days, rest = divmod(int(seconds), 86400)
    return (f'{days} d ' if days else '') + f'{rest // 3600} h {rest % 3600 // 60} min'


def plan_text(plan: dict, rate: float) -> str:
    lines = [f'files to read: {plan["files"]} ({plan["bytes"]:,} bytes) in {plan["partitions"]} '
             f'partitions (event type x date= hour), hours {plan["first_hour"]} .. '
             f'{plan["last_hour"]}, {plan["waves"]} wave(s) ({plan["wave_size"]})',
             *plan['wave_lines'],
             f'files skipped without opening: {sum(plan["files_skipped"].values())} '
             + (str(plan['files_skipped']) if plan['files_skipped'] else ''),
             f'events (estimate from Avro block headers of one file per type): '
             f'{plan["events_estimate"]:,}',
             f'sending time at {rate:g} events/s: {_duration(plan["send_seconds_estimate"])}'
             if rate > 0 else f'sending time: {_duration(None)}',
             f'{"Segment event":<34}{"files":>8}{"bytes":>14}{"events (est.)":>15}']
    for name, row in plan['by_event'].items():
        lines.append(f'{name:<34}{row["files"]:>8}{row["bytes"]:>14,}{row["events_estimate"]:>15,}')
    return '\n'.join(lines)
