"""serve_app.realtime.receipt: a writer's typed update handed on (to this replica's sockets, if
the essay has room: `serve_app.realtime.room`, and to its host) from the connection's receive
callback, and only one the socket's task would hand over itself."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pycrdt import Doc, Map, Text, create_sync_message, create_update_message

from db.types import utcnow
from serve_app.api.writability import READ_ONLY, WriteWindow
from serve_app.realtime.acks import AckQueue
from serve_app.realtime.connection import TokenBucket
from serve_app.realtime.receipt import ReceiptFanout

OPEN = WriteWindow(refusal=None, closes_at=None)


def typed(text: str) -> bytes:
    doc = Doc()
    doc["content"] = content = Text()
    content += text
    return doc.get_update()


def received(frame: bytes) -> dict[str, Any]:
    return {"type": "websocket.receive", "bytes": frame}


Sent = list[tuple[bytes, float, Any]]


def watched(window: WriteWindow = OPEN, bucket: TokenBucket | None = None, acks: AckQueue | None = None,
            ) -> tuple[ReceiptFanout, Sent]:
    sent: Sent = []
    fanout = ReceiptFanout(window=window, bucket=bucket or TokenBucket(10, 10), acks=acks or AckQueue(lambda n: None),
                           max_bytes=1 << 20, send=lambda *handed: sent.append(handed))
    return fanout, sent


async def test_a_typed_update_is_handed_on_from_the_receive_callback_and_never_the_task() -> None:
    bucket = TokenBucket(10, 2, clock=lambda: 0.0)
    fanout, sent = watched(bucket=bucket)
    update = typed("héllo 🙂")
    assert fanout.on_message(received(create_update_message(update)), 12.5) is None  # taken: the task never wakes
    # On with the connection's receipt stamp (`ack_seconds` starts there, as on the task's path:
    # `ReceiptFanout.received_at`) and what it inserts (the watchers get it now only if it fits).
    assert [(u, at, checked.inserted_chars) for u, at, checked in sent] == [(update, 12.5, len("héllo 🙂"))]
    assert bucket.take() and not bucket.take()  # its token of the rate limit was taken


async def test_nothing_the_task_would_refuse_or_treat_otherwise_is_handed_over() -> None:
    doc = Doc()
    doc["meta"] = meta = Map()  # a root map: the essay takes only plain text in `content`
    meta["k"] = "v"
    not_text = create_update_message(doc.get_update())
    step1 = create_sync_message(Doc())
    for window, frame in ((OPEN, not_text), (OPEN, step1), (OPEN, b"\x00\x02\xff"), (READ_ONLY, None),
                          (WriteWindow(refusal=None, closes_at=utcnow() - timedelta(seconds=1)), None)):
        fanout, sent = watched(window)
        message = received(frame or create_update_message(typed("late")))
        assert fanout.on_message(message, 0.0) is message  # to the task, as it came
        fanout.on_message({"type": "websocket.receive", "text": "not binary"}, 0.0)
        assert sent == []


async def test_over_its_rate_or_behind_an_update_still_at_the_host_the_task_decides() -> None:
    spent = TokenBucket(1, 1, clock=lambda: 0.0)  # no refill, however slow the machine
    assert spent.take()
    fanout, sent = watched(bucket=spent)
    fanout.on_message(received(create_update_message(typed("too fast"))), 0.0)
    assert sent == []  # the task closes the socket for its rate: no watcher saw the update

    acks = AckQueue(lambda n: None)
    at_host: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    acks.add(at_host)  # an earlier update may yet fail and end the socket before its task reads on
    fanout, sent = watched(acks=acks)
    fanout.on_message(received(create_update_message(typed("next"))), 0.0)
    assert sent == []
    at_host.set_result(None)
    await asyncio.sleep(0)
