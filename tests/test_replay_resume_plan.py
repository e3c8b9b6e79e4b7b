"""Production workflows: replay of rejects, resuming an interrupted backfill, --plan."""
import io
import json

from devtools.receiver import SegmentReceiver
from pipeline.main import run
from devtools.sample import generate
from tests.helpers import avro_bytes, balanced, read_rejects, record, write_file
from tests.conftest import run_tool

KEY = 'wk_replay-resume-key-5150'
SEND = 'users.messages.email.Send'


def _run(tmp_path, name, root, *extra):
    return run_tool(tmp_path, root, *extra, summary_name=name)


def _replay(tmp_path, url, *extra):
    summary = tmp_path / 'replay.json'
    out = io.StringIO()
    code = run(['replay', '--rejects', str(tmp_path / 'rejects'), '--segment_endpoint', url,
                '--summary_output', str(summary), *extra], out=out)
    return code, json.loads(summary.read_text()) if summary.exists() else None, out.getvalue()


def test_replay_after_400_and_budget_rejects_delivers_everything(tmp_path, monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    root = tmp_path / 'in'
    write_file(root, SEND, [record(i) for i in range(30)], n=1)
    write_file(root, 'users.canvas.Entry', [record(100 + i) for i in range(5)], n=2)
    with SegmentReceiver(write_key=KEY, poison_message_ids=('evt-7', 'evt-8')) as receiver:
        code, summary, _ = _run(tmp_path, 'first', root, '--segment_endpoint', receiver.url,
                                '--event_types', SEND)
        assert code == 4 and summary['rejected'] == 2 and summary['sent'] == 28
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('refuse_503')
        code, summary, _ = _run(tmp_path, 'second', root, '--segment_endpoint', receiver.url,
                                '--event_types', 'Canvas Entered', '--max_retry_seconds', '1')
        assert code == 4 and summary['rejected'] == 5
    reasons = sorted(r['reason'] for r in read_rejects(tmp_path / 'rejects'))
    assert reasons == ['retries_exhausted'] * 5 + ['segment_rejected'] * 2
    # The causes are fixed: a healthy receiver. Replay everything.
    with SegmentReceiver(write_key=KEY) as receiver:
        code, summary, text = _replay(tmp_path, receiver.url)
        accepted = {m['messageId'] for m in receiver.messages()}
    assert code == 0 and balanced(summary)
    assert summary['read'] == 7 and summary['sent'] == 7 and summary['rejected'] == 0
    assert accepted == {'evt-7', 'evt-8'} | {f'evt-{100 + i}' for i in range(5)}
    assert 'rejected again' not in text   # nothing was


def test_replay_filters_reasons_and_rejects_again_into_a_new_folder(tmp_path, monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    root = tmp_path / 'in'
    write_file(root, SEND, [record(i) for i in range(10)], n=1)
    write_file(root, SEND, [], n=2, raw=b'Obj\x01 truncated')
    with SegmentReceiver(write_key=KEY, poison_message_ids=('evt-3',)) as receiver:
        code, summary, _ = _run(tmp_path, 'first', root, '--segment_endpoint', receiver.url)
    assert code == 4 and summary['rejected_by_reason'] == {'segment_rejected': 1,
                                                           'unreadable_file': 1}
    # Still refused: replaying only segment_rejected puts it in a new rejects file.
    with SegmentReceiver(write_key=KEY, poison_message_ids=('evt-3',)) as receiver:
        code, summary, _ = _replay(tmp_path, receiver.url, '--reasons', 'segment_rejected')
    assert code == 4 and summary['read'] == 1 and summary['rejected'] == 1 and balanced(summary)
    again = list((tmp_path / 'rejects').glob('replay-*/rejects-*.jsonl'))
    assert len(again) == 1
    [row] = [json.loads(line) for line in again[0].read_text().splitlines()]
    assert row['reason'] == 'segment_rejected' and row['message']['messageId'] == 'evt-3'
    # The truncated file was re-uploaded whole: replaying unreadable_file re-reads it.
    write_file(root, SEND, [], n=2, raw=avro_bytes(SEND, [record(50), record(51)]))
    with SegmentReceiver(write_key=KEY) as receiver:
        code, summary, _ = _replay(tmp_path, receiver.url, '--reasons', 'unreadable_file')
        accepted = {m['messageId'] for m in receiver.messages()}
    assert code == 0 and accepted == {'evt-50', 'evt-51'} and balanced(summary)


def test_replay_usage_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    assert run(['replay', '--rejects', str(tmp_path / 'none')]) == 2
    assert 'no such folder' in capsys.readouterr().err
    (tmp_path / 'r').mkdir()
    (tmp_path / 'r' / 'rejects-x.jsonl').write_text('{}\n')
    assert run(['replay', '--rejects', str(tmp_path / 'r'), '--reasons', 'bogus']) == 2
    assert 'unknown reason' in capsys.readouterr().err


def test_interrupted_backfill_resumes_without_resending_completed_partitions(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    root = tmp_path / 'in'
    report = generate(root, events=3000, seed=11, hours=4, events_per_file=400,
                      start_hour='2024-05-01-00')
    with SegmentReceiver(write_key=KEY) as receiver:
        # The key is revoked after a few requests: the run stops part-way.
        receiver.set_mode('unauthorized_401', after_requests=3)
        code, _, text = _run(tmp_path, 'first', root, '--segment_endpoint', receiver.url,
                             '--wave_hours', '1')
        first = {m['messageId'] for m in receiver.messages()}
    assert code == 3 and 'rerun with --resume' in text
    manifests = list((tmp_path / 'rejects' / 'manifest').glob('wave-*.json'))
    assert 1 <= len(manifests) < 4
    completed = set()
    for m in manifests:
        completed.update(json.loads(m.read_text())['partitions'])
    with SegmentReceiver(write_key=KEY) as receiver:
        code, summary, text = _run(tmp_path, 'second', root, '--segment_endpoint', receiver.url,
                                   '--wave_hours', '1', '--resume')
        second = [m['messageId'] for m in receiver.messages()]
    assert code == 0 and balanced(summary)
    assert (first | set(second)) >= report.eligible_ids            # every eligible event delivered
    assert summary['files_skipped_by_reason']['completed_by_earlier_run'] > 0
    # None of the completed partitions was sent again, and they had been delivered before.
    completed_ids = _ids_in(report, completed)
    assert completed_ids and not (set(second) & completed_ids)
    assert completed_ids & report.eligible_ids <= first


def _ids_in(report, partitions):
    import fastavro
    from pipeline.listing import partition_key
    ids = set()
    for path in report.files:
        if partition_key(path) in partitions:
            with open(path, 'rb') as f:
                ids.update(r['id'] for r in fastavro.reader(f))
    return ids


def test_plan_reports_files_partitions_and_estimate(tmp_path):
    root = tmp_path / 'in'
    report = generate(root, events=2000, seed=5, hours=3, events_per_file=300,
                      start_hour='2024-05-01-00')
    out = io.StringIO()
    code = run(['--input', str(root), '--rejects', str(tmp_path / 'r'), '--plan',
                '--max_events_per_second', '500'], out=out)
    text = out.getvalue()
    assert code == 0
    assert f'files to read: {len(report.files)} ' in text
    assert f'in {len(report.partitions)} partitions' in text
    assert 'hours 2024-05-01-00 .. 2024-05-01-02' in text
    estimate = int(text.split('Avro block headers of one file per type): ')[1].split()[0]
                   .replace(',', ''))
    assert abs(estimate - report.events) / report.events < 0.25
    assert 'sending time at 500 events/s' in text
    assert not (tmp_path / 'r').exists()   # nothing written, nothing sent
