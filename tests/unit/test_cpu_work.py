"""serve_app.cpu_work: CPU-heavy request work on a bounded pool of threads below the loop's priority."""

from __future__ import annotations

import os
import threading

import pytest

from serve_app.cpu_work import NICE, CpuWork

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="per-thread priority is Linux's")


def _priority() -> tuple[str, int]:
    return threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_work_runs_on_a_pool_thread_nice_steps_below_the_callers() -> None:
    work = CpuWork(2)
    try:
        name, priority = await work.run(_priority)
    finally:
        work.shutdown()
    assert name.startswith("cpu-work")
    assert priority == min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + NICE)


async def test_no_more_than_threads_run_at_once_and_the_rest_wait() -> None:
    import asyncio

    work = CpuWork(2)
    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def job() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1

    try:
        jobs = [asyncio.ensure_future(work.run(job)) for _ in range(6)]
        await asyncio.sleep(0.2)
        started = most
        release.set()
        await asyncio.gather(*jobs)
    finally:
        work.shutdown()
    assert started == 2 and most == 2


async def test_an_exception_in_the_work_reaches_the_caller() -> None:
    work = CpuWork(1)
    try:
        with pytest.raises(ZeroDivisionError):
            await work.run(lambda: 1 / 0)
    finally:
        work.shutdown()


def test_threads_default_to_the_usable_cores() -> None:
    work = CpuWork()
    work.shutdown()
    assert work.threads == len(os.sched_getaffinity(0))


def test_priority_is_lowered_from_the_starting_threads_not_set_to_a_fixed_value() -> None:
    """A process already at nice 3 gets pool threads at 13, not 10 (and never above 19)."""
    work = CpuWork(1)
    seen: list[tuple[str, int]] = []

    def starter() -> None:  # the pool's thread is made by (and inherits from) the submitting thread
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 3))
        seen.append(("starter", os.getpriority(os.PRIO_PROCESS, tid)))
        seen.append(work._pool.submit(_priority).result(5))

    thread = threading.Thread(target=starter)
    thread.start()
    thread.join()
    work.shutdown()
    (_, start), (_, pool) = seen
    assert pool == min(19, start + NICE)


def test_usable_cores_is_capped_by_the_cgroup_quota(tmp_path) -> None:
    from serve_app.cpu_work import usable_cores

    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "two").write_text("200000 100000\n")
    (tmp_path / "none").write_text("max 100000\n")
    (tmp_path / "half").write_text("50000 100000\n")
    assert usable_cores(str(tmp_path / "two")) == min(affinity, 2)
    assert usable_cores(str(tmp_path / "none")) == affinity
    assert usable_cores(str(tmp_path / "half")) == 1
    assert usable_cores(str(tmp_path / "missing")) == affinity


async def test_work_sees_the_callers_context_variables() -> None:
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    request_id.set("req-1")
    work = CpuWork(1)
    try:
        assert await work.run(request_id.get) == "req-1"
    finally:
        work.shutdown()
