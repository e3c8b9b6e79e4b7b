"""Measure: how many events Segment gets twice when a backfill is stopped or killed and resumed.

    python -m bench.resend                        # this checkout
    python -m bench.resend --checkout /path/to/an/older/checkout

A corpus of EVENTS events in files of EVENTS_PER_FILE, sent throttled to RATE events/s to a
fresh local receiver (bench/receiver.py); about half way the run is stopped one of three ways
(SIGINT to its process group, SIGKILL to its process group, SIGKILL to one of two worker
processes), then the same command runs again with `--resume`. Reported: what the receiver had
before the stop, what it got twice (its duplicates), and whether every event arrived. Only the
command line and the receiver are used, so any checkout of the tool can be measured.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from bench.receiver import Receiver
from devtools.sample import generate

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = 'bench-write-key-not-secret'
EVENTS, EVENTS_PER_FILE, RATE = 54_000, 200, 3000
HOW = ('SIGINT', 'SIGKILL', 'killed worker')


def _children(pid: int) -> List[int]:
    try:
        return [int(p) for p in open(f'/proc/{pid}/task/{pid}/children').read().split()]
    except OSError:
        return []


def _workers(launcher: int) -> List[int]:
    """Worker processes: the launcher's grandchildren (warm workers) or children (cold)."""
    found = [w for child in _children(launcher) for w in _children(child)]
    return found or _children(launcher)


def once(checkout: Path, corpus: Path, eligible: int, how: str, work: Path) -> dict:
    env = dict(os.environ, SEGMENT_WRITE_KEY=WRITE_KEY, PYTHONPATH=str(checkout))
    receiver = Receiver(str(work / 'receiver'), WRITE_KEY, str(ROOT)).start()
    try:
        argv = [sys.executable, '-m', 'pipeline', '--input', str(corpus), '--rejects',
                str(work / 'rejects'), '--segment_endpoint', receiver.url,
                '--progress_seconds', '0', '--max_events_per_second', str(RATE)]
        extra = (['--direct_num_workers', '2', '--direct_running_mode', 'multi_processing']
                 if how == 'killed worker' else [])
        proc = subprocess.Popen(argv + extra, cwd=str(checkout), env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while receiver.stats()['accepted'] < eligible // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        if how == 'SIGINT':
            os.killpg(proc.pid, signal.SIGINT)
        elif how == 'SIGKILL':
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(_workers(proc.pid)[0], signal.SIGKILL)
        proc.wait(timeout=300)
        before = receiver.stats()['accepted']
        again = subprocess.run(argv + ['--resume'], cwd=str(checkout), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=900)
        stats = receiver.stats()
        return {'how': how, 'stop_exit': proc.returncode, 'resume_exit': again.returncode,
                'delivered_before': before, 'resent': stats['duplicates'],
                'all_delivered': stats['accepted'] == eligible}
    finally:
        receiver.stop()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkout', default=str(ROOT))
    parser.add_argument('--workdir', default=None)
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix='bench-resend-'))
    corpus = work / 'corpus'
    report = generate(corpus, events=EVENTS, seed=21, hours=2, events_per_file=EVENTS_PER_FILE)
    print(f'{report.eligible:,} eligible events in {len(report.files)} files, throttled to '
          f'{RATE}/s, stopped at about half; checkout {args.checkout}')
    print('| stopped by | exit | delivered before | resent by --resume | all delivered |')
    print('|---|---|---|---|---|')
    for n, how in enumerate(HOW):
        row = once(Path(args.checkout).resolve(), corpus, report.eligible, how, work / f'r{n}')
        print(f'| {how} | {row["stop_exit"]} | {row["delivered_before"]:,} | '
              f'{row["resent"]:,} | {row["all_delivered"]} (resume exit {row["resume_exit"]}) |',
              flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
