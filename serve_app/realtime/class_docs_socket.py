"""`WS /ws/classes/{id}/docs`: a teacher follows many of the class's essays, read-only, over one
socket (Hocuspocus-style multiplexing; `serve_app.realtime.protocol` has the framing).

A dashboard showing every student's text would otherwise hold one socket per essay (~38 KiB of
server memory each, ops/loadtest/RESULTS.md); here a followed document costs its bus subscription
and a few hundred bytes. Per document: `[id][sync step 1]` starts following (answered with step 2,
the server's step 1, then updates as the student types); `[id][101]` stops. An essay outside the
class, an unknown one, or more than `MAX_DOCS_PER_SOCKET` get `[id][auth permission-denied]` and
the socket stays open. An update that would change a document closes the socket with 4403;
awareness is not carried.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from fastapi import WebSocket, WebSocketDisconnect

from actors.host import EssayNotFound, UpdateRejected
from actors.host_api import HostUnavailable
from db.repositories import essays
from serve_app.realtime.connection import (
    SendQueue,
    TokenBucket,
    close_quietly,
    open_class_socket,
    parse_uuid,
    receive_frame,
)
from serve_app.realtime.documents import DocFollower, close_for, refuse_write
from serve_app.realtime.protocol import (
    UNWATCH,
    CloseCode,
    ProtocolError,
    SyncStep1,
    encode_document_name,
    encode_permission_denied,
    encode_sync_step1,
    encode_sync_step2,
    is_counted_for_ack,
    parse_client_message,
    split_document_frame,
)

log = logging.getLogger("essaycoach.ws")

MAX_DOCS_PER_SOCKET = 500
"""Documents one class documents socket may follow at once (a class roster fits)."""


async def class_docs_socket(ws: WebSocket) -> None:
    opened = await open_class_socket(ws)
    if opened is None:
        return
    ctx, class_id = opened
    settings, metrics = ctx.settings, ctx.metrics
    origin = uuid.uuid4().hex
    out = SendQueue(ws, ctx.settings.ws_outbound_max_bytes)
    followed: dict[uuid.UUID, DocFollower] = {}
    bucket = TokenBucket(settings.ws_messages_per_second, settings.ws_burst)

    async def follow(eid: uuid.UUID, prefix: bytes) -> bool:
        if len(followed) >= MAX_DOCS_PER_SOCKET:
            out.put(prefix + encode_permission_denied(f"at most {MAX_DOCS_PER_SOCKET} documents per socket"))
            return False
        async with ctx.sessions() as session:
            essay = await essays.get(session, essay_id=eid)
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
            data = await receive_frame(ws, ctx, bucket, "bytes")
            if data is None:
                break
            name, inner = split_document_frame(data, max_size=settings.max_ws_message_bytes)
            if len(name) > 64:
                raise ProtocolError(CloseCode.MALFORMED_FRAME, "a document name is an essay id")
            eid = parse_uuid(name)
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
                    diff, server_sv = await ctx.hosts.of(eid).sync(eid, message.state_vector)
                    out.put(prefix + encode_sync_step2(diff))
                    out.put(prefix + encode_sync_step1(server_sv))
                    followed[eid].send_early()
                elif is_counted_for_ack(message) and eid in followed:
                    await refuse_write(ctx, eid, message.update, out, prefix)  # type: ignore[union-attr]
                # Anything else about a document (awareness, an update for one not followed) is ignored.
            except EssayNotFound:  # deleted while followed: this document ends, the socket goes on
                if eid in followed:
                    await unfollow(eid)
                out.put(prefix + encode_permission_denied("essay was deleted"))
    except (ProtocolError, UpdateRejected) as exc:
        await close_for(out, metrics, "class_docs", exc)
    except WebSocketDisconnect:
        pass
    except HostUnavailable:
        await close_quietly(ws, CloseCode.TRY_AGAIN_LATER, "essay host unavailable; reconnect")
    except Exception:
        log.exception("class docs socket failed", extra={"class_id": str(class_id)})
        await close_quietly(ws, CloseCode.INTERNAL_ERROR, "internal error")
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
