"""CPU-heavy request work off the Gateway's event loop, on threads that yield to it.

A request's heavy CPU work (argon2 password hashing and checking, ~50 ms each; a document
upload's text extraction; the replay's rebuilt texts) already ran off the event loop, on anyio's
or asyncio's default thread pools (up to 40 threads, each at the process's priority). A class of
30 students signing in together then ran 30 argon2 threads side by side, and the replica's event
loop (every socket's frames, every ack) got ~1/30 of a core for as long as they took: on the
2-core machine of ops/loadtest the typists' acks went from p50 10 / max 73 ms to p50 90 / max
515 ms during such a burst (`/tmp` scratch probe, 2026-12-07: 5 typists, 30 logins at once,
service as `make run` starts it).

So that work runs here: a small pool (`CPU_WORK_THREADS`, default one thread per core the
process may use) whose threads lower their own scheduling priority to `nice` +10 (Linux
schedules threads, not processes: the loop thread keeps its priority). When the loop has work it
gets the core (CFS weighs nice 0 against nice 10 about 9:1); when it is idle the pool uses the
whole core. A burst queues here instead of crowding the cores: 30 logins take as long in all,
each waiting its turn. Where the platform refuses the lower priority (not Linux) the threads run
at the process's, bounded still.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)

NICE = 10
P = ParamSpec("P")
R = TypeVar("R")


def _lower_priority(nice: int) -> None:
    """Each pool thread's initializer: this thread (its Linux task id) `nice` steps lower."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:  # no per-thread priority here: run at the process's
        log.warning("cpu work threads keep the process's priority: %s", exc)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class CpuWork:
    """The replica's pool for CPU-heavy request work (built in the app's lifespan, shut down with it)."""

    def __init__(self, threads: int = 0, *, nice: int = NICE) -> None:
        """`threads`: 0 means one per usable core."""
        self.threads = threads or usable_cores()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="cpu-work",
                                        initializer=_lower_priority, initargs=(nice,))

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` on a pool thread; its result (or its exception) here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
