"""A writing socket's updates on their way to the essay host, acked in the order they came.

The doc socket used to await each update's commit before reading the next frame. A student
types about every half second, so while the host was slow (a commit behind a compaction, a
restart) the next update waited unread in the socket: it reached the teacher's socket (which
the Gateway serves on receipt) only after the earlier one was durable, and a stall of the host
became a stall of every teacher's view. Now the socket hands each update to the host and reads
on; `AckQueue` answers each with the ack counter (`[100][n]`: the first n updates are durable)
once it and every update before it are durable, so an ack never covers one that is not.

A failed update (refused, its essay deleted, the host unreachable) fails the socket: `failure`
holds it, and `receive` raises it in the socket's task (also when that task is waiting for the
next frame), where the socket's usual handlers close it with the right code.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

IN_FLIGHT_LIMIT = 64
"""Updates of one socket waiting for the host at once; beyond this the socket reads no further
frame until the oldest is answered (a client cannot queue unbounded work)."""


class AckQueue:
    """The updates one socket has sent to its host and not yet acked, oldest first."""

    __slots__ = ("acked", "failure", "_sent", "_on_acked", "_limit", "_reading")

    def __init__(self, on_acked: Callable[[int], None], *, limit: int = IN_FLIGHT_LIMIT) -> None:
        self.acked = 0
        self.failure: BaseException | None = None
        self._sent: deque[asyncio.Future[Any]] = deque()
        self._on_acked = on_acked
        self._limit = limit
        self._reading: asyncio.Future[Any] | None = None

    @property
    def waiting(self) -> int:
        return len(self._sent)

    def add(self, apply: Awaitable[Any]) -> None:
        """`apply` (the host's answer to one update) runs on its own; the ack follows in order."""
        answer = asyncio.ensure_future(apply)
        self._sent.append(answer)
        answer.add_done_callback(self._answered)

    async def room(self) -> None:
        """Wait until fewer than `limit` updates are waiting (the oldest answered)."""
        while len(self._sent) >= self._limit and self.failure is None:
            await asyncio.wait({self._sent[0]})
        self._raise_failure()

    async def receive(self, next_frame: Awaitable[T]) -> T:
        """`await next_frame`, ended by the first failed update: that update's error is raised."""
        self._raise_failure()
        if not self._sent:  # nothing can fail while we wait: no task needed
            return await next_frame
        reading = self._reading = asyncio.ensure_future(next_frame)
        try:
            return await reading
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.failure is not None and (task is None or not task.cancelling()):
                raise self.failure from None  # we cancelled the read, not someone cancelling us
            raise
        finally:
            self._reading = None

    def _answered(self, answer: asyncio.Future[Any]) -> None:
        if not answer.cancelled():
            answer.exception()  # retrieved here: one after a failure is never looked at again
        sent = self._sent
        acked = self.acked
        while sent and sent[0].done() and self.failure is None:
            answer = sent.popleft()
            error = None if answer.cancelled() else answer.exception()
            if answer.cancelled() or error is not None:
                self.failure = error or asyncio.CancelledError("update cancelled")
                if self._reading is not None:
                    self._reading.cancel()
                break
            acked += 1
        if acked != self.acked:
            self.acked = acked
            self._on_acked(acked)

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure
