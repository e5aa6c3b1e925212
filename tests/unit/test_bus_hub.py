"""The in-Ray bus hub without Ray: its channel bookkeeping in-process, and its stream over real
loopback sockets (`BusHub` listening, `HubBus` clients given its address); the Ray path is in
tests/integration/test_bus.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from actors.broadcast import RESYNC
from actors.host_stream import GatedProtocol, Listener
from actors.ray_host import (
    BusHub,
    HubBus,
    _Subscriber,
    decode_channels,
    decode_delivery,
    decode_publish,
    decode_register,
    encode_channels,
    encode_delivery,
    encode_publish,
    encode_register,
    publish_frames,
)
from tests.fakes import metric_value

Received = list[tuple[str, bytes]]


def pending(hub: BusHub, subscriber: str) -> Received:
    """What `subscriber` has waiting at the hub, in the order its connection would get it."""
    out = []
    sub = hub._subs[subscriber]
    while (item := sub.next_pending()) is not None:
        out.append(item)
    return out


async def test_channel_operations_apply_by_version_whatever_order_they_arrive_in() -> None:
    hub = BusHub()
    # A re-registration may cross a "remove (3)" sent before an earlier "add (2)": the add is stale.
    hub.update_channels("r1", 1, ["essay:a:doc"], [])
    hub.update_channels("r1", 3, [], ["essay:b:doc"])
    hub.update_channels("r1", 2, ["essay:b:doc"], [])
    assert hub._subs["r1"].channels == {"essay:a:doc"}
    # A later add wins over the tombstone.
    hub.update_channels("r1", 4, ["essay:b:doc"], [])
    hub.publish("essay:b:doc", b"x")
    hub.publish("essay:c:doc", b"y")
    assert pending(hub, "r1") == [("essay:b:doc", b"x")]


async def test_set_channels_replaces_the_set_but_not_newer_operations() -> None:
    hub = BusHub()
    hub.update_channels("r1", 5, ["new"], [])
    hub.set_channels("r1", 4, ["old", "kept"])  # reordered: older than the add of "new"
    assert hub._subs["r1"].channels == {"new", "old", "kept"}
    hub.set_channels("r1", 6, ["kept"])
    assert hub._subs["r1"].channels == {"kept"}


def test_tombstones_are_pruned_when_far_behind() -> None:
    sub = _Subscriber(0.0)
    n = _Subscriber.TOMBSTONES + 10
    for version in range(1, n + 1):
        sub.update(2 * version - 1, [f"c{version}"], [])
        sub.update(2 * version, [], [f"c{version}"])
    assert not sub.channels and len(sub.versions) <= _Subscriber.TOMBSTONES + 1


async def test_a_stalled_subscriber_loses_old_messages_by_bytes_and_is_owed_resync() -> None:
    hub = BusHub(max_bytes=1000)
    hub.update_channels("r1", 1, ["essay:a:doc", "essay:b:doc"], [])
    hub.publish("essay:a:doc", b"a" * 600)  # a hundred-frame cap would keep all of these
    hub.publish("essay:b:doc", b"b" * 300)
    dropped = metric_value("essaycoach_bus_dropped_total", {"reason": "hub_overflow"})
    hub.publish("essay:b:doc", b"c" * 300)  # 1,200 bytes waiting: the oldest goes
    assert metric_value("essaycoach_bus_dropped_total", {"reason": "hub_overflow"}) == dropped + 1
    assert pending(hub, "r1") == [("essay:b:doc", b"b" * 300), ("essay:b:doc", b"c" * 300), ("essay:a:doc", RESYNC)]
    hub.publish("essay:a:doc", b"fits")
    assert pending(hub, "r1") == [("essay:a:doc", b"fits")]  # owed once, then normal


def test_frames_round_trip() -> None:
    assert decode_register(encode_register(7, "node-1", ["essay:a:doc", "class:ü"])) == (
        7, "node-1", ["essay:a:doc", "class:ü"])
    assert decode_channels(encode_channels(2**40, [], ["x"])) == (2**40, [], ["x"])
    messages = [("essay:a:doc", bytes(range(256)), "node-2"), ("class:b", b"", None)]
    assert decode_publish(encode_publish(9, messages)) == (9, messages)  # type: ignore[arg-type]
    assert decode_delivery(encode_delivery("essay:a", b"\x00\n")) == ("essay:a", b"\x00\n")
    for bad in (encode_publish(1, [("a", b"xyz", None)])[:-1], encode_register(1, "n", ["abc"])[:-1], b"M\x00\x09ab"):
        with pytest.raises(ValueError):
            {b"P": decode_publish, b"R": decode_register, b"M": decode_delivery}[bad[:1]](bad)


def test_a_batch_too_big_for_one_frame_goes_in_several_and_an_oversized_message_is_left_out() -> None:
    big = b"x" * (3 * 1024 * 1024)
    frames = publish_frames(5, [("a", big, None), ("b", big, None), ("c", b"y" * (5 * 1024 * 1024), None),
                                ("d", b"z", "n")])
    assert [(number, channels) for number, _, channels in frames] == [(5, ["a"]), (6, ["b", "d"])]
    assert all(len(frame) <= 4 * 1024 * 1024 for _, frame, _ in frames)


# --- the stream -------------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.items: Received = []
        self.event = asyncio.Event()

    def __call__(self, channel: str, message: bytes) -> None:
        self.items.append((channel, message))
        self.event.set()

    async def until(self, done: Callable[[Received], bool], timeout: float = 5) -> Received:
        async with asyncio.timeout(timeout):
            while not done(self.items):
                self.event.clear()
                await self.event.wait()
        return self.items


Resolve = Callable[[], Awaitable[tuple[str, int, bytes]]]


def resolver(current: list[Listener], gate: asyncio.Event | None = None) -> Resolve:
    """Where `current[0]` listens (tests swap in another hub, as Ray does after a restart); with
    `gate`, once it is set (while it is clear the bus cannot reconnect)."""
    async def resolve() -> tuple[str, int, bytes]:
        if gate is not None:
            await gate.wait()
        return "127.0.0.1", current[0].port, current[0].token

    return resolve


async def eventually(done: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.01)


@pytest.fixture
async def hub() -> AsyncIterator[BusHub]:
    hub = BusHub()
    await hub.start("127.0.0.1")
    yield hub
    await hub.close()


@pytest.fixture
async def buses(hub: BusHub) -> AsyncIterator[Callable[[], HubBus]]:
    made: list[HubBus] = []

    def bus() -> HubBus:
        made.append(HubBus(resolve=resolver([hub])))
        return made[-1]

    yield bus
    for b in made:
        await b.close()


async def test_subscribers_get_their_channels_messages_pushed_in_order_and_the_skipped_node_none(
        hub: BusHub, buses: Callable[[], HubBus]) -> None:
    pub, sub, skipped = buses(), buses(), buses()
    inbox, skipped_inbox = Inbox(), Inbox()
    await sub.subscribe("essay:a:doc", inbox)
    await sub.subscribe("class:c", inbox)
    await skipped.subscribe("essay:a:doc", skipped_inbox)
    for i in range(300):
        await pub.publish("essay:a:doc" if i % 2 else "class:c", str(i).encode(), skip_node=skipped.node)
    await pub.publish("essay:other:doc", b"not subscribed")
    items = await inbox.until(lambda items: len(items) == 300)
    assert items == [("essay:a:doc" if i % 2 else "class:c", str(i).encode()) for i in range(300)]
    await pub.ping()  # the publish of "not subscribed" came before: the hub has handled it
    await sub.ping()
    assert len(inbox.items) == 300 and skipped_inbox.items == []
    assert sub.connects == 1 and pub._unacked == type(pub._unacked)()  # every batch acknowledged


async def test_subscribe_returns_once_the_hub_holds_the_channel_and_unsubscribe_takes_it_away(
        hub: BusHub, buses: Callable[[], HubBus]) -> None:
    sub = buses()
    unsubscribe = await sub.subscribe("essay:a", Inbox())
    assert hub._subs[sub.subscriber].channels == {"essay:a"}  # no sleep: subscribe awaited the hub
    unsubscribe()
    await sub.subscribe("essay:b", Inbox())  # after the unsubscribe, on the same stream
    assert hub._subs[sub.subscriber].channels == {"essay:b"}


async def test_a_subscriber_that_does_not_read_queues_at_the_hub_within_its_bound_and_others_keep_getting_theirs(
        buses: Callable[[], HubBus]) -> None:
    hub = BusHub(max_bytes=2 * 1024 * 1024)
    await hub.start("127.0.0.1")
    current: list[Listener] = [hub]
    pub, fast, slow = (HubBus(resolve=resolver(current)) for _ in range(3))
    fast_inbox, slow_inbox = Inbox(), Inbox()
    await fast.subscribe("essay:a:doc", fast_inbox)
    await slow.subscribe("essay:a:doc", slow_inbox)
    assert slow._protocol is not None and slow._protocol.transport is not None
    slow._protocol.transport.pause_reading()  # its process is stuck
    n, size = 800, 64 * 1024  # 50 MiB: far over the kernel's buffers, the transport's and the queue's
    for i in range(n):
        await pub.publish("essay:a:doc", i.to_bytes(4, "big") + bytes(size))
    await fast_inbox.until(lambda items: len(items) == n, timeout=20)  # never held up by the slow one
    slow_sub = hub._subs[slow.subscriber]
    assert slow_sub.queue and slow_sub.queued_bytes <= 2 * 1024 * 1024 and "essay:a:doc" in slow_sub.lost

    slow._protocol.transport.resume_reading()
    items = await slow_inbox.until(lambda items: bool(items) and items[-1][1] == RESYNC, timeout=20)
    numbers = [int.from_bytes(message[:4], "big") for _, message in items[:-1]]
    assert numbers == sorted(numbers) and numbers[-1] == n - 1 and len(numbers) < n  # the oldest queued went
    assert not slow_sub.queue and not slow_sub.lost
    for bus in (pub, fast, slow):
        await bus.close()
    await hub.close()


async def test_a_restarted_hub_gets_every_channel_again_and_its_subscribers_resync() -> None:
    first = BusHub()
    await first.start("127.0.0.1")
    current: list[Listener] = [first]
    pub, sub = HubBus(resolve=resolver(current)), HubBus(resolve=resolver(current))
    inbox = Inbox()
    await sub.subscribe("essay:a:doc", inbox)
    await sub.subscribe("class:c", inbox)
    await pub.publish("essay:a:doc", b"before")
    await inbox.until(lambda items: items == [("essay:a:doc", b"before")])
    await pub.ping()  # "before" acknowledged: the publisher owes no RESYNC after the restart

    second = BusHub()  # Ray restarted the hub: another process, port and token
    await second.start("127.0.0.1")
    current[0] = second
    await first.close()
    items = await inbox.until(lambda items: len(items) == 3)
    assert sorted(items[1:]) == [("class:c", RESYNC), ("essay:a:doc", RESYNC)]
    assert second._subs[sub.subscriber].channels == {"essay:a:doc", "class:c"}
    await pub.publish("essay:a:doc", b"after")
    await inbox.until(lambda items: items[-1] == ("essay:a:doc", b"after"))
    assert sub.connects == 2
    for bus in (pub, sub):
        await bus.close()
    await second.close()


async def test_a_subscriber_back_on_the_same_hub_gets_what_waited_for_it_then_resyncs(
        hub: BusHub, buses: Callable[[], HubBus]) -> None:
    pub = buses()
    gate = asyncio.Event()
    gate.set()
    sub = HubBus(resolve=resolver([hub], gate))
    inbox = Inbox()
    await sub.subscribe("essay:a:doc", inbox)
    assert sub._protocol is not None and sub._protocol.transport is not None
    gate.clear()
    sub._protocol.transport.abort()  # the connection broke; the hub keeps the registration
    await eventually(lambda: hub._subs[sub.subscriber].connection is None)
    await pub.publish("essay:a:doc", b"while away")
    await pub.ping()
    assert [m for _, m in hub._subs[sub.subscriber].queue] == [b"while away"]
    gate.set()
    items = await inbox.until(lambda items: len(items) == 2)
    assert items == [("essay:a:doc", b"while away"), ("essay:a:doc", RESYNC)]
    await sub.close()


class _Swallower(Listener):
    """A hub that reads frames and never acknowledges a publish: it closes the connection instead."""

    def connection(self) -> GatedProtocol:
        class Side(GatedProtocol):
            def trusted_frame_received(self, frame: bytes) -> None:
                if frame[:1] == b"P":
                    self.close()

        return Side(self)


async def test_publishes_the_hub_did_not_acknowledge_before_a_break_resync_their_channels(hub: BusHub) -> None:
    swallower = _Swallower()
    await swallower.start("127.0.0.1")
    sub = HubBus(resolve=resolver([hub]))
    inbox = Inbox()
    await sub.subscribe("essay:a:doc", inbox)
    current: list[Listener] = [swallower]
    pub = HubBus(resolve=resolver(current))
    await pub.publish("essay:a:doc", b"lost")
    await pub.publish("essay:b:doc", b"lost too")
    async with asyncio.timeout(5):
        while pub.connects == 0 or pub._protocol is not None:  # connected, sent, and cut off
            await asyncio.sleep(0.01)
    current[0] = hub
    items = await inbox.until(lambda items: bool(items))
    assert items == [("essay:a:doc", RESYNC)]
    for bus in (pub, sub):
        await bus.close()
    await swallower.close()


async def test_a_subscriber_whose_process_died_is_forgotten_after_the_ttl_and_one_that_left_at_once() -> None:
    now = [0.0]
    hub = BusHub(ttl=60, clock=lambda: now[0])
    await hub.start("127.0.0.1")
    current: list[Listener] = [hub]
    died, left, pub = (HubBus(resolve=resolver(current)) for _ in range(3))
    await died.subscribe("essay:a", Inbox())
    await left.subscribe("essay:a", Inbox())
    assert died._protocol is not None and died._protocol.transport is not None
    died._task.cancel()  # type: ignore[union-attr]  # the process is gone: no reconnect, no goodbye
    died._protocol.transport.abort()
    await left.close()  # a goodbye
    await eventually(lambda: left.subscriber not in hub._subs and hub._subs[died.subscriber].connection is None)
    await pub.ping()
    assert set(hub._subs) == {died.subscriber, pub.subscriber}
    now[0] = 59.0
    await pub.publish("essay:a", b"queued for a while")
    await pub.ping()
    assert [m for _, m in hub._subs[died.subscriber].queue] == [b"queued for a while"]
    now[0] = 61.0
    await pub.publish("essay:a", b"too late")
    await pub.ping()
    assert set(hub._subs) == {pub.subscriber}
    for bus in (pub, died):
        await bus.close()
    await hub.close()


async def test_ping_is_a_round_trip_to_the_hub_and_waits_while_it_is_unreachable(hub: BusHub) -> None:
    current: list[Listener] = [hub]
    bus = HubBus(resolve=resolver(current))
    await bus.ping()
    assert bus.connects == 1
    await hub.close()  # listening no more: the bus cannot reconnect
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await bus.ping()
    await bus.close()


async def test_a_connection_without_the_hubs_token_registers_nothing(hub: BusHub) -> None:
    async def wrong() -> tuple[str, int, bytes]:
        return "127.0.0.1", hub.port, bytes(32)

    bus = HubBus(resolve=wrong)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await bus.subscribe(f"essay:{uuid.uuid4()}", Inbox())
    assert hub._subs == {}
    await bus.close()
