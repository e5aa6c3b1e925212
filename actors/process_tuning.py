"""Process-wide runtime tuning for the long-lived service processes (Gateway replicas, hosts).

In actors/ so both the host shells and serve_app reach it (imports run db <- actors <- serve_app)."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import platform
import sys

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


# sched_setattr(2) / sched_getattr(2): Python's os module has neither.
SCHED_SYSCALLS = {"x86_64": (314, 315), "aarch64": (380, 381)}
SCHED_OTHER, SCHED_BATCH = 0, 3
# The kernel clamps a requested slice to 0.1-100 ms (kernel/sched/syscalls.c).
MIN_SLICE_MS, MAX_SLICE_MS = 0.1, 100.0


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


def _sched_syscall(name: str, tid: int, attr: _SchedAttr) -> None:
    """sched_setattr(tid, attr, 0) or sched_getattr(tid, attr, size, 0); OSError when it fails."""
    numbers = SCHED_SYSCALLS.get(platform.machine()) if sys.platform == "linux" else None
    if numbers is None:
        raise OSError(f"no sched_setattr on {sys.platform} {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    if name == "set":
        done = libc.syscall(ctypes.c_long(numbers[0]), ctypes.c_long(tid), ctypes.byref(attr), ctypes.c_uint(0))
    else:
        done = libc.syscall(ctypes.c_long(numbers[1]), ctypes.c_long(tid), ctypes.byref(attr),
                            ctypes.c_uint(ctypes.sizeof(attr)), ctypes.c_uint(0))
    if done != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def time_slice_ms(tid: int = 0) -> float:
    """The time slice the scheduler gives thread `tid` (0: the calling thread), in ms (Linux)."""
    attr = _SchedAttr()
    _sched_syscall("get", tid, attr)
    return float(attr.sched_runtime) / 1e6


def set_time_slice(ms: float, tid: int = 0) -> bool:
    """Ask the scheduler for `ms`-long time slices for thread `tid` (0: the calling thread); its
    policy (SCHED_OTHER or SCHED_BATCH) and nice value stay. False, with a log line, where the
    kernel cannot (not Linux, no EEVDF slice request before 6.12, a thread of another user, a
    real-time policy): a slice is a latency hint, never a reason not to start.

    Linux's EEVDF scheduler (6.6+) takes `sched_attr.sched_runtime` of a normal thread as its
    requested slice (6.12+, clamped to 0.1-100 ms; the default is ~0.7 ms x (1 + log2 cores)), and
    a waking thread whose slice is shorter than the running one's preempts it at once
    (PREEMPT_SHORT) instead of waiting for the running slice to end. Threads started afterwards
    by this thread inherit the slice, and so does a program it execs.

    Measured, and no gain found: 0.3 ms for every thread of the Gateway replica and of HAProxy
    (applied by hand to a running server; 2026-12-07 12:46-13:11 UTC, AMD EPYC, 2 cores, load
    1.2-1.9, `python -m ops.loadtest.run --shape continuous --typists 300 --targets
    essaycoach,y-websocket`, two pairs, alternated): fan-out p99 4.93 / 6.37 ms without (1.68x /
    1.86x y-websocket's in the same run) and 5.98 / 4.19 ms with (2.03x / 1.72x); p50 equal.
    The threads' average run-queue wait per run fell ~10% (Gateway 83 / 75 -> 72 / 70 us,
    HAProxy 89 / 85 -> 84 / 79 us, /proc/<pid>/task/*/schedstat), and in 4 s of `perf sched
    timehist` (pair 2) the p99 wake-up delay of the Gateway's event-loop thread fell 0.50 ->
    0.23 ms and HAProxy's 0.66 -> 0.43 ms: the slices work, but these delays are a fraction of
    the fan-out's tail and its spread between runs. Hence `ESSAYCOACH_LATENCY_SLICE_MS` is off
    (0) by default: a knob for A/B runs (not yet measured at 1,000 typists).
    """
    try:
        attr = _SchedAttr()
        _sched_syscall("get", tid, attr)
        if attr.sched_policy not in (SCHED_OTHER, SCHED_BATCH):
            log.info("thread %s runs a real-time policy (%s): its time slice stays", tid, attr.sched_policy)
            return False
        attr.size = ctypes.sizeof(_SchedAttr)
        attr.sched_flags = 0  # not KEEP_PARAMS: the slice is one of the params (sched_nice is kept as read)
        attr.sched_runtime = round(min(max(ms, MIN_SLICE_MS), MAX_SLICE_MS) * 1e6)
        attr.sched_deadline = attr.sched_period = 0
        _sched_syscall("set", tid, attr)
        wanted = attr.sched_runtime
        _sched_syscall("get", tid, attr)
    except OSError as exc:
        log.info("no %.2f ms time slice for thread %s: %s", ms, tid or "self", exc)
        return False
    if attr.sched_runtime != wanted:  # a kernel before 6.12 takes the call and ignores the slice
        log.info("no %.2f ms time slice for thread %s: this kernel keeps %.2f ms", ms, tid or "self",
                 attr.sched_runtime / 1e6)
        return False
    return True


def set_process_time_slice(ms: float, pid: int = 0) -> int:
    """`set_time_slice` for every thread of process `pid` (0: this one; threads it starts later
    inherit the slice from the thread that starts them); returns how many threads took it."""
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid or 'self'}/task")]
    except OSError:
        return int(set_time_slice(ms)) if pid == 0 else 0
    return sum(set_time_slice(ms, tid) for tid in tids)


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
