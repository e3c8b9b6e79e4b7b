"""A run costs what its range holds, not the bucket's history: on S3 (moto), Cloud Storage (the
GCS emulator) and Azure Blob Storage (Azurite), counting the LIST requests each store answers.

The same bucket is built twice, once with 2,000 and once with 50,000 objects of history (zero-
byte .avro objects of the same event types, in hours months before the one read: created
straight in each emulator's backend where it has one, else in bulk), plus one real file per
type in a fresh hour. A one-hour `--plan`, a one-hour run and a `--since_last_run` that finds
one new object must make exactly as many LIST requests over either history, and never open an
object outside the hour.
"""
import datetime
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.receiver import SegmentReceiver
from pipeline.main import run
from tests.helpers import avro_bytes, record

pytestmark = pytest.mark.slow

KEY = 'wk_history-scaling-key'
TYPES = ('users.messages.email.Send', 'users.messages.email.Open',
         'users.messages.pushnotification.Send', 'users.canvas.Entry')
PREFIX = 'currents/dataexport.prod-01.S3.integration.5f0123456789abcdef012345'
FRESH = datetime.datetime(2024, 6, 10, 5)
HISTORY_START = datetime.datetime(2024, 1, 1)
HISTORY_HOURS = 3700   # up to 2024-06-04: more than --lookback_hours before FRESH
SIZES = (2_000, 50_000)


def hour_name(hour: datetime.datetime) -> str:
    return hour.strftime('%Y-%m-%d-%H')


def key(event_type: str, hour: datetime.datetime, name: str) -> str:
    return (f'{PREFIX}/event_type={event_type}/date={hour_name(hour)}/version=10/us-01/'
            f'{name}.avro')


def history(n: int):
    """n keys over the types and HISTORY_HOURS hours, a few per hour folder."""
    for i in range(n):
        hour = HISTORY_START + datetime.timedelta(hours=(i // len(TYPES)) % HISTORY_HOURS)
        yield key(TYPES[i % len(TYPES)], hour, f'old+{i}')


def fresh(hour: datetime.datetime = FRESH, first: int = 0):
    """(key, Avro bytes) of one real file per type in `hour`, 3 events each."""
    for n, event_type in enumerate(TYPES):
        ids = range(first + 10 * n, first + 10 * n + 3)
        yield key(event_type, hour, f'new+{first}+{n}'), avro_bytes(
            event_type, [record(i) for i in ids])


def measure(store, size: int) -> dict:
    """LIST requests of the three runs over a bucket of `size` objects of history, and the
    keys they opened."""
    bucket = store.new_bucket(size)
    new = dict(fresh())
    for name, data in new.items():
        store.put(bucket, name, data)
    store.inject(bucket, history(size))
    url = store.url(bucket)
    found = {}
    one_hour = ['--start', hour_name(FRESH),
                '--end', hour_name(FRESH + datetime.timedelta(hours=1))]
    mark = store.mark()
    assert run(['--input', url, '--plan', *one_hour, *store.options],
               out=io.StringIO()) == 0
    found['plan'] = store.lists(mark)
    with SegmentReceiver(write_key=KEY) as receiver:
        mark = store.mark()
        out = io.StringIO()
        code = run(['--input', url, '--rejects', store.url(bucket, 'out/run'),
                    '--segment_endpoint', receiver.url, *one_hour, *store.options], out=out)
        assert code == 0, out.getvalue()
        found['run'] = store.lists(mark)
        opened = [k for k in store.opened(bucket, mark) if k.startswith(PREFIX)]   # not out/
        assert set(opened) <= set(new), sorted(set(opened) - set(new))[:3]
        assert receiver.stats()['accepted'] == 3 * len(TYPES)
        slr = ['--input', url, '--rejects', store.url(bucket, 'out/slr'), '--since_last_run',
               '--segment_endpoint', receiver.url, *store.options]
        assert run(slr + ['--start', hour_name(FRESH)], out=io.StringIO()) == 0
        later = FRESH + datetime.timedelta(hours=1)
        (name, data), = list(fresh(later, first=1000))[:1]
        store.put(bucket, name, data)
        mark = store.mark()
        out = io.StringIO()
        assert run(slr, out=out) == 0, out.getvalue()
        found['since_last_run'] = store.lists(mark)
        assert '1 new or changed files to send' in out.getvalue(), out.getvalue()
        assert {k for k in store.opened(bucket, mark) if k.startswith(PREFIX)} == {name}
    return found


def compare(store, capsys):
    counts = {size: measure(store, size) for size in SIZES}
    with capsys.disabled():
        print(f'\n{store.name} LIST requests over {SIZES[0]:,} / {SIZES[1]:,} objects of '
              f'history: ' + ', '.join(f'{kind} {counts[SIZES[0]][kind]} / '
                                       f'{counts[SIZES[1]][kind]}' for kind in counts[SIZES[0]]))
    assert counts[SIZES[0]] == counts[SIZES[1]]
    assert all(n > 0 for n in counts[SIZES[0]].values())


# ------------------------------------------------------------------------------------- S3
class S3:
    name = 'S3 (moto)'

    def __init__(self, server):
        self.server = server
        self.options = []

    def new_bucket(self, size):
        bucket = f'history-{size}'
        self.server.client().create_bucket(Bucket=bucket)
        return bucket

    def put(self, bucket, name, data):
        self.server.client().put_object(Bucket=bucket, Key=name, Body=data)

    def inject(self, bucket, names):
        self.server.inject(bucket, names)

    def url(self, bucket, path=PREFIX):
        return f's3://{bucket}/{path}'

    def mark(self):
        return len(self.server.requests)

    def lists(self, mark):
        return self.server.lists(mark)

    def opened(self, bucket, mark):
        return self.server.gets(bucket, mark)


def test_s3_lists_what_the_range_holds(monkeypatch, tmp_path, capsys):
    from tests.s3_emulator import REGION, InProcessMoto
    with InProcessMoto() as server:
        for var, value in (('AWS_ACCESS_KEY_ID', 'testing'), ('AWS_SECRET_ACCESS_KEY', 'testing'),
                           ('AWS_DEFAULT_REGION', REGION), ('AWS_ENDPOINT_URL_S3', server.url),
                           ('AWS_EC2_METADATA_DISABLED', 'true'), ('SEGMENT_WRITE_KEY', KEY),
                           ('AWS_CONFIG_FILE', str(tmp_path / 'none')),
                           ('AWS_SHARED_CREDENTIALS_FILE', str(tmp_path / 'none'))):
            monkeypatch.setenv(var, value)
        compare(S3(server), capsys)


# --------------------------------------------------------------------------- Cloud Storage
class Gcs:
    name = 'Cloud Storage (emulator)'
    options = ['--no_auth']

    def __init__(self, server):
        self.server = server

    def new_bucket(self, size):
        bucket = f'history-{size}'
        self.server.client.create_bucket(bucket)
        return bucket

    def put(self, bucket, name, data):
        self.server.upload_bytes(name, data, bucket=bucket)

    def inject(self, bucket, names):
        self.server.inject(names, bucket=bucket)

    def url(self, bucket, path=PREFIX):
        return f'gs://{bucket}/{path}'

    def mark(self):
        self.server.reads = []
        return self.server.list_requests

    def lists(self, mark):
        return self.server.list_requests - mark

    def opened(self, bucket, mark):
        return [name for b, name in self.server.reads if b == bucket]


def test_cloud_storage_lists_what_the_range_holds(monkeypatch, offline_adc, capsys):
    from tests.gcs_emulator import GcsEmulator
    with GcsEmulator(bucket='c2s-history-default') as server:
        monkeypatch.setenv('STORAGE_EMULATOR_HOST', server.url)
        monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', offline_adc)
        monkeypatch.setenv('GOOGLE_CLOUD_PROJECT', 'c2s-tests')
        monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
        server.count_reads()
        compare(Gcs(server), capsys)


# ---------------------------------------------------------------------------------- Azure
class Azure:
    name = 'Azure Blob Storage (Azurite)'
    options = []

    def __init__(self, server):
        self.server = server
        self.client = server.client

    def new_bucket(self, size):
        container = f'history-{size}'
        self.server.create_container(container)
        return container

    def put(self, container, name, data):
        self.client.get_blob_client(container, name).upload_blob(data, overwrite=True)

    def inject(self, container, names):
        self.server.inject(container, names)

    def url(self, container, path=PREFIX):
        from tests.azurite import ACCOUNT
        return f'azfs://{ACCOUNT}/{container}/{path}'

    def mark(self):
        return self.server.log_position()

    def _lines(self, mark):
        import time
        time.sleep(0.3)   # Azurite writes its access line as it finishes the response
        with open(self.server._log.name, 'rb') as f:
            f.seek(mark)
            return f.read().decode('utf-8', 'replace').splitlines()

    def lists(self, mark):
        return sum(1 for line in self._lines(mark) if '"GET ' in line and 'comp=list' in line
                   and 'restype=container' in line)

    def opened(self, container, mark):
        from tests.servers import access_log_requests, reads_by_name
        from tests.azurite import ACCOUNT
        requests = access_log_requests('\n'.join(self._lines(mark)))
        return list(reads_by_name(requests, ACCOUNT, container))


def test_azure_lists_what_the_range_holds(monkeypatch, capsys):
    from tests.azurite import Azurite
    with Azurite(on_disk=True) as server:
        monkeypatch.setenv('AZURE_STORAGE_CONNECTION_STRING', server.connection_string())
        monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
        compare(Azure(server), capsys)


def test_history_keys_are_where_the_window_never_looks():
    newest = max(datetime.datetime.strptime(k.split('date=')[1][:13], '%Y-%m-%d-%H')
                 for k in history(SIZES[1]))
    assert FRESH - newest > datetime.timedelta(hours=48)
    assert len(set(history(SIZES[1]))) == SIZES[1]


# ------------------------------------------------------------------------ launcher memory
def _peak_rss_kb(argv, cwd):
    """Runs the command; (exit status, its peak resident set in KB, its stdout)."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, SEGMENT_WRITE_KEY=KEY, PYTHONPATH=str(root))
    proc = subprocess.Popen([sys.executable, '-m', 'pipeline', *map(str, argv)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss, out


def test_launcher_memory_for_a_day_is_flat_from_10000_to_1000000_files(tmp_path):
    """One day's run over a local tree of a million files (hard links of a few files, see
    devtools/history.py) peaks within 1.2x of the same run over ten thousand."""
    from devtools.history import build
    found = {}
    for objects in (10_000, 1_000_000):
        tree = build(tmp_path / f'tree{objects}', objects)
        argv = ['--input', tree.root, '--rejects', tmp_path / f'r{objects}',
                '--dry_run_output', tmp_path / f'b{objects}', '--start', '2024-06-10',
                '--end', '2024-06-11', '--progress_seconds', '0',
                '--summary_output', tmp_path / f's{objects}.json']
        code, rss, _ = _peak_rss_kb(argv, tmp_path)
        assert code == 0
        summary = json.loads((tmp_path / f's{objects}.json').read_text())
        assert summary['files_read'] == tree.day_files and summary['read'] == tree.day_events
        found[objects] = (rss, summary['objects_listed'])
    print(f'\nlauncher peak RSS over one day: {found[10_000][0] / 1024:.0f} MB with 10,000 '
          f'files, {found[1_000_000][0] / 1024:.0f} MB with 1,000,000')
    assert found[1_000_000][0] <= 1.2 * found[10_000][0]
    assert found[1_000_000][1] == found[10_000][1]   # the same objects listed
