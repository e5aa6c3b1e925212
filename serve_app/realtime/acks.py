"""A writing socket's updates on their way to the essay host, acked in the order they came.

The doc socket used to await each update's commit before reading the next frame. A student
types about every half second, so while the host was slow (a commit behind a compaction, a
restart) the next update waited unread in the socket: it reached the teacher's socket (which
the Gateway serves on receipt) only after the earlier one was durable, and a stall of the host
became a stall of every teacher's view. Now the socket hands each update to the host and reads
on; `AckQueue` answers each with the ack counter (`[100][n]`: the first n updates are durable)
once it and every update before it are durable, so an ack never covers one that is not.

Each update is an entry (`Sent`) settled by whoever hears the host's answer: on the host stream
that is the stream's receive callback (`serve_app.hosts.EssayHosts.submit_update`), so the ack
is written from that callback with no task, coroutine or loop turn per update (those were about
a third of the Gateway loop's samples under continuous typing, py-spy 2026-12-06). `add` takes
an awaitable instead (in-process hosts, tracing) and settles its entry when it finishes.

A failed update (refused, its essay deleted, the host unreachable) fails the socket: `failure`
holds it, and `receive` raises it in the socket's task (also when that task is waiting for the
next frame: the wait is cancelled), where the socket's usual handlers close it with the right code.
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


class Sent:
    """One update at the host, not yet acked: `settle` it once with None when the host has
    committed it, or with the error it failed with. Later settles are ignored."""

    __slots__ = ("_queue", "done", "error", "_task")

    def __init__(self, queue: AckQueue) -> None:
        self._queue = queue
        self.done = False
        self.error: BaseException | None = None
        self._task: asyncio.Future[Any] | None = None  # `AckQueue.add`'s: kept referenced until done

    def settle(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done, self.error, self._task = True, error, None
        self._queue._settled()


class AckQueue:
    """The updates one socket has sent to its host and not yet acked, oldest first."""

    __slots__ = ("acked", "failure", "_sent", "_on_acked", "_limit", "_reader", "_interrupted", "_room")

    def __init__(self, on_acked: Callable[[int], None], *, limit: int = IN_FLIGHT_LIMIT) -> None:
        self.acked = 0
        self.failure: BaseException | None = None
        self._sent: deque[Sent] = deque()
        self._on_acked = on_acked
        self._limit = limit
        self._reader: asyncio.Task[Any] | None = None  # the socket's task while it waits in `receive`
        self._interrupted = False  # we cancelled `_reader` for `failure`
        self._room: asyncio.Future[None] | None = None  # `room`'s wait, made only while it waits

    @property
    def waiting(self) -> int:
        return len(self._sent)

    def sent(self) -> Sent:
        """One more update is on its way to the host; settle what this returns when it ends."""
        entry = Sent(self)
        self._sent.append(entry)
        return entry

    def add(self, apply: Awaitable[Any]) -> None:
        """`apply` (the host's answer to one update) runs on its own; the ack follows in order."""
        entry = self.sent()
        task = entry._task = asyncio.ensure_future(apply)
        task.add_done_callback(lambda done: entry.settle(_error_of(done)))

    async def room(self) -> None:
        """Wait until fewer than `limit` updates are waiting (the oldest answered)."""
        while len(self._sent) >= self._limit and self.failure is None:
            self._room = asyncio.get_running_loop().create_future()
            try:
                await self._room
            finally:
                self._room = None
        self._raise_failure()

    async def receive(self, next_frame: Awaitable[T]) -> T:
        """`await next_frame`, ended by the first failed update: that update's error is raised."""
        self._raise_failure()
        task = asyncio.current_task()
        if task is None:
            return await next_frame
        # The wait is cancelled in our own task on a failure: a task per read to cancel instead
        # cost a task and a loop turn per frame while any update was at the host. Even with
        # nothing at the host now: the receive callback may send one during this wait
        # (`serve_app.realtime.receipt`), and its failure must end the wait and close the socket.
        self._reader = task
        try:
            return await next_frame
        except asyncio.CancelledError:
            failure = self.failure
            if self._interrupted and failure is not None and task.uncancel() == 0:  # only we cancelled it
                raise failure from None
            raise
        finally:
            self._reader, self._interrupted = None, False

    def _settled(self) -> None:
        sent = self._sent
        acked = self.acked
        while sent and sent[0].done and self.failure is None:
            entry = sent.popleft()
            if entry.error is not None:
                self.failure = entry.error
                reader = self._reader
                if reader is not None and not self._interrupted:
                    self._interrupted = True
                    reader.cancel()
                break
            acked += 1
        if acked != self.acked:
            self.acked = acked
            self._on_acked(acked)
        room = self._room
        if room is not None and not room.done() and (len(sent) < self._limit or self.failure is not None):
            room.set_result(None)

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


def _error_of(done: asyncio.Future[Any]) -> BaseException | None:
    """A finished future's error (a cancelled one's: `CancelledError`), None if it succeeded."""
    if done.cancelled():
        return asyncio.CancelledError("update cancelled")
    return done.exception()
