"""After a stop or a crash, `--resume` sends again only what was in flight, not the whole wave.

Through the command line against the local receiver, on a corpus throttled so that a stop lands
mid-wave: SIGINT, SIGKILL of the process group, and one killed worker process, each followed by
`--resume`. Every event arrives, and Segment gets twice at most the requests in flight
(--max_in_flight x sending processes x the largest batch) plus the events of the files in
progress at the stop (files not recorded as done of which some event had arrived), with few
such files.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pytest

from devtools.receiver import SegmentReceiver
from devtools.sample import generate
from transforms.records import load_records

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KEY = 'wk_resend-test-key'
RATE = 2000                # events/s: a 24,000-event corpus takes ~12 s
IN_FLIGHT = 4              # --max_in_flight (the default)


def _env():
    env = {k: v for k, v in os.environ.items() if k != 'SEGMENT_WRITE_KEY'}
    return dict(env, SEGMENT_WRITE_KEY=KEY, PYTHONPATH=str(ROOT))


def _start(*args):
    return subprocess.Popen([sys.executable, '-m', 'pipeline', *map(str, args)], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    """24,000 events in files of ~200, and which file each eligible event id is in."""
    root = tmp_path_factory.mktemp('resend')
    report = generate(root, events=24_000, seed=21, hours=2, events_per_file=200)
    by_file = {}
    for path in report.files:
        with open(path, 'rb') as f:
            by_file[path] = {r['id'] for r in fastavro.reader(f)
                             if (r.get('external_user_id') or '').strip()}
    return root, report, by_file


def _wait(receiver, accepted, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while receiver.stats()['accepted'] < accepted and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def _resume_and_check(root, rejects, receiver, report, by_file, processes, what):
    """--resume, then: everything delivered; the resent events within the bound."""
    first = {m['messageId'] for m in receiver.messages()}
    recorded = set(load_records(str(rejects)).files)
    in_progress = [f for f, ids in by_file.items() if f not in recorded and ids & first]
    before = receiver.stats()['duplicates']
    again = subprocess.run([sys.executable, '-m', 'pipeline', '--input', str(root), '--rejects',
                            str(rejects), '--segment_endpoint', receiver.url, '--resume'],
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    stats = receiver.stats()
    assert {m['messageId'] for m in receiver.messages()} == report.eligible_ids
    resent = stats['duplicates'] - before
    bound = (IN_FLIGHT * processes * stats['max_batch_messages_seen']
             + sum(len(by_file[f]) for f in in_progress))
    print(f'\n{what}: {len(first):,} delivered before, {len(recorded)} of {len(by_file)} files '
          f'recorded, {len(in_progress)} in progress; resent {resent:,} (bound {bound:,})')
    assert resent <= bound
    # in progress: the files of the batches in flight, the one being read, a few just done
    per_file = report.eligible / len(by_file)
    assert len(in_progress) <= processes * (IN_FLIGHT * stats['max_batch_messages_seen']
                                            / per_file + 3)
    assert len(recorded) >= len(by_file) * len(first) / report.eligible / 2
    return resent


def test_sigint_then_resume_resends_at_most_what_was_in_flight(tmp_path, corpus):
    root, report, by_file = corpus
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = _start('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                      receiver.url, '--max_events_per_second', RATE, '--progress_seconds', '0',
                      '--summary_output', tmp_path / 's.json')
        _wait(receiver, report.eligible // 2, proc)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        summary = json.loads((tmp_path / 's.json').read_text())
        assert 0 < summary['recorded_files'] < len(by_file)
        assert 'recorded as done' in err and 'rerun with --resume' in err
        _resume_and_check(root, tmp_path / 'r', receiver, report, by_file, 1, 'SIGINT')


def test_sigkill_of_the_process_group_then_resume(tmp_path, corpus):
    root, report, by_file = corpus
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = _start('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                      receiver.url, '--max_events_per_second', RATE, '--progress_seconds', '0')
        _wait(receiver, report.eligible // 2, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        _resume_and_check(root, tmp_path / 'r', receiver, report, by_file, 1, 'SIGKILL')


def _worker_pids(launcher: int):
    """Warm workers are children of the zygote, the launcher's forked child."""
    def children(pid):
        try:
            return [int(p) for p in open(f'/proc/{pid}/task/{pid}/children').read().split()]
        except OSError:
            return []
    return [w for z in children(launcher) for w in children(z)]


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='warm workers are Linux only')
def test_a_killed_worker_process_then_resume(tmp_path, corpus):
    root, report, by_file = corpus
    with SegmentReceiver(write_key=KEY) as receiver:
        proc = _start('--input', root, '--rejects', tmp_path / 'r', '--segment_endpoint',
                      receiver.url, '--max_events_per_second', RATE, '--progress_seconds', '0',
                      '--direct_num_workers', '2', '--direct_running_mode', 'multi_processing')
        _wait(receiver, report.eligible // 2, proc)
        workers = _worker_pids(proc.pid)
        assert workers
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 1 and 'a worker process died' in err, err
        _resume_and_check(root, tmp_path / 'r', receiver, report, by_file, 2, 'killed worker')


def test_a_file_whose_last_batch_is_rejected_is_done_once_its_rejects_are_durable(tmp_path):
    """Segment refuses everything past the retry budget: each file is recorded, with every
    event in the rejects, so --resume sends none of them again (replay does)."""
    root = tmp_path / 'in'
    report = generate(root, events=600, seed=3, hours=1, events_per_file=100)
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('refuse_503')
        first = subprocess.run([sys.executable, '-m', 'pipeline', '--input', str(root),
                                '--rejects', str(tmp_path / 'r'), '--segment_endpoint',
                                receiver.url, '--max_retry_seconds', '1',
                                '--summary_output', str(tmp_path / 's.json')],
                               cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
        assert first.returncode == 4, first.stderr
        summary = json.loads((tmp_path / 's.json').read_text())
        assert summary['rejected_by_reason'] == {'retries_exhausted': report.eligible}
        assert summary['recorded_files'] == len(report.files)
        rejected = sum(1 for p in (tmp_path / 'r').glob('rejects-*.jsonl')
                       for _ in p.open())
        assert rejected == report.eligible
        assert set(load_records(str(tmp_path / 'r')).files) == set(report.files)
        receiver.set_mode('normal')
        again = subprocess.run([sys.executable, '-m', 'pipeline', '--input', str(root),
                                '--rejects', str(tmp_path / 'r'), '--segment_endpoint',
                                receiver.url, '--resume'],
                               cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert 'nothing to do' in again.stdout and receiver.stats()['accepted'] == 0
