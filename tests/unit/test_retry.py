"""actors/retry.py: the one retry policy (tenacity underneath)."""

from __future__ import annotations

import asyncio
import random

import pytest

from actors import retry


def test_the_wait_doubles_from_first_to_the_cap() -> None:
    assert [retry.delay(n, first=0.05, cap=1.0) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert retry.delay(4, first=2.0) == 16.0  # uncapped (submission jobs)
    backoff = retry.Backoff(first=0.1, cap=2.0)
    assert [backoff.next() for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    backoff.reset()
    assert backoff.next() == 0.1
    rng = random.Random(1)
    for n in range(1, 10):
        ceiling = retry.delay(n, first=0.5, cap=8.0)
        assert ceiling / 2 <= retry.jittered(n, first=0.5, cap=8.0, rng=rng) <= ceiling


async def test_the_policy_sleeps_its_delays_and_reraises_the_last_error() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"attempt {calls}")

    with pytest.raises(ConnectionError, match="attempt 5"):
        await retry.policy(first=1.0, cap=4.0, attempts=5, sleep=sleep, retry_on=(ConnectionError,))(failing)
    assert slept == [1.0, 2.0, 4.0, 4.0]


async def test_only_what_the_caller_names_is_retried_and_never_a_cancellation() -> None:
    calls: list[str] = []

    async def once(exc: BaseException) -> None:
        calls.append(type(exc).__name__)
        raise exc

    async def no_sleep(_: float) -> None:
        return None

    for exc in (ValueError("final"), asyncio.CancelledError()):
        calls.clear()
        with pytest.raises(type(exc)):
            await retry.policy(first=0.01, cap=0.01, attempts=3, sleep=no_sleep, retry_on=(ConnectionError,))(once, exc)
        assert len(calls) == 1
    calls.clear()
    with pytest.raises(asyncio.CancelledError):  # even when "any exception" is retried
        await retry.policy(first=0.01, cap=0.01, attempts=3, sleep=no_sleep, retry_if=lambda e: True)(
            once, asyncio.CancelledError())
    assert len(calls) == 1


async def test_the_failure_hook_sees_each_retried_error_but_not_the_one_given_up_on() -> None:
    seen: list[str] = []

    async def no_sleep(_: float) -> None:
        return None

    async def failing(n: list[int]) -> None:
        n[0] += 1
        raise ConnectionError(f"try {n[0]}")

    with pytest.raises(ConnectionError, match="try 3"):
        await retry.policy(first=0.01, cap=0.01, attempts=3, sleep=no_sleep,
                           on_failure=lambda exc: seen.append(str(exc)))(failing, [0])
    assert seen == ["try 1", "try 2"]
    seen.clear()
    with pytest.raises(ValueError):  # not retried: no hook call
        await retry.policy(first=0.01, cap=0.01, retry_on=(ConnectionError,), sleep=no_sleep,
                           on_failure=lambda exc: seen.append(str(exc)))(_raise_value_error)
    assert seen == []


async def _raise_value_error() -> None:
    raise ValueError("permanent")
