"""The benchmark's derived figures (bench/run.py), from literal measurements."""
import pytest

from bench.run import _targets, ratio_ceiling


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
