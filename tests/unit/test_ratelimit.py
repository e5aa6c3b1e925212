"""LoginThrottle with a fake clock: the per-IP window, the per-account backoff, and that locks expire."""

from __future__ import annotations

from serve_app.ratelimit import LoginThrottle


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _throttle(clock: FakeClock, **limits: int) -> LoginThrottle:
    return LoginThrottle(clock=clock, **{"per_ip_per_minute": 30, "failures_before_lock": 5,
                                         "max_lock_seconds": 900, **limits})


def _fail(throttle: LoginThrottle, account: str, times: int, ip: str = "10.0.0.1") -> None:
    for _ in range(times):
        assert throttle.check(ip=ip, account=account) == 0
        throttle.failed(account=account)


def test_ip_may_make_its_quota_of_attempts_per_minute_then_waits() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, per_ip_per_minute=3)
    for i in range(3):
        assert throttle.check(ip="1.2.3.4", account=f"a{i}") == 0
        clock.advance(1)
    assert throttle.check(ip="1.2.3.4", account="a9") == 57  # the first attempt leaves the window at t+60


def test_ip_window_slides_open_after_a_minute() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, per_ip_per_minute=2)
    throttle.check(ip="1.2.3.4", account="a")
    throttle.check(ip="1.2.3.4", account="b")
    assert throttle.check(ip="1.2.3.4", account="c") > 0
    clock.advance(60)
    assert throttle.check(ip="1.2.3.4", account="c") == 0


def test_refused_attempts_do_not_extend_the_ip_window() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, per_ip_per_minute=1)
    throttle.check(ip="1.2.3.4", account="a")
    for _ in range(50):
        clock.advance(1)
        assert throttle.check(ip="1.2.3.4", account="a") > 0
    clock.advance(10)
    assert throttle.check(ip="1.2.3.4", account="a") == 0


def test_ips_are_limited_independently() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, per_ip_per_minute=1)
    assert throttle.check(ip="1.1.1.1", account="a") == 0
    assert throttle.check(ip="1.1.1.1", account="a") > 0
    assert throttle.check(ip="2.2.2.2", account="a") == 0


def test_account_locks_after_the_allowed_failures() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, failures_before_lock=5)
    _fail(throttle, "victim@example.com", 4)
    assert throttle.check(ip="10.0.0.1", account="victim@example.com") == 0
    throttle.failed(account="victim@example.com")
    assert throttle.check(ip="10.0.0.1", account="victim@example.com") == 15
    assert throttle.check(ip="10.9.9.9", account="victim@example.com") == 15  # any IP: it is per account


def test_account_lockout_expires() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, failures_before_lock=2)
    _fail(throttle, "a@example.com", 2)
    clock.advance(14)
    assert throttle.check(ip="10.0.0.1", account="a@example.com") == 1
    clock.advance(1)
    assert throttle.check(ip="10.0.0.1", account="a@example.com") == 0


def test_account_backoff_doubles_per_failure_and_is_capped() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, failures_before_lock=1, max_lock_seconds=100)
    waits = []
    for _ in range(6):
        _fail(throttle, "a@example.com", 1)
        wait = throttle.check(ip="10.0.0.1", account="a@example.com")
        waits.append(wait)
        clock.advance(wait)
    assert waits == [15, 30, 60, 100, 100, 100]


def test_lockout_after_many_failures_still_expires_within_the_cap() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, failures_before_lock=1, max_lock_seconds=900, per_ip_per_minute=10**6)
    for _ in range(200):
        throttle.failed(account="a@example.com")
    assert throttle.check(ip="10.0.0.1", account="a@example.com") == 900
    clock.advance(900)
    assert throttle.check(ip="10.0.0.1", account="a@example.com") == 0


def test_successful_login_clears_the_account_backoff() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, failures_before_lock=2)
    _fail(throttle, "a@example.com", 2)
    clock.advance(15)
    assert throttle.check(ip="10.0.0.1", account="a@example.com") == 0
    throttle.succeeded(account="a@example.com")
    throttle.failed(account="a@example.com")
    assert throttle.check(ip="10.0.0.1", account="a@example.com") == 0  # one failure: back to the allowance


def test_one_accounts_lock_does_not_slow_another() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, failures_before_lock=1)
    _fail(throttle, "a@example.com", 1)
    assert throttle.check(ip="10.0.0.1", account="a@example.com") > 0
    assert throttle.check(ip="10.0.0.1", account="b@example.com") == 0
