"""`LeanWebSocketProtocol.data_received` (serve_app.fastpath.uvicorn_protocol) takes whole binary
frames past websockets' parser; whatever the chunking, the app must get exactly what uvicorn's own
sans-I/O protocol, where websockets parses every byte, gives it: the same messages in the same
order, the same bytes written back (pongs, close frames) and the same close of the transport
(one difference, in a read that ends in a parser error: the last test).

Each case feeds the same bytes, cut into the same chunks, to a fresh connection of each protocol
straight through `data_received` (no socket, so no chance of loopback choosing the reads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.utils import apply_mask

from serve_app.fastpath.uvicorn_protocol import LeanWebSocketProtocol

HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
MAX_SIZE = 100_000  # the connections' ws_max_size in these tests


def frame(payload: bytes, *, opcode: int = 0x2, fin: bool = True, mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """A client's masked frame with a 7-, 16- or 64-bit length."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 65536:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([(0x80 if fin else 0) | opcode]) + length + mask + apply_mask(payload, mask)


def binary(payload: bytes) -> bytes:
    return frame(payload)


def text(payload: str) -> bytes:
    return frame(payload.encode(), opcode=0x1)


def ping(payload: bytes) -> bytes:
    return frame(payload, opcode=0x9)


def close(code: int, reason: str = "") -> bytes:
    return frame(code.to_bytes(2, "big") + reason.encode(), opcode=0x8)


class Wire:
    """A transport that keeps what the protocol writes and whether it closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def accepting(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts, then reads nothing: every message stays in the protocol's queue for the test."""
    await receive()
    await send({"type": "websocket.accept"})
    await scope["state"]["done"]


async def delivered(protocol_class: type[WebSocketsSansIOProtocol], chunks: list[bytes], *,
                    max_size: int = MAX_SIZE) -> tuple[list[dict[str, Any]], bytes, bool]:
    """(messages queued for the app, bytes written back, transport closed) after `chunks` reach
    a new open connection of `protocol_class` one `data_received` each (none after it closed)."""
    done = asyncio.get_running_loop().create_future()
    config = Config(accepting, ws_max_size=max_size, ws_ping_interval=None, ws_per_message_deflate=False,
                    log_level="warning")
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={"done": done})
    wire = Wire()
    protocol.connection_made(wire)  # type: ignore[arg-type]
    protocol.data_received(HANDSHAKE)
    for _ in range(100):  # the app's task accepts within a few loop turns
        if protocol.handshake_complete:
            break
        await asyncio.sleep(0)
    assert protocol.handshake_complete and wire.written.startswith(b"HTTP/1.1 101")
    del wire.written[:]
    for chunk in chunks:
        if wire.closed:  # a closed transport reads no more
            break
        protocol.data_received(chunk)
    messages = []
    while not protocol.queue.empty():
        messages.append(await protocol.queue.get())
    done.set_result(None)
    await asyncio.gather(*state.tasks)
    return messages, bytes(wire.written), wire.closed


async def assert_same_as_websockets(chunks: list[bytes], *, max_size: int = MAX_SIZE) -> list[dict[str, Any]]:
    """The lean protocol delivers and answers `chunks` exactly as uvicorn's protocol over
    websockets' parser does; returns the messages."""
    expected = await delivered(WebSocketsSansIOProtocol, chunks, max_size=max_size)
    assert await delivered(LeanWebSocketProtocol, chunks, max_size=max_size) == expected, [len(c) for c in chunks]
    return expected[0]


def splits(data: bytes) -> Iterator[list[bytes]]:
    """`data` in two chunks, cut at every byte boundary."""
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def received(*payloads: bytes | str) -> list[dict[str, Any]]:
    return [{"type": "websocket.receive", "text" if isinstance(p, str) else "bytes": p} for p in payloads]


PAYLOADS = [b"", b"x", bytes(range(125)), bytes(range(126)), bytes(range(256)) * 4, b"\x00\x01\x02 update"]


async def test_several_whole_binary_frames_in_one_read_each_reach_the_app_in_order(monkeypatch) -> None:
    from websockets.server import ServerProtocol

    data = b"".join(binary(p) for p in PAYLOADS)
    assert await assert_same_as_websockets([data]) == received(*PAYLOADS)
    parsed: list[bytes] = []
    receive_data = ServerProtocol.receive_data
    monkeypatch.setattr(ServerProtocol, "receive_data", lambda self, d: parsed.append(d) or receive_data(self, d))
    messages, _, _ = await delivered(LeanWebSocketProtocol, [data])
    assert messages == received(*PAYLOADS) and parsed == [HANDSHAKE]  # every frame past websockets' parser


async def test_frames_cut_at_every_byte_boundary_reach_the_app_as_websockets_parses_them() -> None:
    inner = binary(b"a whole frame inside another's payload")
    # With a zero mask the carrier's payload is the inner frame's own bytes on the wire: a cut just
    # before them leaves a chunk that starts with a whole frame in the middle of another one.
    data = binary(b"first") + binary(bytes(range(130))) + frame(inner, mask=bytes(4)) + binary(b"last")
    for chunks in splits(data):
        assert await assert_same_as_websockets(chunks) == received(b"first", bytes(range(130)), inner, b"last")
    assert await assert_same_as_websockets([data[i:i + 1] for i in range(len(data))]) == \
        received(b"first", bytes(range(130)), inner, b"last")


async def test_binary_ping_text_and_close_frames_mixed_in_reads_reach_the_app_as_websockets_parses_them() -> None:
    data = (binary(b"one") + ping(b"are you there") + binary(b"two") + text("three") + binary(b"four")
            + frame(b"fi", fin=False) + frame(b"ve", opcode=0x0) + binary(b"six") + close(1000, "bye")
            + binary(b"after the close"))
    messages = await assert_same_as_websockets([data])
    assert messages == [*received(b"one", b"two", "three", b"four", b"five", b"six"),
                        {"type": "websocket.disconnect", "code": 1000, "reason": "bye"}]
    for chunks in splits(data):
        assert await assert_same_as_websockets(chunks) == messages


@pytest.mark.parametrize("size", [65535, 65536, MAX_SIZE], ids=lambda n: f"{n}-bytes")
async def test_a_frame_beyond_what_the_fast_path_takes_reaches_the_app_as_websockets_parses_it(size: int) -> None:
    """16-bit lengths are the fast path's largest: a 64-bit length goes through websockets,
    between frames the fast path takes itself, in one read or cut anywhere around it."""
    big = bytes(range(251)) * (size // 251) + bytes(range(size % 251))
    data = binary(b"before") + binary(big) + binary(b"after")
    assert await assert_same_as_websockets([data]) == received(b"before", big, b"after")
    start = len(binary(b"before")) + len(binary(big)) - size  # where the big frame's payload starts
    for cut in (1, 6, 11, 12, 13, start - 1, start, start + size // 2, len(data) - 10, len(data) - 1):
        assert await assert_same_as_websockets([data[:cut], data[cut:]]) == received(b"before", big, b"after")


@pytest.mark.parametrize("max_size", [1000, MAX_SIZE], ids=["16-bit-length", "64-bit-length"])
async def test_a_frame_over_the_size_limit_closes_the_connection_as_websockets_does(max_size: int) -> None:
    big = binary(bytes(max_size + 1))
    data = big + binary(b"after")
    for chunks in ([data], *([data[:cut], data[cut:]] for cut in (1, 2, 4, 7, 9, 10, 14, len(big), len(data) - 1))):
        messages = await assert_same_as_websockets([binary(b"before"), *chunks], max_size=max_size)
        assert messages[0] == received(b"before")[0] and messages[1]["code"] == 1009 and len(messages) == 2


async def test_whole_frames_before_a_parser_error_in_the_same_read_reach_the_app_as_if_read_alone() -> None:
    """The one difference from uvicorn's own protocol: uvicorn drops every message websockets
    parsed from a read that ends in a parser error, while a whole binary frame the fast path took
    from the start of that read has reached the app already, as it would have had it come in a
    read of its own (each one's result is then websockets'). The close is the same."""
    before = binary(b"one") + binary(b"two")
    rest = binary(bytes(MAX_SIZE + 1)) + binary(b"after")
    lean = await delivered(LeanWebSocketProtocol, [before + rest])
    assert lean == await delivered(WebSocketsSansIOProtocol, [binary(b"one"), binary(b"two"), rest])
    assert lean[0][:2] == received(b"one", b"two") and lean[0][2]["code"] == 1009
    assert (await delivered(WebSocketsSansIOProtocol, [before + rest]))[0] == lean[0][2:]
