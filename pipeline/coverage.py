"""Gaps in a backfill's coverage: hours of an event type Braze wrote no file for, types that stop
or start inside the range, hours where nothing got through (docs/report.md, "What counts as a gap").

Pure functions over hours, so the same rules serve the end-of-run report (from the summary's
per-hour counts) and `--plan` (from the listing alone, before anything is sent).

What counts as a gap, per event type:
- missing hours: a run of hours with no file, with a file in the hour just before and the hour
  just after it;
- stopped: no file from some hour to the last hour of the range;
- started late: no file from the first hour of the range to some hour.
A run of k empty hours counts only when a type averaging λ events an hour (its events over the
hours from its first to its last file) would almost never leave it empty by chance: λ·k ≥ 12,
i.e. at least 12 events expected in those hours (a Poisson chance of e^-12, ~6 in a million).
So a type of 12 events an hour or more has every empty hour flagged, a type of 1 an hour only
runs of 12 hours or more, and a type of a few events a day none. Without event counts (`--plan`
given only hours), every such run counts.
And, from the summary's counts, per event type and hour:
- all rejected: events were rejected and none was sent (every event not dropped for a missing
  external_user_id was rejected);
- files unreadable: every file of the hour was an `unreadable_file` reject.
Runs of consecutive hours are one gap; gaps of the same kind over the same hours are merged into
one record naming every type.
"""
import datetime
import functools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from transforms.completion import COLUMNS  # noqa: F401  the summary's by_hour columns
from transforms.layout import UNDATED       # the by_hour key of files without a date= hour

HOUR = datetime.timedelta(hours=1)
HOUR_FORMAT = '%Y-%m-%d-%H'
MIN_EXPECTED_EVENTS = 12  # λ·k below this: empty hours a type plausibly has by chance

MISSING, STOPPED, STARTED_LATE = 'missing_hours', 'stopped', 'started_late'
ALL_REJECTED, UNREADABLE = 'all_rejected', 'files_unreadable'
KINDS = (MISSING, STOPPED, STARTED_LATE, ALL_REJECTED, UNREADABLE)
NAMES_IN_TEXT = 3         # a merged gap's text names this many types, then "and N more"

Hour = Union[str, datetime.datetime]


@functools.lru_cache(maxsize=1 << 16)
def parse_hour(text: str) -> datetime.datetime:
    """'YYYY-MM-DD-HH' (a by_hour key) as a naive UTC datetime; ValueError otherwise.
    A year of by_hour keys holds ~9,000 different hours: each is parsed once."""
    if not isinstance(text, str) or len(text) != 13:
        raise ValueError(f'not a YYYY-MM-DD-HH hour: {text!r}')
    return datetime.datetime.strptime(text, HOUR_FORMAT)


def hour_key(hour: datetime.datetime) -> str:
    return hour.strftime(HOUR_FORMAT)


def _as_hour(value: Hour) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value.replace(minute=0, second=0, microsecond=0, tzinfo=None)
    return parse_hour(value)


def _span(first: datetime.datetime, last: datetime.datetime) -> int:
    """Hours from `first` to `last`, both included."""
    return int((last - first) / HOUR) + 1


@dataclass(frozen=True)
class Gap:
    """One gap: a kind, the event type(s) it concerns and the hours it covers (inclusive)."""
    kind: str
    events: Tuple[str, ...]
    first: datetime.datetime
    last: datetime.datetime
    rejected: int = 0     # all_rejected: events rejected in those hours

    @property
    def hours(self) -> int:
        return _span(self.first, self.last)

    def hour_keys(self) -> List[str]:
        return [hour_key(self.first + i * HOUR) for i in range(self.hours)]

    @property
    def who(self) -> str:
        if len(self.events) == 1:
            return self.events[0]
        named = ', '.join(self.events[:NAMES_IN_TEXT])
        more = len(self.events) - NAMES_IN_TEXT
        return f'{len(self.events)} types ({named}{f" and {more} more" if more > 0 else ""})'

    @property
    def when(self) -> str:
        n = f'{self.hours} hour{"s" if self.hours != 1 else ""}'
        if self.hours == 1:
            return f'in {hour_key(self.first)} (1 hour)'
        return f'from {hour_key(self.first)} to {hour_key(self.last)} ({n})'

    @property
    def text(self) -> str:
        """The gap in one line, e.g. `Email Opened: no file in 2024-05-01-05 (1 hour), ...`."""
        what = {
            MISSING: 'no file {when}, with files the hour before and the hour after',
            STOPPED: 'stops: no file {when}, to the end of the range',
            STARTED_LATE: 'starts late: no file {when}, from the start of the range',
            ALL_REJECTED: 'every event rejected {when}: {rejected:,} rejected, none sent',
            UNREADABLE: 'every file unreadable {when}',
        }[self.kind]
        return f'{self.who}: ' + what.format(when=self.when, rejected=self.rejected)

    def as_dict(self) -> dict:
        return {'kind': self.kind, 'events': list(self.events), 'first': hour_key(self.first),
                'last': hour_key(self.last), 'hours': self.hours, 'rejected': self.rejected,
                'text': self.text}


def _runs(hours: Sequence[datetime.datetime]) -> List[Tuple[datetime.datetime, datetime.datetime]]:
    """Consecutive runs (first, last) of sorted distinct hours."""
    runs = []
    for hour in hours:
        if runs and hour - runs[-1][1] == HOUR:
            runs[-1] = (runs[-1][0], hour)
        else:
            runs.append((hour, hour))
    return runs


def _empty_runs(event: str, hours: Sequence[datetime.datetime], first: datetime.datetime,
                last: datetime.datetime, events: Optional[int]) -> List[Gap]:
    """Missing hours, a stop and a late start of one type whose files cover sorted `hours`."""
    if not hours:
        return []
    per_hour = math.inf if events is None else events / _span(hours[0], hours[-1])
    found = []

    def add(kind, start, end):
        if per_hour * _span(start, end) >= MIN_EXPECTED_EVENTS:
            found.append(Gap(kind, (event,), start, end))

    if hours[0] > first:
        add(STARTED_LATE, first, hours[0] - HOUR)
    for before, after in zip(hours, hours[1:]):
        if after - before > HOUR:
            add(MISSING, before + HOUR, after - HOUR)
    if hours[-1] < last:
        add(STOPPED, hours[-1] + HOUR, last)
    return found


def _merge(gaps: Iterable[Gap], order: Mapping[str, int]) -> List[Gap]:
    """Gaps of one kind over the same hours become one record naming every type."""
    groups: Dict[tuple, List[Gap]] = defaultdict(list)
    for gap in gaps:
        groups[(gap.kind, gap.first, gap.last)].append(gap)
    merged = []
    for (kind, first, last), group in groups.items():
        events = sorted({e for g in group for e in g.events}, key=lambda e: (order.get(e, 0), e))
        merged.append(Gap(kind, tuple(events), first, last, sum(g.rejected for g in group)))
    return sorted(merged, key=lambda g: (g.first, KINDS.index(g.kind), g.last,
                                         [order.get(e, 0) for e in g.events]))


def gaps_from_hours(hours_by_event: Mapping[str, Iterable[Hour]],
                    events_by_event: Optional[Mapping[str, int]] = None,
                    start: Optional[Hour] = None, end: Optional[Hour] = None) -> List[Gap]:
    """Missing hours, stops and late starts from the hours with files of each type.

    For `--plan`: `hours_by_event` maps each type (or Segment event) to the `date=` hours of its
    listed files (datetimes or 'YYYY-MM-DD-HH'); `events_by_event`, if given, its estimated
    events (types not in it count as busy: every empty run is a gap). The range is `start`
    (inclusive) to `end` (exclusive), as --start/--end, or else the first to the last hour with
    any file.
    """
    order = {event: i for i, event in enumerate(hours_by_event)}
    hours = {event: sorted({_as_hour(h) for h in values})
             for event, values in hours_by_event.items()}
    every = [h for values in hours.values() for h in values]
    if not every and (start is None or end is None):
        return []
    first = _as_hour(start) if start is not None else min(every)
    last = _as_hour(end) - HOUR if end is not None else max(every)
    gaps = []
    for event, values in hours.items():
        events = None if events_by_event is None else events_by_event.get(event)
        gaps += _empty_runs(event, [h for h in values if first <= h <= last], first, last,
                            events)
    return _merge(gaps, order)


def cells(by_hour: Mapping) -> Dict[str, Dict[str, Dict[str, int]]]:
    """The summary's `by_hour` as {event: {hour key: {column: n}}} (columns read by name)."""
    columns = list(by_hour['columns'])
    return {event: {hour: dict(zip(columns, values)) for hour, values in per_hour.items()}
            for event, per_hour in by_hour['events'].items()}


def gaps_from_summary(by_hour: Mapping) -> List[Gap]:
    """Every gap in a summary's `by_hour`: the range is its first to its last dated hour."""
    table = cells(by_hour)
    order = {event: i for i, event in enumerate(table)}
    dated = {event: {parse_hour(h): c for h, c in per_hour.items() if h != UNDATED}
             for event, per_hour in table.items()}
    hours_by_event = {event: [h for h, c in per_hour.items() if c['files'] > 0]
                      for event, per_hour in dated.items()}
    events = {event: sum(c['read'] for c in per_hour.values())
              for event, per_hour in dated.items()}
    found = gaps_from_hours(hours_by_event, events)
    for event, per_hour in dated.items():
        flagged = defaultdict(list)
        for hour, c in per_hour.items():
            if c['files'] > 0 and c['files_rejected'] >= c['files']:
                flagged[UNREADABLE].append(hour)
            elif c['rejected'] > 0 and c['sent'] == 0:
                flagged[ALL_REJECTED].append(hour)
        for kind, hours in flagged.items():
            for first, last in _runs(sorted(hours)):
                rejected = sum(per_hour[first + i * HOUR]['rejected']
                               for i in range(_span(first, last)))
                found.append(Gap(kind, (event,), first, last,
                                 rejected if kind == ALL_REJECTED else 0))
    return _merge(found, order)
