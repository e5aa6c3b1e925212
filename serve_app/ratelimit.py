"""Login throttling: a per-IP sliding window and a per-account backoff that always expires.

The account backoff doubles after each failure beyond the threshold but is capped
(`login_lockout_max_seconds`), and a correct password after the wait clears it, so an attacker can
slow a victim's logins down but never lock them out for good. State is per Gateway replica; with
N replicas an attacker gets at most N times the budget, which the cap still bounds.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class _Account:
    failures: int = 0
    locked_until: float = 0.0


@dataclass
class LoginThrottle:
    """Decides whether a login attempt may proceed; `clock` is injectable for tests."""

    clock: Callable[[], float]
    per_ip_per_minute: int = 30
    failures_before_lock: int = 5
    max_lock_seconds: int = 900
    _ips: dict[str, deque[float]] = field(default_factory=dict)
    _accounts: dict[str, _Account] = field(default_factory=dict)

    def check(self, *, ip: str, account: str) -> int:
        """Seconds to wait before this attempt may run (0 to go ahead); counts the attempt."""
        now = self.clock()
        window = self._ips.setdefault(ip, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.per_ip_per_minute:
            return max(1, math.ceil(window[0] + 60 - now))
        state = self._accounts.get(account)
        if state and state.locked_until > now:
            return max(1, math.ceil(state.locked_until - now))
        window.append(now)
        if len(self._ips) > 100_000:
            self._evict(now)
        return 0

    def failed(self, *, account: str) -> None:
        state = self._accounts.setdefault(account, _Account())
        state.failures += 1
        over = state.failures - self.failures_before_lock
        if over >= 0:
            state.locked_until = self.clock() + min(self.max_lock_seconds, 2 ** min(over, 20) * 15)

    def succeeded(self, *, account: str) -> None:
        self._accounts.pop(account, None)

    def _evict(self, now: float) -> None:
        for ip in [ip for ip, w in self._ips.items() if not w or w[-1] <= now - 60]:
            del self._ips[ip]
