"""Path decisions, option refusals and credential parsing for s3:// and azfs:// (fast, no server).

Listing and pruning decide from paths alone, so the same rules are checked on gs://, s3:// and
azfs:// names, in both Currents layouts (`version=<n>/<env>/` and the older `<id>/<zone>/`).
"""
import datetime as dt
import os

import pytest

from pipeline.listing import input_pattern
from pipeline.options import check_argv, settings_from
from pipeline.paths import FileSelector, UsageError, partition_of
from pipeline.stores import _listing_prefix, prepare_stores, scheme_of
from apache_beam.options.pipeline_options import PipelineOptions
from transforms import credentials
from transforms.credentials import (AWS_ENV, AZURE_ENV, StoreCredentials, StoreCredentialsError,
                                    parse_aws_secret)
from transforms.events import EVENTS
from transforms.secrets import GCP

ROOTS = {'gs': 'gs://bucket/exports', 's3': 's3://bucket/exports',
         'azfs': 'azfs://account1/container/exports'}
INTEGRATION = 'dataexport.prod-01.S3.integration.69cadaaed2d51b7c75b1a3e5'
NEW = '{root}/' + INTEGRATION + '/event_type={t}/date={d}/version=6/us-01/' + INTEGRATION + \
      '+0+123456.avro'
OLD = '{root}/' + INTEGRATION + '/event_type={t}/date={d}/4/us-01/' + INTEGRATION + '+2+77.avro'
ALL_TYPES = frozenset(e.currents_type for e in EVENTS)
SECRET = 'projects/p/secrets/aws/versions/3'
KEY_ID, SECRET_KEY = 'AKIAEXAMPLEKEYID0001', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'


@pytest.mark.parametrize('scheme', sorted(ROOTS))
@pytest.mark.parametrize('layout', [NEW, OLD], ids=['version-layout', 'older-layout'])
def test_path_decisions_are_the_same_on_every_store(scheme, layout):
    root = ROOTS[scheme]
    selector = FileSelector(ALL_TYPES, dt.datetime(2025, 11, 3, 14), dt.datetime(2025, 11, 3, 16))
    path = layout.format(root=root, t='users.messages.email.Send', d='2025-11-03-14')
    assert selector.decide(path) == ('read', 'users.messages.email.Send')
    assert partition_of(path) == 'users.messages.email.Send/2025-11-03-14'
    before = layout.format(root=root, t='users.messages.email.Send', d='2025-11-03-13')
    at_end = layout.format(root=root, t='users.messages.email.Send', d='2025-11-03-16')
    last = layout.format(root=root, t='users.messages.email.Send', d='2025-11-03-15')
    assert selector.decide(before).action == 'skip_range'
    assert selector.decide(at_end).action == 'skip_range'    # --end is exclusive
    assert selector.decide(last).action == 'read'
    other = layout.format(root=root, t='users.messages.email.Abort', d='2025-11-03-14')
    assert selector.decide(other).action == 'skip_type'
    assert selector.decide(path[:-len('.avro')] + '.json').action == 'skip_not_avro'


@pytest.mark.parametrize('given, pattern', [
    ('s3://bucket', 's3://bucket/**'),
    ('s3://bucket/', 's3://bucket/**'),
    ('s3://bucket/exports/', 's3://bucket/exports/**'),
    ('s3://bucket/exports/*/event_type=users.messages.email.*/**',
     's3://bucket/exports/*/event_type=users.messages.email.*/**'),
    ('azfs://account1/container', 'azfs://account1/container/**'),
    ('azfs://account1/container/', 'azfs://account1/container/**'),
    ('azfs://account1/container/exports/', 'azfs://account1/container/exports/**'),
    ('azfs://account1/container/**/date=2025-11-03-1?/**',
     'azfs://account1/container/**/date=2025-11-03-1?/**'),
    ('gs://bucket', 'gs://bucket/**'),
])
def test_input_patterns_that_need_no_listing(given, pattern):
    assert input_pattern(given) == pattern


def test_listing_prefix_is_the_literal_part_of_a_glob():
    assert _listing_prefix('exports/*/event_type=x/**') == 'exports/'
    assert _listing_prefix('exports/a?b') == 'exports/a'
    assert _listing_prefix('exports/dataexport') == 'exports/dataexport'
    assert scheme_of('azfs://a/c/x') == 'azfs' and scheme_of('/tmp/x') == ''


# ---------------------------------------------------------------- secrets never as flags
@pytest.mark.parametrize('argv', [
    ['--s3_secret_access_key', SECRET_KEY], [f'--s3_secret_access_key={SECRET_KEY}'],
    ['--s3_session_token=FQoGZXIvYXdzEJr'], ['--s3_access_key_id', KEY_ID],
    ['--azure_connection_string', 'DefaultEndpointsProtocol=https;AccountName=a1;'
                                  'AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net'],
    ['--azure_connection_string=BlobEndpoint=https://a1.blob.core.windows.net/;'
     'SharedAccessSignature=sv=2022&sig=abc'],
])
def test_secret_bearing_store_flags_are_refused(argv):
    with pytest.raises(UsageError) as info:
        check_argv(['--input', 's3://b/x', *argv])
    message = str(info.value)
    assert '\n' not in message
    assert 'never' in message and ('_secret' in message or 'AZURE_STORAGE' in message)
    assert SECRET_KEY not in message and 'c2VjcmV0' not in message and 'sig=abc' not in message


def test_a_connection_string_without_a_secret_is_accepted():
    check_argv(['--azure_connection_string', 'BlobEndpoint=https://a1.blob.core.windows.net/'])
    check_argv(['--s3_endpoint_url', 'http://127.0.0.1:9000', '--s3_region_name', 'eu-west-1'])


@pytest.mark.parametrize('flag', ['--aws_credentials_secret', '--azure_connection_string_secret'])
def test_secret_names_must_be_versions(flag):
    with pytest.raises(UsageError, match=f'{flag} must be a Secret Manager version'):
        settings_from(PipelineOptions(['--input', 'x', '--rejects', 'r', flag, 'aws-keys']))
    settings = settings_from(PipelineOptions(['--input', 'x', '--rejects', 'r', flag, SECRET]))
    assert SECRET in settings.store_credentials


def test_on_dataflow_s3_needs_the_secret(monkeypatch):
    options = PipelineOptions(['--input', 's3://b/x', '--rejects', 'gs://b/r'])
    settings = settings_from(options)
    with pytest.raises(UsageError, match='pass --aws_credentials_secret'):
        prepare_stores(settings, options, dataflow=True)
    options = PipelineOptions(['--input', 'azfs://account1/c/x', '--rejects', 'gs://b/r'])
    with pytest.raises(UsageError, match='pass --azure_connection_string_secret'):
        prepare_stores(settings_from(options), options, dataflow=True)


# ------------------------------------------------------------- Secret Manager, fake client
class _Payload:
    def __init__(self, data):
        self.data = data


def fake_secret_manager(secrets):
    """A SecretManagerServiceClient stand-in: {version name: bytes}; records its requests."""
    class FakeClient:
        requests = []

        def access_secret_version(self, request=None, **kwargs):
            type(self).requests.append(request['name'])
            if request['name'] not in secrets:
                raise PermissionError('403 Permission denied on resource')
            return type('Response', (), {'payload': _Payload(secrets[request['name']])})()
    return FakeClient


@pytest.fixture
def clean_env(monkeypatch):
    for var in (*AWS_ENV, AZURE_ENV):
        monkeypatch.delenv(var, raising=False)
    credentials.forget_installed()
    yield
    credentials.forget_installed()


@pytest.mark.parametrize('text', [
    f'{{"aws_access_key_id": "{KEY_ID}", "aws_secret_access_key": "{SECRET_KEY}"}}',
    f'Access key ID,Secret access key\n{KEY_ID},{SECRET_KEY}\n',
    f'\ufeffAccess key ID,Secret access key\r\n{KEY_ID},{SECRET_KEY}\r\n',
])
def test_aws_secret_formats(text):
    assert parse_aws_secret(text) == {'AWS_ACCESS_KEY_ID': KEY_ID,
                                      'AWS_SECRET_ACCESS_KEY': SECRET_KEY}


def test_aws_secret_with_session_token():
    env = parse_aws_secret(f'{{"aws_access_key_id": "{KEY_ID}", "aws_secret_access_key": '
                           f'"{SECRET_KEY}", "aws_session_token": "tok"}}')
    assert env['AWS_SESSION_TOKEN'] == 'tok'


@pytest.mark.parametrize('text', [SECRET_KEY, f'{{"aws_secret_access_key": "{SECRET_KEY}"}}',
                                  f'{KEY_ID}:{SECRET_KEY}', ''])
def test_malformed_aws_secret_is_one_line_without_its_content(text):
    with pytest.raises(StoreCredentialsError) as info:
        parse_aws_secret(text, SECRET)
    assert SECRET in str(info.value) and SECRET_KEY not in str(info.value)


def test_install_reads_each_secret_once_per_process_into_the_environment(clean_env):
    client = fake_secret_manager({
        SECRET: f'{{"aws_access_key_id": "{KEY_ID}", "aws_secret_access_key": "{SECRET_KEY}"}}'
        .encode(),
        'projects/p/secrets/az/versions/1': b'AccountName=a1;AccountKey=c2VjcmV0;'})
    creds = StoreCredentials(SECRET, 'projects/p/secrets/az/versions/1')
    provided = creds.install({GCP: client})
    assert provided == {SECRET: 'the AWS access key pair',
                        'projects/p/secrets/az/versions/1': 'the Azure connection string'}
    assert os.environ['AWS_ACCESS_KEY_ID'] == KEY_ID
    assert os.environ['AWS_SECRET_ACCESS_KEY'] == SECRET_KEY
    assert os.environ[AZURE_ENV] == 'AccountName=a1;AccountKey=c2VjcmV0;'
    creds.install({GCP: client})
    assert client.requests == [SECRET, 'projects/p/secrets/az/versions/1']
    assert SECRET_KEY not in repr(creds) and SECRET_KEY not in repr(provided)


def test_unreadable_secret_names_the_secret_not_a_value(clean_env):
    with pytest.raises(StoreCredentialsError, match=f'cannot read the secret {SECRET}: '
                                                    f'PermissionError'):
        StoreCredentials(SECRET).install({GCP: fake_secret_manager({})})
    assert 'AWS_ACCESS_KEY_ID' not in os.environ


def test_worker_setup_installs_the_credentials(clean_env, monkeypatch):
    """ReadCurrentsFileFn.setup() on a worker: the names travel, the values are read there."""
    from transforms.read import ReadCurrentsFileFn
    monkeypatch.setattr('transforms.secrets.secret_manager_client', fake_secret_manager(
        {SECRET: f'Access key ID,Secret access key\n{KEY_ID},{SECRET_KEY}'.encode()}))
    fn = ReadCurrentsFileFn(ALL_TYPES, credentials=StoreCredentials(aws_secret=SECRET))
    assert 'AWS_ACCESS_KEY_ID' not in os.environ
    fn.setup()
    assert os.environ['AWS_ACCESS_KEY_ID'] == KEY_ID


def test_worker_start_hook_reads_the_names_from_the_worker_options(clean_env, monkeypatch):
    from apache_beam.options.value_provider import RuntimeValueProvider
    monkeypatch.setattr('transforms.secrets.secret_manager_client', fake_secret_manager(
        {SECRET: f'{{"aws_access_key_id": "{KEY_ID}", "aws_secret_access_key": "{SECRET_KEY}"}}'
         .encode()}))
    monkeypatch.setattr(RuntimeValueProvider, 'runtime_options',
                        {'aws_credentials_secret': SECRET, 'runner': 'DataflowRunner'})
    credentials._install_at_worker_start()
    assert os.environ['AWS_SECRET_ACCESS_KEY'] == SECRET_KEY


def test_boto3_sessions_share_one_botocore_loader_after_install(clean_env):
    """Beam's S3 filesystem makes a session per operation; they must not re-parse the models."""
    import boto3
    StoreCredentials().install()
    first = boto3.session.Session()._session.get_component('data_loader')
    second = boto3.session.Session()._session.get_component('data_loader')
    assert first is second
