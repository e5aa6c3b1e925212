"""Our hooks in Serve's request path on a Gateway replica's own HTTP server (the HAProxy ingress):
the replica middleware that hands sockets to `serve_app.fastpath.handoff`, and the environment
that installs it."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

# Serve's `SERVE_HTTP_REQUEST_DISCONNECT_DISABLED_HEADER`, with the value it treats as true.
DISCONNECT_DISABLED = (b"x-request-disconnect-disabled", b"?1")
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
REPLICA_MIDDLEWARES_ENV = {CALLBACK_ENV: "serve_app.fastpath.serve_hooks:replica_middlewares"}


class SocketsSkipServe:
    """ASGI middleware in front of Serve's request handling on the replica's own HTTP server (the
    HAProxy fast path): websocket requests go straight to our app (`serve_app.fastpath.handoff`
    says why and what replaces Serve's part). HTTP requests keep Serve's handling.

    Where our app runs on another event loop than this server (Serve's user-code thread, off in
    throughput mode), a socket goes through Serve marked "disconnect disabled" (Serve's
    `x-request-disconnect-disabled: ?1`): Serve's watcher (a receive proxy with a queue and a
    task per request) costs ~3 KiB and a task hop per frame, and our handlers see the disconnect
    themselves.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            from serve_app.fastpath.handoff import for_this_loop

            handoff = for_this_loop()
            if handoff is not None:
                await handoff.serve(scope, receive, send)
                return
            scope["headers"] = [*scope["headers"], DISCONNECT_DISABLED]
            from serve_app.fastpath.uvicorn_protocol import forget_current_connection

            forget_current_connection()  # frames go through Serve's send path, never past it
        await self.app(scope, receive, send)


def replica_middlewares() -> list[Middleware]:
    """Serve's `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` hook, set for Gateway replicas only
    (`REPLICA_MIDDLEWARES_ENV` in their runtime env, when the fast path is on): the middlewares of
    the replica's own HTTP server (the HAProxy fast path)."""
    return [Middleware(SocketsSkipServe)]
