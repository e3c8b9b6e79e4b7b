"""The command line as a user meets it: one-line errors, exit codes, no key in any output."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import record, write_file

ROOT = Path(__file__).resolve().parent.parent
KEY = 'wk_CLI-secret-4242-never-printed'


def cli(*args, env_key=KEY):
    env = {k: v for k, v in os.environ.items() if k != 'SEGMENT_WRITE_KEY'}
    if env_key is not None:
        env['SEGMENT_WRITE_KEY'] = env_key
    return subprocess.run([sys.executable, '-m', 'pipeline', *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def small_input(tmp_path_factory):
    root = tmp_path_factory.mktemp('in')
    write_file(root, 'users.messages.email.Send', [record(i) for i in range(3)])
    return root


@pytest.mark.parametrize('args,fragment', [
    ([], '--input is required'),
    (['--input', '{inp}'], '--rejects is required'),
    (['--input', '/no/such/place', '--rejects', '{tmp}/r'], 'no input files match'),
    (['--input', '{inp}', '--rejects', '{tmp}/r', '--start', '2024/01/01'], '--start must be'),
    (['--input', '{inp}', '--rejects', '{tmp}/r', '--start', '2024-02-01', '--end', '2024-01-01'],
     '--start must be before --end'),
    (['--input', '{inp}', '--rejects', '{tmp}/r', '--event_types', 'Email Exploded'],
     'unknown event'),
    (['--input', '{inp}', '--rejects', '{tmp}/r', '--segment_endpoint', 'http://example.com/v1'],
     'only allowed for loopback'),
    (['--input', '{inp}', '--rejects', '{tmp}/r', '--integrations', '[1]'], 'JSON object'),
    (['--input', '{inp}', '--rejects', '{tmp}/r', f'--segment_write_key={KEY}'],
     'never a command-line option'),
    (['--input', '{inp}', '--rejects', '{tmp}/r', '--segment_write_key_secret', 'mykey'],
     'projects/P/secrets/S/versions/V'),
])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, small_input, args, fragment):
    args = [a.format(inp=small_input, tmp=tmp_path) for a in args]
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith('currents-to-segment')
    assert 'Traceback' not in result.stderr and KEY not in result.stderr + result.stdout


def test_missing_write_key_is_one_line(tmp_path, small_input):
    result = cli('--input', str(small_input), '--rejects', str(tmp_path / 'r'), env_key=None)
    assert result.returncode == 2
    assert result.stderr.strip() == ('currents-to-segment: error: no Segment write key in the '
                                     'environment variable SEGMENT_WRITE_KEY')


def test_dry_run_cli_prints_table_and_never_the_key(tmp_path, small_input):
    result = cli('--input', str(small_input), '--rejects', str(tmp_path / 'r'),
                 '--dry_run_output', str(tmp_path / 'b'), '--summary_output',
                 str(tmp_path / 's.json'))
    assert result.returncode == 0, result.stderr
    assert 'Email Sent' in result.stdout and 'balance: read = dropped + sent + rejected OK' in \
        result.stdout
    assert json.loads((tmp_path / 's.json').read_text())['sent'] == 3
    everything = result.stdout + result.stderr + ''.join(
        p.read_text() for p in tmp_path.rglob('*') if p.is_file())
    assert KEY not in everything


def test_console_script_is_declared():
    """The installed command starts as `python -m pipeline` does: through pipeline/__main__.py,
    which skips the store clients the run does not name before Beam is imported."""
    text = (ROOT / 'setup.py').read_text()
    assert "'currents-to-segment=pipeline.__main__:main'" in text
    import pipeline.__main__ as entry
    assert callable(entry.main)


def test_help_lists_the_options():
    result = cli('--help')
    assert result.returncode == 0
    for flag in ('--input', '--rejects', '--dry_run_output', '--max_events_per_second',
                 '--resume', '--plan', 'replay'):
        assert flag in result.stdout
