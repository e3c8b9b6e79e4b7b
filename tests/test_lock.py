"""The lock with a lease (pipeline/lock.py): one holder at a time, on a local folder and gs://.

Real conditional writes only: O_EXCL and flock on the local filesystem, `ifGenerationMatch`
against the GCS emulator (tests/gcs_emulator.py makes it answer preconditions as GCS does).
"""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.lock import GcsStore, Lease, LocalStore, Lock, LockBusy, lock_path

ROOT = Path(__file__).resolve().parents[1]


def contenders(path, store_factory, n, lease=30.0):
    """n threads try to take the lock at the same instant; returns the locks that got it."""
    barrier = threading.Barrier(n)
    won, busy = [], []

    def attempt(i):
        lock = Lock(path, store=store_factory(), lease=lease)
        barrier.wait()
        try:
            won.append(lock.acquire(f'run-{i}'))
        except LockBusy:
            busy.append(i)
    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) + len(busy) == n
    return won


# ------------------------------------------------------------------------------------ local
def test_local_lock_is_exclusive_until_released(tmp_path):
    path = lock_path(str(tmp_path / 'rejects'))
    first = Lock(path, lease=30).acquire('run-a')
    with pytest.raises(LockBusy) as busy:
        Lock(path, lease=30).acquire('run-b')
    assert 'run-a' in str(busy.value) and 'lease until' in str(busy.value)
    assert json.loads(Path(path).read_text())['holder'] == first.holder
    first.release()
    assert not Path(path).exists()
    Lock(path, lease=30).acquire('run-b').release()


def _race_in_process(path, barrier, results):
    lock = Lock(path, lease=30)
    barrier.wait()
    try:
        lock.acquire(f'pid-{os.getpid()}')
        results.put('won')
    except LockBusy:
        results.put('busy')


def test_processes_racing_for_the_local_lock_one_wins(tmp_path):
    path = lock_path(str(tmp_path / 'rejects'))
    ctx = multiprocessing.get_context('fork')
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_race_in_process, args=(path, barrier, results))
             for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    answers = sorted(results.get(timeout=5) for _ in procs)
    assert answers == ['busy'] * 5 + ['won']


def test_threads_racing_for_the_local_lock_one_wins(tmp_path):
    assert len(contenders(lock_path(str(tmp_path)), LocalStore, 8)) == 1


def test_expired_lease_is_taken_over_once_and_the_old_holder_knows(tmp_path):
    path = lock_path(str(tmp_path))
    old = Lock(path, lease=0.3).acquire('old-run')
    time.sleep(0.4)
    won = contenders(path, LocalStore, 6)
    assert len(won) == 1 and won[0].taken_over.run_id == 'old-run'
    assert old.renew() is False and old.lost          # it cannot renew what it lost
    old.release()                                      # and must not delete the new holder's
    assert json.loads(Path(path).read_text())['run_id'] == won[0].lease.run_id


def test_renewed_lease_stays_held(tmp_path):
    path = lock_path(str(tmp_path))
    holder = Lock(path, lease=0.6).acquire('long-run')
    holder.start_renewing()
    try:
        time.sleep(1.5)                                 # 2.5 leases
        with pytest.raises(LockBusy):
            Lock(path, lease=0.6).acquire('next-run')
    finally:
        holder.release()
    Lock(path, lease=0.6).acquire('next-run').release()


def test_lock_handed_to_a_job_is_free_once_its_record_exists(tmp_path):
    path = lock_path(str(tmp_path))
    marker = tmp_path / 'delivered' / 'segment-job-w0.jsonl'
    launcher = Lock(path, lease=30).acquire('job')
    assert launcher.hand_over(str(marker), 3600)
    with pytest.raises(LockBusy) as busy:
        Lock(path, lease=30).acquire('next')
    assert 'submitted job' in str(busy.value)
    marker.parent.mkdir(parents=True)
    marker.write_text('')
    nxt = Lock(path, lease=30).acquire('next')
    assert nxt.taken_over.run_id == 'job'
    nxt.release()


HOLDER = '''
import sys, time
from pipeline.lock import Lock
lock = Lock(sys.argv[1], lease=float(sys.argv[2])).acquire('killed-run')
lock.start_renewing()
print(lock.holder, flush=True)
time.sleep(120)
'''


@pytest.mark.slow
def test_holder_killed_with_sigkill_is_taken_over_after_its_lease(tmp_path):
    path = lock_path(str(tmp_path))
    lease = 1.5
    child = subprocess.Popen([sys.executable, '-c', HOLDER, path, str(lease)],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        holder = child.stdout.readline().strip()
        assert holder
        time.sleep(lease)                     # renewed meanwhile: still held
        with pytest.raises(LockBusy):
            Lock(path, lease=lease).acquire('next')
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed_at = time.time()
    expires = json.loads(Path(path).read_text())['expires']
    with pytest.raises(LockBusy):             # dead, but its lease runs on
        Lock(path, lease=lease).acquire('next')
    while True:
        try:
            nxt = Lock(path, lease=lease).acquire('next')
            break
        except LockBusy:
            assert time.time() < killed_at + lease + 2, 'stale lock never taken over'
            time.sleep(0.05)
    assert time.time() >= expires and nxt.taken_over.holder == holder
    nxt.release()


def test_lease_body_round_trips_and_garbage_is_not_a_lease():
    lease = Lease('h:1:x', 'r', 1.0, 2.0, 'gs://b/m')
    assert Lease.from_bytes(lease.to_bytes()) == lease
    assert Lease.from_bytes(b'{"holder": 1}') is None and Lease.from_bytes(b'\x00') is None


# ------------------------------------------------------------------------------------- gs://
@pytest.fixture(scope='module')
def gcs():
    from tests.gcs_emulator import GcsEmulator
    with GcsEmulator(bucket='c2s-lock') as emulator:
        yield emulator


@pytest.fixture
def gcs_env(gcs, monkeypatch):
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', gcs.url)
    gcs.delete_prefix('')
    return gcs


@pytest.mark.slow
def test_gcs_lock_is_exclusive_with_generation_preconditions(gcs_env):
    path = 'gs://c2s-lock/rejects/since_last_run.lock'
    won = contenders(path, GcsStore, 6)
    assert len(won) == 1
    body = json.loads(gcs_env.read('rejects/since_last_run.lock'))
    assert body['holder'] == won[0].holder
    assert won[0].renew() and won[0].renew()       # compare-and-swap on its own generation
    with pytest.raises(LockBusy):
        Lock(path, store=GcsStore(), lease=30).acquire('late')
    won[0].release()
    assert gcs_env.list('rejects/') == []


@pytest.mark.slow
def test_gcs_stale_lock_is_taken_over_once(gcs_env):
    path = 'gs://c2s-lock/rejects/since_last_run.lock'
    old = Lock(path, store=GcsStore(), lease=0.3).acquire('old-run')
    time.sleep(0.4)
    won = contenders(path, GcsStore, 5)
    assert len(won) == 1 and won[0].taken_over.run_id == 'old-run'
    assert old.renew() is False
    old.release()
    assert json.loads(gcs_env.read('rejects/since_last_run.lock'))['holder'] == won[0].holder
    won[0].release()


# -------------------------------------------------------------------------------------- s3://
@pytest.fixture(scope='module')
def s3_url():
    """moto's S3 server on loopback (skipped where the S3 test dependencies are absent)."""
    server_module = pytest.importorskip('moto.server')
    pytest.importorskip('boto3')
    server = server_module.ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f'http://{host}:{port}'
    server.stop()


@pytest.mark.slow
def test_s3_lock_uses_if_none_match_and_etags(s3_url, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipeline.lock import S3Store, store_for
    monkeypatch.setenv('AWS_DEFAULT_REGION', 'us-east-1')
    options = PipelineOptions(['--s3_endpoint_url', s3_url, '--s3_access_key_id', 'test',
                               '--s3_secret_access_key', 'test', '--s3_region_name', 'us-east-1'])
    store = store_for('s3://c2s-lock/rejects/since_last_run.lock', options)
    assert isinstance(store, S3Store)
    store.client.create_bucket(Bucket='c2s-lock')
    path = 's3://c2s-lock/rejects/since_last_run.lock'
    won = contenders(path, lambda: store_for(path, options), 6)
    assert len(won) == 1 and won[0].renew()
    with pytest.raises(LockBusy):
        Lock(path, store=store, lease=30).acquire('late')
    won[0].release()
    assert store.read(path) is None
    old = Lock(path, store=store, lease=0.3).acquire('old-run')
    time.sleep(0.4)
    [new] = contenders(path, lambda: store_for(path, options), 4)
    assert new.taken_over.run_id == 'old-run' and old.renew() is False
    old.release()
    assert Lease.from_bytes(store.read(path)[0]).holder == new.holder
    new.release()


# ------------------------------------------------------------------------------------ azfs://
AZURITE_KEY = ('Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/'
               'KBHBeksoGMGw==')   # Azurite's published development account key


@pytest.fixture(scope='module')
def azurite():
    """Azurite's blob service on loopback, installed and started as the store tests do."""
    pytest.importorskip('azure.storage.blob')
    from tests.azurite import Azurite
    with Azurite() as server:
        yield server.connection_string()


@pytest.mark.slow
def test_azure_lock_uses_overwrite_false_and_etags(azurite):
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipeline.lock import AzureStore, store_for
    options = PipelineOptions(['--azure_connection_string', azurite])
    path = 'azfs://devstoreaccount1/c2s-lock/rejects/since_last_run.lock'
    store = store_for(path, options)
    assert isinstance(store, AzureStore)
    store.service.create_container('c2s-lock')
    won = contenders(path, lambda: store_for(path, options), 6)
    assert len(won) == 1 and won[0].renew()
    with pytest.raises(LockBusy):
        Lock(path, store=store, lease=30).acquire('late')
    won[0].release()
    assert store.read(path) is None
    old = Lock(path, store=store, lease=0.3).acquire('old-run')
    time.sleep(0.4)
    [new] = contenders(path, lambda: store_for(path, options), 4)
    assert new.taken_over.run_id == 'old-run' and old.renew() is False
    old.release()
    assert Lease.from_bytes(store.read(path)[0]).holder == new.holder
    new.release()
