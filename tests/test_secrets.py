"""The write key never leaks (CONTRACT §5, §6): not in stdout/stderr, logs (DEBUG included),
summaries, rejects, dry-run bodies, exception text, pipeline options or the pipeline graph.

A recognisable canary key is used; every output is scanned for it and for its Basic-auth base64
forms (with and without the trailing colon, and the part of the base64 common to both).
"""
import base64
import io
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.builder import build_pipeline
from devtools.receiver import SegmentReceiver
from pipeline.local_runner import local_runner_options
from pipeline.main import run
from pipeline.options import settings_from
from tests.helpers import avro_bytes, record, write_file
from transforms.model import SegmentMessage
from pipeline.listing import input_pattern, list_currents_files
from transforms.segment_client import SegmentClient, SegmentConfigurationError, basic_auth

ROOT = Path(__file__).resolve().parent.parent
KEY = 'wk_LEAKCANARY-7f3a9c2e5b-do-not-log'
SEND = 'users.messages.email.Send'


def needles(key=KEY):
    colon = base64.b64encode(f'{key}:'.encode()).decode()
    bare = base64.b64encode(key.encode()).decode()
    common = colon[:len(key) // 3 * 4]           # base64 of the key's first whole 3-byte groups
    assert bare.startswith(common) and len(common) >= 12
    return [key, colon, bare, common, basic_auth(key),
            base64.urlsafe_b64encode(key.encode()).decode()[:len(common)]]


def assert_clean(where, text):
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    for needle in needles():
        assert needle not in text, f'write key (as {needle[:6]}...) found in {where}'


def scan_tree(folder):
    scanned = 0
    for path in Path(folder).rglob('*'):
        if path.is_file():
            assert_clean(path, path.read_bytes())
            scanned += 1
    return scanned


@pytest.fixture(scope='module')
def secret_input(tmp_path_factory):
    """Events to send, one refused by Segment (400, its body lands in a reject), and a
    truncated file (an unreadable_file reject with the decoder's error text)."""
    root = tmp_path_factory.mktemp('in')
    write_file(root, SEND, [record(i) for i in range(25)], n=1)
    write_file(root, SEND, [], n=2, raw=avro_bytes(SEND, [record(100 + i) for i in range(9)])[:700])
    return root


def _closed_port_url():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/v1/batch'   # nothing listens there any more


def _argv(out, root, *extra):
    return ['--input', str(root), '--rejects', str(out / 'rejects'),
            '--summary_output', str(out / 'summary.json'), *extra]


def test_no_output_of_any_run_contains_the_key(tmp_path, secret_input):
    """Real subprocess runs (`python -m pipeline`), all at once: HTTP delivery with a 400, a dry
    run, a 401, a closed port (connection errors until the budget is spent), a non-loopback
    http:// endpoint, and the key passed as a flag."""
    env = {k: v for k, v in os.environ.items() if k != 'SEGMENT_WRITE_KEY'}
    env['SEGMENT_WRITE_KEY'] = KEY
    with SegmentReceiver(write_key=KEY, poison_message_ids=('evt-5',)) as ok, \
            SegmentReceiver(write_key=KEY) as refusing:
        refusing.set_mode('unauthorized_401')
        runs = {
            'http': (4, ['--segment_endpoint', ok.url]),   # evt-5 refused: replay it
            'dry_run': (0, ['--dry_run_output', str(tmp_path / 'dry_run' / 'bodies')]),
            'unauthorized': (3, ['--segment_endpoint', refusing.url]),
            'closed_port': (4, ['--segment_endpoint', _closed_port_url(),
                                '--max_retry_seconds', '1', '--segment_timeout', '1']),
            'non_loopback_http': (2, ['--segment_endpoint', 'http://example.com/v1/batch']),
            'key_as_flag': (2, [f'--segment_write_key={KEY}']),
        }
        procs = {}
        for name, (_, extra) in runs.items():
            out = tmp_path / name
            out.mkdir(exist_ok=True)
            procs[name] = subprocess.Popen(
                [sys.executable, '-m', 'pipeline', *_argv(out, secret_input, *extra)],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        results = {name: (p.wait(300), *p.communicate()) for name, p in procs.items()}
        assert ok.stats()['accepted'] == 24 and refusing.stats()['by_status'] == {'401': 1}
    for name, (code, stdout, stderr) in results.items():
        assert code == runs[name][0], (name, stderr.decode())
        assert_clean(f'{name} stdout', stdout)
        assert_clean(f'{name} stderr', stderr)
    # What each run wrote, and that it wrote what we meant to scan.
    scanned = scan_tree(tmp_path)
    assert scanned >= 9   # (a dry run writes no resume manifest)
    assert 'HTTP 401' in results['unauthorized'][2].decode()
    assert b'only allowed for loopback' in results['non_loopback_http'][2]
    assert b'never a command-line option' in results['key_as_flag'][2]
    http_rejects = (tmp_path / 'http' / 'rejects').glob('rejects-*.jsonl')
    reasons = sorted(json.loads(line)['reason'] for f in http_rejects
                     for line in f.read_text().splitlines())
    assert reasons == ['segment_rejected', 'unreadable_file']
    closed = json.loads((tmp_path / 'closed_port' / 'summary.json').read_text())
    assert closed['rejected_by_reason'] == {'retries_exhausted': 25, 'unreadable_file': 1}
    assert list((tmp_path / 'dry_run' / 'bodies').glob('batch-*.json'))


def test_debug_logs_and_exception_text_never_contain_the_key(tmp_path, secret_input,
                                                             monkeypatch, caplog, capsys):
    """In-process runs with every logger at DEBUG (Beam, requests, urllib3, ours)."""
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    caplog.set_level(logging.DEBUG)
    with SegmentReceiver(write_key=KEY, poison_message_ids=('evt-7',)) as receiver:
        assert run(_argv(tmp_path / 'ok', secret_input, '--segment_endpoint', receiver.url),
                   out=io.StringIO()) == 4   # evt-7 refused: replay it
        receiver.set_mode('unauthorized_401')
        assert run(_argv(tmp_path / 'refused', secret_input, '--segment_endpoint',
                         receiver.url), out=io.StringIO()) == 3
        assert run(_argv(tmp_path / 'closed', secret_input, '--segment_endpoint',
                         _closed_port_url(), '--max_retry_seconds', '1'),
                   out=io.StringIO()) == 4   # all retries_exhausted: replay them
        # The exception a 401 raises, as text, repr and full traceback.
        client = SegmentClient(requests.Session(), receiver.url, KEY)
        message = SegmentMessage(SEND, 'evt-1', b'{"type":"track","event":"Email Sent",'
                                                b'"userId":"u","messageId":"evt-1"}')
        with pytest.raises(SegmentConfigurationError) as info:
            client.deliver([message])
    exc = info.value
    assert_clean('401 exception', f'{exc}\n{exc!r}\n' + ''.join(traceback.format_exception(exc)))
    assert any(r.levelno == logging.DEBUG for r in caplog.records)   # DEBUG really captured
    assert any(r.name.startswith('urllib3') for r in caplog.records)
    assert_clean('log records', caplog.text)
    for r in caplog.records:
        assert_clean(f'log record {r.name}', f'{r.getMessage()} {r.exc_text or ""} {r.args!r}')
    captured = capsys.readouterr()
    assert_clean('stdout', captured.out)
    assert_clean('stderr', captured.err)
    assert scan_tree(tmp_path) >= 5


def test_key_is_not_in_pipeline_options_nor_the_pipeline_graph(tmp_path, secret_input,
                                                               monkeypatch):
    """Options and the graph are what Dataflow stores and shows in its console."""
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    argv = _argv(tmp_path, secret_input, '--segment_endpoint', 'https://api.segment.io/v1/batch',
                 '--max_events_per_second', '500')
    options = PipelineOptions(argv)
    assert_clean('options', json.dumps(options.get_all_options(), default=str))
    settings = settings_from(options)
    local_runner_options(options)
    listing = list_currents_files(input_pattern(settings.input), settings.selector)
    p = build_pipeline(settings, [(path, t) for path, t, _ in listing.files], options)
    assert_clean('options after build', json.dumps(options.get_all_options(), default=str))
    assert_clean('pipeline graph', p.to_runner_api().SerializeToString())
    assert_clean('settings', pickle.dumps(settings))
    assert_clean('settings repr', repr(settings))


def test_plain_http_to_a_non_loopback_host_is_refused(tmp_path, secret_input, monkeypatch,
                                                      capsys):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    for url in ('http://api.segment.io/v1/batch', 'http://10.0.0.1:8080/v1/batch',
                'http://[2001:db8::1]/v1/batch', 'http://127.0.0.1.example.com/v1/batch'):
        code = run(_argv(tmp_path, secret_input, '--segment_endpoint', url), out=io.StringIO())
        err = capsys.readouterr().err
        assert code == 2, url
        assert 'only allowed for loopback' in err
        assert_clean('stderr', err)
    assert not (tmp_path / 'summary.json').exists()


def test_the_scan_would_catch_each_form_of_the_key():
    """Negative control: the scanner is not vacuous."""
    forms = [KEY, basic_auth(KEY), base64.b64encode(f'{KEY}:'.encode()).decode(),
             base64.b64encode(KEY.encode()).decode(), f'xx{KEY[:-1]}', json.dumps({'k': KEY})]
    for text in forms[:4] + forms[5:]:
        with pytest.raises(AssertionError):
            assert_clean('control', text)
    assert_clean('control', forms[4])   # a different string: no false alarm
