"""The in-Ray bus hub's channel bookkeeping (the actor class run in-process; the Ray path is in
tests/integration/test_bus.py)."""

import asyncio

from actors.broadcast import RESYNC
from actors.ray_host import BusHub, _Subscriber


async def test_channel_operations_apply_by_version_whatever_order_they_arrive_in() -> None:
    hub = BusHub()
    # Ray may run the replica's "remove (3)" before its earlier "add (2)": the add is stale.
    await hub.update_channels("r1", 1, ["essay:a:doc"], [])
    await hub.update_channels("r1", 3, [], ["essay:b:doc"])
    await hub.update_channels("r1", 2, ["essay:b:doc"], [])
    assert hub._subs["r1"].channels == {"essay:a:doc"}
    # A later add wins over the tombstone.
    await hub.update_channels("r1", 4, ["essay:b:doc"], [])
    await hub.publish("essay:b:doc", b"x")
    await hub.publish("essay:c:doc", b"y")
    assert await hub.poll("r1", timeout=0.1) == [("essay:b:doc", b"x")]


async def test_set_channels_replaces_the_set_but_not_newer_operations() -> None:
    hub = BusHub()
    await hub.update_channels("r1", 5, ["new"], [])
    await hub.set_channels("r1", 4, ["old", "kept"])  # reordered: older than the add of "new"
    assert hub._subs["r1"].channels == {"new", "old", "kept"}
    await hub.set_channels("r1", 6, ["kept"])
    assert hub._subs["r1"].channels == {"kept"}


def test_tombstones_are_pruned_when_far_behind() -> None:
    sub = _Subscriber()
    n = _Subscriber.TOMBSTONES + 10
    for version in range(1, n + 1):
        sub.update(2 * version - 1, [f"c{version}"], [])
        sub.update(2 * version, [], [f"c{version}"])
    assert not sub.channels and len(sub.versions) <= _Subscriber.TOMBSTONES + 1


async def test_a_stalled_subscriber_loses_old_messages_by_bytes_and_its_next_poll_says_resync() -> None:
    hub = BusHub(max_bytes=1000)
    await hub.update_channels("r1", 1, ["essay:a:doc", "essay:b:doc"], [])
    await hub.publish("essay:a:doc", b"a" * 600)  # a hundred-frame cap would keep all of these
    await hub.publish("essay:b:doc", b"b" * 300)
    await hub.publish("essay:b:doc", b"c" * 300)  # 1,200 bytes waiting: the oldest goes
    assert await hub.poll("r1", timeout=0.1) == [
        ("essay:b:doc", b"b" * 300), ("essay:b:doc", b"c" * 300), ("essay:a:doc", RESYNC)]
    await hub.publish("essay:a:doc", b"fits")
    assert await hub.poll("r1", timeout=0.1) == [("essay:a:doc", b"fits")]  # owed once, then normal


_REAL_SLEEP = asyncio.sleep


def _record_waits(monkeypatch) -> list[float]:
    """The poll loop's non-zero sleeps, recorded and not slept."""
    import actors.ray_host as ray_host

    waits: list[float] = []

    async def recorded_sleep(delay: float) -> None:
        if delay:
            waits.append(delay)
        await _REAL_SLEEP(0)

    monkeypatch.setattr(ray_host.asyncio, "sleep", recorded_sleep)
    return waits


class _Remote:
    """`hub.poll.remote(...)` of a fake hub: answers at once with one message (a busy bus)."""

    def __init__(self) -> None:
        self.calls = 0

    def remote(self, subscriber: str) -> object:
        self.calls += 1

        async def answer() -> list[tuple[str, bytes]]:
            await asyncio.sleep(0)  # a real call yields to the loop
            return [("class:c", str(n).encode())]
        n = self.calls
        return answer()


async def test_hub_polls_answered_at_once_wait_out_the_interval_before_the_next(monkeypatch) -> None:
    """A busy bus (every poll answered at once) is polled at most once per `min_interval`: the
    poll loop waits out the rest of the interval after each answer, and delivers every batch."""
    from actors.broadcast import LocalFanout
    from actors.ray_host import HubBus

    waits = _record_waits(monkeypatch)
    real_sleep = _REAL_SLEEP
    bus = HubBus.__new__(HubBus)  # no Ray: the poll loop alone, over a fake hub
    bus.hub = type("Hub", (), {})()
    bus.hub.poll = _Remote()
    bus.fanout, bus.subscriber, bus._min_interval = LocalFanout(), "r1", 0.5
    seen: list[bytes] = []
    bus.fanout.add("class:c", lambda channel, message: seen.append(message))
    task = asyncio.ensure_future(bus._poll_loop())
    for _ in range(20):
        await real_sleep(0)
    task.cancel()
    polls = bus.hub.poll.calls
    assert polls >= 3 and len(waits) >= polls - 2  # every poll after the first waited
    assert all(0 < w <= 0.5 for w in waits)
    assert seen == [str(n).encode() for n in range(1, len(seen) + 1)] and len(seen) >= polls - 1


async def test_a_long_poll_is_followed_by_the_next_at_once(monkeypatch) -> None:
    """Pacing waits only after a poll answered within the interval: one that waited longer
    (a quiet bus's long poll) is followed by the next poll without a wait."""
    from actors.broadcast import LocalFanout
    from actors.ray_host import HubBus

    waits = _record_waits(monkeypatch)
    real_sleep = _REAL_SLEEP
    loop = asyncio.get_running_loop()
    clock = [1000.0]
    monkeypatch.setattr(loop, "time", lambda: clock[0])

    class SlowPoll:
        calls = 0

        def remote(self, subscriber: str) -> object:
            self.calls += 1

            async def answer() -> list[tuple[str, bytes]]:
                clock[0] += 2.0  # each poll waited 2 s for its message
                await real_sleep(0)
                return [("class:c", b"m")]
            return answer()

    bus = HubBus.__new__(HubBus)
    bus.hub = type("Hub", (), {})()
    bus.hub.poll = SlowPoll()
    bus.fanout, bus.subscriber, bus._min_interval = LocalFanout(), "r1", 0.5
    task = asyncio.ensure_future(bus._poll_loop())
    for _ in range(20):
        await real_sleep(0)
    task.cancel()
    assert bus.hub.poll.calls >= 3 and waits == []
