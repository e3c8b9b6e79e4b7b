"""The operator surface end to end (issue: replay that can't lose or mislead, errors before
sending): each case runs the command in a subprocess against the local receiver and checks the
exit status, the one line on stderr, what the receiver got and what the summary says.
The pure parts are tested in test_operator_surface_unit.py."""
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pytest

from devtools.receiver import SegmentReceiver
from devtools.sample import generate
from pipeline.resume import input_identity
from tests.helpers import avro_bytes, command, read_rejects, record, write_file
from transforms.profiles import currents_types

ROOT = Path(__file__).resolve().parent.parent
KEY = 'wk_operator-surface-key-4242'
PROG = 'currents-to-segment'
SEND = 'users.messages.email.Send'


def _env(**extra):
    env = dict(os.environ, SEGMENT_WRITE_KEY=KEY)
    env.update(extra)
    return env


def cli(*args, timeout=300):
    return command(*args, '--progress_seconds', '0', timeout=timeout, env=_env()) \
        if args[:1] != ('replay',) else command(*args, timeout=timeout, env=_env())


def only_line(stderr: str) -> str:
    """stderr holds exactly one line (no traceback): returns it."""
    lines = stderr.splitlines()
    assert len(lines) == 1 and 'Traceback' not in stderr, stderr
    return lines[0]


def summary_of(path):
    return json.loads(Path(path).read_text())


def ids(receiver):
    return {m['messageId'] for m in receiver.messages()}


@pytest.fixture(scope='module')
def classic_input(tmp_path_factory):
    """A generated classic tree (distinct ids, ~10% without external_user_id)."""
    root = tmp_path_factory.mktemp('classic')
    return root, generate(root, events=300, seed=11, hours=2, other_type_files=0)


@pytest.fixture(scope='module')
def rejected_run(tmp_path_factory, classic_input):
    """A run whose every eligible event was rejected retries_exhausted (Segment down)."""
    root, report = classic_input
    out = tmp_path_factory.mktemp('rejected')
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('refuse_503')
        result = cli('--input', root, '--rejects', out / 'r', '--segment_endpoint', receiver.url,
                     '--max_retry_seconds', '1', '--summary_output', out / 's.json')
    assert result.returncode == 4, result.stderr
    assert summary_of(out / 's.json')['rejected_by_reason'] == {
        'retries_exhausted': report.eligible}
    return out / 'r', report


# ---------------------------------------------------------------- 1: replay's own option set
def test_replay_refuses_the_options_of_a_run_and_sends_nothing(tmp_path, rejected_run):
    rejects, _ = rejected_run
    with SegmentReceiver(write_key=KEY) as receiver:
        for option in (['--plan'], ['--start', '2030-01-01'], ['--event_types', 'Email Sent'],
                       ['--resume'], ['--follow'], ['--since_last_run'], ['--wave_hours=1']):
            result = cli('replay', '--rejects', rejects, '--segment_endpoint', receiver.url,
                         '--summary_output', tmp_path / 's.json', *option)
            flag = option[0].split('=')[0]
            assert result.returncode == 2, (option, result.stderr)
            assert only_line(result.stderr) == (
                f'{PROG}: error: replay does not take {flag} (an option of a run); see '
                f'{PROG} replay --help')
        result = cli('replay', '--rejects', rejects, '--segment_endpoint', receiver.url,
                     '--reason', 'retries_exhausted')
        assert result.returncode == 2
        assert only_line(result.stderr) == (f'{PROG}: error: unknown option --reason; did you '
                                            f'mean --reasons?')
        assert receiver.messages() == [] and receiver.stats()['requests'] == 0
    assert not (tmp_path / 's.json').exists()
    assert not (rejects / 'replayed').exists()
    helped = cli('replay', '--help')
    assert helped.returncode == 0
    for flag in ('--reasons', '--rejects', '--segment_endpoint', '--message_id_prefix',
                 '--max_events_per_second', '--summary_output', '--input'):
        assert f'  {flag}' in helped.stdout, flag
    for flag in ('--plan', '--start', '--end', '--event_types', '--resume', '--follow',
                 '--since_last_run', '--wave_hours', '--wait', '--skip_files'):
        assert f'  {flag}' not in helped.stdout, flag


# ---------------------------------------------------------------- 2: every `current` type
def _current_tree(root):
    """All 80 `current` types with Braze's writer schemas, every event with an external id."""
    report = generate(root, events=160, seed=21, hours=1, mapping='current',
                      no_external_fraction=0.0, other_type_files=0, lookalike=False)
    assert {t for t, v in report.by_type.items() if v['eligible']} == set(report.by_type)
    assert len(report.by_type) == 80
    return report


def _types_by_id(report):
    found = {}
    for path in report.files:
        event_type = path.split('event_type=', 1)[1].split('/', 1)[0]
        with open(path, 'rb') as f:
            for rec in fastavro.reader(f):
                found[rec['id']] = event_type
    return found


def test_replay_sends_every_current_type_a_run_rejected(tmp_path):
    report = _current_tree(tmp_path / 'in')
    by_id = _types_by_id(report)
    # Segment down: every event is rejected with its mapped message kept.
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('refuse_503')
        run = cli('--input', tmp_path / 'in', '--rejects', tmp_path / 'r', '--mapping', 'current',
                  '--segment_endpoint', receiver.url, '--max_retry_seconds', '1',
                  '--summary_output', tmp_path / 'run.json')
    assert run.returncode == 4, run.stderr
    first = summary_of(tmp_path / 'run.json')
    assert first['rejected_by_reason'] == {'retries_exhausted': report.eligible}
    assert {r['event_type'] for r in read_rejects(tmp_path / 'r')} == set(report.by_type)
    with SegmentReceiver(write_key=KEY) as receiver:
        replay = cli('replay', '--rejects', tmp_path / 'r', '--segment_endpoint', receiver.url,
                     '--summary_output', tmp_path / 'replay.json')
        got = ids(receiver)
    assert replay.returncode == 0 and replay.stderr == '', replay.stderr
    assert got == report.eligible_ids and {by_id[i] for i in got} == set(report.by_type)
    replayed = summary_of(tmp_path / 'replay.json')
    assert replayed['sent'] == replayed['read'] == report.eligible
    assert replayed['not_replayed'] == {} and replayed['rejected'] == 0


def test_replay_maps_kept_records_of_every_current_type_and_exits_4_on_what_it_leaves(
        tmp_path):
    report = _current_tree(tmp_path / 'in')
    for path in report.files:   # ids of 40 characters: with a 64-character prefix, too long
        with open(path, 'rb') as f:
            reader = fastavro.reader(f)
            schema, records = reader.writer_schema, list(reader)
        with open(path, 'wb') as f:
            fastavro.writer(f, schema, [dict(r, id=r['id'] + '-v40') for r in records])
    long_ids = {i + '-v40' for i in report.eligible_ids}
    prefix = 'p' * 64
    with SegmentReceiver(write_key=KEY) as receiver:
        run = cli('--input', tmp_path / 'in', '--rejects', tmp_path / 'r', '--mapping', 'current',
                  '--message_id_prefix', prefix, '--segment_endpoint', receiver.url,
                  '--summary_output', tmp_path / 'run.json')
        assert receiver.messages() == []
    assert run.returncode == 0, run.stderr   # message_id_too_long is no delivery reason
    assert summary_of(tmp_path / 'run.json')['rejected_by_reason'] == {
        'message_id_too_long': report.eligible}
    rejects = read_rejects(tmp_path / 'r')
    assert {r['mapping'] for r in rejects} == {'current'}
    # Older rejects record no profile: those of types classic does not map are not replayed.
    old = tmp_path / 'old'
    old.mkdir()
    classic = set(currents_types('classic'))
    outside = [dict((k, v) for k, v in r.items() if k not in ('mapping', 'include_anonymous'))
               for r in rejects if r['event_type'] not in classic]
    (old / 'rejects-old-w0-00000-of-00001.jsonl').write_text(
        ''.join(json.dumps(r) + '\n' for r in outside))
    with SegmentReceiver(write_key=KEY) as receiver:
        left = cli('replay', '--rejects', old, '--segment_endpoint', receiver.url,
                   '--summary_output', tmp_path / 'left.json')
        assert receiver.messages() == []
    assert left.returncode == 4
    n = len(outside)
    assert only_line(left.stderr) == (
        f'{PROG}: {n} rejects were not replayed (record of a type the classic profile does not '
        f'map (give --mapping) {n}): they stay where they are; see docs/resume.md, '
        f'"Replay rejects"')
    assert summary_of(tmp_path / 'left.json')['not_replayed'] == {
        'record of a type the classic profile does not map (give --mapping)': n}
    with SegmentReceiver(write_key=KEY) as receiver:
        fixed = cli('replay', '--rejects', old, '--mapping', 'current', '--segment_endpoint',
                    receiver.url)
        assert fixed.returncode == 0, fixed.stderr
        assert len(ids(receiver)) == n
    # The run's own rejects record their profile: all 80 types replay, without the prefix.
    with SegmentReceiver(write_key=KEY) as receiver:
        replay = cli('replay', '--rejects', tmp_path / 'r', '--segment_endpoint', receiver.url,
                     '--summary_output', tmp_path / 'replay.json')
        messages = receiver.messages()
    assert replay.returncode == 0 and replay.stderr == '', replay.stderr
    assert {m['messageId'] for m in messages} == long_ids
    by_id = _types_by_id(report)
    assert {by_id[m['messageId']] for m in messages} == set(report.by_type)
    assert summary_of(tmp_path / 'replay.json')['sent'] == report.eligible


# ---------------------------------------------------------------- 3: --summary_output
def test_summary_output_that_cannot_be_written_is_refused_before_anything_is_sent(
        tmp_path, classic_input):
    root, _ = classic_input
    (tmp_path / 'a-folder').mkdir()
    (tmp_path / 'a-file').write_text('x')
    cases = [(tmp_path / 'a-folder', f'--summary_output {tmp_path / "a-folder"} is a folder: '
                                     f'give a file name'),
             (tmp_path / 'a-file' / 'sub' / 's.json',
              f'cannot write --summary_output {tmp_path / "a-file" / "sub" / "s.json"}: '
              f'Not a directory')]
    if os.geteuid() != 0:   # root writes into read-only folders
        (tmp_path / 'read-only').mkdir(mode=0o555)
        cases.append((tmp_path / 'read-only' / 's.json',
                      f'cannot write --summary_output {tmp_path / "read-only" / "s.json"}: '
                      f'Permission denied'))
    with SegmentReceiver(write_key=KEY) as receiver:
        for path, message in cases:
            for argv in (('--input', root, '--rejects', tmp_path / 'r'),
                         ('replay', '--rejects', tmp_path / 'r')):
                result = cli(*argv, '--segment_endpoint', receiver.url,
                             '--summary_output', path)
                assert result.returncode == 2, result.stderr
                assert only_line(result.stderr) == f'{PROG}: error: {message}'
        assert receiver.stats()['requests'] == 0


def test_summary_output_failing_at_the_end_is_one_line_naming_the_log(tmp_path, classic_input):
    """/dev/full passes the check (it exists and is writable) and fails the write (ENOSPC)."""
    root, report = classic_input
    with SegmentReceiver(write_key=KEY) as receiver:
        result = cli('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                     receiver.url, '--summary_output', '/dev/full')
        assert ids(receiver) == report.eligible_ids   # everything was sent first
    assert stat.S_ISCHR(os.stat('/dev/full').st_mode)   # written as named, never replaced
    assert result.returncode == 1
    line = only_line(result.stderr)
    assert line.startswith(f'{PROG}: error: cannot write --summary_output /dev/full: OSError: '
                           f'[Errno 28] No space left on device (details: ')
    log = line.rsplit('(details: ', 1)[1].rstrip(')')
    try:
        assert 'writing --summary_output failed' in Path(log).read_text()
    finally:
        os.unlink(log)


# ---------------------------------------------------------------- 6: the exit-4 hint runs
def test_exit_4_hint_runs_as_printed_and_delivers(tmp_path, classic_input):
    root, report = classic_input
    prefix = "bf '1 "
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('refuse_503')
        run = cli('--input', root, '--rejects', tmp_path / 'the rejects', '--segment_endpoint',
                  receiver.url, '--message_id_prefix', prefix, '--mapping', 'current',
                  '--segment_gzip', '--max_events_per_second', '500', '--integrations',
                  '{"All": false, "Warehouses": true}', '--max_retry_seconds', '1',
                  '--summary_output', tmp_path / 's.json')
        assert run.returncode == 4, run.stderr
        line = only_line(run.stderr)
        sent = summary_of(tmp_path / 's.json')
        assert sent['rejected_by_reason'] == {'retries_exhausted': sent['rejected']}
        hint = line.split('re-send them with: ', 1)[1]
        assert KEY not in line
        assert shlex.split(hint) == [
            PROG, 'replay', '--rejects', str(tmp_path / 'the rejects'), '--reasons',
            'retries_exhausted', '--segment_endpoint', receiver.url, '--message_id_prefix',
            prefix, '--mapping', 'current', '--integrations',
            '{"All":false,"Warehouses":true}', '--max_events_per_second', '500',
            '--segment_gzip']
        receiver.set_mode('normal')
        path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get('PATH', '')))
        replay = subprocess.run(['bash', '-c', hint], cwd=tmp_path, env=_env(PATH=path),
                                capture_output=True, text=True, timeout=300)
        messages = receiver.messages()
    assert replay.returncode == 0, replay.stderr
    assert len(messages) == sent['rejected'] > 0
    assert all(m['messageId'].startswith(prefix) for m in messages)
    assert {m['messageId'][len(prefix):] for m in messages} <= report.eligible_ids
    assert all(m['integrations'] == {'All': False, 'Warehouses': True} for m in messages)


# ---------------------------------------------------------------- 7: --message_id_prefix
def test_message_id_prefix_is_refused_one_character_past_the_limit(tmp_path, samples_dir):
    with SegmentReceiver(write_key=KEY) as receiver:
        for argv in (('--input', samples_dir / 'avro', '--rejects', tmp_path / 'r'),
                     ('replay', '--rejects', tmp_path / 'r')):
            result = cli(*argv, '--segment_endpoint', receiver.url, '--message_id_prefix',
                         'p' * 65, '--summary_output', tmp_path / 'refused.json')
            assert result.returncode == 2
            assert only_line(result.stderr) == (
                f"{PROG}: error: --message_id_prefix has 65 characters; with a 36-character "
                f"Currents id (a UUID) the messageId would pass Segment's 100: use at most 64")
        assert receiver.stats()['requests'] == 0
        assert not (tmp_path / 'refused.json').exists()
        # 64 characters: Braze's 36-character ids make messageIds of exactly 100.
        result = cli('--input', samples_dir / 'avro', '--rejects', tmp_path / 'r',
                     '--segment_endpoint', receiver.url, '--message_id_prefix', 'p' * 64,
                     '--summary_output', tmp_path / 's.json')
        got, duplicates = ids(receiver), receiver.stats()['duplicates']
    assert result.returncode == 0 and result.stderr == '', result.stderr
    assert {len(i) for i in got} == {100}
    summary = summary_of(tmp_path / 's.json')
    assert summary['sent'] == 31 and summary['rejected'] == 0
    # Braze's 31 sample files share one id: sent 31, one message at the receiver.
    assert len(got) == 1 and duplicates == 30
    # The text summary says why files were skipped.
    assert 'files: 31 read, 63 skipped (other_event_type 63), 0 unreadable' in result.stdout


# ---------------------------------------------------------------- 8: replay bookkeeping
def test_replay_rejects_are_replayable_as_they_are_and_a_second_replay_sends_nothing(
        tmp_path):
    root = tmp_path / 'in'
    write_file(root, SEND, [record(i) for i in range(5)], n=1)
    broken = write_file(root, SEND, [], n=2, raw=b'Obj\x01 truncated')
    with SegmentReceiver(write_key=KEY) as receiver:
        run = cli('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                  receiver.url, '--summary_output', tmp_path / 'run.json')
        assert ids(receiver) == {f'evt-{i}' for i in range(5)}
    assert run.returncode == 0, run.stderr
    assert summary_of(tmp_path / 'run.json')['rejected_by_reason'] == {'unreadable_file': 1}
    # The file is still broken: rejected again, the new reject names the same input.
    with SegmentReceiver(write_key=KEY) as receiver:
        first = cli('replay', '--rejects', tmp_path / 'r', '--segment_endpoint', receiver.url,
                    '--summary_output', tmp_path / 'first.json')
        assert receiver.messages() == []
    assert first.returncode == 0 and first.stderr == '', first.stderr
    again = list((tmp_path / 'r').glob('replay-*/rejects-*.jsonl'))
    assert len(again) == 1 and f'rejected again: {again[0].parent}/rejects-*.jsonl' in \
        first.stdout
    [row] = read_rejects(again[0].parent)
    assert row['input'] == input_identity(str(root)) and row['source'] == broken
    assert row['mapping'] == 'classic'
    assert summary_of(tmp_path / 'first.json')['rejected_by_reason'] == {'unreadable_file': 1}
    # Fixed: the replay's own rejects replay as they are (no --input), and nothing is
    # rejected again (so no such line).
    write_file(root, SEND, [], n=2, raw=avro_bytes(SEND, [record(50), record(51)]))
    with SegmentReceiver(write_key=KEY) as receiver:
        second = cli('replay', '--rejects', again[0].parent, '--segment_endpoint', receiver.url,
                     '--summary_output', tmp_path / 'second.json')
        assert ids(receiver) == {'evt-50', 'evt-51'}
    assert second.returncode == 0 and second.stderr == '', second.stderr
    assert 'rejected again' not in second.stdout
    done = summary_of(tmp_path / 'second.json')
    assert done['sent'] == 2 and done['already_replayed'] == 0
    # Both were recorded: replaying either again sends nothing, and says so.
    with SegmentReceiver(write_key=KEY) as receiver:
        for folder in (again[0].parent, tmp_path / 'r'):
            third = cli('replay', '--rejects', folder, '--segment_endpoint', receiver.url,
                        '--summary_output', tmp_path / 'third.json')
            assert third.returncode == 0 and third.stderr == '', third.stderr
            assert 'nothing to replay: all 1 rejects selected were replayed already' in \
                third.stdout
            assert summary_of(tmp_path / 'third.json')['already_replayed'] == 1
        assert receiver.stats()['requests'] == 0


def test_replay_of_a_clean_run_has_nothing_to_replay(tmp_path, classic_input):
    root, report = classic_input
    with SegmentReceiver(write_key=KEY) as receiver:
        run = cli('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                  receiver.url)
        assert run.returncode == 0, run.stderr
        replay = cli('replay', '--rejects', tmp_path / 'r', '--segment_endpoint', receiver.url,
                     '--summary_output', tmp_path / 's.json')
        assert len(receiver.messages()) == report.eligible
    assert replay.returncode == 0 and replay.stderr == '', replay.stderr
    assert replay.stdout == (f'nothing to replay: no rejects files match '
                             f'{tmp_path / "r" / "rejects-*.jsonl"}\n')
    assert summary_of(tmp_path / 's.json')['read'] == 0


# ---------------------------------------------------------------- 11: smaller things
def test_rejects_naming_a_file_and_a_misspelt_event_type_are_one_line(tmp_path, classic_input):
    root, _ = classic_input
    (tmp_path / 'rejects.txt').write_text('')
    with SegmentReceiver(write_key=KEY) as receiver:
        result = cli('--input', root, '--rejects', tmp_path / 'rejects.txt',
                     '--segment_endpoint', receiver.url)
        assert result.returncode == 2
        assert only_line(result.stderr) == (
            f'{PROG}: error: --rejects {tmp_path / "rejects.txt"} is a file: give a folder (the '
            f'run writes rejects-*.jsonl and its records in it)')
        result = cli('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                     receiver.url, '--event_types', 'Email Opend')
        assert result.returncode == 2
        assert only_line(result.stderr) == (
            f"{PROG}: error: --event_types: unknown event 'Email Opend' for --mapping classic "
            f"(use a Segment event name or Currents type from docs/mapping.md); did you mean "
            f"'Email Opened'?")
        assert receiver.stats()['requests'] == 0


def test_help_shows_the_groups_and_the_defaults():
    result = cli('--help')
    assert result.returncode == 0
    text = result.stdout
    positions = [text.index(f'\n{group}:\n') for group in
                 ('input', 'Segment', 'delivery', 'resume and incremental', 'Dataflow', 'output')]
    assert positions == sorted(positions)
    assert '--mapping {classic,current}' in text
    for default in ('Seconds per HTTP request (default: 30)', '(default: 600)',
                    'Concurrent requests per sending worker (default: 4)'):
        assert default in ' '.join(text.split())


def test_receiver_starts_from_any_folder(tmp_path):
    port_file = tmp_path / 'port'
    proc = subprocess.Popen([sys.executable, '-m', 'devtools.receiver', '--port', '0',
                             '--port-file', str(port_file)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert port_file.read_text().strip().isdigit()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.startswith('listening on http://127.0.0.1:')


def test_run_local_current_on_a_clone_without_shared(tmp_path):
    """A clone on its own: run_local.sh --mapping current makes its sample from the repository."""
    clone = tmp_path / 'clone'
    listed = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split('\n')
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    env = {k: v for k, v in _env(LOCAL_OUT=str(tmp_path / 'out'), SAMPLE_EVENTS='400',
                                 CURRENTS_VENV=str(Path(sys.executable).parent.parent)).items()
           if k != 'CURRENTS_SHARED'}
    result = subprocess.run(['bash', str(clone / 'run_local.sh'), '--mapping', 'current',
                             '--progress_seconds', '0'], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert 'look-alike schemas made from the repository' in result.stderr
    assert 'balance: read = dropped + sent + rejected OK' in result.stdout
    sent = int(result.stdout.split('\ntotal', 1)[1].split()[2])
    assert f'receiver: {sent} unique messages accepted' in result.stdout and sent > 300
    rows = result.stdout.split('-\n', 1)[1].split('\n---', 1)[0].splitlines()
    assert len(rows) >= 70   # (types sharing a Segment name share a row)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='process groups, /proc')
def test_ctrl_c_stops_cold_worker_processes_cleanly(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group: fresh (cold) worker processes
    ignore it as warm ones do, so the launcher stops the run and exits 130."""
    root = tmp_path / 'in'
    report = generate(root, events=20000, seed=3)
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'pipeline', '--input', str(root), '--rejects',
             str(tmp_path / 'r'), '--segment_endpoint', receiver.url, '--max_events_per_second',
             '1500', '--direct_num_workers', '2', '--direct_running_mode', 'multi_processing',
             '--fresh_worker_processes', '--progress_seconds', '0'],
            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while receiver.stats()['accepted'] < 1500 and time.monotonic() < deadline:
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        sent = len(receiver.messages())
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f'{PROG}: stopped by SIGINT: ') and 'Traceback' not in err
    assert 0 < sent < report.eligible
    assert 'balance: read = dropped + sent + rejected + not sent (stopped) OK' in out


# ------------------------------------------------ 4: a stop's counts, as --resume --plan sees them
def test_a_stop_in_wave_4_of_8_counts_every_file_not_read(tmp_path):
    """--wave_hours 6 over 48 hours: SIGINT during wave 4. The stop line, the text summary and
    the JSON agree on the files not read, and --resume --plan lists exactly the rest."""
    root = tmp_path / 'in'
    generate(root, events=9600, seed=7, hours=48, events_per_file=40, other_type_files=0,
             start_hour='2024-05-01-00')
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'pipeline', '--input', str(root), '--rejects',
             str(tmp_path / 'r'), '--segment_endpoint', receiver.url, '--wave_hours', '6',
             '--max_events_per_second', '400', '--progress_seconds', '0',
             '--summary_output', str(tmp_path / 's.json')],
            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while len(list((tmp_path / 'r' / 'manifest').glob('wave-*.json'))) < 3 \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)   # into wave 4
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    summary = summary_of(tmp_path / 's.json')
    not_read = summary['files_not_read_stopped']
    last = [line for line in err.splitlines() if line.startswith(f'{PROG}: stopped by')][-1]
    assert f'{not_read:,} files not read' in last
    assert f'{summary["unfinished_files"]:,} files part way' in last
    assert f'{not_read} files not read' in out   # the text summary
    plan = cli('--input', root, '--rejects', tmp_path / 'r', '--resume', '--plan')
    assert plan.returncode == 0, plan.stderr
    to_read = int(plan.stdout.split('files to read: ', 1)[1].split(' ', 1)[0].replace(',', ''))
    assert to_read == not_read + summary['unfinished_files']
    assert not_read >= 4 * 6 * 34 * 0.5   # waves 5 to 8 were never started


# --------------------------------------------- 5: an existing path is taken as it is named
@pytest.mark.parametrize('name', ['exp [prod]', 'exp*', 'a[1]?'])
def test_an_existing_folder_named_with_glob_characters_is_read_literally(tmp_path, name):
    folder = tmp_path / name
    write_file(folder, SEND, [record(1), record(2)])
    (tmp_path / 'exp-other').mkdir()   # what the name would match as a glob
    write_file(tmp_path / 'exp-other', SEND, [record(3)])
    for given in (folder, str(folder) + '/', next(folder.rglob('*.avro'))):
        result = cli('--input', given, '--rejects', tmp_path / 'r', '--dry_run_output',
                     tmp_path / 'b', '--summary_output', tmp_path / 's.json')
        assert result.returncode == 0, result.stderr
        assert summary_of(tmp_path / 's.json')['read'] == 2
    glob = cli('--input', str(tmp_path / 'exp-o*' / '**'), '--rejects', tmp_path / 'r',
               '--dry_run_output', tmp_path / 'b', '--summary_output', tmp_path / 's.json')
    assert glob.returncode == 0 and summary_of(tmp_path / 's.json')['read'] == 1   # a glob


# ------------------------------------------ 9: --follow takes a local file once it is whole
def test_follow_waits_for_a_file_being_copied_in_and_counts_rejects_truly(tmp_path):
    root = tmp_path / 'in'
    write_file(root, SEND, [record(1)], date='2024-05-01-00', n=0)
    raw = avro_bytes(SEND, [record(i) for i in range(10, 20)])
    copying = root / Path(write_file(root, SEND, [], date='2024-05-01-01', n=1,
                                     raw=raw[:len(raw) // 2])).relative_to(root)
    bad = write_file(root, SEND, [], date='2024-05-01-00', n=2, raw=b'not avro at all')
    past = time.time() - 60
    os.utime(bad, (past, past))
    os.utime(Path(root).rglob('*+0+0.avro').__next__(), (past, past))
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'pipeline', '--input', str(root), '--rejects',
             str(tmp_path / 'r'), '--segment_endpoint', receiver.url, '--follow',
             '--poll_seconds', '1', '--progress_seconds', '0'],
            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(4)                       # polls while the copy is "in progress"
            copying.write_bytes(raw)            # the copy ends now
            deadline = time.monotonic() + 60
            while len(ids(receiver)) < 11 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert ids(receiver) == {'evt-1'} | {f'evt-{i}' for i in range(10, 20)}
    assert 'files still being written: taken at the next poll' in out
    assert '(+1 unreadable files)' in out       # the wave line counts the file reject
    rejects = read_rejects(tmp_path / 'r')
    assert [r['source'] for r in rejects] == [bad]   # no stale reject of the copied file


# ------------------------------------------------ 10: a run that reads nothing says why
def test_runs_that_read_nothing_say_why_in_one_line(tmp_path, classic_input):
    root, _ = classic_input
    later = cli('--input', root, '--rejects', tmp_path / 'r', '--dry_run_output', tmp_path / 'b',
                '--start', '2030-01-01')
    assert later.returncode == 2
    line = only_line(later.stderr)
    assert line.startswith(f'{PROG}: error: nothing to read in the range 2030-01-01-00 .. ')
    assert 'the input holds date= hours 2024-05-01-00 .. 2024-05-01-01' in line
    json_only = tmp_path / 'json'
    (json_only / 'event_type=users.messages.email.Send' / 'date=2024-05-01-00').mkdir(
        parents=True)
    (json_only / 'event_type=users.messages.email.Send' / 'date=2024-05-01-00' / 'a.json'
     ).write_text('{}')
    no_avro = cli('--input', json_only, '--rejects', tmp_path / 'r', '--dry_run_output',
                  tmp_path / 'b')
    assert no_avro.returncode == 2
    assert 'no Avro file of the selected event types under --input (not_avro_name 1)' in \
        only_line(no_avro.stderr)
    plan = cli('--input', root, '--plan', '--start', '2030-01-01')
    assert plan.returncode == 0 and 'no date= hours' in plan.stdout and 'None' not in plan.stdout
    with SegmentReceiver(write_key=KEY) as receiver:
        first = cli('--input', root, '--rejects', tmp_path / 'done', '--segment_endpoint',
                    receiver.url)
        again = cli('--input', root, '--rejects', tmp_path / 'done', '--segment_endpoint',
                    receiver.url, '--resume')
        since = cli('--input', root, '--rejects', tmp_path / 'done', '--segment_endpoint',
                    receiver.url, '--since_last_run')
    assert first.returncode == 0 and again.returncode == 0 and since.returncode == 0
    assert 'nothing to do: all ' in again.stdout and 'completed by earlier runs' in again.stdout
    assert 'since_last_run: nothing new' in since.stdout
