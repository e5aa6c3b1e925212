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

With an `AckBatch` (the doc socket's), the ack frames and ack metrics released in one loop turn
are written at the end of that turn: one frame per socket however many of its updates the turn
acked (n is cumulative: the last one says it all), and the turn's updates counted in one record
per counter. The host answers a group commit's updates together, so a turn releases many acks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("essaycoach.ws")

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

    __slots__ = ("acked", "failure", "_sent", "_on_acked", "_limit", "_reader", "_interrupted", "_room", "_batch",
                 "_due")

    def __init__(self, on_acked: Callable[[int], None], *, limit: int = IN_FLIGHT_LIMIT,
                 batch: AckBatch | None = None) -> None:
        """`on_acked(n)` writes the ack: at once, or at the end of the loop turn with `batch`."""
        self.acked = 0
        self.failure: BaseException | None = None
        self._sent: deque[Sent] = deque()
        self._on_acked = on_acked
        self._limit = limit
        self._reader: asyncio.Task[Any] | None = None  # the socket's task while it waits in `receive`
        self._interrupted = False  # we cancelled `_reader` for `failure`
        self._room: asyncio.Future[None] | None = None  # `room`'s wait, made only while it waits
        self._batch = batch
        self._due = False  # `acked` moved since the last ack written: `_batch` writes it this turn

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
                if acked != self.acked or self._due:  # what was durable before it is acked before the close
                    self.acked = acked
                    self.write_ack()
                reader = self._reader
                if reader is not None and not self._interrupted:
                    self._interrupted = True
                    reader.cancel()
                break
            acked += 1
        if acked != self.acked:
            self.acked = acked
            batch = self._batch
            if batch is None:
                self._on_acked(acked)
            elif not self._due:
                self._due = True
                batch.due(self)
        room = self._room
        if room is not None and not room.done() and (len(sent) < self._limit or self.failure is not None):
            room.set_result(None)

    def write_ack(self) -> None:
        """Write the ack for every update durable so far (`AckBatch`'s flush, or a failure's)."""
        self._due = False
        self._on_acked(self.acked)

    def write_due(self) -> None:
        """Write now the ack this loop turn's batch would write at its end: the socket is about
        to close, and updates already durable are acked before the close frame."""
        if self._due:
            self.write_ack()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


class AckBatch:
    """One replica's acks released during a loop turn, written when the turn's callbacks are done
    (`call_soon`, scheduled by the turn's first): one frame per socket, and the turn's acked
    updates recorded through `record(count, bytes, ack latencies)` just before (so a client that
    reads its ack finds it counted). A frame and a record per acked update were a write syscall
    and three metric calls each, from the host stream's receive callback."""

    __slots__ = ("_due", "_bytes", "_seconds", "_record", "_scheduled")

    def __init__(self, record: Callable[[int, int, list[float]], None]) -> None:
        self._due: list[AckQueue] = []
        self._bytes = 0
        self._seconds: list[float] = []
        self._record = record
        self._scheduled = False

    def count(self, size: int, seconds: float) -> None:
        """An update of `size` bytes acked `seconds` after it arrived: recorded with the turn's."""
        self._bytes += size
        self._seconds.append(seconds)
        self._schedule()

    def due(self, queue: AckQueue) -> None:
        self._due.append(queue)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Record and write what the turn released (the loop calls it; so may a test)."""
        self._scheduled = False
        if self._seconds:
            seconds, self._seconds, size, self._bytes = self._seconds, [], self._bytes, 0
            try:
                self._record(len(seconds), size, seconds)
            except Exception:  # the acks go out whatever the metrics do
                log.exception("recording acked updates failed")
        due, self._due = self._due, []
        for queue in due:
            if queue._due:
                try:
                    queue.write_ack()
                except Exception:  # one socket's failed write must not hold back the others' acks
                    log.exception("writing an ack failed")


def _error_of(done: asyncio.Future[Any]) -> BaseException | None:
    """A finished future's error (a cancelled one's: `CancelledError`), None if it succeeded."""
    if done.cancelled():
        return asyncio.CancelledError("update cancelled")
    return done.exception()
