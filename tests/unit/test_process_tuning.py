"""Process tuning for the service processes."""

from __future__ import annotations

import gc
import os
import threading

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
