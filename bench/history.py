"""Benchmark: what a run costs as the bucket's history grows (its range held constant).

    python -m bench.history                                   # 10k, 100k, 1M local; S3 to 100k
    python -m bench.history --local 10000,100000 --s3 10000 --rounds 2
    python -m bench.history --checkout /path/to/an/older/checkout --results /tmp/before.md

Three runs a scheduled or backfilling user makes, each over a history of 10,000, 100,000 and
1,000,000 objects before the hour they read (a local tree of hard links, devtools/history.py;
and an S3 bucket in moto, objects put in its backend, to 100,000):

  plan      python -m pipeline --input IN --plan --start H --end H+1
  one hour  python -m pipeline --input IN --rejects R --segment_endpoint URL --start H --end H+1
  since     python -m pipeline ... --since_last_run   after a first pass, with one new object

Each command runs as a user would start it (bench/measure.py: wall time, peak RSS of the largest
process), to a fresh local receiver (bench/receiver.py); S3's LIST requests are counted by the
moto server, which runs in this process. The targets (reported, never asserted): at most 1.2x
from the smallest history to the largest, and a one-hour run over a million objects in under
10 s. `--checkout` runs another checkout's command (PYTHONPATH) with this benchmark, for a
before/after table.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from bench.measure import run_measured
from bench.receiver import Receiver
from devtools.history import DAY, FILES_PER_HOUR, TYPES, build

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = 'bench-write-key-not-secret'
HOUR = DAY + datetime.timedelta(hours=5)     # the hour read
TARGET_GROWTH = 1.2
TARGET_ONE_HOUR_1M_S = 10.0
KINDS = ('plan', 'one hour', 'since')


def _hour(h: datetime.datetime) -> str:
    return h.strftime('%Y-%m-%d-%H')


ONE_HOUR = ['--start', _hour(HOUR), '--end', _hour(HOUR + datetime.timedelta(hours=1))]


class Bench:
    def __init__(self, workdir: Path, checkout: Path, rounds: int, kinds=KINDS):
        self.kinds = kinds
        self.workdir = workdir
        self.checkout = checkout
        self.rounds = rounds
        self.env = dict(os.environ, SEGMENT_WRITE_KEY=WRITE_KEY, PYTHONPATH=str(checkout))

    def command(self, argv: List[str], name: str, env: Optional[dict] = None):
        out = self.workdir / f'{name}.out'
        err = self.workdir / f'{name}.err'
        found = run_measured([sys.executable, '-m', 'pipeline', *map(str, argv)],
                             env=env or self.env, cwd=str(self.checkout),
                             stdout_path=str(out), stderr_path=str(err), timeout=900)
        if found.returncode != 0:
            raise RuntimeError(f'{name}: exit {found.returncode}: '
                               f'{err.read_text()[-500:] or out.read_text()[-500:]}')
        return found, out.read_text()

    def rounds_of(self, input_path: str, tag: str, extra: List[str], env=None,
                  new_file=None, lists=None) -> Dict[str, List[dict]]:
        """Every kind, `rounds` times: wall seconds, peak RSS MiB (and LIST requests)."""
        found: Dict[str, List[dict]] = {kind: [] for kind in self.kinds}
        for r in range(self.rounds):
            for kind in self.kinds:
                receiver = Receiver(str(self.workdir / f'recv-{tag}-{r}'), WRITE_KEY,
                                    str(ROOT)).start()
                try:
                    rejects = f'{extra[0]}/{tag}-{kind.replace(" ", "")}-{r}' if extra else \
                        str(self.workdir / f'rejects-{tag}-{kind.replace(" ", "")}-{r}')
                    base = ['--input', input_path, '--progress_seconds', '0']
                    opts = extra[1:]
                    if kind == 'plan':
                        argv = base + ['--plan'] + ONE_HOUR + opts
                    elif kind == 'one hour':
                        argv = base + ['--rejects', rejects, '--segment_endpoint',
                                       receiver.url] + ONE_HOUR + opts
                    else:
                        argv = base + ['--rejects', rejects, '--segment_endpoint', receiver.url,
                                       '--since_last_run'] + opts
                        self.command(argv + ['--start', _hour(DAY)], f'{tag}-first-{r}', env)
                        new_file(r)
                    mark = lists.mark() if lists else None
                    measured, _ = self.command(argv, f'{tag}-{kind.replace(" ", "")}-{r}', env)
                    row = {'s': measured.wall_s, 'rss': measured.maxrss_kb / 1024}
                    if lists:
                        row['lists'] = lists.lists(mark)
                    found[kind].append(row)
                finally:
                    receiver.stop()
        return found


def local_history(bench: Bench, sizes: List[int]) -> Dict[int, dict]:
    results = {}
    for size in sizes:
        folder = bench.workdir / f'local-{size}'
        tree = build(folder, size)
        print(f'local tree: {tree.objects:,} objects', file=sys.stderr, flush=True)

        def new_file(r, tree=tree):
            source = next(tree.root.rglob('day+5+0.avro'))
            target = source.with_name(f'new+{r}.avro')
            if not target.exists():
                shutil.copyfile(source, target)
        results[size] = bench.rounds_of(str(tree.root), f'local{size}', [],
                                        new_file=new_file)
        shutil.rmtree(folder, ignore_errors=True)
    return results


def s3_history(bench: Bench, sizes: List[int]) -> Dict[int, dict]:
    from tests.s3_emulator import REGION, InProcessMoto
    from devtools.history import PREFIX
    results = {}
    with InProcessMoto() as server:
        env = dict(bench.env, AWS_ACCESS_KEY_ID='testing', AWS_SECRET_ACCESS_KEY='testing',
                   AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL_S3=server.url,
                   AWS_EC2_METADATA_DISABLED='true')

        class Lists:
            @staticmethod
            def mark():
                return len(server.requests)

            @staticmethod
            def lists(mark):
                return server.lists(mark)
        for size in sizes:
            bucket = f'history-{size}'
            client = server.client()
            client.create_bucket(Bucket=bucket)
            client.create_bucket(Bucket=f'{bucket}-out')
            tree = build(bench.workdir / 's3-day', len(TYPES) * 24 * FILES_PER_HOUR)
            for path in tree.root.rglob('*.avro'):
                client.put_object(Bucket=bucket, Key=str(path.relative_to(tree.root.parent)),
                                  Body=path.read_bytes())
            day = next(tree.root.rglob('day+5+0.avro'))
            day_key, day_bytes = str(day.relative_to(tree.root.parent)), day.read_bytes()
            history = (f'{PREFIX}/event_type={TYPES[i % len(TYPES)]}/date='
                       f'{_hour(DAY - datetime.timedelta(hours=3 + i // len(TYPES) % 5000))}'
                       f'/version=10/us-01/old+{i}.avro' for i in range(size))
            server.inject(bucket, history)
            shutil.rmtree(bench.workdir / 's3-day', ignore_errors=True)

            def new_file(r, bucket=bucket, key=day_key, data=day_bytes):
                client.put_object(Bucket=bucket, Key=key.replace('day+5+0', f'new+{r}'),
                                  Body=data)
            results[size] = bench.rounds_of(f's3://{bucket}/currents', f's3-{size}',
                                            [f's3://{bucket}-out', '--s3_region_name',
                                             REGION], env=env, new_file=new_file, lists=Lists)
            results[size]['list_ms'] = _one_list_ms(client, bucket, day_key)
    return results


def _one_list_ms(client, bucket: str, key: str, times: int = 20) -> float:
    """What moto takes to answer one ranged LIST (a type folder from the hour read): it scans
    every key of the bucket for each request, so the same requests cost more on a bigger bucket."""
    folder = key.split('/date=')[0] + '/'
    start = time.perf_counter()
    for _ in range(times):
        client.list_objects_v2(Bucket=bucket, Prefix=folder, StartAfter=folder + 'date=' + _hour(HOUR),
                               MaxKeys=1000)
    return (time.perf_counter() - start) / times * 1000


def _median(rows: List[dict], key: str) -> Optional[float]:
    values = [r[key] for r in rows if key in r]
    return statistics.median(values) if values else None


def table(title: str, results: Dict[int, dict]) -> List[str]:
    sizes = sorted(results)
    lines = [f'### {title}', '',
             '| run | ' + ' | '.join(f'{s:,} objects' for s in sizes)
             + f' | growth, {sizes[0]:,} -> {sizes[-1]:,} (target <= {TARGET_GROWTH}) |',
             '|---|' + '---|' * (len(sizes) + 1)]
    for kind in [k for k in KINDS if k in results[sizes[0]]]:
        cells, growth = [], []
        for size in sizes:
            rows = results[size][kind]
            s, rss, lists = (_median(rows, k) for k in ('s', 'rss', 'lists'))
            cells.append(f'{s:.2f} s, {rss:.0f} MiB' + (f', {lists:.0f} LIST' if lists
                                                       is not None else ''))
        first, last = results[sizes[0]][kind], results[sizes[-1]][kind]
        for key, name in (('s', 'time'), ('rss', 'memory'), ('lists', 'LIST')):
            a, b = _median(first, key), _median(last, key)
            if a and b is not None:
                ratio = b / a
                growth.append(f'{name} {ratio:.2f}' + (' met' if ratio <= TARGET_GROWTH
                                                      else ' NOT met'))
        lines.append(f'| {kind} | ' + ' | '.join(cells) + ' | ' + ', '.join(growth) + ' |')
    lines.append('')
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--local', default='10000,100000,1000000')
    parser.add_argument('--s3', default='10000,100000')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--checkout', default=str(ROOT))
    parser.add_argument('--results', default=str(ROOT / 'bench' / 'HISTORY.md'))
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--kinds', default=','.join(KINDS),
                        help='some of the runs only, e.g. "plan,one hour" (an older checkout '
                             'whose since_last_run reads the whole history takes hours)')
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(','))
    if not set(kinds) <= set(KINDS):
        parser.error(f'--kinds: choose from {", ".join(KINDS)}')
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix='bench-history-'))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(workdir, Path(args.checkout).resolve(), args.rounds, kinds)
    started = time.time()
    sizes = lambda text: [int(s) for s in text.split(',') if s]   # noqa: E731
    local = local_history(bench, sizes(args.local)) if args.local else {}
    s3 = s3_history(bench, sizes(args.s3)) if args.s3 else {}
    lines = ['# History-scaling benchmark', '',
             f'Rewritten by every run of `python -m bench.history` (see bench/history.py). '
             f'Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, '
             f'{args.rounds} rounds, medians; the whole benchmark took '
             f'{(time.time() - started) / 60:.0f} min. The hour read holds {len(TYPES)} event '
             f'types x {FILES_PER_HOUR} files; the history lies before it.', '']
    if local:
        lines += table('Local tree (hard links)', local)
        big = max(local)
        one_hour = _median(local[big]['one hour'], 's')
        met = 'met' if one_hour < TARGET_ONE_HOUR_1M_S else 'NOT met'
        lines += [f'One-hour run over {big:,} objects: {one_hour:.2f} s (target < '
                  f'{TARGET_ONE_HOUR_1M_S:g} s: {met}).', '']
    if s3:
        lines += table('S3 (moto, in process)', s3)
        lines += ['The LIST requests are the same at every size; their time is the emulator\'s: moto '
                  'answers a ranged LIST by scanning every key of the bucket, '
                  + ', '.join(f'{s3[size]["list_ms"]:.0f} ms per LIST at {size:,} objects'
                              for size in sorted(s3))
                  + ' (measured after the runs, 20 requests each), so the time column measures '
                  'moto here; the LIST column is what a run costs on a real bucket.', '']
    Path(args.results).write_text('\n'.join(lines))
    json.dump({'local': local, 's3': s3}, open(workdir / 'history.json', 'w'), indent=1)
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
