"""Listing and decoding a Currents export without Beam, shared by the two non-Beam variants.

The same decisions as the pipeline's reader (pipeline.paths.FileSelector on the path, the
writer schema's full name when the path has no event_type=), with os.walk instead of Beam's
filesystems (local folders only) so a plain-Python run does not pay for importing Beam.
"""
import json
import os
from typing import Iterator, List, Optional, Tuple

import fastavro

from transforms.events import EVENTS, event_type_from_schema_name
from pipeline.paths import FileSelector

ALL_TYPES = frozenset(e.currents_type for e in EVENTS)


def list_files(input_dir: str) -> Tuple[List[Tuple[str, Optional[str]]], int]:
    """([(path, event type or None if the path does not say)], files skipped), sorted by path."""
    selector = FileSelector(ALL_TYPES)
    paths = []
    if os.path.isfile(input_dir):
        paths.append(input_dir)
    for root, _, names in os.walk(input_dir):
        paths.extend(os.path.join(root, n) for n in names)
    files, skipped = [], 0
    for path in sorted(paths):
        decision = selector.decide(path)
        if decision.action.startswith('skip_'):
            skipped += 1
        else:
            files.append((path, decision.event_type))
    return files, skipped


def iter_records(files) -> Iterator[Tuple[str, dict]]:
    """(event type, record) for every record of the listed files (fastavro, by field name)."""
    for path, event_type in files:
        with open(path, 'rb') as fh:
            reader = fastavro.reader(fh)
            if event_type is None:
                schema = reader.writer_schema
                event_type = event_type_from_schema_name(
                    schema.get('name', '') if isinstance(schema, dict) else '')
                if event_type is None:
                    continue
            for record in reader:
                yield event_type, record


def report(summary: dict, path: Optional[str]) -> None:
    """A variant's one-line JSON summary on stdout (what bench.run parses), and to a file if asked."""
    text = json.dumps(summary)
    print(text)
    if path:
        with open(path, 'w') as fh:
            fh.write(text)
