"""The life of a JSON socket (`events_socket`, `class_live_socket`): subscribe, tell the hosts
someone watches, send the opening state, receive text frames within limits until closed, clean up.

A client's frame must be a JSON object with a string `type`; anything else is answered with an
`{"type": "error", "code": "bad_json" | "bad_message", ...}` frame and the socket stays open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from serve_app.deps import Context
from serve_app.realtime.connection import SendQueue, TokenBucket, close_quietly, receive_frame
from serve_app.realtime.protocol import CloseCode, ProtocolError

log = logging.getLogger("essaycoach.ws")


def error_frame(code: str, detail: str) -> str:
    """`{"type": "error", code, detail}`: a client's message was refused; the socket stays open."""
    return json.dumps({"type": "error", "code": code, "detail": detail})


async def _json_loop(ws: WebSocket, ctx: Context, out: SendQueue,
                     on_message: Callable[[dict[str, Any]], Any]) -> None:
    """Receive JSON text frames until disconnect, enforcing size, rate and shape."""
    settings = ctx.settings
    bucket = TokenBucket(settings.ws_messages_per_second, settings.ws_burst)
    while True:
        raw = await receive_frame(ws, ctx, bucket, "text")
        if raw is None:
            return
        try:
            message = json.loads(raw)
        except ValueError:
            out.put(error_frame("bad_json", "not valid JSON"))
            continue
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            out.put(error_frame("bad_message", "expected {type, ...}"))
            continue
        await on_message(message)


async def serve_json(
    ws: WebSocket, ctx: Context, out: SendQueue, *, subscribe: Callable[[], Awaitable[Callable[[], None]]],
    start: Callable[[], Awaitable[None]], on_message: Callable[[dict[str, Any]], Awaitable[None]], name: str,
    context: dict[str, str], watch: Callable[[int], Awaitable[Any]],
) -> None:
    """The JSON sockets' life: `subscribe` (it returns the unsubscribe), tell the hosts
    (`watch(+1)`: they publish the channel only while someone watches), send the opening state
    (`start`), receive until closed, clean up."""
    unsubscribe = await subscribe()
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
        await close_quietly(ws, CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        ctx.metrics.sockets_open.labels(name).dec()
        unsubscribe()
        out.stop()
        if watching:
            try:
                await watch(-1)
            except Exception:
                log.warning("unwatch failed", extra=context)
