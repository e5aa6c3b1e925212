"""Our hooks in Serve's request path on a Gateway replica's own HTTP server (the HAProxy ingress):
the replica middleware that hands sockets and HTTP requests to `serve_app.fastpath.handoff`, and
the environment that installs it."""

from __future__ import annotations

from collections.abc import Callable

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

# Serve's `SERVE_HTTP_REQUEST_DISCONNECT_DISABLED_HEADER`, with the value it treats as true.
DISCONNECT_DISABLED = (b"x-request-disconnect-disabled", b"?1")
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
REPLICA_MIDDLEWARES_ENV = {CALLBACK_ENV: "serve_app.fastpath.serve_hooks:replica_middlewares"}
# Serve's own routes on the replica's server (`Replica._direct_ingress_asgi`): `/-/healthz`, which
# HAProxy's health check of the replica asks (503 while it drains), and `/-/routes`. The whole
# `/-/` space stays Serve's.
SERVE_ROUTES = "/-/"


class SkipServe:
    """ASGI middleware in front of Serve's request handling on the replica's own HTTP server (the
    HAProxy fast path): websocket and HTTP requests go straight to our app
    (`serve_app.fastpath.handoff` says why and what replaces Serve's part), except Serve's own
    routes (`SERVE_ROUTES`) and paths outside the app's route prefix (Serve's 404).

    The route prefix is the replica's (`Replica._route_prefix`, read per request: a redeploy can
    change it), found behind Serve's `RequestIdMiddleware`, the one middleware Serve puts between
    us and `Replica._direct_ingress_asgi`; not found (not on Serve's replica), "/". As Serve does,
    a prefix other than "/" becomes the request's `root_path`.

    Where our app runs on another event loop than this server (Serve's user-code thread, off in
    throughput mode), everything goes through Serve. A socket that goes through Serve goes marked
    "disconnect disabled" (Serve's `x-request-disconnect-disabled: ?1`): Serve's watcher (a
    receive proxy with a queue and a task per request) costs ~3 KiB and a task hop per frame, and
    our handlers see the disconnect themselves.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route_prefix = _replica_route_prefix(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            from serve_app.fastpath.handoff import for_this_loop

            handoff = for_this_loop()
            if handoff is not None and self._ours(scope):
                if kind == "http":
                    await handoff.serve_request(scope, receive, send)
                else:
                    await handoff.serve(scope, receive, send)
                return
            if kind == "websocket":
                scope["headers"] = [*scope["headers"], DISCONNECT_DISABLED]
                from serve_app.fastpath.uvicorn_protocol import forget_current_connection

                forget_current_connection()  # frames go through Serve's send path, never past it
        await self.app(scope, receive, send)

    def _ours(self, scope: Scope) -> bool:
        """Whether the request is our app's, as Serve's `_direct_ingress_asgi` routes it (setting
        its `root_path` for a route prefix other than "/", as Serve does)."""
        root_path = scope.get("root_path", "")
        route = scope["path"][len(root_path):]
        if route.startswith(SERVE_ROUTES):
            return False
        prefix = self.route_prefix() or ""
        if prefix and prefix != "/":
            if not route.startswith(prefix):
                return False
            scope["root_path"] = root_path + prefix
        return True


def _replica_route_prefix(app: ASGIApp) -> Callable[[], str | None]:
    """Reads the route prefix of the Serve replica whose `_direct_ingress_asgi` `app` wraps
    (through Serve's `RequestIdMiddleware`, which keeps it as `_app`); "/" for any other app."""
    replica = getattr(getattr(app, "_app", None), "__self__", None)
    if replica is None or not hasattr(replica, "_route_prefix"):
        return lambda: "/"
    return lambda: replica._route_prefix


def replica_middlewares() -> list[Middleware]:
    """Serve's `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` hook, set for Gateway replicas only
    (`REPLICA_MIDDLEWARES_ENV` in their runtime env, when the fast path is on): the middlewares of
    the replica's own HTTP server (the HAProxy fast path)."""
    return [Middleware(SkipServe)]
