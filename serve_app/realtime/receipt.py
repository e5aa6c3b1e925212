"""A writer's typing fanned out from the connection's receive callback (`ReceiptFanout`).

The doc socket hands a typed update to this replica's other sockets (the teachers watching)
on receipt, before it goes to the host. Done from the socket's task, the update first waited
for the task's turn: after every callback the loop had ready in that turn (other sockets'
frames, the host's answers and the acks they release), then Starlette's receive chain. With
the replica's loop also serving the acks of every writer, that wait was most of what the
Gateway added to the teacher-visible tail (per-stage stamps in a 300-typist continuous run,
2026-12-06: data received -> handler p50 2.8 ms, p99 66 ms on a loaded machine; validate and
deliver p50 0.1 ms). `ReceiptFanout` does the same checks and the same hand-over in the
protocol's receive callback (`serve_app.fastpath.uvicorn_protocol.Inbox.on_idle_put`), and
the socket's task then only sends the update to the host.

It acts only when the socket's task is idle at its next read with nothing queued (every earlier
frame handled) and no update of the socket is waiting for the host (none can fail and end the
socket before its task takes this one), and only on an update the task would hand over
itself: a binary frame within the size limit and the rate limit, a sync update that
`validate_update` accepts, from a writer whose write window is open. Anything else is left to
the task, which handles it as before (refuses it, closes the socket). Tracing on: nothing
here (the task starts each update's span).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.broadcast import Bus
from actors.doc import InvalidUpdate, validate_update
from db.types import utcnow
from serve_app.api.writability import WriteWindow
from serve_app.fastpath import uvicorn_protocol
from serve_app.realtime.acks import AckQueue
from serve_app.realtime.connection import TokenBucket
from serve_app.realtime.documents import hand_over_typed, release_in_flight
from serve_app.realtime.protocol import ProtocolError, SyncUpdate, parse_client_message


@dataclass(frozen=True, slots=True)
class Delivered:
    """A typed update already handed to this replica's sockets: `data` the frame as received."""

    data: bytes
    update: bytes
    frame: bytes
    received: float  # the connection's receipt stamp (`Inbox`, perf_counter)


class ReceiptFanout:
    """One writing doc socket's fan-out on receipt; `install` hooks it to the socket's
    connection (our websocket protocol only: elsewhere it does nothing)."""

    def __init__(self, *, bus: Bus, eid: uuid.UUID, origin: str, window: WriteWindow, bucket: TokenBucket,
                 acks: AckQueue, in_flight: dict[uuid.UUID, dict[int, bytes]], max_bytes: int) -> None:
        self.bus, self.eid, self.origin, self.window = bus, eid, origin, window
        self.bucket, self.acks, self.in_flight, self.max_bytes = bucket, acks, in_flight, max_bytes
        self.delivered: deque[Delivered] = deque()
        self.connection = uvicorn_protocol.current_connection()  # made in the socket's task

    def install(self) -> Callable[[], None]:
        """Hook into the socket's connection; returns the unhook."""
        if self.connection is None:
            return lambda: None
        return self.connection.on_idle_receive(self.on_message)

    def received_at(self) -> float:
        """When the frame the socket's task read last reached the connection (on our protocol:
        the same stamp `on_message` is given), else now: where an update's ack latency starts."""
        return self.connection.received_at if self.connection is not None else time.perf_counter()

    def on_message(self, message: Any, received_at: float) -> Any:
        """`Inbox.on_idle_put`: hand a typed update over now if the task would; the message goes
        on to the task unchanged either way. `received_at`: the connection's receipt stamp."""
        data = message.get("bytes") if message.get("type") == "websocket.receive" else None
        if (data is None or len(data) > self.max_bytes or self.acks.waiting or self.acks.failure is not None
                or not self.bucket.ready() or self.window.refusal_at(utcnow()) is not None):
            return message
        try:
            parsed = parse_client_message(data, max_size=self.max_bytes)
            if not isinstance(parsed, SyncUpdate):
                return message
            validate_update(parsed.update)
        except (ProtocolError, InvalidUpdate):
            return message  # the task refuses it and closes the socket
        frame = hand_over_typed(self.bus, self.eid, self.origin, parsed.update, self.in_flight)
        self.delivered.append(Delivered(data, parsed.update, frame, received_at))
        return message

    def take(self, data: bytes) -> Delivered | None:
        """The hand-over made for the frame `data` the task just read, if one was."""
        if self.delivered and self.delivered[0].data is data:
            return self.delivered.popleft()
        return None

    def forget(self) -> None:
        """The socket ended: hand-overs its task never took leave the in-flight registry."""
        while self.delivered:
            release_in_flight(self.in_flight, self.eid, self.delivered.popleft().frame)
