"""The benchmark's derived figures (bench/run.py), from literal measurements."""
import pytest

from bench.measure import io_full_stall_s, warm_page_cache
from bench.run import _targets, paired_rounds, ratio_ceiling


def test_the_ceiling_is_the_reference_work_spread_over_the_cores_it_shares():
    # 1.2M events over 3 days, as measured: reference 26.5 s wall, 25.8 CPU-s; the receiver
    # used 6.5 CPU-s in the pipeline's runs. On 2 cores: 26.5 / ((25.8 + 6.5) / 2) = 1.641.
    assert ratio_ceiling(26.5, 25.8, 6.5, 2) == pytest.approx(1.6409, abs=1e-4)
    assert ratio_ceiling(26.5, 25.8, 6.5, 1) == pytest.approx(0.8204, abs=1e-4)
    assert ratio_ceiling(10.0, 10.0, 0.0, 2) == 2.0   # no receiver: the cores are the limit
    assert ratio_ceiling(1.0, 0.0, 0.0, 2) == float('inf')


def test_targets_carry_the_ceiling_of_the_section(monkeypatch):
    monkeypatch.setattr('os.cpu_count', lambda: 2)
    agg = {'events_per_s': 1.0, 'cpu_s_per_1k': 1.0, 'maxrss_mib': 1, 'tree_rss_peak_mib': 1,
           'tree_pss_peak_mib': 1, 'receiver_cpu_s': 1.0, 'wall_s': 1.0, 'cpu_s': 1.0}
    section = {'corpus': {'events': 1_200_000},
               'aggregates': {'pipeline': dict(agg, receiver_cpu_s=6.5, events_per_s=58_966),
                              'reference': dict(agg, wall_s=26.5, cpu_s=25.8,
                                                events_per_s=45_227),
                              'official': agg}}
    t = _targets(section)
    assert t['vs_reference_ceiling'] == pytest.approx(1.6409, abs=1e-4)
    assert t['vs_reference'] == pytest.approx(1.3038, abs=1e-4)
    assert t['vs_reference_target'] == 1.5


def run(label, variant, events_per_s, cpu_s_per_1k, ok=True):
    return {'label': label, 'variant': variant, 'events_per_s': events_per_s,
            'cpu_s_per_1k': cpu_s_per_1k, 'ok': ok}


def test_rounds_pair_the_pipeline_with_the_reference_of_the_same_round():
    runs = [run('round 1/3', 'pipeline', 60_000, 30.0), run('round 1/3', 'reference', 40_000, 25.0),
            run('round 1/3', 'official', 10_000, 80.0),
            run('round 2/3', 'pipeline', 30_000, 36.0), run('round 2/3', 'reference', 30_000, 24.0),
            run('round 3/3', 'pipeline', 50_000, 30.0, ok=False),
            run('round 3/3', 'reference', 40_000, 25.0)]
    assert paired_rounds(runs) == [
        {'label': 'round 1/3', 'vs_reference': 1.5, 'cpu_vs_reference': 1.2},
        {'label': 'round 2/3', 'vs_reference': 1.0, 'cpu_vs_reference': 1.5}]
    assert paired_rounds([run('round 1/3', 'pipeline', 1.0, 1.0)]) == []


def test_io_stall_is_the_full_total_of_pressure_io_in_seconds():
    text = ('some avg10=34.76 avg60=24.13 avg300=24.36 total=1740075796\n'
            'full avg10=33.54 avg60=22.75 avg300=23.14 total=1457366591\n')
    assert io_full_stall_s(text) == pytest.approx(1457.366591)
    assert io_full_stall_s('some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n') is None
    assert io_full_stall_s('') is None


def test_warming_reads_every_file_of_the_corpus(tmp_path):
    (tmp_path / 'date=2024-05-01-00').mkdir()
    (tmp_path / 'a.avro').write_bytes(b'x' * 3_000_000)
    (tmp_path / 'date=2024-05-01-00' / 'b.avro').write_bytes(b'y' * 10)
    (tmp_path / 'gone.avro').symlink_to(tmp_path / 'missing')   # cannot be opened: skipped
    files, size, seconds = warm_page_cache(str(tmp_path))
    assert (files, size) == (2, 3_000_010)
    assert seconds >= 0
