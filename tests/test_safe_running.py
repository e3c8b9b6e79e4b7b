"""Safe to leave running: typos refused, dry runs record nothing, progress, clean stops, honest
exit codes, no sentAt. End to end through the command line (a subprocess per run, the real
receiver over loopback), plus fast unit tests of the pure parts."""
import glob
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from devtools.receiver import SegmentReceiver
from devtools.sample import generate
from pipeline.cli import exit_decision
from pipeline.options import check_argv, unknown_option_error
from pipeline.paths import UsageError
from pipeline import progress as progress_module
from pipeline.progress import ProgressMonitor, eta_seconds, format_duration, progress_line
from transforms import progress as live
from transforms.model import SegmentBatch, SegmentMessage
from tests.helpers import command

ROOT = Path(__file__).resolve().parent.parent
KEY = 'wk_safe-running-secret-77'
PROG = 'currents-to-segment'


# -- fast: the pure parts ------------------------------------------------------------------------

def test_typo_names_the_closest_known_option():
    names = ['--max_events_per_second', '--max_in_flight', '--rejects', '--runner']
    assert unknown_option_error(['--max_event_per_second', '100'], names) == \
        'unknown option --max_event_per_second; did you mean --max_events_per_second?'
    assert unknown_option_error(['--bogus', '3'], names) == \
        'unknown option --bogus; see --help for the options'
    assert unknown_option_error(['--rejets=x'], names).endswith('did you mean --rejects?')
    assert unknown_option_error([], names) is None


def test_beam_options_pass_and_ours_are_checked():
    check_argv(['--runner', 'DataflowRunner', '--project', 'p', '--region=r', '--num_workers',
                '2', '--experiments', 'a', '--direct_num_workers', '2', '--temp_location', 'x',
                '--max_events_per_second', '100', '--segment_sent_at', '--progress_seconds', '0'])
    for argv, fragment in ((['--max_event_per_second', '100'], '--max_events_per_second?'),
                           (['--max_events_per_second', 'fast'], 'invalid float value'),
                           (['--segment_region', 'mars'], 'invalid choice'),
                           (['--input', 'a', 'b'], "unexpected argument 'b'")):
        with pytest.raises(UsageError, match=fragment.replace('?', r'\?')):
            check_argv(argv)


def _summary(sent=10, rejected=0, reasons=None, read=None, unsent=0):
    return {'read': read if read is not None else sent + rejected + unsent, 'sent': sent,
            'rejected': rejected, 'dropped_no_external_user_id': 0,
            'rejected_by_reason': reasons or {}, 'not_sent_stopped': unsent,
            'files_not_read_stopped': 0}


def test_exit_decision():
    assert exit_decision(_summary(), True, 'r') == (0, None)
    # Rejects that are not about delivery (bad data) do not need a replay: exit 0.
    assert exit_decision(_summary(rejected=2, reasons={'invalid_record': 2}), True, 'r')[0] == 0
    code, line = exit_decision(_summary(rejected=3, reasons={
        'retries_exhausted': 2, 'segment_rejected': 1, 'invalid_record': 0}), True, '/x y/r')
    assert code == 4
    assert line.startswith('3 events were rejected for delivery (retries_exhausted 2, '
                           'segment_rejected 1)')
    assert line.endswith(f"{PROG} replay --rejects '/x y/r' --reasons "
                         'retries_exhausted,segment_rejected')
    assert exit_decision(_summary(rejected=3, reasons={'retries_exhausted': 3}), False, 'r')[0] == 1
    code, line = exit_decision(_summary(unsent=5), True, 'r', signal.SIGINT, 2)
    assert code == 130 and 'stopped by SIGINT' in line and '5 events read but not sent' in line
    assert '2 files not read' in line
    assert exit_decision(_summary(), True, 'r', signal.SIGTERM)[0] == 143


def test_progress_line_and_eta():
    assert format_duration(0) == '0:00:00' and format_duration(3725) == '1:02:05'
    assert format_duration(86400 + 61) == '1 d 0:01:01'
    assert eta_seconds(250, 1000, 50) == 15.0
    assert eta_seconds(10, 0, 50) is None and eta_seconds(10, 100, 0) is None
    totals = {live.FILES_DONE: 3, live.READ: 1200, live.SENT: 1000, live.DROPPED: 100,
              live.REJECTED: 7, live.NEXT_RETRY: 1000.0 + 4.2}
    line = progress_line(65, totals, 10, 321.4, 90, {'ConnectionError': 3, '503': 0}, 1000.0)
    assert line == ('progress 0:01:05: files 3/10 | events read 1,200, sent 1,000, dropped 100, '
                    'rejected 7 | 321 events/s | ETA 0:01:30 | requests failing: '
                    'ConnectionError 3; next retry in 4 s')
    quiet = progress_line(5, {}, 2, 0, None, {}, 1000.0)
    assert quiet == ('progress 0:00:05: files 0/2 | events read 0, sent 0, dropped 0, '
                     'rejected 0 | 0 events/s')


def test_body_has_no_sent_at_unless_asked():
    batch = SegmentBatch((SegmentMessage('t', 'id1', b'{"messageId":"id1"}'),))
    assert json.loads(batch.body()) == {'batch': [{'messageId': 'id1'}]}
    assert json.loads(batch.body('2024-05-01T12:00:00.000Z'))['sentAt'] == \
        '2024-05-01T12:00:00.000Z'


# -- end to end through the command line -----------------------------------------------------------

def _env():
    env = {k: v for k, v in os.environ.items() if k != 'SEGMENT_WRITE_KEY'}
    env['SEGMENT_WRITE_KEY'] = KEY
    env['PYTHONPATH'] = str(ROOT)
    return env


def cli(*args, timeout=300):
    return command(*args, timeout=timeout, env=_env())


def start(*args):
    return subprocess.Popen([sys.executable, '-m', 'pipeline', *map(str, args)], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def one_line(stderr: str) -> str:
    assert 'Traceback' not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith('progress ')]
    return lines[-1] if lines else ''


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp('small')
    return root, generate(root, events=2000, seed=7, hours=2)


@pytest.fixture(scope='module')
def corpus20k(tmp_path_factory):
    root = tmp_path_factory.mktemp('c20k')
    return root, generate(root, events=20000, seed=7)


@pytest.mark.slow
def test_typo_in_throttle_option_is_refused_and_nothing_is_sent(tmp_path, small):
    root, _ = small
    with SegmentReceiver(write_key=KEY) as receiver:
        result = cli('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                     receiver.url, '--max_event_per_second', '100')
        bogus = cli('--input', root, '--rejects', tmp_path / 'r', '--bogus', '3')
        replay = cli('replay', '--rejects', tmp_path / 'r', '--reason', 'retries_exhausted')
        assert receiver.stats()['requests'] == 0
    assert result.returncode == 2 and result.stdout == ''
    assert result.stderr == (f'{PROG}: error: unknown option --max_event_per_second; did you '
                             f'mean --max_events_per_second?\n')
    assert bogus.returncode == 2 and bogus.stderr.count('\n') == 1 and '--bogus' in bogus.stderr
    assert replay.returncode == 2 and 'did you mean --reasons?' in replay.stderr
    assert not (tmp_path / 'r').exists()
    helped = cli('replay', '--help')
    assert helped.returncode == 0 and helped.stdout.startswith(f'usage: {PROG} replay')
    assert '--reasons' in helped.stdout


@pytest.mark.slow
def test_dry_run_then_resume_delivers_everything(tmp_path, small):
    root, report = small
    dry = cli('--input', root, '--rejects', tmp_path / 'r', '--dry_run_output', tmp_path / 'b')
    assert dry.returncode == 0, dry.stderr
    assert glob.glob(str(tmp_path / 'b' / 'batch-*.json'))
    assert not (tmp_path / 'r' / 'manifest').exists()   # nothing --resume reads
    with SegmentReceiver(write_key=KEY) as receiver:
        real = cli('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                   receiver.url, '--resume')
        accepted = {m['messageId'] for m in receiver.messages()}
    assert real.returncode == 0, real.stderr
    assert accepted == report.eligible_ids
    assert 'resume:' not in real.stdout


@pytest.mark.slow
def test_closed_port_exits_4_with_replay_hint_and_progress_names_the_failures(tmp_path, small):
    root, report = small
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]   # closed once the block ends: connection refused
    started = time.monotonic()
    result = cli('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                 f'http://127.0.0.1:{port}/v1/batch', '--max_retry_seconds', '3',
                 '--progress_seconds', '1', '--summary_output', tmp_path / 's.json')
    elapsed = time.monotonic() - started
    assert result.returncode == 4, result.stderr
    summary = json.loads((tmp_path / 's.json').read_text())
    assert summary['rejected_by_reason'] == {'retries_exhausted': report.eligible}
    last = one_line(result.stderr)
    assert last == (f'{PROG}: {report.eligible:,} events were rejected for delivery '
                    f'(retries_exhausted {report.eligible:,}); once the cause is fixed, re-send '
                    f'them with: {PROG} replay --rejects {tmp_path / "r"} --reasons '
                    f'retries_exhausted --segment_endpoint http://127.0.0.1:{port}/v1/batch')
    progress = [line for line in result.stderr.splitlines() if line.startswith('progress ')]
    assert progress and any('requests failing: ConnectionError' in line for line in progress)
    assert any('next retry in' in line for line in progress)
    assert elapsed < 60


@pytest.mark.slow
def test_sigint_stops_cleanly_and_resume_delivers_the_rest(tmp_path, corpus20k):
    root, report = corpus20k
    temp_before = set(glob.glob(os.path.join(tempfile.gettempdir(), 'beam-pipeline-temp*')))
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = start('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                     receiver.url, '--max_events_per_second', '1500', '--progress_seconds', '1',
                     '--summary_output', tmp_path / 's.json')
        deadline = time.monotonic() + 120
        while receiver.stats()['accepted'] < 2000 and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)   # as Ctrl-C does: the whole process group
        stopped_at = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - stopped_at
        first = {m['messageId'] for m in receiver.messages()}
        assert proc.returncode == 130, err
        assert took < 30
        assert 0 < len(first) < report.eligible
        last = one_line(err)
        assert last.startswith(f'{PROG}: stopped by SIGINT: ') and 'rerun with --resume' in last
        summary = json.loads((tmp_path / 's.json').read_text())
        assert summary['read'] == (summary['dropped_no_external_user_id'] + summary['sent']
                                   + summary['rejected'] + summary['not_sent_stopped'])
        assert summary['sent'] <= len(first)
        assert not glob.glob(str(tmp_path / 'r' / 'beam-temp-*'))
        assert not (tmp_path / 'r' / 'manifest').exists()
        assert set(glob.glob(os.path.join(tempfile.gettempdir(),
                                          'beam-pipeline-temp*'))) <= temp_before
        again = cli('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                    receiver.url, '--resume')
        assert again.returncode == 0, again.stderr
        assert {m['messageId'] for m in receiver.messages()} == report.eligible_ids


def _worker_pids(launcher: int):
    """Warm workers are children of the zygote, the launcher's forked child."""
    def children(pid):
        path = f'/proc/{pid}/task/{pid}/children'
        try:
            return [int(p) for p in open(path).read().split()]
        except OSError:
            return []
    return [w for z in children(launcher) for w in children(z)]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='warm workers are Linux only')
def test_killed_worker_gives_one_line_and_no_traceback(tmp_path, corpus20k):
    root, _ = corpus20k
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = start('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                     receiver.url, '--max_events_per_second', '1500', '--direct_num_workers',
                     '2', '--direct_running_mode', 'multi_processing')
        deadline = time.monotonic() + 120
        while receiver.stats()['accepted'] < 1000 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _worker_pids(proc.pid)
        assert workers
        os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines() if not line.startswith('progress ')]
    assert len(lines) == 1
    assert lines[0].startswith(f'{PROG}: error: a worker process died (signal 9); rerun with '
                               f'--resume (details: ')
    log = lines[0].split('(details: ')[1].rstrip(')')
    assert 'Traceback' in Path(log).read_text()   # Beam's own, kept for whoever looks
    assert not glob.glob(str(tmp_path / 'r' / 'beam-temp-*'))
    os.unlink(log)


@pytest.mark.slow
def test_bodies_carry_no_sent_at_unless_asked(tmp_path, small):
    root, report = small
    with SegmentReceiver(write_key=KEY) as receiver:
        default = cli('--input', root, '--rejects', tmp_path / 'a', '--segment_endpoint',
                      receiver.url, '--progress_seconds', '0')
        stats = receiver.stats()
    assert default.returncode == 0 and default.stderr == ''
    assert stats['accepted'] == report.eligible and stats['bodies_with_sent_at'] == 0
    with SegmentReceiver(write_key=KEY) as receiver:
        asked = cli('--input', root, '--rejects', tmp_path / 'b', '--segment_endpoint',
                    receiver.url, '--segment_sent_at')
        stats = receiver.stats()
        sent_at = [r['sent_at'] for r in receiver.accepted_requests()]
    assert asked.returncode == 0
    assert stats['bodies_with_sent_at'] == stats['requests'] > 0
    assert all(s.endswith('Z') for s in sent_at)


@pytest.mark.slow
def test_error_paths_are_one_line(tmp_path, small):
    root, _ = small
    with SegmentReceiver(write_key='another-key') as receiver:   # our key is refused: 401
        refused = cli('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                      receiver.url)
    assert refused.returncode == 3
    assert refused.stderr.startswith(f'{PROG}: error: Segment answered HTTP 401')
    assert refused.stderr.count('\n') == 1
    # A --rejects nobody may write (root ignores file modes: /sys refuses even root).
    if os.geteuid() == 0:
        readonly = '/sys/currents-to-segment-rejects'
    else:
        (tmp_path / 'ro').mkdir()
        os.chmod(tmp_path / 'ro', 0o555)
        readonly = tmp_path / 'ro' / 'r'
    result = cli('--input', root, '--rejects', readonly, '--dry_run_output', tmp_path / 'b')
    assert result.returncode == 2
    assert result.stderr.startswith(f'{PROG}: error: cannot write to --rejects')
    assert result.stderr.count('\n') == 1
    # --plan | head: the reader closes the pipe early; no BrokenPipeError.
    piped = subprocess.run(f'{sys.executable} -m pipeline --input {root} --plan | head -1',
                           shell=True, cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=120)
    assert piped.stdout.startswith('files to read:') and piped.stderr == ''


@pytest.mark.slow
def test_plan_decides_as_the_run_does(tmp_path, samples_dir):
    """Braze's samples have no event_type= folders: types come from the file headers, in the
    plan as in the run; and the plan needs no --rejects."""
    avro = samples_dir / 'avro'
    plan = cli('--input', avro, '--plan')
    assert plan.returncode == 0, plan.stderr
    run = cli('--input', avro, '--rejects', tmp_path / 'r', '--dry_run_output', tmp_path / 'b',
              '--summary_output', tmp_path / 's.json')
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / 's.json').read_text())
    planned = int(plan.stdout.split('files to read: ')[1].split()[0])
    assert planned == summary['files_read'] + summary['files_rejected'] == 31
    skipped = int(plan.stdout.split('files skipped: ')[1].split()[0])
    assert skipped == summary['files_skipped']
    # --start/--end cannot prune files without a date= hour: not pruned, and said so (the
    # same count in the plan and the run; their headers then decide the type as usual).
    ranged = cli('--input', avro, '--plan', '--start', '2030-01-01', '--end', '2030-01-02')
    assert 'read regardless: no date= hour in path: 94 files' in ranged.stdout
    ranged_run = cli('--input', avro, '--rejects', tmp_path / 'r2', '--dry_run_output',
                     tmp_path / 'b2', '--start', '2030-01-01', '--end', '2030-01-02')
    assert 'read regardless: no date= hour in path: 94 files' in ranged_run.stdout


def test_closing_the_progress_monitor_wakes_its_receiver_at_once(monkeypatch):
    """A run's last line waits for the monitor to close: its receiver thread is woken, not
    left to its socket timeout (60 s here)."""
    monkeypatch.setattr(progress_module, 'RECEIVE_TIMEOUT', 60)
    monitor = ProgressMonitor(0, 1, 0, 0, io.StringIO()).start()
    reporter = live.Reporter(monitor.address)
    reporter.add(live.READ, 5)
    reporter.flush()
    deadline = time.monotonic() + 20
    while monitor.totals().get(live.READ) != 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert monitor.totals()[live.READ] == 5
    monitor.close()
    assert not any(thread.is_alive() for thread in monitor.threads)


def test_dataflow_progress_is_the_jobs_attempted_counters(tmp_path):
    """On Dataflow (--wait) the progress lines come from polling the job's counters
    (`dataflow_poll`), not from datagrams. Polled here from a real Beam run's result: the same
    MetricResults query a DataflowPipelineResult answers. A file reject counts as a file done,
    not as a rejected event; an oversized message is a rejected event."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipeline.builder import build_pipeline
    from pipeline.listing import input_pattern, list_currents_files
    from pipeline.options import settings_from
    from pipeline.progress import dataflow_poll
    from tests.helpers import record, write_file

    root = tmp_path / 'in'
    write_file(root, 'users.messages.email.Send',
               [record(i) for i in range(7)] + [record(7, external=None), record(8, external=None),
                                                record(9, email_address='a' * 40_000)])
    write_file(root, 'users.messages.email.Open', [record(10), record(11)], n=1)
    write_file(root, 'users.messages.email.Click', None, n=2, raw=b'Obj\x01 truncated')
    options = PipelineOptions(['--input', str(root), '--rejects', str(tmp_path / 'rejects'),
                               '--dry_run_output', str(tmp_path / 'bodies')])
    settings = settings_from(options)
    listing = list_currents_files(input_pattern(settings.input), settings.selector, frozenset())
    files = [(path, event_type) for path, event_type, _ in listing.files]
    result = build_pipeline(settings, files, options).run()
    result.wait_until_finish()

    poll = dataflow_poll(result)
    totals = poll()
    assert {k: totals.get(k) for k in (live.READ, live.SENT, live.DROPPED, live.REJECTED,
                                        live.FILES_DONE)} == {
        live.READ: 12, live.SENT: 9, live.DROPPED: 2, live.REJECTED: 1, live.FILES_DONE: 3}
    line = ProgressMonitor(0, len(files), 0, 0, io.StringIO(), poll=poll).line()
    assert 'files 3/3' in line
    assert 'events read 12, sent 9, dropped 2, rejected 1' in line


def test_a_failed_dataflow_poll_delays_a_line_and_never_ends_the_run():
    """The job's metrics API can fail (network, quota): that line shows nothing new."""
    def poll():
        raise ConnectionError('metrics API unavailable')
    monitor = ProgressMonitor(0, 3, 0, 0, io.StringIO(), poll=poll)
    assert monitor.totals() == {}
    assert 'files 0/3' in monitor.line()


def test_the_events_estimate_is_worked_out_by_the_first_progress_line_once():
    """Reading block headers for the estimate is left to the first line, not the launcher."""
    asked = []
    totals = {live.SENT: 100}
    monitor = ProgressMonitor(0, 3, lambda: asked.append(1) or 1000, 50, io.StringIO(),
                              poll=lambda: totals)
    assert asked == []
    assert 'ETA 0:00:18' in monitor.line()    # (1000 - 100) events at 50/s
    totals[live.SENT] = 400
    assert 'ETA 0:00:12' in monitor.line() and asked == [1] and monitor.estimate == 1000
