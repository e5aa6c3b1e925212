"""The bus over Redis pub/sub: one subscriber connection per process, resubscribed after loss.

Redis pub/sub is at-most-once: anything published while our subscriber was reconnecting is
gone. So after every reconnect each channel's handlers receive `RESYNC` (an empty message) and
must re-establish state from the source of truth (the essay host), never from the bus.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors import retry
from actors.broadcast import QUEUE_MAX_BYTES, RESYNC, Handler, LocalFanout, Outbox, Published, new_node_id

log = logging.getLogger("essaycoach.bus.redis")



class RedisBus:
    """`Bus` on Redis. `publish` never raises: a lost publish is what pub/sub promises anyway.

    Payloads on Redis are `skip_node NUL message` (the node id may be empty): Redis delivers to
    every subscriber, so the skipped node drops its copy on receipt.
    """

    def __init__(self, url: str, *, name: str | None = None, max_bytes: int = QUEUE_MAX_BYTES) -> None:
        self.url = url
        self.name = name or f"essaycoach-{uuid.uuid4().hex[:8]}"
        # One quick retry: after a Redis restart the pool's first command meets a dead socket, and
        # without a retry that first publish (a student's next keystroke) would be lost.
        self.client = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=2,
                                        health_check_interval=15, client_name=self.name,
                                        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
                                        retry_on_error=[RedisConnectionError, RedisTimeoutError])
        # The subscriber must *notice* a lost connection (messages were missed: RESYNC), so its
        # client has no transparent retry that would resubscribe behind our back.
        self.sub_client = aioredis.from_url(url, socket_timeout=None, socket_connect_timeout=2,
                                            health_check_interval=15, client_name=f"{self.name}-sub")
        self.fanout = LocalFanout()
        self.node = new_node_id()
        self._pubsub: aioredis.client.PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.reconnects = 0
        self.connected = asyncio.Event()
        self._outbox = Outbox(self._send, name="redis-bus-sender", max_bytes=max_bytes)

    async def publish(self, channel: str, message: bytes, *, skip_node: str | None = None) -> None:
        """Queue for the sender task and return at once: acks never wait on Redis."""
        self._outbox.put((channel, message, skip_node))

    async def _send(self, batch: list[Published]) -> bool:
        """One pipeline per batch: one sender keeps per-channel order. False when it was lost."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, message, skip_node in batch:
                    pipe.publish(channel, (skip_node or "").encode() + b"\0" + message)
                await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("publish lost", extra={"messages": len(batch), "error": str(exc)})
            return False
        return True

    async def subscribe(self, channel: str, handler: Handler) -> Callable[[], None]:
        if self.fanout.add(channel, handler) and self._pubsub is not None:
            try:
                await self._pubsub.subscribe(channel)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                pass  # the reader loop resubscribes every channel when it reconnects
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="redis-bus")
        if not self.connected.is_set():
            try:  # not `wait_for`: on Python 3.11 it can drop a cancellation that meets the wake-up
                async with asyncio.timeout(10):
                    await self.connected.wait()
            except TimeoutError:
                # Redis is down: keep the handler; the reader subscribes it (and sends RESYNC) later.
                log.warning("bus not connected yet", extra={"channel": channel})

        def unsubscribe() -> None:
            if self.fanout.remove(channel, handler) and self._pubsub is not None:
                asyncio.ensure_future(self._safe_unsubscribe(channel))

        return unsubscribe

    async def _safe_unsubscribe(self, channel: str) -> None:
        try:
            # A socket may have subscribed again meanwhile: then the channel must stay.
            if self._pubsub is not None and channel not in self.fanout.channels():
                await self._pubsub.unsubscribe(channel)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            pass

    async def _run(self) -> None:
        backoff = retry.Backoff(first=0.1, cap=2.0)  # 0.1 s doubling to 2 s; from 0.1 s again once subscribed
        first = True
        while True:
            pubsub = self.sub_client.pubsub(ignore_subscribe_messages=True)
            try:
                # A placeholder channel keeps the connection in subscribe mode with no real channels.
                await pubsub.subscribe(f"essaycoach:bus:{self.name}", *self.fanout.channels())
                self._pubsub = pubsub
                self.connected.set()
                if not first:
                    self.reconnects += 1
                    log.info("bus resubscribed", extra={"channels": len(self.fanout.channels())})
                    for channel in self.fanout.channels():
                        self.fanout.deliver(channel, RESYNC)
                first = False
                backoff.reset()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._receive(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("bus connection lost; reconnecting", extra={"error": str(exc)})
            finally:
                self._pubsub = None
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                except Exception:
                    pass
            await asyncio.sleep(backoff.next())

    def _receive(self, channel: bytes | str, data: bytes) -> None:
        skip, sep, payload = data.partition(b"\0")
        if not sep or skip.decode() == self.node:
            return  # not ours, or this node delivered it itself
        self.fanout.deliver(channel.decode() if isinstance(channel, bytes) else channel, payload)

    def deliver_local(self, channel: str, message: bytes) -> None:
        self.fanout.deliver(channel, message)

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        self._outbox.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self.client.aclose()
        await self.sub_client.aclose()
