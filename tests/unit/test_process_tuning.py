"""Process tuning for the service processes."""

from __future__ import annotations

import gc
import logging
import os
import threading

import pytest

from actors import process_tuning
from actors.process_tuning import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_startup_objects_and_raises_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 1000  # modules and everything imported so far
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_release_free_memory_returns_freed_heap_pages_to_the_os() -> None:
    import ctypes

    from actors.process_tuning import release_free_memory

    libc = ctypes.CDLL(None)
    if not hasattr(libc, "malloc_trim"):
        assert release_free_memory() is False  # not glibc: nothing to call
        return

    def rss_kib() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # C-heap blocks below the mmap threshold, every other one kept: the freed ones are holes
    # that free() cannot give back (no block is on top of the heap), only a trim can.
    blocks = []
    for _ in range(1600):
        block = libc.malloc(64 * 1024)
        ctypes.memset(block, 1, 64 * 1024)
        blocks.append(block)
    freed, kept = blocks[::2], blocks[1::2]
    for block in freed:
        libc.free(block)
    before = rss_kib()
    assert release_free_memory() is True
    assert before - rss_kib() > 25_000  # most of the ~50 MiB of holes went back
    for block in kept:
        libc.free(block)


def test_lower_priority_sets_the_calling_threads_nice_once_and_only_that_thread() -> None:
    seen: dict[str, int] = {}
    main_before = os.getpriority(os.PRIO_PROCESS, 0)

    def host_loop_thread() -> None:
        seen["first"] = process_tuning.lower_priority(main_before + 3)
        seen["again"] = process_tuning.lower_priority(main_before + 3)  # absolute: no further
        seen["higher"] = process_tuning.lower_priority(main_before)  # never raises priority back
        seen["now"] = os.getpriority(os.PRIO_PROCESS, 0)

    thread = threading.Thread(target=host_loop_thread)
    thread.start()
    thread.join()
    assert seen == {"first": main_before + 3, "again": main_before + 3, "higher": main_before + 3,
                    "now": main_before + 3}
    assert os.getpriority(os.PRIO_PROCESS, 0) == main_before  # the test process's own thread: unchanged


def _proc_slice_ns(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/sched") as f:
        return next(int(line.split(":")[1]) for line in f if line.startswith("se.slice"))


def _kernel_takes_slices() -> bool:
    # Linux 6.12+ (EEVDF with slice requests): the thread's slice is readable, and its own default.
    try:
        process_tuning.time_slice_ms()
    except OSError:
        return False
    return os.uname().sysname == "Linux" and tuple(map(int, os.uname().release.split(".")[:2])) >= (6, 12)


needs_slices = pytest.mark.skipif(not _kernel_takes_slices(), reason="no EEVDF slice requests (Linux 6.12+)")


@needs_slices
def test_set_time_slice_gives_the_calling_thread_that_slice_and_keeps_its_nice() -> None:
    seen: dict[str, object] = {}
    main_slice = _proc_slice_ns(threading.get_native_id())

    def latency_thread() -> None:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + 2)  # this thread only
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        seen["set"] = process_tuning.set_time_slice(0.3)
        seen["read"] = process_tuning.time_slice_ms()
        seen["proc"] = _proc_slice_ns(threading.get_native_id())
        seen["nice kept"] = os.getpriority(os.PRIO_PROCESS, 0) == nice

    thread = threading.Thread(target=latency_thread)
    thread.start()
    thread.join()
    assert seen == {"set": True, "read": 0.3, "proc": 300_000, "nice kept": True}
    assert _proc_slice_ns(threading.get_native_id()) == main_slice  # the test's own thread: unchanged


@needs_slices
def test_set_process_time_slice_reaches_every_thread_and_the_threads_they_start_later() -> None:
    before = process_tuning.time_slice_ms()
    started, stop = threading.Event(), threading.Event()
    tids: list[int] = []

    def waiter() -> None:
        tids.append(threading.get_native_id())
        started.set()
        stop.wait()

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait()
    try:
        assert process_tuning.set_process_time_slice(0.4) >= 2
        later = threading.Thread(target=lambda: tids.append(threading.get_native_id()))
        later.start()
        later.join()
        assert _proc_slice_ns(tids[0]) == 400_000 and _proc_slice_ns(threading.get_native_id()) == 400_000
        assert process_tuning.time_slice_ms() == 0.4
    finally:
        stop.set()
        thread.join()
        process_tuning.set_time_slice(before)


def test_set_time_slice_degrades_to_false_with_a_log_line_where_the_kernel_refuses(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="essaycoach.process")
    no_such_thread = 2**22 + 1  # above pid_max's ceiling: ESRCH (or EINVAL), never a real thread
    assert process_tuning.set_time_slice(0.3, tid=no_such_thread) is False
    assert process_tuning.set_process_time_slice(0.3, pid=no_such_thread) == 0
    monkeypatch.setattr(process_tuning.platform, "machine", lambda: "sparc64")  # no syscall number known
    assert process_tuning.set_time_slice(0.3) is False
    assert process_tuning.set_process_time_slice(0.3) == 0
    assert sum("no 0.30 ms time slice" in r.getMessage() for r in caplog.records) >= 3
