"""Incremental runs: --since_last_run and --follow against the local receiver (real HTTP).

The per-file record (pipeline/ledger.py) and the lock (pipeline/lock.py) are exercised through
the real command: in-process `run([...])` for the quick checks, `python -m pipeline` subprocesses
for overlapping launches, SIGKILL/SIGTERM and --follow with a writer thread adding files.
"""
import ast
import datetime
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from devtools.receiver import SegmentReceiver
from devtools.sample import generate
from pipeline.ledger import COMPACT_AFTER, compact_hours, fold_pieces, load_window_records
from pipeline.lock import LEASE_ENV, Lock, lock_path
from pipeline.main import run
from tests.helpers import avro_bytes, balanced, record
from transforms.completion import RecordWriter
from transforms.listing import Counter
from transforms.records import hours_dir, load_records, record_lines, records_dir

ROOT = Path(__file__).resolve().parents[1]
KEY = 'wk_incremental-key-4242'
SEND, OPEN = 'users.messages.email.Send', 'users.messages.pushnotification.Open'
PREFIX = 'currents/dataexport.prod-01.GCS.integration.0123456789abcdef01234567'
LAYOUTS = {   # Braze's current layout and the older `<schema-id>/<zone>/` one
    'version': PREFIX + '/event_type={t}/date={d}/version=10/us-01/'
                        'dataexport.prod-01.GCS.integration.0123456789abcdef01234567+0+{n}.avro',
    'schema_id': PREFIX + '/event_type={t}/date={d}/7/us-01/'
                          'dataexport.prod-01.GCS.integration.0123456789abcdef01234567+1+{n}.avro',
}


def put(root, event_type, first_id, count, date='2024-05-01-12', n=0, layout='version',
        external='ext'):
    """Writes one Currents file the way an object store shows it: whole or not at all."""
    path = Path(root) / LAYOUTS[layout].format(t=event_type, d=date, n=n)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(root).parent / f'.writing-{os.getpid()}-{threading.get_ident()}'
    tmp.write_bytes(avro_bytes(event_type, [record(first_id + i, external=external)
                                            for i in range(count)]))
    os.replace(tmp, path)
    return path


def ids(first, count):
    return {f'evt-{first + i}' for i in range(count)}


def since_last_run(tmp_path, root, url, *extra, name='run'):
    out = io.StringIO()
    summary = tmp_path / f'{name}.json'
    code = run(['--input', str(root), '--rejects', str(tmp_path / 'rejects'),
                '--segment_endpoint', url, '--since_last_run', '--summary_output', str(summary),
                *extra], out=out)
    return code, (json.loads(summary.read_text()) if summary.exists() else None), out.getvalue()


def sent_once(root, tmp_path, *extra, name='run'):
    """One --since_last_run against a fresh receiver: (exit, summary, output, accepted ids)."""
    with SegmentReceiver(write_key=KEY) as receiver:
        code, summary, text = since_last_run(tmp_path, root, receiver.url, *extra, name=name)
        accepted = [m['messageId'] for m in receiver.messages()]
        assert receiver.stats()['duplicates'] == 0
    return code, summary, text, set(accepted)


# ------------------------------------------------------------------------ since_last_run
def test_since_last_run_sends_new_and_changed_files_and_never_an_unchanged_one(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    root = tmp_path / 'in'
    a = put(root, SEND, 0, 5, n=1)
    put(root, SEND, 100, 5, n=2, layout='schema_id')
    put(root, OPEN, 200, 5, date='2024-05-01-11', n=3)
    code, summary, text, accepted = sent_once(root, tmp_path, name='first')
    assert code == 0 and accepted == ids(0, 5) | ids(100, 5) | ids(200, 5) and balanced(summary)
    assert '3 new or changed files to send, 0 delivered by earlier runs' in text

    code, summary, text, accepted = sent_once(root, tmp_path, name='again')
    assert code == 0 and accepted == set() and summary['files_read'] == 0
    assert 'nothing new' in text and '0 new or changed files to send, 3 delivered' in text
    assert summary['files_skipped_by_reason'] == {'delivered_by_earlier_run': 3}

    # Braze adds a file to an earlier hour and one file is rewritten with more records.
    a.write_bytes(avro_bytes(SEND, [record(i) for i in range(8)]))
    put(root, OPEN, 300, 4, date='2024-05-01-09', n=4, layout='schema_id')
    code, summary, text, accepted = sent_once(root, tmp_path, name='third')
    assert code == 0 and accepted == ids(0, 8) | ids(300, 4)       # the rewritten file whole
    assert summary['files_read'] == 2 and summary['sent'] == 12 and balanced(summary)

    # Same size, new modification stamp (re-uploaded): read again too.
    stat = os.stat(a)
    os.utime(a, (stat.st_atime, stat.st_mtime + 60))
    code, summary, _, accepted = sent_once(root, tmp_path, name='touched')
    assert code == 0 and accepted == ids(0, 8) and summary['files_read'] == 1

    code, _, _, accepted = sent_once(root, tmp_path, name='last')
    assert code == 0 and accepted == set()


def test_dry_runs_record_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    root = tmp_path / 'in'
    put(root, SEND, 0, 5, n=1)
    rejects = tmp_path / 'rejects'
    for extra in (['--since_last_run'], [], ['--resume']):
        code = run(['--input', str(root), '--rejects', str(rejects),
                    '--dry_run_output', str(tmp_path / f'bodies{len(extra)}'), *extra],
                   out=io.StringIO())
        assert code == 0
        assert list(tmp_path.glob(f'bodies{len(extra)}/batch-*.json'))
    # Neither the per-file record, nor the resume manifest, nor a lock.
    assert not (rejects / 'delivered').exists() and not (rejects / 'manifest').exists()
    assert not (rejects / 'since_last_run.lock').exists()
    code, _, _, accepted = sent_once(root, tmp_path)
    assert code == 0 and accepted == ids(0, 5)


@pytest.mark.slow
def test_a_backfill_records_its_files_so_since_last_run_does_not_resend_them(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    root = tmp_path / 'in'
    generate(root, events=600, seed=4, hours=3, events_per_file=80, start_hour='2024-05-01-00')
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(['--input', str(root), '--rejects', str(tmp_path / 'rejects'),
                    '--segment_endpoint', receiver.url, '--wave_hours', '1'], out=io.StringIO())
        backfilled = receiver.stats()['accepted']
    assert code == 0 and backfilled > 0
    # Recorded file by file, then folded into one object per date= hour: no piece left.
    hours = sorted(p.name for p in (tmp_path / 'rejects' / 'delivered' / 'hours').iterdir())
    assert hours == ['2024-05-01-00', '2024-05-01-01', '2024-05-01-02']
    assert not list((tmp_path / 'rejects' / 'delivered').glob('piece-*'))
    code, summary, _, accepted = sent_once(root, tmp_path)
    assert code == 0 and accepted == set() and summary['files_read'] == 0


def test_a_failed_wave_leaves_neither_its_record_nor_its_pending_record(tmp_path, monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', 'wk_not-the-receivers-key')
    root = tmp_path / 'in'
    put(root, SEND, 0, 3)
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(['--input', str(root), '--rejects', str(tmp_path / 'rejects'),
                    '--segment_endpoint', receiver.url], out=io.StringIO())
    assert code == 3                                      # the key is refused: nothing delivered
    assert not list((tmp_path / 'rejects').glob('delivered/*'))


def test_a_run_that_finds_the_lock_held_exits_0_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    root = tmp_path / 'in'
    put(root, SEND, 0, 5, n=1)
    holder = Lock(lock_path(str(tmp_path / 'rejects')), lease=60).acquire('scheduled-run-1')
    try:
        code, summary, text, accepted = sent_once(root, tmp_path)
    finally:
        holder.release()
    assert code == 0 and accepted == set() and summary is None
    [line] = text.splitlines()
    assert line.startswith('since_last_run: nothing to do: another run is sending: ')
    assert 'scheduled-run-1' in line
    code, _, _, accepted = sent_once(root, tmp_path)     # released: the next run sends
    assert code == 0 and accepted == ids(0, 5)


@pytest.mark.slow
def test_a_segment_cut_short_by_a_crash_only_resends_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    root = tmp_path / 'in'
    put(root, SEND, 0, 3, n=1)
    put(root, SEND, 10, 3, n=2)
    assert sent_once(root, tmp_path)[3] == ids(0, 3) | ids(10, 3)
    [record] = (tmp_path / 'rejects' / 'delivered' / 'hours').glob('*/*.jsonl')
    lines = record.read_bytes().splitlines(keepends=True)
    record.write_bytes(lines[0] + lines[1][:20])        # the second entry half-written
    assert sent_once(root, tmp_path)[3] == ids(10, 3)


@pytest.mark.parametrize('extra, reason', [
    (['--since_last_run', '--resume'], '--resume skips completed partitions'),
    (['--follow', '--resume'], '--resume skips completed partitions'),
    (['--follow', '--plan'], '--follow runs until stopped'),
    (['--follow', '--poll_seconds', '0'], '--poll_seconds must be positive'),
    (['--follow', '--runner', 'DataflowRunner', '--project', 'p', '--region', 'r',
      '--temp_location', 'gs://b/t', '--rejects', 'gs://b/r'], '--follow runs locally'),
])
def test_incremental_usage_errors_are_one_line(tmp_path, monkeypatch, capsys, extra, reason):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    put(tmp_path / 'in', SEND, 0, 1)
    assert run(['--input', str(tmp_path / 'in'), '--rejects', str(tmp_path / 'r'), *extra],
               out=io.StringIO()) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('currents-to-segment: error: ') and reason in line
    assert not (tmp_path / 'r').exists()


# ------------------------------------------------------------------------------ the record
HOUR0 = datetime.datetime(2024, 5, 1)


def _path(hour: int, i: int) -> str:
    day, h = divmod(hour, 24)
    return f'gs://bkt/currents/event_type=t/date=2024-05-{day + 1:02d}-{h:02d}/f{i}.avro'


def _write_pieces(rejects, pieces, per_piece, hours=1, first=0):
    """Pieces as the workers write them: `per_piece` done files each, over `hours` hours."""
    writer = RecordWriter(rejects, f'run{first:05d}', 'w0')
    for p in range(pieces):
        writer.write([(_path((first + p) % hours, (first + p) * per_piece + i), 1000 + i,
                       1714564800.25 + p) for i in range(per_piece)])
    return writer


@pytest.mark.parametrize('path', ['/in/a.avro', '/in/é 雪/"q"\\b\t.avro', 'gs://b/\u2028\x00\x7f.avro',
                                  '/in/\ud83d\ude00\udc80.avro'])
@pytest.mark.parametrize('size, stamp', [(0, 0.0), (123456789012, 1714564800.123456),
                                         (7, 1e-07), (7, 1.5e+300), (7, -0.0), (7, 1714564800),
                                         (True, 2.5), (7, float('nan')), (7, float('inf'))])
def test_the_record_lines_are_what_json_writes(path, size, stamp):
    """The record is written without json.dumps for the usual types: byte for byte the same."""
    line = record_lines([(path, size, stamp)])
    assert line == (json.dumps([path, size, stamp]) + '\n').encode('utf-8')
    assert line.isascii() and line.count(b'\n') == 1


def test_pieces_fold_into_one_object_per_hour_and_a_range_reads_only_its_hours(tmp_path):
    rejects = str(tmp_path / 'rejects')
    _write_pieces(rejects, pieces=100, per_piece=100, hours=24)
    assert len(load_records(rejects)) == 10_000 and len(os.listdir(records_dir(rejects))) == 100
    folded = fold_pieces(rejects)
    assert folded == (100, 24, 10_000)
    assert sorted(os.listdir(records_dir(rejects))) == ['hours']   # the pieces are gone
    assert len(os.listdir(hours_dir(rejects))) == 24
    counter = Counter()
    one_hour = load_records(rejects, HOUR0 + datetime.timedelta(hours=12),
                            HOUR0 + datetime.timedelta(hours=13), counter=counter)
    assert one_hour.objects_read == 1 and len(one_hour) == 4 * 100   # pieces 12, 36, 60, 84
    path = _path(12, 1234)
    assert one_hour.recorded(path, 1034, 1714564800.25 + 12)
    assert not one_hour.recorded(path, 1035, 1714564800.25 + 12)   # another version
    assert load_records(rejects).files == load_records(rejects).files
    assert len(load_records(rejects)) == 10_000


def test_a_window_reads_what_it_holds_over_months_of_five_minute_runs(tmp_path):
    """Each pass folds the pieces, reads the record of its window (two days) merging crowded
    hours, then its workers write a piece into the current hour: the objects a pass reads
    stay bounded by the window, however long the history."""
    rejects = str(tmp_path / 'rejects')
    reads = []
    for run_number in range(24 * 12 * 4):   # four days of five-minute runs
        hour = run_number // 12
        now = HOUR0 + datetime.timedelta(hours=hour)
        records = load_window_records(rejects, now - datetime.timedelta(hours=48),
                                      now + datetime.timedelta(hours=2))
        reads.append(records.objects_read)
        writer = RecordWriter(rejects, f'run{run_number:05d}', 'w0')
        writer.write([(_path(hour, run_number), 10, 1.5)])
    assert max(reads) <= 49 * (COMPACT_AFTER + 1)
    assert len(os.listdir(hours_dir(rejects))) == 4 * 24
    assert len([n for n in os.listdir(records_dir(rejects)) if n.startswith('piece-')]) == 1
    assert len(load_records(rejects)) == 24 * 12 * 4


def test_folding_interrupted_before_deleting_reads_the_same(tmp_path, monkeypatch):
    rejects = str(tmp_path / 'rejects')
    _write_pieces(rejects, pieces=5, per_piece=10, hours=2)
    before = load_records(rejects).files
    import pipeline.ledger as ledger
    monkeypatch.setattr(ledger, '_delete', lambda paths: None)   # a crash before deleting
    fold_pieces(rejects)
    both = load_records(rejects)
    assert both.files == before and both.objects_read == 5 + 2
    monkeypatch.undo()
    fold_pieces(rejects)                                # folded again: the same entries
    again = load_records(rejects)
    assert again.files == before and again.objects_read == 4
    assert compact_hours(rejects, again, after=1) == 2
    assert load_records(rejects).objects_read == 2 and load_records(rejects).files == before


# ------------------------------------------------------------------- overlapping launches
def _launch(root, rejects, url, *extra, env=None):
    return subprocess.Popen(
        [sys.executable, '-m', 'pipeline', '--input', str(root), '--rejects', str(rejects),
         '--segment_endpoint', url, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), SEGMENT_WRITE_KEY=KEY, **(env or {})))


@pytest.mark.slow
def test_two_since_last_run_processes_started_together_send_each_file_once(tmp_path):
    root = tmp_path / 'in'
    report = generate(root, events=3000, seed=8, hours=3, events_per_file=150,
                      start_hour='2024-05-01-00')
    with SegmentReceiver(write_key=KEY) as receiver:
        procs = [_launch(root, tmp_path / 'rejects', receiver.url, '--since_last_run')
                 for _ in range(2)]
        outputs = [p.communicate(timeout=180) for p in procs]
        stats = receiver.stats()
        accepted = {m['messageId'] for m in receiver.messages()}
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert accepted == report.eligible_ids and stats['duplicates'] == 0
    texts = [o[0] for o in outputs]
    # One sent everything; the other found the lock held (or, started late, nothing new).
    assert sum('balance: read = dropped + sent + rejected OK' in t for t in texts) == 1
    idle = [t for t in texts if 'balance' not in t][0]
    assert re.search(r'since_last_run: (nothing to do: another run is sending|nothing new)', idle)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_a_lock_taken_over_after_its_lease(tmp_path,
                                                                           monkeypatch):
    root = tmp_path / 'in'
    report = generate(root, events=800, seed=9, hours=2, events_per_file=100,
                      start_hour='2024-05-01-00')
    rejects = tmp_path / 'rejects'
    lease = {LEASE_ENV: '6'}
    monkeypatch.setenv(LEASE_ENV, '6')
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('refuse_503')           # the first run keeps retrying, holding the lock
        first = _launch(root, rejects, receiver.url, '--since_last_run',
                        '--max_retry_seconds', '300', env=lease)
        deadline = time.monotonic() + 60
        while receiver.stats()['requests'] < 2:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.time()
        receiver.set_mode('normal')
        # Dead, but its lease runs on: a run now (in this process: no start-up delay) waits.
        code, _, out = since_last_run(tmp_path, root, receiver.url, name='blocked')
        assert code == 0 and 'nothing to do: another run is sending' in out
        assert receiver.stats()['accepted'] == 0
        expires = json.loads((rejects / 'since_last_run.lock').read_text())['expires']
        time.sleep(max(0.0, expires - time.time()) + 0.2)
        taker = _launch(root, rejects, receiver.url, '--since_last_run', env=lease)
        out, err = taker.communicate(timeout=120)
        accepted = {m['messageId'] for m in receiver.messages()}
    assert taker.returncode == 0, err
    assert 'took over a stale lock of run' in out
    assert expires - killed_at <= 6.5
    assert accepted == report.eligible_ids
    assert not (rejects / 'since_last_run.lock').exists()


# ------------------------------------------------------------------------------- --follow
WAVE_LINE = re.compile(r'^wave (\d+): (\d+) files, (\d+) events read, (\d+) sent, (\d+) dropped, '
                       r'(\d+) rejected in [\d.]+ s; lag (\S+(?: days?, \S+)?) \(newest date= hour '
                       r'(\S+)\), files waited up to ([\d.]+) s; balance (OK|MISMATCH)$')


class Writer(threading.Thread):
    """Braze, roughly: new files every few hundred ms in the current hour, late files in
    earlier hours, both layouts; records every id it wrote and which get a userId."""

    def __init__(self, root, rounds, pause=0.4):
        super().__init__(daemon=True)
        self.root, self.rounds, self.pause = root, rounds, pause
        self.eligible, self.files, self.error = set(), 0, None
        self.by_file = {}          # path -> eligible ids
        self.next_id = 0

    def run(self):
        try:
            for r in range(self.rounds):
                now = datetime.datetime.now(datetime.timezone.utc)
                hours = [now, now - datetime.timedelta(hours=1 + r % 3)]
                for k, hour in enumerate(hours):
                    count = 3 + (r + k) % 5
                    external = None if r % 4 == 3 and k == 1 else 'ext'   # dropped events too
                    path = put(self.root, (SEND, OPEN)[(r + k) % 2], self.next_id, count,
                               date=hour.strftime('%Y-%m-%d-%H'), n=r * 10 + k,
                               layout=('version', 'schema_id')[r % 2], external=external)
                    self.by_file[str(path)] = ids(self.next_id, count) if external else set()
                    self.eligible |= self.by_file[str(path)]
                    self.next_id += count
                    self.files += 1
                time.sleep(self.pause)
        except BaseException as exc:   # surfaced by the test
            self.error = exc


def _follow(root, rejects, url, env=None):
    return _launch(root, rejects, url, '--follow', '--poll_seconds', '1', env=env)


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.1)


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def _check_follow_output(out):
    waves = [WAVE_LINE.match(line) for line in out.splitlines() if line.startswith('wave ')]
    assert waves and all(waves), out
    for w in waves:
        read, sent, dropped, rejected = (int(w.group(i)) for i in (3, 4, 5, 6))
        assert w.group(10) == 'OK' and read == sent + dropped + rejected
    assert re.search(r'follow: stopped by SIGTERM: \d+ polls, \d+ waves, \d+ files', out)
    assert 'balance: read = dropped + sent + rejected OK' in out
    return waves


@pytest.mark.slow
def test_follow_keeps_up_with_a_writer_and_survives_sigterm_and_restart(tmp_path):
    root, rejects = tmp_path / 'in', tmp_path / 'rejects'
    root.mkdir()
    writer = Writer(root, rounds=30, pause=0.5)
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = _follow(root, rejects, receiver.url)
        started = proc.stdout.readline()            # listening: the writer starts now
        assert started.startswith('follow: sending new files of '), proc.stderr.read()
        writer.start()
        _wait_for(lambda: receiver.stats()['requests'] >= 2 or proc.poll() is not None, 90,
                  'the second wave')
        first_out = _stop(proc)    # SIGTERM while a wave sends: it finishes and records first
        stopped_with = receiver.stats()['accepted']
        proc = _follow(root, rejects, receiver.url)     # the writer went on meanwhile
        writer.join(120)
        assert writer.error is None and not writer.is_alive()
        _wait_for(lambda: {m['messageId'] for m in receiver.messages()} >= writer.eligible, 90,
                  'every written event')
        time.sleep(1.5)                                 # one more poll: nothing new to send
        second_out = _stop(proc)
        stats = receiver.stats()
        accepted = {m['messageId'] for m in receiver.messages()}
    assert accepted == writer.eligible                 # every event of every file, once
    assert stats['duplicates'] == 0 and 0 < stopped_with < len(writer.eligible)
    # SIGTERM came as a wave was sending: had that wave not finished and recorded its files,
    # the restart would have sent them again (duplicates above).
    waves = _check_follow_output(first_out) + _check_follow_output(second_out)
    assert sum(int(w.group(2)) for w in waves) == writer.files      # each file in one wave
    assert sum(int(w.group(4)) for w in waves) == len(writer.eligible)
    assert len(waves) >= 4                          # it kept polling while files arrived
    current_hour = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d-%H')
    print(f'\nfollow: {len(waves)} waves, {writer.files} files; lags '
          f'{[w.group(7) for w in waves]}; newest hours {sorted({w.group(8) for w in waves})} '
          f'(now in {current_hour}); files waited up to {[float(w.group(9)) for w in waves]} s')


# ----------------------------------------------------------------------------------- gs://
@pytest.fixture(scope='module')
def gcs_server():
    from tests.gcs_emulator import GcsEmulator
    with GcsEmulator(bucket='c2s-incremental') as emulator:
        yield emulator


@pytest.fixture
def gcs(gcs_server, tmp_path, monkeypatch):
    """Beam's GCS IO and the lock's client pointed at the emulator (offline credentials, as
    in tests/test_gcs.py)."""
    adc = tmp_path / 'adc.json'
    adc.write_text(json.dumps({
        'type': 'authorized_user', 'client_id': 'c2s-tests', 'client_secret': 'unused',
        'refresh_token': 'unused', 'token': 'emulator-does-not-check',
        'expiry': '2099-01-01T00:00:00Z', 'token_uri': 'http://127.0.0.1:9/token'}))
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', gcs_server.url)
    monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', str(adc))
    monkeypatch.setenv('GOOGLE_CLOUD_PROJECT', 'c2s-tests')
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    gcs_server.delete_prefix('')
    return gcs_server


def _gcs_put(gcs, event_type, first_id, count, n, layout='version'):
    name = LAYOUTS[layout].format(t=event_type, d='2024-05-01-12', n=n)
    gcs.upload_bytes(name, avro_bytes(event_type, [record(first_id + i) for i in range(count)]))
    return name


@pytest.mark.slow
def test_since_last_run_on_gcs_records_files_and_locks_with_generations(gcs, tmp_path):
    bucket = 'gs://c2s-incremental'
    rewritten = _gcs_put(gcs, SEND, 0, 4, n=1)
    _gcs_put(gcs, OPEN, 100, 4, n=2, layout='schema_id')

    def once(name):
        with SegmentReceiver(write_key=KEY) as receiver:
            out = io.StringIO()
            code = run(['--input', f'{bucket}/currents', '--rejects', f'{bucket}/rejects',
                        '--segment_endpoint', receiver.url, '--since_last_run', '--no_auth'],
                       out=out)
            assert receiver.stats()['duplicates'] == 0
            return code, {m['messageId'] for m in receiver.messages()}, out.getvalue()

    code, accepted, _ = once('first')
    assert code == 0 and accepted == ids(0, 4) | ids(100, 4)
    assert [n for n in gcs.list('rejects/') if 'lock' in n] == []          # released
    assert [n for n in gcs.list('rejects/delivered/') if '/piece-' in n] == []   # folded
    assert len([n for n in gcs.list('rejects/delivered/hours/') if n.endswith('.jsonl')]) == 1
    code, accepted, text = once('again')
    assert code == 0 and accepted == set() and 'nothing new' in text
    gcs.upload_bytes(rewritten, avro_bytes(SEND, [record(i) for i in range(6)]))
    _gcs_put(gcs, OPEN, 200, 3, n=3)
    code, accepted, _ = once('third')
    assert code == 0 and accepted == ids(0, 6) | ids(200, 3)
    # The record on gs:// folds and merges like a local one.
    for run_number in range(COMPACT_AFTER + 1):   # each run's piece folded into hour 00
        _write_pieces(f'{bucket}/rejects', pieces=1, per_piece=50, first=run_number)
        fold_pieces(f'{bucket}/rejects')
    crowded = load_records(f'{bucket}/rejects')
    assert crowded.objects_read == COMPACT_AFTER + 1 + 2 and len(crowded) == 3 + 9 * 50
    merged = load_window_records(f'{bucket}/rejects', None, None)   # merges the crowded hour
    again = load_records(f'{bucket}/rejects')
    assert again.objects_read == 3 and again.files == merged.files == crowded.files
    assert [n for n in gcs.list('rejects/delivered/') if '/piece-' in n] == []
    # A live holder on gs:// keeps a scheduled run out.
    holder = Lock(lock_path(f'{bucket}/rejects'), lease=60).acquire('other-run')
    try:
        code, accepted, text = once('blocked')
    finally:
        holder.release()
    assert code == 0 and accepted == set() and 'another run is sending' in text


# ---------------------------------------------------------------- the production recipes
TEMPLATE_ENVIRONMENT = {'serviceAccountEmail', 'tempLocation', 'stagingLocation', 'maxWorkers',
                        'numWorkers', 'additionalExperiments', 'network', 'subnetwork',
                        'ipConfiguration', 'workerRegion', 'machineType'}


def check_launch_body(body):
    """A Flex Template launch request that runs the launcher as a --since_last_run run."""
    import flex_launcher

    from pipeline.options import LOCAL_ONLY, settings_from
    launch = body['launchParameter']
    assert set(launch) == {'jobName', 'containerSpecGcsPath', 'parameters', 'environment'}
    assert re.fullmatch(r'[a-z]([-a-z0-9]*[a-z0-9])?', launch['jobName'])
    assert launch['containerSpecGcsPath'].startswith('gs://')
    assert set(launch['environment']) <= TEMPLATE_ENVIRONMENT
    params = launch['parameters']
    meta = {p['name']: p for p in json.loads((ROOT / 'metadata.json').read_text())['parameters']}
    beam_options = set(PipelineOptions([]).get_all_options())
    assert set(params) - set(meta) <= beam_options            # e.g. sdk_container_image
    assert not set(params) & LOCAL_ONLY
    assert {n for n, p in meta.items() if not p['isOptional']} <= set(params)
    for name, value in params.items():
        for regex in meta.get(name, {}).get('regexes', []):
            assert re.fullmatch(regex, value), (name, value)
    assert params['since_last_run'] == 'true' and 'wait' not in params
    argv = flex_launcher.template_argv([f'--{k}={v}' for k, v in params.items()])
    settings = settings_from(PipelineOptions(argv))
    assert settings.since_last_run and not settings.wait and not settings.follow
    assert '--runner=DataflowRunner' in argv


def test_the_cloud_scheduler_recipe_launches_since_last_run():
    doc = (ROOT / 'docs' / 'dataflow.md').read_text()
    block = doc.split('<!-- scheduler-launch:start -->')[1].split(
        '<!-- scheduler-launch:end -->')[0]
    check_launch_body(json.loads(block.strip().removeprefix('```json').removesuffix('```')))
    command = doc.split('gcloud scheduler jobs create http', 1)[1].split('```', 1)[0]
    assert '/flexTemplates:launch' in command and '--message-body-from-file launch.json' in command
    assert '--oauth-service-account-email $SCHEDULER_SA' in command
    for role in ('roles/dataflow.developer', 'roles/iam.serviceAccountUser'):
        assert f'--role {role}' in doc.split('gcloud scheduler jobs create http', 1)[0]


AIRFLOW_DAG = ROOT / 'examples' / 'airflow_since_last_run.py'


def _airflow_installed():
    try:
        import airflow  # noqa: F401
        from airflow.providers.google.cloud.operators import dataflow  # noqa: F401
        return True
    except Exception:
        return False


def test_airflow_example_builds_a_dag_that_launches_since_last_run():
    if _airflow_installed():
        import importlib.util
        from airflow.providers.google.cloud.operators.dataflow import (
            DataflowStartFlexTemplateOperator)
        spec = importlib.util.spec_from_file_location('airflow_since_last_run', AIRFLOW_DAG)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag = module.dag
        [task] = dag.tasks
        assert isinstance(task, DataflowStartFlexTemplateOperator)
        body, wait = task.body, task.wait_until_finished
        dag_kwargs = {'max_active_runs': dag.max_active_runs, 'catchup': dag.catchup}
    else:
        body, wait, dag_kwargs = _dag_structure()
    check_launch_body(body)
    assert wait is False
    assert dag_kwargs['max_active_runs'] == 1 and dag_kwargs['catchup'] is False


def _dag_structure():
    """Without Airflow: the file's imports and calls, with its module-level values evaluated
    against recording stand-ins for the three Airflow names it uses."""
    tree = ast.parse(AIRFLOW_DAG.read_text())
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               for a in n.names}
    assert ('airflow.providers.google.cloud.operators.dataflow',
            'DataflowStartFlexTemplateOperator') in imports
    assert ('airflow', 'DAG') in imports and ('airflow.models', 'Variable') in imports
    calls = {}

    class Recorder:
        def __init__(self, *args, **kwargs):
            calls.setdefault(type(self).__name__, []).append(kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class DAG(Recorder):
        pass

    class DataflowStartFlexTemplateOperator(Recorder):
        pass

    class Variable:
        @staticmethod
        def get(name, default_var=None):
            assert name.startswith('currents_to_segment_')
            return default_var

    body = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom))]
    namespace = {'DAG': DAG, 'DataflowStartFlexTemplateOperator':
                 DataflowStartFlexTemplateOperator, 'Variable': Variable,
                 'datetime': datetime, '__name__': 'airflow_since_last_run'}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(AIRFLOW_DAG), 'exec'), namespace)
    [dag], [task] = calls['DAG'], calls['DataflowStartFlexTemplateOperator']
    assert dag['schedule'] == datetime.timedelta(minutes=10) and task['task_id']
    assert task['project_id'] and task['location']
    return task['body'], task['wait_until_finished'], dag


@pytest.mark.slow
def test_follow_killed_mid_wave_resends_only_the_files_it_had_not_recorded(tmp_path):
    root, rejects = tmp_path / 'in', tmp_path / 'rejects'
    root.mkdir()
    before = Writer(root, rounds=6, pause=0)
    before.run()                                    # files waiting before it starts
    assert before.error is None
    lease = {LEASE_ENV: '2'}
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = _follow(root, rejects, receiver.url, env=lease)
        _wait_for(lambda: receiver.stats()['requests'] >= 1 or proc.poll() is not None, 90,
                  'the first wave to send')
        proc.send_signal(signal.SIGKILL)            # mid-wave: nothing recorded for it yet
        proc.wait()
        recorded = load_records(str(rejects)).files
        unrecorded = set(before.by_file) - set(recorded)
        bound = sum(len(before.by_file[f]) for f in unrecorded)
        expires = json.loads((rejects / 'since_last_run.lock').read_text())['expires']
        time.sleep(max(0.0, expires - time.time()) + 0.2)
        proc = _follow(root, rejects, receiver.url, env=lease)
        assert proc.stdout.readline().startswith('follow: took over a stale lock of run')
        later = Writer(root, rounds=4, pause=0.5)
        later.next_id = before.next_id
        later.start()
        later.join(60)
        eligible = before.eligible | later.eligible
        _wait_for(lambda: {m['messageId'] for m in receiver.messages()} >= eligible, 90,
                  'every written event')
        out = _stop(proc)
        stats = receiver.stats()
        accepted = {m['messageId'] for m in receiver.messages()}
    assert accepted == eligible and later.error is None
    # Only the interrupted wave's files went twice (at least once), never a recorded one.
    assert stats['duplicates'] <= bound
    _check_follow_output(out)
    print(f'\nkilled mid-wave: {len(unrecorded)} of {len(before.by_file)} files unrecorded, '
          f'{stats["duplicates"]} duplicates (bound {bound})')
