"""Group commit of the update log: many essays' updates in one transaction every few ms.

`submit` returns a future that resolves once the row is committed; callers acknowledge the
update only then. The write may refuse rows on their own (it returns them by index with the
error each one's future gets: the essay host's fencing, `actors.leases`) and commit the rest.
A failing store (PostgreSQL restarting) is retried with capped backoff (`actors.retry`) and the
futures simply wait: nothing is acknowledged that is not in the log, and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from actors import retry
from actors.metrics import metric

log = logging.getLogger("essaycoach.committer")
_COMMIT_SECONDS = metric("essaycoach_commit_seconds")
_BATCH_ROWS = metric("essaycoach_commit_batch_rows")
_STORE_ERRORS = metric("essaycoach_store_errors_total").labels("update_log")

# Returns the rows it refused (index in the batch -> the error for its future), or None.
WriteBatch = Callable[[list[dict[str, Any]]], Awaitable[Mapping[int, BaseException] | None]]
Entry = tuple[dict[str, Any], "asyncio.Future[None]"]


class GroupCommitter:
    """Batches rows into one write per `interval` seconds (or sooner when `max_batch` fill up)."""

    def __init__(self, write: WriteBatch, *, interval: float = 0.004, max_batch: int = 2000,
                 max_backoff: float = 2.0, permanent: tuple[type[BaseException], ...] = ()) -> None:
        self._write = write
        self._permanent = permanent
        self._interval = interval
        self._max_batch = max_batch
        self._pending: list[Entry] = []
        self._inflight: list[Entry] = []
        self._pending_since = 0.0  # when the oldest of `_pending` was submitted (the loop's clock)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Until a write lands (0.05 s doubling to `max_backoff` apart): the acks wait, none is lost.
        # Each failed try counts in `essaycoach_store_errors_total{operation="update_log"}`.
        # Built once: a tenacity `AsyncRetrying` is a reference cycle, and one per group commit
        # (hundreds a second) was most of what each young-generation collection freed, at ~20 ms
        # a collection on the host's loop. Commits run one at a time, as one policy needs.
        # The first try of each commit is a plain call (`_write_once`): entering tenacity cost ~20 us
        # a commit for the one try nearly every commit needs; the policy takes over from the second
        # try on the same waits (0.05 s after the first failure, then 0.1, 0.2, ...).
        self._first_wait = retry.delay(1, first=0.05, cap=max_backoff)
        self._retrying = retry.policy(first=0.05, cap=max_backoff, log=log, what="update log write",
                                      retry_if=self._retryable, on_failure=lambda _exc: _STORE_ERRORS.inc(),
                                      wait_strategy=lambda state: retry.delay(state.attempt_number + 1,
                                                                              first=0.05, cap=max_backoff))
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")

    def submit(self, row: dict[str, Any]) -> asyncio.Future[None]:
        if self._closing:
            raise RuntimeError("committer is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            self._pending_since = loop.time()
        self._pending.append((row, fut))
        self._wakeup.set()
        return fut

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._inflight)

    async def flush(self) -> None:
        """Wait until everything submitted so far, including the batch being written, is committed.

        The futures are shielded: a cancelled flush must not cancel other callers' acks.
        """
        waiting = [f for _, f in (*self._inflight, *self._pending) if not f.done()]
        if waiting:
            await asyncio.gather(*(asyncio.shield(f) for f in waiting), return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        self._closing = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                # A gather window from the oldest waiting row turns a burst of keystrokes across
                # essays into one INSERT, after a commit too: commits back to back each took only
                # the rows of the last one's few ms (on PostgreSQL, 4 rows a commit at 1,000
                # typists, the commits' fixed cost most of the host's CPU per update).
                delay = self._pending_since + self._interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._inflight, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
                self._pending_since = float("-inf")  # rows left over max_batch have waited enough
                started = time.perf_counter()
                _BATCH_ROWS.observe(len(self._inflight))
                try:
                    await self._commit(self._inflight)
                    _COMMIT_SECONDS.observe(time.perf_counter() - started)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never let the writer die: every later ack would hang
                    log.exception("group commit failed unexpectedly")
                    for _, fut in self._inflight:
                        if not fut.done():
                            fut.set_exception(RuntimeError(f"update log write failed: {exc}"))
                finally:
                    self._inflight = []

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, Exception) and not isinstance(exc, self._permanent)

    async def _write_once(self, rows: list[dict[str, Any]]) -> Mapping[int, BaseException] | None:
        """`_write`, retried by the policy only once a first plain try failed with a retryable error."""
        try:
            return await self._write(rows)
        except Exception as exc:
            if not self._retryable(exc):
                raise
            _STORE_ERRORS.inc()
            log.warning("update log write failed; retrying", extra={"error": repr(exc), "attempt": 1,
                                                                     "retry_in": self._first_wait})
        await asyncio.sleep(self._first_wait)
        return await self._retrying(self._write, rows)

    async def _commit(self, batch: list[Entry]) -> None:
        try:
            refused: Mapping[int, BaseException] = await self._write_once([row for row, _ in batch]) or {}
        except self._permanent:
            # One bad row (its essay was deleted) must not hold the others hostage: split.
            if len(batch) == 1:
                log.warning("update log row refused", extra={"essay_id": str(batch[0][0].get("essay_id"))})
                if not batch[0][1].done():
                    batch[0][1].set_exception(RuntimeError("update refused by the store"))
                return
            for item in batch:
                await self._commit([item])
            return
        self.batches += 1
        self.rows += len(batch) - len(refused)
        for i, (_, fut) in enumerate(batch):
            if not fut.done():
                if i in refused:
                    fut.set_exception(refused[i])
                else:
                    fut.set_result(None)
