"""CPU-heavy request work off the Gateway's event loop, on threads that yield to it.

A request's heavy CPU work (argon2 password hashing and checking, ~50 ms each; a document
upload's text extraction; the replay's rebuilt texts) already ran off the event loop, on anyio's
or asyncio's default thread pools (up to 40 threads, each at the process's priority). A class of
30 students signing in together then ran 30 argon2 threads side by side, and the replica's event
loop (every socket's frames, every ack) got ~1/30 of a core for as long as they took: on the
2-core machine of ops/loadtest the typists' acks went from p50 10 / max 73 ms to p50 90 / max
515 ms during such a burst (`/tmp` scratch probe, 2026-12-07: 5 typists, 30 logins at once,
service as `make run` starts it).

So that work runs here, in two lanes of small pools (`CPU_WORK_THREADS` each, default one
thread per core the process may use: its CPU affinity and its cgroup's CPU quota) whose threads
lower their own scheduling priority by 10 `nice` steps (Linux schedules threads, not processes:
the loop thread keeps its priority). When the loop has work it gets the core (CFS weighs nice 0
against nice 10 about 9:1); when it is idle the pool uses the whole core. A burst queues here
instead of crowding the cores: 30 logins take as long in all, each waiting its turn. Where the
platform refuses the lower priority the threads run at the process's, bounded still.

- `passwords` (argon2: fixed ~50 ms, releases the GIL, so the loop thread runs beside it): a
  lane of its own, so sign-ins never wait behind a user's uploads or replays;
- `cpu` (document text extraction, replay texts: cost set by the request, within
  `MAX_UPLOAD_BYTES` / `REPLAY_MAX_BYTES`). Much of this holds the GIL (pypdf, Python loops), so
  the lower priority keeps the loop's turns on the core but not its share of the GIL: such work
  still slows the replica while it runs; the bound on threads bounds how much.
"""

from __future__ import annotations

import asyncio
import contextvars
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
    """Each pool thread's initializer: this thread (its Linux task id) `nice` steps below the
    thread that started it (whose priority it inherited), at most to 19."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError) as exc:  # no per-thread priority here: run at the process's
        log.warning("cpu work threads keep the process's priority: %s", exc)


def usable_cores(cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """Cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a
    container limited to 2 CPUs on a 64-core node gets 2), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = open(cgroup_cpu_max).read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 quota to read
        pass
    return max(1, cores)


class CpuWork:
    """The replica's pool for CPU-heavy request work (built in the app's lifespan, shut down with it)."""

    def __init__(self, threads: int = 0, *, nice: int = NICE, name: str = "cpu-work") -> None:
        """`threads`: 0 means one per usable core; `name`: its threads' name prefix."""
        self.threads = threads or usable_cores()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=name,
                                        initializer=_lower_priority, initargs=(nice,))

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` on a pool thread; its result (or its exception) here."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the request's id in logs written there, as to_thread did
        return await loop.run_in_executor(self._pool, functools.partial(context.run, fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
