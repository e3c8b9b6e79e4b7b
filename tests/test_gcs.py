"""End-to-end runs over gs:// through Beam's own GCS filesystem, served by gcp-storage-emulator.

No mocks: every test is a real `pipeline.main.run([...])` whose --input, --rejects and
--dry_run_output are gs:// URLs; Beam's GcsIO talks to the emulator on 127.0.0.1 because
STORAGE_EMULATOR_HOST is set. Results are read back from the emulator with google-cloud-storage.

Credentials: Beam 2.77's GcsIO always asks google.auth.default() for Application Default
Credentials and, when there are none, retries with backoff for ~20 s before going anonymous;
`--no_auth` does not change that (it is only read by the Dataflow API client). So the tests point
GOOGLE_APPLICATION_CREDENTIALS at an offline `authorized_user` file holding a non-expiring dummy
token: the lookup succeeds at once and nothing is ever refreshed (token_uri is a closed loopback port).
"""
import hashlib
import gc
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import fastavro
import pytest


from pipeline.main import run
from tests.gcs_emulator import GcsEmulator
from tests.helpers import command
from transforms.events import BY_CURRENTS_TYPE, EVENTS

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get('CURRENTS_SHARED', ROOT.parent / 'shared')) / 'currents-samples'
INTEGRATION = 'dataexport.prod-01.GCS.integration.0123456789abcdef01234567'
HOUR = '2024-05-01-10'
SEGMENT_NAMES = sorted(e.segment_event for e in EVENTS)
ERROR_LINE = re.compile(r'^currents-to-segment: error: .+$')

pytestmark = pytest.mark.skipif(not (SAMPLES / 'avro').is_dir(),
                                reason=f'Braze sample files not found under {SAMPLES}')


def sample_files():
    """{event type: local .avro}: the 94 current samples, plus the six type-named legacy ones.

    avro/ holds only 31 of the 34 mapped types; the three News Feed types (retired by Braze)
    are in legacy/. The legacy S3 file is not type-named and is left out here.
    """
    files = {p.stem: p for p in sorted((SAMPLES / 'avro').glob('*.avro'))}
    for p in sorted((SAMPLES / 'legacy').glob('users.*.avro')):
        files.setdefault(p.stem, p)
    return files


def object_name(prefix, event_type, hour=HOUR, suffix='+0+0'):
    return (f'{prefix}/{INTEGRATION}/event_type={event_type}/date={hour}/version=10/us-01/'
            f'{event_type}{suffix}.avro')


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='session')
def gcs_server():
    with GcsEmulator(bucket='c2s-default') as emulator:
        yield emulator


@pytest.fixture
def gcs(gcs_server, offline_adc, monkeypatch):
    """The running emulator, with this test's environment pointing Beam's GCS IO at it."""
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', gcs_server.url)
    monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', offline_adc)
    monkeypatch.setenv('GOOGLE_CLOUD_PROJECT', 'c2s-tests')
    monkeypatch.delenv('SEGMENT_WRITE_KEY', raising=False)
    return gcs_server


@pytest.fixture
def bucket(gcs, request):
    """A fresh, empty bucket per test, so each run sees only its own objects."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    slug = re.sub(r'[^a-z0-9]+', '-', request.node.originalname.lower()).strip('-')
    name = f'c2s-{digest}-{slug}'[:63].strip('-')
    gcs.client.create_bucket(name)
    return name


def run_pipeline(bucket, tmp_path, *extra, input_path=None):
    summary_path = tmp_path / 'summary.json'
    out = io.StringIO()
    code = run(['--input', input_path or f'gs://{bucket}/currents',
                '--rejects', f'gs://{bucket}/rejects',
                '--dry_run_output', f'gs://{bucket}/bodies',
                '--summary_output', str(summary_path), '--no_auth', *extra], out=out)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return code, summary, out.getvalue()


def read_bodies(gcs, bucket):
    names = gcs.list('bodies/', bucket=bucket)
    bodies = [json.loads(gcs.read(n, bucket=bucket)) for n in names]
    return names, [m for b in bodies for m in b['batch']], bodies


REJECTS_FILE = re.compile(r'rejects/rejects-[^/]+-w\d+-[0-9a-f]{12}-\d{5}\.jsonl')


def read_rejects(gcs, bucket):
    """The JSON Lines reject files directly under gs://bucket/rejects/ (other run records,
    e.g. resume manifests in a subfolder, are not rejects)."""
    names = [n for n in gcs.list('rejects/', bucket=bucket) if REJECTS_FILE.fullmatch(n)]
    lines = [line for n in names
             for line in gcs.read(n, bucket=bucket).decode('utf-8').splitlines() if line.strip()]
    return names, [json.loads(line) for line in lines]


def assert_balanced(summary):
    assert summary['read'] == (summary['dropped_no_external_user_id'] + summary['sent']
                               + summary['rejected'])
    for name, row in summary['by_event'].items():
        assert row['read'] == row['dropped_no_external_user_id'] + row['sent'] + row['rejected'], name


# ------------------------------------------------------------------------------------ tests
def test_full_sample_tree_on_gcs(gcs, bucket, tmp_path):
    files = sample_files()
    gcs.upload_files({object_name('currents', t): p for t, p in files.items()}, bucket=bucket)
    mapped = [t for t in files if t in BY_CURRENTS_TYPE]
    assert len(mapped) == 34

    code, summary, table = run_pipeline(bucket, tmp_path)

    assert code == 0, table
    assert summary['read'] == 34
    assert summary['sent'] == 34
    assert summary['dropped_no_external_user_id'] == 0 and summary['rejected'] == 0
    assert summary['files_read'] == 34
    # The other types' folders are never listed below their names.
    assert summary['files_skipped'] == 0
    assert len(summary['event_types_not_selected']) == len(files) - 34
    assert summary['files_rejected'] == 0
    assert sorted(summary['by_event']) == SEGMENT_NAMES
    assert all(row['read'] == row['sent'] == 1 for row in summary['by_event'].values())
    assert_balanced(summary)

    names, messages, bodies = read_bodies(gcs, bucket)
    assert names and all(re.fullmatch(r'bodies/batch-[^/]+\.json', n) for n in names), names
    assert all(set(b) == {'batch'} for b in bodies)   # no sentAt by default
    assert len(messages) == 34
    assert sorted(m['event'] for m in messages) == SEGMENT_NAMES
    assert all(m['type'] == 'track' and m['userId'] and m['messageId'] for m in messages)
    # messageId = the Currents `id` (no --message_id_prefix); Braze's samples reuse a few ids.
    ids = []
    for t in mapped:
        with files[t].open('rb') as f:
            ids.extend(r['id'] for r in fastavro.reader(f))
    assert sorted(m['messageId'] for m in messages) == sorted(ids)
    _, rejects = read_rejects(gcs, bucket)
    assert rejects == []


def test_start_end_prunes_by_date_hour_on_gcs(gcs, bucket, tmp_path):
    files = {t: p for t, p in sample_files().items() if t in BY_CURRENTS_TYPE}
    later = ['users.messages.email.Send', 'users.messages.sms.Delivery', 'users.canvas.Entry']
    uploads = {object_name('currents', t, hour='2024-05-01-10'): p for t, p in files.items()}
    uploads.update({object_name('currents', t, hour='2024-05-01-11', suffix='+1+7'): files[t]
                    for t in later})
    gcs.upload_files(uploads, bucket=bucket)

    code, summary, table = run_pipeline(bucket, tmp_path,
                                        '--start', '2024-05-01-11', '--end', '2024-05-01-12')

    assert code == 0, table
    assert summary['read'] == summary['sent'] == len(later)
    assert summary['files_read'] == len(later)
    assert summary['files_skipped'] == 0   # the whole 10:00 hour, never listed nor opened
    assert summary['objects_listed'] == len(later)
    expected = sorted(BY_CURRENTS_TYPE[t].segment_event for t in later)
    assert sorted(summary['by_event']) == expected
    _, messages, _ = read_bodies(gcs, bucket)
    assert sorted(m['event'] for m in messages) == expected
    assert_balanced(summary)


def _multi_block_copy(src: Path, dst: Path) -> int:
    """Rewrites a real multi-record sample with one record per Avro block; returns the count."""
    with src.open('rb') as f:
        reader = fastavro.reader(f)
        schema, records = reader.writer_schema, list(reader)
    with dst.open('wb') as f:
        fastavro.writer(f, schema, records, sync_interval=1)
    return len(records)


def test_corrupt_and_empty_objects_become_rejects_on_gcs(gcs, bucket, tmp_path):
    good = ['users.messages.email.Open', 'users.canvas.Entry']
    files = sample_files()
    uploads = {object_name('currents', t): files[t] for t in good}
    gcs.upload_files(uploads, bucket=bucket)

    # 1. a real one-record sample cut in half; 2. a zero-byte object;
    # 3. the real 12-record S3 file, one record per block, cut inside its last block.
    half = files['users.messages.email.Click'].read_bytes()
    truncated = object_name('currents', 'users.messages.email.Click')
    gcs.upload_bytes(truncated, half[:len(half) // 2], bucket=bucket)
    empty = object_name('currents', 'users.messages.email.Delivery')
    gcs.upload_bytes(empty, b'', bucket=bucket)
    multi = tmp_path / 'multi.avro'
    n = _multi_block_copy(SAMPLES / 'legacy' / (
        'dataexport.S3.integration.599f118afbe76a01c513c63c+2+0000035465.avro'), multi)
    assert n == 12
    partial = object_name('currents', 'users.messages.pushnotification.Send')
    gcs.upload_bytes(partial, multi.read_bytes()[:-20], bucket=bucket)

    code, summary, table = run_pipeline(bucket, tmp_path)

    assert code == 0, table
    assert_balanced(summary)
    assert summary['files_read'] == len(good)
    assert summary['files_rejected'] == 3
    assert summary['rejected_by_reason'].get('unreadable_file') == 3
    # Records that decode before the damage go on (CONTRACT §5): 11 of the 12 pushes.
    assert summary['by_event']['Push Notification Sent']['read'] == n - 1
    assert summary['read'] == len(good) + n - 1 == summary['sent']

    names, rejects = read_rejects(gcs, bucket)
    assert names, gcs.list('rejects/', bucket=bucket)
    assert sorted(r['source'] for r in rejects) == sorted(
        f'gs://{bucket}/{x}' for x in (truncated, empty, partial))
    assert {r['reason'] for r in rejects} == {'unreadable_file'}
    by_source = {r['source']: r for r in rejects}
    assert by_source[f'gs://{bucket}/{empty}']['event_type'] == 'users.messages.email.Delivery'
    assert by_source[f'gs://{bucket}/{truncated}']['event_type'] == 'users.messages.email.Click'
    assert all(r.get('detail') for r in rejects)

    _, messages, _ = read_bodies(gcs, bucket)
    assert len(messages) == summary['sent']


@pytest.mark.parametrize('where', ['nothing-here', 'currents/*/missing-*.avro', 'bucket'])
def test_input_matching_nothing_on_gcs_fails_with_one_line(gcs, bucket, tmp_path, capsys, where):
    gcs.upload_bytes(object_name('currents', 'users.messages.email.Open'),
                     sample_files()['users.messages.email.Open'].read_bytes(), bucket=bucket)
    input_path = ('gs://c2s-no-such-bucket/currents' if where == 'bucket'
                  else f'gs://{bucket}/{where}')
    capsys.readouterr()

    code, summary, table = run_pipeline(bucket, tmp_path, input_path=input_path)

    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), err
    assert summary is None and table == ''
    assert gcs.list('bodies/', bucket=bucket) == [] and read_rejects(gcs, bucket) == ([], [])


# ------------------------------------------------------------ --input forms (CONTRACT §1) on gs://
FORM_TYPES = ('users.messages.email.Open', 'users.canvas.Entry', 'users.messages.email.Abort')
FORMS = {
    # form (relative to the bucket): Segment events it must read
    'currents': ['Canvas Entered', 'Email Opened'],
    'currents/': ['Canvas Entered', 'Email Opened'],
    f'currents/{INTEGRATION}': ['Canvas Entered', 'Email Opened'],
    f'currents/{INTEGRATION}/event_type=users.canvas.Entry': ['Canvas Entered'],
    object_name('currents', 'users.canvas.Entry'): ['Canvas Entered'],
    'currents/**/*.avro': ['Canvas Entered', 'Email Opened'],
    'currents/*/event_type=users.messages.email.*/**': ['Email Opened'],
}


def _upload_form_tree(gcs, bucket):
    files = sample_files()
    gcs.upload_files({object_name('currents', t): files[t] for t in FORM_TYPES}, bucket=bucket)
    # A sibling prefix that a prefix listing of "currents" must not leak into, and the
    # zero-byte "folder" placeholder objects that the Cloud Console creates.
    gcs.upload_bytes(object_name('currents-old', 'users.messages.sms.Send'),
                     files['users.messages.sms.Send'].read_bytes(), bucket=bucket)
    gcs.upload_bytes('currents/', b'', bucket=bucket)
    gcs.upload_bytes(f'currents/{INTEGRATION}/', b'', bucket=bucket)


@pytest.mark.parametrize('form', list(FORMS), ids=lambda f: f.split('/us-01/')[-1][:40])
def test_input_forms_on_gcs(gcs, bucket, tmp_path, form):
    _upload_form_tree(gcs, bucket)
    out = io.StringIO()
    code = run(['--input', f'gs://{bucket}/{form}', '--rejects', f'gs://{bucket}/rejects',
                '--dry_run_output', f'gs://{bucket}/bodies',
                '--summary_output', f'gs://{bucket}/summary.json', '--no_auth'], out=out)
    assert code == 0, out.getvalue()
    summary = json.loads(gcs.read('summary.json', bucket=bucket))  # written through gs:// too
    assert sorted(summary['by_event']) == FORMS[form]
    assert summary['read'] == summary['sent'] == summary['files_read'] == len(FORMS[form])
    assert summary['files_rejected'] == 0
    _, messages, _ = read_bodies(gcs, bucket)
    assert sorted(m['event'] for m in messages) == FORMS[form]


def test_input_bucket_root_on_gcs(gcs, bucket, tmp_path):
    _upload_form_tree(gcs, bucket)
    code, summary, table = run_pipeline(bucket, tmp_path, input_path=f'gs://{bucket}')
    assert code == 0, table
    assert sorted(summary['by_event']) == ['Canvas Entered', 'Email Opened', 'SMS Sent']


def test_the_command_plans_from_gcs_with_only_its_store_imported(gcs, bucket):
    """`python -m pipeline` skips the clients of stores it is not given (pipeline/startup.py):
    the GCS one must still be there."""
    files = sample_files()
    gcs.upload_files({object_name('currents', t): p for t, p in files.items()}, bucket=bucket)
    proc = command('--input', f'gs://{bucket}/currents', '--rejects', f'gs://{bucket}/rejects',
                   '--plan', '--no_auth')
    assert proc.returncode == 0, proc.stderr
    assert '34 files' in proc.stdout, proc.stdout


def test_no_auth_cli_is_quick_and_quiet_without_credentials(gcs, bucket, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ('GOOGLE_APPLICATION_CREDENTIALS', 'CLOUDSDK_CONFIG')}
    env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / 'gcloud'),
               GOOGLE_CLOUD_PROJECT='c2s-tests', PYTHONPATH=str(ROOT))
    try:
        proc = subprocess.run(
            [sys.executable, '-m', 'pipeline', '--input', f'gs://{bucket}/nothing-here',
             '--rejects', f'gs://{bucket}/rejects', '--dry_run_output', f'gs://{bucket}/bodies',
             '--no_auth'],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=6)
    except subprocess.TimeoutExpired:
        pytest.fail('the CLI was still looking up credentials after 6 s despite --no_auth')
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_report_written_to_and_drawn_from_gcs(gcs, bucket, tmp_path):
    """--report and `report --summary/--out` through Beam's gs:// filesystem; the writability
    probe leaves nothing behind, and a bucket that does not exist stops the run at once."""
    files = sample_files()
    gcs.upload_files({object_name('currents', t): files[t] for t in FORM_TYPES}, bucket=bucket)
    code, summary, table = run_pipeline(bucket, tmp_path, '--report',
                                        f'gs://{bucket}/out/report.html')
    assert code == 0, table
    page = gcs.read('out/report.html', bucket=bucket).decode()
    assert f'<span class="v" id="total-read">{summary["read"]:,}</span>' in page
    gcs.upload_bytes('out/summary.json', json.dumps(summary).encode(), bucket=bucket)
    out = io.StringIO()
    assert run(['report', '--summary', f'gs://{bucket}/out/summary.json', '--out',
                f'gs://{bucket}/out/again.html'], out=out) == 0, out.getvalue()
    again = gcs.read('out/again.html', bucket=bucket).decode()
    assert again.split('<div class="cards">')[1] == page.split('<div class="cards">')[1]
    assert sorted(gcs.list('out/', bucket=bucket)) == ['out/again.html', 'out/report.html',
                                                        'out/summary.json']
    err = io.StringIO()
    from google.cloud.storage.fileio import BlobWriter

    def open_writers():
        return {id(o) for o in gc.get_objects() if isinstance(o, BlobWriter) and not o.closed}
    writers_before = open_writers()
    from pipeline.cli import Console
    code = run(['--input', f'gs://{bucket}/currents', '--rejects', f'gs://{bucket}/rejects2',
                '--dry_run_output', f'gs://{bucket}/bodies2', '--no_auth',
                '--report', 'gs://c2s-no-such-bucket/report.html'], out=io.StringIO(),
               console=Console(err))
    assert code == 2 and ERROR_LINE.match(err.getvalue().strip())
    assert 'cannot write --report gs://c2s-no-such-bucket/report.html' in err.getvalue()
    assert not gcs.list('bodies2/', bucket=bucket)
    # The failed upload is abandoned: no writer is left open to upload again, retrying for
    # minutes, when it is collected.
    assert open_writers() <= writers_before
