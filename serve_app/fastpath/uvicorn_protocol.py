"""uvicorn's sans-I/O websocket protocol with lighter per-connection state.

A Gateway replica holds one of these per open socket for as long as a student writes, so its size
is most of what an open essay costs. uvicorn's `WebSocketsSansIOProtocol` keeps an `asyncio.Queue`
of received messages (three deques and an `Event`, another deque) and an `asyncio.Event` for write
flow control: ~4 KiB per connection (tracemalloc in a replica, 2026-11-30), for a queue that holds
a message or two (reading pauses only while a message waits that the app is not already waiting
for) and one reader. `Inbox` and
`Flag` do the same jobs with a list and a future made only while someone waits. The handshake's
response (with its headers) is also dropped once it has been sent.

It also lets the app write a frame without a task: `current_connection()` (from the connection's own ASGI
task) gives the connection, whose `send_now` writes a frame at once when the socket is open and
writable, as `send` would without waiting, and returns False otherwise (the caller then queues
it for `send`). `serve_app.realtime.connection.SendQueue` uses it: a task and a loop turn per frame
were most of what a frame cost the Gateway besides the write itself.

Both ways the commonest frame skips websockets' frame machinery where the result is the same
bytes: `send_now` writes an unmasked data frame's header itself (no `Frame`, no serialiser) while
websockets would add nothing else; `data_received` unmasks one whole final binary frame that
arrives at a frame boundary itself, and so each of several in one read (`one_binary_frame`: no
generator-driven parse, no `Frame`, no event list). A typed update is one such frame in, and
its fan-out and ack two such frames out.

Used by `serve_app.fastpath.uvicorn_config.configure_websockets` (the Gateway replica's uvicorn,
fast path on) and by the tests' real servers. Written against uvicorn 0.54 and websockets 17
(pinned): `test_fastpath_contract` names every attribute it touches.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask  # websockets' C unmasking, as its own parser uses
except ImportError:  # pragma: no cover  (a build without its C extension)
    from websockets.utils import apply_mask

log = logging.getLogger("essaycoach.ws")
IMPORT_PATH = "serve_app.fastpath.uvicorn_protocol:LeanWebSocketProtocol"
_CONNECTION: ContextVar[LeanWebSocketProtocol | None] = ContextVar("essaycoach_ws_connection", default=None)


def current_connection() -> LeanWebSocketProtocol | None:
    """The connection whose ASGI app the calling task runs, if it is one of ours and lives on the
    running loop (a context copied to another loop's task must not write to it)."""
    connection = _CONNECTION.get()
    if connection is None or connection.loop is not asyncio.get_running_loop():
        return None
    return connection


def forget_current_connection() -> None:
    """No connection for the calling task from here on (a socket handed to another ASGI app,
    which sends through its own path: our writes must not overtake its queued frames)."""
    _CONNECTION.set(None)


_AT_EOF = StreamReader.at_eof.__code__
OP_TEXT, OP_BINARY = 0x1, 0x2
_SHORT, _MEDIUM, _LONG = struct.Struct("!BB"), struct.Struct("!BBH"), struct.Struct("!BBQ")


def frame_header(opcode: int, length: int) -> bytes:
    """RFC 6455 header of an unmasked, final (FIN) data frame of `length` payload bytes, no
    extension bits: what `websockets.frames.Frame.serialize` writes for a server's frame."""
    if length < 126:
        return _SHORT.pack(0x80 | opcode, length)
    if length < 65536:
        return _MEDIUM.pack(0x80 | opcode, 126, length)
    return _LONG.pack(0x80 | opcode, 127, length)


_clock = time.perf_counter
"""The clock of `Inbox`'s receipt stamps (tests replace it)."""


class Inbox:
    """The received-message queue: `asyncio.Queue`'s `put_nowait`/`get`/`empty`/`qsize` for one
    reader at a time (an ASGI app reads its `receive` from one task).

    Each message is stamped (`_clock`) as it arrives, in the protocol's receive callback;
    `taken_at` is the stamp of the message `get` returned last. The doc socket measures an
    update's ack latency from there, whichever path handled it.

    `on_idle_put` (set by the app, from its connection's task) sees a message and its stamp as
    it arrives, in the protocol's receive callback, when the reader is idle: waiting for it with
    nothing queued, so it has handled every message before. It returns the message to queue (it
    may act on it first), or None when it has handled the message entirely: then nothing is
    queued and the reader is not woken (the doc socket's typing, `serve_app.realtime.receipt`).
    It must not raise; if it does, the message is queued as it came."""

    __slots__ = ("_items", "_stamps", "_waiter", "on_idle_put", "taken_at")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._stamps: list[float] = []
        self._waiter: asyncio.Future[None] | None = None
        self.on_idle_put: Callable[[Any, float], Any] | None = None
        self.taken_at = 0.0

    def put_nowait(self, item: Any) -> None:
        now = _clock()
        waiter = self._waiter
        hook = self.on_idle_put
        if hook is not None and not self._items and waiter is not None and not waiter.done():
            try:
                handled = hook(item, now)
            except Exception:  # the hook's failure must not break the connection's receive path
                log.exception("on_idle_put failed; the message is queued as it came")
            else:
                if handled is None:
                    return
                item = handled
        self._items.append(item)
        self._stamps.append(now)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.taken_at = self._stamps.pop(0)
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def reader_waits(self) -> bool:
        """The reader waits for a message with nothing queued: one put now is taken at once."""
        waiter = self._waiter
        return not self._items and waiter is not None and not waiter.done()

    def qsize(self) -> int:
        return len(self._items)


class Flag:
    """`asyncio.Event`'s `set`/`clear`/`is_set`/`wait`, with no waiter list until someone waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """`WebSocketsSansIOProtocol` with `Inbox` for its queue and `Flag` for its write gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag(True)  # type: ignore[assignment]
        self.last_words: Callable[[], bytes | None] | None = None
        """Set by the app (`SendQueue.before_close`): the frame to write just before any close
        frame, whoever closes (the app's handler, another task, the server's shutdown)."""

    async def run_asgi(self) -> None:
        _CONNECTION.set(self)  # this task's context: the app's handler runs in it
        await super().run_asgi()

    def data_received(self, data: bytes) -> None:
        """uvicorn's, past websockets' parser for the commonest chunks: whole final binary frames
        (typed updates: one, or several when a busy loop read late) arriving at a frame boundary
        (`one_binary_frame`), each handed to the app as `handle_bytes` would hand it.
        websockets' generator-based parser (a read per header field, a `Frame`, its checks, an
        event list) cost more than the rest of a frame's way to the app. From the first piece
        that is anything else (text, a control frame, a fragment, part of a frame, an error) on,
        the chunk goes through websockets as before (its parser is at a frame boundary there)."""
        pos = 0
        while (taken := self.one_binary_frame(data, pos)) is not None:
            payload, pos = taken
            self.curr_msg_data_type = "bytes"
            self.frames = [payload]
            self.send_receive_event_to_app()
            if pos == len(data):
                return
        super().data_received(data[pos:] if pos else data)

    def one_binary_frame(self, data: bytes, pos: int = 0) -> tuple[bytes, int] | None:
        """(unmasked payload, where the frame ends) when `data` holds from `pos` one whole masked,
        final binary frame with no reserved bits, within the size limits, on an open connection
        without extensions whose parser waits at a frame boundary with nothing buffered: what
        websockets would parse into one `Frame` and uvicorn hand over alone. Else None
        (websockets parses it)."""
        if len(data) - pos < 6 or data[pos] != 0x82 or not self.handshake_complete or self.close_sent:
            return None
        conn = self.conn
        if (conn.state is not State.OPEN or conn.extensions or conn.debug or conn.current_size is not None
                or conn.reader.buffer or conn.events):
            return None
        # At a frame boundary the parser (a server's: the handshake's, then the frames') waits in `reader.at_eof()`.
        waiting = conn.parser
        while (inner := getattr(waiting, "gi_yieldfrom", None)) is not None:
            waiting = inner
        if getattr(waiting, "gi_code", None) is not _AT_EOF:
            return None
        length = data[pos + 1] ^ 0x80  # the mask bit must be set: a client's frame
        if length < 126:
            start = pos + 6
        elif length == 126 and len(data) - pos >= 8:
            length, start = int.from_bytes(data[pos + 2:pos + 4], "big"), pos + 8
        else:
            return None  # unmasked, or a 64-bit length: websockets decides
        end = start + length
        if len(data) < end:
            return None
        for limit in (conn.max_message_size, conn.max_fragment_size):
            if limit is not None and length > limit:
                return None
        return apply_mask(data[start:end], data[start - 4:start]), end

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, without pausing reading for a message the app's reader already waits for.

        uvicorn pauses the transport's reading after queueing every message and resumes it when
        the app has taken it: a stop and a restart of the socket's read watcher per frame (under
        uvloop, epoll_ctl calls on the next poll) even when the reader takes the message at
        once. Reading is now paused only for a message that has to wait (the reader busy, or
        one already queued), so a client still cannot queue more than two; a message the idle
        hook handles itself (`Inbox.on_idle_put` returning None) pauses nothing."""
        inbox: Inbox = self.queue  # type: ignore[assignment]
        if self.read_paused or not inbox.reader_waits():
            super().send_receive_event_to_app()
            return
        self.read_paused = True  # uvicorn pauses only when it sees reading on
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = False

    @property
    def received_at(self) -> float:
        """When the message the app read last arrived (`Inbox.taken_at`, `_clock`'s time)."""
        inbox: Inbox = self.queue  # type: ignore[assignment]
        return inbox.taken_at

    def on_idle_receive(self, hook: Callable[[Any, float], Any]) -> Callable[[], None]:
        """Have `hook` see each message that arrives while the app's reader is idle
        (`Inbox.on_idle_put`); returns the unhook."""
        inbox: Inbox = self.queue  # type: ignore[assignment]
        inbox.on_idle_put = hook

        def unhook() -> None:
            if inbox.on_idle_put is hook:
                inbox.on_idle_put = None

        return unhook

    def send_now(self, data: bytes | str) -> bool:
        """Write one data frame now, as `send` of a `websocket.send` does once it may; False
        (nothing written) when it would wait (flow control) or the socket is not open."""
        if (not self.writable.is_set() or self.disconnected or not self.handshake_complete
                or self.close_sent or self.initial_response is not None or self.transport.is_closing()):
            return False
        conn = self.conn
        payload, opcode = (data, OP_BINARY) if isinstance(data, bytes) else (data.encode(), OP_TEXT)
        if (conn.state is State.OPEN and not conn.extensions and not conn.writes and not conn.debug
                and not conn.expect_continuation_frame):
            # What `send_binary`/`send_text` would write, without their `Frame` and its serialiser
            # (a server's frames are unmasked): two frames per typed update, the fan-out and the ack.
            self.transport.write(frame_header(opcode, len(payload)) + payload)
            return True
        try:
            if opcode == OP_BINARY:
                conn.send_binary(payload)
            else:
                conn.send_text(payload)
        except InvalidState:
            return False
        self.transport.write(b"".join(conn.data_to_send()))
        return True

    def say_last_words(self) -> None:
        """Write `last_words()` now, once, if the socket is still open: past flow control, as
        uvicorn writes its shutdown close frame (a few bytes into the transport's buffer; a
        peer that reads nothing costs no wait). Called before every close frame we write."""
        hook, self.last_words = self.last_words, None
        if hook is None or not self.handshake_complete or self.close_sent or self.disconnected:
            return
        try:
            frame = hook()
        except Exception:  # the close goes out whatever the hook did
            log.exception("last words before a close failed")
            return
        if frame is not None and self.conn.state is State.OPEN and not self.transport.is_closing():
            self.conn.send_binary(frame)
            self.transport.write(b"".join(self.conn.data_to_send()))

    def shutdown(self) -> None:
        """uvicorn's (the server stops: close 1012), after the app's last words."""
        self.say_last_words()
        super().shutdown()

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.close":
            self.say_last_words()  # before the close frame, which may wait for flow control
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self.response = None  # type: ignore[assignment]  # sent; only the handshake reads it
