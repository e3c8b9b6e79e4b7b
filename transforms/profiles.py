"""Mapping profiles: which Currents types a run reads and what Segment `track` call each becomes.

- `classic`: the 34 events of Braze's "Segment for Currents" document; its table is
  `transforms/events.py` (every property a string).
- `current`: the 80 types Braze's connector documents today, one entry per type in
  `connector_current.json` (data shipped with the package): Segment event name, message context
  paths and properties, each `Segment name -> Avro field`, values kept as Avro typed them.

The tables are data; `mapping.py` holds one mapper per profile. docs/mapping.md, "Which profile".
"""
import json
from pathlib import Path
from typing import Dict, FrozenSet, NamedTuple, Optional, Tuple

from transforms.events import EVENTS as CLASSIC_EVENTS

CLASSIC, CURRENT = 'classic', 'current'
PROFILES = (CLASSIC, CURRENT)
CURRENT_TABLE = Path(__file__).with_name('connector_current.json')
# Custom events are named by the record's `name`; their summary row is this.
CUSTOM_EVENT_TYPE = 'users.behaviors.CustomEvent'
CUSTOM_EVENT_ROW = 'Custom Event'


class CurrentSpec(NamedTuple):
    """One Currents type under the `current` profile."""
    currents_type: str
    segment_event: Optional[str]          # None: the record's `name` (custom events)
    context: Tuple[Tuple[str, str], ...]  # (message path, e.g. context.traits.phone; Avro field)
    properties: Tuple[Tuple[str, str], ...]  # (Segment property name, Avro field)
    absent_from_writer_schema: Tuple[str, ...] = ()

    @property
    def row(self) -> str:
        """The summary row (and docs/mapping.md name) of this type."""
        return self.segment_event if self.segment_event is not None else CUSTOM_EVENT_ROW


def _load_current() -> Tuple[CurrentSpec, ...]:
    with open(CURRENT_TABLE, encoding='utf-8') as f:
        table = json.load(f)
    specs = []
    for entry in table['events']:
        for path in entry['context']:
            if not path.startswith('context.') or len(path.split('.')) < 3:
                raise ValueError(f'{entry["currents_type"]}: context path {path!r} is not '
                                 f'context.<object>.<key>')
        specs.append(CurrentSpec(
            entry['currents_type'], entry['segment_event'],
            tuple(entry['context'].items()), tuple(entry['properties'].items()),
            tuple(entry.get('properties_absent_from_writer_schema', ()))))
    return tuple(specs)


CURRENT_EVENTS: Tuple[CurrentSpec, ...] = _load_current()


def currents_types(profile: str) -> Tuple[str, ...]:
    """The Currents types a profile maps, in its table's order."""
    if profile == CURRENT:
        return tuple(s.currents_type for s in CURRENT_EVENTS)
    if profile == CLASSIC:
        return tuple(e.currents_type for e in CLASSIC_EVENTS)
    raise ValueError(f'unknown mapping profile {profile!r} (known: {", ".join(PROFILES)})')


def row_names(profile: str) -> Dict[str, str]:
    """Currents type -> the summary row (Segment event name) under a profile, in table order.

    Types that share a Segment event name (LINE and RCS `Sent`, ...) share a row.
    """
    if profile == CURRENT:
        return {s.currents_type: s.row for s in CURRENT_EVENTS}
    currents_types(profile)  # refuses an unknown profile
    return {e.currents_type: e.segment_event for e in CLASSIC_EVENTS}


def row_name(profile: str, event_type: str) -> str:
    """The row of a type under a profile; a type the profile lacks keeps another profile's name."""
    for name in (profile,) + tuple(p for p in PROFILES if p != profile):
        found = _ROWS[name].get(event_type)
        if found is not None:
            return found
    return event_type or 'unknown'


def resolve_event_types(profile: str, name: str) -> FrozenSet[str]:
    """The Currents types a user-given Segment event name or Currents type means (any case).

    A shared Segment name (`Sent`, `Clicked`, `Aborted`) means every type that sends it.
    """
    wanted = name.strip().lower()
    return frozenset(t for t, row in _ROWS[profile].items()
                     if wanted in (t.lower(), row.lower()))


_ROWS = {p: row_names(p) for p in PROFILES}
