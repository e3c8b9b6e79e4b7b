"""Profile the pipeline (cProfile, every Python thread) on a generated corpus, against the receiver.

    python -m bench.profile [--events 100000] [--timer cpu|wall] [--top 25] [-- EXTRA PIPELINE FLAGS]

Runs, in a subprocess, what `python -m pipeline --input DIR --rejects TMP --segment_endpoint URL
--summary_output F --direct_num_workers 1` runs (pipeline.main.run), under cProfile. cProfile only
sees the thread that enabled it, so every thread started with threading.Thread gets its own
profiler (the sender pool, Beam's worker threads) and the profiles are merged.

--timer wall (default, time.perf_counter) times wall-clock: blocking shows up (e.g. the bundle
thread waiting for requests in flight). --timer cpu times each thread's CPU (time.thread_time):
waits cost nothing, but that clock is a system call (~0.5 us vs ~0.05 us), so the profiler's own
overhead inflates functions called millions of times much more than with the wall timer.

Writes the stats (`.pstats` for the main thread, `.threads.pstats` for the others merged) and,
beside them, a Markdown report with the main thread's top entries by cumulative and by own
(tottime) time and the other threads' top own time, unless --report is empty.
"""
import argparse
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = 'bench-write-key-not-secret'


# ---------------------------------------------------------------------------------------------
# child: the pipeline under the profiler

def _child(out: str, timer_name: str, argv) -> int:
    timer = time.thread_time if timer_name == 'cpu' else time.perf_counter
    profiles = []
    original_run = threading.Thread.run

    def profiled_run(self):
        prof = cProfile.Profile(timer)
        profiles.append((self.name, prof))
        prof.enable()
        try:
            original_run(self)
        finally:
            prof.disable()

    threading.Thread.run = profiled_run
    import logging
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    main = cProfile.Profile(timer)
    main.enable()
    from pipeline.main import run   # imports are part of a user's run: profiled too
    code = run(argv)
    main.disable()
    per_thread = {'MainThread': _total(main)}
    pstats.Stats(main).dump_stats(out)
    others = None
    for name, prof in list(profiles):
        try:
            prof.disable()          # (only affects the calling thread on 3.11; harmless)
            total = _total(prof)
            if others is None:
                others = pstats.Stats(prof)
            else:
                others.add(prof)
        except (TypeError, ValueError):   # a profile with no data
            continue
        key = name.split(' ')[0]
        per_thread[key] = per_thread.get(key, 0.0) + total
    if others is not None:
        others.dump_stats(out + '.threads.pstats')
    with open(out + '.threads.json', 'w') as fh:
        json.dump({'exit': code, 'timer': timer_name, 'seconds_by_thread': per_thread}, fh)
    return code


def _total(prof) -> float:
    prof.create_stats()
    return sum(tt for (_, _, tt, _, _) in prof.stats.values())


# ---------------------------------------------------------------------------------------------
# parent: corpus, receiver, report

def _where(key, prefixes) -> str:
    filename, line, func = key
    for prefix, short in prefixes:
        if filename.startswith(prefix):
            filename = short + filename[len(prefix):]
            break
    if filename == '~':
        return func        # built-in
    return f'{filename}:{line}({func})'


def top_table(stats: pstats.Stats, sort: str, n: int) -> str:
    import apache_beam
    site = str(Path(apache_beam.__file__).resolve().parent.parent) + '/'
    prefixes = [(site, ''), (str(ROOT) + '/', ''), (os.path.dirname(os.__file__) + '/', 'stdlib/')]
    index = 3 if sort == 'cumulative' else 2
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][index], reverse=True)[:n]
    lines = ['| # | ncalls | tottime s | cumtime s | function |', '|---|---|---|---|---|']
    for i, (key, (cc, nc, tt, ct, _)) in enumerate(rows, 1):
        calls = f'{nc}' if cc == nc else f'{nc}/{cc}'
        lines.append(f'| {i} | {calls} | {tt:.3f} | {ct:.3f} | `{_where(key, prefixes)}` |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['--child']:
        sep = argv.index('--')
        return _child(argv[1], argv[2], argv[sep + 1:])
    extra = []
    if '--' in argv:
        sep = argv.index('--')
        argv, extra = argv[:sep], argv[sep + 1:]
    p = argparse.ArgumentParser(prog='python -m bench.profile', description=__doc__.split('\n')[0])
    p.add_argument('--events', type=int, default=100_000)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--corpus', help='use this existing corpus folder instead of generating one '
                                    '(then the delivery check is skipped)')
    p.add_argument('--timer', choices=('wall', 'cpu'), default='wall')
    p.add_argument('--top', type=int, default=25)
    p.add_argument('--out', default=None,
                   help='.pstats path (default $TMPDIR/currents-pipeline-profile-<timer>.pstats)')
    p.add_argument('--report', default=None,
                   help='Markdown report (default: the .pstats path with .md); "" for none')
    args = p.parse_args(argv)
    out = os.path.abspath(args.out or os.path.join(tempfile.gettempdir(),
                                                   f'currents-pipeline-profile-{args.timer}.pstats'))
    if args.report is None:
        args.report = os.path.splitext(out)[0] + '.md'   # a profile is of one machine: not kept
    if '--direct_num_workers' not in ' '.join(extra):
        extra = ['--direct_num_workers', '1'] + extra

    from bench.receiver import Receiver
    work = tempfile.mkdtemp(prefix='currents-profile-')
    try:
        report = None
        corpus = args.corpus
        if not corpus:
            from devtools.sample import generate
            corpus = os.path.join(work, 'corpus')
            report = generate(corpus, events=args.events, seed=args.seed)
        with Receiver(os.path.join(work, 'receiver'), WRITE_KEY, str(ROOT)) as receiver:
            pipeline_argv = ['--input', corpus, '--rejects', os.path.join(work, 'rejects'),
                             '--segment_endpoint', receiver.url,
                             '--summary_output', os.path.join(work, 'summary.json')] + extra
            cmd = [sys.executable, '-m', 'bench.profile', '--child', out, args.timer, '--'] + pipeline_argv
            started = time.perf_counter()
            proc = subprocess.run(cmd, cwd=str(ROOT), env=dict(os.environ, SEGMENT_WRITE_KEY=WRITE_KEY),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wall = time.perf_counter() - started
            stats_r = receiver.stats()
        if proc.returncode != 0:
            print(f'bench.profile: the profiled pipeline exited {proc.returncode}:\n{proc.stderr[-2000:]}',
                  file=sys.stderr)
            return 1
        delivered = report is None or stats_r['accepted'] == report.eligible
        with open(out + '.threads.json') as fh:
            threads = json.load(fh)
        stats = pstats.Stats(out)
        main_total = sum(tt for (_, _, tt, _, _) in stats.stats.values())
        command = 'python -m bench.profile ' + ' '.join(argv + (['--'] + extra if extra else []))
        unit = 'CPU' if args.timer == 'cpu' else 'wall-clock'
        head = (f'Profile of `python -m pipeline --input DIR --rejects TMP --segment_endpoint URL '
                f'--summary_output F {" ".join(extra)}` on '
                f'{format(report.events, ",") if report else "the given corpus"} events against the local receiver '
                f'(cProfile, {args.timer} timer): {wall:.1f}s wall under the profiler; receiver accepted '
                f'{stats_r["accepted"]:,}{"" if delivered else " (NOT every eligible event)"}.')
        by_thread = ', '.join(f'{k} {v:.1f}s' for k, v in sorted(
            threads['seconds_by_thread'].items(), key=lambda kv: -kv[1]) if v >= 0.05)
        sections = [
            f'# Pipeline profile ({args.timer} timer)', '', f'`{command}`', '', head, '',
            f'Profiled {unit} time by thread: {by_thread}. With `--direct_num_workers 1` Beam runs '
            f'every bundle on the main thread; `segment-send_*` are the sender pool (requests in '
            f'flight){"; their wall time is mostly waiting for the receiver" if args.timer == "wall" else ""}.',
            '',
            f'## Main thread: top {args.top} by cumulative time ({main_total:.1f}s profiled)', '',
            top_table(stats, 'cumulative', args.top), '',
            f'## Main thread: top {args.top} by own time (tottime)', '',
            top_table(stats, 'tottime', args.top), '']
        if os.path.exists(out + '.threads.pstats'):
            others = pstats.Stats(out + '.threads.pstats')
            sections += [f'## Other threads merged: top 15 by own time', '',
                         top_table(others, 'tottime', 15), '']
        sections += [f'Full stats: `{out}` (main thread) and `{out}.threads.pstats` (other threads); '
                     f'`python -m pstats FILE`.', '']
        text = '\n'.join(sections)
        print(text)
        if args.report:
            Path(args.report).write_text(text)
        return 0 if delivered else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
