"""The benchmark's smoke mode: every variant delivers every eligible event (no timing claims)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_every_variant_delivers_every_eligible_event(tmp_path):
    """A small corpus over 2 days of date= hours, codecs mixed: each variant, and the pipeline
    cut into one wave per day, delivers exactly the eligible events."""
    out = tmp_path / 'bench.json'
    report = tmp_path / 'RESULTS.md'
    proc = subprocess.run(
        [sys.executable, '-m', 'bench.run', '--smoke', '--json', str(out), '--results', str(report),
         '--only', 'pipeline,reference,official,pipeline 24h', '--workdir', str(tmp_path / 'work')],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data['ok'] is True
    [section] = data['sections']
    corpus = section['corpus']
    assert corpus['days'] == 2 and corpus['hours'] == 48 and corpus['codecs'] == 'null,deflate,snappy'
    assert corpus['types'] == 34 and 0 < corpus['eligible'] < corpus['events'] == 2000
    runs = data['runs_all']
    assert sorted(r['variant'] for r in runs) == ['official', 'pipeline', 'pipeline 24h', 'reference']
    for r in runs:
        assert r['ok'], (r['variant'], r['problems'])
        assert r['problems'] == []
        assert r['events'] == corpus['events']
        assert r['accepted'] == r['eligible'] == corpus['eligible'], r['variant']
        assert r['max_batch_messages_seen'] <= 2500
    waves = {r['variant']: (Path(r['rundir']) / 'stdout.txt').read_text() for r in runs
             if r['kind'] == 'pipeline'}
    assert 'wave 2/2 done' in waves['pipeline 24h'] and 'wave 1/' not in waves['pipeline']
    text = report.read_text()
    assert 'smoke' in text and '| pipeline |' in text and 'FAILED' not in text
    assert '2,000 events over 2 day(s)' in text and 'Machine load:' in text


def test_bench_marks_a_run_that_loses_or_changes_events_failed(tmp_path, capsys):
    from argparse import Namespace

    from bench.run import Variant, run_once
    from devtools.sample import generate

    report = generate(tmp_path / 'corpus', events=300, seed=3)
    args = Namespace(reference_in_flight=1, official_threads=1, timeout=120)
    # Different messageIds: the receiver gets as many messages, but not the corpus's ids.
    bad = Variant('reference', 'reference', ['--message-id-prefix', 'x-'])
    r = run_once(bad, str(tmp_path / 'corpus'), report, str(tmp_path / 'run1'), args, 'check')
    assert not r['ok'] and any('messageId sets differ' in p for p in r['problems'])
    good = Variant('reference', 'reference')
    r = run_once(good, str(tmp_path / 'corpus'), report, str(tmp_path / 'run2'), args, 'check')
    assert r['ok'], r['problems']
