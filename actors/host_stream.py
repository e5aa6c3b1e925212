"""The typing path between Gateway replicas and an essay host: one TCP stream per pair, past
Ray's actor calls.

At 1,000 typists on 2 cores (ops/loadtest, 2026-11-30) a batch of updates sent as a Ray actor
call took ~25 ms p50 (135 ms p99) from the Gateway's call to its result, of which the host's
own work (apply, wait for the group commit) was ~9 ms: the rest was Ray's call path through both
processes' core-worker threads. Batches also waited ~10 ms p50 (76 ms p99) for one of the four
calls allowed in flight, a limit that kept the number of calls (each ~0.1 ms of CPU a side)
down. On a stream each update is written as it arrives (the frames of one loop turn in one
write), the host answers each as soon as its commit lands, and nothing waits for a slot.
Everything else between Gateway and host (sync, attach, events, ...) stays a Ray call.

Trust: a host listens on its node's address with a random 32-byte token that only Ray callers
get (`EssayHostShell.stream_address`); a connection whose first frame is not the token (or that
sends none within `TOKEN_WAIT_SECONDS`) is closed. The token travels in the clear on the node
network, as Ray's own traffic does by default.

Failure: when a stream breaks (the host process died, Ray restarts it) the Gateway asks Ray for
the new address and sends every unanswered update again: applying a Yjs update twice is a
no-op, so nothing is lost or doubled. An update still unanswered `retry_for` seconds after it
was first sent is failed at the next reconnect (one that kills every host it reaches must not
be resent forever). A peer that vanishes without closing (its node lost power, a partition) is
noticed by TCP keepalive and `TCP_USER_TIMEOUT` within ~10 s, not the kernel's ~15 minutes; a
host that is merely slow (its database restarting) keeps the connection and the updates wait.

Backpressure: a Gateway's writes wait (`FramedProtocol.writable`) while more than
`WRITE_HIGH_WATER` bytes sit in the connection's buffer (the host reads slower than we write);
a host stops reading a connection while more than `MAX_IN_FLIGHT_BYTES` of its updates are being
applied or while its own answers are not taken, and TCP then holds the Gateway back in turn.

Why raw TCP and not websockets (framing, size limits, pings and backpressure from a library):
the same frames as websockets messages cost ~50% more CPU per update (64 vs 42 us, ranges not
overlapping; ops/loadtest/HOST_STREAM_RESULTS.md), and the host's CPU bounds typing at 1,000
typists; the rest websockets would give is here (`MAX_FRAME`, TCP keepalive, the backpressure above).

Frames both ways are a 4-byte big-endian length and a payload of at most `MAX_FRAME` bytes.

    request   >I id, 16 bytes essay id, 16 bytes author id (zeros: none), B flags (1 live,
              2 author, 4 node, 8 trace), B origin length, origin, B node length, node,
              [with flag 8: B trace length, W3C traceparent], the update (rest)
    response  >I id, B status: OK then >Q seq and >IQ room (characters and update-log bytes the
              essay can still take: `EssayHost.room`; absent from a host that cannot tell);
              REJECTED, NOT_FOUND, FAILED, TOO_LARGE or MOVED (the essay is another host's:
              `EssayMoved`) then a UTF-8 reason

Flag 8 is set only while tracing is on in the Gateway (`actors.tracing`): the frame then carries
the sender's trace context, and the host's `host.apply_update` span continues its trace.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import socket
import struct
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from actors import retry, tracing
from actors.host import EssayHost, EssayNotFound, UpdateRejected, UpdateTooLarge
from actors.host_api import EssayMoved, HostUnavailable
from actors.metrics import metric

log = logging.getLogger("essaycoach.stream")
_RECONNECTS = metric("essaycoach_host_stream_reconnects_total")
_RESENDS = metric("essaycoach_host_stream_resends_total")

TOKEN_BYTES = 32
TOKEN_WAIT_SECONDS = 5.0
CONNECT_TIMEOUT = 5.0
PEER_TIMEOUT_SECONDS = 10
MAX_FRAME = 4 * 1024 * 1024  # an update is at most 1 MiB (the socket's limit) plus a header
# Write backpressure (`FramedProtocol`): bytes buffered in the transport beyond what the kernel took.
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024
COALESCE_BYTES = 256 * 1024  # frames gathered for one write at most
GATEWAY_FLUSH_SECONDS = 0.002
"""How long a Gateway's first unsent update waits for others before their one write (`_GatewaySide`).
Typists' updates reach a replica one per loop turn, so a write per turn was a write (and a wake-up
and read of the host) per update; the ack waits for the host's group commit (every 4 ms) anyway,
and the watchers got the update on receipt, before this."""
# Read backpressure (`_HostSide`): update bytes one connection may have being applied at once;
# beyond, the host stops reading that connection until half of them are answered.
MAX_IN_FLIGHT_BYTES = 8 * 1024 * 1024
OK, REJECTED, NOT_FOUND, FAILED, TOO_LARGE, MOVED = range(6)
_LIVE, _AUTHOR, _NODE, _TRACE = 1, 2, 4, 8
_REQUEST = struct.Struct(">I16s16sB")
_RESPONSE = struct.Struct(">IB")
_SEQ = struct.Struct(">Q")
_ROOM = struct.Struct(">IQ")
Room = tuple[int, int]
"""(characters, update-log bytes) an essay can still take after an acked update (`EssayHost.room`)."""
_NO_AUTHOR = bytes(16)


class StreamError(HostUnavailable):
    """The host could not be reached over its stream within the retry window."""


def new_token() -> bytes:
    return secrets.token_bytes(TOKEN_BYTES)


def encode_request(request_id: int, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None,
                   origin: str, live: bool, node: str | None, trace: str | None = None) -> bytes:
    """`trace`: the sender's W3C traceparent (tracing on only)."""
    origin_b, node_b = origin.encode(), (node or "").encode()
    if len(origin_b) > 255 or len(node_b) > 255:
        raise ValueError("origin and node are at most 255 bytes")
    flags = ((_LIVE if live else 0) | (_AUTHOR if author_id is not None else 0) | (_NODE if node is not None else 0)
             | (_TRACE if trace is not None else 0))
    head = _REQUEST.pack(request_id, essay_id.bytes, author_id.bytes if author_id else _NO_AUTHOR, flags)
    if trace is None:
        return b"".join((head, bytes((len(origin_b),)), origin_b, bytes((len(node_b),)), node_b, update))
    trace_b = trace.encode()[:255]
    return b"".join((head, bytes((len(origin_b),)), origin_b, bytes((len(node_b),)), node_b,
                     bytes((len(trace_b),)), trace_b, update))


def decode_request(payload: bytes) -> tuple[int, uuid.UUID, bytes, dict[str, Any]]:
    """(id, essay id, update, `EssayHost.apply_update` keywords, plus `traceparent` when the
    frame carries one); ValueError when malformed."""
    try:
        request_id, essay, author, flags = _REQUEST.unpack_from(payload)
        pos = _REQUEST.size
        origin = payload[pos + 1:pos + 1 + payload[pos]].decode()
        pos += 1 + payload[pos]
        node = payload[pos + 1:pos + 1 + payload[pos]].decode()
        pos += 1 + payload[pos]
        trace = None
        if flags & _TRACE:
            trace = payload[pos + 1:pos + 1 + payload[pos]].decode()
            pos += 1 + payload[pos]
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed request: {exc}") from None
    if pos > len(payload):
        raise ValueError("malformed request: truncated")
    kwargs = {"author_id": uuid.UUID(bytes=author) if flags & _AUTHOR else None, "origin": origin,
              "live": bool(flags & _LIVE), "node": node if flags & _NODE else None}
    if trace is not None:
        kwargs["traceparent"] = trace
    return request_id, uuid.UUID(bytes=essay), payload[pos:], kwargs


def encode_response(request_id: int, status: int, value: int | str, room: Room | None = None) -> bytes:
    if status != OK:
        return _RESPONSE.pack(request_id, status) + str(value).encode()[:1000]
    return _RESPONSE.pack(request_id, status) + _SEQ.pack(value) + (_ROOM.pack(*room) if room is not None else b"")


def decode_response(payload: bytes) -> tuple[int, int, int | str, Room | None]:
    """(id, status, seq or reason, room: OK only, None when the host did not tell)."""
    request_id, status = _RESPONSE.unpack_from(payload)
    body = payload[_RESPONSE.size:]
    if status != OK:
        return request_id, status, body.decode(errors="replace"), None
    room = cast(Room, _ROOM.unpack_from(body, _SEQ.size)) if len(body) >= _SEQ.size + _ROOM.size else None
    return request_id, status, _SEQ.unpack_from(body)[0], room


def keep_alive(transport: asyncio.BaseTransport, timeout: int = PEER_TIMEOUT_SECONDS) -> None:
    """Notice a peer that vanished without closing within ~`timeout` s: keepalive probes while
    idle, and `TCP_USER_TIMEOUT` for data it never acknowledges (Linux; elsewhere keepalive's
    defaults)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", timeout // 2), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", timeout // 2),
                        ("TCP_USER_TIMEOUT", timeout * 1000)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class FramedProtocol(asyncio.Protocol):
    """Length-prefixed frames over a transport, with write backpressure.

    What one loop turn sends leaves in one write (or, with `flush_delay`, what the next
    `flush_delay` seconds send), and so does anything over `COALESCE_BYTES` at once. Past
    `WRITE_HIGH_WATER` bytes in the transport's buffer (the peer reads slower than
    we write) the transport pauses us: `writable()` then waits until it drains below
    `WRITE_LOW_WATER` (or the connection is lost). A frame longer than `max_frame` closes the
    connection.
    """

    max_frame = MAX_FRAME
    flush_delay = 0.0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flushing: asyncio.Handle | None = None  # the pending `_flush`, if one is scheduled
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def paused(self) -> bool:
        """The transport's buffer is over the high-water mark: writers wait (`writable`)."""
        return not self._writable.is_set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(asyncio.Transport, transport)  # a TCP stream's
        self._loop = asyncio.get_running_loop()
        stream.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def writable(self) -> None:
        """Return once the transport takes more (at once unless paused; also when closed)."""
        await self._writable.wait()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        while len(buffer) - pos >= 4:
            size = int.from_bytes(buffer[pos:pos + 4], "big")
            if size > self.max_frame:
                log.warning("stream frame too large; closing", extra={"bytes": size})
                self.close()
                return
            if len(buffer) - pos - 4 < size:
                break
            frame = bytes(buffer[pos + 4:pos + 4 + size])
            pos += 4 + size
            self.frame_received(frame)
            if self.transport is None:
                return  # closed by the handler
        del buffer[:pos]

    def frame_received(self, frame: bytes) -> None:
        raise NotImplementedError

    def send(self, payload: bytes) -> None:
        if self.transport is None:
            return
        self._out.append(len(payload).to_bytes(4, "big"))
        self._out.append(payload)
        self._out_bytes += 4 + len(payload)
        if self._out_bytes >= COALESCE_BYTES:
            self._flush()  # enough for one write: do not hold a loop turn's worth of big frames
        elif self._flushing is None:
            loop = self._loop
            assert loop is not None  # set with the transport
            if self.flush_delay:
                self._flushing = loop.call_later(self.flush_delay, self._flush)
            else:
                self._flushing = loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._flushing is not None:  # a flush of a full buffer comes before its timer: that goes
            self._flushing.cancel()
            self._flushing = None
        out, self._out, self._out_bytes = self._out, [], 0
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def close(self, *, flush: bool = False) -> None:
        """Close now; with `flush`, what this loop turn sent still goes first (a goodbye)."""
        if flush:
            self._flush()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self._writable.set()  # nobody waits on a closed connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._out, self._out_bytes = [], 0
        self._writable.set()


class GatedProtocol(FramedProtocol):
    """A listener's end of a stream: the first frame must be `token`. Until it arrives only a
    token-sized frame is read, for `TOKEN_WAIT_SECONDS`; a wrong one or none closes the
    connection. Trusted frames go to `trusted_frame_received`. Each connection is in
    its listener's `connections` while open (closed with it), with TCP keepalive."""

    max_frame = TOKEN_BYTES

    def __init__(self, listener: Listener) -> None:
        super().__init__()
        self.token = listener.token
        self.connections = listener.connections
        self.trusted = False
        self._token_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connections.add(self)
        keep_alive(transport)
        self._token_timer = asyncio.get_running_loop().call_later(TOKEN_WAIT_SECONDS, self._no_token)

    def _no_token(self) -> None:
        if not self.trusted:
            log.warning("stream refused: no token")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.connections.discard(self)
        if self._token_timer is not None:
            self._token_timer.cancel()

    def frame_received(self, frame: bytes) -> None:
        if self.trusted:
            self.trusted_frame_received(frame)
        elif not hmac.compare_digest(frame, self.token):
            log.warning("stream refused: bad token")
            self.close()
        else:
            self.trusted = True
            self.max_frame = MAX_FRAME

    def trusted_frame_received(self, frame: bytes) -> None:
        raise NotImplementedError


class _HostSide(GatedProtocol):
    """One Gateway's connection to the host: each update applied in its own task, in order.

    Read backpressure: while updates of more than `MAX_IN_FLIGHT_BYTES` are being applied, or
    the Gateway does not take our answers (writes paused), this connection is not read; TCP
    then holds the Gateway's writes, which wait in turn (`FramedProtocol.writable`)."""

    def __init__(self, server: StreamServer) -> None:
        super().__init__(server)
        self.server = server
        self.in_flight_bytes = 0
        self._reading = True

    def _read_while_room(self) -> None:
        """Pause or resume reading: paused over `MAX_IN_FLIGHT_BYTES` applying or while our
        writes are paused, resumed under half of it with writes flowing."""
        if self.transport is None:
            return
        if self._reading and (self.in_flight_bytes > MAX_IN_FLIGHT_BYTES or self.paused):
            self._reading = False
            self.transport.pause_reading()
        elif not self._reading and self.in_flight_bytes <= MAX_IN_FLIGHT_BYTES // 2 and not self.paused:
            self._reading = True
            self.transport.resume_reading()

    @property
    def reading(self) -> bool:
        return self._reading

    def pause_writing(self) -> None:
        super().pause_writing()
        self._read_while_room()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._read_while_room()

    def trusted_frame_received(self, frame: bytes) -> None:
        try:
            request_id, essay_id, update, kwargs = decode_request(frame)
        except ValueError:
            log.warning("stream refused: malformed request")
            self.close()
            return
        task = asyncio.ensure_future(self._apply(request_id, essay_id, update, kwargs))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)
        self.in_flight_bytes += len(update)
        self._read_while_room()

    async def _apply(self, request_id: int, essay_id: uuid.UUID, update: bytes, kwargs: dict[str, Any]) -> None:
        try:
            await self._apply_one(request_id, essay_id, update, kwargs)
        finally:
            self.in_flight_bytes -= len(update)
            self._read_while_room()

    async def _apply_one(self, request_id: int, essay_id: uuid.UUID, update: bytes, kwargs: dict[str, Any]) -> None:
        trace = kwargs.pop("traceparent", None)
        try:
            applied = self.server.host.apply_update(essay_id, update, **kwargs)
            if trace is not None and tracing.enabled:  # the Gateway's trace goes on here
                seq = await tracing.within("host.apply_update", applied, parent=trace, kind="SERVER",
                                           essay_id=essay_id, bytes=len(update))
            else:
                seq = await applied
        except UpdateRejected as exc:
            self.send(encode_response(request_id, TOO_LARGE if isinstance(exc, UpdateTooLarge) else REJECTED, str(exc)))
        except EssayNotFound as exc:
            self.send(encode_response(request_id, NOT_FOUND, str(exc)))
        except EssayMoved as exc:
            self.send(encode_response(request_id, MOVED, str(exc)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("stream update failed", extra={"essay_id": str(essay_id)})
            self.send(encode_response(request_id, FAILED, f"{type(exc).__name__}: {exc}"))
        else:
            self.send(encode_response(request_id, OK, seq, self.server.host.room(essay_id)))


class Listener:
    """A token-gated listener: `start` listens on `bind` (port chosen by the OS) and each
    connection gets the protocol `connection()` makes (a `GatedProtocol` of this listener)."""

    def __init__(self, token: bytes | None = None) -> None:
        self.token = token or new_token()
        self.connections: set[GatedProtocol] = set()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def connection(self) -> GatedProtocol:
        raise NotImplementedError

    async def start(self, bind: str) -> int:
        self._server = await asyncio.get_running_loop().create_server(self.connection, bind, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening and drop every connection (their peers reconnect)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self.connections):
            connection.close()


class StreamServer(Listener):
    """The host's end. Closing it drops every connection: Gateways resend what was unanswered."""

    def __init__(self, host: EssayHost, token: bytes | None = None) -> None:
        super().__init__(token)
        self.host = host
        self.tasks: set[asyncio.Task[None]] = set()

    def connection(self) -> GatedProtocol:
        return _HostSide(self)


Resolve = Callable[[], Awaitable[tuple[str, int, bytes]]]
"""Asks where a listener is now (usually one Ray call to its actor): address, port and token."""

_Protocol = TypeVar("_Protocol", bound=FramedProtocol)


async def open_stream(resolve: Resolve, factory: Callable[[], _Protocol], *, timeout: float = CONNECT_TIMEOUT
                      ) -> _Protocol:
    """One attempt: resolve, connect within `timeout` s, turn keepalive on and send the token
    (the first frame, so whatever the caller sends next follows it). Raises OSError (or
    TimeoutError) when the listener cannot be reached; retries are the caller's."""
    address, port, token = await resolve()
    loop = asyncio.get_running_loop()
    # `asyncio.timeout`: Python 3.11's `wait_for` can return a connection made as the
    # stream was cancelled (closing), and the stream would go on.
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(factory, address, port)
    if protocol.transport is None:  # closed at once: the listener went away again
        raise ConnectionResetError("closed on connect")
    keep_alive(protocol.transport)
    protocol.send(token)
    return protocol


class _GatewaySide(FramedProtocol):
    flush_delay = GATEWAY_FLUSH_SECONDS

    def __init__(self, stream: HostStream) -> None:
        super().__init__()
        self.stream = stream

    def frame_received(self, frame: bytes) -> None:
        try:
            answer = decode_response(frame)
        except (struct.error, UnicodeDecodeError):
            log.warning("stream: malformed answer; reconnecting")
            self.close()  # connection_lost follows: unanswered updates are sent again
            return
        self.stream._answered(*answer)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.stream._send_held(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.stream._lost(self)


Answer = Callable[[int | None, BaseException | None, Room | None], None]
"""How one update ended, told once: `(seq, None, room)` once the host committed it (room: what
the essay can still take, None when unknown), `(None, error, None)`
when it failed (`UpdateRejected`, `UpdateTooLarge`, `EssayNotFound`, `EssayMoved`, `StreamError`,
or a `RuntimeError` for the host's own failure)."""


class HostStream:
    """A Gateway replica's stream to one essay host: `apply` is `EssayHost.apply_update` there;
    `submit` is the same without a coroutine, its answer told to a callback.

    Connects on first use (`resolve` asks Ray for the host's address and token); unanswered
    updates are sent again on a new connection after a break, for up to `retry_for` seconds.
    """

    def __init__(self, resolve: Resolve, *, retry_for: float = 30.0) -> None:
        self._resolve = resolve
        self.retry_for = retry_for
        self._pending: dict[int, tuple[bytes, Answer, float]] = {}  # frame, its answer, first sent
        self._held: deque[int] = deque()  # sent while the connection was paused, in order (`_send_held`)
        self._next_id = 0
        self._protocol: _GatewaySide | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False
        self.connects = 0
        self.waited_writable = 0  # updates that waited for the connection to drain (tests, stats)

    async def apply(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None = None,
                    origin: str, live: bool = True, node: str | None = None) -> int:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def answer(seq: int | None, error: BaseException | None, _room: Room | None) -> None:
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(cast(int, seq))

        request_id = self.submit(essay_id, update, author_id=author_id, origin=origin, live=live, node=node,
                                 answer=answer)
        try:
            return await fut
        finally:
            self._pending.pop(request_id, None)  # cancelled: not sent again after a break

    def submit(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None = None, origin: str,
               live: bool = True, node: str | None = None, answer: Answer) -> int:
        """Send one update; `answer` is called once, from the connection's receive callback
        when the host answers (or when the stream gives up on it), never from here. Returns the
        request's id. The doc socket's typing takes this path: `apply`'s task, coroutines and
        future per update were a third of what the Gateway's loop spent on typing (py-spy,
        2026-12-06).

        Ordering and backpressure are `apply`'s: frames leave in the order submitted; while
        the connection's buffer is over the high-water mark they are held here (`_held`) and
        go out, still in order, once it drains; with no connection yet the connect sends them."""
        loop = asyncio.get_running_loop()
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        request_id = self._next_id
        if self._closed:
            loop.call_soon(answer, None, StreamError("stream closed"), None)
            return request_id
        frame = encode_request(request_id, essay_id, bytes(update), author_id=author_id, origin=origin,
                               live=live, node=node,
                               trace=tracing.traceparent() if tracing.enabled and tracing.recording() else None)
        self._pending[request_id] = (frame, answer, loop.time())
        protocol = self._protocol
        if protocol is None:
            self._connect_soon()  # the connect sends every pending frame, this one too
        elif protocol.paused or self._held:
            self.waited_writable += 1  # the host reads slower than we write: sent on the drain
            self._held.append(request_id)
        else:
            protocol.send(frame)  # a closing connection drops it; the reconnect sends it again
        return request_id

    def _send_held(self, protocol: _GatewaySide) -> None:
        """The connection drained: what waited goes out in order, until it pauses again."""
        held, pending = self._held, self._pending
        while held and self._protocol is protocol and not protocol.paused:
            entry = pending.get(held.popleft())
            if entry is not None:
                protocol.send(entry[0])

    def _answered(self, request_id: int, status: int, value: int | str, room: Room | None) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        error: BaseException | None = None
        if status == OK:
            self._tell(entry[1], int(value), None, room)
            return
        if status == REJECTED:
            error = UpdateRejected(str(value))
        elif status == TOO_LARGE:
            error = UpdateTooLarge(str(value))
        elif status == NOT_FOUND:
            error = EssayNotFound(str(value))
        elif status == MOVED:
            error = EssayMoved(str(value))
        else:
            error = RuntimeError(f"essay host failed: {value}")
        self._tell(entry[1], None, error)

    @staticmethod
    def _tell(answer: Answer, seq: int | None, error: BaseException | None, room: Room | None = None) -> None:
        try:
            answer(seq, error, room)
        except Exception:  # one caller's failure must not break the stream's receive path
            log.exception("stream: an update's answer failed")

    def _lost(self, protocol: _GatewaySide) -> None:
        if self._protocol is protocol:
            self._protocol = None
            self._held.clear()  # still pending: the reconnect sends them
            if self._pending:
                self._connect_soon()

    def _connect_soon(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        """Resolve and connect (0.05 s doubling to 1 s apart, for `retry_for` seconds:
        `actors.retry`), then send the token and every unanswered update; when no attempt
        succeeds, fail what waits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for

        async def connect() -> _GatewaySide:
            timeout = max(0.1, min(CONNECT_TIMEOUT, deadline - loop.time()))
            return await open_stream(self._resolve, lambda: _GatewaySide(self), timeout=timeout)

        try:
            try:
                protocol: _GatewaySide = await retry.policy(first=0.05, cap=1.0, give_up_after=self.retry_for)(connect)
            except Exception as exc:
                self._fail_all(StreamError(f"essay host unreachable: {exc}"))
                return
            if self._closed:
                protocol.close()
                return
            self.connects += 1
            again = self.connects > 1  # the first connect sends what waited for it, not a resend
            if again:
                _RECONNECTS.inc()
            self._held.clear()  # every pending frame goes now
            for request_id, (frame, answer, first_sent) in list(self._pending.items()):
                if loop.time() - first_sent > self.retry_for:
                    del self._pending[request_id]
                    self._tell(answer, None, StreamError("essay host did not answer in time"))
                else:
                    protocol.send(frame)  # again after a break: a repeated update is a no-op
                    if again:
                        _RESENDS.inc()
            self._protocol = protocol
        finally:
            self._connecting = None

    def _fail_all(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        self._held.clear()
        for _, answer, _ in pending.values():
            self._tell(answer, None, exc)

    def close(self) -> None:
        """Fail what waits and refuse what comes: the Gateway is stopping."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.close()
        self._fail_all(StreamError("stream closed"))
