"""The three sockets: `/ws/essays/{id}/doc` (y-websocket), `/ws/essays/{id}/events` and
`/ws/classes/{id}/live` (JSON).

Opening: `?ticket=` from POST /api/v1/auth/ws-ticket. A bad, missing, expired or spent ticket is
refused before accept (the HTTP handshake answers 403). After accept, a caller who may not see
the essay or class gets close 4404, a wrong role 4403. The close codes are listed in
`serve_app.realtime.protocol.CloseCode`.

Each connection has a bounded outbound queue (`Outbound`), so a bus message is handed over without
awaiting a slow peer; a peer that falls `OUTBOUND_LIMIT` frames or `WS_OUTBOUND_MAX_BYTES` bytes
behind is closed with 1013 and re-syncs on reconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from pycrdt import create_awareness_message
from sqlalchemy import select

from actors.broadcast import DELETED, RESYNC, doc_message, observe_fanout, split_doc_message
from actors.metrics import metric
from actors.doc import InvalidUpdate, validate_update
from actors.essay import excerpt
from actors.host import EssayNotFound, UpdateRejected, UpdateTooLarge
from db.models import Essay, User
from db.repositories import classes, essays, users
from db.types import utcnow
from serve_app.auth import check_ticket, ticket_hash
from serve_app.deps import Context
from serve_app.api.writability import READ_ONLY, WriteWindow, write_window
from serve_app.fastpath import lean_ws
from serve_app.realtime import control
from serve_app.realtime.awareness import SocketAwareness
from serve_app.realtime.acks import AckQueue
from serve_app.realtime.class_deadlines import ClassDeadlines
from serve_app.realtime.limits import admission_of
from serve_app.realtime.protocol import (
    UNWATCH,
    Awareness,
    CloseCode,
    ProtocolError,
    QueryAwareness,
    SyncStep1,
    SyncUpdate,
    encode_ack,
    encode_document_name,
    encode_permission_denied,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
    is_counted_for_ack,
    parse_client_message,
    split_document_frame,
)

log = logging.getLogger("essaycoach.ws")
router = APIRouter()

OUTBOUND_LIMIT = 2000
OUTBOUND_MAX_BYTES = 4 * 1024 * 1024
EMPTY_UPDATE = b"\x00\x00"


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

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Outbound:
    """Frames waiting for one socket; `put` never blocks the bus.

    On our websocket protocol (`lean_ws`, the Gateway's and the tests' servers) a frame with
    nothing queued before it is written at once, when the socket takes it without waiting.
    Otherwise it waits here for a sender task, which exists only while frames are waiting: most
    sockets are idle most of the time, and a queue plus a parked task per socket cost ~4 KiB
    each. A peer `OUTBOUND_LIMIT` frames or `max_bytes` behind (text frames counted in
    characters) is closed with 1013 (it re-syncs on reconnect): a frame count alone let one
    socket that asks for the whole document again and again hold hundreds of MiB.
    Made in the socket's handler (its task tells the connection).
    """

    __slots__ = ("ws", "frames", "stopped", "max_bytes", "queued_bytes", "_sender", "_connection")

    def __init__(self, ws: WebSocket, max_bytes: int = OUTBOUND_MAX_BYTES) -> None:
        self.ws = ws
        self.frames: deque[bytes | str] = deque()
        self.max_bytes, self.queued_bytes = max_bytes, 0
        self.stopped = False
        self._sender: asyncio.Task[None] | None = None
        self._connection = lean_ws.current()

    def put(self, frame: bytes | str) -> None:
        if self.stopped:
            return
        if self._sender is None and self._connection is not None and self._connection.send_now(frame):
            return  # nothing was queued (no sender), so order holds
        if len(self.frames) >= OUTBOUND_LIMIT or self.queued_bytes + len(frame) > self.max_bytes:
            self.stopped = True
            self.frames.clear()
            self.queued_bytes = 0
            background(_close(self.ws, CloseCode.TRY_AGAIN_LATER, "too far behind; reconnect"))
            return
        self.frames.append(frame)
        self.queued_bytes += len(frame)
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send())

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
            await asyncio.wait({sender}, timeout=1.0)  # its outcome is its own; our cancel propagates
        self.stop()
        await _close(self.ws, code, reason)


async def _authenticate(ws: WebSocket, ctx: Context) -> User | None:
    """Spend the ticket; on failure refuse the handshake (close before accept answers HTTP 403).
    Only a genuine, unexpired ticket not already seen dead here reaches the store
    (`serve_app.realtime.limits`); a failed one is only read there. A suspended user's ticket is
    refused the same way."""
    ticket = ws.query_params.get("ticket", "")
    now = utcnow()
    expires_at = check_ticket(ctx.settings, ticket, now=now)
    dead = admission_of(ws.app).dead_tickets
    digest = ticket_hash(ticket) if expires_at is not None else ""
    user = None
    if expires_at is not None and digest not in dead:
        async with ctx.sessions() as session:
            user_id = await users.spend_ticket(session, token_hash=digest, now=now)
            if user_id is not None:
                await session.commit()
                user = await users.get(session, user_id=user_id)
        dead.add(digest, expires_at=expires_at, now=now)  # spent now, or refused by the store
    if user is not None and user.suspended_at is not None:
        user = None
    if user is None:
        metric("essaycoach_auth_failures_total").labels("bad_ticket").inc()
        await ws.close(CloseCode.BAD_TICKET, "ticket missing, expired or already used")
    return user


async def _admit(ws: WebSocket, user: User) -> bool:
    """Accept, then count the socket against its user's limit (close 4429 beyond it)."""
    await ws.accept()
    if not admission_of(ws.app).enter(user.id):
        await ws.close(CloseCode.TOO_MANY_SOCKETS, "too many open sockets for this user")
        return False
    ws.scope["essaycoach.admitted"] = user.id  # `_admitted` releases it when the handler ends
    return True


def _release(ws: WebSocket) -> None:
    """The socket's handler ended: give its place in the per-user count back."""
    user_id = ws.scope.pop("essaycoach.admitted", None)
    if user_id is not None:
        admission_of(ws.app).leave(user_id)


def _admitted(endpoint: Callable[[WebSocket], Awaitable[None]]) -> Callable[[WebSocket], Awaitable[None]]:
    """`endpoint`, releasing its socket's place in the per-user count however it ends (for the
    router; `serve_socket` does the same in its own frame rather than hold another per socket)."""
    async def run(ws: WebSocket) -> None:
        try:
            await endpoint(ws)
        finally:
            _release(ws)
    run.__name__ = run.__qualname__ = endpoint.__name__
    return run


async def _essay_access(ctx: Context, user: User, essay_id: uuid.UUID) -> tuple[Essay | None, WriteWindow]:
    """(essay if visible, when this user may write to it). Readers, and an owner past the close of
    their assignment or in an archived class, get a read-only socket."""
    async with ctx.sessions() as session:
        essay = await essays.get_visible(session, essay_id=essay_id, user_id=user.id)
        if essay is None or essay.owner_id != user.id:
            return essay, READ_ONLY
        return essay, await write_window(session, essay=essay, now=utcnow())


def _parse_uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


async def _open_essay_socket(ws: WebSocket, essay_id: str) -> tuple[Context, uuid.UUID, uuid.UUID, WriteWindow] | None:
    """Ticket, accept, then the essay: (context, user id, essay id, write window), or None once closed.
    Only ids are kept for the socket's life: the ORM rows behind them held ~1.3 KiB per socket."""
    ctx: Context = ws.app.state.ctx
    user = await _authenticate(ws, ctx)
    if user is None or not await _admit(ws, user):
        return None
    eid = _parse_uuid(essay_id)
    essay, window = await _essay_access(ctx, user, eid) if eid else (None, READ_ONLY)
    if essay is None or eid is None:
        await ws.close(CloseCode.UNKNOWN_ESSAY, "no such essay")
        return None
    control.track(ws, user_id=user.id, essay_id=eid)
    return ctx, user.id, eid, window


async def _refuse_write(ctx: Context, eid: uuid.UUID, update: bytes, out: Outbound, prefix: bytes = b"",
                        why: str = "read-only: this essay belongs to a student") -> None:
    """A reader sent an update: fine if it changes nothing (its provider answering our step 1
    with what we have); otherwise a permission-denied message and close 4403."""
    if update == EMPTY_UPDATE or not await ctx.live.call(eid, "would_change", eid, update):
        return
    out.put(prefix + encode_permission_denied(why))
    raise ProtocolError(CloseCode.FORBIDDEN, "read-only socket: updates are refused")


async def _close_for(out: Outbound, metrics: Any, name: str, exc: ProtocolError | UpdateRejected) -> None:
    """Close a binary socket for a protocol error (its code) or a refused update (4400; over the
    essay's size limits: permission-denied, then 4413), counted."""
    if isinstance(exc, UpdateTooLarge):
        out.put(encode_permission_denied(str(exc)[:200]))
        exc = ProtocolError(CloseCode.TOO_LARGE, f"essay too large: {exc}"[:120])
    elif isinstance(exc, UpdateRejected):
        exc = ProtocolError(CloseCode.MALFORMED_FRAME, f"invalid update: {exc}"[:120])
    metrics.socket_closes.labels(name, str(int(exc.code))).inc()
    await out.close(exc.code, exc.reason)


class DocFollower:
    """One socket following one essay's document: bus subscription, host registration, and the
    frames it must not miss. Frames go to `out` after `prefix` (the class documents socket's
    document name), never the socket's own updates (`origin`). Order: `subscribe`, `attach`,
    sync, `send_early`; `stop` (synchronous) ends the sending, `detach` also tells the host."""

    def __init__(self, ctx: Context, app: Any, eid: uuid.UUID, out: Outbound, *, origin: str,
                 prefix: bytes = b"") -> None:
        self.ctx, self.app, self.eid, self.out, self.origin, self.prefix = ctx, app, eid, out, origin, prefix
        self.early: list[bytes] = []
        self.attached = False
        self.active = True  # False once the socket stops following: nothing more is sent
        self._unsubscribe: Callable[[], None] | None = None

    async def subscribe(self) -> None:
        self._unsubscribe = await self.ctx.live.bus.subscribe(f"essay:{self.eid}:doc", self._on_doc)
        # Typing handed to this replica's sockets before we subscribed may reach the host after
        # our sync, and the host leaves this replica's copies to it: send those too after the
        # sync (duplicates merge).
        self.early = list(_typing_in_flight(self.app).get(self.eid, {}).values())

    async def attach(self) -> None:
        """Tell the essay's host (before the first sync) that this replica has a socket on it."""
        self.attached = True
        await self.ctx.live.call(self.eid, "attach", self.eid, node=self.ctx.live.bus.node)

    def send_early(self) -> None:
        for frame in self.early:
            self.out.put(self.prefix + frame)
        self.early = []

    def stop(self) -> None:
        self.active = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def detach(self) -> None:
        self.stop()
        if not self.attached:
            return
        self.attached = False
        try:
            await self.ctx.live.call(self.eid, "detach", self.eid, node=self.ctx.live.bus.node)
        except Exception:
            log.warning("detach failed", extra={"essay_id": str(self.eid)})

    async def _resend_state(self) -> None:
        # The bus lost messages: send the whole document; merging it again is a no-op for the rest.
        full, _ = await self.ctx.live.call(self.eid, "sync", self.eid, b"\x00")
        if self.active:
            self.out.put(self.prefix + encode_update(full))

    def _on_doc(self, _channel: str, message: bytes) -> None:
        if not self.active:
            return
        if message == RESYNC:
            background(self._resend_state())
            return
        if message == DELETED:  # the essay is being deleted: this document ends
            self.stop()
            if self.prefix:
                self.out.put(self.prefix + encode_permission_denied("essay was deleted"))
            else:
                background(self.out.close(CloseCode.UNKNOWN_ESSAY, "essay was deleted"))
            return
        sender, frame = split_doc_message(message)
        if sender != self.origin:  # never echo a client's own update back to it
            observe_fanout(message)
            self.out.put(self.prefix + frame if self.prefix else frame)


async def doc_socket(ws: WebSocket) -> None:
    essay_id = ws.path_params["essay_id"]
    opened = await _open_essay_socket(ws, essay_id)
    if opened is None:
        return
    ctx, user_id, eid, window = opened
    settings = ctx.settings
    origin = uuid.uuid4().hex
    out = Outbound(ws, ctx.settings.ws_outbound_max_bytes)
    awareness = SocketAwareness(settings.ws_awareness_max_bytes)

    def on_awareness(_channel: str, message: bytes) -> None:
        if message == RESYNC:
            return
        sender, payload = split_doc_message(message)
        if sender != origin:
            observe_fanout(message)
            out.put(create_awareness_message(payload))

    bus = ctx.live.bus
    doc_channel = f"essay:{eid}:doc"
    in_flight = _typing_in_flight(ws.app)
    follow = DocFollower(ctx, ws.app, eid, out, origin=origin)
    await follow.subscribe()
    unsubscribe_awareness = await bus.subscribe(f"essay:{eid}:awareness", on_awareness)
    bucket = TokenBucket(settings.ws_messages_per_second, settings.ws_burst)
    # Updates go to the host without waiting for the previous one's commit; acks follow in order.
    acks = AckQueue(lambda n: out.put(encode_ack(n)))
    metrics = ctx.metrics
    metrics.sockets_open.labels("doc").inc()

    async def apply(update: bytes, typed: bool, received: float, frame: bytes | None) -> None:
        try:
            await ctx.live.call(eid, "apply_update", eid, update, author_id=user_id, origin=origin,
                                live=typed, node=bus.node if typed else None)
        finally:
            if frame is not None:
                pending = in_flight.get(eid)
                if pending is not None:
                    pending.pop(id(frame), None)
                    if not pending:
                        del in_flight[eid]
        metrics.updates.inc()
        metrics.update_bytes.inc(len(update))
        metrics.ack_seconds.observe(time.perf_counter() - received)

    try:
        await follow.attach()
        _, server_sv = await ctx.live.call(eid, "sync", eid, b"\x00")
        out.put(encode_sync_step1(server_sv))
        follow.send_early()
        while True:
            data = await acks.receive(_receive(ws, ctx, bucket, "bytes"))
            if data is None:
                break
            message = parse_client_message(data, max_size=settings.max_ws_message_bytes)
            if isinstance(message, SyncStep1):
                diff, _ = await ctx.live.call(eid, "sync", eid, message.state_vector)
                out.put(encode_sync_step2(diff))
            elif is_counted_for_ack(message):
                update = message.update  # type: ignore[union-attr]
                refusal = window.refusal_at(utcnow())
                if refusal is not None:
                    await _refuse_write(ctx, eid, update, out, why=refusal)
                    continue
                await acks.room()
                received = time.perf_counter()
                typed = isinstance(message, SyncUpdate)
                frame = None
                if typed:
                    # Typing reaches this replica's other sockets on receipt, as in y-websocket:
                    # a CRDT update cannot conflict, and one lost to a crash before its commit
                    # comes back with the writer's reconnect. The ack still waits for the commit,
                    # and the bus copy (other replicas) leaves the host after it. A reconnect's
                    # step 2 (mostly what everyone has) is published by the host only if new.
                    try:
                        validate_update(update)
                    except InvalidUpdate as exc:
                        raise UpdateRejected(str(exc)) from exc
                    frame = encode_update(update)
                    bus.deliver_local(doc_channel, doc_message(origin, frame))
                    in_flight.setdefault(eid, {})[id(frame)] = frame
                acks.add(apply(update, typed, received, frame))
            elif isinstance(message, Awareness):
                relayed = awareness.accept(message)  # only this socket's own client id
                if relayed is not None:
                    await _publish_awareness(bus, eid, origin, relayed)
            elif isinstance(message, QueryAwareness):
                if awareness.payload is not None:
                    out.put(create_awareness_message(awareness.payload))
    except (ProtocolError, UpdateRejected) as exc:
        await _close_for(out, metrics, "doc", exc)
    except EssayNotFound:
        await out.close(CloseCode.UNKNOWN_ESSAY, "essay was deleted")
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("doc socket failed", extra={"essay_id": str(eid), "user_id": str(user_id)})
        await _close(ws, CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        metrics.sockets_open.labels("doc").dec()
        unsubscribe_awareness()
        out.stop()
        gone = awareness.leave()
        if gone is not None:  # everyone else drops this socket's cursor
            await _publish_awareness(bus, eid, origin, gone)
        await follow.detach()


async def _publish_awareness(bus: Any, eid: uuid.UUID, origin: str, payload: bytes) -> None:
    """To this replica's other sockets on the essay now, and to the other replicas over the bus."""
    presence = doc_message(origin, payload)
    bus.deliver_local(f"essay:{eid}:awareness", presence)
    await bus.publish(f"essay:{eid}:awareness", presence, skip_node=bus.node)


def _typing_in_flight(app: Any) -> dict[uuid.UUID, dict[int, bytes]]:
    """This replica's typed updates already handed to its sockets whose apply has not returned,
    per essay (frames keyed by identity)."""
    registry = getattr(app.state, "typing_in_flight", None)
    if registry is None:
        registry = app.state.typing_in_flight = {}
    return registry


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    try:
        await ws.close(int(code), reason[:120])
    except (RuntimeError, WebSocketDisconnect):
        pass  # the peer is already gone


async def _receive(ws: WebSocket, ctx: Context, bucket: TokenBucket, kind: str) -> Any:
    """The next frame's payload of `kind` ("bytes" or "text"), None on disconnect; the socket's
    frame kind, size limit and rate limit are enforced here."""
    frame = await ws.receive()
    if frame["type"] == "websocket.disconnect":
        return None
    payload = frame.get(kind)
    if payload is None:
        raise ProtocolError(CloseCode.MALFORMED_FRAME, f"this socket speaks {'binary' if kind == 'bytes' else 'JSON text'} frames")
    if len(payload) > ctx.settings.max_ws_message_bytes:
        raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, "message larger than 1 MiB")
    if not bucket.take():
        metric("essaycoach_rate_limited_total").labels("websocket", "ws_messages").inc()
        raise ProtocolError(CloseCode.POLICY_VIOLATION, "too many messages; slow down")
    return payload


async def _json_loop(ws: WebSocket, ctx: Context, out: Outbound,
                     on_message: Callable[[dict[str, Any]], Any]) -> None:
    """Receive JSON text frames until disconnect, enforcing size, rate and shape."""
    settings = ctx.settings
    bucket = TokenBucket(settings.ws_messages_per_second, settings.ws_burst)
    while True:
        raw = await _receive(ws, ctx, bucket, "text")
        if raw is None:
            return
        try:
            message = json.loads(raw)
        except ValueError:
            out.put(json.dumps({"type": "error", "code": "bad_json", "detail": "not valid JSON"}))
            continue
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            out.put(json.dumps({"type": "error", "code": "bad_message", "detail": "expected {type, ...}"}))
            continue
        await on_message(message)


async def _serve_json(
    ws: WebSocket, ctx: Context, out: Outbound, *, channel: str, on_bus: Callable[[str, bytes], None],
    start: Callable[[], Awaitable[None]], on_message: Callable[[dict[str, Any]], Awaitable[None]], name: str,
    context: dict[str, str], watch: Callable[[int], Awaitable[Any]],
) -> None:
    """The JSON sockets' life: subscribe, tell the hosts (`watch(+1)`: they publish the channel
    only while someone watches), send the opening state, receive until closed, clean up."""
    unsubscribe = await ctx.live.bus.subscribe(channel, on_bus)
    ctx.metrics.sockets_open.labels(name).inc()
    watching = False
    try:
        await watch(1)
        watching = True
        await start()
        await _json_loop(ws, ctx, out, on_message)
    except ProtocolError as exc:
        ctx.metrics.socket_closes.labels(name, str(int(exc.code))).inc()
        await out.close(exc.code, exc.reason)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("%s socket failed", name, extra=context)
        await _close(ws, CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        ctx.metrics.sockets_open.labels(name).dec()
        unsubscribe()
        out.stop()
        if watching:
            try:
                await watch(-1)
            except Exception:
                log.warning("unwatch failed", extra=context)


async def events_socket(ws: WebSocket) -> None:
    essay_id = ws.path_params["essay_id"]
    opened = await _open_essay_socket(ws, essay_id)
    if opened is None:
        return
    ctx, _, eid, _ = opened
    out = Outbound(ws, ctx.settings.ws_outbound_max_bytes)

    async def send_resync() -> None:
        state = await ctx.live.call(eid, "event_state", eid)
        out.put(json.dumps({"type": "resync", "essay_id": str(eid), **state}))

    def on_event(_channel: str, message: bytes) -> None:
        if message == RESYNC:
            background(send_resync())
        elif message == DELETED:
            background(out.close(CloseCode.UNKNOWN_ESSAY, "essay was deleted"))
        else:
            out.put(message.decode())


    async def on_message(message: dict[str, Any]) -> None:
        if message["type"] != "resume":
            out.put(json.dumps({"type": "error", "code": "unknown_type",
                                "detail": f"unknown message type {message['type'][:40]!r}"}))
            return
        last_seq = message.get("last_seq")
        if not isinstance(last_seq, int) or last_seq < 0:
            out.put(json.dumps({"type": "error", "code": "bad_message", "detail": "last_seq must be an int >= 0"}))
            return
        epoch = message.get("epoch") if isinstance(message.get("epoch"), str) else None
        missed = await ctx.live.call(eid, "events_after", eid, last_seq, epoch)
        if missed is None:
            await send_resync()
        else:
            for event in missed:
                out.put(event)

    async def start() -> None:
        state = await ctx.live.call(eid, "event_state", eid)
        out.put(json.dumps({"type": "presence", "essay_id": str(eid), **state}))

    await _serve_json(ws, ctx, out, channel=f"essay:{eid}", on_bus=on_event, start=start, on_message=on_message,
                      name="events", context={"essay_id": str(eid)},
                      watch=lambda delta: ctx.live.call(eid, "watch", f"essay:{eid}", delta))


async def _open_class_socket(ws: WebSocket) -> tuple[Context, uuid.UUID] | None:
    """Ticket, accept, then the class: (context, class id) for its teacher (or an admin), or None
    once closed (4404 for no such class or one the caller is not in, 4403 for its students)."""
    ctx: Context = ws.app.state.ctx
    user = await _authenticate(ws, ctx)
    if user is None or not await _admit(ws, user):
        return None
    cid = _parse_uuid(ws.path_params["class_id"])
    async with ctx.sessions() as session:
        cls = await classes.get(session, class_id=cid) if cid else None
        teacher = cls is not None and (user.role == "admin" or await classes.teaches(session, cls=cls,
                                                                                      user_id=user.id))
        member = cls is not None and (teacher or await classes.is_enrolled(
            session, class_id=cls.id, student_id=user.id))
        if cls is None or not member:
            await ws.close(CloseCode.UNKNOWN_ESSAY, "no such class")
            return None
        if not teacher:
            await ws.close(CloseCode.FORBIDDEN, "only the class's teacher may watch it live")
            return None
        control.track(ws, user_id=user.id, class_id=cls.id)
        return ctx, cls.id


async def class_live_socket(ws: WebSocket) -> None:
    opened = await _open_class_socket(ws)
    if opened is None:
        return
    ctx, class_id_ = opened
    out = Outbound(ws, ctx.settings.ws_outbound_max_bytes)
    deadlines = ClassDeadlines(ctx, class_id_)

    async def send_rows() -> None:
        rows = await initial_rows(ctx, class_id_)
        await deadlines.load()
        for row in rows:
            out.put(json.dumps(deadlines.annotate(row), default=str))

    async def forward(message: bytes) -> None:
        # One task per row, in arrival order; a row waits only while its essay's deadline loads.
        out.put(await deadlines.annotate_message(message))

    def on_row(_channel: str, message: bytes) -> None:
        if message == RESYNC:
            out.put(json.dumps({"type": "resync", "class_id": str(class_id_)}))
            background(send_rows())
        else:
            background(forward(message))

    async def on_message(message: dict[str, Any]) -> None:
        out.put(json.dumps({"type": "error", "code": "unknown_type",
                            "detail": "this socket only sends; nothing to receive"}))

    await _serve_json(ws, ctx, out, channel=f"class:{class_id_}", on_bus=on_row, start=send_rows,
                      on_message=on_message, name="class", context={"class_id": str(class_id_)},
                      watch=lambda delta: ctx.live.call_all("watch", f"class:{class_id_}", delta))


MAX_DOCS_PER_SOCKET = 500
"""Documents one class documents socket may follow at once (a class roster fits)."""


async def class_docs_socket(ws: WebSocket) -> None:
    """`/ws/classes/{id}/docs`: a teacher follows many of the class's essays, read-only, over one
    socket (Hocuspocus-style multiplexing; `serve_app.realtime.protocol` has the framing).

    A dashboard showing every student's text would otherwise hold one socket per essay (~38
    KiB of server memory each, ops/loadtest/RESULTS.md); here a followed document costs its
    bus subscription and a few hundred bytes. Per document: `[id][sync step 1]` starts following
    (answered with step 2, the server's step 1, then updates as the student types);
    `[id][101]` stops. An essay outside the class, an unknown one, or more than
    `MAX_DOCS_PER_SOCKET` get `[id][auth permission-denied]` and the socket stays open. An update
    that would change a document closes the socket with 4403; awareness is not carried.
    """
    opened = await _open_class_socket(ws)
    if opened is None:
        return
    ctx, class_id = opened
    settings, metrics = ctx.settings, ctx.metrics
    origin = uuid.uuid4().hex
    out = Outbound(ws, ctx.settings.ws_outbound_max_bytes)
    followed: dict[uuid.UUID, DocFollower] = {}
    bucket = TokenBucket(settings.ws_messages_per_second, settings.ws_burst)

    async def follow(eid: uuid.UUID, prefix: bytes) -> bool:
        if len(followed) >= MAX_DOCS_PER_SOCKET:
            out.put(prefix + encode_permission_denied(f"at most {MAX_DOCS_PER_SOCKET} documents per socket"))
            return False
        async with ctx.sessions() as session:
            essay = await session.get(Essay, eid)
        if essay is None or essay.class_id != class_id:
            out.put(prefix + encode_permission_denied("no such essay in this class"))
            return False
        follower = followed[eid] = DocFollower(ctx, ws.app, eid, out, origin=origin, prefix=prefix)
        await follower.subscribe()
        try:
            await follower.attach()
        except EssayNotFound:  # deleted meanwhile
            await unfollow(eid)
            out.put(prefix + encode_permission_denied("no such essay in this class"))
            return False
        return True

    async def unfollow(eid: uuid.UUID) -> None:
        await followed.pop(eid).detach()

    metrics.sockets_open.labels("class_docs").inc()
    try:
        while True:
            data = await _receive(ws, ctx, bucket, "bytes")
            if data is None:
                break
            name, inner = split_document_frame(data, max_size=settings.max_ws_message_bytes)
            if len(name) > 64:
                raise ProtocolError(CloseCode.MALFORMED_FRAME, "a document name is an essay id")
            eid = _parse_uuid(name)
            if eid is not None and str(eid) != name:
                eid = None  # one spelling per essay (the canonical id), so one prefix per document
            prefix = encode_document_name(name)
            if inner == UNWATCH:
                if eid in followed:
                    await unfollow(eid)
                continue
            message = parse_client_message(inner, max_size=settings.max_ws_message_bytes)
            if eid is None:
                out.put(prefix + encode_permission_denied("no such essay in this class"))
                continue
            try:
                if isinstance(message, SyncStep1):
                    # A dashboard follows a whole class at once: answer at the pace the teacher's
                    # link takes the documents, rather than queue them up to the 1013 cap.
                    await out.drain_below(out.max_bytes // 2)
                    if eid not in followed and not await follow(eid, prefix):
                        continue
                    diff, server_sv = await ctx.live.call(eid, "sync", eid, message.state_vector)
                    out.put(prefix + encode_sync_step2(diff))
                    out.put(prefix + encode_sync_step1(server_sv))
                    followed[eid].send_early()
                elif is_counted_for_ack(message) and eid in followed:
                    await _refuse_write(ctx, eid, message.update, out, prefix)  # type: ignore[union-attr]
                # Anything else about a document (awareness, an update for one not followed) is ignored.
            except EssayNotFound:  # deleted while followed: this document ends, the socket goes on
                if eid in followed:
                    await unfollow(eid)
                out.put(prefix + encode_permission_denied("essay was deleted"))
    except (ProtocolError, UpdateRejected) as exc:
        await _close_for(out, metrics, "class_docs", exc)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("class docs socket failed", extra={"class_id": str(class_id)})
        await _close(ws, CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        metrics.sockets_open.labels("class_docs").dec()
        out.stop()
        followers = list(followed.values())
        followed.clear()
        for follower in followers:
            follower.stop()
        # Detach them all at once, and to the end even if this task is cancelled: a missed detach
        # would keep its essay loaded and published for good.
        await asyncio.shield(asyncio.gather(*(follower.detach() for follower in followers)))


async def initial_rows(ctx: Context, class_id: uuid.UUID) -> list[dict[str, Any]]:
    """One row per student: their most recently active essay, live state where it is loaded."""
    async with ctx.sessions() as session:
        students = await classes.students_of(session, class_id=class_id)
        stored = list((await session.scalars(select(Essay).where(Essay.class_id == class_id)
                                              .order_by(Essay.updated_at))).all())
    live = {row["essay_id"]: row for rows in await ctx.live.call_all("student_rows", class_id) for row in rows}
    latest: dict[uuid.UUID, Essay] = {e.owner_id: e for e in stored}  # ordered by updated_at
    rows = []
    for student in students:
        essay = latest.get(student.id)
        if essay is not None and str(essay.id) in live:
            row = dict(live[str(essay.id)])
        elif essay is not None:
            row = {"type": "student", "student_id": str(student.id), "essay_id": str(essay.id),
                   "title": essay.title, "word_count": essay.word_count,
                   "last_active_at": essay.updated_at.isoformat(), "excerpt": excerpt(essay.text),
                   "feedback_counts": {}, "flags": [], "typing_seconds": essay.typing_seconds}
        else:
            row = {"type": "student", "student_id": str(student.id), "essay_id": None, "title": None,
                   "word_count": 0, "last_active_at": None, "excerpt": "", "feedback_counts": {},
                   "flags": [], "typing_seconds": 0}
        row["name"] = student.name
        rows.append(row)
    return rows


# Plain Starlette routes, not FastAPI's: a socket lives for hours, and FastAPI's per-connection
# dependency machinery kept ~7 KiB per socket alive (tracemalloc) for nothing these handlers use.
SOCKET_ENDPOINTS = {
    "/ws/essays/{essay_id}/doc": doc_socket,
    "/ws/essays/{essay_id}/events": events_socket,
    "/ws/classes/{class_id}/live": class_live_socket,
    "/ws/classes/{class_id}/docs": class_docs_socket,
}
for _path, _endpoint in SOCKET_ENDPOINTS.items():
    router.add_websocket_route(_path, _admitted(_endpoint))
_ROUTES = [WebSocketRoute(path, endpoint) for path, endpoint in SOCKET_ENDPOINTS.items()]


async def serve_socket(scope: Scope, receive: Receive, send: Send) -> bool:
    """Run one of our sockets straight from the ASGI call, or return False if the path is not one.

    `serve_app.app` calls this before its middleware stack: the HTTP middlewares (request ids,
    body limits, exception handlers, the exit stack) do nothing for a socket but each kept its
    frame alive for the socket's life, ~5 KiB per open socket (tracemalloc in a replica). Errors
    are handled inside each handler (close 1011 with a log line); an unknown path falls through
    to the app, which refuses the handshake.
    """
    for route in _ROUTES:
        match, child = route.matches(scope)
        if match is Match.FULL:
            scope["path_params"] = child["path_params"]
            ws = WebSocket(scope, receive, send)
            try:
                await child["endpoint"](ws)
            finally:
                _release(ws)
            return True
    return False
