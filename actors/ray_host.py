"""Ray shells: the named EssayHost actor and the in-Ray bus hub (the embedded default bus: a
Ray actor that Ray finds and restarts, with the messages on a TCP stream per process).

Only this module imports Ray in actors/. Each shell builds its collaborators in the actor process
from a plain `actors.config.HostShellConfig` its creator (serve_app.hosts) filled from the settings;
nothing here imports serve_app.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from actors import metrics, retry, tracing
from actors.broadcast import QUEUE_MAX_BYTES, RESYNC, Handler, LocalFanout, Outbox, Published, make_bus, new_node_id
from actors.config import HostShellConfig
from actors.host import EssayHost
from actors.host_api import HostAPI, operations
from actors.host_stream import (
    MAX_FRAME,
    FramedProtocol,
    GatedProtocol,
    Listener,
    Resolve,
    StreamServer,
    open_stream,
)
from actors.metrics import metric
from actors.process_tuning import lower_priority, release_free_memory_periodically, tune_gc

log = logging.getLogger("essaycoach.bus.hub")
_HUB_DROPPED = metric("essaycoach_bus_dropped_total").labels("hub_overflow")

HUB_NAME = "essaycoach-bus-hub-v4"  # versioned: the hub is detached and outlives deploys; v4: the stream
SUBSCRIBER_TTL = 60.0
"""Seconds a subscriber's registration and queue outlive its connection (its process died
without saying goodbye, or is reconnecting)."""
SUBSCRIBE_WAIT_SECONDS = 10.0  # as the Redis bus: then the reconnect's RESYNC covers the channel
SEND_WAIT_SECONDS = 5.0  # a publish batch waits this long for a connection, then is lost (RESYNC)
RESOLVE_TIMEOUT_SECONDS = 30.0  # one attempt to ask Ray for the hub's address and connect
REGISTER_CHUNK = 10_000  # channels per register or channel frame: well under `MAX_FRAME`

# Frames on the hub stream (after the token), kind in the first byte; integers big-endian.
#   to the hub:   R >Q version, B len + subscriber id, names       (re-)register: exactly these channels
#                 C >Q version, names add, names remove             a channel operation (empty: a ping)
#                 P >Q batch, then per message: >H len + channel, B len + skip node, >I len + message
#                 D                                                  goodbye: forget this subscriber
#   from the hub: A >Q batch, >Q version    the last publish batch and channel operation it applied
#                 M >H len + channel, message (rest)                 one delivered message
# names: >I count, then per name >H len + UTF-8.
REGISTER, CHANNELS, PUBLISH, DROP, ACK, MESSAGE = b"R", b"C", b"P", b"D", b"A", b"M"
_U16, _U32, _U64, _ACK = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q"), struct.Struct(">QQ")
_PUBLISH_HEAD = 1 + _U64.size
_PER_MESSAGE = _U16.size + 1 + _U32.size


def _names(names: list[str]) -> list[bytes]:
    parts = [_U32.pack(len(names))]
    for name in names:
        raw = name.encode()
        parts += (_U16.pack(len(raw)), raw)
    return parts


def _read_names(frame: bytes, pos: int) -> tuple[list[str], int]:
    (count,), pos = _U32.unpack_from(frame, pos), pos + _U32.size
    names = []
    for _ in range(count):
        (size,), pos = _U16.unpack_from(frame, pos), pos + _U16.size
        names.append(frame[pos:pos + size].decode())
        pos += size
    if pos > len(frame):
        raise ValueError("truncated names")
    return names, pos


def encode_register(version: int, subscriber: str, channels: list[str]) -> bytes:
    raw = subscriber.encode()
    return b"".join((REGISTER, _U64.pack(version), bytes((len(raw),)), raw, *_names(channels)))


def encode_channels(version: int, add: list[str], remove: list[str]) -> bytes:
    return b"".join((CHANNELS, _U64.pack(version), *_names(add), *_names(remove)))


def encode_publish(batch: int, messages: list[Published]) -> bytes:
    parts = [PUBLISH, _U64.pack(batch)]
    for channel, message, skip in messages:
        raw, skip_b = channel.encode(), (skip or "").encode()
        parts += (_U16.pack(len(raw)), raw, bytes((len(skip_b),)), skip_b, _U32.pack(len(message)), message)
    return b"".join(parts)


def encode_delivery(channel: str, message: bytes) -> bytes:
    raw = channel.encode()
    return b"".join((MESSAGE, _U16.pack(len(raw)), raw, message))


def decode_register(frame: bytes) -> tuple[int, str, list[str]]:
    """(version, subscriber, channels); ValueError when malformed (as every `decode_*`)."""
    try:
        (version,), pos = _U64.unpack_from(frame, 1), 1 + _U64.size
        subscriber = frame[pos + 1:pos + 1 + frame[pos]].decode()
        channels, _ = _read_names(frame, pos + 1 + frame[pos])
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed register: {exc}") from None
    return version, subscriber, channels


def decode_channels(frame: bytes) -> tuple[int, list[str], list[str]]:
    """(version, add, remove)."""
    try:
        (version,) = _U64.unpack_from(frame, 1)
        add, pos = _read_names(frame, 1 + _U64.size)
        remove, _ = _read_names(frame, pos)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed channel operation: {exc}") from None
    return version, add, remove


def decode_publish(frame: bytes) -> tuple[int, list[Published]]:
    """(batch, messages)."""
    try:
        (batch,), pos = _U64.unpack_from(frame, 1), _PUBLISH_HEAD
        messages: list[Published] = []
        end = len(frame)
        while pos < end:
            (size,), pos = _U16.unpack_from(frame, pos), pos + _U16.size
            channel, pos = frame[pos:pos + size].decode(), pos + size
            skip, pos = frame[pos + 1:pos + 1 + frame[pos]].decode(), pos + 1 + frame[pos]
            (size,), pos = _U32.unpack_from(frame, pos), pos + _U32.size
            if pos + size > end:
                raise ValueError("truncated message")
            messages.append((channel, frame[pos:pos + size], skip or None))
            pos += size
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed publish: {exc}") from None
    return batch, messages


def decode_delivery(frame: bytes) -> tuple[str, bytes]:
    try:
        (size,) = _U16.unpack_from(frame, 1)
        if 1 + _U16.size + size > len(frame):
            raise ValueError("truncated channel")
        return frame[3:3 + size].decode(), frame[3 + size:]
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed delivery: {exc}") from None


def publish_frames(first_batch: int, messages: list[Published]) -> list[tuple[int, bytes, list[str]]]:
    """`messages` as publish frames of at most `MAX_FRAME` bytes, numbered from `first_batch`:
    (batch, frame, its channels). A message that fits no frame is left out (the caller resyncs
    its channel)."""
    frames: list[tuple[int, bytes, list[str]]] = []
    chunk: list[Published] = []
    size = _PUBLISH_HEAD
    limit = MAX_FRAME
    for item in messages:
        cost = _PER_MESSAGE + len(item[0]) * 4 + len(item[2] or "") * 4 + len(item[1])  # UTF-8: <= 4 bytes a char
        if _PUBLISH_HEAD + cost > limit:
            continue
        if size + cost > limit:
            frames.append((first_batch + len(frames), encode_publish(first_batch + len(frames), chunk),
                           [c for c, _, _ in chunk]))
            chunk, size = [], _PUBLISH_HEAD
        chunk.append(item)
        size += cost
    if chunk:
        frames.append((first_batch + len(frames), encode_publish(first_batch + len(frames), chunk),
                       [c for c, _, _ in chunk]))
    return frames


class _Subscriber:
    """A process's registration at the hub: its channels, its connection, and its queue of
    messages the connection could not take.

    Channel changes arrive as numbered operations (`version`, one counter per process). Each
    channel remembers the version of its latest add or remove (`versions`; removed channels stay
    as tombstones) and an older operation for it is ignored: one connection delivers in order,
    but a re-registration (`set_channels`) may cross operations sent before it.
    """

    __slots__ = ("channels", "versions", "queue", "queued_bytes", "lost", "connection", "gone_since")

    TOMBSTONES = 10_000

    def __init__(self, now: float) -> None:
        self.channels: set[str] = set()
        self.versions: dict[str, int] = {}
        self.queue: deque[tuple[str, bytes]] = deque()
        self.queued_bytes = 0
        self.lost: dict[str, None] = {}  # channels that dropped a message: RESYNC once the queue is out
        self.connection: _HubSide | None = None
        self.gone_since: float | None = now  # no connection since then

    def update(self, version: int, add: list[str], remove: list[str]) -> None:
        for channel in add:
            if version > self.versions.get(channel, 0):
                self.versions[channel] = version
                self.channels.add(channel)
        for channel in remove:
            if version > self.versions.get(channel, 0):
                self.versions[channel] = version
                self.channels.discard(channel)
        if len(self.versions) - len(self.channels) > self.TOMBSTONES:
            # Tombstones far older than the newest operation cannot meet a reordered operation.
            horizon = version - self.TOMBSTONES // 2
            self.versions = {c: v for c, v in self.versions.items() if c in self.channels or v > horizon}

    def hold(self, channel: str, message: bytes, max_queue: int, max_bytes: int) -> None:
        """Queue `message`; beyond the bounds the oldest go, and their channels are owed RESYNC."""
        self.queue.append((channel, message))
        self.queued_bytes += len(message)
        while len(self.queue) > max_queue or self.queued_bytes > max_bytes:
            dropped, old = self.queue.popleft()
            self.queued_bytes -= len(old)
            self.lost[dropped] = None
            _HUB_DROPPED.inc()

    def next_pending(self) -> tuple[str, bytes] | None:
        """The oldest queued message; once none is left, RESYNC for each channel that lost one;
        then None."""
        if self.queue:
            channel, message = self.queue.popleft()
            self.queued_bytes -= len(message)
            return channel, message
        if self.lost:
            channel = next(iter(self.lost))
            del self.lost[channel]
            return channel, RESYNC
        return None


class BusHub(Listener):
    """A tiny pub/sub broker in a Ray actor. Ray finds it, keeps it alive and restarts it; the
    messages travel on TCP streams: each process's `HubBus` connects (`stream_address`, one
    Ray call), registers its channels, sends publish batches and channel operations, and
    receives its messages pushed as they come.

    Why not Ray calls: at 300 continuous typists with the web app's socket set the hub took
    65 `publish_many` and 65 `poll` calls a second, already batched, and cost 0.1-0.2 cores,
    nearly all of it Ray's own per-call work (~0.7-1 ms of CPU per call in Ray's threads, in
    the hub and in each caller). On a stream a batch is one frame, read and written by the
    event loop: measured at that load the hub went to 0.02 cores and the whole server from
    0.92-1.11 to 0.64-0.79 (ops/loadtest/README.md, "The in-Ray bus hub on TCP streams").
    Trust, framing and keepalive are the essay host stream's (`actors.host_stream`: a random
    token only Ray callers get).

    A slow subscriber (its process does not read as fast as we write) never holds up the others:
    writes never wait. Once its connection's kernel and transport buffers hold more than
    `WRITE_HIGH_WATER` bytes, its messages go to its queue instead, at most `max_queue` messages
    and `max_bytes` bytes; beyond, the oldest are dropped. When the connection drains, the queue
    goes out in order, then `RESYNC` for each channel that lost a message, so its sockets
    refetch from the essay host. A subscriber with no connection queues the same way, for
    `ttl` seconds after it was lost (then it is forgotten: its process died). So one subscriber
    costs the hub at most ~`WRITE_HIGH_WATER` + `max_bytes`.
    """

    def __init__(self, max_queue: int = 10_000, max_bytes: int = QUEUE_MAX_BYTES, *, token: bytes | None = None,
                 ttl: float = SUBSCRIBER_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._subs: dict[str, _Subscriber] = {}
        self._max_queue = max_queue
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._clock = clock
        self._next_sweep = 0.0
        super().__init__(token)
        self._starting = asyncio.Lock()

    # --- the Ray actor's one remote method ----------------------------------------------------

    async def stream_address(self) -> tuple[str, int, bytes]:
        """Where `HubBus` connects: this node's address, the port and the token (listening
        from the first call on)."""
        async with self._starting:
            if self._server is None:
                await self.start(node_address())
        return node_address(), self.port, self.token

    # --- the stream (`Listener.start` and `close`: the processes reconnect and resync) ---------

    def connection(self) -> GatedProtocol:
        return _HubSide(self)

    def attach(self, subscriber: str, connection: _HubSide) -> None:
        """`connection` is now `subscriber`'s (an older one of its is closed); what waited goes out."""
        sub = self._subs.get(subscriber)
        if sub is None:
            sub = self._subs[subscriber] = _Subscriber(self._clock())
        old, sub.connection, sub.gone_since = sub.connection, connection, None
        if old is not None and old is not connection:
            old.close()
        self.drain(sub)

    def detach(self, subscriber: str, connection: _HubSide) -> None:
        sub = self._subs.get(subscriber)
        if sub is not None and sub.connection is connection:
            sub.connection, sub.gone_since = None, self._clock()

    def drain(self, sub: _Subscriber) -> None:
        """Send what `sub` has waiting while its connection takes it."""
        connection = sub.connection
        while connection is not None and not connection.paused and connection.transport is not None:
            item = sub.next_pending()
            if item is None:
                return
            connection.send(encode_delivery(*item))

    # --- the broker ---------------------------------------------------------------------------

    def publish_many(self, messages: list[Published]) -> None:
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self._sweep(now)
        for channel, message, skip in messages:
            self.publish(channel, message, skip)

    def publish(self, channel: str, message: bytes, skip: str | None = None) -> None:
        """To every subscriber of `channel` but `skip` (which delivered it itself): written to its
        connection, or queued while that connection is backed up or gone."""
        frame = None
        for name, sub in self._subs.items():
            if name == skip or channel not in sub.channels:
                continue
            connection = sub.connection
            if connection is not None and not connection.paused and not sub.queue and not sub.lost:
                if frame is None:  # the same bytes for every subscriber
                    frame = encode_delivery(channel, message)
                connection.send(frame)
            else:  # behind what already waits, in order
                sub.hold(channel, message, self._max_queue, self._max_bytes)

    def _sweep(self, now: float) -> None:
        for name in [name for name, sub in self._subs.items()
                     if sub.gone_since is not None and now - sub.gone_since > self._ttl]:
            del self._subs[name]  # its process died without saying goodbye

    def update_channels(self, subscriber: str, version: int, add: list[str], remove: list[str]) -> None:
        """Operation `version` of `subscriber`: subscribe to `add`, unsubscribe from `remove`."""
        self._subscriber(subscriber).update(version, add, remove)

    def set_channels(self, subscriber: str, version: int, channels: list[str]) -> None:
        """`subscriber` (registering on a new connection) holds exactly `channels`."""
        sub = self._subscriber(subscriber)
        wanted = set(channels)
        sub.update(version, list(wanted), [c for c in sub.channels if c not in wanted])

    def _subscriber(self, name: str) -> _Subscriber:
        sub = self._subs.get(name)
        if sub is None:
            sub = self._subs[name] = _Subscriber(self._clock())
        return sub

    def drop(self, subscriber: str) -> None:
        self._subs.pop(subscriber, None)


class _HubSide(GatedProtocol):
    """One process's connection at the hub. Frames are applied in order as they are read; the
    frames of one read are acknowledged by one `ACK` after it (publish batch and channel
    operation), which the process awaits for `subscribe` and `ping` and uses to tell which
    batches a broken connection may have lost."""

    def __init__(self, hub: BusHub) -> None:
        super().__init__(hub)
        self.hub = hub
        self.subscriber: str | None = None
        self._batch = 0
        self._version = 0
        self._ack_owed = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._ack_owed and self.transport is not None:
            self._ack_owed = False
            self.send(ACK + _ACK.pack(self._batch, self._version))

    def trusted_frame_received(self, frame: bytes) -> None:
        kind = frame[:1]
        try:
            if kind == PUBLISH:
                self._batch, messages = decode_publish(frame)
                self.hub.publish_many(messages)
            elif kind == CHANNELS:
                version, add, remove = decode_channels(frame)
                if self.subscriber is None:
                    raise ValueError("a channel operation before registering")
                self.hub.update_channels(self.subscriber, version, add, remove)
                self._version = version
            elif kind == REGISTER:
                version, subscriber, channels = decode_register(frame)
                self.subscriber = subscriber
                self.hub.set_channels(subscriber, version, channels)
                self.hub.attach(subscriber, self)
                self._version = version
            elif kind == DROP:
                if self.subscriber is not None:
                    self.hub.drop(self.subscriber)
                    self.subscriber = None
            else:
                raise ValueError(f"unknown frame kind {kind!r}")
        except ValueError as exc:
            log.warning("bus hub: malformed frame; closing", extra={"error": str(exc)})
            self.close()
            return
        self._ack_owed = True

    def resume_writing(self) -> None:
        super().resume_writing()
        sub = self.hub._subs.get(self.subscriber) if self.subscriber is not None else None
        if sub is not None and sub.connection is self:
            self.hub.drain(sub)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.subscriber is not None:
            self.hub.detach(self.subscriber, self)


class _BusSide(FramedProtocol):
    """A process's end of its hub stream: delivered messages go to the bus's handlers as they
    are read."""

    def __init__(self, bus: HubBus) -> None:
        super().__init__()
        self.bus = bus
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def frame_received(self, frame: bytes) -> None:
        kind = frame[:1]
        try:
            if kind == MESSAGE:
                channel, message = decode_delivery(frame)
                self.bus.fanout.deliver(channel, message)
            elif kind == ACK and len(frame) == 1 + _ACK.size:
                self.bus._acked(self, *_ACK.unpack_from(frame, 1))
            else:
                raise ValueError(f"unknown frame kind {kind!r}")
        except ValueError as exc:
            log.warning("bus hub stream: malformed frame; reconnecting", extra={"error": str(exc)})
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.bus._lost(self)
        if not self.done.done():
            self.done.set_result(None)


class HubBus:
    """The `Bus` over a BusHub actor: one TCP stream per process to the hub (`BusHub`), found
    through Ray (`resolve`: the hub actor's `stream_address`), reconnected after a break.

    Publishes leave through an `Outbox` as publish frames. Each connection starts with a
    registration of every channel this process holds; `subscribe` returns once the hub has
    applied the channel's operation (or after `SUBSCRIBE_WAIT_SECONDS` while the hub is
    unreachable). After a break (the hub restarted, or the connection was lost) the next
    connection registers again, and once the hub acknowledges it every channel gets `RESYNC`:
    messages may have been missed. Publish batches the hub had not acknowledged when the
    connection broke may be lost: their channels get `RESYNC` (to every node) on the next one.
    """

    def __init__(self, namespace: str | None = None, *, max_bytes: int = QUEUE_MAX_BYTES,
                 resolve: Resolve | None = None) -> None:
        self.hub: Any = None  # the actor handle (its `.remote` methods are not visible to a type checker)
        if resolve is None:
            # The first process to make the (detached) hub sets its byte bound for its life.
            self.hub = ray.remote(BusHub).options(
                name=HUB_NAME, namespace=namespace, get_if_exists=True, lifetime="detached",
                max_restarts=-1, num_cpus=0, enable_task_events=False,
            ).remote(max_bytes=max_bytes)
            resolve = self._ask_hub
        self._resolve = resolve
        self.fanout = LocalFanout()
        self.node = self.subscriber = new_node_id()
        self._version = 0
        self._acked_version = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()  # in version order
        self._batch = 0
        self._unacked: deque[tuple[int, list[str]]] = deque()  # publish batches sent, not yet acknowledged
        self._protocol: _BusSide | None = None
        self._connected = asyncio.Event()
        self._registering = 0  # the current connection's registration, until acknowledged
        self._told_subscribed = False  # a `subscribe` returned: a later registration must resync
        self._backoff = retry.Backoff(first=0.05, cap=1.0)  # from 0.05 s again once registered
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connects = 0
        self._outbox = Outbox(self._send, name="hub-bus-sender", max_bytes=max_bytes)

    async def _ask_hub(self) -> tuple[str, int, bytes]:
        address, port, token = await self.hub.stream_address.remote()
        return address, port, token

    def _start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="hub-bus")

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                    protocol = await open_stream(self._resolve, lambda: _BusSide(self))
            except Exception as exc:
                log.warning("bus hub unreachable; retrying", extra={"error": repr(exc)})
            else:
                self._register(protocol)
                await protocol.done
            await asyncio.sleep(self._backoff.next())

    def _register(self, protocol: _BusSide) -> None:
        self.connects += 1
        channels = self.fanout.channels()
        self._registering = self._next_version()
        protocol.send(encode_register(self._registering, self.subscriber, channels[:REGISTER_CHUNK]))
        for start in range(REGISTER_CHUNK, len(channels), REGISTER_CHUNK):
            self._registering = self._next_version()
            protocol.send(encode_channels(self._registering, channels[start:start + REGISTER_CHUNK], []))
        self._protocol = protocol
        self._connected.set()

    def _acked(self, protocol: _BusSide, batch: int, version: int) -> None:
        if protocol is not self._protocol:
            return
        unacked = self._unacked
        while unacked and unacked[0][0] <= batch:
            unacked.popleft()
        if version <= self._acked_version:
            return
        self._acked_version = version
        if self._registering and version >= self._registering:
            self._registering = 0
            self._backoff.reset()
            if self._told_subscribed:  # registered again: what was published meanwhile is missed
                for channel in self.fanout.channels():
                    self.fanout.deliver(channel, RESYNC)
        waiters = self._waiters
        while waiters and waiters[0][0] <= version:
            future = waiters.popleft()[1]
            if not future.done():
                future.set_result(None)

    def _lost(self, protocol: _BusSide) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._connected.clear()
        self._registering = 0
        channels = dict.fromkeys(channel for _, batch in self._unacked for channel in batch)
        self._unacked.clear()
        if self._closed:
            return
        log.warning("bus hub connection lost; reconnecting", extra={"unacknowledged_channels": len(channels)})
        for channel in channels:  # the hub may not have had them: their subscribers refetch
            self._outbox.put((channel, RESYNC, None))

    async def _until_acked(self, version: int) -> None:
        if self._acked_version >= version:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((version, future))
        await future

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def _operation(self, add: list[str], remove: list[str]) -> int:
        """Send a channel operation (or, with no connection, leave it to the next registration)."""
        version = self._next_version()
        if self._protocol is not None:
            self._protocol.send(encode_channels(version, add, remove))
        return version

    async def publish(self, channel: str, message: bytes, *, skip_node: str | None = None) -> None:
        """Queue and return: one sender ships batches to the hub, in order, off the ack path."""
        self._outbox.put((channel, message, skip_node))

    async def _send(self, batch: list[Published]) -> bool:
        protocol = self._protocol
        if protocol is None:
            self._start()
            try:  # the hub is restarting: wait a little, then these are lost and subscribers resync
                async with asyncio.timeout(SEND_WAIT_SECONDS):
                    await self._connected.wait()
            except TimeoutError:
                return False
            protocol = self._protocol
        if protocol is None:
            return False
        await protocol.writable()  # the hub reads slower than we write
        if protocol is not self._protocol:
            return False
        frames = publish_frames(self._batch + 1, batch)
        for number, frame, channels in frames:
            protocol.send(frame)
            self._unacked.append((number, channels))
        self._batch += len(frames)
        return sum(len(channels) for _, _, channels in frames) == len(batch)  # else one was too large: resync

    def deliver_local(self, channel: str, message: bytes) -> None:
        self.fanout.deliver(channel, message)

    async def subscribe(self, channel: str, handler: Handler) -> Callable[[], None]:
        self._start()
        if self.fanout.add(channel, handler):
            # One channel per operation: sending the whole list each time cost O(channels) per socket opened.
            version = self._operation([channel], [])
            try:  # not `wait_for`: on Python 3.11 it can drop a cancellation that meets the wake-up
                async with asyncio.timeout(SUBSCRIBE_WAIT_SECONDS):
                    await self._until_acked(version)
            except TimeoutError:
                log.warning("bus hub not connected yet", extra={"channel": channel})
        self._told_subscribed = True

        def unsubscribe() -> None:
            if self.fanout.remove(channel, handler):
                self._operation([], [channel])

        return unsubscribe

    async def ping(self) -> None:
        """Readiness: one round trip to the hub on the stream (an empty channel operation)."""
        self._start()
        await self._until_acked(self._operation([], []))

    async def close(self) -> None:
        self._closed = True
        self._outbox.close()
        if self._task is not None:
            self._task.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.send(DROP)
            protocol.close(flush=True)


def node_address() -> str:
    """This Ray node's IP address."""
    address: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]  # unannotated in Ray
    return address


class EssayHostShell:
    """The Ray actor body: builds store, bus and EssayHost in the actor's own process, and
    answers `actors.host_api.HostAPI` as typed remote methods (Gateways call them through
    `serve_app.hosts.RayHost`)."""

    def __init__(self, config: HostShellConfig) -> None:
        self.config = config
        self.host: EssayHost | None = None
        self.stream: StreamServer | None = None
        self._trim: asyncio.Task[None] | None = None
        self._worker: Any = None  # the host process's rules worker (actors/analysis/worker.py)
        tune_gc()
        tracing.configure("essaycoach-host")  # in the actor's process, from its OTEL_* environment
        self._starting = asyncio.Lock()

    async def _host(self) -> EssayHost:
        if self.host is None:
            async with self._starting:
                if self.host is None:
                    from actors.analysis.service import rules_worker
                    from db.engine import make_engine, make_sessionmaker

                    # On this (the loop's) thread, before the store's thread and the rules worker start.
                    lower_priority(self.config.nice)
                    # On PostgreSQL the host's writes have pools of their own (db.engine's
                    # log_engine_for: 1 + 1, store_engine_for: 2 + 2); this one serves its reads
                    # (loading essays), so 5 + 10 keeps a host at <= 21 connections.
                    sqlite = self.config.database_url.startswith("sqlite")
                    pools = {} if sqlite else {"pool_size": 5, "max_overflow": 10}
                    engine = make_engine(self.config.database_url, keyring=self.config.keyring(), **pools)
                    name = ray.get_runtime_context().get_actor_name() or "essay-host"
                    self._worker = rules_worker(self.config.analysis)  # killed in shutdown; dies with us
                    host = EssayHost(sessions=make_sessionmaker(engine), bus=make_bus(self.config.bus, cluster=True),
                                     config=self.config.host, name=name, hand_over=self._ask_to_hand_over,
                                     analyzer=self._analyzer(), local_analyzer=self._local_analyzer())
                    # A restarted actor never saw the attaches of sockets opened before the crash.
                    with warnings.catch_warnings():  # Ray's own property uses its deprecated actor_id
                        warnings.simplefilter("ignore", DeprecationWarning)
                        host.knows_every_socket = not ray.get_runtime_context().was_current_actor_reconstructed
                    if not host.knows_every_socket:  # Ray restarted this host after a crash
                        metric("essaycoach_host_restarts_total").labels(name).inc()
                    await host.start()
                    # Again, now that start() loaded the spelling dictionary (~57 MiB of objects):
                    # frozen, full collections no longer walk it (unfrozen they paused the loop ~0.9 s).
                    tune_gc()
                    # The typing path (actors.host_stream): Gateways connect here, not via Ray calls.
                    stream = StreamServer(host)
                    await stream.start(node_address())
                    self.host, self.stream = host, stream
                    self._trim = asyncio.create_task(release_free_memory_periodically())
        return self.host

    async def _ask_to_hand_over(self, name: str, essay_id: uuid.UUID) -> None:
        """`EssayHost.hand_over` on the host actor `name` (the holder of an essay's lease), in the
        namespace the Gateways name the hosts in; ValueError when no such actor runs: its lease
        runs out instead."""
        namespace = self.config.bus.ray_namespace  # Settings.ray_namespace, as serve_app.hosts.RayHosts
        peer = await asyncio.to_thread(ray.get_actor, name, namespace=namespace)  # a GCS round trip
        await peer.hand_over.remote(essay_id)

    def _local_analyzer(self) -> Any:
        from actors.analysis.service import build_engine

        return build_engine(self.config.analysis.local_only(), worker=self._worker)

    def _analyzer(self) -> Any:
        """The Analyzer deployment of our Serve app; an in-process engine when there is none."""
        from actors.analysis.service import ANALYZER_DEPLOYMENT, RemoteAnalyzer, build_engine

        try:
            from ray import serve

            handle = serve.get_deployment_handle(ANALYZER_DEPLOYMENT, app_name=self.config.serve_app_name)
        except Exception:
            return build_engine(self.config.analysis, worker=self._worker)
        return RemoteAnalyzer(handle, llm_enabled=self.config.analysis.provider != "local")

    # --- `actors.host_api.HostAPI`: each remote method runs the host's own ---------------------
    # (apply_update too, though Gateways send updates over the host stream: tests and tools may call it)

    async def apply_update(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None,
                           origin: str, live: bool = True, node: str | None = None) -> int:
        return await (await self._host()).apply_update(essay_id, update, author_id=author_id, origin=origin,
                                                       live=live, node=node)

    async def would_change(self, essay_id: uuid.UUID, update: bytes) -> bool:
        return await (await self._host()).would_change(essay_id, update)

    async def set_text(self, essay_id: uuid.UUID, text: str, *, author_id: uuid.UUID | None) -> int:
        return await (await self._host()).set_text(essay_id, text, author_id=author_id)

    async def sync(self, essay_id: uuid.UUID, state_vector: bytes) -> tuple[bytes, bytes]:
        return await (await self._host()).sync(essay_id, state_vector)

    async def read(self, essay_id: uuid.UUID) -> dict[str, Any] | None:
        return await (await self._host()).read(essay_id)

    async def current(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await (await self._host()).current(essay_id)

    async def feedback(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await (await self._host()).feedback(essay_id)

    async def analyze_now(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await (await self._host()).analyze_now(essay_id)

    async def score_now(self, essay_id: uuid.UUID, rubric: dict[str, Any]) -> list[dict[str, Any]]:
        return await (await self._host()).score_now(essay_id, rubric)

    async def anchor_for(self, essay_id: uuid.UUID, start: int, end: int) -> dict[str, Any]:
        return await (await self._host()).anchor_for(essay_id, start, end)

    async def resolve(self, essay_id: uuid.UUID, anchors: list[str | None]) -> list[tuple[int, int] | None]:
        return await (await self._host()).resolve(essay_id, anchors)

    async def event_state(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await (await self._host()).event_state(essay_id)

    async def events_after(self, essay_id: uuid.UUID, last_seq: int, epoch: str | None) -> list[str] | None:
        return await (await self._host()).events_after(essay_id, last_seq, epoch)

    async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]:
        return await (await self._host()).live_students(class_id)

    async def student_rows(self, class_id: uuid.UUID) -> list[dict[str, Any]]:
        return await (await self._host()).student_rows(class_id)

    async def drop(self, essay_id: uuid.UUID) -> None:
        await (await self._host()).drop(essay_id)

    async def release(self, essay_id: uuid.UUID) -> None:
        await (await self._host()).release(essay_id)

    async def hand_over(self, essay_id: uuid.UUID) -> None:
        await (await self._host()).hand_over(essay_id)

    async def attach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        await (await self._host()).attach(essay_id, node)

    async def detach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        await (await self._host()).detach(essay_id, node)

    async def watch(self, channel: str, delta: int) -> None:
        await (await self._host()).watch(channel, delta)

    async def publish_event(self, essay_id: uuid.UUID, type_: str, **payload: Any) -> None:
        await (await self._host()).publish_event(essay_id, type_, **payload)

    async def revision(self, essay_id: uuid.UUID, *, reason: str) -> int:
        return await (await self._host()).revision(essay_id, reason=reason)

    # --- shell-only ---------------------------------------------------------------------------

    async def stream_address(self) -> tuple[str, int, bytes]:
        """Where Gateways send typed updates (`actors.host_stream`): address, port and token."""
        await self._host()
        assert self.stream is not None
        return node_address(), self.stream.port, self.stream.token

    async def traced(self, traceparent: str | None, operation: str, *args: Any, **kwargs: Any) -> Any:
        """`HostAPI` method `operation` as a child span of the calling Gateway's trace: where a
        Gateway with tracing on sends its Ray calls (`serve_app.hosts.RayHost`)."""
        if operation not in operations():
            raise ValueError(f"not a host operation: {operation!r}")
        call = getattr(self, operation)(*args, **kwargs)
        if not tracing.enabled:
            return await call
        return await tracing.within(f"host.{operation}", call, parent=traceparent, kind="SERVER")

    async def stats(self) -> dict[str, Any]:
        host = await self._host()
        return {"essays": len(host.essays), "rows": host.committer.rows, "batches": host.committer.batches,
                "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "analysis_worker_pid": self._worker.pid if self._worker is not None else None}

    async def shutdown(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
        if self.stream is not None:
            await self.stream.close()
        if self.host is not None:
            await self.host.stop()
        if self._worker is not None:
            self._worker.close()
        metrics.flush()  # last: the host's final commits, compactions and lease releases count too
        tracing.flush()


def _implements(shell: EssayHostShell, host: EssayHost) -> tuple[HostAPI, HostAPI]:
    """For the type checker: both are `HostAPI`s (mypy checks every method's signature here)."""
    return shell, host
