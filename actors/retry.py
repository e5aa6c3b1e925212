"""The one retry policy: capped exponential backoff, built on tenacity.

Every retry loop between the Gateway, the essay hosts and the outside world (Ray calls to a
restarting host, the host stream's reconnects, the group committer's store, the Redis bus's
reconnects) waits `first`, then twice as long each time, never more than `cap`, optionally
giving up after `give_up_after` seconds (wall time since the first attempt) or `attempts`
tries. What is retried is said by the caller (`retry_on`, or `retry_if` for a predicate).
Jobs and webhook deliveries keep their attempt counts in their own rows and use `delay`
for the wait between two attempts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


def delay(attempt: int, *, first: float, cap: float) -> float:
    """The wait before retry number `attempt` (1-based): first, 2*first, 4*first, ... at most `cap`."""
    return float(min(cap, first * 2 ** (attempt - 1)))


def policy(*, first: float, cap: float, retry_on: tuple[type[BaseException], ...] = (Exception,),
           retry_if: Callable[[BaseException], bool] | None = None, give_up_after: float | None = None,
           attempts: int | None = None, sleep: Sleep = asyncio.sleep, log: logging.Logger | None = None,
           what: str = "") -> AsyncRetrying:
    """An `AsyncRetrying` (use as `async for attempt in policy(...): with attempt: ...`, or
    `await policy(...)(fn)`) that re-raises the last error when it gives up. `log` gets one
    warning per retry naming `what` and the wait."""
    retry: retry_base = retry_if_exception(retry_if) if retry_if is not None else retry_if_exception_type(retry_on)
    stop: stop_base = stop_never
    if give_up_after is not None:
        stop = stop_after_delay(give_up_after)
    if attempts is not None:
        stop = stop | stop_after_attempt(attempts) if give_up_after is not None else stop_after_attempt(attempts)

    def before_sleep(state: RetryCallState) -> None:
        if log is not None and state.outcome is not None:
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning("%s failed; retrying", what or "call",
                        extra={"error": repr(state.outcome.exception()), "retry_in": wait,
                               "attempt": state.attempt_number})

    return AsyncRetrying(wait=wait_exponential(multiplier=first, max=cap), retry=retry, stop=stop, sleep=sleep,
                         reraise=True, before_sleep=before_sleep)

