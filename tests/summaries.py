"""Summaries as a run writes them (--summary_output), per-hour counts included, built from a
description: which types, which hours, and holes made on purpose. For the gap and report tests.

`by_hour` follows the summary format: per Segment event, per `date=` hour ('YYYY-MM-DD-HH', or
'undated'), the counts of COLUMNS; hours without a file are absent; every total is the sum of
its hours, so the summary balances.
"""
import datetime
import math
import random
from typing import Dict, Iterable, Optional, Sequence, Set, Tuple

from pipeline.coverage import COLUMNS, HOUR, UNDATED, hour_key

Cell = Tuple[str, str]   # (event, hour key)


def poisson(rng: random.Random, mean: float) -> int:
    """Events in an hour of a type averaging `mean` (Knuth's method; normal above 30)."""
    if mean > 30:
        return max(0, int(round(rng.gauss(mean, math.sqrt(mean)))))
    limit, n, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        n += 1
        p *= rng.random()
    return n


def hour_keys(start: str, hours: int):
    first = datetime.datetime.strptime(start, '%Y-%m-%d-%H')
    return [hour_key(first + i * HOUR) for i in range(hours)]


def make_summary(events: Sequence[str], hours: int, start: str = '2024-05-01-00',
                 per_hour: int = 100, seed: int = 0, missing: Iterable[Cell] = (),
                 stops: Optional[Dict[str, str]] = None, starts: Optional[Dict[str, str]] = None,
                 all_rejected: Iterable[Cell] = (), unreadable: Iterable[Cell] = (),
                 undated: Iterable[str] = (), rates: Optional[Dict[str, float]] = None,
                 columns: Sequence[str] = COLUMNS) -> dict:
    """A summary of `events` over `hours` hours from `start`, about `per_hour` events read per
    type and hour (times `rates[event]`, a type's share; a rate under 1/per_hour leaves hours
    without a file by chance). Holes on purpose: `missing` cells have no file, `stops[e]` is the
    first hour with no file of `e` to the end, `starts[e]` its first hour with a file;
    `all_rejected` cells sent nothing (every event not dropped rejected `message_too_large`),
    `unreadable` cells hold one file that was an unreadable_file reject (no event read).
    `undated` types also have files without a date= hour."""
    rng = random.Random(seed)
    keys = hour_keys(start, hours)
    stops, starts, rates = stops or {}, starts or {}, rates or {}
    missing, rejected_cells = set(missing), set(all_rejected)
    unreadable_cells: Set[Cell] = set(unreadable)
    by_hour: Dict[str, Dict[str, list]] = {}
    reasons = {'message_too_large': 0, 'segment_rejected': 0, 'unreadable_file': 0}
    for event in events:
        cells = {}
        for key in keys + ([UNDATED] if event in undated else []):
            if key != UNDATED and ((event, key) in missing
                                   or (event in stops and key >= stops[event])
                                   or (event in starts and key < starts[event])):
                continue
            if (event, key) in unreadable_cells:
                row = {'files': 1, 'files_rejected': 1, 'read': 0,
                       'dropped_no_external_user_id': 0, 'sent': 0, 'rejected': 0}
                reasons['unreadable_file'] += 1
            else:
                mean = per_hour * rates.get(event, 1.0)
                read = poisson(rng, mean)
                if read == 0:
                    continue   # Braze writes no file for an hour without events
                dropped = rng.randint(0, read // 5)
                if (event, key) in rejected_cells:
                    rejected, reason = read - dropped, 'message_too_large'
                else:
                    rejected = rng.choice((0, 0, 0, 1)) if read - dropped > 1 else 0
                    reason = 'segment_rejected'
                reasons[reason] += rejected
                row = {'files': 1 + read // 400, 'files_rejected': 0, 'read': read,
                       'dropped_no_external_user_id': dropped,
                       'sent': read - dropped - rejected, 'rejected': rejected}
            cells[key] = [row[c] for c in columns]
        if cells:
            by_hour[event] = cells
    by_event = {}
    for event in events:
        rows = [dict(zip(columns, v)) for v in by_hour.get(event, {}).values()]
        if rows:
            by_event[event] = {k: sum(r[k] for r in rows) for k in
                               ('read', 'dropped_no_external_user_id', 'sent', 'rejected')}
    all_rows = [dict(zip(columns, v)) for cells in by_hour.values() for v in cells.values()]
    total = {k: sum(r[k] for r in all_rows) for k in
             ('read', 'dropped_no_external_user_id', 'sent', 'rejected', 'files',
              'files_rejected')}
    sent = total['sent']
    requests = max(1, sent // 900) if sent else 0
    retried = requests // 20
    return {
        'read': total['read'], 'dropped_no_external_user_id': total['dropped_no_external_user_id'],
        'sent': sent, 'rejected': total['rejected'],
        'files_read': total['files'] - total['files_rejected'], 'files_skipped': 3,
        'files_rejected': total['files_rejected'],
        'by_event': by_event,
        'rejected_by_reason': {k: v for k, v in sorted(reasons.items()) if v},
        'files_skipped_by_reason': {'other_event_type': 2, 'not_avro_name': 1},
        'files_without_date_hour': 0, 'not_sent_stopped': 0, 'files_not_read_stopped': 0,
        'requests': requests + retried, 'requests_retried': retried,
        'requests_by_status': {k: v for k, v in (('200', requests), ('429', retried)) if v},
        'by_hour': {'columns': list(columns), 'events': by_hour},
    }
