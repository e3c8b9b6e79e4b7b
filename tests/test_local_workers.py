"""Warm local worker processes: the zygote's mechanics, and a real CLI run that uses them."""
import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from devtools.receiver import SegmentReceiver
from pipeline.local_runner import local_runner_options, start_warm_workers
from pipeline import local_workers
from pipeline.local_workers import WarmWorkers
from devtools.sample import generate
from tests.helpers import balanced

ROOT = Path(__file__).resolve().parent.parent
KEY = 'wk_Zq8-TEST-KEY-do-not-leak-7731'

pytestmark = pytest.mark.skipif(not WarmWorkers.supported(), reason='fork-based (Linux)')


def _write_env_then_exit(code):
    """A stand-in worker: records the environment it was given, exits with `code`."""
    def target():
        with open(os.environ['OUT_FILE'], 'w') as fh:
            json.dump({'worker_id': os.environ.get('WORKER_ID'), 'pid': os.getpid(),
                       'ppid': os.getppid()}, fh)
        return code
    return target


def _sleep_forever():
    with open(os.environ['OUT_FILE'], 'w') as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)
    return 0


def _attach(workers, env):
    return subprocess.Popen(workers.command(), shell=True, env=dict(os.environ, **env))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie is not alive either
        with open(f'/proc/{pid}/stat') as fh:
            return fh.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_attach_runs_a_forked_worker_with_beams_environment_and_returns_its_status(tmp_path):
    out = tmp_path / 'env.json'
    with WarmWorkers(target=_write_env_then_exit(7)).start() as workers:
        zygote = workers.pid
        client = _attach(workers, {'OUT_FILE': str(out), 'WORKER_ID': 'worker_3'})
        assert client.wait(30) == 7
    seen = json.loads(out.read_text())
    assert seen['worker_id'] == 'worker_3'
    assert seen['ppid'] == zygote and seen['pid'] != zygote
    assert not _alive(zygote)


def test_killing_the_attach_client_kills_its_worker(tmp_path):
    out = tmp_path / 'pid'
    with WarmWorkers(target=_sleep_forever).start() as workers:
        client = _attach(workers, {'OUT_FILE': str(out)})
        deadline = time.monotonic() + 30
        while not out.exists() or not out.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker = int(out.read_text())
        assert _alive(worker)
        client.send_signal(signal.SIGTERM)   # what Beam does to a worker it gives up on
        client.wait(30)
        deadline = time.monotonic() + 30
        while _alive(worker):
            assert time.monotonic() < deadline, 'worker outlived its attach client'
            time.sleep(0.05)


def test_closing_stops_the_zygote_and_its_workers_and_removes_the_socket(tmp_path):
    out = tmp_path / 'pid'
    workers = WarmWorkers(target=_sleep_forever).start()
    folder = os.path.dirname(workers.command().split()[-1].strip("'"))
    client = _attach(workers, {'OUT_FILE': str(out)})
    deadline = time.monotonic() + 30
    while not out.exists() or not out.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker, zygote = int(out.read_text()), workers.pid
    workers.close()
    assert not _alive(zygote) and not os.path.exists(folder)
    deadline = time.monotonic() + 30
    while _alive(worker):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.wait(30) != 0   # the launcher went away: the client says so, never hangs


def test_attach_without_a_zygote_becomes_beams_cold_worker(tmp_path):
    """No zygote to fork from: the client execs Beam's own worker main (here it then fails
    for want of a control address, which shows it really ran Beam's worker)."""
    env = {k: v for k, v in os.environ.items() if k != 'CONTROL_API_SERVICE_DESCRIPTOR'}
    proc = subprocess.run([sys.executable, '-S', str(ROOT / 'pipeline' / 'local_workers.py'),
                           'attach', str(tmp_path / 'none.sock')],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    first = proc.stderr.splitlines()[0]
    assert 'launcher unreachable' in first and 'starting a fresh worker' in first
    assert 'sdk_worker_main' in proc.stderr and 'CONTROL_API_SERVICE_DESCRIPTOR' in proc.stderr


def _options(*argv):
    options = PipelineOptions(list(argv))
    local_runner_options(options)
    return options


def test_warm_workers_only_for_local_worker_processes_in_a_single_threaded_launcher():
    mp = ('--direct_num_workers', '2', '--direct_running_mode', 'multi_processing')
    assert start_warm_workers(_options(), fresh=False) is None
    assert start_warm_workers(_options(*mp), fresh=True) is None
    assert start_warm_workers(_options('--runner', 'DataflowRunner', *mp), fresh=False) is None
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:   # forking copies only this thread: never while another one runs
        assert start_warm_workers(_options(*mp), fresh=False) is None
    finally:
        stop.set()
        other.join()


def _socket_folders():
    import tempfile
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith('currents-workers-')}


@pytest.mark.parametrize('fresh', [False, True])
def test_cli_run_on_worker_processes_delivers_everything(tmp_path, fresh):
    """The real thing: `python -m pipeline` with 2 local worker processes, forked or fresh."""
    report = generate(str(tmp_path / 'in'), events=3000, seed=5)
    extra = ['--fresh_worker_processes'] if fresh else []
    before = _socket_folders()
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = subprocess.run(
            [sys.executable, '-m', 'pipeline', '--input', report.root,
             '--rejects', str(tmp_path / 'rejects'), '--segment_endpoint', receiver.url,
             '--summary_output', str(tmp_path / 'summary.json'),
             '--direct_num_workers', '2', '--direct_running_mode', 'multi_processing', *extra],
            cwd=ROOT, env=dict(os.environ, SEGMENT_WRITE_KEY=KEY), capture_output=True,
            text=True, timeout=300)
        ids = {m['messageId'] for m in receiver.messages()}
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = 'each started fresh' if fresh else 'forked warm from this one'
    assert f'local run: 2 worker processes, {expected}' in proc.stdout
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['sent'] == report.eligible and ids == report.eligible_ids
    assert balanced(summary) and summary['rejected'] == 0
    assert KEY not in proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr
    assert _socket_folders() <= before   # the launcher removed its zygote's folder


def test_run_in_process_falls_back_to_fresh_workers_when_threads_run(tmp_path, monkeypatch):
    """pytest's process has receiver threads: forking is refused, Beam's cold start is used."""
    from pipeline.main import run
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    report = generate(str(tmp_path / 'in'), events=500, seed=9)
    out = io.StringIO()
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(['--input', report.root, '--rejects', str(tmp_path / 'rejects'),
                    '--segment_endpoint', receiver.url, '--direct_num_workers', '2',
                    '--direct_running_mode', 'multi_processing'], out=out)
        assert len(receiver.messages()) == report.eligible
    assert code == 0
    assert 'local run: 2 worker processes, each started fresh' in out.getvalue()


def test_a_zygote_that_cannot_listen_leaves_nothing_and_the_run_uses_cold_workers(
        tmp_path, monkeypatch):
    """A temp folder whose path is too long for a Unix socket: no zygote, no leftover folder."""
    import tempfile
    deep = tmp_path / ('d' * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(deep))
    with pytest.raises(OSError):
        WarmWorkers().start()
    assert os.listdir(deep) == []
    mp = ('--direct_num_workers', '2', '--direct_running_mode', 'multi_processing')
    assert start_warm_workers(_options(*mp), fresh=False) is None
    assert os.listdir(deep) == []


def test_worker_count_reads_zero_as_every_core_for_the_throttle_and_the_workers(monkeypatch):
    """Beam reads --direct_num_workers 0 as one worker per core: the throttle is divided by that
    many sending processes, and they are forked warm like any other count."""
    from pipeline.builder import sending_processes
    from pipeline.local_runner import uses_worker_processes, worker_processes
    monkeypatch.setattr(os, 'cpu_count', lambda: 4)
    zero = _options('--direct_num_workers', '0', '--direct_running_mode', 'multi_processing')
    assert worker_processes(zero) == 4 and uses_worker_processes(zero)
    assert sending_processes(zero) == 4
    one = _options('--direct_num_workers', '1', '--direct_running_mode', 'multi_processing')
    assert worker_processes(one) == 1 and not uses_worker_processes(one)
    assert sending_processes(one) == 1
    assert worker_processes(_options()) == 0 and sending_processes(_options()) == 1
    threads = _options('--direct_num_workers', '3', '--direct_running_mode', 'multi_threading')
    assert worker_processes(threads) == 0 and sending_processes(threads) == 1


def _socket_folder(workers):
    return os.path.dirname(workers.command().split()[-1].strip("'"))


def test_peer_uid_reads_the_connecting_process_uid():
    import socket as socket_mod
    from pipeline.local_workers import peer_uid
    a, b = socket_mod.socketpair(socket_mod.AF_UNIX)
    with a, b:
        assert peer_uid(a) == os.getuid()


@pytest.mark.skipif(os.getuid() != 0, reason='needs root to connect as another uid')
def test_the_zygote_refuses_a_client_of_another_uid(tmp_path):
    """Even with the folder and socket opened up, a client of another uid gets no worker."""
    out = tmp_path / 'env.json'
    os.chmod(tmp_path, 0o777)
    with WarmWorkers(target=_write_env_then_exit(0)).start() as workers:
        folder = _socket_folder(workers)
        os.chmod(folder, 0o777)
        os.chmod(os.path.join(folder, 'zygote.sock'), 0o777)
        script = ('import os, socket, sys; os.setgid(65534); os.setuid(65534); '
                  's = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n'
                  'try:\n    s.sendall(b\'{"OUT_FILE": "%s"}\\n\')\n'
                  '    print(repr(s.makefile("rb").readline()))\n'
                  'except (ConnectionResetError, BrokenPipeError):\n    print(repr(b""))' % out)
        other = subprocess.run([sys.executable, '-c', script,
                                os.path.join(folder, 'zygote.sock')],
                               capture_output=True, text=True, timeout=30)
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() == "b''"        # closed without an answer
        assert not out.exists()                     # no worker ran
        own = _attach(workers, {'OUT_FILE': str(out)})   # our own uid still gets one
        assert own.wait(30) == 0 and out.exists()


@pytest.mark.parametrize('victim', ['launcher', 'launcher-sigkill', 'zygote'])
def test_the_socket_folder_goes_away_on_sigterm_and_kill(tmp_path, victim):
    """A launcher stopped by SIGTERM (or killed outright) leaves no socket folder behind."""
    script = ('import sys, time; sys.path.insert(0, %r)\n'
              'from pipeline.local_workers import WarmWorkers\n'
              'w = WarmWorkers().start()\n'
              'print(w.command().split()[-1].strip("\'"), w.pid, flush=True)\n'
              'try:\n    time.sleep(60)\nfinally:\n    w.close()\n' % str(ROOT))
    proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    sock, zygote = proc.stdout.readline().split()
    folder = os.path.dirname(sock)
    assert os.path.isdir(folder)
    if victim == 'zygote':
        os.kill(int(zygote), signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGKILL if victim == 'launcher-sigkill' else signal.SIGTERM)
    deadline = time.monotonic() + 20
    while os.path.exists(folder):
        assert time.monotonic() < deadline, f'{folder} left behind after {victim}'
        time.sleep(0.05)
    if victim != 'zygote':
        proc.wait(20)
        deadline = time.monotonic() + 20
        while _alive(int(zygote)):
            assert time.monotonic() < deadline, 'zygote outlived its launcher'
            time.sleep(0.05)
    else:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 143


def _exit_after(seconds, code):
    def target():
        time.sleep(seconds)   # the zygote is back waiting by then
        return code
    return target


def test_a_workers_exit_reaches_its_client_at_once_not_at_the_next_poll(monkeypatch):
    """Beam waits for every worker to exit before a run returns: the zygote is woken by the
    exit itself (a pidfd), so even with a 60-s poll the status arrives at once."""
    monkeypatch.setattr(local_workers, 'POLL_SECONDS', 60)
    with WarmWorkers(target=_exit_after(0.5, 6)).start() as workers:
        client = _attach(workers, {})
        assert client.wait(20) == 6


def test_an_exit_descriptor_turns_readable_when_its_process_exits():
    child = os.fork()
    if child == 0:
        time.sleep(0.3)
        os._exit(0)
    fd = local_workers._exit_descriptor(child)
    try:
        assert fd is not None
        assert select.select([fd], [], [], 0)[0] == []
        assert select.select([fd], [], [], 20)[0] == [fd]
    finally:
        os.close(fd)
        os.waitpid(child, 0)
