"""serve_app.fastpath.uvicorn_protocol: uvicorn's sans-I/O websocket protocol with lighter state."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from starlette.websockets import WebSocket

from serve_app.fastpath import uvicorn_protocol
from serve_app.fastpath.uvicorn_protocol import Flag, Inbox, LeanWebSocketProtocol
from serve_app.realtime.connection import SendQueue
from tests.conftest import serving


async def test_inbox_hands_items_over_in_order_and_a_cancelled_get_loses_none() -> None:
    inbox = Inbox()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert inbox.qsize() == 2 and not inbox.empty()
    assert await inbox.get() == 1 and await inbox.get() == 2 and inbox.empty()
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait(3)
    assert await asyncio.wait_for(waiting, 1) == 3
    cancelled = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    inbox.put_nowait(4)
    assert await asyncio.wait_for(inbox.get(), 1) == 4


async def test_flag_wakes_every_waiter_on_set_and_not_before() -> None:
    flag = Flag(True)
    assert flag.is_set() and await flag.wait()
    flag.clear()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True] * 3
    flag.clear()
    gone = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    flag.set()  # a cancelled waiter is simply skipped
    assert gone.cancelled()


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "websocket"
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked"})
            continue
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k in ("text", "bytes")}})


async def test_a_real_socket_echoes_text_and_bytes_in_order_under_a_burst_and_closes() -> None:
    async with serving(echo) as address:
        async with websockets.connect(f"ws://{address}/") as ws:
            frames = [f"t{i}" if i % 2 else f"b{i}".encode() for i in range(500)]
            for frame in frames:  # a burst: uvicorn pauses reading until each is taken
                await ws.send(frame)
            assert [await ws.recv() for _ in frames] == frames
            await ws.send("close")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_the_transports_flow_control_closes_and_opens_the_write_gate() -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    protocol = LeanWebSocketProtocol(config=Config(echo), server_state=ServerState(), app_state={})
    assert isinstance(protocol.writable, Flag) and isinstance(protocol.queue, Inbox)
    protocol.pause_writing()  # the transport's buffer is over its high-water mark
    gate = asyncio.ensure_future(protocol.writable.wait())
    await asyncio.sleep(0.01)
    assert not gate.done()
    protocol.resume_writing()
    assert await asyncio.wait_for(gate, 1)


async def outbound_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Sends through `SendQueue`: at once while the socket is writable, queued (in order) while
    flow control holds it; the close reason tells the client which way each frame went."""
    if scope["type"] == "lifespan":
        await echo(scope, receive, send)
        return
    ws = WebSocket(scope, receive, send)
    await ws.accept()
    connection = uvicorn_protocol.current_connection()
    out = SendQueue(ws)
    assert connection is not None and out._connection is connection
    out.put(b"1")
    direct = out._sender is None and not out.frames
    connection.pause_writing()  # the transport's buffer is full
    out.put(b"2")
    out.put("3")
    queued = len(out.frames)
    connection.resume_writing()
    out.put(b"4")  # a sender is pending: this one queues behind it, never before
    await out.close(4000, f"direct={direct} queued={queued}")


async def test_outbound_writes_at_once_on_our_protocol_and_queues_in_order_when_held() -> None:
    assert uvicorn_protocol.current_connection() is None  # not inside a connection's task
    async with serving(outbound_app) as address:
        async with websockets.connect(f"ws://{address}/") as ws:
            assert [await ws.recv() for _ in range(4)] == [b"1", b"2", "3", b"4"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "direct=True queued=2")


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_send_nows_frame_header_is_the_one_websockets_writes_for_a_servers_frame(length: int) -> None:
    from websockets.frames import Frame, Opcode

    for opcode, ours in ((Opcode.BINARY, uvicorn_protocol.OP_BINARY), (Opcode.TEXT, uvicorn_protocol.OP_TEXT)):
        payload = bytes(length)
        expected = Frame(opcode, payload).serialize(mask=False, extensions=[])
        assert uvicorn_protocol.frame_header(ours, length) + payload == expected


async def sized_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Writes frames of every header size through `send_now` (`SendQueue.put`), bytes and text."""
    if scope["type"] == "lifespan":
        await echo(scope, receive, send)
        return
    ws = WebSocket(scope, receive, send)
    await ws.accept()
    out = SendQueue(ws)
    for n in (0, 125, 126, 65535, 65536, 200_000):
        out.put(bytes([n % 251]) * n)
        out.put("é" * n)
    await out.close(4000, "done")


async def test_frames_of_every_header_size_written_at_once_reach_the_client_intact() -> None:
    async with serving(sized_app) as address:
        async with websockets.connect(f"ws://{address}/", max_size=None, compression=None) as ws:
            for n in (0, 125, 126, 65535, 65536, 200_000):
                assert await ws.recv() == bytes([n % 251]) * n
                assert await ws.recv() == "é" * n
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()


async def test_send_now_refuses_a_socket_that_is_not_open() -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    protocol = LeanWebSocketProtocol(config=Config(echo), server_state=ServerState(), app_state={})
    assert not protocol.send_now(b"x")  # no handshake yet: nothing may be written


async def test_inbox_shows_a_message_to_its_hook_only_while_the_reader_waits_with_nothing_queued() -> None:
    inbox = Inbox()
    seen: list[Any] = []

    def hook(item: Any, _received_at: float) -> Any:
        seen.append(item)
        return ("hooked", item)

    inbox.on_idle_put = hook
    inbox.put_nowait(1)  # nobody reads yet: the reader may still be busy with an earlier frame
    assert seen == [] and await inbox.get() == 1
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait(2)  # the reader waits, nothing before it: the hook sees it first
    inbox.put_nowait(3)  # 2 is still queued (the reader not yet run): no hook
    assert seen == [2]
    assert await waiting == ("hooked", 2) and await inbox.get() == 3

    def broken(item: Any, _received_at: float) -> Any:
        raise RuntimeError("hook failed")

    inbox.on_idle_put = broken
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait(4)  # a failing hook leaves the message as it came
    assert await asyncio.wait_for(waiting, 1) == 4


async def test_inbox_stamps_each_message_on_arrival_and_tells_its_hook_and_reader_the_same_stamp(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([10.0, 20.0, 30.0])
    monkeypatch.setattr(uvicorn_protocol, "_clock", lambda: next(ticks))
    inbox = Inbox()
    stamps: list[float] = []
    inbox.on_idle_put = lambda item, at: stamps.append(at) or item
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("a")  # the hook sees it (the reader waits)
    inbox.put_nowait("b")  # queued behind it
    assert await waiting == "a" and inbox.taken_at == 10.0 and stamps == [10.0]
    inbox.put_nowait("c")
    assert await inbox.get() == "b" and inbox.taken_at == 20.0  # its own arrival, not when it was read
    assert await inbox.get() == "c" and inbox.taken_at == 30.0


async def test_a_hook_that_handles_the_message_itself_queues_nothing_and_wakes_no_one() -> None:
    inbox = Inbox()
    inbox.on_idle_put = lambda item, at: None if item == "handled" else item
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("handled")
    await asyncio.sleep(0)
    assert not waiting.done() and inbox.empty() and inbox.reader_waits()
    inbox.put_nowait("for the reader")
    assert await waiting == "for the reader"


class PausingTransport:
    """Records the protocol's pause_reading / resume_reading calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


async def test_reading_pauses_only_for_a_message_the_app_is_not_already_waiting_for() -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    protocol = LeanWebSocketProtocol(config=Config(echo), server_state=ServerState(), app_state={})
    transport = PausingTransport()
    protocol.transport = transport  # type: ignore[assignment]
    inbox: Inbox = protocol.queue  # type: ignore[assignment]

    def arrives(data: bytes) -> None:
        protocol.curr_msg_data_type = "bytes"
        protocol.frames = [data]  # type: ignore[list-item]
        protocol.send_receive_event_to_app()

    reading = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    arrives(b"1")  # the app waits for it: taken at once, nothing to hold back
    assert transport.calls == [] and not protocol.read_paused
    arrives(b"2")  # the app has not taken 1 yet: reading pauses until it catches up
    assert transport.calls == ["pause"] and protocol.read_paused
    assert (await reading)["bytes"] == b"1"

    inbox.on_idle_put = lambda item, at: None  # a hook that handles everything itself
    assert (await inbox.get())["bytes"] == b"2"
    reading = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    protocol.read_paused = False
    transport.calls.clear()
    arrives(b"3")
    assert transport.calls == [] and not protocol.read_paused and not reading.done()
    reading.cancel()


def client_frame(payload: bytes, *, first: int = 0x82, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A client's masked frame (`first`: FIN, reserved bits and opcode), 7- or 16-bit length."""
    from websockets.utils import apply_mask

    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([first]) + length + mask + apply_mask(payload, mask)


async def test_whole_binary_frames_reach_the_app_past_websockets_parser_and_intact(monkeypatch) -> None:
    """One whole final binary frame per read (a typed update) skips websockets' parser; what it
    hands the app is what the parser would have."""
    from websockets.server import ServerProtocol

    parsed: list[bytes] = []
    receive_data = ServerProtocol.receive_data

    def counted(self: ServerProtocol, data: bytes) -> None:
        parsed.append(bytes(data))
        receive_data(self, data)

    monkeypatch.setattr(ServerProtocol, "receive_data", counted)
    async with serving(echo) as address:
        async with websockets.connect(f"ws://{address}/", compression=None, max_size=None) as ws:
            before = len(parsed)  # the handshake's request
            for n in (0, 1, 125, 126, 1000, 4000):
                payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
                await ws.send(payload)
                assert await ws.recv() == payload
            assert len(parsed) == before  # none went through websockets' parser
            ws.transport.write(client_frame(b"late") + client_frame(b"read") + client_frame(b"together"))
            assert [await ws.recv() for _ in range(3)] == [b"late", b"read", b"together"]
            assert len(parsed) == before  # several whole frames in one read: each past the parser too


async def test_frames_split_joined_fragmented_or_not_binary_still_go_through_websockets() -> None:
    """Part of a frame, two frames in one write, a fragmented message, a text frame, a frame
    with a reserved bit or over the size limit: websockets parses (and refuses) them as before."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async with serving(echo) as address:
        async with websockets.connect(f"ws://{address}/", compression=None) as ws:
            raw = ws.transport
            whole = client_frame(b"split in two")
            raw.write(whole[:5])
            await asyncio.sleep(0.05)
            raw.write(whole[5:])
            assert await ws.recv() == b"split in two"
            inner = client_frame(b"looks whole")  # a payload that is itself a frame, sent after its header
            outer = client_frame(inner, mask=bytes(4))  # a zero mask: the payload's bytes go out as they are
            raw.write(outer[:6])
            await asyncio.sleep(0.05)
            raw.write(outer[6:])  # a whole frame's bytes, but in the middle of another one
            assert await ws.recv() == inner
            raw.write(client_frame(b"one") + client_frame(b"two"))
            assert [await ws.recv(), await ws.recv()] == [b"one", b"two"]
            text = bytes([0x81, 0x84]) + bytes(4) + b"text"  # a text frame, zero mask
            raw.write(client_frame(b"before") + text + client_frame(b"after"))  # websockets from the text on
            assert [await ws.recv() for _ in range(3)] == [b"before", "text", b"after"]
            half = client_frame(b"second, in two reads")
            raw.write(client_frame(b"first") + half[:7])
            await asyncio.sleep(0.05)
            raw.write(half[7:])
            assert [await ws.recv(), await ws.recv()] == [b"first", b"second, in two reads"]
            await ws.send([b"frag", b"ments"])  # a fragmented message: two frames, the first not final
            assert await ws.recv() == b"fragments"
            await ws.send("text")
            assert await ws.recv() == "text"
            raw.write(client_frame(b"reserved", first=0xC2))  # RSV1 without an extension
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
    protocol = LeanWebSocketProtocol(config=Config(echo, ws_max_size=10), server_state=ServerState(), app_state={})
    assert protocol.one_binary_frame(client_frame(b"x" * 5)) is None  # no handshake yet: websockets decides


async def test_a_whole_frame_over_the_size_limit_is_refused_as_before() -> None:
    import uvicorn

    from serve_app.fastpath.uvicorn_protocol import IMPORT_PATH
    from tests.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(echo, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           ws=IMPORT_PATH, ws_max_size=100))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
            await ws.send(b"x" * 100)
            assert await ws.recv() == b"x" * 100
            await ws.send(b"x" * 101)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        server.should_exit = True
        await task
