"""Local or remote workers (pipeline/runners.py), and how a run on remote ones is watched and
stopped (pipeline/remote.py, the store stop marker in transforms/progress.py). End to end with
workers that share nothing with the launcher: tests/test_isolated_workers.py."""
import fnmatch
import io
import os
import threading
import time
from types import SimpleNamespace

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import remote as remote_module
from pipeline.local_runner import local_runner_options, start_warm_workers
from pipeline.main import run
from pipeline.options import settings_from
from pipeline.paths import UsageError
from pipeline.progress import ProgressMonitor, dataflow_poll
from pipeline.remote import JobCancelled, RemoteJobFailed, RemoteRun, last_line
from pipeline.runners import check_remote_key, classify, runner_key, settle_paths
from transforms import progress as live
from transforms.progress import StopSignal, StoreStopSignal, stop_signal_for
from transforms.write_key import WriteKeyMissing

SECRET = 'projects/p/secrets/segment-write-key/versions/1'


def options(*argv):
    o = PipelineOptions(list(argv))
    local_runner_options(o)
    return o


# ------------------------------------------------------------------------------ classifying
@pytest.mark.parametrize('argv, local, where', [
    ([], True, 'workers in this process or its own worker processes'),
    (['--runner', 'DirectRunner', '--direct_running_mode', 'multi_processing'], True,
     'workers in this process or its own worker processes'),
    (['--runner', 'direct'], True, 'workers in this process or its own worker processes'),
    (['--runner', 'PortableRunner', '--environment_type', 'LOOPBACK'], True,
     'LOOPBACK environment: workers in this process'),
    (['--runner', 'PrismRunner'], True, 'LOOPBACK environment: workers in this process'),
    (['--runner', 'FlinkRunner', '--environment_type', 'loopback'], True,
     'LOOPBACK environment: workers in this process'),
    (['--runner', 'PortableRunner', '--environment_type', 'EXTERNAL'], False,
     'EXTERNAL environment'),
    (['--runner', 'PortableRunner', '--environment_type', 'PROCESS'], False,
     'PROCESS environment'),
    (['--runner', 'apache_beam.runners.portability.portable_runner.PortableRunner'], False,
     'default (DOCKER) environment'),
    (['--runner', 'PrismRunner', '--environment_type', 'DOCKER'], False, 'DOCKER environment'),
    (['--runner', 'FlinkRunner'], False, 'default (DOCKER) environment'),
    (['--runner', 'SparkRunner', '--environment_type', 'EXTERNAL'], False,
     'EXTERNAL environment'),
    (['--runner', 'DataflowRunner'], False, 'Dataflow workers'),
    (['--runner', 'TestDataflowRunner'], False, 'Dataflow workers'),
    (['--runner', 'SamzaRunner'], False, 'workers of an unknown runner'),
])
def test_runners_are_local_only_when_their_workers_share_this_process_or_machine(argv, local,
                                                                                  where):
    kind = classify(options(*argv))
    assert (kind.local, kind.where) == (local, where)


def test_runner_names_are_read_as_beam_reads_them():
    assert {runner_key(n) for n in ('PortableRunner', 'portable', 'apache_beam.runners.'
                                    'portability.portable_runner.PortableRunner')} == {'portable'}
    assert runner_key(None) == ''


def test_the_dask_runner_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', 'k')
    assert run(['--input', str(tmp_path), '--rejects', str(tmp_path / 'r'), '--runner',
                'apache_beam.runners.dask.dask_runner.DaskRunner'], out=io.StringIO()) == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('currents-to-segment: error: --runner DaskRunner is not supported')
    assert 'no metrics' in line


def test_remote_runs_never_start_the_warm_worker_fork_server():
    remote = options('--runner', 'PortableRunner', '--environment_type', 'EXTERNAL',
                     '--environment_config', '127.0.0.1:1', '--direct_num_workers', '2',
                     '--direct_running_mode', 'multi_processing')
    assert start_warm_workers(remote, fresh=False) is None


# ---------------------------------------------------------------------------------- paths
def _settings(*argv):
    return settings_from(PipelineOptions(['--input', 'in', '--rejects', 'rej', *argv]))


def test_local_paths_are_made_absolute_against_the_launchers_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = _settings('--dry_run_output', 'bodies', '--summary_output', 's.json',
                         '--skip_files', 'in/a.avro, gs://b/c.avro')
    kind = settle_paths(settings, options())
    assert kind.local
    assert (settings.input, settings.rejects, settings.dry_run_output,
            settings.summary_output) == (str(tmp_path / 'in'), str(tmp_path / 'rej'),
                                         str(tmp_path / 'bodies'), str(tmp_path / 's.json'))
    assert settings.skip_files == {str(tmp_path / 'in' / 'a.avro'), 'gs://b/c.avro'}


def test_store_urls_are_left_as_given():
    settings = settings_from(PipelineOptions(['--input', 's3://b/in', '--rejects',
                                              'gs://b/rej', '--dry_run_output', 'azfs://a/c/d']))
    settle_paths(settings, options('--runner', 'FlinkRunner'))
    assert (settings.input, settings.rejects, settings.dry_run_output) == (
        's3://b/in', 'gs://b/rej', 'azfs://a/c/d')


@pytest.mark.parametrize('argv, flag', [
    (['--rejects', 'rej'], '--rejects'),
    (['--rejects', 'gs://b/r', '--dry_run_output', '/abs/bodies'], '--dry_run_output'),
])
def test_a_local_path_remote_workers_would_write_is_refused(tmp_path, monkeypatch, argv, flag):
    monkeypatch.chdir(tmp_path)
    settings = settings_from(PipelineOptions(['--input', 'in', *argv]))
    with pytest.raises(UsageError) as refused:
        settle_paths(settings, options('--runner', 'PortableRunner', '--environment_type',
                                       'EXTERNAL'))
    text = str(refused.value)
    assert text.startswith(f'{flag} /') and 'on PortableRunner (EXTERNAL environment)' in text
    assert text.endswith('give a store URL (gs://, s3:// or azfs://)')


def test_on_a_remote_runner_the_summary_and_the_input_may_stay_local(tmp_path, monkeypatch):
    """The launcher writes --summary_output; a local --input is read at its absolute path."""
    monkeypatch.chdir(tmp_path)
    settings = settings_from(PipelineOptions(['--input', 'in', '--rejects', 'gs://b/r',
                                              '--summary_output', 's.json']))
    kind = settle_paths(settings, options('--runner', 'DataflowRunner'))
    assert not kind.local
    assert (settings.input, settings.summary_output) == (str(tmp_path / 'in'),
                                                         str(tmp_path / 's.json'))


# ------------------------------------------------------------------------------ write key
def test_a_remote_run_needs_a_key_secret_even_with_the_key_in_this_environment(monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', 'k')
    remote = options('--runner', 'PortableRunner', '--environment_type', 'DOCKER')
    with pytest.raises(UsageError, match='SEGMENT_WRITE_KEY: pass --segment_write_key_secret'):
        check_remote_key(_settings(), remote)
    check_remote_key(_settings('--segment_write_key_secret', SECRET), remote)
    check_remote_key(_settings('--dry_run_output', 'gs://b/d'), remote)   # sends nothing
    check_remote_key(_settings(), options())                              # local


def test_a_local_run_still_reads_the_key_from_its_environment(monkeypatch):
    from pipeline.cli import check_sending_setup
    monkeypatch.delenv('SEGMENT_WRITE_KEY', raising=False)
    with pytest.raises(WriteKeyMissing):
        check_sending_setup(_settings(), options())


# ----------------------------------------------------------------------- store stop marker
@pytest.fixture
def fake_store(monkeypatch):
    """FileSystems.exists/create on a dict: which store objects exist, and how often asked."""
    objects, asked = set(), []

    def exists(path):
        asked.append(path)
        return path in objects

    class Created(io.BytesIO):
        def __init__(self, path):
            super().__init__()
            objects.add(path)

    def match(patterns):
        return [SimpleNamespace(metadata_list=[SimpleNamespace(path=p) for p in sorted(objects)
                                               if fnmatch.fnmatch(p, pattern)])
                for pattern in patterns]

    monkeypatch.setattr(FileSystems, 'exists', staticmethod(exists))
    monkeypatch.setattr(FileSystems, 'create', staticmethod(lambda path, *a, **k: Created(path)))
    monkeypatch.setattr(FileSystems, 'match', staticmethod(match))
    return objects, asked


def test_workers_see_a_store_stop_marker_from_a_thread_not_per_element(fake_store):
    objects, asked = fake_store
    marker = 'gs://b/rej/live-r1/stop'
    stop = StoreStopSignal(marker, check_seconds=0.05)
    for _ in range(100_000):
        assert not stop.is_set()          # a flag read: no store call per element
    time.sleep(0.2)
    looks = len(asked)
    assert 2 <= looks <= 10               # ~0.2 s / 0.05 s, from the one thread
    assert any(p.startswith('gs://b/rej/live-r1/worker-') for p in objects)   # announced
    objects.add(marker)
    deadline = time.monotonic() + 2
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stop.is_set() and stop.sleep(5)   # a stopped worker's sleeps end at once


def test_the_default_store_look_is_every_3_seconds():
    assert live.STORE_CHECK_SECONDS == 3.0


def test_a_local_stop_path_stays_a_file_and_a_store_one_a_store_marker(tmp_path, fake_store):
    assert type(stop_signal_for(str(tmp_path / 'stop'))) is StopSignal
    store = stop_signal_for('s3://b/r/live-x/stop')
    store.stopped = True                      # its thread ends: no look after this test
    live._stops.pop(store.path)
    assert type(store) is StoreStopSignal


def test_bare_workers_get_beams_filesystem_defaults_and_others_keep_theirs(monkeypatch):
    from apache_beam.options.value_provider import RuntimeValueProvider
    from transforms.credentials import bare_worker_filesystems
    monkeypatch.setattr(FileSystems, '_pipeline_options', None)
    monkeypatch.setattr(RuntimeValueProvider, 'runtime_options', None)
    bare_worker_filesystems()
    assert isinstance(FileSystems._pipeline_options, PipelineOptions)
    given = PipelineOptions(['--s3_endpoint_url', 'http://127.0.0.1:1'])
    monkeypatch.setattr(FileSystems, '_pipeline_options', given)
    bare_worker_filesystems()
    assert FileSystems._pipeline_options is given


# --------------------------------------------------------------------- watching a remote job
class FakeJob:
    """A PipelineResult: runs until `finish()` or `cancel()`; `fails` makes it raise."""

    def __init__(self, fails: str = '', metrics=None):
        self.done = threading.Event()
        self.cancelled = False
        self.fails = fails
        self.state = 'RUNNING'

    def wait_until_finish(self):
        self.done.wait()
        if self.fails:
            self.state = self._state = 'FAILED'
            raise RuntimeError(self.fails)
        return self.state

    def finish(self):
        self.state = 'DONE'
        self.done.set()

    def cancel(self):
        self.cancelled = True
        self.state = 'CANCELLED'
        self.done.set()


def _remote(timeout=1.0, progress=0.0, rejects='gs://b/rej'):
    settings = SimpleNamespace(rejects=rejects, run_id='r1', timeout=timeout,
                               progress_seconds=progress, max_events_per_second=0.0)
    console = io.StringIO()
    return RemoteRun(settings, options('--runner', 'PortableRunner', '--job_endpoint', 'embed',
                                       '--environment_type', 'EXTERNAL'), console,
                     lambda signum: None), console


def test_a_stop_not_honoured_within_the_timeout_plus_15_s_cancels_the_job(monkeypatch,
                                                                          fake_store):
    remote, console = _remote(timeout=1.0)
    assert remote.grace == 16.0                    # --segment_timeout 1 + 15
    remote.grace = 0.6                             # the same rule, quicker
    job = FakeJob()
    remote.stop.request(2)
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        remote.wait(job, 3)
    assert 0.6 <= time.monotonic() - started < 3
    assert job.cancelled and remote.cancelled
    assert 'the job did not end within 1 s of SIGINT: cancelling it through the runner' in \
        console.getvalue()


def test_a_job_that_ends_after_the_stop_is_not_cancelled(fake_store):
    remote, _ = _remote(timeout=30.0)
    job = FakeJob()
    remote.stop.request(15)
    threading.Timer(0.3, job.finish).start()
    remote.wait(job, 3)
    assert not job.cancelled
    assert 'gs://b/rej/live-r1/stop' in fake_store[0]   # what the workers look for


def test_a_cancel_that_hangs_is_given_up_after_10_s(monkeypatch, fake_store):
    assert remote_module.CANCEL_SECONDS == 10.0
    monkeypatch.setattr(remote_module, 'CANCEL_SECONDS', 0.2)
    remote, _ = _remote()
    remote.grace = 0.0
    job = FakeJob()
    job.cancel = lambda: time.sleep(30)
    remote.stop.request(2)
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        remote.wait(job, 1)
    assert time.monotonic() - started < 2


def test_a_failed_job_is_one_line_with_its_state_and_the_errors_last_line(fake_store):
    remote, _ = _remote()
    job = FakeJob(fails='Pipeline job-1 failed in state FAILED: Error running pipeline.\n'
                        'Traceback (most recent call last):\n  File "x.py", line 1\n'
                        "FileNotFoundError: [Errno 2] No such file or directory: 'python'\n")
    job.done.set()
    with pytest.raises(RemoteJobFailed) as failed:
        remote.wait(job, 1)
    assert str(failed.value) == ("the job ended in state FAILED on PortableRunner: "
                                 "FileNotFoundError: [Errno 2] No such file or directory: "
                                 "'python'")


def test_our_own_stop_reasons_in_a_failed_job_keep_their_exit_status(fake_store):
    from pipeline.cli import run_failed
    remote, _ = _remote()
    job = FakeJob(fails='Traceback ...\ntransforms.write_key.WriteKeyMissing: cannot read the '
                        f'write key secret {SECRET}: NotFound\n  [while running Send]')
    job.done.set()
    with pytest.raises(RuntimeError) as failed:
        remote.wait(job, 1)
    assert not isinstance(failed.value, RemoteJobFailed)
    assert run_failed(failed.value) == 2


def test_no_worker_started_is_said_once_after_30_s(monkeypatch, fake_store):
    assert remote_module.NO_WORKER_SECONDS == 30.0
    monkeypatch.setattr(remote_module, 'NO_WORKER_SECONDS', 0.5)
    remote, console = _remote()
    job = FakeJob()
    threading.Timer(1.6, job.finish).start()
    remote.wait(job, 1)   # 0.5 s loop: looked at 0.5, 1.0 and 1.5 s; said once
    said = console.getvalue()
    assert said.count('no worker process has started after') == 1
    assert '(job RUNNING): check that the runner can start the SDK workers' in said


def test_no_line_about_workers_once_one_has_started(monkeypatch, fake_store):
    monkeypatch.setattr(remote_module, 'NO_WORKER_SECONDS', 0.2)
    remote, console = _remote()
    fake_store[0].add('gs://b/rej/live-r1/worker-host-1-abc')
    job = FakeJob()
    threading.Timer(0.8, job.finish).start()
    remote.wait(job, 1)
    assert 'no worker process' not in console.getvalue()
    assert remote.status(job) == 'job DONE, 1 worker process started'


def test_progress_says_when_the_runner_has_no_live_metrics_instead_of_zeros():
    monitor = ProgressMonitor(0, 3, 0, 0, io.StringIO(), poll=lambda: {},
                              status=lambda: 'job RUNNING, 2 worker processes started',
                              no_metrics='no live metrics from the runner yet (why)')
    line = monitor.line()
    assert line.endswith(': job RUNNING, 2 worker processes started; no live metrics from the '
                         'runner yet (why)')
    assert 'events/s' not in line
    monitor.poll = lambda: {live.SENT: 7}
    line = monitor.line()
    assert 'sent 7' in line and line.endswith(' | job RUNNING, 2 worker processes started')


def test_a_portable_results_cached_metrics_are_asked_again_each_poll():
    """Beam's PortableRunnerResult keeps its first metrics answer: the poll asks anew."""
    from apache_beam.metrics.execution import MetricKey
    from apache_beam.metrics.metric import MetricResults
    from apache_beam.metrics.metricbase import MetricName
    from transforms import counts

    class Results(MetricResults):
        def __init__(self, n):
            self.n = n

        def query(self, filter=None):
            name = f'{counts.SENT}{counts.SEP}users.messages.email.Send'
            key = MetricKey('step', MetricName(counts.NAMESPACE, name))
            return {'counters': [SimpleNamespace(key=key, attempted=None, committed=self.n)],
                    'distributions': [], 'gauges': []}

    answers = iter([Results(5), Results(9)])

    class Result:
        _job_service = object()
        _metrics = None

        def metrics(self):
            if not self._metrics:
                self._metrics = next(answers)
            return self._metrics

    poll = dataflow_poll(Result())
    assert poll() == {live.SENT: 5}
    assert poll() == {live.SENT: 9}


def test_last_line_is_the_exception_without_beams_step_suffix():
    assert last_line('a\n\nValueError: bad [while running \'Send\']\n  ') == 'ValueError: bad'
    assert last_line('') == ''


def test_the_live_folder_is_removed_when_the_run_ends_but_a_cancelled_stop_marker_stays(
        monkeypatch, fake_store):
    remote, _ = _remote()
    paths = ['gs://b/rej/live-r1/stop', 'gs://b/rej/live-r1/worker-h-1-a']
    deleted = []
    monkeypatch.setattr(FileSystems, 'match', staticmethod(lambda patterns: [SimpleNamespace(
        metadata_list=[SimpleNamespace(path=p) for p in paths])]))
    monkeypatch.setattr(FileSystems, 'delete', staticmethod(deleted.extend))
    remote.close()
    assert deleted == paths
    deleted.clear()
    remote.cancelled = True
    remote.close()
    assert deleted == ['gs://b/rej/live-r1/worker-h-1-a']
    assert not os.path.exists(remote.stop.path)


def test_the_launcher_leaves_on_its_own_at_the_timeout_plus_28_s(monkeypatch, fake_store):
    """Even a runner that never answers (a hung submission or cancel) cannot keep the command:
    the first signal ends it within --segment_timeout + 30 s."""
    assert (remote_module.STOP_MARGIN, remote_module.CANCEL_SECONDS,
            remote_module.LEAVE_MARGIN) == (15.0, 10.0, 3.0)   # 15 + 10 + 3 = 28 < 30
    exits = []
    monkeypatch.setattr(remote_module.os, '_exit', exits.append)
    monkeypatch.setattr(remote_module, 'CANCEL_SECONDS', 0.0)
    monkeypatch.setattr(remote_module, 'LEAVE_MARGIN', 0.0)
    remote, console = _remote()
    remote.grace = 0.7
    remote.stop.request(15)
    threading.Thread(target=remote._leave_at_the_deadline, daemon=True).start()
    time.sleep(0.4)
    assert exits == []                      # not before the deadline
    time.sleep(0.9)
    remote.closed.set()
    assert exits[:1] == [143]
    assert 'the run did not end within 1 s of SIGTERM: leaving now' in console.getvalue()


def test_the_deadline_watch_ends_with_the_run(monkeypatch, fake_store):
    exits = []
    monkeypatch.setattr(remote_module.os, '_exit', exits.append)
    remote, _ = _remote()
    remote.grace = 0.0
    watch = threading.Thread(target=remote._leave_at_the_deadline, daemon=True)
    watch.start()
    remote.close()
    watch.join(2)
    assert not watch.is_alive()
    remote.stop.request(2)
    time.sleep(0.7)
    assert exits == []


@pytest.mark.parametrize('argv, said', [
    (['--input', 'in', '--rejects', 'gs://b/r', '--follow'],
     '--follow runs locally; on PortableRunner launch --since_last_run on a schedule'),
    (['replay', '--rejects', 'rej'], '--rejects /'),
])
def test_follow_and_a_local_replay_are_refused_on_remote_workers(tmp_path, monkeypatch, capsys,
                                                                 argv, said):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('SEGMENT_WRITE_KEY', 'k')
    (tmp_path / 'in').mkdir()
    assert run([*argv, '--runner', 'PortableRunner', '--environment_type', 'EXTERNAL',
                '--environment_config', '127.0.0.1:1'], out=io.StringIO()) == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f'currents-to-segment: error: {said}')
    assert not (tmp_path / 'rej').exists()
