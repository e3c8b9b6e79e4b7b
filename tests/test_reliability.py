"""Nothing lost under faults (CONTRACT §4, §5): fault matrix at scale, receiver outages, re-runs.

Every scenario checks the same contract: every eligible messageId is accepted by the receiver
(none lost), no messageId outside the eligible set appears (none invented), duplicates are only of
the same ids (Segment de-duplicates on messageId), and the summary balances.

Scale: RELIABILITY_EVENTS (default 100,000) and RELIABILITY_FAULT_RATE (default 0.3) size the
fault matrix; RELIABILITY_REPORT=<file> appends each scenario's figures as JSON lines
(docs/security.md, "Nothing lost").
"""
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import fastavro
import pytest

from devtools.receiver import FAULT_KINDS, SegmentReceiver, control_headers
from pipeline.main import run
from devtools.sample import generate
from tests.helpers import balanced, read_rejects
from pipeline.listing import partition_key
from tests.conftest import run_tool
from transforms.records import load_records

KEY = 'wk_reliability-key-9931'
ROOT = Path(__file__).resolve().parent.parent
EVENTS = int(os.environ.get('RELIABILITY_EVENTS', '100000'))
FAULT_RATE = float(os.environ.get('RELIABILITY_FAULT_RATE', '0.3'))


def report(scenario, **figures):
    """Prints one line of figures (pytest -s shows it) and appends it to $RELIABILITY_REPORT."""
    line = json.dumps({'scenario': scenario, **figures}, sort_keys=False)
    print(f'\nRELIABILITY {line}')
    target = os.environ.get('RELIABILITY_REPORT')
    if target:
        with open(target, 'a', encoding='utf-8') as f:
            f.write(line + '\n')


@pytest.fixture
def write_key(monkeypatch):
    monkeypatch.setenv('SEGMENT_WRITE_KEY', KEY)
    return KEY


@pytest.fixture(scope='module')
def big_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('big')
    return root, generate(root, events=EVENTS, seed=2024, hours=3, events_per_file=5000)


@pytest.fixture(scope='module')
def mid_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('mid')
    return root, generate(root, events=20_000, seed=77, hours=3, events_per_file=2000)


def _run(tmp_path, root, *extra, out=None):
    return run_tool(tmp_path, root, *extra, out=out)


def _complete(summary, report_):
    assert balanced(summary)
    assert summary['read'] == report_.events
    assert summary['dropped_no_external_user_id'] == report_.events - report_.eligible


# -- 1. fault matrix at scale --------------------------------------------------------------------
def test_fault_matrix_at_scale_nothing_lost(tmp_path, big_corpus, write_key):
    """30% of requests faulted: 429 with and without Retry-After, 500, 503, connection resets
    and answers slower than the client timeout (accepted by the receiver, retried by the client:
    the source of duplicates). Every eligible messageId ends accepted, none lost or invented."""
    root, rep = big_corpus
    started = time.monotonic()
    with SegmentReceiver(write_key=KEY, fault_rate=FAULT_RATE, faults=FAULT_KINDS, seed=31,
                         retry_after=0.2, slow_seconds=1.5) as receiver:
        code, summary, text = _run(tmp_path, root, '--segment_endpoint', receiver.url,
                                   '--segment_timeout', '1', '--max_in_flight', '4',
                                   '--max_retry_seconds', '120')
        stats = receiver.stats()
        ids = Counter(m['messageId'] for m in receiver.messages())
    elapsed = time.monotonic() - started
    assert code == 0, text
    _complete(summary, rep)
    assert summary['sent'] == rep.eligible and summary['rejected'] == 0
    assert set(ids) == rep.eligible_ids                       # none lost, none invented
    assert max(ids.values()) == 1 and stats['accepted'] == rep.eligible
    assert stats['silently_dropped'] == 0 and stats['missing_message_id'] == 0
    faults = stats['faults_injected']
    assert set(faults) == set(FAULT_KINDS), faults          # every kind actually happened
    assert summary['requests_retried'] > 0
    # Every attempt was counted by the pipeline as the receiver saw it.
    assert summary['requests'] == stats['requests']
    # A retried request re-sends the same messageIds: duplicates only come from 'slow' answers
    # the receiver stored after the client had timed out.
    assert stats['duplicates'] > 0 if faults.get('slow') else True
    report('fault_matrix', events=rep.events, eligible=rep.eligible,
           dropped=summary['dropped_no_external_user_id'], delivered=len(ids),
           sent=summary['sent'], rejected=summary['rejected'],
           lost=len(rep.eligible_ids - set(ids)), fault_rate=FAULT_RATE,
           requests=stats['requests'], requests_retried=summary['requests_retried'],
           faults_injected=faults, duplicates_received=stats['duplicates'],
           seconds=round(elapsed, 1))


# -- 2. receiver outage (separate process killed and restarted) -------------------------------
class ReceiverProcess:
    """`python -m devtools.receiver` as a process we can kill -9 and restart on the same port.

    Both incarnations append what they accept to one --store file, so the union survives."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.store = workdir / 'accepted.jsonl'
        self.port = 0
        self.proc = None
        self.incarnations = 0

    def start(self):
        port_file = self.workdir / f'port{self.incarnations}'
        log = open(self.workdir / f'receiver{self.incarnations}.log', 'wb')
        env = dict(os.environ, SEGMENT_WRITE_KEY=KEY)
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'devtools.receiver', '--port', str(self.port),
             '--port-file', str(port_file), '--store', str(self.store)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert self.proc.poll() is None, 'receiver exited at start'
            assert time.monotonic() < deadline, 'receiver did not start'
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.incarnations += 1
        return self

    @property
    def url(self):
        return f'http://127.0.0.1:{self.port}/v1/batch'

    def stats(self):
        req = urllib.request.Request(f'http://127.0.0.1:{self.port}/_receiver/stats',
                                     headers=control_headers(KEY))
        with urllib.request.urlopen(req, timeout=2) as r:
            return json.loads(r.read())

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)   # no goodbye: in-flight requests just die
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def accepted_ids(self):
        if not self.store.exists():
            return Counter()
        with open(self.store, encoding='utf-8') as f:
            return Counter(json.loads(line)['messageId'] for line in f if line.strip())


@pytest.fixture
def receiver_process(tmp_path):
    workdir = tmp_path / 'receiver'
    workdir.mkdir()
    proc = ReceiverProcess(workdir)
    yield proc
    proc.stop()


def _outage(receiver, kill_after_accepted, restart_after, timeline):
    """Background thread: kill the receiver once it has accepted enough; restart it later."""
    def act():
        while True:
            try:
                if receiver.stats()['accepted'] >= kill_after_accepted:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        timeline['accepted_before_kill'] = len(receiver.accepted_ids())
        receiver.kill()
        timeline['killed'] = time.monotonic()
        if restart_after is None:
            return
        time.sleep(restart_after)
        receiver.start()
        timeline['restarted'] = time.monotonic()
    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_receiver_killed_and_restarted_within_retry_budget_loses_nothing(
        tmp_path, mid_corpus, write_key, receiver_process):
    root, rep = mid_corpus
    receiver = receiver_process.start()
    timeline = {}
    outage = 4.0
    thread = _outage(receiver, 5000, outage, timeline)
    started = time.monotonic()
    code, summary, text = _run(tmp_path, root, '--segment_endpoint', receiver.url,
                               '--max_events_per_second', '2500', '--max_retry_seconds', '60',
                               '--segment_timeout', '2')
    elapsed = time.monotonic() - started
    thread.join(30)
    assert 'restarted' in timeline, 'the run ended before the outage was over'
    after = receiver.stats()   # the second incarnation
    ids = receiver.accepted_ids()
    assert code == 0, text
    _complete(summary, rep)
    assert summary['sent'] == rep.eligible and summary['rejected'] == 0
    assert set(ids) == rep.eligible_ids                      # none lost, none invented
    assert 0 < timeline['accepted_before_kill'] < rep.eligible
    assert after['accepted'] > 0                             # sending resumed after the restart
    assert summary['requests_retried'] > 0
    report('receiver_outage_within_budget', events=rep.events, eligible=rep.eligible,
           dropped=summary['dropped_no_external_user_id'], delivered=len(ids),
           rejected=summary['rejected'], lost=len(rep.eligible_ids - set(ids)),
           outage_seconds=outage, accepted_before_kill=timeline['accepted_before_kill'],
           accepted_after_restart=after['accepted'], duplicates=sum(ids.values()) - len(ids),
           requests_retried=summary['requests_retried'], seconds=round(elapsed, 1))


def test_outage_beyond_retry_budget_rejects_the_rest_then_replay_delivers_it(
        tmp_path, mid_corpus, write_key, receiver_process):
    root, rep = mid_corpus
    receiver = receiver_process.start()
    timeline = {}
    thread = _outage(receiver, 4000, None, timeline)     # down for the rest of the run
    code, summary, text = _run(tmp_path, root, '--segment_endpoint', receiver.url,
                               '--max_events_per_second', '2500', '--max_retry_seconds', '2',
                               '--segment_timeout', '2')
    thread.join(30)
    assert 'killed' in timeline
    assert code == 4, text   # completed, balanced, events to replay
    _complete(summary, rep)
    first = set(receiver.accepted_ids())
    rejects = read_rejects(tmp_path / 'rejects')
    rejected = Counter(r['message']['messageId'] for r in rejects)
    assert summary['rejected'] > 0 and summary['rejected_by_reason'] == {
        'retries_exhausted': summary['rejected']}
    assert {r['reason'] for r in rejects} == {'retries_exhausted'}
    assert sum(rejected.values()) == summary['rejected'] and max(rejected.values()) == 1
    assert summary['sent'] + summary['rejected'] == rep.eligible
    # Everything unsent is in the rejects (a request in flight at the kill may be in both).
    assert first | set(rejected) == rep.eligible_ids
    assert set(rejected) <= rep.eligible_ids
    assert all('gave up after' in r['detail'] for r in rejects)

    # The receiver is back: replay the rejects; every eligible id ends accepted.
    receiver.start()
    out = io.StringIO()
    replay_summary = tmp_path / 'replay.json'
    code = run(['replay', '--rejects', str(tmp_path / 'rejects'),
                '--segment_endpoint', receiver.url, '--summary_output', str(replay_summary)],
               out=out)
    assert code == 0, out.getvalue()
    replayed = json.loads(replay_summary.read_text())
    ids = receiver.accepted_ids()
    assert balanced(replayed)
    assert replayed['read'] == replayed['sent'] == summary['rejected']
    assert replayed['rejected'] == 0
    assert set(ids) == rep.eligible_ids                      # none lost, none invented
    report('receiver_outage_beyond_budget_then_replay', events=rep.events, eligible=rep.eligible,
           dropped=summary['dropped_no_external_user_id'], sent_first_run=summary['sent'],
           rejected_retries_exhausted=summary['rejected'], replayed_sent=replayed['sent'],
           delivered=len(ids), lost=len(rep.eligible_ids - set(ids)),
           accepted_before_kill=timeline['accepted_before_kill'])


# -- 3. worker failure: a run stopped part-way, then re-run -----------------------------------
def _eligible_ids_of(files):
    ids = set()
    for path in files:
        with open(path, 'rb') as f:
            ids.update(r['id'] for r in fastavro.reader(f)
                       if r.get('external_user_id') and r['external_user_id'].strip())
    return ids


def test_run_stopped_part_way_then_rerun_resends_only_the_same_ids(tmp_path, mid_corpus,
                                                                  write_key):
    """A bundle that fails part-way is retried whole: its messageIds are sent again. Here the
    whole run stops part-way (the key is refused after a few requests) and is run again over the
    same input against the same receiver: nothing lost, nothing new, duplicates of the same ids."""
    root, rep = mid_corpus
    with SegmentReceiver(write_key=KEY) as receiver:
        receiver.set_mode('unauthorized_401', after_requests=6)
        code, _, _ = _run(tmp_path / 'first', root, '--segment_endpoint', receiver.url)
        assert code == 3
        first = {m['messageId'] for m in receiver.messages()}
        assert 0 < len(first) < rep.eligible
        receiver.set_mode('normal')
        code, summary, text = _run(tmp_path / 'second', root, '--segment_endpoint', receiver.url)
        stats = receiver.stats()
        ids = [m['messageId'] for m in receiver.messages()]
    assert code == 0, text
    _complete(summary, rep)
    assert summary['sent'] == rep.eligible
    assert set(ids) == rep.eligible_ids and len(ids) == len(set(ids))
    assert stats['accepted'] == rep.eligible
    # The rerun sent every eligible id once more: exactly the first run's ids are duplicates.
    assert stats['duplicates'] == len(first)
    report('stopped_part_way_then_rerun', events=rep.events, eligible=rep.eligible,
           dropped=summary['dropped_no_external_user_id'], accepted_first_run=len(first),
           delivered=len(set(ids)), duplicates=stats['duplicates'],
           lost=len(rep.eligible_ids - set(ids)))


class _WaveWatcher(io.StringIO):
    """The run's output stream: when wave 1 is done, refuse the key a few requests into wave 2."""

    def __init__(self, receiver, after_requests):
        super().__init__()
        self.receiver, self.after_requests = receiver, after_requests

    def write(self, s):
        if s.startswith('wave 1/'):
            self.receiver.set_mode('unauthorized_401', after_requests=self.after_requests)
        return super().write(s)


def test_failure_mid_wave_then_resume_resends_only_files_not_recorded(tmp_path, mid_corpus,
                                                                        write_key):
    root, rep = mid_corpus
    rejects = ['--rejects', str(tmp_path / 'rejects')]
    with SegmentReceiver(write_key=KEY) as receiver:
        code, _, text = _run(tmp_path / 'first', root, '--segment_endpoint', receiver.url,
                             '--wave_hours', '1', *rejects,
                             out=_WaveWatcher(receiver, after_requests=2))
        assert code == 3 and 'stopped in wave 2 of 3' in text, text
        first = {m['messageId'] for m in receiver.messages()}
        done = set()   # partitions run 1 recorded as completed (its waves that finished)
        for m in (tmp_path / 'rejects' / 'manifest').glob('wave-*.json'):
            done.update(json.loads(m.read_text())['partitions'])
        # ... and the files it recorded as done, those waves' and any of wave 2 finished before
        # the key was refused (recorded as they finish)
        recorded = set(load_records(str(tmp_path / 'rejects')).files)
        receiver.set_mode('normal')
        code, summary, text = _run(tmp_path / 'second', root, '--segment_endpoint', receiver.url,
                                   '--wave_hours', '1', '--resume', *rejects)
        stats = receiver.stats()
        ids = {m['messageId'] for m in receiver.messages()}
    assert code == 0, text
    done_files = [f for f in rep.files if partition_key(f) in done]
    resent_files = [f for f in rep.files if f not in recorded]
    assert done_files and resent_files and set(done_files) <= recorded
    assert summary['files_skipped_by_reason']['completed_by_earlier_run'] == len(recorded)
    assert balanced(summary) and summary['rejected'] == 0
    resent = _eligible_ids_of(resent_files)
    assert summary['sent'] == len(resent)
    assert ids == rep.eligible_ids                           # none lost, none invented
    assert _eligible_ids_of(done_files) <= first             # wave 1 was delivered by run 1
    # Duplicates: exactly the ids of files not recorded that run 1 had already delivered.
    assert stats['duplicates'] == len(first & resent)
    report('failure_mid_wave_then_resume', events=rep.events, eligible=rep.eligible,
           accepted_first_run=len(first), files_skipped_on_resume=len(recorded),
           sent_on_resume=summary['sent'], duplicates=stats['duplicates'], delivered=len(ids),
           lost=len(rep.eligible_ids - ids))
