"""End-to-end runs over azfs:// through Beam's own Azure Blob filesystem, served by Azurite.

No mocks: Azurite (Node.js, installed under .cache/azurite on first use) runs on 127.0.0.1 and
checks Shared Key signatures; credentials come from AZURE_STORAGE_CONNECTION_STRING, as for a
user. Which blobs a run opened is read from Azurite's access log.
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
from tests.azurite import ACCOUNT, DEV_KEY, Azurite
from tests.helpers import balanced, command

pytestmark = pytest.mark.slow

CONTAINER = 'currents'
OUT = 'outputs'
KEY = 'wk_AZURE-tests-canary-77d0'
ERROR_LINE = re.compile(r'^currents-to-segment: error: .+$')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('azcorpus')
    report = generate(root, events=1200, seed=9, hours=3, events_per_file=150)
    return root, report


@pytest.fixture(scope='module')
def azure(corpus):
    root, _ = corpus
    with Azurite() as server:
        server.create_container(CONTAINER)
        server.create_container(OUT)
        server.upload_tree(root / 'currents', CONTAINER, 'export')
        yield server


@pytest.fixture
def azure_env(azure, monkeypatch):
    monkeypatch.setenv('AZURE_STORAGE_CONNECTION_STRING', azure.connection_string())
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    return azure


def az_run(azure, out_prefix, *extra, input_path=f'azfs://{ACCOUNT}/{CONTAINER}/export',
           replay=False):
    argv = (['replay'] if replay else ['--input', input_path]) + [
        '--rejects', f'azfs://{ACCOUNT}/{OUT}/{out_prefix}/rejects',
        '--summary_output', f'azfs://{ACCOUNT}/{OUT}/{out_prefix}/summary.json', *extra]
    out = io.StringIO()
    code = run(argv, out=out)
    try:
        summary = json.loads(azure.read(OUT, f'{out_prefix}/summary.json'))
    except Exception:
        summary = None
    return code, summary, out.getvalue()


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), err
    return lines[0]


def test_full_run_from_azure_delivers_every_eligible_event(azure_env, corpus):
    azure, (_, report) = azure_env, corpus
    names = azure.list(CONTAINER, 'export/')
    assert any('/version=' in n for n in names) and any(
        '/version=' not in n and n.endswith('.avro') for n in names)   # both layouts
    with SegmentReceiver(write_key=KEY) as receiver:
        code, summary, table = az_run(azure, 'full', '--segment_endpoint', receiver.url)
        messages = receiver.messages()
    assert code == 0, table
    assert balanced(summary)
    assert summary['read'] == report.events
    assert summary['sent'] == report.eligible and summary['rejected'] == 0
    assert summary['files_read'] == len(report.files)
    assert {m['messageId'] for m in messages} == report.eligible_ids
    assert len(messages) == report.eligible
    # The per-file record: written on the store by the workers as files complete, then
    # folded into one object per date= hour (no piece left).
    records = azure.list(OUT, 'full/rejects/delivered/')
    assert records and all('/delivered/hours/2024-05-01-' in r and r.endswith('.jsonl')
                           for r in records)
    assert sum(len(azure.read(OUT, r).decode().splitlines())
               for r in records) == len(report.files)


def test_start_end_pruning_opens_no_blob_outside_the_range(azure_env, corpus):
    azure, (root, report) = azure_env, corpus
    hour = '2024-05-01-02'
    inside = {f'export/{Path(f).relative_to(root / "currents").as_posix()}'
              for f in report.files if f'/date={hour}/' in f}
    assert inside and len(inside) < len(report.files)
    mark = azure.log_position()
    code, summary, table = az_run(azure, 'pruned', '--start', hour,
                                  '--dry_run_output', f'azfs://{ACCOUNT}/{OUT}/pruned/bodies')
    assert code == 0, table
    opened = azure.blobs_opened(CONTAINER, since=mark)
    assert set(opened) == inside, sorted(set(opened) ^ inside)[:5]
    assert all(hour_from_path(n).strftime('%Y-%m-%d-%H') == hour for n in opened)
    assert summary['files_read'] == len(inside)
    # Listed by name prefixes from the first hour's day on: other days are never seen.
    assert 'outside_start_end' not in summary['files_skipped_by_reason']
    assert summary['objects_listed'] >= len(inside)
    bodies = [n for n in azure.list(OUT, 'pruned/bodies/') if n.endswith('.json')]
    assert sum(len(json.loads(azure.read(OUT, n))['batch']) for n in bodies) == summary['sent']
    assert balanced(summary) and summary['sent'] > 0


def test_rejects_written_to_azure_are_replayed(azure_env):
    azure = azure_env
    argv = ('--start', '2024-05-01-01', '--end', '2024-05-01-02', '--max_retry_seconds', '1',
            '--segment_timeout', '1')
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('refuse_503')
        code, summary, table = az_run(azure, 'replayed', '--segment_endpoint', receiver.url,
                                      *argv)
        assert code in (0, 4), table   # 4 once delivery rejects set the exit status
        names = [n for n in azure.list(OUT, 'replayed/rejects/')   # not delivered/ records
                 if n.rsplit('/', 1)[-1].startswith('rejects-') and n.endswith('.jsonl')]
        rejects = [json.loads(line) for n in names
                   for line in azure.read(OUT, n).decode().splitlines() if line.strip()]
        assert rejects and {r['reason'] for r in rejects} == {'retries_exhausted'}
        assert len(rejects) == summary['rejected'] > 0
        receiver.set_mode('normal')
        code, replayed, table = az_run(azure, 'replayed', '--segment_endpoint', receiver.url,
                                       replay=True)
        messages = receiver.messages()
        requests = receiver.stats()['requests']
        # The replay recorded what it handled on Azure too: a second one sends nothing.
        again, again_summary, _ = az_run(azure, 'replayed', '--segment_endpoint', receiver.url,
                                         replay=True)
        assert receiver.stats()['requests'] == requests
    assert code == 0, table
    assert {m['messageId'] for m in messages} == {r['message']['messageId'] for r in rejects}
    assert replayed['sent'] == len(rejects) and balanced(replayed)
    assert again == 0 and again_summary['sent'] == 0
    assert again_summary['already_replayed'] == len(rejects)


def test_the_command_plans_from_azure_with_only_its_store_imported(azure_env, corpus):
    """`python -m pipeline` skips the clients of stores it is not given (pipeline/startup.py):
    the Azure one must still be there."""
    proc = command('--input', f'azfs://{ACCOUNT}/{CONTAINER}/export',
                   '--rejects', f'azfs://{ACCOUNT}/{OUT}/cli/rejects', '--plan')
    assert proc.returncode == 0, proc.stderr
    assert f'{len(corpus[1].files)} files' in proc.stdout, proc.stdout


@pytest.mark.parametrize('case', ['missing_container', 'wrong_key', 'other_account',
                                  'empty_prefix', 'no_credentials'])
def test_bad_azure_input_gives_one_line(azure_env, monkeypatch, capsys, case):
    azure = azure_env
    input_path = {'missing_container': f'azfs://{ACCOUNT}/nocontainer/export',
                  'other_account': f'azfs://otheraccount/{CONTAINER}/export',
                  'empty_prefix': f'azfs://{ACCOUNT}/{CONTAINER}/nothing-here'
                  }.get(case, f'azfs://{ACCOUNT}/{CONTAINER}/export')
    wrong = 'V3JvbmdLZXk' + 'x' * 77 + '=='
    if case == 'wrong_key':
        monkeypatch.setenv('AZURE_STORAGE_CONNECTION_STRING', azure.connection_string(wrong))
    if case == 'no_credentials':
        monkeypatch.delenv('AZURE_STORAGE_CONNECTION_STRING')
    capsys.readouterr()
    code, summary, _ = az_run(azure, f'bad-{case}', '--dry_run_output', '/nonexistent/b',
                              input_path=input_path)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and summary is None
    expected = {
        'missing_container': 'Azure container nocontainer does not exist',
        'wrong_key': 'Azure refused access with the credentials from the environment '
                     '(AZURE_STORAGE_CONNECTION_STRING)',
        'other_account': 'are for storage account devstoreaccount1, not otheraccount',
        'empty_prefix': 'no input files match',
        'no_credentials': 'no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING',
    }[case]
    assert expected in line
    assert DEV_KEY not in line and wrong not in line


def test_connection_string_from_secret_manager(azure, monkeypatch):
    """No connection string in the environment: the launcher (and workers) read it from a
    (fake) Secret Manager by name; a run then lists, reads and writes through it."""
    from transforms import credentials
    name = 'projects/c2s-project/secrets/currents-azure/versions/4'
    requests = []

    class FakeClient:
        def access_secret_version(self, request=None, **kwargs):
            requests.append(request['name'])
            data = azure.connection_string().encode()
            return type('R', (), {'payload': type('P', (), {'data': data})()})()

    monkeypatch.setattr('transforms.secrets.secret_manager_client', FakeClient)
    monkeypatch.setenv('AZURE_STORAGE_CONNECTION_STRING', 'placeholder')   # restored afterwards
    monkeypatch.delenv('AZURE_STORAGE_CONNECTION_STRING')
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    credentials.forget_installed()
    try:
        code, summary, table = az_run(
            azure, 'from-secret', '--azure_connection_string_secret', name,
            '--start', '2024-05-01-02', '--dry_run_output', f'azfs://{ACCOUNT}/{OUT}/fs/b')
    finally:
        credentials.forget_installed()
    assert code == 0, table
    assert summary['files_read'] > 0 and balanced(summary)
    assert requests == [name]
