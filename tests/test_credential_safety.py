"""The key goes only to the endpoint given, replay and resume trust only what this tool wrote,
customer data is owner-only, and the local receiver guards its body size and controls.

Everything runs over loopback against servers started here: a recording proxy, a redirecting
endpoint, an endpoint that echoes the request headers, and the local receiver.
"""
import contextlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from devtools.receiver import SegmentReceiver, control_headers
from devtools.sample import load_schema
from pipeline.endpoint import endpoint_for
from pipeline.main import run
from tests.bad_inputs import nullable_variant
from tests.helpers import read_rejects, record, write_file
from tests.test_secrets import assert_clean
from transforms.send import configure_session

ROOT = Path(__file__).resolve().parent.parent
KEY = 'wk_LEAKCANARY-7f3a9c2e5b-do-not-log'   # the canary tests/test_secrets.py scans for
SEND = 'users.messages.email.Send'
PROXY_VARS = ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy')


class Recorder:
    """A loopback HTTP server that records every request and answers with `answer(handler)`."""

    def __init__(self, answer):
        self.requests = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def _any(self):
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length) if length else b''
                recorder.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, payload = answer(self)
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_CONNECT = _any

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self):
        return f'http://127.0.0.1:{self.server.server_address[1]}'

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _ok(_):
    return 200, (), b'{"success":true}'


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    for name in PROXY_VARS + ('NO_PROXY', 'no_proxy'):
        monkeypatch.delenv(name, raising=False)
    return KEY


def _input(tmp_path, n=20):
    root = tmp_path / 'in'
    write_file(root, SEND, [record(i, external=f'ext-{i}') for i in range(n)])
    return root


def _run(tmp_path, *extra):
    out, err = io.StringIO(), io.StringIO()
    argv = ['--input', str(tmp_path / 'in'), '--rejects', str(tmp_path / 'rejects'),
            '--summary_output', str(tmp_path / 'summary.json'), *extra]
    with contextlib.redirect_stderr(err):
        code = run(argv, out=out)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------ endpoint rules
@pytest.mark.parametrize('url', [
    'http://attacker.example\\@127.0.0.1/v1/batch',     # urlparse: 127.0.0.1; requests: attacker
    'http://attacker.example\\@127.0.0.1:8080/v1/batch',
    f'http://{KEY}@127.0.0.1/v1/batch',                  # a key in the URL
    f'https://{KEY}:@api.segment.io/v1/batch',
    'https://user:password@api.segment.io/v1/batch',
    'http://127.0.0.1%2f@attacker.example/v1/batch',
    'http://127.1/v1/batch', 'http://0x7f.0.0.1/v1/batch', 'http://2130706433/v1/batch',
    'http://127.0.0.1.attacker.example/v1/batch', 'http://localhost.attacker.example/',
    'http://127.0.0.1 /v1/batch', 'http://127.0.0.1/v1/batch#@attacker.example',
    'http://127.0.0.1\t/v1/batch', 'https://api.segment.io\\v1\\batch',
    'http:/127.0.0.1/v1/batch', 'ftp://127.0.0.1/v1/batch', 'https:///v1/batch',
    'http://127.0.0.1:99999/v1/batch', 'https://\u0430pi.segment.io/v1/batch',
])
def test_ambiguous_or_credentialed_endpoints_are_refused_without_echoing_them(url):
    with pytest.raises(ValueError) as refused:
        endpoint_for('us', url)
    assert KEY not in str(refused.value) and 'attacker' not in str(refused.value)


@pytest.mark.parametrize('url', ['http://127.0.0.1:8080/v1/batch', 'http://[::1]:9/v1/batch',
                                 'http://localhost:9/v1/batch', 'https://api.segment.io/v1/batch',
                                 'https://events.eu1.segmentapis.com/v1/batch?x=1'])
def test_plain_endpoints_are_accepted(url):
    assert endpoint_for('us', url) == url


def test_the_backslash_endpoint_never_connects_and_the_cli_says_one_line(tmp_path, key):
    _input(tmp_path)
    with Recorder(_ok) as local:
        port = local.server.server_address[1]
        code, out, err = _run(tmp_path, '--segment_endpoint',
                              f'http://localhost\\@127.0.0.1:{port}/v1/batch')
        code2, _, err2 = _run(tmp_path, '--segment_endpoint',
                              f'http://{KEY}@127.0.0.1:{port}/v1/batch')
    assert (code, code2) == (2, 2)
    assert local.requests == []
    assert len(err.strip().splitlines()) == 1 and 'segment_endpoint' in err
    assert_clean('stderr', err + err2 + out)


# ---------------------------------------------------------------------------------- proxies
@pytest.mark.slow
def test_environment_proxies_never_see_the_key(tmp_path, key, monkeypatch):
    _input(tmp_path)
    with Recorder(_ok) as proxy, SegmentReceiver(write_key=KEY) as receiver:
        for name in PROXY_VARS:
            monkeypatch.setenv(name, proxy.base)
        code, out, err = _run(tmp_path, '--segment_endpoint', receiver.url)
        # --use_env_proxy: still no proxy for plain http (the proxy would see the key).
        code2, _, err2 = _run(tmp_path, '--segment_endpoint', receiver.url, '--use_env_proxy')
        assert receiver.stats()['accepted'] == 20
    assert (code, code2) == (0, 0), err + err2
    assert proxy.requests == []


def test_use_env_proxy_applies_to_https_only_and_honours_no_proxy(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.setenv(name, 'http://127.0.0.1:3128')
    monkeypatch.delenv('NO_PROXY', raising=False)
    monkeypatch.delenv('no_proxy', raising=False)
    for endpoint, use, expected in (
            ('https://api.segment.io/v1/batch', False, {}),
            ('https://api.segment.io/v1/batch', True, {'https': 'http://127.0.0.1:3128'}),
            ('http://127.0.0.1:9/v1/batch', True, {})):
        session = requests.Session()
        configure_session(session, endpoint, use)
        assert session.trust_env is False
        assert session.proxies == expected, (endpoint, use)
    monkeypatch.setenv('NO_PROXY', 'segment.io')
    session = requests.Session()
    configure_session(session, 'https://api.segment.io/v1/batch', True)
    assert session.proxies == {}


# -------------------------------------------------------------------------------- redirects
@pytest.mark.parametrize('status', [302, 307] + [pytest.param(s, marks=pytest.mark.slow)
                                                  for s in (301, 303, 308)])
def test_a_redirect_stops_the_run_with_exit_3_and_nothing_sent(tmp_path, key, status):
    _input(tmp_path)
    with Recorder(_ok) as elsewhere:
        def redirect(_):
            return status, (('Location', elsewhere.base + '/v1/batch'),), b''
        with Recorder(redirect) as endpoint:
            code, out, err = _run(tmp_path, '--segment_endpoint', endpoint.base + '/v1/batch')
    assert code == 3, err
    assert f'HTTP {status}' in err and 'redirect' in err
    assert elsewhere.requests == []
    assert len(endpoint.requests) >= 1
    assert not (tmp_path / 'summary.json').exists()   # stopped: nothing counted as sent
    assert_clean('output', out + err)


# ---------------------------------------------------------------------- Segment's answer text
def test_an_endpoint_echoing_headers_leaves_no_key_in_rejects(tmp_path, key):
    _input(tmp_path, n=1)

    def echo(handler):
        headers = json.dumps(dict(handler.headers)) + ' Authorization: ' + \
            handler.headers['Authorization'] + ' ' + 'x' * 5000
        return 400, (), headers.encode()
    with Recorder(echo) as endpoint:
        code, out, err = _run(tmp_path, '--segment_endpoint', endpoint.base + '/v1/batch')
    rejects = read_rejects(tmp_path / 'rejects')
    assert [r['reason'] for r in rejects] == ['segment_rejected']
    assert 'HTTP 400' in rejects[0]['detail'] and '[redacted]' in rejects[0]['detail']
    assert len(rejects[0]['detail']) <= 520
    for path in (tmp_path / 'rejects').glob('*.jsonl'):
        assert_clean(path, path.read_text())
    assert_clean('output', out + err)


# ------------------------------------------------------------------------------ run_local.sh
@pytest.mark.parametrize('args', [['--input', 'DIR'], ['--input=DIR', '--rejects', 'R']])
def test_run_local_with_input_refuses_without_a_destination(tmp_path, args):
    (tmp_path / 'DIR').mkdir()
    args = [a.replace('DIR', str(tmp_path / 'DIR')) for a in args]
    env = dict(os.environ, LOCAL_OUT=str(tmp_path / 'out'), SEGMENT_WRITE_KEY=KEY)
    proc = subprocess.run(['bash', str(ROOT / 'run_local.sh'), *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert '--segment_region' in proc.stderr and '--dry_run_output' in proc.stderr
    assert not (tmp_path / 'out').exists()      # no receiver, no received.jsonl
    assert_clean('run_local.sh output', proc.stdout + proc.stderr)


@pytest.mark.slow
def test_run_local_without_arguments_sends_the_sample_to_the_local_receiver(tmp_path):
    """README's first command: sample data to the local receiver, with its own key only."""
    env = dict(os.environ, LOCAL_OUT=str(tmp_path / 'out'), SEGMENT_WRITE_KEY=KEY)
    proc = subprocess.run(['bash', str(ROOT / 'run_local.sh')], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'local Segment-compatible receiver: http://127.0.0.1:' in proc.stdout
    assert 'balance: read = dropped + sent + rejected OK' in proc.stdout
    sent = int(proc.stdout.split('\ntotal', 1)[1].split()[2])
    assert f'receiver: {sent} unique messages accepted' in proc.stdout and sent > 0
    assert_clean('run_local.sh output', proc.stdout + proc.stderr)   # the real key never used
    # the sample's deliberate all-rejected hour, and its report written by default
    assert 'rejects by reason: message_id_too_long ' in proc.stdout
    report = tmp_path / 'out' / 'report.html'
    assert f'report written: {report} (' in proc.stderr
    assert_clean('report', report.read_text())


# ------------------------------------------------------------------ replay and resume trust
def _reject_line(**row):
    return json.dumps(row)


def test_replay_sends_only_what_this_tool_wrote(tmp_path, key):
    root = _input(tmp_path, n=3)
    outside = tmp_path / 'outside'
    secret_file = write_file(outside, SEND, [record(900 + i, external='x') for i in range(3)])
    inside_file = write_file(root, SEND, [record(700 + i, external='y') for i in range(2)], n=7)
    good = {'type': 'track', 'event': 'Email Sent', 'userId': 'u1', 'messageId': 'good-1',
            'timestamp': '2024-05-01T12:00:00.000Z', 'properties': {'campaign_id': 'c'},
            'context': {'traits': {'email': 'a@example.com'},
                        'library': {'name': 'currents-to-segment', 'version': '1'}}}
    relative = os.path.relpath(secret_file)
    lines = [
        _reject_line(reason='retries_exhausted', event_type=SEND, source='f', detail='',
                     message=good),
        _reject_line(reason='unreadable_file', event_type=SEND, source=inside_file, detail='',
                     input=str(root)),
        # crafted: files outside the recorded input, absolute and through ../
        _reject_line(reason='unreadable_file', event_type=SEND, source=secret_file,
                     detail='', input=str(root)),
        _reject_line(reason='unreadable_file', event_type=SEND,
                     source=str(root) + '/../outside/' + secret_file.split('/outside/', 1)[1],
                     detail='', input=str(root)),
        _reject_line(reason='unreadable_file', event_type=SEND, source=relative, detail=''),
        # crafted messages: another type, another event, extra traits or fields
        _reject_line(reason='segment_rejected', event_type=SEND, source='f', detail='',
                     message=dict(good, type='identify', messageId='evil-1',
                                  traits={'email': 'victim@example.com', 'plan': 'gold'})),
        _reject_line(reason='segment_rejected', event_type=SEND, source='f', detail='',
                     message=dict(good, event='Order Completed', messageId='evil-2')),
        _reject_line(reason='segment_rejected', event_type=SEND, source='f', detail='',
                     message=dict(good, messageId='evil-3',
                                  context={'traits': {'email': 'a', 'phone': '+1'}})),
        _reject_line(reason='segment_rejected', event_type=SEND, source='f', detail='',
                     message=dict(good, messageId='evil-4', userId=None,
                                  anonymousId='x', writeKey='other')),
        _reject_line(reason='segment_rejected', event_type='users.custom.Thing', source='f',
                     detail='', message=dict(good, messageId='evil-5')),
    ]
    (tmp_path / 'rejects').mkdir()
    (tmp_path / 'rejects' / 'rejects-crafted-00000-of-00001.jsonl').write_text(
        '\n'.join(lines) + '\n')
    out = io.StringIO()
    with SegmentReceiver(write_key=KEY) as receiver:
        code = run(['replay', '--rejects', str(tmp_path / 'rejects'), '--segment_endpoint',
                    receiver.url, '--summary_output', str(tmp_path / 'replay.json')], out=out)
        ids = {m['messageId'] for m in receiver.messages()}
    assert code == 4, out.getvalue()   # what was not replayed is still there: exit 4
    assert ids == {'good-1', 'evt-700', 'evt-701'}
    text = out.getvalue()
    assert 'not replayed' in text
    assert 'file outside the input it was read from' in text
    assert 'file reject without the input it was read from' in text
    assert 'message: not a track message of its event type' in text
    assert 'unknown event type' in text
    summary = json.loads((tmp_path / 'replay.json').read_text())
    assert summary['sent'] == 3 and summary['read'] == 3
    assert sum(summary['not_replayed'].values()) == 8


def test_resume_ignores_manifests_of_another_input_or_not_written_by_this_tool(
        tmp_path, key, capsys):
    _input(tmp_path, n=5)
    manifests = tmp_path / 'rejects' / 'manifest'
    manifests.mkdir(parents=True)
    partition = f'{SEND}/2024-05-01-12'   # the partition this input holds
    (manifests / 'wave-other-w0.json').write_text(json.dumps(
        {'run_id': 'x', 'input': '/somewhere/else', 'files': 1, 'partitions': [partition]}))
    (manifests / 'wave-noinput-w0.json').write_text(json.dumps(
        {'run_id': 'x', 'files': 1, 'partitions': [partition]}))
    (manifests / 'wave-junk-w0.json').write_text('{"partitions": "everything"}')
    with SegmentReceiver(write_key=KEY) as receiver:
        code, out, err = _run(tmp_path, '--segment_endpoint', receiver.url, '--resume')
        assert receiver.stats()['accepted'] == 5
    assert code == 0
    err += capsys.readouterr().err
    assert err.count('resume: ignoring manifest') == 3, err
    assert "not this run's" in err and 'not one this tool wrote' in err
    # The manifest this run wrote names its input and is honoured by the next --resume.
    written = [json.loads(p.read_text()) for p in manifests.glob('wave-2*.json')]
    assert written and written[0]['input'] == str(tmp_path / 'in')
    with SegmentReceiver(write_key=KEY) as receiver:
        code, out, _ = _run(tmp_path, '--segment_endpoint', receiver.url, '--resume')
        assert receiver.stats()['requests'] == 0
    assert code == 0 and 'nothing to do: all 1 files' in out


# ------------------------------------------------------------------------ owner-only files
@pytest.mark.slow
def test_files_with_customer_data_are_owner_only_under_the_default_umask(tmp_path):
    root = tmp_path / 'in'
    schema = nullable_variant(load_schema(SEND), 'time')   # one record without time: a reject
    write_file(root, SEND, [record(i, external=f'ext-{i}') for i in range(5)]
               + [record(99, external='e', time=None)], schema=schema)
    out = tmp_path / 'out'
    script = ('import os, sys; os.umask(0o022); sys.argv[1:] = %r\n'
              'from pipeline.main import main; main()' % [
                  '--input', str(root), '--rejects', str(out / 'rejects'),
                  '--dry_run_output', str(out / 'bodies'),
                  '--summary_output', str(out / 'summary.json')])
    proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, SEGMENT_WRITE_KEY=KEY, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    created = list(out.rglob('*'))
    kinds = {p.suffix for p in created if p.is_file()}
    assert {'.jsonl', '.json'} <= kinds      # rejects, bodies, summary, manifest
    for path in created + [out]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (str(path), oct(mode))


def test_the_run_disables_core_dumps_and_sets_an_owner_only_umask():
    script = ('import os, resource\n'
              'from pipeline.hardening import harden_process\n'
              'os.umask(0o022); harden_process()\n'
              'print(resource.getrlimit(resource.RLIMIT_CORE), oct(os.umask(0)))')
    proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.strip() == '(0, 0) 0o77', proc.stderr


# --------------------------------------------------------------------------- local receiver
def _raw(port, data, wait=5.0):
    with socket.create_connection(('127.0.0.1', port), timeout=wait) as s:
        s.sendall(data)
        started = time.monotonic()
        got = b''
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except socket.timeout:
            pass
        return got, time.monotonic() - started


@pytest.mark.parametrize('size_line', [b'-1', b'+10', b'0x10', b'ffffffffffffffffff', b'zz'])
def test_receiver_refuses_a_bad_chunk_size_at_once(size_line):
    with SegmentReceiver(write_key=KEY) as receiver:
        head = (b'POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
                b'Content-Type: application/json\r\n\r\n')
        got, seconds = _raw(receiver.port, head + size_line + b'\r\n' + b'x' * 4096)
        assert receiver.stats()['accepted'] == 0
    assert got.startswith(b'HTTP/1.1 400') and seconds < 3, (got[:100], seconds)


def test_receiver_caps_chunked_bodies_like_others():
    from devtools import receiver as module
    with SegmentReceiver(write_key=KEY) as receiver:
        head = (b'POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n')
        declared = b'%x' % (module._HARD_BODY_CAP + 1)
        got, seconds = _raw(receiver.port, head + declared + b'\r\n' + b'x' * 1024)
    assert got.startswith(b'HTTP/1.1 400') and seconds < 3


def test_receiver_control_endpoints_need_the_write_key(tmp_path):
    with SegmentReceiver(write_key=KEY) as receiver:
        base = receiver.url.replace('/v1/batch', '')
        for method, path in (('get', '/_receiver/stats'), ('get', '/_receiver/messages'),
                             ('post', '/_receiver/mode')):
            kwargs = {'json': {'mode': 'refuse_503'}} if method == 'post' else {}
            assert getattr(requests, method)(base + path, **kwargs).status_code == 401
            wrong = control_headers('not-the-key')
            assert getattr(requests, method)(base + path, headers=wrong,
                                             **kwargs).status_code == 401
        assert receiver.stats()['mode'] == 'normal'
        assert requests.get(base + '/_receiver/stats',
                            headers=control_headers(KEY)).status_code == 200


def test_receiver_store_is_owner_only_even_if_it_existed(tmp_path):
    store = tmp_path / 'received.jsonl'
    store.write_text('')
    os.chmod(store, 0o644)
    with SegmentReceiver(write_key=KEY, store_path=str(store)):
        pass
    assert stat.S_IMODE(store.stat().st_mode) == 0o600


def test_replay_trusts_messages_of_either_profile_in_their_own_shape():
    """A `current` message (typed properties, its own context paths) replays; the same paths on
    a type whose table does not name them, or a classic message with typed properties, do not."""
    from pipeline.replay import untrusted_message
    click = {'type': 'track', 'event': 'Content Card Clicked', 'userId': 'u', 'messageId': 'm-1',
             'timestamp': '2024-05-01T12:00:00.000Z',
             'properties': {'ad_tracking_enabled': True, 'card_id': 'c'},
             'context': {'device': {'model': 'Pixel', 'type': 'android'},
                         'library': {'name': 'currents-to-segment', 'version': '1'}}}
    assert untrusted_message(click, 'users.messages.contentcard.Click') is None
    custom = dict(click, event='Level Up', context={'library': {}})
    assert untrusted_message(custom, 'users.behaviors.CustomEvent') is None
    assert untrusted_message(dict(custom, event=' '), 'users.behaviors.CustomEvent')
    webhook = dict(click, event='Webhook Sent')   # no device context for webhooks
    assert untrusted_message(webhook, 'users.messages.webhook.Send') == \
        'context or properties this tool never sends'
    classic_typed = {'type': 'track', 'event': 'Canvas Entered', 'userId': 'u',
                     'messageId': 'm-2', 'properties': {'in_control_group': [1]},
                     'context': {'library': {}}}
    assert untrusted_message(classic_typed, 'users.canvas.Entry') is None   # current: typed ok
    assert untrusted_message(dict(classic_typed, event='Canvas Entered!'), 'users.canvas.Entry') \
        == 'not a track message of its event type'
