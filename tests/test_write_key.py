"""The Segment write key on the worker side: read from Secret Manager (a fake client here, no
network) in SendBatchesFn.setup(), never carried by the pipeline, never printed (CONTRACT §6)."""
import base64
import io
import json
import pickle
import traceback

import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.builder import build_pipeline
from devtools.receiver import SegmentReceiver
from pipeline.main import run
from pipeline.options import settings_from
from tests.helpers import balanced, record, write_file
from transforms.segment_client import basic_auth
from transforms.send import SendBatchesFn
from transforms.secrets import GCP
from transforms.write_key import ENV_VAR, WriteKeyMissing, WriteKeySource

KEY = 'wk_SECRET-MANAGER-canary-91b7e2-do-not-leak'
ENV_KEY = 'wk_ENV-canary-4c0d-do-not-leak-either'
SECRET = 'projects/c2s-project/secrets/segment-write-key/versions/7'


class _Payload:
    def __init__(self, data):
        self.data = data


class _Response:
    def __init__(self, data):
        self.payload = _Payload(data)


def fake_secret_manager(data=KEY.encode() + b'\n', error=None):
    """A SecretManagerServiceClient stand-in class; instances record their requests."""
    class FakeClient:
        requests = []
        instances = 0

        def __init__(self, *args, **kwargs):
            type(self).instances += 1

        def access_secret_version(self, request=None, **kwargs):
            type(self).requests.append(request if request is not None else kwargs)
            if error is not None:
                raise error
            return _Response(data)
    return FakeClient


@pytest.fixture
def no_env_key(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


# ------------------------------------------------------------------------ WriteKeySource
def test_secret_is_read_by_its_version_name(no_env_key):
    client = fake_secret_manager()
    key = WriteKeySource(secret_name=SECRET).resolve(client_factories={GCP: client})
    assert key == KEY                                  # payload bytes, decoded, stripped
    assert client.requests == [{'name': SECRET}]


def test_secret_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, ENV_KEY)
    key = WriteKeySource(secret_name=SECRET).resolve(
        client_factories={GCP: fake_secret_manager()})
    assert key == KEY


def test_failing_client_names_the_secret_and_no_key(monkeypatch):
    monkeypatch.setenv(ENV_VAR, ENV_KEY)
    # A client error whose own text would be sensitive: it must not be passed on.
    client = fake_secret_manager(error=PermissionError(f'denied; cached value {KEY}'))
    with pytest.raises(WriteKeyMissing) as info:
        WriteKeySource(secret_name=SECRET).resolve(client_factories={GCP: client})
    message = str(info.value)
    assert SECRET in message and 'PermissionError' in message
    shown = ''.join(traceback.format_exception(info.value))
    assert KEY not in shown and ENV_KEY not in shown
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_failing_client_constructor_is_also_write_key_missing(no_env_key):
    def broken_factory():
        raise RuntimeError('no credentials')
    with pytest.raises(WriteKeyMissing, match='cannot read the write key secret ' + SECRET):
        WriteKeySource(secret_name=SECRET).resolve(client_factories={GCP: broken_factory})


@pytest.mark.parametrize('data', [b'', b'  \n'])
def test_empty_secret_is_write_key_missing(no_env_key, data):
    with pytest.raises(WriteKeyMissing, match=f'no Segment write key in {SECRET}'):
        WriteKeySource(secret_name=SECRET).resolve(
            client_factories={GCP: fake_secret_manager(data=data)})


def test_environment_key_without_a_secret(monkeypatch):
    monkeypatch.setenv(ENV_VAR, f'  {ENV_KEY}\n')
    assert WriteKeySource().resolve() == ENV_KEY
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(WriteKeyMissing, match=ENV_VAR):
        WriteKeySource().resolve()


def test_default_client_is_secret_managers(no_env_key, monkeypatch):
    client = fake_secret_manager()
    monkeypatch.setattr('google.cloud.secretmanager.SecretManagerServiceClient', client)
    assert WriteKeySource(secret_name=SECRET).resolve() == KEY
    assert client.requests == [{'name': SECRET}]


# ------------------------------------------------------------------------ SendBatchesFn
def send_fn():
    return SendBatchesFn('https://api.segment.io/v1/batch', WriteKeySource(secret_name=SECRET),
                         timeout=5.0, use_gzip=True, max_in_flight=2)


def test_setup_puts_the_secret_key_in_the_authorization_header(monkeypatch):
    monkeypatch.setenv(ENV_VAR, ENV_KEY)     # present on the machine, must not be used
    client = fake_secret_manager()
    monkeypatch.setattr('google.cloud.secretmanager.SecretManagerServiceClient', client)
    fn = send_fn()
    fn.setup()
    try:
        assert fn.client.headers['Authorization'] == basic_auth(KEY)
        assert fn.client.headers['Authorization'] == (
            'Basic ' + base64.b64encode(f'{KEY}:'.encode()).decode())
        assert fn.client.headers['Content-Encoding'] == 'gzip'
        assert client.requests == [{'name': SECRET}]
    finally:
        fn.teardown()


def test_setup_fails_with_write_key_missing_when_the_secret_cannot_be_read(no_env_key,
                                                                           monkeypatch):
    monkeypatch.setattr('google.cloud.secretmanager.SecretManagerServiceClient',
                        fake_secret_manager(error=PermissionError('403 Permission denied')))
    fn = send_fn()
    try:
        with pytest.raises(WriteKeyMissing, match=SECRET):
            fn.setup()
    finally:
        fn.teardown()


def test_the_shipped_dofn_carries_the_secret_name_not_the_key(monkeypatch):
    """What Beam serializes into the job is the DoFn before setup(): no key in it, whichever
    pickler; and a set-up DoFn's key lives only on the worker."""
    monkeypatch.setenv(ENV_VAR, KEY)
    fn = send_fn()
    raw = pickle.dumps(fn)
    assert KEY.encode() not in raw and SECRET.encode() in raw
    beam_payload = pickler.dumps(fn)          # what goes into the ParDo payload (compressed)
    restored = pickler.loads(beam_payload)
    assert restored.key_source == WriteKeySource(secret_name=SECRET)
    assert KEY not in repr(vars(restored))


def test_built_pipeline_options_do_not_carry_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, KEY)
    root = tmp_path / 'in'
    path = write_file(root, 'users.messages.email.Send', [record(1)])
    options = PipelineOptions(['--runner', 'FnApiRunner', '--input', str(root),
                               '--rejects', str(tmp_path / 'rejects'),
                               '--segment_write_key_secret', SECRET])
    settings = settings_from(options)
    assert settings.key_source == WriteKeySource(secret_name=SECRET)
    p = build_pipeline(settings, [(path, 'users.messages.email.Send')], options)
    everything = json.dumps(p.options.get_all_options(retain_unknown_options=True), default=str)
    everything += json.dumps(p.options.display_data(), default=str)
    assert SECRET in everything
    assert KEY not in everything
    proto = p.to_runner_api().SerializeToString()
    assert KEY.encode() not in proto


# ------------------------------------------------------------- a real run, key via the secret
def test_run_sends_with_the_key_from_the_secret(tmp_path, no_env_key, monkeypatch, capsys):
    """End to end on the local runner: no SEGMENT_WRITE_KEY anywhere, the key comes from the
    (fake) Secret Manager in the sending DoFn's setup, and the receiver accepts it."""
    client = fake_secret_manager()
    monkeypatch.setattr('google.cloud.secretmanager.SecretManagerServiceClient', client)
    root = tmp_path / 'in'
    write_file(root, 'users.messages.email.Send', [record(i) for i in range(5)])
    write_file(root, 'users.canvas.Entry', [record(i + 10) for i in range(3)])
    out = io.StringIO()
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(['--input', str(root), '--rejects', str(tmp_path / 'rejects'),
                    '--summary_output', str(tmp_path / 'summary.json'),
                    '--segment_endpoint', receiver.url,
                    '--segment_write_key_secret', SECRET], out=out)
        stats = receiver.stats()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert balanced(summary) and summary['sent'] == 8 and summary['rejected'] == 0
    assert stats['accepted'] == 8 and stats['by_status'].get('401', 0) == 0
    assert client.requests and all(r == {'name': SECRET} for r in client.requests)
    shown = (out.getvalue() + captured.out + captured.err).encode() + b''.join(
        p.read_bytes() for p in tmp_path.rglob('*') if p.is_file())
    assert KEY.encode() not in shown


def test_unreadable_secret_stops_the_run_with_one_line(tmp_path, no_env_key, monkeypatch,
                                                       capsys):
    monkeypatch.setattr('google.cloud.secretmanager.SecretManagerServiceClient',
                        fake_secret_manager(error=PermissionError(f'denied {KEY}')))
    root = tmp_path / 'in'
    write_file(root, 'users.messages.email.Send', [record(1)])
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(['--input', str(root), '--rejects', str(tmp_path / 'rejects'),
                    '--segment_endpoint', receiver.url,
                    '--segment_write_key_secret', SECRET], out=io.StringIO())
    err = capsys.readouterr().err
    # Found on the worker, so reported like a refused configuration (3); README's "no write
    # key" (2) is the launcher-side check of SEGMENT_WRITE_KEY.
    assert code in (2, 3)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('currents-to-segment: error: '), err
    assert SECRET in lines[0] and KEY not in err


# ------------------------------------------------------------------------ the command line
@pytest.mark.parametrize('form', [[f'--segment_write_key={KEY}'], ['--segment_write_key', KEY],
                                  [f'--segment-write-key={KEY}'], [f'--write_key={KEY}']],
                         ids=['equals', 'separate', 'dashes', 'write_key'])
def test_write_key_on_the_command_line_is_refused(tmp_path, no_env_key, capsys, form):
    root = tmp_path / 'in'
    write_file(root, 'users.messages.email.Send', [record(1)])
    out = io.StringIO()
    code = run(['--input', str(root), '--rejects', str(tmp_path / 'rejects'), *form], out=out)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('currents-to-segment: error: '), captured.err
    assert 'SEGMENT_WRITE_KEY' in lines[0] and '--segment_write_key_secret' in lines[0]
    assert KEY not in captured.err + captured.out + out.getvalue()
    assert not (tmp_path / 'rejects').exists()
