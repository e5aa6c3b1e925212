"""One contract, every bus: in-process, Redis (real server) and the in-Ray hub."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors.broadcast import RESYNC, Bus, InMemoryBus
from actors.redis_bus import RedisBus
from tests.conftest import REDIS_URL


@pytest.fixture(params=["memory", "redis", "hub"])
async def bus_pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Bus, Bus]]:
    """(publisher side, subscriber side): two processes' buses, or one shared in-memory bus."""
    if request.param == "memory":
        bus = InMemoryBus()
        yield bus, bus
    elif request.param == "redis":
        a, b = RedisBus(REDIS_URL), RedisBus(REDIS_URL)
        yield a, b
        await a.close()
        await b.close()
    else:
        request.getfixturevalue("ray_cluster")
        from actors.ray_host import HubBus

        ns = f"bus-{uuid.uuid4().hex[:6]}"
        a, b = HubBus(ns), HubBus(ns)
        yield a, b
        await a.close()
        await b.close()


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self.event = asyncio.Event()

    def __call__(self, channel: str, message: bytes) -> None:
        self.items.append((channel, message))
        self.event.set()

    async def wait(self, n: int, timeout: float = 5) -> list[tuple[str, bytes]]:
        async def until() -> None:
            while len(self.items) < n:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(until(), timeout)
        return self.items


async def subscribed(bus: Bus) -> tuple[str, Inbox]:
    """A fresh doc channel with an inbox subscribed, given time to reach the backend."""
    inbox = Inbox()
    channel = f"essay:{uuid.uuid4()}:doc"
    await bus.subscribe(channel, inbox)
    await asyncio.sleep(0.1)
    return channel, inbox


async def test_subscriber_receives_binary_messages_of_its_channel_only(bus_pair: Any) -> None:
    pub, sub = bus_pair
    channel, inbox = await subscribed(sub)
    await pub.publish(f"essay:{uuid.uuid4()}:doc", b"other")
    payload = bytes(range(256))
    await pub.publish(channel, payload)
    items = await inbox.wait(1)
    await asyncio.sleep(0.1)
    assert items == [(channel, payload)]


async def test_every_handler_of_a_channel_receives_in_order(bus_pair: Any) -> None:
    pub, sub = bus_pair
    first, second = Inbox(), Inbox()
    channel = f"class:{uuid.uuid4()}"
    await sub.subscribe(channel, first)
    await sub.subscribe(channel, second)
    await asyncio.sleep(0.1)
    for i in range(50):
        await pub.publish(channel, str(i).encode())
    assert [m for _, m in await first.wait(50)] == [str(i).encode() for i in range(50)]
    assert [m for _, m in await second.wait(50)] == [str(i).encode() for i in range(50)]


async def test_unsubscribed_handler_receives_nothing_more(bus_pair: Any) -> None:
    pub, sub = bus_pair
    gone, stays = Inbox(), Inbox()
    channel = f"essay:{uuid.uuid4()}"
    unsubscribe = await sub.subscribe(channel, gone)
    await sub.subscribe(channel, stays)
    await asyncio.sleep(0.1)
    unsubscribe()
    await pub.publish(channel, b"after")
    await stays.wait(1)
    await asyncio.sleep(0.1)
    assert gone.items == []


async def test_redis_restart_resubscribes_and_signals_resync(redis_process: Any) -> None:
    pub, sub = RedisBus(redis_process.url), RedisBus(redis_process.url)
    inbox = Inbox()
    channel = f"essay:{uuid.uuid4()}"
    await sub.subscribe(channel, inbox)
    await pub.publish(channel, b"before")
    await inbox.wait(1)
    redis_process.stop()
    await pub.publish(channel, b"while down")  # must not raise; delivered late or lost, never blocks
    redis_process.start()

    async def until_after() -> None:
        while (channel, b"after") not in inbox.items:
            if (channel, RESYNC) in inbox.items:
                await pub.publish(channel, b"after")
            await asyncio.sleep(0.2)

    try:
        await asyncio.wait_for(until_after(), 20)
    except TimeoutError:
        raise AssertionError(f"got {inbox.items}, reconnects={sub.reconnects}") from None
    assert inbox.items.index((channel, RESYNC)) < inbox.items.index((channel, b"after"))
    assert sub.reconnects == 1
    await pub.close()
    await sub.close()


async def test_skip_node_spares_only_that_node(bus_pair: Any) -> None:
    """A replica that delivered an update itself asks the bus to skip it; the others still get it."""
    pub, sub = bus_pair
    channel, inbox = await subscribed(sub)
    await pub.publish(channel, b"delivered by sub itself", skip_node=sub.node)
    await pub.publish(channel, b"for everyone", skip_node=f"{sub.node}-other")
    await pub.publish(channel, b"for everyone too")
    items = await inbox.wait(2)
    await asyncio.sleep(0.2)
    assert items == [(channel, b"for everyone"), (channel, b"for everyone too")]


async def test_deliver_local_reaches_this_nodes_handlers_at_once(bus_pair: Any) -> None:
    pub, sub = bus_pair
    mine, theirs = Inbox(), Inbox()
    channel = f"essay:{uuid.uuid4()}:doc"
    await sub.subscribe(channel, mine)
    if pub is not sub:
        await pub.subscribe(channel, theirs)
    sub.deliver_local(channel, b"\x00 local")
    assert mine.items == [(channel, b"\x00 local")]  # synchronously, no bus round trip
    await asyncio.sleep(0.2)
    assert theirs.items == []
    assert sub.node != "" and (pub is sub or pub.node != sub.node)


async def test_a_publisher_over_its_queued_bytes_drops_the_oldest_and_their_channel_resyncs() -> None:
    """Redis (real server): a backlog past BUS_QUEUE_MAX_BYTES loses its oldest messages, never
    silently: the channel that lost one gets RESYNC, so its sockets refetch from the essay host."""
    pub, sub = RedisBus(REDIS_URL, max_bytes=1000), RedisBus(REDIS_URL)
    channel, inbox = await subscribed(sub)
    other, other_inbox = await subscribed(sub)
    await pub.publish(channel, b"a" * 600)  # queued at once; the sender runs after this burst
    await pub.publish(other, b"b" * 300)
    await pub.publish(other, b"c" * 300)
    assert await other_inbox.wait(2) == [(other, b"b" * 300), (other, b"c" * 300)]
    assert await inbox.wait(1) == [(channel, RESYNC)]
    await pub.close()
    await sub.close()


async def test_the_redis_bus_parses_replies_with_hiredis() -> None:
    """Every message a Gateway or host receives (and every reply to a publish) goes through the
    RESP parser: hiredis's C parser, not redis-py's Python one (publish and receive of a dashboard
    row: ~46 -> ~26 us of CPU)."""
    from redis._parsers import _AsyncHiredisParser

    bus = RedisBus(REDIS_URL)
    try:
        connection = await bus.client.connection_pool.get_connection()
        try:
            assert isinstance(connection._parser, _AsyncHiredisParser)
        finally:
            await bus.client.connection_pool.release(connection)
    finally:
        await bus.client.aclose()
        await bus.sub_client.aclose()


async def test_the_hub_restarted_by_ray_gets_every_channel_again_and_subscribers_resync(ray_cluster: Any) -> None:
    """The in-Ray hub's wiring: the streams find the restarted actor's new address through Ray."""
    import ray

    from actors.ray_host import HubBus

    ns = f"bus-{uuid.uuid4().hex[:6]}"
    pub, sub = HubBus(ns), HubBus(ns)
    channel, inbox = await subscribed(sub)
    await pub.publish(channel, b"before")
    await inbox.wait(1)
    await pub.ping()  # "before" acknowledged: only the restart's RESYNC follows
    ray.kill(sub.hub, no_restart=False)
    await inbox.wait(2, timeout=30)
    assert inbox.items[1] == (channel, RESYNC) and sub.connects == 2
    await pub.publish(channel, b"after")
    assert (await inbox.wait(3, timeout=10))[2] == (channel, b"after")
    await pub.close()
    await sub.close()
