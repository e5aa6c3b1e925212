"""`WS /ws/essays/{id}/events`: one essay's events as JSON text frames, server to client, each
`{type, essay_id, seq, ...}` (`feedback`, `comment`, `presence`, `saved`, `submission`,
`deadline`, `resync`). The client may send `{"type": "resume", "last_seq": n, "epoch"?: e}` and gets the
events it missed, or a `resync` when they are no longer kept."""

from __future__ import annotations

import json
from typing import Any

from fastapi import WebSocket

from actors.broadcast import DELETED, MOVED, RESYNC
from serve_app.realtime.connection import SendQueue, background, open_essay_socket
from serve_app.realtime.json_socket import error_frame, serve_json
from serve_app.realtime.protocol import CloseCode


async def events_socket(ws: WebSocket) -> None:
    opened = await open_essay_socket(ws)
    if opened is None:
        return
    ctx, _, eid, _ = opened
    out = SendQueue(ws, ctx.settings.ws_outbound_max_bytes)

    async def send_resync() -> None:
        state = await ctx.hosts.of(eid).event_state(eid)
        out.put(json.dumps({"type": "resync", "essay_id": str(eid), **state}))

    def on_event(_channel: str, message: bytes) -> None:
        if message == RESYNC:
            background(send_resync())
        elif message == DELETED:
            background(out.close(CloseCode.UNKNOWN_ESSAY, "essay was deleted"))
        elif message == MOVED:  # its host gave it up: reconnect to the one routing names now
            background(out.close(CloseCode.TRY_AGAIN_LATER, "essay moved to another host; reconnect"))
        else:
            out.put(message.decode())

    async def on_message(message: dict[str, Any]) -> None:
        if message["type"] != "resume":
            out.put(error_frame("unknown_type", f"unknown message type {message['type'][:40]!r}"))
            return
        last_seq = message.get("last_seq")
        if not isinstance(last_seq, int) or last_seq < 0:
            out.put(error_frame("bad_message", "last_seq must be an int >= 0"))
            return
        epoch = message.get("epoch") if isinstance(message.get("epoch"), str) else None
        missed = await ctx.hosts.of(eid).events_after(eid, last_seq, epoch)
        if missed is None:
            await send_resync()
        else:
            for event in missed:
                out.put(event)

    async def start() -> None:
        state = await ctx.hosts.of(eid).event_state(eid)
        out.put(json.dumps({"type": "presence", "essay_id": str(eid), **state}))

    await serve_json(ws, ctx, out, subscribe=lambda: ctx.hosts.bus.subscribe(f"essay:{eid}", on_event),
                     start=start, on_message=on_message, name="events", context={"essay_id": str(eid)},
                     watch=lambda delta: ctx.hosts.of(eid).watch(f"essay:{eid}", delta))
