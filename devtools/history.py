"""A Currents export with a long history, cheaply: hard links of a few small files.

For the history-scaling test and benchmark: a bucket only grows, so a run over one day must
cost the same over 10,000 objects of history as over 1,000,000. The day read holds real files
(one small Avro file per type, linked into each of its hours); the history before it holds
links of one empty file, never opened by a run over the day. A file takes at most
MAX_LINKS links (ext4 allows ~65,000), so a million objects need only a score of inodes.

    python -m devtools.history --output DIR --objects 1000000
"""
import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional

from devtools.sample import load_schema

TYPES = ('users.messages.email.Send', 'users.messages.email.Open',
         'users.messages.email.Click', 'users.messages.email.Delivery',
         'users.messages.pushnotification.Send', 'users.messages.pushnotification.Open',
         'users.messages.sms.Send', 'users.messages.sms.Delivery',
         'users.messages.contentcard.Send', 'users.canvas.Entry')
PREFIX = 'currents/dataexport.prod-01.S3.integration.5f0123456789abcdef012345'
DAY = datetime.datetime(2024, 6, 10)      # the day a run reads
FILES_PER_HOUR = 2                        # per type, in the day read
HISTORY_PER_HOUR = 25                     # per type, in the hours before it
MAX_LINKS = 60_000


class History(NamedTuple):
    root: Path            # the folder to give as --input (the sources it links lie beside it)
    objects: int          # files in all
    day_files: int        # files of the day read
    day_events: int       # their events


def _avro(event_type: str, events: int) -> bytes:
    import io
    import fastavro
    raw = load_schema(event_type)
    schema = fastavro.parse_schema(raw)
    records = []
    for i in range(events):
        given = {'id': f'{event_type}-{i}', 'user_id': f'u{i}', 'external_user_id': f'e{i}',
                 'time': int(DAY.timestamp()) + i}
        records.append({f['name']: given.get(f['name'], _empty(f['type']))
                        for f in raw['fields']})
    buf = io.BytesIO()
    fastavro.writer(buf, schema, records)
    return buf.getvalue()


def _empty(avro_type):
    """A value of this Avro type for a field the record leaves out: null where allowed."""
    if isinstance(avro_type, list):
        return None if 'null' in avro_type else _empty(avro_type[0])
    if isinstance(avro_type, dict):
        return _empty(avro_type['type']) if avro_type['type'] not in ('array', 'map') else (
            [] if avro_type['type'] == 'array' else {})
    return {'string': '', 'boolean': False, 'int': 0, 'long': 0, 'float': 0.0,
            'double': 0.0, 'bytes': b''}.get(avro_type)


def build(output: Path, objects: int, events_per_file: int = 3) -> History:
    """`objects` files under `output`: the day DAY (FILES_PER_HOUR per type and hour, real
    Avro) and, before it, empty history files, newest hours first."""
    output = Path(output)
    base = output / PREFIX
    sources = output / '.sources'
    sources.mkdir(parents=True, exist_ok=True)
    day_files = 24 * len(TYPES) * FILES_PER_HOUR
    if objects < day_files:
        raise ValueError(f'at least {day_files} objects (the day read) are needed')
    links = {}
    real = {}
    for event_type in TYPES:
        real[event_type] = sources / f'{event_type}.avro'
        real[event_type].write_bytes(_avro(event_type, events_per_file))
    empty = sources / 'empty.avro'
    empty.write_bytes(b'')
    made = 0

    def folder(event_type: str, hour: datetime.datetime) -> Path:
        path = (base / f'event_type={event_type}' / f'date={hour:%Y-%m-%d-%H}' / 'version=10'
                / 'us-01')
        path.mkdir(parents=True, exist_ok=True)
        return path

    for h in range(24):
        hour = DAY + datetime.timedelta(hours=h)
        for event_type in TYPES:
            target = folder(event_type, hour)
            for n in range(FILES_PER_HOUR):
                _link_fresh(real[event_type], target / f'day+{h}+{n}.avro', links)
                made += 1
    hour = DAY
    while made < objects:
        hour -= datetime.timedelta(hours=1)
        for event_type in TYPES:
            target = folder(event_type, hour)
            for n in range(min(HISTORY_PER_HOUR, objects - made)):
                _link_fresh(empty, target / f'old+{n}.avro', links)
                made += 1
            if made >= objects:
                break
    return History(output / 'currents', made, day_files, day_files * events_per_file)


def _link_fresh(source: Path, target: Path, links: dict) -> None:
    """Links `target` to `source`, or to a fresh copy once `source` has MAX_LINKS links."""
    inode, count, copies = links.get(source, (source, 0, 0))
    if count >= MAX_LINKS:
        copies += 1
        inode = source.with_name(f'{source.name}.{copies}')
        inode.write_bytes(source.read_bytes())
        count = 0
    os.link(inode, target)
    links[source] = (inode, count + 1, copies)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output', required=True)
    parser.add_argument('--objects', type=int, default=1_000_000)
    args = parser.parse_args(argv)
    found = build(Path(args.output), args.objects)
    print(f'{found.objects:,} objects under {found.root}; the day {DAY:%Y-%m-%d} holds '
          f'{found.day_files} files, {found.day_events} events')
    return 0


if __name__ == '__main__':
    sys.exit(main())
