"""Why actors/analysis/llm.py keeps its own CircuitBreaker: what a library breaker does when an
open circuit's cooldown ends while many essays want the AI endpoint at once.

Not a dependency of the project: install the candidates somewhere apart and point PYTHONPATH there,
    pip install --target /tmp/breakers 'pybreaker==1.4.1' 'aiobreaker==1.2.0'
    PYTHONPATH=$PWD:/tmp/breakers python -m ops.loadtest.breaker_compare

Each breaker opens after one failure with a 0.05 s cooldown (the libraries read the wall clock:
no fake clock can be injected); after the cooldown `CALLERS` concurrent calls arrive, each a
0.2 s request to a failing endpoint. Printed: how many requests reached the endpoint (our
breaker: one half-open trial), and whether a cancelled call (the essay unloaded mid-request)
counted as a failure.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from actors.analysis.llm import CircuitBreaker

CALLERS = 50
COOLDOWN = 0.05


class Endpoint:
    def __init__(self) -> None:
        self.requests = 0

    async def failing(self) -> None:
        self.requests += 1
        await asyncio.sleep(0.2)
        raise ConnectionError("endpoint down")


async def ours() -> dict[str, Any]:
    breaker, endpoint = CircuitBreaker(failure_threshold=1, cooldown=COOLDOWN), Endpoint()

    async def call() -> None:
        if not breaker.allow():
            raise RuntimeError("open")
        try:
            await endpoint.failing()
        except asyncio.CancelledError:
            breaker.release()
            raise
        except Exception:
            breaker.record_failure()
            raise

    await asyncio.gather(call(), return_exceptions=True)
    await asyncio.sleep(COOLDOWN * 2)
    endpoint.requests = 0
    await asyncio.gather(*(call() for _ in range(CALLERS)), return_exceptions=True)
    trials = endpoint.requests
    fresh = CircuitBreaker(failure_threshold=1, cooldown=COOLDOWN)
    breaker = fresh
    task = asyncio.ensure_future(call())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {"half_open_requests": trials, "cancel_trips": breaker.state != "closed"}


async def aiobreaker_() -> dict[str, Any]:
    from aiobreaker import CircuitBreaker as AioBreaker

    breaker, endpoint = AioBreaker(fail_max=1, timeout_duration=timedelta(seconds=COOLDOWN)), Endpoint()
    await asyncio.gather(breaker.call_async(endpoint.failing), return_exceptions=True)
    await asyncio.sleep(COOLDOWN * 2)
    endpoint.requests = 0
    await asyncio.gather(*(breaker.call_async(endpoint.failing) for _ in range(CALLERS)), return_exceptions=True)
    trials = endpoint.requests
    breaker = AioBreaker(fail_max=1, timeout_duration=timedelta(seconds=COOLDOWN))
    task = asyncio.ensure_future(breaker.call_async(endpoint.failing))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {"half_open_requests": trials, "cancel_trips": str(breaker.current_state) != "CircuitBreakerState.CLOSED",
            "state_after_cancel": str(breaker.current_state)}


async def pybreaker_() -> dict[str, Any]:
    import pybreaker

    if not pybreaker.HAS_TORNADO_SUPPORT:
        return {"async": "call_async needs tornado (not installed): no asyncio support"}
    return {"async": "tornado coroutines"}


async def main() -> None:
    for name, run in (("ours", ours), ("aiobreaker 1.2.0", aiobreaker_), ("pybreaker 1.4.1", pybreaker_)):
        try:
            print(name, await run())
        except ImportError as exc:
            print(name, "not installed:", exc)


if __name__ == "__main__":
    asyncio.run(main())
