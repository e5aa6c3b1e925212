"""Process-wide runtime tuning for the long-lived service processes (Gateway replicas, hosts).

In actors/ so both the host shells and serve_app reach it (imports run db <- actors <- serve_app)."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os

GC_THRESHOLDS = (20_000, 50, 100)
TRIM_SECONDS = 10.0
log = logging.getLogger("essaycoach.process")


def tune_gc() -> None:
    """Fewer, cheaper garbage collections in a process that holds many live essays.

    With CPython's default thresholds (700, 10, 10) a host with 1,000 open essays ran a full
    collection every ~10 s that stopped its event loop for ~80 ms: every ack waiting on that loop
    waited too (the p99 of ops/loadtest). Objects alive at startup (modules, the dictionary) are
    frozen out of collection, and the young generation is collected after 20,000 net
    allocations instead of 700, so short-lived per-update objects die before promotion. Nothing
    here relies on cycles being freed promptly.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def lower_priority(nice: int) -> int:
    """Run the calling thread at nice value `nice` at least (Linux: nice is per thread; the threads
    and processes it starts afterwards inherit it); returns its nice value now. Absolute, so a
    second call (or a thread that inherited it) stays at `nice`; one already lower stays.

    An essay host calls this on its event loop's thread before it opens its store or starts its
    rules worker: on a machine it shares with a Gateway replica and HAProxy, a waking Gateway
    then takes a core from the host's commits and analysis at once instead of after the host's
    time slice, and the typing a teacher sees is not held behind them. Ray starts its workers at
    nice 15 unless `RAY_worker_niceness` says otherwise (`essaycoach run` sets 0: serve_app/cli.py),
    so this is relative to the Gateway's priority. The first measurement (2026-12-06 23:16-23:26
    UTC, `python -m ops.loadtest.run --shape continuous --typists 300 --targets essaycoach`,
    alternating, load 1.7-2.8) still had the Gateway and HAProxy at Ray's 15 and moved the host
    alone: at 10 the teacher-visible (fan-out) p99 was 8.2 / 5.8 ms, at 0 12.6 / 9.3 ms (a host
    above the Gateway's priority holds typing back); ops/loadtest/RESULTS.md has the runs with
    both settings. With the Gateway at 0 (`RAY_worker_niceness=0`, 23:53-00:19 UTC, same command
    with y-websocket in each run) a host at 10 gave fan-out p99 5.0 / 6.6 ms and one at 0 5.5 ms,
    the same; at 1,000 typists, where the two cores are saturated, the host at 10 was starved
    (ack p99 465 ms against 356 at 0). So `ESSAYCOACH_HOST_NICE` defaults to 0: a knob for a
    machine with cores to spare where the host must never delay the Gateway.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice <= current:
        return current
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    return nice


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS (glibc's `malloc_trim`); False without glibc.

    Freed memory otherwise stays in the process: a host's RSS after 35 s of typing at 1,000
    typists was ~2 KiB per essay lower with this every 10 s (ops/loadtest, 2026-11-30), where
    the transient buffers of Ray calls and SQLite had left their high-water mark. A call took
    0.2-1 ms there.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


async def release_free_memory_periodically(seconds: float = TRIM_SECONDS) -> None:
    """`release_free_memory` every `seconds`, for a long-lived process's event loop (runs until
    cancelled; stops quietly where there is no glibc)."""
    while True:
        await asyncio.sleep(seconds)
        if not release_free_memory():
            log.info("no malloc_trim here: free memory stays with the process")
            return
