"""What the two document sockets (`doc_socket`, `class_docs_socket`) share: following one essay's
document (`DocFollower`), this replica's typing not yet applied (`typing_in_flight`), refusing a
reader's write, and closing a binary socket for a protocol error or a refused update."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from actors import tracing
from actors.broadcast import DELETED, MOVED, RESYNC, doc_message, doc_message_trace, observe_fanout, split_doc_message
from actors.host import EssayNotFound, UpdateRejected, UpdateTooLarge
from actors.host_api import HostUnavailable
from serve_app.deps import Context
from serve_app.realtime.connection import SendQueue, background
from serve_app.realtime.protocol import CloseCode, ProtocolError, encode_permission_denied, encode_update

log = logging.getLogger("essaycoach.ws")

EMPTY_UPDATE = b"\x00\x00"
"""A Yjs update with no structs and no deletions."""


def typing_in_flight(app: Any) -> dict[uuid.UUID, dict[int, bytes]]:
    """This replica's typed updates already handed to its sockets whose apply has not returned,
    per essay (frames keyed by identity)."""
    registry = getattr(app.state, "typing_in_flight", None)
    if registry is None:
        registry = app.state.typing_in_flight = {}
    return registry


def hand_over_typed(bus: Any, eid: uuid.UUID, origin: str, update: bytes,
                    in_flight: dict[uuid.UUID, dict[int, bytes]], trace: str | None = None) -> bytes:
    """A writer's typed update to this replica's sockets on the essay, now, and into the in-flight
    registry until its apply returns (`release_in_flight`); returns the frame handed over."""
    frame = encode_update(update)
    bus.deliver_local(f"essay:{eid}:doc", doc_message(origin, frame, trace))
    in_flight.setdefault(eid, {})[id(frame)] = frame
    return frame


def release_in_flight(in_flight: dict[uuid.UUID, dict[int, bytes]], eid: uuid.UUID, frame: bytes) -> None:
    """`frame` (from `hand_over_typed`) is applied, or will never be: out of the registry."""
    pending = in_flight.get(eid)
    if pending is not None:
        pending.pop(id(frame), None)
        if not pending:
            del in_flight[eid]


async def refuse_write(ctx: Context, eid: uuid.UUID, update: bytes, out: SendQueue, prefix: bytes = b"",
                       why: str = "read-only: this essay belongs to a student") -> None:
    """A reader sent an update: fine if it changes nothing (its provider answering our step 1
    with what we have); otherwise a permission-denied message and close 4403."""
    if update == EMPTY_UPDATE or not await ctx.hosts.of(eid).would_change(eid, update):
        return
    out.put(prefix + encode_permission_denied(why))
    raise ProtocolError(CloseCode.FORBIDDEN, "read-only socket: updates are refused")


async def close_for(out: SendQueue, metrics: Any, name: str, exc: ProtocolError | UpdateRejected) -> None:
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

    def __init__(self, ctx: Context, app: Any, eid: uuid.UUID, out: SendQueue, *, origin: str,
                 prefix: bytes = b"") -> None:
        self.ctx, self.app, self.eid, self.out, self.origin, self.prefix = ctx, app, eid, out, origin, prefix
        self.early: list[bytes] = []
        self.attached = False
        self.active = True  # False once the socket stops following: nothing more is sent
        self._unsubscribe: Callable[[], None] | None = None

    async def subscribe(self) -> None:
        self._unsubscribe = await self.ctx.hosts.bus.subscribe(f"essay:{self.eid}:doc", self._on_doc)
        # Typing handed to this replica's sockets before we subscribed may reach the host after
        # our sync, and the host leaves this replica's copies to it: send those too after the
        # sync (duplicates merge).
        self.early = list(typing_in_flight(self.app).get(self.eid, {}).values())

    async def attach(self) -> None:
        """Tell the essay's host (before the first sync) that this replica has a socket on it."""
        self.attached = True
        await self.ctx.hosts.of(self.eid).attach(self.eid, node=self.ctx.hosts.bus.node)

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
            await self.ctx.hosts.of(self.eid).detach(self.eid, node=self.ctx.hosts.bus.node)
        except Exception:
            log.warning("detach failed", extra={"essay_id": str(self.eid)})

    async def _resend_state(self) -> None:
        # The bus lost messages: send the whole document; merging it again is a no-op for the rest.
        full, _ = await self.ctx.hosts.of(self.eid).sync(self.eid, b"\x00")
        if self.active:
            self.out.put(self.prefix + encode_update(full))

    async def _follow_anew(self) -> None:
        # The essay's new host never saw our attach: register there, then the whole document
        # (anything published while it moved may have been missed; merging it again is a no-op).
        try:
            if self.attached:
                await self.ctx.hosts.of(self.eid).attach(self.eid, node=self.ctx.hosts.bus.node)
            await self._resend_state()
        except HostUnavailable:  # the host routing names cannot take it yet: the client reconnects
            self.stop()
            await self.out.close(CloseCode.TRY_AGAIN_LATER, "essay moved to another host; reconnect")
        except EssayNotFound:
            self.stop()  # deleted meanwhile: DELETED ends it
        except Exception:
            log.exception("following a moved essay failed", extra={"essay_id": str(self.eid)})

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
        if message == MOVED:  # its host gave it up (hand-over, lost lease): to the host routing names now
            if self.prefix:
                background(self._follow_anew())
            else:
                self.stop()
                background(self.out.close(CloseCode.TRY_AGAIN_LATER, "essay moved to another host; reconnect"))
            return
        sender, frame = split_doc_message(message)
        if sender != self.origin:  # never echo a client's own update back to it
            observe_fanout(message)
            self.out.put(self.prefix + frame if self.prefix else frame)
            if tracing.enabled:
                traced = doc_message_trace(message)
                if traced is not None:  # from the message's creation (another node's clock) to here
                    tracing.delivered("doc_socket.deliver", *traced, essay_id=self.eid, bytes=len(frame))
