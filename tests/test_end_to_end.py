"""The whole pipeline on a generated corpus of all 34 types: dry run, and real HTTP to the receiver."""
import io
import json
import time
from collections import Counter

import pytest

from devtools.receiver import SegmentReceiver
from pipeline.main import run
from pipeline.paths import event_type_from_path
from devtools.sample import generate
from tests.helpers import balanced, read_bodies, read_rejects, record, write_file
from transforms.events import BY_CURRENTS_TYPE

KEY = 'wk_Zq8-TEST-KEY-do-not-leak-7731'


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('corpus')
    report = generate(root, events=6000, seed=7, hours=2, events_per_file=700)
    return root, report


@pytest.fixture
def write_key(monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    return KEY


def _argv(tmp_path, root, *extra):
    return ['--input', str(root), '--rejects', str(tmp_path / 'rejects'),
            '--summary_output', str(tmp_path / 'summary.json'), *extra]


def _summary(tmp_path):
    return json.loads((tmp_path / 'summary.json').read_text())


def expected_messages(report):
    import fastavro
    import pipeline
    from tests.test_mapping import expected_message
    from pipeline.paths import event_type_from_path
    out = {}
    for path in report.files:
        spec = BY_CURRENTS_TYPE[event_type_from_path(path)]
        with open(path, 'rb') as f:
            for r in fastavro.reader(f):
                if r['id'] in report.eligible_ids:
                    m = expected_message(spec, r)
                    m['context']['library']['version'] = pipeline.__version__
                    if r.get('user_id') is None:
                        del m['anonymousId']
                    out[r['id']] = m
    return out


def check_against_report(summary, report):
    assert balanced(summary)
    assert summary['read'] == report.events
    assert summary['dropped_no_external_user_id'] == report.events - report.eligible
    assert summary['files_skipped'] == 0   # other types' folders are never listed:
    assert summary['event_types_not_selected'] == sorted(
        {event_type_from_path(p) for p in report.other_files})
    assert set(summary) >= {'read', 'dropped_no_external_user_id', 'sent', 'rejected',
                            'files_read', 'files_skipped', 'files_rejected', 'by_event',
                            'rejected_by_reason'}
    for event_type, counts in report.by_type.items():
        if counts['events']:
            row = summary['by_event'][BY_CURRENTS_TYPE[event_type].segment_event]
            assert row['read'] == counts['events']
            assert row['read'] - row['dropped_no_external_user_id'] == counts['eligible']


def test_dry_run_writes_exact_bodies_within_limits(tmp_path, corpus):
    root, report = corpus
    out = io.StringIO()
    code = run(_argv(tmp_path, root, '--dry_run_output', str(tmp_path / 'bodies')), out=out)
    assert code == 0, out.getvalue()
    summary = _summary(tmp_path)
    check_against_report(summary, report)
    assert summary['sent'] == report.eligible and summary['rejected'] == 0
    bodies = read_bodies(tmp_path / 'bodies')
    ids = Counter()
    for size, body in bodies:
        assert size <= 500_000 and 1 <= len(body['batch']) <= 2500
        assert set(body) == {'batch'}   # no sentAt by default (docs/mapping.md, "Why no sentAt")
        for m in body['batch']:
            assert len(json.dumps(m, separators=(',', ':'), ensure_ascii=False).encode()) <= 32_000
            ids[m['messageId']] += 1
    assert set(ids) == report.eligible_ids and max(ids.values()) == 1
    events = {m['event'] for _, b in bodies for m in b['batch']}
    assert len(events) == 34
    assert 'Email Sent' in out.getvalue() and 'balance' in out.getvalue()


def test_delivers_every_eligible_event_exactly_once(tmp_path, corpus, write_key):
    root, report = corpus
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(_argv(tmp_path, root, '--segment_endpoint', receiver.url), out=io.StringIO())
        stats, messages = receiver.stats(), receiver.messages()
    assert code == 0
    summary = _summary(tmp_path)
    check_against_report(summary, report)
    assert summary['sent'] == report.eligible and summary['rejected'] == 0
    assert stats['accepted'] == report.eligible and stats['duplicates'] == 0
    assert stats['silently_dropped'] == 0 and stats['bodies_with_sent_at'] == 0
    assert {m['messageId'] for m in messages} == report.eligible_ids
    assert summary['requests'] == stats['requests']
    # Field for field as CONTRACT §3, against the written-out expectation of the mapping tests.
    expected = expected_messages(report)
    for m in messages:
        assert m == expected[m['messageId']]


def test_with_20_percent_faults_nothing_is_lost(tmp_path, corpus, write_key):
    root, report = corpus
    with SegmentReceiver(write_key=KEY, fault_rate=0.2, seed=3, retry_after=0.2,
                         slow_seconds=1.5,
                         faults=('429', '429-no-retry-after', '500', '503', 'reset',
                                 'slow')) as receiver:
        code = run(_argv(tmp_path, root, '--segment_endpoint', receiver.url,
                         '--segment_timeout', '1', '--max_in_flight', '3'), out=io.StringIO())
        stats, messages = receiver.stats(), receiver.messages()
    assert code == 0
    summary = _summary(tmp_path)
    check_against_report(summary, report)
    assert summary['sent'] == report.eligible and summary['rejected'] == 0
    assert {m['messageId'] for m in messages} == report.eligible_ids   # none lost
    assert stats['accepted'] == report.eligible                        # none double-counted
    assert sum(stats['faults_injected'].values()) > 0
    assert summary['requests_retried'] > 0


def test_one_message_refused_inside_a_batch(tmp_path, write_key):
    root = tmp_path / 'in'
    write_file(root, 'users.messages.email.Send', [record(i) for i in range(40)])
    with SegmentReceiver(write_key=KEY, poison_message_ids=('evt-17',)) as receiver:
        code = run(_argv(tmp_path, root, '--segment_endpoint', receiver.url), out=io.StringIO())
        accepted = {m['messageId'] for m in receiver.messages()}
    assert code == 4   # completed and balanced, one event to replay
    assert accepted == {f'evt-{i}' for i in range(40) if i != 17}
    summary = _summary(tmp_path)
    assert summary['sent'] == 39 and summary['rejected'] == 1
    assert summary['rejected_by_reason'] == {'segment_rejected': 1}
    [reject] = read_rejects(tmp_path / 'rejects')
    assert reject['reason'] == 'segment_rejected' and reject['message']['messageId'] == 'evt-17'
    assert 'HTTP 400' in reject['detail'] and 'poison' in reject['detail']


def test_retries_exhausted_become_rejects(tmp_path, write_key):
    root = tmp_path / 'in'
    write_file(root, 'users.canvas.Entry', [record(i) for i in range(5)])
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('refuse_503')
        code = run(_argv(tmp_path, root, '--segment_endpoint', receiver.url,
                         '--max_retry_seconds', '1.5'), out=io.StringIO())
    assert code == 4
    summary = _summary(tmp_path)
    assert summary['sent'] == 0 and summary['rejected'] == 5 and balanced(summary)
    rejects = read_rejects(tmp_path / 'rejects')
    assert {r['reason'] for r in rejects} == {'retries_exhausted'}
    assert {r['message']['messageId'] for r in rejects} == {f'evt-{i}' for i in range(5)}


@pytest.mark.parametrize('mode_or_path', ['unauthorized_401', 'wrong_path_404'])
def test_401_and_404_stop_the_run_with_one_line(tmp_path, write_key, capsys, mode_or_path):
    root = tmp_path / 'in'
    write_file(root, 'users.canvas.Entry', [record(i) for i in range(5)])
    with SegmentReceiver(write_key=KEY) as receiver:
        url = receiver.url
        if mode_or_path == 'unauthorized_401':
            receiver.set_mode('unauthorized_401')
        else:
            url = url.replace('/v1/batch', '/v1/nope')
        code = run(_argv(tmp_path, root, '--segment_endpoint', url), out=io.StringIO())
    captured = capsys.readouterr()
    assert code == 3
    lines = [line for line in captured.err.splitlines() if 'currents-to-segment' in line]
    assert len(lines) == 1
    assert ('HTTP 401' in lines[0]) == (mode_or_path == 'unauthorized_401')
    assert 'write key, region or endpoint is wrong' in lines[0]
    assert KEY not in captured.err + captured.out


def test_retry_after_is_honoured_end_to_end(tmp_path, write_key):
    root = tmp_path / 'in'
    write_file(root, 'users.canvas.Entry', [record(i) for i in range(3)])
    with SegmentReceiver(write_key=KEY, fault_rate=1.0, faults=('429',), retry_after=2) as r:
        # Every request gets 429 + Retry-After: 2 until we switch faults off after the first.
        import threading

        def heal():
            while r.stats()['requests'] < 1:
                time.sleep(0.01)
            r.fault_rate = 0.0
        threading.Thread(target=heal, daemon=True).start()
        started = time.monotonic()
        code = run(_argv(tmp_path, root, '--segment_endpoint', r.url), out=io.StringIO())
        arrivals = r.stats()['arrivals']
    assert code == 0 and len(arrivals) == 1
    assert arrivals[0][0] - started >= 2.0   # waited at least Retry-After before the retry


def test_throttle_holds_the_aggregate_rate(tmp_path, write_key):
    root = tmp_path / 'in'
    # ~2 KB messages: about 240 per 500 KB batch, so 6,000 events make ~25 requests.
    write_file(root, 'users.messages.email.Send',
               [record(i, campaign_name='c' * 1800) for i in range(6000)])
    rate = 1500
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(_argv(tmp_path, root, '--segment_endpoint', receiver.url,
                         '--max_events_per_second', str(rate), '--max_in_flight', '4'),
                   out=io.StringIO())
        arrivals = sorted(receiver.stats()['arrivals'])
    assert code == 0 and sum(n for _, n in arrivals) == 6000 and len(arrivals) >= 20
    # Request k may start once the events of requests 0..k-1 have had their time.
    elapsed = arrivals[-1][0] - arrivals[0][0]
    measured = (6000 - arrivals[-1][1]) / elapsed
    assert elapsed >= 3.0
    assert abs(measured - rate) / rate <= 0.10, measured


def test_rerun_sends_the_same_message_ids(tmp_path, corpus, write_key):
    root, report = corpus
    seen = []
    for attempt in range(2):
        with SegmentReceiver(write_key=KEY) as receiver:
            out = tmp_path / f'run{attempt}'
            code = run(_argv(out, root, '--segment_endpoint', receiver.url,
                             '--event_types', 'Email Sent,Canvas Entered'), out=io.StringIO())
            assert code == 0
            seen.append(sorted(m['messageId'] for m in receiver.messages()))
    assert seen[0] == seen[1] and seen[0]


def test_worker_processes_deliver_the_same(tmp_path, corpus, write_key):
    """The multi-process local mode large inputs get: same messages, counters, balance."""
    root, report = corpus
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(_argv(tmp_path, root, '--segment_endpoint', receiver.url,
                         '--direct_num_workers', '2', '--direct_running_mode',
                         'multi_processing'), out=io.StringIO())
        ids = {m['messageId'] for m in receiver.messages()}
        stats = receiver.stats()
    assert code == 0
    summary = _summary(tmp_path)
    check_against_report(summary, report)
    assert summary['sent'] == report.eligible and ids == report.eligible_ids
    assert stats['duplicates'] == 0


def test_large_local_inputs_use_every_core():
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
    from pipeline.local_runner import PARALLEL_MIN_BYTES, local_parallelism, local_runner_options

    def decide(argv, size, cores=2):
        options = PipelineOptions(argv)
        local_runner_options(options)
        import os
        real = os.cpu_count
        os.cpu_count = lambda: cores
        try:
            local_parallelism(options, argv, size)
        finally:
            os.cpu_count = real
        d = options.view_as(DirectOptions)
        return d.direct_num_workers, d.direct_running_mode

    assert decide([], PARALLEL_MIN_BYTES) == (2, 'multi_processing')
    assert decide([], PARALLEL_MIN_BYTES - 1) == (1, 'in_memory')
    assert decide([], PARALLEL_MIN_BYTES, cores=1) == (1, 'in_memory')
    assert decide(['--direct_num_workers', '1'], PARALLEL_MIN_BYTES) == (1, 'in_memory')
    assert decide(['--runner', 'DataflowRunner'], PARALLEL_MIN_BYTES) == (1, 'in_memory')


def test_gzip_bodies_are_delivered_and_smaller_on_the_wire(tmp_path, write_key):
    root = tmp_path / 'in'
    write_file(root, 'users.messages.email.Send', [record(i) for i in range(300)])
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(_argv(tmp_path, root, '--segment_endpoint', receiver.url, '--segment_gzip'),
                   out=io.StringIO())
        ids = {m['messageId'] for m in receiver.messages()}
        requests = receiver.accepted_requests()
    assert code == 0 and ids == {f'evt-{i}' for i in range(300)}
    assert requests and all(r['wire_bytes'] * 3 < r['body_bytes'] for r in requests)
