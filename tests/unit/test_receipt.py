"""serve_app.realtime.receipt: a writer's typed update handed to this replica's sockets from the
connection's receive callback, and only one the socket's task would hand over itself."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from pycrdt import Doc, Map, Text, create_sync_message, create_update_message

from actors.broadcast import InMemoryBus, split_doc_message
from db.types import utcnow
from serve_app.api.writability import READ_ONLY, WriteWindow
from serve_app.realtime.acks import AckQueue
from serve_app.realtime.connection import TokenBucket
from serve_app.realtime.protocol import encode_update
from serve_app.realtime.receipt import ReceiptFanout

OPEN = WriteWindow(refusal=None, closes_at=None)


def typed(text: str) -> bytes:
    doc = Doc()
    doc["content"] = content = Text()
    content += text
    return doc.get_update()


def received(frame: bytes) -> dict[str, Any]:
    return {"type": "websocket.receive", "bytes": frame}


async def watched(window: WriteWindow = OPEN, bucket: TokenBucket | None = None,
                  acks: AckQueue | None = None) -> tuple[ReceiptFanout, list[bytes], dict[uuid.UUID, Any]]:
    bus, eid, seen = InMemoryBus(), uuid.uuid4(), []
    await bus.subscribe(f"essay:{eid}:doc", lambda _c, message: seen.append(message))
    in_flight: dict[uuid.UUID, Any] = {}
    fanout = ReceiptFanout(bus=bus, eid=eid, origin="writer", window=window, bucket=bucket or TokenBucket(10, 10),
                           acks=acks or AckQueue(lambda n: None), in_flight=in_flight, max_bytes=1 << 20)
    return fanout, seen, in_flight


async def test_a_typed_update_reaches_the_watchers_on_receipt_and_the_task_takes_it_once() -> None:
    fanout, seen, in_flight = await watched()
    update = typed("hello")
    frame = create_update_message(update)
    message = received(frame)
    assert fanout.on_message(message, 0.0) is message  # handed on to the task unchanged
    assert [split_doc_message(m) for m in seen] == [("writer", encode_update(update))]
    assert list(in_flight[fanout.eid].values()) == [encode_update(update)]  # until its apply returns
    delivered = fanout.take(frame)
    assert delivered is not None and delivered.update == update
    assert fanout.take(frame) is None and fanout.take(create_update_message(typed("other"))) is None


async def test_nothing_the_task_would_refuse_or_treat_otherwise_is_handed_over() -> None:
    doc = Doc()
    doc["meta"] = meta = Map()  # a root map: the essay takes only plain text in `content`
    meta["k"] = "v"
    not_text = create_update_message(doc.get_update())
    step1 = create_sync_message(Doc())
    for window, frame in ((OPEN, not_text), (OPEN, step1), (OPEN, b"\x00\x02\xff"), (READ_ONLY, None),
                          (WriteWindow(refusal=None, closes_at=utcnow() - timedelta(seconds=1)), None)):
        fanout, seen, in_flight = await watched(window)
        fanout.on_message(received(frame or create_update_message(typed("late"))), 0.0)
        fanout.on_message({"type": "websocket.receive", "text": "not binary"}, 0.0)
        assert seen == [] and in_flight == {} and not fanout.delivered


async def test_over_its_rate_or_behind_an_update_still_at_the_host_the_task_decides() -> None:
    spent = TokenBucket(1, 1, clock=lambda: 0.0)  # no refill, however slow the machine
    assert spent.take()
    fanout, seen, _ = await watched(bucket=spent)
    fanout.on_message(received(create_update_message(typed("too fast"))), 0.0)
    assert seen == []  # the task closes the socket for its rate: no watcher saw the update

    acks = AckQueue(lambda n: None)
    at_host: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    acks.add(at_host)  # an earlier update may yet fail and end the socket before its task reads on
    fanout, seen, _ = await watched(acks=acks)
    fanout.on_message(received(create_update_message(typed("next"))), 0.0)
    assert seen == []
    at_host.set_result(None)
    await asyncio.sleep(0)


async def test_hand_overs_the_task_never_took_leave_the_in_flight_registry_when_the_socket_ends() -> None:
    fanout, seen, in_flight = await watched()
    fanout.on_message(received(create_update_message(typed("last words"))), 0.0)
    assert len(seen) == 1 and in_flight
    fanout.forget()
    assert in_flight == {} and not fanout.delivered


async def test_the_hand_over_keeps_the_connections_receipt_stamp_for_the_ack_latency() -> None:
    """`ack_seconds` starts where the task path starts it (`ReceiptFanout.received_at`: the
    connection's stamp when the frame arrived), not after the checks made here."""
    fanout, _, _ = await watched()
    frame = create_update_message(typed("stamped"))
    fanout.on_message(received(frame), 12.5)
    delivered = fanout.take(frame)
    assert delivered is not None and delivered.received == 12.5
