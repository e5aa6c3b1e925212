"""Ray Serve shells: the Gateway deployment and `build_app`, the typed application builder.

`serve run ops/serve.yaml` and `essaycoach run` both come through `build_app`.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send
from pydantic import BaseModel
from ray import serve
from ray.serve import Application
from ray.serve.config import AutoscalingContext, AutoscalingPolicy

from actors.analysis.service import ANALYZER_DEPLOYMENT, AnalyzerService


class GatewayArgs(BaseModel):
    """Arguments of `build_app` (from a Serve config's `args:` or the CLI)."""

    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: int = 200
    max_ongoing_requests: int = 5000
    analyzer_max_replicas: int = 4
    # ESSAYCOACH_* values for the replicas when the cluster's environment does not carry them.
    env: dict[str, str] = {}


def _build_asgi_app() -> FastAPI:
    # Runs inside each replica: settings are read there, so replicas see the cluster's environment.
    from serve_app.app import create_app

    return create_app()


@serve.ingress(_build_asgi_app)
class Gateway:
    """The REST + websocket ingress. Routes live in the FastAPI app built per replica; the
    Analyzer is bound here so it deploys with the app (hosts find it by name)."""

    def __init__(self, analyzer: Any = None) -> None:
        from serve_app.settings import Settings

        from actors.process_tuning import tune_gc

        self.analyzer = analyzer
        configure_websockets(compression=Settings().ws_compression)
        tune_gc()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's hook for custom autoscaling metrics: this replica's directly served sockets."""
        from serve_app.realtime.direct import current

        direct = current()
        return {SOCKETS_METRIC: float(direct.open if direct is not None else 0)}


def configure_websockets(*, compression: bool) -> None:
    """Choose how this process's uvicorn servers speak websocket.

    Serve starts the replica's own uvicorn server (the HAProxy fast path) after this constructor
    and offers no setting for it, so the defaults of uvicorn's Config are changed here, in the
    replica process only (an explicit argument still wins):

    - `ws=LeanWebSocketProtocol`: uvicorn's sans-I/O binding of `websockets` (it keeps no reader,
      keepalive and closer tasks per connection as the legacy binding does: ~7 KiB less RSS per
      open socket in a bare uvicorn echo server on this machine) with lighter per-connection
      state (`serve_app.realtime.lean_ws`: ~4 KiB less).
    - permessage-deflate refused unless `compression`: our frames are a few bytes of Yjs update
      or a short JSON row, so compression saves nothing, costs CPU on every frame and keeps
      ~45 KiB of zlib state per socket. `ESSAYCOACH_WS_COMPRESSION=true` keeps it.
    """
    import uvicorn.config

    from serve_app.realtime.lean_ws import IMPORT_PATH as LEAN_WS

    init = uvicorn.config.Config.__init__
    original = getattr(init, "_essaycoach_original", init)

    @functools.wraps(original)
    def configured(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("ws", LEAN_WS)
        if not compression:
            kwargs.setdefault("ws_per_message_deflate", False)
        original(self, *args, **kwargs)

    configured._essaycoach_original = original  # type: ignore[attr-defined]
    uvicorn.config.Config.__init__ = configured  # type: ignore[method-assign]


DISCONNECT_DISABLED = (b"x-request-disconnect-disabled", b"?1")
REPLICA_MIDDLEWARES_ENV = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_app.deployments:replica_middlewares"}
SOCKETS_METRIC = "open_sockets"


class SocketsSkipServe:
    """ASGI middleware in front of Serve's request handling on the replica's own HTTP server (the
    HAProxy fast path): websocket requests go straight to our app (`serve_app.realtime.direct`
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
            from serve_app.realtime.direct import for_this_loop

            direct = for_this_loop()
            if direct is not None:
                await direct.serve(scope, receive, send)
                return
            scope["headers"] = [*scope["headers"], DISCONNECT_DISABLED]
            from serve_app.realtime.lean_ws import forget_current

            forget_current()  # frames go through Serve's send path, never past it
        await self.app(scope, receive, send)


def replica_middlewares() -> list[Middleware]:
    """Serve's `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` hook, set for Gateway replicas only
    (`REPLICA_MIDDLEWARES_ENV` in their runtime env): the middlewares of the replica's own HTTP
    server (the HAProxy fast path)."""
    return [Middleware(SocketsSkipServe)]


def scale_on_sockets(ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
    """The Gateway's autoscaling policy: replicas for the open sockets plus the ongoing requests,
    `target_ongoing_requests` of them per replica (Serve's default policy counts only the
    requests, and sockets served directly are not requests to Serve). Serve applies the bounds,
    delays and smoothing factors of the deployment's autoscaling config to the result."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    sockets = sum((ctx.aggregated_metrics or {}).get(SOCKETS_METRIC, {}).values())
    return (ctx.total_num_requests + sockets) / ctx.config.get_target_ongoing_requests(), {}


class AnalyzerReplica(AnalyzerService):
    """The Analyzer deployment's shell: reads the settings in the replica's own process (its
    runtime_env), as before, and hands the actors layer only their `AnalysisConfig`."""

    def __init__(self) -> None:
        from serve_app.settings import Settings

        super().__init__(Settings().analysis_config())


def build_app(args: dict[str, Any] | GatewayArgs | None = None) -> Application:
    opts = args if isinstance(args, GatewayArgs) else GatewayArgs(**(args or {}))
    deployment = serve.deployment(
        Gateway,
        name="Gateway",
        # HTTP requests in flight (sockets go past Serve's request path: serve_app.realtime.direct);
        # with sockets on Serve's path (user code on its own thread) each would count here too.
        max_ongoing_requests=opts.max_ongoing_requests,
        autoscaling_config={
            "min_replicas": opts.min_replicas,
            "max_replicas": opts.max_replicas,
            "target_ongoing_requests": opts.target_ongoing_requests,
            "policy": AutoscalingPolicy(policy_function=scale_on_sockets),
        },
        ray_actor_options={"num_cpus": 0.25, "runtime_env": {"env_vars": {**REPLICA_MIDDLEWARES_ENV, **opts.env}}},
    )
    analyzer = serve.deployment(
        AnalyzerReplica,
        name=ANALYZER_DEPLOYMENT,
        max_ongoing_requests=200,
        autoscaling_config={"min_replicas": 1, "max_replicas": opts.analyzer_max_replicas,
                            "target_ongoing_requests": 20},
        ray_actor_options={"num_cpus": 0.25, **({"runtime_env": {"env_vars": opts.env}} if opts.env else {})},
    )
    return deployment.bind(analyzer.bind())
