"""actors.pacing.Tier1Pacing: tier 1's interval while typing goes on, from the host loop's load.

Lags and CPU shares are plain numbers (seconds a timer of the loop woke late, the share of a
core its thread used); no clock, no loop.
"""

from __future__ import annotations

from actors.config import HostConfig
from actors.pacing import Tier1Pacing

CFG = HostConfig(tier1_pacing=True, local_min_interval=2.0, local_max_interval=8.0, tier1_busy_cpu_share=0.5,
                 tier1_busy_lag_seconds=0.005)


def test_a_loop_that_runs_late_stretches_the_interval_up_to_the_cap_and_a_calm_one_brings_it_back() -> None:
    pacing = Tier1Pacing(CFG)
    assert pacing.interval == 2.0 and not pacing.stretched
    intervals = [pacing.observe(0.030) for _ in range(20)]  # 30 ms late, round after round
    assert intervals == sorted(intervals) and intervals[-1] == 8.0 and pacing.stretched
    assert intervals.index(8.0) < 16  # within two seconds of 1/8 s rounds
    calm = [pacing.observe(0.0) for _ in range(60)]
    assert calm == sorted(calm, reverse=True) and calm[-1] == 2.0 and not pacing.stretched


def test_a_loop_thread_over_its_share_of_a_core_stretches_it_until_its_share_falls() -> None:
    pacing = Tier1Pacing(CFG)
    assert [pacing.observe(0.001, 0.45) for _ in range(40)] == [2.0] * 40  # under half a core: as it was
    for _ in range(40):
        pacing.observe(0.001, 0.7)  # over: stretched to the cap, though the loop is on time
    assert pacing.interval == 8.0
    held = [pacing.observe(0.001, 0.45) for _ in range(40)]  # tier 1 less often: the share falls, held
    assert held == [8.0] * 40
    for _ in range(60):
        pacing.observe(0.001, 0.3)  # the typists left
    assert pacing.interval == 2.0


def test_one_late_wake_up_does_not_stretch_it() -> None:
    pacing = Tier1Pacing(CFG)
    for _ in range(8):
        pacing.observe(0.001)
    assert pacing.observe(0.035) == 2.0  # one collection's pause: smoothed away
    assert pacing.observe(0.001) == 2.0


def test_between_calm_and_busy_the_interval_holds() -> None:
    pacing = Tier1Pacing(CFG)
    for _ in range(20):
        pacing.observe(0.020)
    held = [pacing.observe(0.004) for _ in range(100)]  # the lag settles between 3.75 and 5 ms
    assert pacing.lag < CFG.tier1_busy_lag_seconds and held[-1] == held[-20] > 2.0


def test_a_cap_under_the_interval_never_shortens_it() -> None:
    pacing = Tier1Pacing(HostConfig(tier1_pacing=True, local_min_interval=2.0, local_max_interval=1.0))
    assert [pacing.observe(1.0) for _ in range(5)] == [2.0] * 5
