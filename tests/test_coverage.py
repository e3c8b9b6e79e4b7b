"""Gaps in coverage (pipeline/coverage.py): found exactly where holes were made, none elsewhere."""
import datetime
import io
import json
from collections import defaultdict
from pathlib import Path

import fastavro
import pytest

from devtools import sample
from devtools.receiver import SegmentReceiver
from pipeline.main import run
from pipeline.coverage import (ALL_REJECTED, COLUMNS, MISSING, STARTED_LATE, STOPPED,
                               UNDATED, UNREADABLE, Gap, gaps_from_hours, gaps_from_summary,
                               parse_hour)
from pipeline.paths import event_type_from_path, hour_from_path
from tests.summaries import hour_keys, make_summary
from transforms.events import EVENTS
from transforms.mapping import MAX_MESSAGE_ID_CHARS
from transforms.profiles import CLASSIC, row_name

NAMES = [e.segment_event for e in EVENTS]     # the 34 classic rows
H = parse_hour


def found(gaps):
    return [(g.kind, g.events, g.first, g.last) for g in gaps]


# ------------------------------------------------------------ generated summaries, holes on purpose
def test_holes_made_on_purpose_are_found_exactly():
    summary = make_summary(
        NAMES, 24, missing=[('Email Opened', '2024-05-01-05'), ('Email Opened', '2024-05-01-06'),
                            ('Webhook Sent', '2024-05-01-20')],
        stops={'SMS Delivered': '2024-05-01-16'}, starts={'Canvas Entered': '2024-05-01-03'},
        all_rejected=[('Content Card Sent', '2024-05-01-09'), ('Content Card Sent',
                                                                '2024-05-01-10')],
        unreadable=[('Email Sent', '2024-05-01-12')], seed=3)
    gaps = gaps_from_summary(summary['by_hour'])
    assert found(gaps) == [
        (STARTED_LATE, ('Canvas Entered',), H('2024-05-01-00'), H('2024-05-01-02')),
        (MISSING, ('Email Opened',), H('2024-05-01-05'), H('2024-05-01-06')),
        (ALL_REJECTED, ('Content Card Sent',), H('2024-05-01-09'), H('2024-05-01-10')),
        (UNREADABLE, ('Email Sent',), H('2024-05-01-12'), H('2024-05-01-12')),
        (STOPPED, ('SMS Delivered',), H('2024-05-01-16'), H('2024-05-01-23')),
        (MISSING, ('Webhook Sent',), H('2024-05-01-20'), H('2024-05-01-20')),
    ]
    texts = [g.text for g in gaps]
    assert texts[0] == ('Canvas Entered: starts late: no file from 2024-05-01-00 to '
                        '2024-05-01-02 (3 hours), from the start of the range')
    assert texts[1] == ('Email Opened: no file from 2024-05-01-05 to 2024-05-01-06 (2 hours), '
                        'with files the hour before and the hour after')
    rejected = sum(summary['by_hour']['events']['Content Card Sent'][h][5]
                   for h in ('2024-05-01-09', '2024-05-01-10'))
    assert gaps[2].rejected == rejected > 0
    assert texts[2] == (f'Content Card Sent: every event rejected from 2024-05-01-09 to '
                        f'2024-05-01-10 (2 hours): {rejected:,} rejected, none sent')
    assert texts[3] == 'Email Sent: every file unreadable in 2024-05-01-12 (1 hour)'
    assert texts[4] == ('SMS Delivered: stops: no file from 2024-05-01-16 to 2024-05-01-23 '
                        '(8 hours), to the end of the range')
    assert gaps[5].hour_keys() == ['2024-05-01-20'] and gaps[1].hours == 2


@pytest.mark.parametrize('seed', range(5))
def test_no_gap_in_data_without_holes_even_for_rare_types(seed):
    """Rare types (a few events a day) have empty hours by nature: not gaps."""
    rates = {name: r for name, r in zip(NAMES[-8:], (0.002, 0.005, 0.01, 0.02, 0.03, 0.05,
                                                      0.08, 0.1))}
    summary = make_summary(NAMES, 72, per_hour=120, seed=seed, rates=rates,
                           undated=['Email Sent'])
    assert any(len(h) < 72 for h in summary['by_hour']['events'].values())   # empty hours exist
    assert gaps_from_summary(summary['by_hour']) == []


def test_a_whole_hour_missing_for_every_type_is_one_gap_naming_them_all():
    """A paused connector: the same hours missing everywhere, one line."""
    hours = ['2024-05-02-07', '2024-05-02-08']
    summary = make_summary(NAMES, 48, missing=[(n, h) for n in NAMES for h in hours],
                           rates={'News Feed Card Clicked': 0.01})   # too rare to be expected
    gaps = gaps_from_summary(summary['by_hour'])
    assert len(gaps) == 1
    gap = gaps[0]
    assert (gap.kind, gap.first, gap.last) == (MISSING, H(hours[0]), H(hours[1]))
    assert gap.events == tuple(n for n in NAMES if n != 'News Feed Card Clicked')
    assert gap.text == ('33 types (Push Notification Sent, Push Notification Tapped, Push '
                        'Notification Bounced and 30 more): no file from 2024-05-02-07 to '
                        '2024-05-02-08 (2 hours), with files the hour before and the hour after')


def test_columns_are_read_by_name():
    summary = make_summary(NAMES[:3], 6, columns=tuple(reversed(COLUMNS)),
                           all_rejected=[(NAMES[1], '2024-05-01-02')])
    assert found(gaps_from_summary(summary['by_hour'])) == [
        (ALL_REJECTED, (NAMES[1],), H('2024-05-01-02'), H('2024-05-01-02'))]


def test_dropped_only_and_undated_cells_are_not_gaps():
    by_hour = {'columns': list(COLUMNS), 'events': {'Email Sent': {
        '2024-05-01-00': [1, 0, 50, 0, 50, 0],
        '2024-05-01-01': [1, 0, 50, 50, 0, 0],       # every event dropped: by design
        '2024-05-01-02': [1, 0, 50, 0, 49, 1],       # one rejected, others sent
        UNDATED: [1, 1, 0, 0, 0, 0]}}}               # no hour: never a gap
    assert gaps_from_summary(by_hour) == []
    by_hour['events']['Email Sent']['2024-05-01-01'] = [2, 1, 50, 10, 0, 40]
    assert found(gaps_from_summary(by_hour)) == [
        (ALL_REJECTED, ('Email Sent',), H('2024-05-01-01'), H('2024-05-01-01'))]


# -------------------------------------------------------------------- the expected-events rule
def _hours(*indexes):
    return [datetime.datetime(2024, 5, 1) + datetime.timedelta(hours=i) for i in indexes]


def test_a_run_counts_from_12_expected_events():
    """12 hours from the first to the last file: 144 events is 12 an hour, so one empty hour
    is expected to hold 12 (a gap); 143 is 11.9 (not)."""
    hours = {'A': _hours(*range(10), 11)}
    assert found(gaps_from_hours(hours, {'A': 144})) == [
        (MISSING, ('A',), *_hours(10, 10))]
    assert gaps_from_hours(hours, {'A': 143}) == []
    # two empty hours at 6 an hour: 72 events over 12 hours
    hours = {'B': _hours(*range(9), 11)}
    assert found(gaps_from_hours(hours, {'B': 72})) == [(MISSING, ('B',), *_hours(9, 10))]
    assert gaps_from_hours(hours, {'B': 71}) == []


def test_stops_and_late_starts_use_the_rate_while_the_type_had_files():
    every = {'busy': _hours(*range(24))}
    # 16 hours of files, 24 events: 1.5 an hour, so 8 empty hours hold 12 expected events
    stops = dict(every, late=_hours(*range(8, 24)), early=_hours(*range(16)))
    assert found(gaps_from_hours(stops, {'busy': 2400, 'late': 24, 'early': 24})) == [
        (STARTED_LATE, ('late',), *_hours(0, 7)), (STOPPED, ('early',), *_hours(16, 23))]
    assert gaps_from_hours(stops, {'busy': 2400, 'late': 23, 'early': 23}) == []
    # the last hour missing at 12 an hour: stops for 1 hour
    assert found(gaps_from_hours({'a': _hours(0, 1, 2, 3), 'b': _hours(0, 1, 2)},
                                 {'a': 4, 'b': 36})) == [(STOPPED, ('b',), *_hours(3, 3))]


def test_without_counts_every_empty_run_counts():
    """--plan from the listing alone: no event counts, every empty run is a gap."""
    hours = {'Email Sent': ['2024-05-01-00', '2024-05-01-02'],
             'SMS Sent': [datetime.datetime(2024, 5, 1, 1, 30)]}   # any time in the hour
    assert found(gaps_from_hours(hours)) == [
        (STARTED_LATE, ('SMS Sent',), *_hours(0, 0)),
        (MISSING, ('Email Sent',), *_hours(1, 1)),
        (STOPPED, ('SMS Sent',), *_hours(2, 2))]
    assert found(gaps_from_hours(hours, {'Email Sent': 2})) == [
        (STARTED_LATE, ('SMS Sent',), *_hours(0, 0)), (STOPPED, ('SMS Sent',), *_hours(2, 2))]


def test_the_range_given_as_start_and_end():
    """--start inclusive, --end exclusive: hours with no file at the ends are gaps of every
    type; files outside the range are not looked at."""
    hours = {'a': _hours(2, 3, 4, 9), 'b': _hours(2, 3, 4)}
    gaps = gaps_from_hours(hours, start='2024-05-01-00', end=datetime.datetime(2024, 5, 1, 6))
    assert found(gaps) == [(STARTED_LATE, ('a', 'b'), *_hours(0, 1)),
                           (STOPPED, ('a', 'b'), *_hours(5, 5))]
    assert gaps[0].text.startswith('2 types (a, b): starts late')
    assert found(gaps_from_hours(hours, start='2024-05-01-02', end='2024-05-01-05')) == []
    assert gaps_from_hours({}, start='2024-05-01-00', end='2024-05-01-05') == []
    assert gaps_from_hours({}) == []


def test_bad_hours_are_refused():
    for bad in ('2024-05-01', '2024-05-01-24', '2024-13-01-00', 'undated', '<b>2024-05-01</b>'):
        with pytest.raises(ValueError):
            gaps_from_hours({'a': [bad]})


def test_gap_record_as_dict():
    gap = Gap(MISSING, ('a',), H('2024-05-01-23'), H('2024-05-02-01'))
    assert gap.as_dict() == {'kind': MISSING, 'events': ['a'], 'first': '2024-05-01-23',
                             'last': '2024-05-02-01', 'hours': 3, 'rejected': 0,
                             'text': 'a: no file from 2024-05-01-23 to 2024-05-02-01 (3 hours), '
                                     'with files the hour before and the hour after'}


# ------------------------------------------------------------- a generated tree, gaps on purpose
def _tree_hours(root):
    """{Segment event: hours with a file}, from the paths alone (what --plan sees)."""
    hours = defaultdict(set)
    for path in Path(root).rglob('*.avro'):
        event_type = event_type_from_path(str(path))
        if event_type in sample.TYPE_WEIGHTS:
            hours[row_name(CLASSIC, event_type)].add(hour_from_path(str(path)))
    return hours


def _tree_by_hour(root):
    """by_hour as a run counts it, from the files' records: dropped without external_user_id,
    rejected with an id past a messageId's 100 characters, sent otherwise."""
    table = defaultdict(lambda: defaultdict(lambda: dict.fromkeys(COLUMNS, 0)))
    for path in Path(root).rglob('*.avro'):
        event_type = event_type_from_path(str(path))
        if event_type not in sample.TYPE_WEIGHTS:
            continue
        cell = table[row_name(CLASSIC, event_type)][hour_from_path(str(path)).strftime(
            '%Y-%m-%d-%H')]
        cell['files'] += 1
        with open(path, 'rb') as f:
            for record in fastavro.reader(f):
                cell['read'] += 1
                if not (record['external_user_id'] or '').strip():
                    cell['dropped_no_external_user_id'] += 1
                elif len(record['id']) > MAX_MESSAGE_ID_CHARS:
                    cell['rejected'] += 1
                else:
                    cell['sent'] += 1
    return {'columns': list(COLUMNS),
            'events': {e: {h: [c[k] for k in COLUMNS] for h, c in per_hour.items()}
                       for e, per_hour in table.items()}}


def test_deliberate_gaps_of_a_generated_tree_are_found_exactly(tmp_path):
    report = sample.generate(tmp_path / 'gaps', events=6000, seed=4, hours=8,
                             gaps=sample.deliberate_gaps(8))
    # Email Opened misses hour 4, SMS Delivered stops at hour 6, Content Card Sent's hour 2
    # is all rejected (ids of 127 characters).
    structural = [(MISSING, ('Email Opened',), *_hours(4, 4)),
                  (STOPPED, ('SMS Delivered',), *_hours(6, 7))]
    events = {row_name(CLASSIC, t): n['events'] for t, n in report.by_type.items()}
    assert found(gaps_from_hours(_tree_hours(tmp_path / 'gaps'), events)) == structural
    by_hour = _tree_by_hour(tmp_path / 'gaps')
    assert found(gaps_from_summary(by_hour)) == [
        (ALL_REJECTED, ('Content Card Sent',), *_hours(2, 2)), *structural]
    rejected = by_hour['events']['Content Card Sent']['2024-05-01-02'][COLUMNS.index('rejected')]
    assert rejected == report.rejected > 0

    report = sample.generate(tmp_path / 'none', events=6000, seed=4, hours=8)
    assert gaps_from_summary(_tree_by_hour(tmp_path / 'none')) == []
    hours = _tree_hours(tmp_path / 'none')
    assert any(len(h) < 8 for h in hours.values())   # rare types leave hours empty...
    events = {row_name(CLASSIC, t): n['events'] for t, n in report.by_type.items()}
    assert gaps_from_hours(hours, events) == []      # ...which are no gap at their rate
    assert report.rejected == 0


def test_hour_keys_helper():
    assert hour_keys('2024-05-01-23', 2) == ['2024-05-01-23', '2024-05-02-00']


def test_plan_and_the_run_show_the_gaps_of_a_generated_tree(tmp_path, monkeypatch):
    """`--plan` lists the structural gaps from the listing alone, before anything is sent;
    the run's summary (by_hour, gathered on the workers) shows them and the all-rejected
    hour too."""
    sample.generate(tmp_path / 'in', events=6000, seed=4, hours=8, gaps=sample.deliberate_gaps(8))
    out = io.StringIO()
    assert run(['--input', str(tmp_path / 'in'), '--plan'], out=out) == 0
    text = out.getvalue()
    assert 'gaps: 2 ' in text, text
    assert 'Email Opened: no file in 2024-05-01-04 (1 hour)' in text
    assert 'SMS Delivered: stops: no file from 2024-05-01-06 to 2024-05-01-07' in text
    monkeypatch.setenv('SEGMENT_WRITE_KEY', 'wk_plan-gaps')
    with SegmentReceiver(write_key='wk_plan-gaps') as receiver:
        code = run(['--input', str(tmp_path / 'in'), '--rejects', str(tmp_path / 'r'),
                    '--segment_endpoint', receiver.url, '--summary_output',
                    str(tmp_path / 's.json')], out=io.StringIO())
    assert code == 0
    summary = json.loads((tmp_path / 's.json').read_text())
    assert found(gaps_from_summary(summary['by_hour'])) == [
        (ALL_REJECTED, ('Content Card Sent',), *_hours(2, 2)),
        (MISSING, ('Email Opened',), *_hours(4, 4)), (STOPPED, ('SMS Delivered',), *_hours(6, 7))]
    assert summary['by_hour'] == _tree_by_hour(tmp_path / 'in')
