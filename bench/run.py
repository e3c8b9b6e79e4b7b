"""Benchmark: the pipeline vs a plain-Python reference vs Segment's official client, same corpus.

    python -m bench.run                       # 300,000 events over 3 days of date= hours, 3 runs each
    python -m bench.run --events 300000,1200000 --days 3,30 --runs 3 --no-variants
                                              # the backfill shapes: one section per corpus
    python -m bench.run --scale-check         # also the pipeline's peak RSS at 4x the corpus
    python -m bench.run --smoke               # ~2,000 events over 2 days, 1 run each: correctness only

Every (events, days) pair is one corpus (devtools.sample.generate: all 34 types spread over
24 x days date= hours, codecs null/deflate/snappy file by file, ~10% of events without
external_user_id, a few files of other types), measured in its own section; within a section
every run starts a fresh local receiver (python -m devtools.receiver) and one subprocess, exactly
as a user would start it:

  pipeline   python -m pipeline --input DIR --rejects TMP --segment_endpoint URL --summary_output F
             (DirectRunner = the project's pinned FnApiRunner, default local settings, no throttle)
  reference  python -m bench.reference   (plain single-process Python, see that module)
  official   python -m bench.official_client   (segment-analytics-python, tuned for bulk)

plus the pipeline with `--wave_hours 24` (a wave per day of date= hours instead of waves sized by
volume), `--direct_num_workers 1` (one process), `... 2 --direct_running_mode
multi_threading`, `... multi_processing` (warm workers) and the same with
`--fresh_worker_processes` (Beam's cold start); skip them with --no-variants, pick with --only.
Runs are interleaved round by round. A run whose receiver did not accept exactly the corpus's
eligible messageIds (same count, same set) or that exited non-zero is FAILED, and the command
exits 1. Timings are reported, never asserted.
"""
import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from bench.measure import (Measured, calibrate, io_stall_s, machine_busy_s, process_cpu_s,
                           run_measured, self_cpu_s, wait_for_quiet, warm_page_cache)
from bench.receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / 'bench' / 'RESULTS.md'
WRITE_KEY = 'bench-write-key-not-secret'
SMOKE_EVENTS = 2000
SMOKE_DAYS = 2
DEFAULT_EVENTS = 300_000
DEFAULT_DAYS = 3
DEFAULT_CODECS = 'null,deflate,snappy'
MIB = 1024.0

# Targets the pipeline is asked to reach (reported, never asserted).
TARGET_VS_REFERENCE = 1.0
TARGET_VS_REFERENCE_LARGE = 1.5       # from LARGE_EVENTS events on
LARGE_EVENTS = 1_200_000
TARGET_VS_OFFICIAL = 2.5
TARGET_CPU_VS_REFERENCE = 1.25
TARGET_RSS_MIB = 1024.0
TARGET_RSS_GROWTH_4X = 1.3
BUSY_CPUS = 0.2                       # other load above this distorts wall-clock figures


def target_vs_reference(events: int) -> float:
    return TARGET_VS_REFERENCE_LARGE if events >= LARGE_EVENTS else TARGET_VS_REFERENCE


@dataclass
class Variant:
    name: str
    kind: str                      # pipeline | reference | official
    extra: List[str] = field(default_factory=list)
    note: str = ''


MAIN = [
    Variant('pipeline', 'pipeline', [], 'DirectRunner (FnApiRunner), default local settings'),
    Variant('reference', 'reference', [], 'plain Python, single process'),
    Variant('official', 'official', [], 'segment-analytics-python 2.4.0'),
]
FLAG_VARIANTS = [
    Variant('pipeline 24h', 'pipeline', ['--wave_hours', '24'],
            '--wave_hours 24: one pipeline per day of date= hours instead of waves sized by '
            'volume'),
    Variant('pipeline 1w', 'pipeline',
            ['--direct_num_workers', '1', '--direct_running_mode', 'in_memory'],
            '--direct_num_workers 1 --direct_running_mode in_memory (Beam\'s own local default)'),
    Variant('pipeline mt2', 'pipeline',
            ['--direct_num_workers', '2', '--direct_running_mode', 'multi_threading'],
            '--direct_num_workers 2 --direct_running_mode multi_threading'),
    Variant('pipeline mp2', 'pipeline',
            ['--direct_num_workers', '2', '--direct_running_mode', 'multi_processing'],
            '--direct_num_workers 2 --direct_running_mode multi_processing (warm, forked workers)'),
    Variant('pipeline mp2 cold', 'pipeline',
            ['--direct_num_workers', '2', '--direct_running_mode', 'multi_processing',
             '--fresh_worker_processes'],
            'the same with --fresh_worker_processes (Beam\'s cold-started workers)'),
]


def command_for(v: Variant, corpus: str, rundir: str, receiver: Receiver, args) -> List[str]:
    py = sys.executable
    if v.kind == 'pipeline':
        return [py, '-m', 'pipeline', '--input', corpus, '--rejects', os.path.join(rundir, 'rejects'),
                '--segment_endpoint', receiver.url,
                '--summary_output', os.path.join(rundir, 'summary.json')] + v.extra
    if v.kind == 'reference':
        return [py, '-m', 'bench.reference', '--input', corpus, '--endpoint', receiver.url,
                '--in-flight', str(args.reference_in_flight),
                '--summary-output', os.path.join(rundir, 'summary.json')] + v.extra
    if v.kind == 'official':
        return [py, '-m', 'bench.official_client', '--input', corpus, '--host', receiver.base,
                '--threads', str(args.official_threads),
                '--summary-output', os.path.join(rundir, 'summary.json')] + v.extra
    raise ValueError(v.kind)


def _tail(path: str, n: int = 3) -> str:
    try:
        with open(path, 'rb') as fh:
            lines = fh.read().decode('utf-8', 'replace').strip().splitlines()
        return ' | '.join(lines[-n:])[:400]
    except OSError:
        return ''


def run_once(v: Variant, corpus: str, report, rundir: str, args, label: str) -> dict:
    os.makedirs(rundir, exist_ok=True)
    env = dict(os.environ, SEGMENT_WRITE_KEY=WRITE_KEY)
    warmed_s = warm_page_cache(corpus)[2]
    waited, load_before = 0.0, None
    if getattr(args, 'wait_quiet', 0):
        waited, load_before = wait_for_quiet(max_wait=args.wait_quiet)
        if waited > 5:
            print(f'  (waited {waited:.0f}s for other processes to quieten: '
                  f'{load_before:.2f} CPUs busy elsewhere)', flush=True)
    speed_ms = calibrate()
    code = code_fingerprint()
    receiver = Receiver(rundir, WRITE_KEY, str(ROOT)).start()
    try:
        cmd = command_for(v, corpus, rundir, receiver, args)
        busy0, self0, recv0 = machine_busy_s(), self_cpu_s(), process_cpu_s(receiver.proc.pid)
        io0 = io_stall_s()
        m: Measured = run_measured(cmd, env=env, cwd=str(ROOT),
                                   stdout_path=os.path.join(rundir, 'stdout.txt'),
                                   stderr_path=os.path.join(rundir, 'stderr.txt'),
                                   timeout=args.timeout)
        io1 = io_stall_s()
        receiver_cpu = process_cpu_s(receiver.proc.pid) - recv0
        busy = machine_busy_s() - busy0
        bench_cpu = self_cpu_s() - self0
        stats = receiver.stats()
        ids = receiver.message_ids()
    finally:
        receiver.stop()
    summary = None
    try:
        with open(os.path.join(rundir, 'summary.json')) as fh:
            summary = json.load(fh)
    except (OSError, ValueError):
        pass
    problems = []
    if m.returncode != 0:
        problems.append(f'exit status {m.returncode}: {_tail(m.stderr)}')
    if stats['accepted'] != report.eligible:
        problems.append(f'receiver accepted {stats["accepted"]} unique messageIds, '
                        f'{report.eligible} eligible')
    if ids != report.eligible_ids:
        problems.append(f'messageId sets differ: {len(report.eligible_ids - ids)} missing, '
                        f'{len(ids - report.eligible_ids)} unexpected')
    if stats.get('silently_dropped'):
        problems.append(f'{stats["silently_dropped"]} silently dropped (batch > 2,500)')
    if summary is None:
        problems.append('no summary written')
    elif summary.get('read') != report.events:
        problems.append(f'read {summary.get("read")} events, corpus has {report.events}')
    shutil.rmtree(os.path.join(rundir, 'rejects'), ignore_errors=True)
    result = {
        'variant': v.name, 'kind': v.kind, 'label': label, 'rundir': rundir, 'command': shlex.join(cmd),
        'ok': not problems, 'problems': problems,
        'events': report.events, 'eligible': report.eligible,
        'wall_s': m.wall_s, 'user_s': m.user_s, 'sys_s': m.sys_s, 'cpu_s': m.cpu_s,
        'events_per_s': report.events / m.wall_s if m.wall_s > 0 else 0.0,
        'cpu_s_per_1k': m.cpu_s / report.events * 1000 if report.events else 0.0,
        'maxrss_mib': m.maxrss_kb / MIB, 'tree_rss_peak_mib': m.tree_rss_peak_kb / MIB,
        'tree_pss_peak_mib': m.tree_pss_peak_kb / MIB, 'tree_procs_max': m.tree_procs_max,
        'receiver_cpu_s': receiver_cpu,
        # CPU used during the run by processes other than the measured tree, the receiver and
        # this benchmark process (other users of a shared machine); CPUs = seconds / wall.
        'foreign_cpu_s': max(0.0, busy - m.cpu_s - receiver_cpu - bench_cpu),
        'foreign_cpus': max(0.0, busy - m.cpu_s - receiver_cpu - bench_cpu) / m.wall_s if m.wall_s else 0.0,
        'bench_cpu_s': bench_cpu, 'waited_for_quiet_s': waited, 'calibration_ms': speed_ms,
        # seconds of the run in which every task waited for I/O (None: no /proc/pressure/io)
        'io_stall_s': io1 - io0 if io0 is not None and io1 is not None else None,
        'warm_cache_s': warmed_s,
        'code': code,
        'requests': stats.get('requests'), 'accepted': stats.get('accepted'),
        'duplicates': stats.get('duplicates'), 'max_batch_messages_seen': stats.get('max_batch_messages_seen'),
        'by_status': stats.get('by_status'),
    }
    status = 'ok' if result['ok'] else 'FAILED: ' + '; '.join(problems)
    print(f'  {label:<28} {v.name:<14} {result["events_per_s"]:>9,.0f} ev/s  wall {m.wall_s:6.1f}s  '
          f'cpu {m.cpu_s:6.1f}s  maxrss {result["maxrss_mib"]:6.0f} MiB  tree pss {result["tree_pss_peak_mib"]:5.0f} rss {result["tree_rss_peak_mib"]:5.0f} MiB  '
          f'receiver cpu {receiver_cpu:5.1f}s  other load {result["foreign_cpus"]:.2f} CPUs  '
          f'io stall {_stall(result)}  calib {speed_ms:.0f} ms  {status}',
          flush=True)
    return result


def _stall(run: dict) -> str:
    stall = run.get('io_stall_s')
    return 'n/a' if stall is None else f'{stall:.1f}s'


def paired_rounds(runs: List[dict]) -> List[dict]:
    """Per round (the runs that share a label), pipeline / reference: events/s and CPU per
    event. The variants of a round run one after the other, so a slow moment of the machine
    lands on fewer of them than on medians taken over all rounds separately."""
    by_label = {}
    for r in runs:
        by_label.setdefault(r['label'], {})[r['variant']] = r
    rows = []
    for label, v in by_label.items():
        p, ref = v.get('pipeline'), v.get('reference')
        if p and ref and p['ok'] and ref['ok'] and ref['events_per_s'] and ref['cpu_s_per_1k']:
            rows.append({'label': label, 'vs_reference': p['events_per_s'] / ref['events_per_s'],
                         'cpu_vs_reference': p['cpu_s_per_1k'] / ref['cpu_s_per_1k']})
    return rows


def aggregate(runs: List[dict]) -> dict:
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    return {
        'variant': runs[0]['variant'], 'runs': len(runs), 'ok': all(r['ok'] for r in runs),
        'events_per_s': med('events_per_s'),
        'events_per_s_min': min(r['events_per_s'] for r in runs),
        'events_per_s_max': max(r['events_per_s'] for r in runs),
        'wall_s': med('wall_s'), 'cpu_s': med('cpu_s'), 'cpu_s_per_1k': med('cpu_s_per_1k'),
        'maxrss_mib': max(r['maxrss_mib'] for r in runs),
        'maxrss_mib_median': med('maxrss_mib'),
        'tree_rss_peak_mib': max(r['tree_rss_peak_mib'] for r in runs),
        'tree_pss_peak_mib': max(r.get('tree_pss_peak_mib', 0) for r in runs),
        'tree_pss_median': med('tree_pss_peak_mib'),
        'tree_procs_max': max(r['tree_procs_max'] for r in runs),
        'receiver_cpu_s': med('receiver_cpu_s'), 'requests': runs[0]['requests'],
        'foreign_cpus': med('foreign_cpus'), 'foreign_cpus_max': max(r['foreign_cpus'] for r in runs),
    }


# ---------------------------------------------------------------------------------------------
# Machine and report

def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ''


def _cmd(args: List[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip('\n')
    except (OSError, subprocess.SubprocessError):
        return ''


def code_fingerprint() -> str:
    """sha1 over the measured code (pipeline/, transforms/, bench/ and devtools/ *.py: the
    receiver and the corpus generator shape the figures too), to tell versions apart."""
    import hashlib
    h = hashlib.sha1()
    for folder in ('pipeline', 'transforms', 'bench', 'devtools'):
        for path in sorted((ROOT / folder).glob('*.py')):
            h.update(path.relative_to(ROOT).as_posix().encode() + b'\0' + path.read_bytes())
    return h.hexdigest()[:12]


def machine() -> dict:
    info = _read('/proc/cpuinfo')
    def values(key):  # noqa: E306
        return [line.split(':', 1)[1].strip() for line in info.splitlines()
                if line.split(':', 1)[0].strip() == key]
    models = values('model name')
    versions = {}
    for dist in ('apache-beam', 'fastavro', 'requests', 'segment-analytics-python', 'urllib3'):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = 'not installed'
    return {
        'cpu_model': models[0] if models else platform.processor() or '?',
        'logical_cpus_in_cpuinfo': len(values('processor')),
        'cpu_mhz': values('cpu MHz')[:1], 'cache': values('cache size')[:1],
        'flags_sample': ' '.join(f for f in (values('flags')[:1] or [''])[0].split()
                                 if f in ('avx2', 'avx512f', 'sha_ni', 'aes', 'hypervisor')),
        'nproc': _cmd(['nproc']) or str(os.cpu_count()),
        'free': _cmd(['free', '-m']) or _read('/proc/meminfo')[:400],
        'kernel': platform.platform(), 'python': sys.version.split()[0], 'versions': versions,
    }


def _f(x, nd=0):
    return f'{x:,.{nd}f}'


def _ratio_line(label, value, target, higher_is_better=True, fmt='{:.2f}'):
    met = value >= target if higher_is_better else value <= target
    sign = '>=' if higher_is_better else '<='
    return f'| {label} | {fmt.format(value)} | {sign} {target:g} | {"met" if met else "**not met**"} |'


def _load_label(runs: List[dict]) -> tuple:
    """(median, max) of other processes' load over the runs, and a one-line verdict."""
    loads = [r['foreign_cpus'] for r in runs] or [0.0]
    med, top = statistics.median(loads), max(loads)
    if med > BUSY_CPUS:
        verdict = (f'**BUSY MACHINE: other processes used {med:.2f} CPUs (median over the runs; '
                   f'max {top:.2f}) of this machine\'s {os.cpu_count()}.** Wall-clock figures '
                   f'(events/s and their ratios) are distorted: the pipeline runs on every core '
                   f'and loses more to other load than the single-process variants. CPU s / 1k '
                   f'events and peak RSS stay comparable; re-run on a quiet machine for the ratios.')
    elif top > BUSY_CPUS:
        verdict = (f'Mostly quiet: other load median {med:.2f} CPUs, but some runs saw up to '
                   f'{top:.2f} (see "Every run"); their wall times are inflated.')
    else:
        verdict = f'Quiet machine: other load median {med:.2f} CPUs, max {top:.2f}.'
    return med, top, verdict


def _corpus_text(c: dict) -> str:
    return (f'{_f(c["events"])} events over {c["days"]} day(s) ({c["hours"]} date= hours), '
            f'{_f(c["files"])} Avro files ({c["types"]} event types, {c["mib"]:.0f} MiB, codecs '
            f'{c["codecs"]}), {_f(c["eligible"])} eligible, {_f(c["events"] - c["eligible"])} '
            f'without external_user_id (dropped), plus {c["other_files"]} files of other types '
            f'(skipped)')


def ratio_ceiling(reference_wall_s: float, reference_cpu_s: float, receiver_cpu_s: float,
                  cores: int) -> float:
    """The highest pipeline / reference ratio this machine allows: the pipeline doing exactly
    the reference's CPU work, with no start-up, contention or coordination, spread perfectly
    over every core, which it shares with the receiver (its CPU as measured in the pipeline's
    runs). The reference has a core of its own and the receiver the other."""
    floor_s = (reference_cpu_s + receiver_cpu_s) / max(1, cores)
    return reference_wall_s / floor_s if floor_s > 0 else float('inf')


def _targets(section: dict) -> Optional[dict]:
    a = section['aggregates']
    if not all(k in a for k in ('pipeline', 'reference', 'official')):
        return None
    p, r, o = a['pipeline'], a['reference'], a['official']
    return {'vs_reference': p['events_per_s'] / r['events_per_s'],
            'vs_reference_target': target_vs_reference(section['corpus']['events']),
            'vs_reference_ceiling': ratio_ceiling(r['wall_s'], r['cpu_s'], p['receiver_cpu_s'],
                                                  os.cpu_count() or 1),
            'vs_official': p['events_per_s'] / o['events_per_s'],
            'cpu_vs_reference': p['cpu_s_per_1k'] / r['cpu_s_per_1k'],
            'cpu_vs_official': p['cpu_s_per_1k'] / o['cpu_s_per_1k'],
            'rss': p['maxrss_mib'], 'tree_rss': p['tree_rss_peak_mib'],
            'tree_pss': p['tree_pss_peak_mib']}


def _met(ok: bool) -> str:
    return 'met' if ok else '**not met**'


def memory_scaling(sections: List[dict]) -> List[dict]:
    """Per days value: the pipeline's peak RSS at the smallest and the largest corpus."""
    rows = []
    for days in sorted({s['corpus']['days'] for s in sections}):
        runs = [(s['corpus']['events'], s['aggregates']['pipeline']) for s in sections
                if s['corpus']['days'] == days and 'pipeline' in s['aggregates']]
        if len(runs) < 2:
            continue
        (e1, a1), (e2, a2) = min(runs, key=lambda x: x[0]), max(runs, key=lambda x: x[0])
        if e2 <= e1:
            continue
        rows.append({'days': days, 'events_1': e1, 'events_2': e2, 'factor': e2 / e1,
                     'rss_1': a1['maxrss_mib_median'], 'rss_2': a2['maxrss_mib_median'],
                     'tree_1': a1['tree_pss_median'], 'tree_2': a2['tree_pss_median'],
                     'growth': a2['maxrss_mib_median'] / a1['maxrss_mib_median'],
                     'growth_tree': a2['tree_pss_median'] / max(a1['tree_pss_median'], 1e-9),
                     'ok': a1['ok'] and a2['ok']})
    return rows


def write_results(path: Path, ctx: dict) -> None:
    m = ctx['machine']
    smoke = ctx['smoke']
    runs_all = [r for s in ctx['sections'] for r in s['runs']]
    med, top, verdict = _load_label(runs_all)
    lines = [
        '# Benchmark results' + (' (smoke: correctness only, timings not meaningful)' if smoke else ''),
        '',
        f'Rewritten by every run of the command below. Generated {ctx["date"]}; code fingerprint '
        f'`{ctx["code"]}` (sha1 of pipeline/, transforms/, bench/, devtools/ *.py; checked again before every run); '
        f'the whole benchmark took {ctx["took_s"] / 60:.0f} min.',
        '',
        '```',
        ctx['command'],
        '```',
        '',
        f'Machine load: {verdict}',
        '',
    ]
    codes = sorted({r['code'] for r in runs_all})
    if len(codes) > 1:
        lines += [f'**Warning: the measured code changed during this benchmark** (fingerprints '
                  f'{", ".join(codes)}; see the last column of "Every run"): figures mix versions.', '']
    rows = [(s, _targets(s)) for s in ctx['sections']]
    if not smoke and any(t for _, t in rows):
        lines += [
            '## Targets per corpus (reported, not asserted)',
            '',
            '| corpus | pipeline events/s | reference | official | pipeline / reference (target) | '
            'pipeline / reference ceiling on this machine (see below) | '
            'pipeline / official (target >= 2.5) | CPU per event, pipeline / reference (target <= 1.25) | '
            'pipeline peak memory MiB: largest process RSS / tree PSS (target <= 1024) [tree RSS sum] | other load, CPUs |',
            '|---|---|---|---|---|---|---|---|---|---|',
        ]
        for s, t in rows:
            if not t:
                continue
            a, c = s['aggregates'], s['corpus']
            lines.append(
                f'| {_f(c["events"])} events, {c["days"]} d | {_f(a["pipeline"]["events_per_s"])} | '
                f'{_f(a["reference"]["events_per_s"])} | {_f(a["official"]["events_per_s"])} | '
                f'{t["vs_reference"]:.2f} (>= {t["vs_reference_target"]:g}: '
                f'{_met(t["vs_reference"] >= t["vs_reference_target"])}) | '
                f'{t["vs_reference_ceiling"]:.2f} | '
                f'{t["vs_official"]:.2f} ({_met(t["vs_official"] >= TARGET_VS_OFFICIAL)}) | '
                f'{t["cpu_vs_reference"]:.2f} ({_met(t["cpu_vs_reference"] <= TARGET_CPU_VS_REFERENCE)}) | '
                f'{t["rss"]:.0f} / {t["tree_pss"]:.0f} ({_met(max(t["rss"], t["tree_pss"]) <= TARGET_RSS_MIB)}) '
                f'[{t["tree_rss"]:.0f}] | '
                f'{statistics.median(r["foreign_cpus"] for r in s["runs"]):.2f} |')
        lines += [
            '',
            f'The ceiling is the ratio the pipeline would reach if it did exactly the reference\'s '
            f'CPU work with no start-up, contention or coordination, spread perfectly over the '
            f'{os.cpu_count()} cores it shares with the receiver: reference wall s / ((reference '
            f'CPU s + the receiver\'s CPU s in the pipeline\'s runs) / cores). No pipeline on this '
            f'machine can exceed it; a target above it cannot be met here.', '']
        paired = [(s, paired_rounds(s['runs'])) for s, t in rows if t]
        if any(p for _, p in paired):
            lines += [
                '## Pipeline / reference round by round',
                '',
                'The variants of a round run one after the other; the ratio within a round meets '
                'fewer of the machine\'s slow moments than the table above, which divides medians '
                'taken separately.',
                '',
                '| corpus | events/s ratio per round (median) | CPU per event ratio per round (median) |',
                '|---|---|---|',
            ]
            for s, p in paired:
                if not p:
                    continue
                c = s['corpus']
                speed = ', '.join(f'{r["vs_reference"]:.2f}' for r in p)
                cpu = ', '.join(f'{r["cpu_vs_reference"]:.2f}' for r in p)
                lines.append(
                    f'| {_f(c["events"])} events, {c["days"]} d | {speed} '
                    f'({statistics.median(r["vs_reference"] for r in p):.2f}) | {cpu} '
                    f'({statistics.median(r["cpu_vs_reference"] for r in p):.2f}) |')
            lines.append('')
    scaling = memory_scaling(ctx['sections'])
    if scaling:
        lines += [
            '## Memory scaling (the pipeline, smallest vs largest corpus of the same days)',
            '',
            '| days | events | peak RSS MiB, largest process (ru_maxrss, median) | tree PSS peak MiB (median) | growth, largest process / tree (target <= 1.3) |',
            '|---|---|---|---|---|',
        ]
        for g in scaling:
            lines.append(
                f'| {g["days"]} | {_f(g["events_1"])} -> {_f(g["events_2"])} ({g["factor"]:.0f}x) | '
                f'{g["rss_1"]:.0f} -> {g["rss_2"]:.0f} | {g["tree_1"]:.0f} -> {g["tree_2"]:.0f} | '
                f'{g["growth"]:.2f} / {g["growth_tree"]:.2f} '
                f'({_met(max(g["growth"], g["growth_tree"]) <= TARGET_RSS_GROWTH_4X)}) |')
        lines.append('')
    lines += [
        '## Machine',
        '',
        f'- CPU: {m["cpu_model"]} — {m["logical_cpus_in_cpuinfo"]} logical CPUs in /proc/cpuinfo, '
        f'`nproc` = {m["nproc"]}; MHz {", ".join(m["cpu_mhz"]) or "?"}, cache {", ".join(m["cache"]) or "?"}'
        + (f', flags incl. {m["flags_sample"]}' if m['flags_sample'] else ''),
        f'- OS: {m["kernel"]}; Python {m["python"]}; '
        + ', '.join(f'{k} {v}' for k, v in m['versions'].items()),
        f'- Other load during the runs (CPUs used by other processes): median {med:.2f}, max {top:.2f}.',
        '- `free -m`:',
        '',
        '```',
        m['free'],
        '```',
        '',
    ]
    for s in ctx['sections']:
        c = s['corpus']
        n = max(len(rs) for rs in s['by_variant'].values()) if s['by_variant'] else 0
        lines += [
            f'## {_f(c["events"])} events over {c["days"]} day(s)',
            '',
            f'`devtools.sample.generate(events={c["events_requested"]}, seed={c["seed"]}, '
            f'hours={c["hours"]}, codecs={tuple(c["codecs"].split(","))})`: {_corpus_text(c)}. '
            'The events/s denominator is the events read from the corpus (the same for every variant).',
            '',
            f'Median of {n} run{"s" if n != 1 else ""} each, runs interleaved:',
            '',
            '| variant | what | status | events/s (min–max) | wall s | CPU s | CPU s / 1k events | peak RSS MiB (ru_maxrss) | tree PSS peak MiB | tree RSS peak MiB (sampled sum) | receiver CPU s | other load, CPUs (median / max) |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|',
        ]
        for v in ctx['variants']:
            a = s['aggregates'].get(v.name)
            if not a:
                continue
            lines.append(
                f'| {v.name} | {v.note} | {"OK" if a["ok"] else "**FAILED**"} | '
                f'{_f(a["events_per_s"])} ({_f(a["events_per_s_min"])}–{_f(a["events_per_s_max"])}) | '
                f'{a["wall_s"]:.1f} | {a["cpu_s"]:.1f} | {a["cpu_s_per_1k"]:.4f} | {a["maxrss_mib"]:.0f} | '
                f'{a["tree_pss_peak_mib"]:.0f} | {a["tree_rss_peak_mib"]:.0f} ({a["tree_procs_max"]} proc) | {a["receiver_cpu_s"]:.1f} | '
                f'{a["foreign_cpus"]:.2f} / {a["foreign_cpus_max"]:.2f} |')
        t = _targets(s)
        if t and not smoke:
            lines += ['', f'pipeline / reference {t["vs_reference"]:.2f}x, pipeline / official '
                          f'{t["vs_official"]:.2f}x (events/s); CPU per event: pipeline / reference '
                          f'{t["cpu_vs_reference"]:.2f}x, pipeline / official {t["cpu_vs_official"]:.2f}x '
                          '(CPU s / 1k events of the measured process tree; the receiver\'s CPU is not included).']
        lines.append('')
    lines += [
        '## Every run',
        '',
        '| # | corpus | variant | status | events/s | wall s | CPU s (user+sys) | ru_maxrss MiB | tree PSS MiB | tree RSS MiB (procs) | requests | receiver CPU s | other load, CPUs | I/O stall s | calibration ms | code |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for i, r in enumerate(runs_all, 1):
        status = 'OK' if r['ok'] else '**FAILED**: ' + '; '.join(r['problems']).replace('|', '/')
        lines.append(f'| {i} | {r["corpus"]} | {r["variant"]} ({r["label"]}) | {status} | {_f(r["events_per_s"])} | '
                     f'{r["wall_s"]:.1f} | {r["cpu_s"]:.1f} ({r["user_s"]:.1f}+{r["sys_s"]:.1f}) | '
                     f'{r["maxrss_mib"]:.0f} | {r.get("tree_pss_peak_mib", 0):.0f} | {r["tree_rss_peak_mib"]:.0f} ({r["tree_procs_max"]}) | {r["requests"]} | '
                     f'{r["receiver_cpu_s"]:.1f} | {r["foreign_cpus"]:.2f} | {_stall(r)} | {r["calibration_ms"]:.0f} | '
                     f'`{r["code"]}` |')
    lines += [
        '',
        '## Method',
        '',
        '- Every run: a fresh `python -m devtools.receiver` (the project\'s receiver, its own process), '
        'then the variant as a subprocess with `SEGMENT_WRITE_KEY` set; wall time is from start to exit '
        'of that subprocess (interpreter start, imports and Beam\'s pipeline construction included). '
        'A run is OK only if it exited 0, read every event, and the receiver\'s accepted unique messageIds '
        'equal the corpus\'s eligible ids (same count, same set).',
        '- Before the runs the project\'s modules are byte-compiled once (`compileall`), as pip does '
        'for an installed package; this machine sets PYTHONDONTWRITEBYTECODE, so otherwise every '
        'variant would recompile them at every start.',
        '- CPU s: user+sys from `os.wait4` on the subprocess — its own time plus that of every '
        'descendant it waited for (Beam waits for its multi_processing SDK workers; warm workers are '
        'children of the zygote, which the launcher waits for), i.e. the process tree.',
        '- Peak RSS (ru_maxrss): from the same `os.wait4`; Linux reports the largest peak of any *single* '
        'process of the tree (exact). "tree RSS peak": the sum of VmRSS of the subprocess and all '
        'descendants, sampled every 0.2 s (shared pages counted per process, so an upper bound for '
        'multi_processing; may miss short spikes). The receiver\'s memory is not included. The "procs" '
        'count shows how many processes the variant ran (the pipeline may choose worker processes '
        'itself for large inputs).',
        '- Receiver CPU: the receiver\'s own user+sys while the variant ran (/proc/PID/stat before and after; '
        'it parses, validates and re-encodes every message; on a 2-CPU machine it competes with the '
        'measured process, see the note below).',
        '- Other load: CPU used during the run by processes other than the measured tree, the receiver '
        'and the benchmark itself (/proc/stat), divided by the run\'s wall time. The machine may be '
        'shared (other test suites); a run with other load above ~0.2 CPUs has an inflated wall time '
        'and a lower events/s, while its CPU s / 1k events stays comparable. Before each run the '
        f'benchmark waits (up to {ctx["wait_quiet"]:g}s) until other load is below 0.3 CPUs.',
        '- Page cache: before each run the benchmark reads every file of the corpus once (not '
        'timed), so that every variant reads from memory. This VM\'s kernel reclaims pages left '
        'unused for a while, and a corpus untouched since the previous round was partly read from '
        'disk again, stalling whichever variant came first. I/O stall s: the seconds of the run in '
        'which every task waited for I/O (/proc/pressure/io, "full"); it should be near 0.',
        '- Calibration ms: a fixed pure-Python loop timed just before each run (best of 3). It drifts on '
        'this virtual machine even when no other process is busy (the host is shared); runs with a '
        'higher value ran on a slower CPU, which shows in both their wall and CPU time.',
        f'- reference: `bench/reference.py` — os.walk + the project\'s FileSelector, fastavro, the project\'s '
        f'MessageMapper + serialize, BatchPacker, one pooled requests.Session, Basic auth, '
        f'{ctx["reference_in_flight"]} request(s) in flight.',
        f'- official: `bench/official_client.py` — `segment.analytics.Client(write_key, host=..., '
        f'upload_size=2500, max_queue_size=10000, upload_interval=0.5, thread={ctx["official_threads"]}, '
        'gzip=False)`, fields from the project\'s MessageMapper, `track(...)` per event (producer waits '
        'while the queue is full), `flush()` + `join()`.',
        '- Note: the local receiver is pure Python and single-process (GIL); on this 2-CPU machine its CPU per '
        'run is shown above. When a variant\'s wall time is close to the receiver\'s CPU time, the '
        'receiver, not the variant, bounds events/s; CPU s / 1k events then says more about the variant.',
        '',
    ]
    path.write_text('\n'.join(lines))


# ---------------------------------------------------------------------------------------------

def make_corpus(directory: str, events: int, days: int, seed: int, codecs: str) -> tuple:
    from devtools.sample import generate
    t0 = time.perf_counter()
    report = generate(directory, events=events, seed=seed, hours=24 * days,
                      codecs=tuple(codecs.split(',')))
    took = time.perf_counter() - t0
    size = sum(os.path.getsize(f) for f in report.files)
    info = {'events_requested': events, 'seed': seed, 'days': days, 'hours': 24 * days,
            'codecs': codecs, 'events': report.events, 'eligible': report.eligible,
            'files': len(report.files), 'other_files': len(report.other_files),
            'types': sum(1 for v in report.by_type.values() if v['events']),
            'mib': size / MIB / MIB, 'generate_s': took}
    print(f'corpus: {report.events:,} events ({report.eligible:,} eligible) over {days} day(s) in '
          f'{len(report.files)} files, {info["mib"]:.0f} MiB, generated in {took:.1f}s at {directory}',
          flush=True)
    return report, info


def _int_list(text: str) -> List[int]:
    try:
        values = [int(x) for x in text.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated integers, got {text!r}')
    if not values:
        raise argparse.ArgumentTypeError('empty list')
    return values


def parse_args(argv):
    p = argparse.ArgumentParser(prog='python -m bench.run', description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n', 2)[2])
    p.add_argument('--events', type=_int_list, default=None,
                   help=f'corpus size(s), comma-separated (default {DEFAULT_EVENTS}; smoke {SMOKE_EVENTS})')
    p.add_argument('--days', type=_int_list, default=None,
                   help=f'days of date= hours each corpus spans, comma-separated (default {DEFAULT_DAYS}; '
                        f'smoke {SMOKE_DAYS}); every events x days pair is one corpus')
    p.add_argument('--codecs', default=DEFAULT_CODECS,
                   help=f'Avro codecs, used file by file in turn (default {DEFAULT_CODECS})')
    p.add_argument('--runs', type=int, default=None, help='runs per variant (default 3; smoke 1)')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--smoke', action='store_true', help='tiny corpus, 1 run each, correctness only')
    p.add_argument('--scale-check', action='store_true',
                   help='also the pipeline alone on 4x the first corpus size, for each --days (peak RSS)')
    p.add_argument('--scale-runs', type=int, default=1, help='pipeline runs at 4x (default 1)')
    p.add_argument('--no-variants', action='store_true', help='skip the pipeline flag variants (24h, 1w, mt2, mp2)')
    p.add_argument('--only', help='comma-separated variant names to run (e.g. "pipeline,reference")')
    p.add_argument('--reference-in-flight', type=int, default=None, help='reference: concurrent requests')
    p.add_argument('--official-threads', type=int, default=None, help='official client: consumer threads')
    p.add_argument('--workdir', help='where corpora and run files go (default: a temp dir, removed)')
    p.add_argument('--keep', action='store_true', help='keep the workdir and its corpora')
    p.add_argument('--results', help=f'Markdown report (default {DEFAULT_RESULTS.relative_to(ROOT)}; '
                                     'smoke: none unless given)')
    p.add_argument('--json', help='also write all figures as JSON here')
    p.add_argument('--timeout', type=float, default=3600.0, help='seconds per run before it is killed')
    p.add_argument('--wait-quiet', type=float, default=None,
                   help='before each run wait up to this many seconds until other processes use < 0.3 '
                        'CPUs (default 120; smoke 0 = no wait)')
    args = p.parse_args(argv)
    from bench import official_client, reference
    if args.reference_in_flight is None:
        args.reference_in_flight = reference.DEFAULT_IN_FLIGHT
    if args.official_threads is None:
        args.official_threads = official_client.DEFAULT_THREADS
    if args.events is None:
        args.events = [SMOKE_EVENTS if args.smoke else DEFAULT_EVENTS]
    if args.days is None:
        args.days = [SMOKE_DAYS if args.smoke else DEFAULT_DAYS]
    if args.runs is None:
        args.runs = 1 if args.smoke else 3
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.smoke else 120.0
    if args.smoke:
        args.no_variants = True
        args.scale_check = False
    if min(args.events) < 34 or args.runs < 1 or min(args.days) < 1 or max(args.days) > 366:
        p.error('--events must be >= 34, --days between 1 and 366 and --runs >= 1')
    from devtools.sample import CODECS
    if not set(args.codecs.split(',')) <= set(CODECS):
        p.error(f'--codecs: each of {", ".join(CODECS)}')
    return args


def compile_project() -> None:
    """Byte-compile the project once, as pip does for an installed package.

    Every variant imports project modules; with PYTHONDONTWRITEBYTECODE set (as on this
    machine) each run would otherwise recompile them (~0.2 s of the launcher's start-up).
    Python checks the sources' mtimes, so a stale file is never used.
    """
    import compileall
    for package in ('pipeline', 'transforms', 'bench', 'devtools'):
        compileall.compile_dir(str(ROOT / package), quiet=1)


def measure_corpus(workdir: str, events: int, days: int, variants: List[Variant], runs: int,
                   args, counter: List[int], label: str = '') -> dict:
    """One section: generate the corpus, run every variant `runs` times interleaved, remove it."""
    name = f'{events // 1000}k-{days}d'
    corpus_dir = os.path.join(workdir, f'corpus-{name}')
    shutil.rmtree(corpus_dir, ignore_errors=True)
    report, info = make_corpus(corpus_dir, events, days, args.seed, args.codecs)
    by_variant: Dict[str, List[dict]] = {v.name: [] for v in variants}
    runs_all = []
    try:
        for round_no in range(runs):
            for v in variants:
                counter[0] += 1
                rundir = os.path.join(workdir, 'runs', f'{counter[0]:03d}-{name}-{v.name.replace(" ", "-")}')
                r = run_once(v, corpus_dir, report, rundir, args,
                             label or f'round {round_no + 1}/{runs}')
                r['corpus'] = f'{events // 1000}k {days}d'
                runs_all.append(r)
                by_variant[v.name].append(r)
    finally:
        if not args.keep:
            shutil.rmtree(corpus_dir, ignore_errors=True)
    return {'corpus': info, 'runs': runs_all, 'by_variant': by_variant,
            'aggregates': {n: aggregate(rs) for n, rs in by_variant.items() if rs}}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = shlex.join(['python', '-m', 'bench.run'] + argv)
    variants = MAIN + ([] if args.no_variants else FLAG_VARIANTS)
    if args.only:
        wanted = {n.strip() for n in args.only.split(',')}
        variants = [v for v in MAIN + FLAG_VARIANTS if v.name in wanted]
        if not variants:
            print(f'bench.run: error: --only matches no variant ({", ".join(v.name for v in MAIN + FLAG_VARIANTS)})',
                  file=sys.stderr)
            return 2
    workdir = args.workdir or tempfile.mkdtemp(prefix='currents-bench-')
    os.makedirs(workdir, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    code = code_fingerprint()
    compile_project()
    print(f'bench: {command}\nworkdir: {workdir}', flush=True)
    sections: List[dict] = []
    counter = [0]
    try:
        for events in args.events:
            for days in args.days:
                sections.append(measure_corpus(workdir, events, days, variants, args.runs, args, counter))
        if args.scale_check and any(v.name == 'pipeline' for v in variants):
            for days in args.days:
                sections.append(measure_corpus(workdir, args.events[0] * 4, days, [MAIN[0]],
                                               args.scale_runs, args, counter, '4x corpus'))
        runs_all = [r for s in sections for r in s['runs']]
        ok = all(r['ok'] for r in runs_all)
        ctx = {'machine': machine(), 'code': code, 'smoke': args.smoke, 'runs': args.runs,
               'date': started.strftime('%Y-%m-%d %H:%M UTC'), 'command': command,
               'variants': variants, 'sections': sections, 'took_s': time.monotonic() - t0,
               'reference_in_flight': args.reference_in_flight, 'wait_quiet': args.wait_quiet,
               'official_threads': args.official_threads}
        print_summary(ctx)
        results = args.results or (None if args.smoke else str(DEFAULT_RESULTS))
        if results:
            write_results(Path(results), ctx)
            print(f'results written to {results}')
        if args.json:
            out = {k: v for k, v in ctx.items() if k not in ('variants', 'sections')}
            out['variants'] = [v.__dict__ for v in variants]
            out['sections'] = [{k: v for k, v in s.items() if k != 'by_variant'} for s in sections]
            out['runs_all'] = runs_all
            out['memory_scaling'] = memory_scaling(sections)
            out['ok'] = ok
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if not ok:
        print('bench: at least one run FAILED (see above)', file=sys.stderr)
    if len({r['code'] for r in runs_all}) > 1:
        print('bench: warning: pipeline/transforms/bench code changed during the benchmark; '
              'figures mix versions', file=sys.stderr)
    return 0 if ok else 1


def print_summary(ctx) -> None:
    for s in ctx['sections']:
        c = s['corpus']
        print(f'\n{c["events"]:,} events over {c["days"]} day(s), {c["files"]} files')
        print('variant         status    events/s   CPU s/1k ev   peak RSS MiB   tree PSS MiB   other load')
        for name, a in s['aggregates'].items():
            print(f'{name:<15} {"OK" if a["ok"] else "FAILED":<8} {a["events_per_s"]:>9,.0f}   '
                  f'{a["cpu_s_per_1k"]:>10.4f}   {a["maxrss_mib"]:>12.0f}   {a["tree_pss_peak_mib"]:>12.0f}'
                  f'   {a["foreign_cpus"]:>8.2f}')
        t = _targets(s)
        if t and not ctx['smoke']:
            print(f'pipeline/reference {t["vs_reference"]:.2f}x   pipeline/official {t["vs_official"]:.2f}x   '
                  f'CPU per event pipeline/reference {t["cpu_vs_reference"]:.2f}x')
    for g in memory_scaling(ctx['sections']):
        print(f'{g["days"]} d: peak RSS {g["rss_1"]:.0f} -> {g["rss_2"]:.0f} MiB ({g["growth"]:.2f}x), '
              f'tree {g["tree_1"]:.0f} -> {g["tree_2"]:.0f} MiB ({g["growth_tree"]:.2f}x) '
              f'for {g["factor"]:.0f}x the events')
    print(_load_label([r for s in ctx['sections'] for r in s['runs']])[2])


if __name__ == '__main__':
    sys.exit(main())
