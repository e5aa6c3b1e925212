"""The in-Ray bus hub's channel bookkeeping (the actor class run in-process; the Ray path is in
tests/integration/test_bus.py)."""

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
