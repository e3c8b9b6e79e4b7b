"""The end-of-run summary: per event type read / dropped / sent / rejected, and the balance check."""
import json
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Tuple

from apache_beam.metrics.metric import MetricsFilter

from transforms import counts
from transforms.completion import COLUMNS
from transforms.profiles import CLASSIC, row_name, row_names


UNDATED = 'files_without_date_hour'
NOT_STARTED = 'files_not_started_stopped'   # files of waves a stopped run never started
LISTED = ('list_requests', 'objects_listed')   # the listing's cost, launcher and workers
# A replay's own counters (pipeline/replay.py): rejects it refused, left out, or found replayed.
NOT_REPLAYED, NOT_SELECTED, ALREADY_REPLAYED = 'not_replayed', 'not_selected', 'already_replayed'


class Summary:
    """Built from the run's committed counters (attempted where a runner has no committed).

    Rows are the Segment event names of the run's mapping profile; types that share a name
    (LINE and RCS `Sent` under `current`) share a row, custom events are one `Custom Event` row.
    """

    def __init__(self, values: Dict[str, int], mapping: str = CLASSIC,
                 coverage: Optional[Dict[Tuple[str, str], List[int]]] = None,
                 types_skipped: Iterable[str] = (), replay: bool = False):
        self.values = values
        self.mapping = mapping
        self.coverage = coverage or {}     # (Currents type, hour) -> COLUMNS
        self.types_skipped = frozenset(types_skipped)
        self.replay = replay   # a replay's summary also says what it did not replay

    def add(self, other: 'Summary') -> 'Summary':
        merged = defaultdict(int, self.values)
        for name, value in other.values.items():
            merged[name] += value
        coverage = {k: list(v) for k, v in self.coverage.items()}
        for key, figures in other.coverage.items():
            found = coverage.setdefault(key, [0] * len(figures))
            for i, value in enumerate(figures):
                found[i] += value
        return Summary(dict(merged), self.mapping, coverage,
                       self.types_skipped | other.types_skipped, self.replay)

    @classmethod
    def from_counts(cls, mapping: str = CLASSIC, **values: int) -> 'Summary':
        return cls({k: v for k, v in values.items() if v}, mapping)

    @classmethod
    def from_coverage(cls, cells: Iterable[list], mapping: str = CLASSIC) -> 'Summary':
        """A wave's coverage object (transforms/manifest.py WaveDoneFn) as a summary."""
        return cls({}, mapping, {(row[0], row[1]): [int(v) for v in row[2:]] for row in cells})

    @classmethod
    def from_listing(cls, skipped: Dict[str, int], mapping: str = CLASSIC,
                     undated: int = 0) -> 'Summary':
        """Files skipped at listing time count in the summary without ever reaching a worker;
        so do the files read although --start/--end were given (no date= hour in the path)."""
        values = {f'{counts.FILES_SKIPPED}{counts.SEP}{k}': v for k, v in skipped.items()}
        if undated:
            values[UNDATED] = undated
        return cls(values, mapping)

    @classmethod
    def from_result(cls, result, mapping: str = CLASSIC, replay: bool = False) -> 'Summary':
        query = result.metrics().query(MetricsFilter().with_namespace(counts.NAMESPACE))
        values = defaultdict(int)
        for c in query['counters']:
            values[c.key.metric.name] += c.result or 0
        return cls(dict(values), mapping, replay=replay)

    def as_dict(self) -> dict:
        by_event = {}
        totals = defaultdict(int)
        reasons = {}
        skipped = {}
        statuses = {}
        by_kind = {NOT_REPLAYED: {}, NOT_SELECTED: {}}
        for name, value in self.values.items():
            kind, key = counts.split_name(name)
            if kind in (counts.READ, counts.DROPPED, counts.SENT, counts.REJECTED):
                row = by_event.setdefault(row_name(self.mapping, key), {
                    'read': 0, 'dropped_no_external_user_id': 0, 'sent': 0, 'rejected': 0})
                column = 'dropped_no_external_user_id' if kind == counts.DROPPED else kind
                row[column] += value
                totals[column] += value
            elif kind == counts.UNSENT:   # a stopped run: read, not sent, left for --resume
                row = by_event.setdefault(row_name(self.mapping, key), {
                    'read': 0, 'dropped_no_external_user_id': 0, 'sent': 0, 'rejected': 0})
                row['not_sent_stopped'] = row.get('not_sent_stopped', 0) + value
                totals['not_sent_stopped'] += value
            elif kind == counts.REASON:
                reasons[key] = value
            elif kind == counts.FILES_SKIPPED:
                skipped[key] = value
            elif kind == 'requests_by_status':
                statuses[key] = value
            elif kind in by_kind:
                by_kind[kind][key] = value
        order = {}
        for name in row_names(self.mapping).values():
            order.setdefault(name, len(order))
        d = {
            'read': totals['read'],
            'dropped_no_external_user_id': totals['dropped_no_external_user_id'],
            'sent': totals['sent'],
            'rejected': totals['rejected'],
            'files_read': self.values.get(counts.FILES_READ, 0),
            'files_skipped': sum(skipped.values()),
            'files_rejected': self.values.get(counts.FILES_REJECTED, 0),
            'by_event': dict(sorted(by_event.items(), key=lambda kv: order.get(kv[0], len(order)))),
            'rejected_by_reason': dict(sorted(reasons.items())),
            'files_skipped_by_reason': {
                {'skip_type': 'other_event_type', 'skip_range': 'outside_start_end',
                 'skip_not_avro': 'not_avro_name', 'skip_done': 'completed_by_earlier_run'}.get(k, k): v
                for k, v in sorted(skipped.items())},
            'files_without_date_hour': self.values.get(UNDATED, 0),
            'not_sent_stopped': totals['not_sent_stopped'],
            'files_not_read_stopped': (self.values.get(counts.FILES_UNREAD, 0)
                                       + self.values.get(NOT_STARTED, 0)),
            'requests': self.values.get('requests', 0),
            'requests_retried': self.values.get('requests_retried', 0),
            'requests_by_status': dict(sorted(statuses.items())),
            'event_types_not_selected': sorted(self.types_skipped),
            'list_requests': self.values.get(counts.LIST_REQUESTS, 0),
            'objects_listed': self.values.get(counts.OBJECTS_LISTED, 0),
            'recorded_files': self.values.get(counts.RECORDED_FILES, 0),
            'recorded_events': self.values.get(counts.RECORDED_EVENTS, 0),
            'unfinished_files': self.values.get(counts.UNFINISHED_FILES, 0),
            'unfinished_events': self.values.get(counts.UNFINISHED_EVENTS, 0),
            **({} if self.replay else {'by_hour': self.by_hour(order)}),
        }
        if self.replay:
            d.update({NOT_REPLAYED: dict(sorted(by_kind[NOT_REPLAYED].items())),
                      NOT_SELECTED: dict(sorted(by_kind[NOT_SELECTED].items())),
                      ALREADY_REPLAYED: self.values.get(ALREADY_REPLAYED, 0)})
        return d

    def by_hour(self, order: Dict[str, int]) -> dict:
        """The coverage per Segment event and date= hour (UNDATED for files without one)."""
        events: Dict[str, Dict[str, List[int]]] = {}
        for (event_type, hour), figures in sorted(self.coverage.items()):
            row = events.setdefault(row_name(self.mapping, event_type), {})
            found = row.setdefault(hour, [0] * len(figures))
            for i, value in enumerate(figures):
                found[i] += value
        return {'columns': list(COLUMNS),
                'events': dict(sorted(events.items(),
                                      key=lambda kv: order.get(kv[0], len(order))))}

    @property
    def balanced(self) -> bool:
        """read = dropped + sent + rejected (+ read but not sent, when a run was stopped)."""
        d = self.as_dict()
        if d['read'] != (d['dropped_no_external_user_id'] + d['sent'] + d['rejected']
                         + d['not_sent_stopped']):
            return False
        return all(r['read'] == r['dropped_no_external_user_id'] + r['sent'] + r['rejected']
                   + r.get('not_sent_stopped', 0) for r in d['by_event'].values())

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def table(self) -> str:
        d = self.as_dict()
        w = max([34] + [len(name) + 2 for name in d['by_event']])
        head = f'{"Segment event":<{w}}{"read":>10}{"dropped":>10}{"sent":>10}{"rejected":>10}'
        lines = [head, '-' * len(head)]
        for name, r in d['by_event'].items():
            lines.append(f'{name:<{w}}{r["read"]:>10}{r["dropped_no_external_user_id"]:>10}'
                         f'{r["sent"]:>10}{r["rejected"]:>10}')
        lines.append('-' * len(head))
        lines.append(f'{"total":<{w}}{d["read"]:>10}{d["dropped_no_external_user_id"]:>10}'
                     f'{d["sent"]:>10}{d["rejected"]:>10}')
        skipped = ', '.join(f'{k} {v}' for k, v in d['files_skipped_by_reason'].items() if v)
        lines.append(f'files: {d["files_read"]} read, {d["files_skipped"]} skipped'
                     + (f' ({skipped})' if skipped else '') + f', {d["files_rejected"]} unreadable')
        if d['files_without_date_hour']:
            lines.append(f'read regardless: no date= hour in path: '
                         f'{d["files_without_date_hour"]} files (--start/--end cannot prune them)')
        if d['not_sent_stopped'] or d['files_not_read_stopped'] or d['unfinished_files']:
            lines.append(f'stopped: {d["recorded_files"]} files ({d["recorded_events"]} events) '
                         f'recorded as done; not done: {d["unfinished_files"]} files part way '
                         f'({d["unfinished_events"]} of their events already sent, dropped or '
                         f'rejected will be sent again by --resume), {d["not_sent_stopped"]} '
                         f'events read but not sent, {d["files_not_read_stopped"]} files not '
                         f'read')
        if self.replay:
            for title, key in (('not replayed', NOT_REPLAYED),
                               ('not selected by --reasons', NOT_SELECTED)):
                if d[key]:
                    lines.append(f'{title}: ' + '; '.join(f'{k} {v}' for k, v in d[key].items()))
            if d[ALREADY_REPLAYED]:
                lines.append(f'replayed already (skipped): {d[ALREADY_REPLAYED]} rejects')
        if d['rejected_by_reason']:
            lines.append('rejects by reason: ' + ', '.join(
                f'{k} {v}' for k, v in d['rejected_by_reason'].items()))
        if d['list_requests']:
            lines.append(f'listing: {d["list_requests"]} LIST requests, {d["objects_listed"]} '
                         f'objects' + (f'; event types not read: '
                                       f'{len(d["event_types_not_selected"])} folders'
                                       if d['event_types_not_selected'] else ''))
        if d['requests']:
            lines.append(f'requests: {d["requests"]} ({d["requests_retried"]} retried; by answer: '
                         + ', '.join(f'{k} {v}' for k, v in d['requests_by_status'].items()) + ')')
        lines.append('balance: read = dropped + sent + rejected '
                     + ('+ not sent (stopped) ' if d['not_sent_stopped'] else '') +
                     ('OK' if self.balanced else 'MISMATCH'))
        return '\n'.join(lines)
