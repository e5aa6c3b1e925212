"""GroupCommitter: batching, durability waits, and a writer that never dies."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from actors.committer import GroupCommitter


class Refused(Exception):
    pass


class GatedStore:
    """A store whose writes wait for `gate`; rows with `bad` are refused permanently."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.batches: list[list[dict[str, Any]]] = []

    async def write(self, rows: list[dict[str, Any]]) -> None:
        await self.gate.wait()
        if any(r.get("bad") for r in rows):
            raise Refused()
        self.batches.append(rows)


async def test_rows_submitted_together_are_written_in_one_batch() -> None:
    store = GatedStore()
    committer = GroupCommitter(store.write, interval=0.01)
    committer.start()
    await asyncio.gather(*(committer.submit({"n": i}) for i in range(50)))
    assert len(store.batches) == 1 and [r["n"] for r in store.batches[0]] == list(range(50))
    await committer.close()


async def test_rows_arriving_during_a_commit_wait_out_the_gather_window_too() -> None:
    """A steady stream of rows makes about one commit per gather window, not one after another
    each holding only what arrived during the last (each commit has its fixed cost)."""

    class SlowStore:
        def __init__(self) -> None:
            self.batches = 0

        async def write(self, rows: list[dict[str, Any]]) -> None:
            await asyncio.sleep(0.01)
            self.batches += 1

    store = SlowStore()
    committer = GroupCommitter(store.write, interval=0.05)
    committer.start()
    acks = []
    for i in range(100):  # a row every 5 ms for 0.5 s
        acks.append(committer.submit({"n": i}))
        await asyncio.sleep(0.005)
    await asyncio.gather(*acks)
    # ~0.5 s / 0.05 s windows, with room for a loaded machine; back to back it was ~40.
    assert store.batches <= 16, store.batches
    await committer.close()


async def test_flush_waits_for_the_batch_being_written() -> None:
    store = GatedStore()
    committer = GroupCommitter(store.write, interval=0.001)
    committer.start()
    store.gate.clear()
    fut = committer.submit({"n": 1})
    await asyncio.sleep(0.02)  # the batch is now in flight, blocked in the store
    flushing = asyncio.create_task(committer.flush())
    await asyncio.sleep(0.02)
    assert not flushing.done()
    store.gate.set()
    await flushing
    assert fut.done() and store.batches == [[{"n": 1}]]
    await committer.close()


async def test_cancelled_flush_neither_cancels_acks_nor_kills_the_writer() -> None:
    store = GatedStore()
    committer = GroupCommitter(store.write, interval=0.001, permanent=(Refused,))
    committer.start()
    store.gate.clear()
    good, bad = committer.submit({"n": 1}), committer.submit({"n": 2, "bad": True})
    flushing = asyncio.create_task(committer.flush())
    await asyncio.sleep(0.02)
    flushing.cancel()
    store.gate.set()
    await good
    with pytest.raises(RuntimeError):
        await bad
    await committer.submit({"n": 3})  # the writer is still alive
    assert [r["n"] for batch in store.batches for r in batch] == [1, 3]
    await committer.close()


async def test_transient_store_failure_is_retried_and_nothing_acks_before_it_lands() -> None:
    failures = 3

    async def flaky(rows: list[dict[str, Any]]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("database restarting")

    committer = GroupCommitter(flaky, interval=0.001, max_backoff=0.01)
    committer.start()
    fut = committer.submit({"n": 1})
    await asyncio.sleep(0.03)
    await fut
    assert failures == 0
    await committer.close()


async def test_group_commits_leave_no_cyclic_garbage() -> None:
    # A reference cycle per commit fills the young generation the host's loop stops to collect.
    store = GatedStore()
    committer = GroupCommitter(store.write, interval=0.0)
    committer.start()
    await committer.submit({"n": -1})
    gc.disable()
    try:
        gc.collect()
        for i in range(200):
            await committer.submit({"n": i})
        garbage = gc.collect()
    finally:
        gc.enable()
    assert len(store.batches) == 201
    assert garbage < 200
    await committer.close()


async def test_every_failing_commit_is_retried_until_it_lands() -> None:
    failures = {1: 2, 3: 2}  # batch number -> failed tries left: the retry policy serves each commit
    tries: list[int] = []

    async def flaky(rows: list[dict[str, Any]]) -> None:
        batch = rows[0]["n"]
        tries.append(batch)
        if failures.get(batch):
            failures[batch] -= 1
            raise ConnectionError("database restarting")

    committer = GroupCommitter(flaky, interval=0.0, max_backoff=0.01)
    committer.start()
    for n in range(5):
        await committer.submit({"n": n})
    assert tries == [0, 1, 1, 1, 2, 3, 3, 3, 4]
    await committer.close()


async def test_retries_wait_the_policy_curve_from_the_first_failed_try_and_each_failure_counts() -> None:
    # The first try is a plain call and the policy the later ones: together the waits are still
    # 0.05, 0.1, 0.2 s, and every failed try counts once in essaycoach_store_errors_total.
    from actors.committer import _STORE_ERRORS

    tries: list[float] = []

    async def flaky(rows: list[dict[str, Any]]) -> None:
        tries.append(asyncio.get_running_loop().time())
        if len(tries) <= 3:
            raise ConnectionError("database restarting")

    errors_before = _STORE_ERRORS._prom._value.get()
    committer = GroupCommitter(flaky, interval=0.0, max_backoff=2.0)
    committer.start()
    await committer.submit({"n": 1})
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert len(tries) == 4
    for gap, wait in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert gap >= wait * 0.95, gaps
    assert _STORE_ERRORS._prom._value.get() - errors_before == 3
    await committer.close()


async def test_a_permanent_error_on_the_first_try_is_not_retried() -> None:
    tries = 0

    async def refusing(rows: list[dict[str, Any]]) -> None:
        nonlocal tries
        tries += 1
        raise Refused()

    committer = GroupCommitter(refusing, interval=0.0, permanent=(Refused,))
    committer.start()
    with pytest.raises(RuntimeError):
        await committer.submit({"n": 1})
    assert tries == 1
    await committer.close()
