"""The per-socket send queue (`serve_app.realtime.connection.SendQueue`): order, close after the
queued frames, overflow -> 1013."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serve_app.realtime import connection
from serve_app.realtime.connection import SEND_QUEUE_LIMIT, SendQueue
from serve_app.realtime.protocol import CloseCode


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed: tuple[int, str] | None = None
        self.open = asyncio.Event()
        self.open.set()

    async def send_bytes(self, data: bytes) -> None:
        await self.open.wait()
        self.sent.append(data)

    async def send_text(self, data: str) -> None:
        await self.open.wait()
        self.sent.append(data)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)


async def test_frames_go_out_in_order_and_close_waits_for_them() -> None:
    ws = FakeSocket()
    out = SendQueue(ws)  # type: ignore[arg-type]
    for frame in (b"a", "b", b"c"):
        out.put(frame)
    await out.close(4400, "bad frame")
    assert ws.sent == [b"a", "b", b"c"] and ws.closed == (4400, "bad frame")
    out.put(b"late")
    await asyncio.sleep(0)
    assert ws.sent == [b"a", "b", b"c"]  # nothing after the close


async def test_a_peer_too_far_behind_is_closed_1013_and_nothing_more_is_queued() -> None:
    ws = FakeSocket()
    ws.open.clear()  # the peer stops reading
    out = SendQueue(ws)  # type: ignore[arg-type]
    for i in range(SEND_QUEUE_LIMIT + 1):
        out.put(str(i))
    await asyncio.sleep(0.01)
    assert ws.closed is not None and ws.closed[0] == CloseCode.TRY_AGAIN_LATER
    assert out.stopped and not out.frames
    out.stop()


async def test_cancelling_a_close_that_waits_for_a_stuck_peer_is_not_swallowed() -> None:
    ws = FakeSocket()
    ws.open.clear()  # the queued frame can never be sent
    out = SendQueue(ws)  # type: ignore[arg-type]
    out.put(b"stuck")
    closing = asyncio.ensure_future(out.close(4400, "bye"))
    await asyncio.sleep(0.05)
    closing.cancel()  # e.g. the server shutting down
    try:
        await closing
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation was swallowed")
    out.stop()


async def test_drain_below_waits_until_the_queue_is_sent_and_not_when_it_is_short() -> None:
    ws = FakeSocket()
    ws.open.clear()  # the peer reads nothing for now
    out = SendQueue(ws, max_bytes=1000)  # type: ignore[arg-type]
    await out.drain_below(100)  # nothing queued: no wait
    for _ in range(6):
        out.put(b"x" * 100)
    waiting = asyncio.ensure_future(out.drain_below(300))
    await asyncio.sleep(0.01)
    assert not waiting.done() and ws.closed is None
    ws.open.set()  # the peer catches up
    await asyncio.wait_for(waiting, 1)
    assert len(ws.sent) == 6 and out.queued_bytes == 0


async def test_last_words_go_out_just_before_the_close_frame_after_the_queue() -> None:
    ws = FakeSocket()
    out = SendQueue(ws)  # type: ignore[arg-type]
    out.before_close(lambda: b"ack")
    out.put(b"a")
    await out.close(4400, "bad frame")
    assert ws.sent == [b"a", b"ack"] and ws.closed == (4400, "bad frame")


async def test_last_words_to_a_peer_that_reads_nothing_wait_a_bounded_time_then_the_close_is_sent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "LAST_WORDS_SECONDS", 0.01)
    ws = FakeSocket()
    ws.open.clear()  # the peer stops reading
    out = SendQueue(ws)  # type: ignore[arg-type]
    out.before_close(lambda: b"ack")
    for i in range(SEND_QUEUE_LIMIT + 1):  # the fan-out overflows the queue: close 1013, from a task
        out.put(str(i))
    for _ in range(1000):
        if ws.closed is not None:
            break
        await asyncio.sleep(0.01)
    assert ws.closed is not None and ws.closed[0] == CloseCode.TRY_AGAIN_LATER
    out.stop()
