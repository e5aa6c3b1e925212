"""serve_app.realtime.class_live_socket.ClassFeed: a replica's teacher sockets on one class share
one bus subscription, and each row is annotated and encoded once for all of them."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from actors.broadcast import RESYNC, InMemoryBus
from serve_app.realtime.class_live_socket import ClassFeed, join_feed


class Sink:
    def __init__(self) -> None:
        self.frames: list[bytes | str] = []

    def put(self, frame: bytes | str) -> None:
        self.frames.append(frame)


class CountingDeadlines:
    """`ClassDeadlines`' interface, with a fixed field and a count of the work done."""

    def __init__(self) -> None:
        self.annotated = self.loads = 0

    async def load(self, essay_ids: list[uuid.UUID] | None = None) -> None:
        self.loads += 1

    def annotate(self, row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "deadline_status": "on_time"}

    async def annotate_message(self, message: bytes) -> str:
        self.annotated += 1
        return json.dumps(self.annotate(json.loads(message)))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def make_feed(bus: InMemoryBus, class_id: uuid.UUID, deadlines: CountingDeadlines, reads: list[int]) -> ClassFeed:
    async def rows() -> list[dict[str, Any]]:
        reads.append(1)
        return [{"type": "student", "student_id": "s1"}]
    return ClassFeed(bus, class_id, deadlines, rows)


async def test_a_row_is_annotated_and_encoded_once_for_every_socket_on_the_class() -> None:
    bus, class_id, deadlines, reads = InMemoryBus(), uuid.uuid4(), CountingDeadlines(), []
    app = SimpleNamespace(state=SimpleNamespace())
    sinks = [Sink(), Sink(), Sink()]
    joined = [await join_feed(app, class_id, sink, lambda: make_feed(bus, class_id, deadlines, reads))
              for sink in sinks]
    assert len({id(feed) for feed, _ in joined}) == 1
    assert bus.fanout.channels() == [f"class:{class_id}"]  # one subscription for the three sockets
    await bus.publish(f"class:{class_id}", json.dumps({"type": "student", "essay_id": None}).encode())
    await settle()
    assert deadlines.annotated == 1
    (frame,) = sinks[0].frames
    assert json.loads(frame) == {"type": "student", "essay_id": None, "deadline_status": "on_time"}
    assert all(len(sink.frames) == 1 and sink.frames[0] is frame for sink in sinks)  # the same str object
    for _, leave in joined:
        leave()


async def test_a_bus_resync_reads_the_rows_once_and_sends_them_to_every_socket() -> None:
    bus, class_id, deadlines, reads = InMemoryBus(), uuid.uuid4(), CountingDeadlines(), []
    app = SimpleNamespace(state=SimpleNamespace())
    sinks = [Sink(), Sink()]
    joined = [await join_feed(app, class_id, sink, lambda: make_feed(bus, class_id, deadlines, reads))
              for sink in sinks]
    await bus.publish(f"class:{class_id}", RESYNC)
    await settle()
    assert len(reads) == 1 and deadlines.loads == 1
    for sink in sinks:
        assert [json.loads(f)["type"] for f in sink.frames] == ["resync", "student"]
        assert json.loads(sink.frames[1])["deadline_status"] == "on_time"
    for _, leave in joined:
        leave()


async def test_the_last_socket_to_leave_ends_the_subscription_and_a_new_one_starts_afresh() -> None:
    bus, class_id, deadlines, reads = InMemoryBus(), uuid.uuid4(), CountingDeadlines(), []
    app = SimpleNamespace(state=SimpleNamespace())
    first, second = Sink(), Sink()
    feed, leave_first = await join_feed(app, class_id, first, lambda: make_feed(bus, class_id, deadlines, reads))
    _, leave_second = await join_feed(app, class_id, second, lambda: make_feed(bus, class_id, deadlines, reads))
    leave_first()
    await bus.publish(f"class:{class_id}", b'{"type": "student"}')
    await settle()
    assert not first.frames and len(second.frames) == 1  # a socket that left gets nothing more
    leave_second()
    assert bus.fanout.channels() == [] and app.state.class_feeds == {}
    again, leave_again = await join_feed(app, class_id, Sink(), lambda: make_feed(bus, class_id, deadlines, reads))
    assert again is not feed and bus.fanout.channels() == [f"class:{class_id}"]
    leave_again()


async def test_a_failed_subscribe_is_not_kept_for_the_next_socket() -> None:
    class BrokenBus(InMemoryBus):
        async def subscribe(self, channel: str, handler: Any) -> Any:
            raise ConnectionError("bus down")

    class_id, deadlines, reads = uuid.uuid4(), CountingDeadlines(), []
    app = SimpleNamespace(state=SimpleNamespace())
    with pytest.raises(ConnectionError):
        await join_feed(app, class_id, Sink(), lambda: make_feed(BrokenBus(), class_id, deadlines, reads))
    assert app.state.class_feeds == {}
    bus = InMemoryBus()
    _, leave = await join_feed(app, class_id, Sink(), lambda: make_feed(bus, class_id, deadlines, reads))
    assert bus.fanout.channels() == [f"class:{class_id}"]
    leave()
