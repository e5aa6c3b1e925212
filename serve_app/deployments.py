"""Ray Serve shells: the Gateway deployment and `build_app`, the typed application builder.

`serve run ops/serve.yaml` and `essaycoach run` both come through `build_app`.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve
from ray.serve import Application

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

        from serve_app.process import tune_gc

        self.analyzer = analyzer
        if not Settings().ws_compression:
            disable_websocket_compression()
        tune_gc()


def disable_websocket_compression() -> None:
    """Make this process's uvicorn servers refuse permessage-deflate.

    Serve starts the replica's own uvicorn server (the HAProxy fast path) after this constructor
    and offers no setting for it, so the default of uvicorn's Config is changed here, in the
    replica process only. Our frames are a few bytes of Yjs update or a short JSON row:
    compression saves nothing, costs CPU on every frame and keeps ~45 KiB of zlib state per
    socket (measured in ops/loadtest/RESULTS.md). `ESSAYCOACH_WS_COMPRESSION=true` keeps it.
    """
    import uvicorn.config

    init = uvicorn.config.Config.__init__
    if getattr(init, "_without_ws_compression", False):
        return

    @functools.wraps(init)
    def without_compression(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("ws_per_message_deflate", False)
        init(self, *args, **kwargs)

    without_compression._without_ws_compression = True  # type: ignore[attr-defined]
    uvicorn.config.Config.__init__ = without_compression  # type: ignore[method-assign]


def build_app(args: dict[str, Any] | GatewayArgs | None = None) -> Application:
    opts = args if isinstance(args, GatewayArgs) else GatewayArgs(**(args or {}))
    deployment = serve.deployment(
        Gateway,
        name="Gateway",
        # Every open socket is an ongoing request: the cap must be far above the socket count.
        max_ongoing_requests=opts.max_ongoing_requests,
        autoscaling_config={
            "min_replicas": opts.min_replicas,
            "max_replicas": opts.max_replicas,
            "target_ongoing_requests": opts.target_ongoing_requests,
        },
        ray_actor_options={"num_cpus": 0.25, **({"runtime_env": {"env_vars": opts.env}} if opts.env else {})},
    )
    analyzer = serve.deployment(
        AnalyzerService,
        name=ANALYZER_DEPLOYMENT,
        max_ongoing_requests=200,
        autoscaling_config={"min_replicas": 1, "max_replicas": opts.analyzer_max_replicas,
                            "target_ongoing_requests": 20},
        ray_actor_options={"num_cpus": 0.25, **({"runtime_env": {"env_vars": opts.env}} if opts.env else {})},
    )
    return deployment.bind(analyzer.bind())
