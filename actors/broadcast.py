"""The bus: fire-and-forget fan-out from essay hosts to every Gateway replica's sockets.

Channels: `essay:{id}:doc` (binary: origin id, newline, Yjs update), `essay:{id}` (JSON events),
`class:{id}` (JSON student rows). Delivery is at-most-once on every implementation, which is why
events carry `seq` and clients resume; nothing durable ever depends on the bus.

Each bus instance is one *node* (one per process: a Gateway replica, an essay host). A Gateway
replica hands an acknowledged update straight to its own sockets (`deliver_local`) and asks the
host to publish it with `skip_node` set to the replica's node, so the copy on the bus goes only to
the other replicas: one hop instead of three for the common single-replica case.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from actors.config import BusConfig
from actors.metrics import metric

log = logging.getLogger("essaycoach.bus")
_FANOUT = metric("essaycoach_fanout_seconds")
_PUBLISHED = metric("essaycoach_bus_published_total")
_DELIVERED = metric("essaycoach_bus_delivered_total")
_DROPPED = metric("essaycoach_bus_dropped_total")

Handler = Callable[[str, bytes], None]

RESYNC = b""
"""Delivered to every handler of a channel after the subscription was lost and restored: messages
may have been missed, so the handler must refetch state from its source (the essay host)."""


DELETED = b"\x00deleted"
"""Published on an essay's document and events channels when the essay is being deleted: every
socket on it closes with 4404 (no doc message starts with a NUL: they start with an origin)."""


MOVED = b"\x00moved"
"""Published on an essay's document and events channels when its host gave the essay up (handed
over to the host routing now names, or its lease was lost): document and events sockets close with
1013 and reconnect; a class documents socket follows the essay anew."""


class Bus(Protocol):
    """Publish to a channel; subscribe a handler to a channel (returns an unsubscribe function)."""

    node: str
    """This bus instance's id; `publish(..., skip_node=node)` does not reach its handlers."""

    async def publish(self, channel: str, message: bytes, *, skip_node: str | None = None) -> None: ...

    def deliver_local(self, channel: str, message: bytes) -> None:
        """Hand `message` to this node's own handlers of `channel` now, without the bus."""

    async def subscribe(self, channel: str, handler: Handler) -> Callable[[], None]: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...


class LocalFanout:
    """Channel -> handlers within one process; each subscription backend feeds one of these."""

    def __init__(self) -> None:
        self._handlers: dict[str, set[Handler]] = {}

    def add(self, channel: str, handler: Handler) -> bool:
        """Register; True when this is the channel's first handler (the backend must subscribe)."""
        handlers = self._handlers.setdefault(channel, set())
        handlers.add(handler)
        return len(handlers) == 1

    def remove(self, channel: str, handler: Handler) -> bool:
        """Unregister; True when the channel has no handlers left (the backend may unsubscribe)."""
        handlers = self._handlers.get(channel)
        if not handlers:
            return False
        handlers.discard(handler)
        if not handlers:
            del self._handlers[channel]
            return True
        return False

    def channels(self) -> list[str]:
        return list(self._handlers)

    def deliver(self, channel: str, message: bytes) -> None:
        handlers = list(self._handlers.get(channel, ()))
        if handlers:
            _DELIVERED.inc(len(handlers))  # once per message, not per socket: this is the hot path
        for handler in handlers:
            try:
                handler(channel, message)
            except Exception:  # one broken socket must not starve the others
                log.exception("bus handler failed", extra={"channel": channel})


class InMemoryBus:
    """A bus inside one process: for tests and for hosts and gateway sharing a process."""

    def __init__(self) -> None:
        self.fanout = LocalFanout()
        self.node = new_node_id()
        self._published = _PUBLISHED.labels("memory")

    async def publish(self, channel: str, message: bytes, *, skip_node: str | None = None) -> None:
        self._published.inc()
        if skip_node != self.node:
            self.fanout.deliver(channel, message)

    def deliver_local(self, channel: str, message: bytes) -> None:
        self.fanout.deliver(channel, message)

    async def subscribe(self, channel: str, handler: Handler) -> Callable[[], None]:
        self.fanout.add(channel, handler)

        def unsubscribe() -> None:
            self.fanout.remove(channel, handler)

        return unsubscribe

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None


Published = tuple[str, bytes, str | None]
"""A message waiting to be published: (channel, message, skip_node)."""

QUEUE_MAX_BYTES = 64 * 1024 * 1024
"""Default bound on the bytes one outbox (or one hub subscriber queue) holds (`BUS_QUEUE_MAX_BYTES`)."""


class Outbox:
    """Publishes queued off the caller's path: one sender task ships them in order, in batches of
    what queued meanwhile, through `send_batch` (which handles its own errors and returns False
    when the backend lost the batch).

    Beyond `limit` messages or `max_bytes` waiting, the oldest are dropped (the backend is down or
    slow). Every channel that lost a message that way, or in a lost batch, then gets `RESYNC` (to
    every node) once the queue is back under half its bounds, so its subscribers refetch from the
    essay host, as after a lost subscription. A lost `RESYNC` batch stays owed and is sent again
    after the next publish (not in a loop while the backend is down)."""

    def __init__(self, send_batch: Callable[[list[Published]], Awaitable[bool]], *, name: str,
                 limit: int = 10_000, max_bytes: int = QUEUE_MAX_BYTES, batch: int = 500) -> None:
        self._send_batch, self._name, self._limit, self._batch = send_batch, name, limit, batch
        self._max_bytes = max_bytes
        self._items: deque[Published] = deque()
        self._bytes = 0
        self._lost: dict[str, None] = {}  # channels owed a RESYNC, in order
        self._ready = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._published = _PUBLISHED.labels(name.removesuffix("-bus-sender"))
        self._overflow, self._failed = _DROPPED.labels("overflow"), _DROPPED.labels("send_failed")

    def put(self, item: Published) -> None:
        self._published.inc()
        self._items.append(item)
        self._bytes += len(item[1])
        while len(self._items) > self._limit or self._bytes > self._max_bytes:
            channel, message, _ = self._items.popleft()
            self._bytes -= len(message)
            self._lost[channel] = None
            self._overflow.inc()
        self._ready.set()
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop(), name=self._name)

    def _calm(self) -> bool:
        return len(self._items) <= self._limit // 2 and self._bytes <= self._max_bytes // 2

    async def _send_loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._items or self._lost:
                if self._items:
                    batch = [self._items.popleft() for _ in range(min(len(self._items), self._batch))]
                    self._bytes -= sum(len(message) for _, message, _ in batch)
                    if not await self._send_batch(batch):
                        self._failed.inc(len(batch))
                        self._lost.update((channel, None) for channel, _, _ in batch)
                if self._lost and self._calm():
                    channels = list(self._lost)[:self._batch]
                    for channel in channels:
                        del self._lost[channel]
                    log.warning("bus messages dropped; subscribers resync", extra={"channels": len(channels)})
                    if not await self._send_batch([(channel, RESYNC, None) for channel in channels]):
                        self._lost.update((channel, None) for channel in channels)
                        break  # still down: owed until the next publish wakes the sender

    def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()


def new_node_id() -> str:
    return uuid.uuid4().hex


def doc_message(origin: str, update: bytes, trace: str | None = None) -> bytes:
    """`origin`, the wall-clock time it was built in integer microseconds (for the fan-out
    histogram: an integer formats ~7x faster than a float), newline, `update`. With tracing on
    (`actors.tracing`) the time is followed by the update's W3C `trace` context (`doc_message_trace`)."""
    if trace is None:
        return f"{origin} {time.time_ns() // 1000}\n".encode() + update
    return f"{origin} {time.time_ns() // 1000} {trace}\n".encode() + update


def split_doc_message(message: bytes) -> tuple[str, bytes]:
    head, _, update = message.partition(b"\n")
    return head.partition(b" ")[0].decode(), update


def doc_message_age(message: bytes, now: float | None = None) -> float | None:
    """Seconds since `doc_message` built `message` (0 when another node's clock is ahead), or None
    when it carries no time. `now`: wall-clock seconds (default: the current time)."""
    stamp = message[:message.find(b"\n")].partition(b" ")[2]
    if not stamp.isdigit():
        stamp = stamp.partition(b" ")[0]  # a traced message: the time, then its trace context
        if not stamp.isdigit():
            return None
    now_us = time.time_ns() // 1000 if now is None else int(now * 1_000_000)
    return max(0, now_us - int(stamp)) / 1_000_000


def doc_message_trace(message: bytes) -> tuple[str, int] | None:
    """(W3C traceparent, wall-clock microseconds when built) of a traced `doc_message`; None for
    one sent without tracing."""
    fields = message[:message.find(b"\n")].split(b" ")
    if len(fields) != 3 or not fields[1].isdigit():
        return None
    return fields[2].decode(errors="replace"), int(fields[1])


class TurnAges:
    """One event loop's fan-out ages measured in its current turn, observed at the turn's end
    (`observe_fanout`). Per loop: a process-wide list let two loops (Serve's threads, tests'
    loops, one that closed before its turn came) observe each other's samples and race on it."""

    __slots__ = ("loop", "ages", "due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ages: list[float] = []
        self.due = False  # `observe` is scheduled on `loop`

    def add(self, age: float) -> None:
        if not self.due:  # the turn's first
            self.due = True
            self.loop.call_soon(self.observe)
        self.ages.append(age)

    def observe(self) -> None:
        self.due = False
        ages, self.ages = self.ages, []
        for age in ages:
            _FANOUT.observe(age)


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnAges] = weakref.WeakKeyDictionary()
_recent: list[TurnAges | None] = [None]  # the last used: found again without the weak lookup (per watcher)
_last_measured = [b""]  # the last message measured: its other watchers' hand-offs are not


def turn_ages(loop: asyncio.AbstractEventLoop) -> TurnAges:
    """`loop`'s `TurnAges` (made on first use, forgotten with the loop)."""
    turn = _recent[0]
    if turn is None or turn.loop is not loop:
        turn = _turns.get(loop)
        if turn is None:
            turn = _turns[loop] = TurnAges(loop)
        _recent[0] = turn
    return turn


def observe_fanout(message: bytes) -> None:
    """Record a doc or awareness message handed to a socket other than its writer's, once per
    message on this loop: `LocalFanout.deliver` hands the same bytes object to every socket in
    one loop, so the first hand-off stands for them all (a histogram observation per watcher was
    per-socket work on the hot path, ~3.5 us each under Ray).

    On an event loop the age is taken now and observed at the end of the loop turn (`TurnAges`,
    the loop's own): the histogram's record (prometheus-client and Ray's, ~30-50 us on a busy
    Gateway) otherwise ran inside the receive callback, before the next frame of the same turn
    reached its watchers."""
    if message is _last_measured[0]:  # by identity: a message object is one loop's, never another's
        return
    _last_measured[0] = message
    age = doc_message_age(message)
    if age is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a script, a thread): at once
        _FANOUT.observe(age)
        return
    turn_ages(loop).add(age)


def make_bus(config: BusConfig, *, cluster: bool) -> Bus:
    """Redis when `redis_url` is set; else the in-Ray hub for processes of a cluster (hosts and
    Serve replicas), or an in-process bus for a single process."""
    if config.redis_url:
        from actors.redis_bus import RedisBus

        return RedisBus(config.redis_url, max_bytes=config.queue_max_bytes)
    if cluster:
        from actors.ray_host import HubBus

        return HubBus(config.ray_namespace, max_bytes=config.queue_max_bytes)
    return InMemoryBus()
