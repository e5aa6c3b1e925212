"""A writer's typing handled in the connection's receive callback (`ReceiptFanout`).

The doc socket hands a typed update to this replica's other sockets (the teachers watching)
on receipt, before it goes to the host. Done from the socket's task, the update first waited
for the task's turn: after every callback the loop had ready in that turn (other sockets'
frames, the host's answers and the acks they release), then Starlette's receive chain. With
the replica's loop also serving the acks of every writer, that wait was most of what the
Gateway added to the teacher-visible tail (per-stage stamps in a 300-typist continuous run,
2026-12-06: data received -> handler p50 2.8 ms, p99 66 ms on a loaded machine; validate and
deliver p50 0.1 ms). `ReceiptFanout` does the task's checks and the hand-over in the
protocol's receive callback (`serve_app.fastpath.uvicorn_protocol.Inbox.on_idle_put`), then
sends the update to the host (`send`, the doc socket's own) and takes the message: the
socket's task is not woken for it at all (its receive chain and a loop turn per update were
most of what was left of the task's share of the Gateway loop).

It acts only when the socket's task is idle at its next read with nothing queued (every earlier
frame handled, so acks count updates in the order they came) and no update of the socket is
waiting for the host (none can fail and end the socket before this one), and only on an
update the task would hand over itself: a binary frame within the size limit and the rate
limit (its token is taken here), a sync update that `validate_update` accepts, from a writer
whose write window is open. Whether the watchers get it now or after its ack is `send`'s choice
(`serve_app.realtime.room`: only while the essay surely has room for it). Anything else goes on
to the task, which handles it as before (refuses it, closes the socket). Tracing on: nothing
here (the task starts each update's span).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actors.doc import InvalidUpdate, validate_update
from actors.yupdate import TextUpdate
from db.types import utcnow
from serve_app.api.writability import WriteWindow
from serve_app.fastpath import uvicorn_protocol
from serve_app.realtime.acks import AckQueue
from serve_app.realtime.connection import TokenBucket, WriterBucket
from serve_app.realtime.protocol import ProtocolError, SyncUpdate, parse_client_message

Send = Callable[[bytes, float, TextUpdate], None]
"""The doc socket's hand-off of a typed update to this replica's sockets and its host: (update, its
receipt stamp, what `validate_update` found in it)."""


class ReceiptFanout:
    """One writing doc socket's fan-out on receipt; `install` hooks it to the socket's
    connection (our websocket protocol only: elsewhere it does nothing)."""

    def __init__(self, *, window: WriteWindow, bucket: TokenBucket | WriterBucket, acks: AckQueue, max_bytes: int,
                 send: Send) -> None:
        self.window, self.bucket, self.acks, self.max_bytes = window, bucket, acks, max_bytes
        self.send = send
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
        """`Inbox.on_idle_put`: a typed update the task would hand over is handed over and sent
        to the host now, and taken (None); any other message goes on to the task unchanged.
        `received_at`: the connection's receipt stamp."""
        data = message.get("bytes") if message.get("type") == "websocket.receive" else None
        if (data is None or len(data) > self.max_bytes or self.acks.waiting or self.acks.failure is not None
                or not self.bucket.ready() or self.window.refusal_at(utcnow()) is not None):
            return message
        try:
            parsed = parse_client_message(data, max_size=self.max_bytes)
            if not isinstance(parsed, SyncUpdate):
                return message
            checked = validate_update(parsed.update)
        except (ProtocolError, InvalidUpdate):
            return message  # the task refuses it and closes the socket
        self.bucket.take()  # ready() above: the task would have taken this token
        self.send(parsed.update, received_at, checked)
        return None
