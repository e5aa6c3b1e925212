"""What every socket shares: opening (ticket, admission, access), receiving within limits, the
send queue, and closing.

Opening: `?ticket=` from POST /api/v1/auth/ws-ticket. A bad, missing, expired or spent ticket is
refused before accept (the HTTP handshake answers 403). After accept, a user over
`WS_MAX_SOCKETS_PER_USER` gets close 4429, a caller who may not see the essay or class 4404, a
wrong role 4403 (`open_essay_socket`, `open_class_socket`). The close codes are listed in
`serve_app.realtime.protocol.CloseCode`.

Receiving: `receive_frame` enforces each socket's frame kind, `MAX_WS_MESSAGE_BYTES` (1009) and
its message rate (`TokenBucket`, 1008).

Sending: each connection has a bounded `SendQueue`, so a bus message is handed over without
awaiting a slow peer; a peer that falls `SEND_QUEUE_LIMIT` frames or `WS_OUTBOUND_MAX_BYTES` bytes
behind is closed with 1013 and re-syncs on reconnect.

Closing: a handler may give its queue last words (`SendQueue.before_close`: the doc socket's ack
of every durable update), written just before the close frame whoever closes the socket: its own
task, a fan-out that overflows its queue (1013), a REST action (`control`), the app's shutdown
(1001) or the server's (1012). On our websocket protocol (`serve_app.fastpath.uvicorn_protocol`)
they are written into the transport without waiting, past flow control, by the protocol itself;
on another (the fast path off) only the queue's own closes write them, waiting at most
`LAST_WORDS_SECONDS`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from sqlalchemy.ext.asyncio import AsyncSession

from actors.metrics import metric
from db.models import Essay
from db.repositories import classes, essays, users
from db.repositories.users import TicketHolder
from db.types import utcnow
from serve_app.api.writability import READ_ONLY, WriteWindow, write_window
from serve_app.auth import check_ticket, ticket_hash
from serve_app.deps import Context
from serve_app.fastpath import uvicorn_protocol
from serve_app.realtime import control
from serve_app.realtime.limits import admission_of
from serve_app.realtime.protocol import CloseCode, ProtocolError

SEND_QUEUE_LIMIT = 2000
"""Frames one socket may have waiting before it is closed with 1013."""
SEND_QUEUE_MAX_BYTES = 4 * 1024 * 1024
"""The default byte bound of a send queue (`WS_OUTBOUND_MAX_BYTES` sets the sockets' own)."""
CLOSE_DRAIN_SECONDS = 1.0
"""How long a handler's close waits for its queued frames to go out; a slower peer loses them
(all but the last words)."""
LAST_WORDS_SECONDS = 1.0
"""How long a close waits to write its last words where it cannot write them without waiting."""

_ADMITTED = "essaycoach.admitted"  # scope key: the user id counted against the per-user limit

_background: set[asyncio.Task[Any]] = set()


def background(coro: Any) -> None:
    """Run a coroutine from a sync bus handler, keeping a reference so it is not collected."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


class TokenBucket:
    """Per-connection message rate limit: `rate` per second with bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens, self.at = float(burst), clock()

    def ready(self) -> bool:
        """`take` would succeed now (nothing is taken)."""
        return min(self.burst, self.tokens + (self.clock() - self.at) * self.rate) >= 1

    def full(self) -> bool:
        """Refilled to its burst: as good as a new bucket."""
        return self.tokens + (self.clock() - self.at) * self.rate >= self.burst

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class UserBucket(TokenBucket):
    """One user's writing sockets on this replica share this bucket besides their own
    (`writer_bucket`): a socket's limit alone let a user who opens many sockets multiply it."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(rate, burst, clock)
        self.sockets = 0


class WriterBucket:
    """A writing socket's rate limit: its own bucket and its user's (`UserBucket`); a message
    takes a token from both. Same interface as `TokenBucket`."""

    def __init__(self, own: TokenBucket, user: TokenBucket) -> None:
        self.own, self.user = own, user

    def ready(self) -> bool:
        return self.own.ready() and self.user.ready()

    def take(self) -> bool:
        return self.user.take() and self.own.take()


def writer_bucket(app: Any, user_id: Any, rate: float, burst: int) -> tuple[WriterBucket, Callable[[], None]]:
    """A writing socket's rate limit (`WriterBucket`) and its release, to call when it closes.
    Readers (a teacher's many doc sockets, whose handshakes alone could exceed a shared burst)
    keep a bucket of their own only."""
    users: dict[Any, UserBucket] | None = getattr(app.state, "writer_buckets", None)
    if users is None:
        users = app.state.writer_buckets = {}
    shared = users.get(user_id)
    if shared is None:
        _forget_refilled(users)
        shared = users[user_id] = UserBucket(rate, burst)
    shared.sockets += 1

    def release() -> None:
        shared.sockets -= 1

    return WriterBucket(TokenBucket(rate, burst), shared), release


def _forget_refilled(users: dict[Any, UserBucket]) -> None:
    """Drop the buckets of users with no socket open whose bucket has refilled: forgetting those
    changes nothing. One that is still draining is kept after its last socket closes, or a user
    would get a fresh burst with every reconnect (a ticket every 0.5 s)."""
    idle = [uid for uid, bucket in users.items() if bucket.sockets <= 0 and bucket.full()]
    for uid in idle:
        del users[uid]


class SendQueue:
    """Frames waiting for one socket; `put` never blocks the bus.

    On our websocket protocol (`serve_app.fastpath.uvicorn_protocol`, the Gateway's and the
    tests' servers) a frame with nothing queued before it is written at once, when the socket
    takes it without waiting. Otherwise it waits here for a sender task, which exists only while
    frames are waiting: most sockets are idle most of the time, and a queue plus a parked task per
    socket cost ~4 KiB each. A peer `SEND_QUEUE_LIMIT` frames or `max_bytes` behind (text frames
    counted in characters) is closed with 1013 (it re-syncs on reconnect): a frame count alone let
    one socket that asks for the whole document again and again hold hundreds of MiB.
    Made in the socket's handler (its task tells the connection).
    """

    __slots__ = ("ws", "frames", "stopped", "max_bytes", "queued_bytes", "_sender", "_connection", "_last_words")

    def __init__(self, ws: WebSocket, max_bytes: int = SEND_QUEUE_MAX_BYTES) -> None:
        self.ws = ws
        self.frames: deque[bytes | str] = deque()
        self.max_bytes, self.queued_bytes = max_bytes, 0
        self.stopped = False
        self._sender: asyncio.Task[None] | None = None
        self._connection = uvicorn_protocol.current_connection()
        self._last_words: Callable[[], bytes | None] | None = None

    def before_close(self, last_words: Callable[[], bytes | None]) -> None:
        """Write `last_words()` (if not None) just before the socket's close frame, whoever
        closes it; frames still queued then may be dropped, these are not (module docstring)."""
        if self._connection is not None:
            self._connection.last_words = last_words
        else:
            self._last_words = last_words

    def put(self, frame: bytes | str) -> bool:
        """Queue `frame`; True when it was written at once (not queued, not dropped)."""
        if self.stopped:
            return False
        if self._sender is None and self._connection is not None and self._connection.send_now(frame):
            return True  # nothing was queued (no sender), so order holds
        if len(self.frames) >= SEND_QUEUE_LIMIT or self.queued_bytes + len(frame) > self.max_bytes:
            self.stopped = True
            self.frames.clear()
            self.queued_bytes = 0
            background(self._close_now(CloseCode.TRY_AGAIN_LATER, "too far behind; reconnect"))
            return False
        self.frames.append(frame)
        self.queued_bytes += len(frame)
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send())
        return False

    async def _send(self) -> None:
        try:
            while self.frames and not self.stopped:
                frame = self.frames.popleft()
                self.queued_bytes -= len(frame)
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_text(frame)
        except Exception:  # the peer went away: the receive loop sees the disconnect
            self.stopped = True
        finally:
            self._sender = None

    async def drain_below(self, limit: int) -> None:
        """Wait while more than `limit` bytes are queued: backpressure for a handler about to
        queue a lot on the peer's request (the peer's next requests wait in TCP, not here)."""
        sender = self._sender
        if sender is not None and self.queued_bytes > limit and not self.stopped:
            await asyncio.wait({sender})  # ends when the queue is sent, the peer is gone or we stop

    def stop(self) -> None:
        """The socket is done: drop what is queued and stop sending."""
        self.stopped = True
        self.frames.clear()
        self.queued_bytes = 0
        if self._sender is not None:
            self._sender.cancel()

    async def close(self, code: int, reason: str) -> None:
        """Send what is queued (an error frame explaining the close), then close with `code`."""
        sender = self._sender
        if sender is not None:
            await asyncio.wait({sender}, timeout=CLOSE_DRAIN_SECONDS)  # its outcome is its own; our cancel propagates
        self.stop()
        await self._close_now(code, reason)

    async def _close_now(self, code: int, reason: str) -> None:
        """The last words (where our protocol does not write them itself: bounded), then the close."""
        last_words, self._last_words = self._last_words, None
        if last_words is not None:
            try:
                frame = last_words()
                if frame is not None:
                    await asyncio.wait_for(self.ws.send_bytes(frame), LAST_WORDS_SECONDS)
            except (TimeoutError, RuntimeError, WebSocketDisconnect, OSError):
                pass  # a peer that reads nothing or is gone: the close is still tried
        await close_quietly(self.ws, code, reason)


async def close_quietly(ws: WebSocket, code: int, reason: str) -> None:
    """Close with `code` (reason cut to the protocol's 123 bytes); nothing if the peer is gone."""
    try:
        await ws.close(int(code), reason[:120])
    except (RuntimeError, WebSocketDisconnect):
        pass  # the peer is already gone


async def receive_frame(ws: WebSocket, ctx: Context, bucket: TokenBucket | WriterBucket, kind: str) -> Any:
    """The next frame's payload of `kind` ("bytes" or "text"), None on disconnect; the socket's
    frame kind, size limit and rate limit are enforced here."""
    frame = await ws.receive()
    if frame["type"] == "websocket.disconnect":
        return None
    payload = frame.get(kind)
    if payload is None:
        speaks = "binary" if kind == "bytes" else "JSON text"
        raise ProtocolError(CloseCode.MALFORMED_FRAME, f"this socket speaks {speaks} frames")
    if len(payload) > ctx.settings.max_ws_message_bytes:
        raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "message larger than 1 MiB")
    if not bucket.take():
        metric("essaycoach_rate_limited_total").labels("websocket", "ws_messages").inc()
        raise ProtocolError(CloseCode.POLICY_VIOLATION, "too many messages; slow down")
    return payload


async def _authenticate(ws: WebSocket, ctx: Context, session: AsyncSession) -> TicketHolder | None:
    """Spend the ticket; on failure refuse the handshake (close before accept answers HTTP 403).
    Only a genuine, unexpired ticket not already seen dead here reaches the store
    (`serve_app.realtime.limits`): its user is read, and the ticket is spent by inserting its
    hash (a failed insert writes nothing). A suspended user's ticket is refused the same way,
    after the read alone."""
    ticket = ws.query_params.get("ticket", "")
    now = utcnow()
    claims = check_ticket(ctx.settings, ticket, now=now)
    dead = admission_of(ws.app).dead_tickets
    digest = ticket_hash(ticket) if claims is not None else ""
    user = None
    if claims is not None and digest not in dead:
        user = await users.spend_ticket(session, token_hash=digest, user_id=claims.user_id,
                                        expires_at=claims.expires_at, now=now)
        if user is not None and not user.suspended:
            await session.commit()
        else:  # nothing to keep; the store's connection goes back before the refusal is sent
            await session.rollback()
        dead.add(digest, expires_at=claims.expires_at, now=now)  # spent now, or refused by the store
    if user is not None and user.suspended:
        user = None
    if user is None:
        metric("essaycoach_auth_failures_total").labels("bad_ticket").inc()
        await ws.close(CloseCode.BAD_TICKET, "ticket missing, expired or already used")
    return user


async def _admit(ws: WebSocket, user_id: uuid.UUID) -> bool:
    """Accept, then count the socket against its user's limit (close 4429 beyond it)."""
    await ws.accept()
    if not admission_of(ws.app).enter(user_id):
        await ws.close(CloseCode.TOO_MANY_SOCKETS, "too many open sockets for this user")
        return False
    ws.scope[_ADMITTED] = user_id  # `release` gives it back when the handler ends
    return True


def release(ws: WebSocket) -> None:
    """The socket's handler ended: give its place in the per-user count back."""
    user_id = ws.scope.pop(_ADMITTED, None)
    if user_id is not None:
        admission_of(ws.app).leave(user_id)


def parse_uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


async def _essay_access(session: AsyncSession, user_id: uuid.UUID, essay_id: uuid.UUID
                        ) -> tuple[Essay | None, WriteWindow]:
    """(essay if visible, when this user may write to it). Readers, and an owner past the close of
    their assignment or in an archived class, get a read-only socket."""
    essay = await essays.get_visible(session, essay_id=essay_id, user_id=user_id, ids_only=True)
    if essay is None or essay.owner_id != user_id:
        return essay, READ_ONLY
    return essay, await write_window(session, essay=essay, now=utcnow())


async def open_essay_socket(ws: WebSocket) -> tuple[Context, uuid.UUID, uuid.UUID, WriteWindow] | None:
    """Ticket, accept, then the path's essay: (context, user id, essay id, write window), or None
    once closed. Only ids are kept for the socket's life: the ORM rows behind them held ~1.3 KiB
    per socket. One session serves the whole handshake. At most `WS_HANDSHAKES_AT_ONCE` of a
    replica's sockets are here at once."""
    ctx: Context = ws.app.state.ctx
    async with admission_of(ws.app).handshakes, ctx.sessions() as session:
        return await _open_essay_socket(ws, ctx, session)


async def _open_essay_socket(ws: WebSocket, ctx: Context, session: AsyncSession
                             ) -> tuple[Context, uuid.UUID, uuid.UUID, WriteWindow] | None:
    user = await _authenticate(ws, ctx, session)
    if user is None or not await _admit(ws, user.user_id):
        return None
    eid = parse_uuid(ws.path_params["essay_id"])
    essay, window = await _essay_access(session, user.user_id, eid) if eid else (None, READ_ONLY)
    if essay is None or eid is None:
        await ws.close(CloseCode.UNKNOWN_ESSAY, "no such essay")
        return None
    control.track(ws, user_id=user.user_id, essay_id=eid)
    return ctx, user.user_id, eid, window


async def open_class_socket(ws: WebSocket) -> tuple[Context, uuid.UUID] | None:
    """Ticket, accept, then the class: (context, class id) for its teacher (or an admin), or None
    once closed (4404 for no such class or one the caller is not in, 4403 for its students); one
    session and at most `WS_HANDSHAKES_AT_ONCE` at once, as `open_essay_socket`."""
    ctx: Context = ws.app.state.ctx
    async with admission_of(ws.app).handshakes, ctx.sessions() as session:
        return await _open_class_socket(ws, ctx, session)


async def _open_class_socket(ws: WebSocket, ctx: Context, session: AsyncSession
                             ) -> tuple[Context, uuid.UUID] | None:
    user = await _authenticate(ws, ctx, session)
    if user is None or not await _admit(ws, user.user_id):
        return None
    cid = parse_uuid(ws.path_params["class_id"])
    cls = await classes.get(session, class_id=cid) if cid else None
    teacher = cls is not None and (user.role == "admin" or await classes.teaches(session, cls=cls,
                                                                                  user_id=user.user_id))
    member = cls is not None and (teacher or await classes.is_enrolled(
        session, class_id=cls.id, student_id=user.user_id))
    if cls is None or not member:
        await ws.close(CloseCode.UNKNOWN_ESSAY, "no such class")
        return None
    if not teacher:
        await ws.close(CloseCode.FORBIDDEN, "only the class's teacher may watch it live")
        return None
    control.track(ws, user_id=user.user_id, class_id=cls.id)
    return ctx, cls.id
