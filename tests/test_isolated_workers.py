"""End to end with SDK workers that share nothing with the launcher (tests/isolated_workers.py):
the packaged project in its own virtualenv, Beam's worker pool started from it in its own
directory, HOME and TMPDIR, and the launcher submitting through Beam's PortableRunner
(`--job_endpoint embed --environment_type EXTERNAL`), as on a Flink or Spark cluster.

The workers have none of the tests' variables: they reach S3 (the moto server) with their own
credentials and endpoint from ~/.aws, and read the write key in `setup()` from Secret Manager
(tests/secret_manager_fake.py) through their own Application Default Credentials.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devtools.receiver import SegmentReceiver
from tests.helpers import record, write_file
from tests.isolated_workers import WorkerPool, portable_options, wait_for, worker_venv
from tests.s3_emulator import REGION, MotoServer
from tests.secret_manager_fake import SecretManagerFake

KEY = 'wk_isolated-workers-canary-7d1e'
PROG = 'currents-to-segment'
SECRET = 'projects/c2s-workers/secrets/segment-write-key/versions/3'
BUCKET = 'runs'
HOURS = ('2024-05-01-10', '2024-05-01-11', '2024-05-01-12')
TYPES = ('users.messages.email.Send', 'users.messages.pushnotification.Send')
PER_FILE = 40
TIMEOUT = 5   # --segment_timeout of the stop test: the command must end within it + 30 s
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def currents(tmp_path_factory):
    """Three hours of two event types, 40 events a file (ids by hour), and 4 events without
    external_user_id in the first file (dropped)."""
    root = tmp_path_factory.mktemp('currents')
    ids = {}
    n = 0
    for h, hour in enumerate(HOURS):
        for t, event_type in enumerate(TYPES):
            records = [record(h * 1000 + t * 100 + i) for i in range(PER_FILE)]
            if h == 0 and t == 0:
                records += [record(9000 + i, external=None) for i in range(4)]
            write_file(root, event_type, records, date=hour, n=n)
            n += 1
            ids.setdefault(hour, set()).update(r['id'] for r in records
                                               if r['external_user_id'])
    return root, ids


@pytest.fixture(scope='module')
def moto():
    with MotoServer() as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture(scope='module')
def secret_manager(tmp_path_factory):
    with SecretManagerFake(tmp_path_factory.mktemp('secret-manager'),
                           {SECRET: KEY.encode() + b'\n'}) as fake:
        yield fake


def _worker_home(home: Path, moto: MotoServer) -> None:
    """The worker machine's own AWS setup: credentials and endpoint in ~/.aws (boto3's
    chain), not the launcher's environment."""
    aws = home / '.aws'
    aws.mkdir(parents=True, exist_ok=True)
    (aws / 'credentials').write_text('[default]\naws_access_key_id = worker-key\n'
                                     'aws_secret_access_key = worker-secret\n')
    (aws / 'config').write_text(f'[default]\nregion = {REGION}\nendpoint_url = {moto.url}\n')


@pytest.fixture(scope='module')
def pool(moto, secret_manager, tmp_path_factory):
    venv = worker_venv()
    folder = tmp_path_factory.mktemp('pool')
    workers = WorkerPool(venv, folder, secret_manager.worker_environment())
    _worker_home(workers.home, moto)
    secret_manager.worker_home(workers.home)
    with workers.start():
        yield workers


@pytest.fixture
def receiver():
    with SegmentReceiver(write_key=KEY) as r:
        yield r


def launcher_env(moto: MotoServer, **extra) -> dict:
    """The launcher's environment: the tests' own AWS keys for moto, no write key."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('AWS_', 'SEGMENT_', 'GOOGLE_'))}
    env.update(AWS_ACCESS_KEY_ID=moto.keys[0], AWS_SECRET_ACCESS_KEY=moto.keys[1],
               AWS_DEFAULT_REGION=REGION, **extra)
    return env


def argv(pool, moto, *args):
    return [sys.executable, '-m', 'pipeline', *map(str, args), *portable_options(pool),
            '--s3_endpoint_url', moto.url, '--s3_region_name', REGION]


def launch(cwd: Path, pool, moto, *args, env=None, timeout=240):
    """The command as typed at a terminal in `cwd` (relative paths mean the launcher's)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(argv(pool, moto, *args), cwd=cwd, env=env or launcher_env(moto),
                          capture_output=True, text=True, timeout=timeout)


def keys_under(moto, prefix):
    pages = moto.client().get_paginator('list_objects_v2').paginate(Bucket=BUCKET,
                                                                    Prefix=prefix)
    return sorted(o['Key'] for page in pages for o in page.get('Contents', []))


def read_object(moto, key) -> bytes:
    return moto.client().get_object(Bucket=BUCKET, Key=key)['Body'].read()


def rejects_rows(moto, prefix):
    return [json.loads(line) for key in keys_under(moto, prefix)
            if key.rsplit('/', 1)[-1].startswith('rejects-') and key.endswith('.jsonl')
            for line in read_object(moto, key).splitlines() if line.strip()]


def received_ids(receiver):
    return {m['messageId'] for m in receiver.messages()}


def assert_workers_left_nothing_behind(pool):
    assert not list(pool.cwd.iterdir()), f'written in the workers\' directory: ' \
                                         f'{list(pool.cwd.iterdir())}'


def assert_clean(*texts):
    for text in texts:
        assert KEY not in text


def sending(receiver):
    return ['--segment_endpoint', receiver.url, '--segment_write_key_secret', SECRET]


# -------------------------------------------------------------------------- runs that work
def test_a_full_run_delivers_everything_and_writes_where_the_launcher_said(
        tmp_path, currents, pool, moto, secret_manager, receiver):
    root, ids = currents
    read_before = len(secret_manager.accessed)
    started_before = pool.log().count('Starting worker with command')
    # Worker processes as a local run would fork warm: here the pool starts them (as many as
    # Beam's embedded job server asks for), never the launcher.
    done = launch(tmp_path / 'launcher', pool, moto, '--input', root,
                  '--rejects', f's3://{BUCKET}/full/rejects', '--summary_output', 'summary.json',
                  '--direct_num_workers', '2', '--direct_running_mode', 'multi_processing',
                  *sending(receiver))
    assert done.returncode == 0, done.stderr
    everything = set().union(*ids.values())
    assert received_ids(receiver) == everything
    assert len(receiver.messages()) == len(everything) == 240
    summary = json.loads((tmp_path / 'launcher' / 'summary.json').read_text())   # launcher's cwd
    assert (summary['read'], summary['sent'], summary['dropped_no_external_user_id'],
            summary['rejected']) == (244, 240, 4, 0)
    assert len(secret_manager.accessed) > read_before   # the workers read the key in setup()
    assert pool.log().count('Starting worker with command') > started_before
    assert 'local run:' not in done.stdout                # no warm-worker fork server
    assert not any('/live-' in key for key in keys_under(moto, 'full/'))   # cleaned up
    assert_workers_left_nothing_behind(pool)
    assert_clean(done.stdout, done.stderr, json.dumps(summary))


def test_a_range_run_reads_only_its_hours(tmp_path, currents, pool, moto, receiver):
    root, ids = currents
    done = launch(tmp_path, pool, moto, '--input', root, '--rejects',
                  f's3://{BUCKET}/range/rejects', '--start', '2024-05-01-11', '--end',
                  '2024-05-01-12', '--summary_output', 'summary.json', *sending(receiver))
    assert done.returncode == 0, done.stderr
    assert received_ids(receiver) == ids['2024-05-01-11']
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert (summary['read'], summary['sent'], summary['files_read']) == (80, 80, 2)


def test_a_dry_run_writes_the_bodies_to_the_store_and_sends_nothing(tmp_path, currents, pool,
                                                                     moto, receiver):
    root, ids = currents
    done = launch(tmp_path, pool, moto, '--input', root, '--rejects',
                  f's3://{BUCKET}/dry/rejects', '--dry_run_output', f's3://{BUCKET}/dry/bodies')
    assert done.returncode == 0, done.stderr
    bodies = [json.loads(read_object(moto, key)) for key in keys_under(moto, 'dry/bodies/')]
    assert bodies and all(k.rsplit('/', 1)[-1].startswith('batch-')
                          for k in keys_under(moto, 'dry/bodies/'))
    assert {m['messageId'] for b in bodies for m in b['batch']} == set().union(*ids.values())
    assert receiver.messages() == []
    assert_workers_left_nothing_behind(pool)


def test_replay_resends_the_rejects_a_run_left_on_the_store(tmp_path, currents, pool, moto,
                                                             receiver):
    root, ids = currents
    receiver.set_mode('refuse_503')
    failed = launch(tmp_path, pool, moto, '--input', root, '--rejects',
                    f's3://{BUCKET}/replay/rejects', '--start', '2024-05-01-12',
                    '--max_retry_seconds', '1', *sending(receiver))
    assert failed.returncode == 4, failed.stderr
    rows = rejects_rows(moto, 'replay/rejects/')
    assert {r['reason'] for r in rows} == {'retries_exhausted'}
    assert {r['message']['messageId'] for r in rows} == ids['2024-05-01-12']
    receiver.set_mode('normal')
    replayed = subprocess.run(
        [sys.executable, '-m', 'pipeline', 'replay', '--rejects',
         f's3://{BUCKET}/replay/rejects', *sending(receiver), *portable_options(pool),
         '--s3_endpoint_url', moto.url, '--s3_region_name', REGION],
        cwd=tmp_path, env=launcher_env(moto), capture_output=True, text=True, timeout=240)
    assert replayed.returncode == 0, replayed.stderr
    assert received_ids(receiver) == ids['2024-05-01-12']
    assert_workers_left_nothing_behind(pool)


def test_sigint_stops_the_workers_through_the_store_and_resume_sends_the_rest(
        tmp_path, currents, pool, moto, receiver):
    """Waves of one hour at 20 events/s: SIGINT once the first wave is recorded. The workers
    see the stop object on the rejects store and stop; the command ends within
    --segment_timeout + 30 s; --resume skips the recorded hour and sends the rest."""
    root, ids = currents
    rejects = f's3://{BUCKET}/stop/rejects'
    command = argv(pool, moto, '--input', root, '--rejects', rejects, '--wave_hours', '1',
                   '--max_events_per_second', '20', '--segment_timeout', TIMEOUT,
                   '--progress_seconds', '2', *sending(receiver))
    run = subprocess.Popen(command, cwd=tmp_path, env=launcher_env(moto),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any('/manifest/wave-' in k for k in keys_under(moto, 'stop/')),
                 120, 'the first wave recorded')
        run.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        out, err = run.communicate(timeout=TIMEOUT + 30)
        took = time.monotonic() - signalled
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err
    assert took < TIMEOUT + 30
    assert 'SIGINT: stopping' in err and 'cancelling' not in err   # the workers stopped
    assert f'{PROG}: stopped by SIGINT: ' in err and 'recorded as done; rerun with --resume' in err
    assert 'progress ' in err and 'worker process' in err   # polled, with the job's state
    first = received_ids(receiver)
    assert ids['2024-05-01-10'] <= first and first != set().union(*ids.values())

    resumed = launch(tmp_path, pool, moto, '--input', root, '--rejects', rejects, '--resume',
                     '--wave_hours', '1', '--summary_output', 'resumed.json', *sending(receiver))
    assert resumed.returncode == 0, resumed.stderr
    # The workers list and skip the files recorded as done: one or two hours, 2 files each.
    skipped = json.loads((tmp_path / 'resumed.json').read_text())['files_skipped_by_reason']
    assert skipped.get('completed_by_earlier_run') in (2, 4), skipped
    assert received_ids(receiver) == set().union(*ids.values())
    assert not any('/live-' in k for k in keys_under(moto, 'stop/'))


def test_the_workers_read_the_write_key_from_aws_secrets_manager(tmp_path, currents, pool, moto,
                                                                  receiver):
    root, ids = currents
    arn = moto.client('secretsmanager').create_secret(
        Name='segment-write-key', SecretString=KEY)['ARN']
    done = launch(tmp_path, pool, moto, '--input', root, '--rejects',
                  f's3://{BUCKET}/aws-secret/rejects', '--start', '2024-05-01-10', '--end',
                  '2024-05-01-11', '--segment_endpoint', receiver.url,
                  '--segment_write_key_secret', arn,
                  env=launcher_env(moto, AWS_ENDPOINT_URL_SECRETS_MANAGER=moto.url))
    # the workers reach moto's Secrets Manager through endpoint_url in their ~/.aws/config
    assert done.returncode == 0, done.stderr
    assert received_ids(receiver) == ids['2024-05-01-10']
    assert_clean(done.stdout, done.stderr)


# ----------------------------------------------------------------------- runs refused early
@pytest.mark.parametrize('args, refused', [
    (['--rejects', 'rej'], '--rejects /'),
    (['--rejects', f's3://{BUCKET}/refused', '--dry_run_output', 'bodies'], '--dry_run_output /'),
])
def test_local_paths_that_workers_write_are_refused(tmp_path, currents, pool, moto, receiver,
                                                    args, refused):
    root, _ = currents
    done = launch(tmp_path, pool, moto, '--input', root, *args, *sending(receiver), timeout=60)
    assert done.returncode == 2
    line, = done.stderr.strip().splitlines()
    assert line.startswith('currents-to-segment: error: ' + refused)
    assert str(tmp_path) in line   # made absolute: the launcher's folder, named
    assert 'gs://, s3:// or azfs://' in line and 'PortableRunner' in line
    assert not (tmp_path / 'rej').exists() and not (tmp_path / 'bodies').exists()
    assert receiver.messages() == []


def test_a_remote_run_without_a_key_secret_is_refused(tmp_path, currents, pool, moto, receiver):
    root, _ = currents
    done = launch(tmp_path, pool, moto, '--input', root, '--rejects', f's3://{BUCKET}/nokey',
                  '--segment_endpoint', receiver.url,
                  env=launcher_env(moto, SEGMENT_WRITE_KEY=KEY), timeout=60)
    assert done.returncode == 2
    line, = done.stderr.strip().splitlines()
    assert 'SEGMENT_WRITE_KEY' in line and '--segment_write_key_secret' in line
    assert_clean(done.stdout, done.stderr)


def test_a_pool_that_cannot_start_workers_fails_in_seconds_with_the_job_state(
        tmp_path, currents, moto, receiver):
    """Beam's pool starts each worker as `python` from its PATH: with none there, the job
    fails at once and the line says so."""
    root, _ = currents
    broken = WorkerPool(worker_venv(), tmp_path / 'broken', {'PATH': '/nonexistent'})
    with broken.start():
        started = time.monotonic()
        done = launch(tmp_path / 'launcher', broken, moto, '--input', root,
                      '--rejects', f's3://{BUCKET}/broken', *sending(receiver), timeout=120)
        took = time.monotonic() - started
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert 'the job ended in state FAILED on PortableRunner' in line
    assert "No such file or directory: 'python'" in line
    assert took < 60


def test_workers_that_never_start_are_named_and_the_first_sigterm_ends_the_run(
        tmp_path, currents, moto, receiver):
    """The pool's `python` exits at once, so no SDK worker ever connects and Beam's job server
    waits for one for good. The launcher says so after 30 s, and the first SIGTERM ends the
    command within --segment_timeout + 30 s, the job cancelled through the runner."""
    root, _ = currents
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'python').write_text('#!/bin/sh\nexit 1\n')
    (bin_dir / 'python').chmod(0o755)
    stuck = WorkerPool(worker_venv(), tmp_path / 'stuck', {'PATH': f'{bin_dir}:/usr/bin:/bin'})
    with stuck.start():
        run = subprocess.Popen(
            argv(stuck, moto, '--input', root, '--rejects', f's3://{BUCKET}/stuck',
                 '--segment_timeout', TIMEOUT, '--progress_seconds', '5', *sending(receiver)),
            cwd=tmp_path, env=launcher_env(moto), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            stderr = Lines(run.stderr)
            wait_for(lambda: 'no worker process has started' in stderr.text(), 60,
                     'the line naming the missing workers')
            run.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            run.wait(TIMEOUT + 30)
            took = time.monotonic() - signalled
        finally:
            if run.poll() is None:
                run.kill()
    err = stderr.text(wait=True)
    assert run.returncode == 143, err
    assert took < TIMEOUT + 30
    assert 'no worker process has started after 30 s (job RUNNING)' in err
    assert 'no live metrics from the runner yet' in err and '0 worker processes started' in err
    assert f'the job did not end within {TIMEOUT + 15} s of SIGTERM: cancelling it' in err
    assert 'stopped by SIGTERM; the files this wave completed are recorded as done' in err
    assert receiver.messages() == []


class Lines:
    """A child's output read as it comes, by a thread (a silent child never blocks a test)."""

    def __init__(self, stream):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)

    def text(self, wait=False) -> str:
        if wait:
            self.thread.join(10)
        return ''.join(self.lines)
