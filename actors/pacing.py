"""Tier1Pacing: how often tier 1 reruns for an essay being typed in, stretched while the host is busy.

Off by default (`HostConfig.tier1_pacing`): with it on, every run of an A/B at 300 continuous
typists had one ~1 s ack stall, cause not found (`actors/config.py` has the measurement); off,
the interval is always `local_min_interval`.

Typing and acks come before analysis. An essay host's event loop applies updates, runs the group
commit and answers acks; tier 1 (the local rules) runs on the same loop, for every essay typed
in, every `HostConfig.local_min_interval` while typing goes on: about a quarter of a host's
loop at 1,000 continuous typists. When the machine gets slower (a busy or throttled VM: every
process needing more CPU for the same work) or the typists more, that share is what can give:
the findings about a sentence being written may come a few seconds later, an ack may not.

Two signals from the host's own event loop, a few times a second (`observe`), each smoothed:

- its CPU share: the loop thread's CPU time over the wall time (`tier1_busy_cpu_share`). A loop
  near a whole core queues every callback behind the others; tier 1 is what keeps it under.
- its lag: how late the tier-1 loop's timer wakes (`tier1_busy_lag_seconds`): near a
  millisecond with headroom, more when the process waits for a core the machine cannot give.

While either is over its threshold the interval grows by a step per observation, up to
`local_max_interval`; once both are under `CALM` of theirs it shrinks back step by step to
`local_min_interval`. In between it holds: the gap keeps the interval from swinging when
stretching it is what brought the load down. A student who stops typing still gets tier 1 soon
after (`actors.decisions.tier1_due_at`): only its reruns while typing goes on are stretched.

Measured with ops/loadtest/host_bench.py (1,000 continuous typists, 2026-12-07, two runs a side
alternated with the code before, 1-minute load average 1.5-8.3): the bench's loop thread is over half a
core, so tier 1 ran every 8 s while typing went on (and at each of the typists' 3 s pauses).
CPU per update 0.577 -> 0.540 ms on SQLite, 0.574 -> 0.516 on PostgreSQL; the host-side ack
p50 79 -> 46 ms on SQLite, 18 -> 12 ms on PostgreSQL; tier 1's share of the loop's samples
(py-spy) 25% -> 18%: the pauses keep most of its runs.

Pure: no clock, no event loop; the scheduler measures and calls `observe` (tests pass any values).
"""

from __future__ import annotations

from actors.config import HostConfig

# Weight of each new sample in the smoothed values (about the last 8 samples count: a second
# of the tier-1 loop's 1/8 s timer), so one garbage collection or one long commit does not
# stretch the interval, a second of them does.
SMOOTHING = 0.125
# The interval's factor per observation while busy (2 s -> 8 s in about a second of busy
# samples) and its divisor while calm (back in about two seconds: stretching is cheap,
# relaxing too soon brings the load straight back).
STRETCH = 1.25
RELAX = 1.1
# Calm: both signals under this share of their thresholds.
CALM = 0.75


class Tier1Pacing:
    """The current per-essay tier-1 interval while typing goes on, from the host loop's load."""

    def __init__(self, config: HostConfig) -> None:
        self.base = config.local_min_interval
        self.cap = max(config.local_max_interval, self.base) if config.tier1_pacing else self.base
        self.busy_lag = config.tier1_busy_lag_seconds
        self.busy_cpu = config.tier1_busy_cpu_share
        self.lag = 0.0  # smoothed, seconds
        self.cpu = 0.0  # smoothed, cores
        self.interval = self.base

    @property
    def stretched(self) -> bool:
        return self.interval > self.base

    def observe(self, lag: float, cpu_share: float = 0.0) -> float:
        """One sample: how late the loop ran a timer (seconds) and the share of a core its thread
        used since the last sample; returns the interval now."""
        self.lag += SMOOTHING * (max(0.0, lag) - self.lag)
        self.cpu += SMOOTHING * (max(0.0, cpu_share) - self.cpu)
        if self.lag > self.busy_lag or self.cpu > self.busy_cpu:
            self.interval = min(self.cap, self.interval * STRETCH)
        elif self.lag < CALM * self.busy_lag and self.cpu < CALM * self.busy_cpu:
            self.interval = max(self.base, self.interval / RELAX)
        return self.interval
