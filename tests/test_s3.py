"""End-to-end runs over s3:// through Beam's own S3 filesystem, served by a moto server.

No mocks: moto's server runs on 127.0.0.1 in a subprocess with IAM checks on, so the run uses
a real IAM user's access key pair from the environment (boto3's chain), an explicit Deny on one
object answers a real 403, and a wrong key is refused as AWS refuses it. Which objects a run
opened is read from the server's access log.
"""
import io
import json
import re
from pathlib import Path

import pytest

from devtools.receiver import SegmentReceiver
from devtools.sample import generate
from pipeline.main import run
from pipeline.paths import hour_from_path
from tests.helpers import balanced, command
from tests.s3_emulator import REGION, MotoServer

pytestmark = pytest.mark.slow

BUCKET = 'c2s-currents'
OUT = 'c2s-outputs'
KEY = 'wk_S3-tests-canary-3e1f'
ERROR_LINE = re.compile(r'^currents-to-segment: error: .+$')
DENIED = ('denied/event_type=users.messages.email.Send/date=2024-05-01-01/version=6/us-01/'
          'forbidden-0.avro')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('s3corpus')
    report = generate(root, events=1200, seed=5, hours=3, events_per_file=150)
    return root, report


@pytest.fixture(scope='module')
def s3(corpus):
    """A moto server holding the corpus (both layouts) under s3://c2s-currents/currents, a
    copy of two files plus one denied object under denied/, and a reader user's keys."""
    root, report = corpus
    with MotoServer() as server:
        server.create_bucket(BUCKET)
        server.create_bucket(OUT)
        server.upload_tree(root / 'currents', BUCKET, 'currents')
        firsts = sorted(report.files)[:2]
        for n, local in enumerate(firsts):
            server.upload_bytes(BUCKET, f'denied/{Path(local).relative_to(report.root)}',
                                Path(local).read_bytes())
        server.upload_bytes(BUCKET, DENIED, Path(firsts[0]).read_bytes())
        server.enforce_auth()
        server.reader = server.create_user('c2s-reader', {
            'Version': '2012-10-17', 'Statement': [
                {'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'},
                {'Effect': 'Deny', 'Action': 's3:GetObject',
                 'Resource': f'arn:aws:s3:::{BUCKET}/denied/*/forbidden-0.avro'}]})
        yield server


@pytest.fixture
def aws_env(s3, monkeypatch, tmp_path):
    """Only the environment provides credentials (no ~/.aws files, no instance metadata)."""
    for var in ('AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_ROLE_ARN', 'AWS_WEB_IDENTITY_TOKEN_FILE'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', s3.reader[0])
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', s3.reader[1])
    monkeypatch.setenv('AWS_DEFAULT_REGION', REGION)
    monkeypatch.setenv('AWS_ENDPOINT_URL_S3', s3.url)   # restored after the test: runs set it
    monkeypatch.setenv('AWS_EC2_METADATA_DISABLED', 'true')
    monkeypatch.setenv('AWS_CONFIG_FILE', str(tmp_path / 'no-aws-config'))
    monkeypatch.setenv('AWS_SHARED_CREDENTIALS_FILE', str(tmp_path / 'no-aws-credentials'))
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    return s3


def s3_run(s3, out_prefix, *extra, input_path=f's3://{BUCKET}/currents', replay=False):
    """A real run; rejects and the summary go to s3://c2s-outputs/<out_prefix>/."""
    argv = (['replay'] if replay else ['--input', input_path]) + [
        '--rejects', f's3://{OUT}/{out_prefix}/rejects',
        '--summary_output', f's3://{OUT}/{out_prefix}/summary.json',
        '--s3_endpoint_url', s3.url, *extra]
    out = io.StringIO()
    code = run(argv, out=out)
    try:
        summary = json.loads(s3.read(OUT, f'{out_prefix}/summary.json'))
    except Exception:
        summary = None
    return code, summary, out.getvalue()


def s3_rejects(s3, prefix):
    keys = [k for k in s3.list(OUT, prefix)   # the rejects, not the delivered/ records
            if k.rsplit('/', 1)[-1].startswith('rejects-') and k.endswith('.jsonl')]
    return [json.loads(line) for k in keys
            for line in s3.read(OUT, k).decode().splitlines() if line.strip()]


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), err
    return lines[0]


# ------------------------------------------------------------------------------------ tests
def test_full_run_from_s3_delivers_every_eligible_event(aws_env, corpus):
    s3, (_, report) = aws_env, corpus
    keys = s3.list(BUCKET, 'currents/')
    assert any('/version=' in k for k in keys) and any(
        '/version=' not in k and k.endswith('.avro') for k in keys)   # both layouts
    with SegmentReceiver(write_key=KEY) as receiver:
        code, summary, table = s3_run(s3, 'full', '--segment_endpoint', receiver.url)
        messages = receiver.messages()
    assert code == 0, table
    assert balanced(summary)
    assert summary['read'] == report.events
    assert summary['sent'] == report.eligible and summary['rejected'] == 0
    assert summary['files_read'] == len(report.files)
    assert summary['files_skipped'] == 0   # other types' folders: never listed
    assert {m['messageId'] for m in messages} == report.eligible_ids
    assert len(messages) == report.eligible
    # The per-file record: written on the store by the workers as files complete, then
    # folded into one object per date= hour (no piece left).
    records = s3.list(OUT, 'full/rejects/delivered/')
    assert records and all('/delivered/hours/2024-05-01-' in r and r.endswith('.jsonl')
                           for r in records)
    assert sum(len(s3.read(OUT, r).decode().splitlines())
               for r in records) == len(report.files)


def test_start_end_pruning_opens_no_object_outside_the_range(aws_env, corpus):
    s3, (root, report) = aws_env, corpus
    hour = '2024-05-01-01'
    inside = {f'currents/{Path(f).relative_to(root / "currents").as_posix()}'
              for f in report.files if f'/date={hour}/' in f}
    assert inside and len(inside) < len(report.files)
    mark = s3.log_position()
    code, summary, table = s3_run(s3, 'pruned', '--start', hour, '--end', '2024-05-01-02',
                                  '--dry_run_output', f's3://{OUT}/pruned/bodies')
    assert code == 0, table
    opened = s3.objects_opened(BUCKET, since=mark)
    assert set(opened) == inside, sorted(set(opened) ^ inside)[:5]
    assert all(hour_from_path(k).strftime('%Y-%m-%d-%H') == hour for k in opened)
    assert summary['files_read'] == len(inside)
    # Listed from the hour's first key on (S3 has no end bound: a page may hold later keys,
    # never earlier ones), so nothing outside the range is even skipped.
    assert summary['files_skipped_by_reason'] == {}
    assert summary['objects_listed'] >= len(inside)
    assert len(summary['event_types_not_selected']) == len(
        {f.split('event_type=')[1].split('/')[0] for f in report.other_files})
    assert balanced(summary)
    bodies = [k for k in s3.list(OUT, 'pruned/bodies/') if k.endswith('.json')]
    sent = sum(len(json.loads(s3.read(OUT, k))['batch']) for k in bodies)
    assert sent == summary['sent'] > 0


def test_rejects_written_to_s3_are_replayed(aws_env, corpus):
    s3 = aws_env
    argv = ('--start', '2024-05-01-02', '--max_retry_seconds', '1', '--segment_timeout', '1')
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('refuse_503')
        code, summary, table = s3_run(s3, 'replayed', '--segment_endpoint', receiver.url, *argv)
        assert code in (0, 4), table   # 4 once delivery rejects set the exit status
        rejects = s3_rejects(s3, 'replayed/rejects/')
        assert rejects and {r['reason'] for r in rejects} == {'retries_exhausted'}
        assert len(rejects) == summary['rejected'] == summary['read'] - summary[
            'dropped_no_external_user_id']
        receiver.set_mode('normal')
        code, replay_summary, table = s3_run(s3, 'replayed', '--segment_endpoint',
                                             receiver.url, replay=True)
        messages = receiver.messages()
        requests = receiver.stats()['requests']
        # The replay recorded what it handled on S3 too: a second one sends nothing.
        again, again_summary, _ = s3_run(s3, 'replayed', '--segment_endpoint', receiver.url,
                                         replay=True)
        assert receiver.stats()['requests'] == requests
    assert code == 0, table
    assert {m['messageId'] for m in messages} == {r['message']['messageId'] for r in rejects}
    assert replay_summary['sent'] == len(rejects) and balanced(replay_summary)
    assert again == 0 and again_summary['sent'] == 0
    assert again_summary['already_replayed'] == len(rejects)


def test_resume_manifest_on_s3_skips_completed_partitions(aws_env):
    """Only a run that sent records what it completed (a dry run records nothing)."""
    s3 = aws_env
    with SegmentReceiver(write_key=KEY) as receiver:
        extra = ('--start', '2024-05-01-00', '--end', '2024-05-01-01',
                 '--segment_endpoint', receiver.url)
        code, first, table = s3_run(s3, 'resumed', *extra)
        assert code == 0 and first['files_read'] > 0, table
        assert [k for k in s3.list(OUT, 'resumed/rejects/manifest/') if k.endswith('.json')]
        code, second, table = s3_run(s3, 'resumed', '--resume', *extra)
    assert code == 0, table
    assert second['files_read'] == 0
    assert second['files_skipped_by_reason']['completed_by_earlier_run'] == first['files_read']


def test_denied_object_becomes_an_unreadable_file_reject(aws_env):
    s3 = aws_env
    code, summary, table = s3_run(s3, 'denied', '--dry_run_output', f's3://{OUT}/denied/b',
                                  input_path=f's3://{BUCKET}/denied')
    assert code == 0, table
    assert summary['files_read'] == 2 and summary['files_rejected'] == 1
    assert summary['rejected_by_reason'] == {'unreadable_file': 1}
    assert balanced(summary) and summary['read'] > 0
    [reject] = s3_rejects(s3, 'denied/rejects/')
    assert reject['source'] == f's3://{BUCKET}/{DENIED}'
    assert reject['reason'] == 'unreadable_file' and '403' in reject['detail']


@pytest.mark.parametrize('case', ['wrong_secret', 'unknown_key', 'no_credentials'])
def test_bad_credentials_give_one_line_naming_the_chain(aws_env, monkeypatch, capsys, case):
    s3 = aws_env
    if case == 'wrong_secret':
        monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', 'not-the-secret-4711')
    elif case == 'unknown_key':
        monkeypatch.setenv('AWS_ACCESS_KEY_ID', 'AKIAUNKNOWN000000000')
    else:
        monkeypatch.delenv('AWS_ACCESS_KEY_ID')
        monkeypatch.delenv('AWS_SECRET_ACCESS_KEY')
    capsys.readouterr()
    code, summary, table = s3_run(s3, f'bad-{case}', '--dry_run_output', f's3://{OUT}/x')
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and summary is None and table == ''
    if case == 'no_credentials':
        assert 'no AWS credentials found; tried' in line and 'AWS_ACCESS_KEY_ID' in line
    else:
        assert 'S3 refused the credentials from the environment (AWS_ACCESS_KEY_ID)' in line
        assert ('SignatureDoesNotMatch' if case == 'wrong_secret' else 'InvalidAccessKeyId') \
            in line
    assert s3.reader[1] not in line and 'not-the-secret-4711' not in line


@pytest.mark.parametrize('input_path, expected', [
    ('s3://c2s-no-such-bucket/currents', 'S3 bucket c2s-no-such-bucket does not exist'),
    (f's3://{BUCKET}/nothing-here', 'no input files match'),
    (f's3://{BUCKET}/currents/*/event_type=users.none.*/**', 'no input files match'),
])
def test_missing_bucket_and_empty_prefix_give_one_line(aws_env, capsys, input_path, expected):
    capsys.readouterr()
    code, summary, table = s3_run(aws_env, 'missing', '--dry_run_output', f's3://{OUT}/x',
                                  input_path=input_path)
    assert code == 2 and summary is None
    assert expected in one_error_line(capsys.readouterr().err)


def test_missing_output_bucket_gives_one_line(aws_env, capsys, tmp_path):
    code = run(['--input', f's3://{BUCKET}/currents', '--rejects', 's3://c2s-gone/rejects',
                '--dry_run_output', str(tmp_path / 'b'), '--s3_endpoint_url', aws_env.url],
               out=io.StringIO())
    assert code == 2
    assert '--rejects s3://c2s-gone/rejects: S3 bucket c2s-gone does not exist' in \
        one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------ Secret Manager and Dataflow
def _fake_secret_manager(secrets):
    class FakeClient:
        requests = []

        def access_secret_version(self, request=None, **kwargs):
            type(self).requests.append(request['name'])
            data = secrets[request['name']]
            return type('Response', (), {'payload': type('Payload', (), {'data': data})()})()
    return FakeClient


AWS_SECRET = 'projects/c2s-project/secrets/currents-s3/versions/2'
WRITE_KEY_SECRET = 'projects/c2s-project/secrets/segment-write-key/versions/3'


@pytest.fixture
def secret_only(aws_env, monkeypatch):
    """No AWS credentials in the environment: only a (fake) Secret Manager holds the pair."""
    from transforms import credentials
    pair = json.dumps({'aws_access_key_id': aws_env.reader[0],
                       'aws_secret_access_key': aws_env.reader[1]}).encode()
    client = _fake_secret_manager({AWS_SECRET: pair})
    monkeypatch.setattr('transforms.secrets.secret_manager_client', client)
    monkeypatch.delenv('AWS_ACCESS_KEY_ID')
    monkeypatch.delenv('AWS_SECRET_ACCESS_KEY')
    credentials.forget_installed()
    yield client
    credentials.forget_installed()


def test_launcher_reads_s3_credentials_from_secret_manager(aws_env, secret_only):
    code, summary, table = s3_run(aws_env, 'from-secret', '--aws_credentials_secret', AWS_SECRET,
                                  '--start', '2024-05-01-02',
                                  '--dry_run_output', f's3://{OUT}/from-secret/bodies')
    assert code == 0, table
    assert summary['files_read'] > 0 and balanced(summary)
    assert secret_only.requests == [AWS_SECRET]   # once per process, launcher and workers


def test_plan_lists_s3_keys_in_both_layouts(aws_env, corpus):
    out = io.StringIO()
    code = run(['--input', f's3://{BUCKET}/currents', '--rejects', f's3://{OUT}/plan/rejects',
                '--plan', '--s3_endpoint_url', aws_env.url], out=out)
    assert code == 0, out.getvalue()
    assert str(len(corpus[1].files)) in out.getvalue()


def test_the_command_plans_from_s3_with_only_its_store_imported(aws_env, corpus):
    """`python -m pipeline` skips the clients of stores it is not given (pipeline/startup.py):
    the S3 one must still be there."""
    proc = command('--input', f's3://{BUCKET}/currents', '--rejects', f's3://{OUT}/cli/rejects',
                   '--plan', '--s3_endpoint_url', aws_env.url)
    assert proc.returncode == 0, proc.stderr
    assert f'{len(corpus[1].files)} files' in proc.stdout, proc.stdout


def test_dataflow_dry_run_from_s3_has_no_credential_in_the_job(aws_env, secret_only, tmp_path,
                                                               monkeypatch, capsys):
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
    from pipeline.builder import build_pipeline
    from pipeline.listing import input_pattern, list_currents_files
    from pipeline.options import settings_from
    from pipeline.stores import prepare_stores
    adc = tmp_path / 'adc.json'
    adc.write_text(json.dumps({
        'type': 'authorized_user', 'client_id': 'c2s-tests', 'client_secret': 'unused',
        'refresh_token': 'unused', 'token': 'offline-dummy', 'expiry': '2099-01-01T00:00:00Z',
        'token_uri': 'http://127.0.0.1:9/token'}))
    monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS', str(adc))
    monkeypatch.setenv('GOOGLE_CLOUD_PROJECT', 'c2s-project')
    argv = ['--runner', 'DataflowRunner', '--project', 'c2s-project', '--region', 'us-central1',
            '--temp_location', 'gs://c2s-dataflow-tests/tmp', '--dry_run=True',
            '--input', f's3://{BUCKET}/currents', '--start', '2024-05-01-02',
            '--rejects', f's3://{OUT}/dataflow/rejects', '--s3_endpoint_url', aws_env.url,
            '--segment_write_key_secret', WRITE_KEY_SECRET,
            '--aws_credentials_secret', AWS_SECRET]
    out = io.StringIO()
    assert run(argv, out=out) == 0, capsys.readouterr().err
    assert 'Dataflow job built (--dry_run=True)' in out.getvalue()
    # The job as DataflowRunner would submit it: options, pipeline proto, pickled DoFns.
    options = PipelineOptions(argv)
    settings = settings_from(options)
    prepare_stores(settings, options, dataflow=True)
    listing = list_currents_files(input_pattern(settings.input), settings.selector)
    job = build_pipeline(settings, [(p, t) for p, t, _ in listing.files], options).run().job
    text = (json.dumps(job.options.get_all_options(), default=str).encode()
            + job.proto_pipeline.SerializeToString() + str(job.proto).encode())
    for secret in aws_env.reader + (KEY,):
        assert secret.encode() not in text
    assert AWS_SECRET.encode() in text     # the name travels, so workers can read it
    assert 'transforms.credentials.StoreCredentialsAtWorkerStart' in job.options.view_as(
        SetupOptions).beam_plugins


def test_dataflow_without_the_aws_secret_is_refused(aws_env, capsys):
    code = run(['--runner', 'DataflowRunner', '--project', 'c2s-project', '--region',
                'us-central1', '--temp_location', 'gs://c2s-dataflow-tests/tmp',
                '--dry_run=True', '--input', f's3://{BUCKET}/currents', '--rejects',
                'gs://c2s-dataflow-tests/rejects', '--segment_write_key_secret',
                WRITE_KEY_SECRET, '--s3_endpoint_url', aws_env.url], out=io.StringIO())
    assert code == 2
    assert 'pass --aws_credentials_secret' in one_error_line(capsys.readouterr().err)
