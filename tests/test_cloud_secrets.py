"""Secrets in any of the three clouds (transforms/secrets.py): the forms of their names, a fake
Key Vault client, and AWS Secrets Manager served by a real moto server, found by boto3 through
the standard AWS_ENDPOINT_URL_SECRETS_MANAGER, up to a command-line run whose worker processes
read the write key in their setup() with no SEGMENT_WRITE_KEY anywhere."""
import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import boto3
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from devtools.receiver import SegmentReceiver
from devtools.sample import generate
from pipeline.options import settings_from
from pipeline.paths import UsageError
from tests.helpers import balanced
from tests.s3_emulator import MotoServer
from tests.test_secrets import KEY, assert_clean, scan_tree
from transforms import credentials
from transforms.credentials import StoreCredentials, StoreCredentialsError
from transforms.secrets import AWS, AZURE, GCP, SECRET_NAME, label, read_secret, store_of
from transforms.write_key import ENV_VAR, WriteKeyMissing, WriteKeySource

ROOT = Path(__file__).resolve().parent.parent
SECRET_FLAGS = ('--segment_write_key_secret', '--aws_credentials_secret',
                '--azure_connection_string_secret')
ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:segment/write-key-AbC1eF'
VAULT = 'https://c2s-vault.vault.azure.net'
VERSION = '0123456789abcdef0123456789abcdef'
ERROR_LINE = re.compile(r'^currents-to-segment: error: .+$')

ACCEPTED = {
    'projects/c2s-project/secrets/segment-write-key/versions/3': GCP,
    'projects/c2s-project/secrets/segment-write-key/versions/latest': GCP,
    ARN: AWS,
    ARN[:-len('-AbC1eF')]: AWS,                                     # without AWS's suffix
    'arn:aws:secretsmanager:us-east-1:123456789012:secret:a': AWS,  # a one-character name
    'arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:currents/s3-keys-x1Y2z3': AWS,
    'arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:wk_+=.@-Zz9': AWS,
    f'{VAULT}/secrets/segment-write-key': AZURE,
    f'{VAULT}/secrets/segment-write-key/{VERSION}': AZURE,
    'https://abc.vault.azure.net/secrets/k': AZURE,                 # 3-character vault name
    f'https://{"v" * 24}.vault.azure.net/secrets/{"k" * 127}': AZURE,
    'https://c2s-vault.vault.azure.cn/secrets/segment-write-key': AZURE,
    'https://c2s-vault.vault.usgovcloudapi.net/secrets/segment-write-key': AZURE,
    'https://c2s-vault.vault.microsoftazure.de/secrets/segment-write-key': AZURE,
}
REFUSED = [
    'my-secret', '', 'projects/p/secrets/s', 'projects/p/secrets/s/versions/',
    'arn:aws:ssm:eu-west-1:123456789012:parameter/segment/write-key',      # another service
    'arn:aws:secretsmanager:eu-west-1:123456789012:parameter:write-key',
    'arn:aws:secretsmanager:eu-west-1:123456789012:secret:',               # no name
    'arn:aws:secretsmanager:eu-west-1:12345678901:secret:write-key',       # 11-digit account
    'arn:aws:secretsmanager:eu-west-1:1234567890123:secret:write-key',     # 13 digits
    'arn:aws:secretsmanager::123456789012:secret:write-key',               # no region
    'arn:aws-eu:secretsmanager:eu-west-1:123456789012:secret:write-key',   # no such partition
    'arn:aws:secretsmanager:eu-west-1:123456789012:secret:write key',
    'http://c2s-vault.vault.azure.net/secrets/segment-write-key',          # not https
    f'{VAULT}/keys/segment-write-key',                                     # a key, not a secret
    f'{VAULT}/segment-write-key', VAULT, f'{VAULT}/secrets/', f'{VAULT}/secrets',
    f'{VAULT}/secrets/segment-write-key/',
    f'{VAULT}/secrets/segment-write-key/{VERSION[:-1]}',                   # 31 hex digits
    f'{VAULT}/secrets/segment-write-key/{VERSION}0',                       # 33
    f'{VAULT}/secrets/segment-write-key/latest',
    f'{VAULT}/secrets/segment_write_key',                                  # '_' is not allowed
    'https://ab.vault.azure.net/secrets/k',                                # 2-character vault
    f'https://{"v" * 25}.vault.azure.net/secrets/k',                       # 25
    f'https://c2s-vault.vault.azure.net/secrets/{"k" * 128}',              # 128-character name
    'https://c2s-vault.vault.azure.net.example.com/secrets/segment-write-key',
    'https://c2s-vault.managedhsm.azure.net/secrets/segment-write-key',
    f'{ARN}\n', f'{VAULT}/secrets/segment-write-key\n',
]


# ------------------------------------------------------------------------------ name forms
@pytest.mark.parametrize('name,store', ACCEPTED.items(), ids=list(ACCEPTED))
def test_each_accepted_form_names_its_store(name, store):
    assert store_of(name) == store and SECRET_NAME.fullmatch(name)


@pytest.mark.parametrize('name', REFUSED)
def test_other_forms_are_no_store(name):
    assert store_of(name) is None and not SECRET_NAME.fullmatch(name)


@pytest.mark.parametrize('flag', SECRET_FLAGS)
@pytest.mark.parametrize('name', ['arn:aws:ssm:eu-west-1:123456789012:parameter/wk',
                                  'http://c2s-vault.vault.azure.net/secrets/wk', 'wk'])
def test_the_options_refuse_other_forms_naming_the_three(flag, name):
    with pytest.raises(UsageError) as info:
        settings_from(PipelineOptions(['--input', 'x', '--rejects', 'r', flag, name]))
    message = str(info.value)
    assert '\n' not in message and message.startswith(f'{flag} must be a Secret Manager version')
    for form in ('projects/P/secrets/S/versions/V', 'arn:aws:secretsmanager:REGION:ACCOUNT:'
                 'secret:NAME', 'https://VAULT.vault.azure.net/secrets/NAME[/VERSION]'):
        assert form in message


@pytest.mark.parametrize('name', [ARN, f'{VAULT}/secrets/segment-write-key/{VERSION}'])
def test_the_options_take_an_arn_or_a_vault_url_for_every_secret(name):
    settings = settings_from(PipelineOptions(
        ['--input', 'x', '--rejects', 'r', *[part for flag in SECRET_FLAGS
                                              for part in (flag, name)]]))
    assert settings.key_source.secret_name == name
    assert settings.store_credentials == StoreCredentials(name, name)


def test_metadata_regexes_are_the_options_forms():
    """The Flex Template checks what the command checks, for the three secret parameters."""
    parameters = json.loads((ROOT / 'metadata.json').read_text())['parameters']
    regexes = {p['name']: p['regexes'] for p in parameters}
    for flag in SECRET_FLAGS:
        assert regexes[flag[2:]] == [SECRET_NAME.pattern], flag
    for name in [*ACCEPTED, *REFUSED]:
        assert bool(re.fullmatch(SECRET_NAME.pattern, name)) == (name in ACCEPTED), name


def test_messages_name_the_store_a_value_came_from():
    assert label(ARN) == f'Secrets Manager {ARN}'
    assert label(f'{VAULT}/secrets/k') == f'Key Vault {VAULT}/secrets/k'
    assert label('projects/p/secrets/s/versions/1') == 'Secret Manager projects/p/secrets/s/versions/1'


# ------------------------------------------------------------------ Key Vault, fake client
class _KeyVaultResponse:
    """What Key Vault answers an unknown secret with (azure.core parses the error from it)."""
    reason, status_code = 'Not Found', 404

    def __init__(self, message):
        self.message = message

    def text(self, encoding=None):
        return json.dumps({'error': {'code': 'SecretNotFound', 'message': self.message}})


class FakeKeyVault:
    """azure.keyvault.secrets.SecretClient stand-in: {(name, version or None): value}.

    Used as the AZURE client factory; records the vault URLs and the (name, version) asked."""

    def __init__(self, secrets, error=None):
        self.secrets, self.error = secrets, error
        self.vault_urls, self.requests = [], []

    def __call__(self, vault_url):
        self.vault_urls.append(vault_url)
        return self

    def get_secret(self, name, version=None, **kwargs):
        self.requests.append((name, version))
        if self.error is not None:
            raise self.error
        if (name, version) not in self.secrets:
            raise ResourceNotFoundError(response=_KeyVaultResponse(
                f'A secret with (name/id) {name} was not found; latest value {KEY}'))
        return type('KeyVaultSecret', (), {'value': self.secrets[(name, version)]})()


@pytest.fixture
def no_env_key(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_key_vault_secret_latest_and_by_version(no_env_key):
    vault = FakeKeyVault({('segment-write-key', None): f'{KEY}\n',
                          ('segment-write-key', VERSION): 'wk_an-older-version'})
    latest = WriteKeySource(f'{VAULT}/secrets/segment-write-key')
    assert latest.resolve({AZURE: vault}) == KEY
    pinned = WriteKeySource(f'{VAULT}/secrets/segment-write-key/{VERSION}')
    assert pinned.resolve({AZURE: vault}) == 'wk_an-older-version'
    assert vault.vault_urls == [VAULT, VAULT]
    assert vault.requests == [('segment-write-key', None), ('segment-write-key', VERSION)]


def test_key_vault_sovereign_cloud_goes_to_its_vault():
    vault = FakeKeyVault({('currents-azure', None): 'AccountName=a1;AccountKey=c2VjcmV0;'})
    assert read_secret('https://c2s-vault.vault.azure.cn/secrets/currents-azure',
                       {AZURE: vault}) == 'AccountName=a1;AccountKey=c2VjcmV0;'
    assert vault.vault_urls == ['https://c2s-vault.vault.azure.cn']


@pytest.mark.parametrize('error,reason', [
    (None, 'ResourceNotFoundError (SecretNotFound)'),
    (ClientAuthenticationError(f'DefaultAzureCredential failed; token {KEY}'),
     'ClientAuthenticationError'),
])
def test_key_vault_errors_name_the_secret_and_no_value(no_env_key, error, reason):
    name = f'{VAULT}/secrets/unknown/{VERSION}'
    with pytest.raises(WriteKeyMissing) as info:
        WriteKeySource(name).resolve({AZURE: FakeKeyVault({}, error)})
    assert str(info.value) == f'cannot read the write key secret {name}: {reason}'
    shown = ''.join(traceback.format_exception(info.value))
    assert KEY not in shown and info.value.__cause__ is None and info.value.__suppress_context__


def test_empty_key_vault_secret_is_no_key(no_env_key):
    name = f'{VAULT}/secrets/empty'
    with pytest.raises(WriteKeyMissing, match=f'^no Segment write key in {name}$'):
        WriteKeySource(name).resolve({AZURE: FakeKeyVault({('empty', None): ' \n'})})


def test_store_credentials_from_key_vault(clean_aws_env, monkeypatch):
    name = f'{VAULT}/secrets/currents-azure'
    monkeypatch.delenv(credentials.AZURE_ENV, raising=False)
    vault = FakeKeyVault({('currents-azure', None): 'AccountName=a1;AccountKey=c2VjcmV0;'})
    assert StoreCredentials(azure_secret=name).install({AZURE: vault}) == {
        name: 'the Azure connection string'}
    assert os.environ[credentials.AZURE_ENV] == 'AccountName=a1;AccountKey=c2VjcmV0;'
    with pytest.raises(StoreCredentialsError,
                       match=f'^cannot read the secret {VAULT}/secrets/gone: ResourceNotFound'):
        StoreCredentials(azure_secret=f'{VAULT}/secrets/gone').install({AZURE: vault})


def test_the_real_key_vault_client_is_made_for_the_vault(monkeypatch):
    """No network: the client is built, pointed at the vault, with Azure's default chain."""
    from transforms import secrets
    client = secrets.key_vault_client('https://c2s-vault.vault.azure.cn')
    assert client.vault_url == 'https://c2s-vault.vault.azure.cn'
    assert type(client._client._config.credential).__name__ == 'DefaultAzureCredential'


# --------------------------------------------------------- Secrets Manager, fake and moto
def test_secrets_manager_binary_secret_is_utf8_and_read_in_the_arns_region(no_env_key):
    calls = []

    class FakeSecretsManager:
        def __init__(self, region):
            calls.append(region)

        def get_secret_value(self, SecretId):
            calls.append(SecretId)
            return {'ARN': SecretId, 'SecretBinary': KEY.encode() + b'\n'}

    assert WriteKeySource(ARN).resolve({AWS: FakeSecretsManager}) == KEY
    assert calls == ['eu-west-1', ARN]


def test_boto3_finds_the_secrets_manager_endpoint_in_the_standard_variable(monkeypatch):
    from transforms import secrets
    monkeypatch.setenv('AWS_ENDPOINT_URL_SECRETS_MANAGER', 'http://127.0.0.1:9')
    client = secrets.secrets_manager_client('ap-southeast-2')
    assert client.meta.endpoint_url == 'http://127.0.0.1:9'
    assert client.meta.region_name == 'ap-southeast-2'


@pytest.fixture
def clean_aws_env(monkeypatch, tmp_path):
    """Only the environment gives AWS credentials (no ~/.aws files, no instance metadata)."""
    for var in ('AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_ROLE_ARN', 'AWS_WEB_IDENTITY_TOKEN_FILE',
                'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_ENDPOINT_URL', ENV_VAR):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('AWS_EC2_METADATA_DISABLED', 'true')
    monkeypatch.setenv('AWS_CONFIG_FILE', str(tmp_path / 'no-aws-config'))
    monkeypatch.setenv('AWS_SHARED_CREDENTIALS_FILE', str(tmp_path / 'no-aws-credentials'))
    credentials.forget_installed()
    yield
    credentials.forget_installed()


@pytest.fixture(scope='module')
def moto():
    """A moto server with IAM checks on: `reader` may read secrets, `s3_only` may not, and
    secrets created in eu-west-1 (so a read in another region would not find them)."""
    with MotoServer() as server:
        server.enforce_auth()
        server.reader = server.create_user('c2s-secret-reader', {
            'Version': '2012-10-17', 'Statement': [
                {'Effect': 'Allow', 'Action': 'secretsmanager:GetSecretValue', 'Resource': '*'}]})
        server.s3_only = server.create_user('c2s-s3-only', {
            'Version': '2012-10-17', 'Statement': [
                {'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}]})
        admin = boto3.session.Session().client(
            'secretsmanager', endpoint_url=server.url, region_name='eu-west-1',
            aws_access_key_id=server.keys[0], aws_secret_access_key=server.keys[1])
        server.write_key_arn = admin.create_secret(
            Name='segment/write-key', SecretString=f'{KEY}\n')['ARN']
        server.binary_arn = admin.create_secret(
            Name='segment/write-key-binary', SecretBinary=KEY.encode())['ARN']
        server.pair_arn = admin.create_secret(Name='currents/s3', SecretString=json.dumps({
            'aws_access_key_id': server.s3_only[0],
            'aws_secret_access_key': server.s3_only[1]}))['ARN']
        yield server


@pytest.fixture
def as_reader(moto, clean_aws_env, monkeypatch):
    """This process on a machine whose chain gives the reader's keys, Secrets Manager at moto."""
    monkeypatch.setenv('AWS_ENDPOINT_URL_SECRETS_MANAGER', moto.url)
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', moto.reader[0])
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', moto.reader[1])
    return moto


@pytest.mark.slow
def test_write_key_from_secrets_manager(as_reader):
    arn = as_reader.write_key_arn
    assert arn.startswith('arn:aws:secretsmanager:eu-west-1:') and store_of(arn) == AWS
    assert WriteKeySource(arn).resolve() == KEY
    assert WriteKeySource(arn[:-7]).resolve() == KEY      # the ARN without AWS's suffix
    assert WriteKeySource(as_reader.binary_arn).resolve() == KEY


@pytest.mark.slow
def test_unreadable_secrets_manager_arn_names_the_arn_and_the_code(as_reader, monkeypatch):
    gone = as_reader.write_key_arn.replace('write-key', 'no-such-key')
    with pytest.raises(WriteKeyMissing) as info:
        WriteKeySource(gone).resolve()
    assert str(info.value) == (f'cannot read the write key secret {gone}: '
                               f'ResourceNotFoundException')
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', as_reader.s3_only[0])
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', as_reader.s3_only[1])
    with pytest.raises(WriteKeyMissing) as info:
        WriteKeySource(as_reader.write_key_arn).resolve()
    # moto answers this one in XML, which boto3 leaves as an HTTP status (AWS itself says
    # AccessDeniedException)
    assert str(info.value) == (f'cannot read the write key secret {as_reader.write_key_arn}: '
                               f'ClientError (403)')
    assert KEY not in ''.join(traceback.format_exception(info.value))


@pytest.mark.slow
def test_store_key_pair_from_secrets_manager_and_the_write_key_after_it(as_reader):
    """The pair replaces this process's AWS variables (Beam's S3 filesystem reads them there);
    the write key is still read with the machine's own credentials: the pair may not read it."""
    provided = StoreCredentials(aws_secret=as_reader.pair_arn).install()
    assert provided == {as_reader.pair_arn: 'the AWS access key pair'}
    assert (os.environ['AWS_ACCESS_KEY_ID'], os.environ['AWS_SECRET_ACCESS_KEY']) == \
        as_reader.s3_only
    assert WriteKeySource(as_reader.write_key_arn).resolve() == KEY
    credentials.forget_installed()   # as a process that never replaced its variables
    with pytest.raises(WriteKeyMissing, match=r'ClientError \(403\)$'):
        WriteKeySource(as_reader.write_key_arn).resolve()


# ------------------------------------------------------------- the command, worker processes
@pytest.mark.slow
def test_local_worker_processes_read_the_write_key_from_secrets_manager(moto, tmp_path):
    """`python -m pipeline` with two local worker processes, SEGMENT_WRITE_KEY nowhere, and
    --segment_write_key_secret an ARN at moto: the receiver (which checks the key) accepts every
    event; the key is in no output. A second run with an ARN that does not exist stops with one
    line naming it."""
    report = generate(str(tmp_path / 'in'), events=1500, seed=11)
    env = {k: v for k, v in os.environ.items() if not k.startswith('AWS_') and k != ENV_VAR}
    env.update(AWS_ENDPOINT_URL_SECRETS_MANAGER=moto.url, AWS_ACCESS_KEY_ID=moto.reader[0],
               AWS_SECRET_ACCESS_KEY=moto.reader[1], AWS_EC2_METADATA_DISABLED='true',
               AWS_CONFIG_FILE=str(tmp_path / 'no-aws-config'),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / 'no-aws-credentials'),
               TMPDIR=str(tmp_path))   # the run's log file, scanned below
    gone = moto.write_key_arn.replace('write-key', 'no-such-key')
    since = moto.log_position()
    with SegmentReceiver(write_key=KEY) as receiver:
        procs = {}
        for name, arn in (('ok', moto.write_key_arn), ('gone', gone)):
            out = tmp_path / name
            procs[name] = subprocess.Popen(
                [sys.executable, '-m', 'pipeline', '--input', report.root,
                 '--rejects', str(out / 'rejects'), '--summary_output', str(out / 'summary.json'),
                 '--segment_endpoint', receiver.url, '--segment_write_key_secret', arn,
                 '--direct_num_workers', '2', '--direct_running_mode', 'multi_processing'],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        results = {name: (p.wait(300), *p.communicate()) for name, p in procs.items()}
        ids = {m['messageId'] for m in receiver.messages()}
        stats = receiver.stats()
    code, stdout, stderr = results['ok']
    assert code == 0, stderr[-2000:]
    assert 'local run: 2 worker processes' in stdout
    summary = json.loads((tmp_path / 'ok' / 'summary.json').read_text())
    assert balanced(summary) and summary['sent'] == report.eligible and summary['rejected'] == 0
    assert ids == report.eligible_ids and stats['by_status'].get('401', 0) == 0
    reads = [r for r in moto.requests(since) if r[0] == 'POST' and r[1] == '/']
    assert reads and all(status in (200, 400) for _, _, status in reads)
    code, stdout, stderr = results['gone']
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and ERROR_LINE.match(lines[0]), (code, stderr)
    assert f'cannot read the write key secret {gone}: ResourceNotFoundException' in lines[0]
    for name, (_, stdout, stderr) in results.items():
        assert_clean(f'{name} stdout', stdout)
        assert_clean(f'{name} stderr', stderr)
    assert scan_tree(tmp_path) >= 3
