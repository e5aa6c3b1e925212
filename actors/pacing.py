"""Tier1Pacing: how often tier 1 reruns for an essay being typed in, stretched while the host is busy.

Typing and acks come before analysis. An essay host's event loop applies updates, runs the group
commit and answers acks; tier 1 (the local rules) runs on the same loop, for every essay typed
in, every `HostConfig.local_min_interval` while typing goes on: about a third of a host's loop
at 1,000 continuous typists. When the machine gets slower (a busy or throttled VM: every process
needing more CPU for the same work), that share is what can give: the findings about a sentence
being written may come a few seconds later, an ack may not.

The signal is the host's own event loop: how late the tier-1 loop's timer wakes (`observe`,
a few times a second). Smoothed, it stays near a millisecond on a host with headroom and grows
when callbacks queue up behind each other or the process waits for a core. Above
`tier1_busy_lag_seconds` the interval grows by a step per observation up to
`local_max_interval`; below half of it, it shrinks back step by step to `local_min_interval`.
In between it holds: the gap keeps the interval from swinging when stretching it is what
brought the lag down. A student who stops typing still gets tier 1 soon after
(`actors.decisions.tier1_due_at`): only its reruns while typing goes on are stretched.

Pure: no clock, no event loop; the scheduler measures and calls `observe` (tests call it with
any lag).
"""

from __future__ import annotations

from actors.config import HostConfig

# Weight of each new lag sample in the smoothed lag (about the last 8 samples count: a second
# of the tier-1 loop's 1/8 s timer), so one garbage collection or one long commit does not
# stretch the interval, a second of them does.
SMOOTHING = 0.125
# The interval's factor per observation while busy (2 s -> 8 s in about a second of busy
# samples) and its divisor while calm (back in about two seconds: stretching is cheap,
# relaxing too soon brings the load straight back).
STRETCH = 1.25
RELAX = 1.1


class Tier1Pacing:
    """The current per-essay tier-1 interval while typing goes on, from the host loop's lag."""

    def __init__(self, config: HostConfig) -> None:
        self.base = config.local_min_interval
        self.cap = max(config.local_max_interval, self.base)
        self.busy_lag = config.tier1_busy_lag_seconds
        self.lag = 0.0  # smoothed, seconds
        self.interval = self.base

    @property
    def stretched(self) -> bool:
        return self.interval > self.base

    def observe(self, lag: float) -> float:
        """One sample of how late the loop ran a timer (seconds); returns the interval now."""
        self.lag += SMOOTHING * (max(0.0, lag) - self.lag)
        if self.lag > self.busy_lag:
            self.interval = min(self.cap, self.interval * STRETCH)
        elif self.lag < self.busy_lag / 2:
            self.interval = max(self.base, self.interval / RELAX)
        return self.interval
