"""The one retry policy: capped exponential backoff, built on tenacity.

Every retry between the Gateway, the essay hosts and the outside world waits `first`, then twice
as long each time, never more than `cap` (`delay`); what is retried is said by the caller, and
cancellation (`asyncio.CancelledError`, a BaseException) never is. Where each one stands:

- Gateway -> host Ray call (`serve_app.hosts.RayHost`): 0.05 s doubling to 1 s, for 30 s;
  only while the host restarts and only `@retry_safe` methods (`actors.host_api`).
- Gateway -> host stream connect (`actors.host_stream`): 0.05 s to 1 s, for `retry_for` (30 s).
- Group commit (`actors.committer`): 0.05 s to `max_backoff` (2 s), forever; not the
  `permanent` errors (a row whose essay is gone).
- Redis bus reconnect (`actors.redis_bus`): 0.1 s to 2 s, forever, from 0.1 s again once subscribed.
- In-Ray hub bus stream reconnect (`actors.ray_host.HubBus`): 0.05 s to 1 s, forever, from 0.05 s
  again once the hub acknowledged the registration.
- Webhook delivery (`serve_app.webhooks`): `backoff` (1 s) to `max_backoff` (60 s), `max_attempts`
  (6) tries; network errors and non-2xx answers.
- Submission job (`serve_app.jobs`): `retry_backoff_seconds` (2 s) doubling, uncapped, up to
  `max_attempts`; the wait is the job row's lease (`delay`), the count its `attempts`.
- LLM call (`actors.analysis.llm`): `backoff_base` (0.5 s) to `backoff_max` (8 s) with equal
  jitter, at least a 429's Retry-After; `max_retries`, the overall `deadline`, a Retry-After
  over `max_retry_after`; timeouts, transport errors, 429 and 5xx.

`policy` builds the tenacity `AsyncRetrying` for a call that is retried in place; `Backoff` is the
same curve for a loop that lives on and starts over once it succeeds (a reconnect loop), and
`delay` the wait itself for retries kept elsewhere (a job's attempt count is in its row).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

Sleep = Callable[[float], Awaitable[None]]


def delay(attempt: int, *, first: float, cap: float | None = None) -> float:
    """The wait before retry number `attempt` (1-based): first, 2*first, 4*first, ... at most `cap`."""
    value = first * 2.0 ** (attempt - 1)
    return float(value if cap is None else min(cap, value))


def wait(*, first: float, cap: float) -> wait_base:
    """tenacity's exponential wait for this policy (`delay` per attempt)."""
    return wait_exponential(multiplier=first, max=cap)


def policy(*, first: float, cap: float, retry_on: tuple[type[Exception], ...] = (Exception,),
           retry_if: Callable[[BaseException], bool] | None = None, give_up_after: float | None = None,
           attempts: int | None = None, sleep: Sleep = asyncio.sleep, log: logging.Logger | None = None,
           what: str = "call", wait_strategy: Callable[[RetryCallState], float] | None = None,
           stop: Callable[[RetryCallState], bool] | None = None,
           on_failure: Callable[[BaseException], None] | None = None) -> AsyncRetrying:
    """An `AsyncRetrying` that re-raises the last error when it gives up; use it as
    `async for attempt in policy(...): with attempt: ...` or `await policy(...)(fn, *args)`.

    Retried: exceptions of `retry_on` for which `retry_if` (when given) is true; never a
    BaseException that is not an Exception (cancellation). Stops after `give_up_after` seconds
    since the first attempt or `attempts` tries, whichever comes first, or when `stop(state)` says
    so (`state.upcoming_sleep` is the wait it would take next). `log` gets
    one warning per retry naming `what`, the error and the wait. `on_failure` is called with the
    error of every try that failed with a retried error, before its wait (a metric's counter): not
    for the last try when the policy gives up, whose error is re-raised to the caller.
    """
    def retryable(exc: BaseException) -> bool:
        return isinstance(exc, retry_on) and (retry_if is None or retry_if(exc))

    stops: list[stop_base] = [_StopWhen(stop)] if stop is not None else []
    if give_up_after is not None:
        stops.append(stop_after_delay(give_up_after))
    if attempts is not None:
        stops.append(stop_after_attempt(attempts))
    combined: stop_base = stop_never
    for s in stops:
        combined = s if combined is stop_never else combined | s

    def before_sleep(state: RetryCallState) -> None:
        if on_failure is not None and state.outcome is not None:
            error = state.outcome.exception()
            if error is not None:
                on_failure(error)
        if log is not None and state.outcome is not None:
            log.warning("%s failed; retrying", what, extra={
                "error": repr(state.outcome.exception()), "attempt": state.attempt_number,
                "retry_in": state.next_action.sleep if state.next_action is not None else None})

    return AsyncRetrying(wait=wait_strategy or wait(first=first, cap=cap), retry=retry_if_exception(retryable),
                         stop=combined, sleep=sleep, reraise=True, before_sleep=before_sleep)


class _StopWhen(stop_base):
    def __init__(self, predicate: Callable[[RetryCallState], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate(retry_state)


class Backoff:
    """The policy's waits for a loop that lives on (a reconnect loop): `next()` is the next
    wait, `reset()` after a success starts again at `first`."""

    def __init__(self, *, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self.attempt = 0

    def next(self) -> float:
        self.attempt += 1
        return delay(self.attempt, first=self.first, cap=self.cap)

    def reset(self) -> None:
        self.attempt = 0


def jittered(attempt: int, *, first: float, cap: float, rng: random.Random) -> float:
    """Equal jitter for retry number `attempt` (1-based) with a given random source (tests)."""
    ceiling = delay(attempt, first=first, cap=cap)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
