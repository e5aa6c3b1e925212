"""`WS /ws/essays/{id}/doc`: one essay's Yjs document over the y-websocket protocol
(`serve_app.realtime.protocol` has the framing; DESIGN.md the contract).

The owner (and co-authors) write; teachers of the class read, and their updates are refused
unless they change nothing. Each update goes to the essay's host without waiting for the
previous one's commit; acks (`[100][n]`) follow in order once committed (`AckQueue`). A typed
update reaches this replica's other sockets from the connection's receive callback when the
socket is idle (`ReceiptFanout`: the task never sees it), else from here, and its host at the end
of that loop turn. Awareness
(cursors) is relayed for this socket's own client id only (`SocketAwareness`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from pycrdt import create_awareness_message

from actors import tracing
from actors.broadcast import RESYNC, doc_message, observe_fanout, split_doc_message
from actors.doc import InvalidUpdate, validate_update
from actors.host import EssayNotFound, UpdateRejected
from actors.host_api import HostUnavailable
from actors.host_stream import Room
from actors.yupdate import TextUpdate
from db.types import utcnow
from serve_app.realtime.acks import AckBatch, AckQueue
from serve_app.realtime.awareness import SocketAwareness
from serve_app.realtime.connection import (
    SendQueue,
    TokenBucket,
    WriterBucket,
    close_quietly,
    open_essay_socket,
    receive_frame,
    writer_bucket,
)
from serve_app.realtime.documents import (
    DocFollower,
    close_for,
    hand_over_typed,
    refuse_write,
    release_in_flight,
    typing_in_flight,
)
from serve_app.realtime.protocol import (
    Awareness,
    CloseCode,
    ProtocolError,
    QueryAwareness,
    SyncStep1,
    SyncUpdate,
    encode_ack,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
    is_counted_for_ack,
    parse_client_message,
)
from serve_app.realtime.receipt import ReceiptFanout
from serve_app.realtime.room import essay_rooms, join, leave

log = logging.getLogger("essaycoach.ws")


async def doc_socket(ws: WebSocket) -> None:
    opened = await open_essay_socket(ws)
    if opened is None:
        return
    ctx, user_id, eid, window = opened
    settings = ctx.settings
    origin = uuid.uuid4().hex
    out = SendQueue(ws, ctx.settings.ws_outbound_max_bytes)
    awareness = SocketAwareness(settings.ws_awareness_max_bytes)

    def on_awareness(_channel: str, message: bytes) -> None:
        if message == RESYNC:
            return
        sender, payload = split_doc_message(message)
        if sender != origin:
            observe_fanout(message)
            out.put(create_awareness_message(payload))

    bus = ctx.hosts.bus
    in_flight = typing_in_flight(ws.app)
    follow = DocFollower(ctx, ws.app, eid, out, origin=origin)
    await follow.subscribe()
    unsubscribe_awareness = await bus.subscribe(f"essay:{eid}:awareness", on_awareness)
    release_bucket: Callable[[], None] = lambda: None  # noqa: E731
    bucket: TokenBucket | WriterBucket
    if window.refusal is None:  # a writer: the rate limit holds for the user's writing sockets together too
        bucket, release_bucket = writer_bucket(ws.app, user_id, settings.ws_messages_per_second, settings.ws_burst)
    else:
        bucket = TokenBucket(settings.ws_messages_per_second, settings.ws_burst)
    # Updates go to the host without waiting for the previous one's commit; acks follow in order,
    # those of one loop turn written at its end (one frame per socket, metrics in one record).
    metrics = ctx.metrics
    batch = ack_batch(ws.app, metrics)
    wired = 0  # the n of the last ack written at once; a later one may still be queued, or due

    def write_ack(n: int) -> None:
        nonlocal wired
        if out.put(encode_ack(n)):
            wired = n

    acks = AckQueue(write_ack, batch=batch)

    def last_ack() -> bytes | None:
        """Before any close frame (`SendQueue.before_close`): the ack of every update durable so
        far, unless it surely went out already. One that was queued and sent is repeated: a
        client keeps the largest n."""
        return encode_ack(acks.acked) if acks.acked > wired else None

    out.before_close(last_ack)
    metrics.sockets_open.labels("doc").inc()
    # A writer's typing reaches this replica's other sockets, and its host, from the receive callback.
    receipt = ReceiptFanout(window=window, bucket=bucket, acks=acks, max_bytes=settings.max_ws_message_bytes,
                            send=lambda update, received, checked: to_host(update, received, checked))
    unhook: Callable[[], None] = lambda: None  # noqa: E731
    rooms = essay_rooms(ws.app)
    room = join(rooms, eid) if window.refusal is None else None  # a writer's: what the essay can still take

    hosts = ctx.hosts

    def hand_over(update: bytes, checked: TextUpdate | None, trace: str | None = None) -> bytes | None:
        """A typed update (`checked`) to this replica's watching sockets now, if the essay surely
        has room for it (`serve_app.realtime.room`); returns the frame handed over, or None when
        the watchers get it after its ack (`deliver_stored`) or never (not typed)."""
        if checked is None or room is None or not room.fits(checked.inserted_chars, len(update)):
            if checked is not None and room is not None:
                room.deferred += 1
            return None
        room.handed_over(checked.inserted_chars, len(update))
        return hand_over_typed(bus, eid, origin, update, in_flight, trace)

    def settled(update: bytes, checked: TextUpdate | None, frame: bytes | None, error: BaseException | None,
                told: Room | None) -> None:
        """A typed update's answer: its room released; if it waited, the watchers get it now that
        it is stored."""
        if frame is not None:
            release_in_flight(in_flight, eid, frame)
        if room is None:
            return
        if checked is None:  # a sync step 2: counted nowhere, but its ack tells the room too
            room.tell(told)
            return
        room.answered(checked.inserted_chars, len(update), told, handed_over=frame is not None)
        if frame is None and error is None:
            bus.deliver_local(f"essay:{eid}:doc", doc_message(origin, encode_update(update)))

    def to_host(update: bytes, received: float, checked: TextUpdate | None) -> None:
        """The update to its host (typed when `checked`: handed to the watchers first if it fits);
        acked (in order) from the host's answer, with no task. The watchers get it now; the host
        at the end of this loop turn (`submit`)."""
        sent = acks.sent()
        frame = hand_over(update, checked)

        def answer(_seq: int | None, error: BaseException | None, told: Room | None) -> None:
            try:
                settled(update, checked, frame, error, told)
                if error is None:
                    batch.count(len(update), time.perf_counter() - received)
            finally:  # settled, whatever the bookkeeping did: later acks wait on this one
                sent.settle(error)

        def submit() -> None:
            typed = checked is not None
            try:
                hosts.submit_update(eid, update, author_id=user_id, origin=origin, live=typed,
                                    node=bus.node if typed else None, answer=answer)
            except Exception as exc:  # told like the host's refusal: the socket closes
                answer(None, exc, None)

        # After the turn's other incoming frames: a frame read in the same turn as others is
        # handed to its watchers after their hand-overs only, not after their submissions too.
        # The host's stream waits `GATEWAY_FLUSH_SECONDS` for more anyway; call_soon keeps the order.
        asyncio.get_running_loop().call_soon(submit)

    async def traced(update: bytes, received: float, checked: TextUpdate | None, span: Any) -> None:
        """`to_host` with tracing on: the update's span ends with the host's answer."""
        frame = hand_over(update, checked, tracing.traceparent(span))
        typed = checked is not None
        error: BaseException | None = None
        try:
            await tracing.ending(span, hosts.of(eid).apply_update(eid, update, author_id=user_id, origin=origin,
                                                                   live=typed, node=bus.node if typed else None))
        except BaseException as exc:
            error = exc
            raise
        finally:
            settled(update, checked, frame, error, hosts.room(eid) if error is None else None)
        metrics.updates.inc()
        metrics.update_bytes.inc(len(update))
        metrics.ack_seconds.observe(time.perf_counter() - received)

    try:
        await follow.attach()
        _, server_sv = await ctx.hosts.of(eid).sync(eid, b"\x00")
        out.put(encode_sync_step1(server_sv))
        follow.send_early()
        if window.refusal is None and not tracing.enabled:
            unhook = receipt.install()
        while True:
            data = await acks.receive(receive_frame(ws, ctx, bucket, "bytes"))
            if data is None:
                break
            message = parse_client_message(data, max_size=settings.max_ws_message_bytes)
            if isinstance(message, SyncStep1):
                diff, _ = await ctx.hosts.of(eid).sync(eid, message.state_vector)
                out.put(encode_sync_step2(diff))
            elif is_counted_for_ack(message):
                update = message.update  # type: ignore[union-attr]
                refusal = window.refusal_at(utcnow())
                if refusal is not None:
                    await refuse_write(ctx, eid, update, out, why=refusal)
                    continue
                received = receipt.received_at()  # as on the receipt path: the frame's arrival
                await acks.room()
                checked = None
                if isinstance(message, SyncUpdate):
                    try:
                        checked = validate_update(update)
                    except InvalidUpdate as exc:
                        raise UpdateRejected(str(exc)) from exc
                # Tracing on: one trace per sampled update, from here to its ack and every socket it reaches.
                span = tracing.start_sampled("doc_socket.receive", kind="SERVER", essay_id=eid,
                                             typed=checked is not None) if tracing.enabled else None
                # Typing reaches this replica's other sockets on receipt, as in y-websocket, while
                # the essay surely has room for it (`hand_over`): a CRDT update cannot conflict,
                # and one lost to a crash before its commit comes back with the writer's
                # reconnect. The ack still waits for the commit, and the bus copy (other replicas)
                # leaves the host after it. A reconnect's step 2 (mostly what everyone has) is
                # published by the host only if new.
                if span is None:
                    to_host(update, received, checked)
                else:
                    acks.add(traced(update, received, checked, span))
            elif isinstance(message, Awareness):
                relayed = awareness.accept(message)  # only this socket's own client id
                if relayed is not None:
                    await _publish_awareness(bus, eid, origin, relayed)
            elif isinstance(message, QueryAwareness):
                if awareness.payload is not None:
                    out.put(create_awareness_message(awareness.payload))
    except (ProtocolError, UpdateRejected) as exc:
        acks.write_due()  # updates durable this loop turn are acked before the close
        await close_for(out, metrics, "doc", exc)
    except EssayNotFound:
        acks.write_due()
        await out.close(CloseCode.UNKNOWN_ESSAY, "essay was deleted")
    except WebSocketDisconnect:
        pass
    except HostUnavailable:
        acks.write_due()  # queued behind what the socket has not sent yet: `out.close` sends it first
        await out.close(CloseCode.TRY_AGAIN_LATER, "essay host unavailable; reconnect")
    except Exception:
        log.exception("doc socket failed", extra={"essay_id": str(eid), "user_id": str(user_id)})
        try:  # the failure may be the socket's own: then only the close is tried
            acks.write_due()
        except Exception:
            await close_quietly(ws, CloseCode.INTERNAL_ERROR, "internal error")
        else:
            await out.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        unhook()
        release_bucket()
        if room is not None:
            leave(rooms, eid, room)
        metrics.sockets_open.labels("doc").dec()
        unsubscribe_awareness()
        out.stop()
        gone = awareness.leave()
        if gone is not None:  # everyone else drops this socket's cursor
            await _publish_awareness(bus, eid, origin, gone)
        await follow.detach()


def ack_batch(app: Any, metrics: Any) -> AckBatch:
    """This replica's `AckBatch` for its doc sockets (made on first use, on the app's loop)."""
    batch: AckBatch | None = getattr(app.state, "ack_batch", None)
    if batch is None:
        def record(count: int, size: int, seconds: list[float]) -> None:
            metrics.updates.inc(count)
            metrics.update_bytes.inc(size)
            for value in seconds:
                metrics.ack_seconds.observe(value)

        batch = app.state.ack_batch = AckBatch(record)
    return batch


async def _publish_awareness(bus: Any, eid: uuid.UUID, origin: str, payload: bytes) -> None:
    """To this replica's other sockets on the essay now, and to the other replicas over the bus."""
    presence = doc_message(origin, payload)
    bus.deliver_local(f"essay:{eid}:awareness", presence)
    await bus.publish(f"essay:{eid}:awareness", presence, skip_node=bus.node)
