"""Ray Serve shells: the Gateway deployment and `build_app`, the typed application builder.

`serve run ops/serve.yaml` and `essaycoach run` both come through `build_app`.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve
from ray.serve import Application
from ray.serve.config import AutoscalingContext, AutoscalingPolicy

from actors.analysis.service import ANALYZER_DEPLOYMENT, AnalyzerService
from serve_app import fastpath


class GatewayArgs(BaseModel):
    """Arguments of `build_app` (from a Serve config's `args:` or the CLI)."""

    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: int = 200
    max_ongoing_requests: int = 5000
    analyzer_max_replicas: int = 4
    # More of the Gateway's autoscaling config (upscale_delay_s, downscale_delay_s,
    # look_back_period_s, metrics_interval_s, ...); a Serve config's `deployments:` section
    # overrides these field by field anyway (ops/serve.yaml).
    autoscaling: dict[str, Any] = {}
    # Custom Ray resources a Gateway replica asks for (to place replicas on a node group).
    resources: dict[str, float] = {}
    # ESSAYCOACH_* values for the replicas when the cluster's environment does not carry them.
    env: dict[str, str] = {}
    # The fast path (serve_app.fastpath); None: ESSAYCOACH_FAST_PATH from `env`, else from the
    # environment of the process building the app.
    fast_path: bool | None = None


def _build_asgi_app() -> FastAPI:
    # Runs inside each replica: settings are read there, so replicas see the cluster's environment.
    from serve_app.app import create_app

    return create_app()


@serve.ingress(_build_asgi_app)
class Gateway:
    """The REST + websocket ingress. Routes live in the FastAPI app built per replica; the
    Analyzer is bound here so it deploys with the app (hosts find it by name)."""

    def __init__(self, analyzer: Any = None) -> None:
        from actors.process_tuning import set_process_time_slice, tune_gc
        from serve_app.settings import Settings

        self.analyzer = analyzer
        settings = Settings()
        fastpath.setup_replica(on=settings.fast_path, compression=settings.ws_compression)
        tune_gc()
        if settings.latency_slice_ms:
            # Every thread the replica runs now (its event loops among them); later ones inherit.
            set_process_time_slice(settings.latency_slice_ms)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's hook for custom autoscaling metrics: this replica's directly served sockets and
        HTTP requests in flight (0 and 0 with the fast path off: they are then Serve's ongoing
        requests). Serve samples it when it samples its own ongoing count."""
        from serve_app.fastpath.handoff import current

        handoff = current()
        if handoff is None:
            return {SOCKETS_METRIC: 0.0, REQUESTS_METRIC: 0.0}
        return {SOCKETS_METRIC: float(handoff.open), REQUESTS_METRIC: float(handoff.requests)}


SOCKETS_METRIC = "open_sockets"
REQUESTS_METRIC = "http_in_flight"


def scale_on_sockets(ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
    """The Gateway's autoscaling policy: replicas for the open sockets plus the HTTP requests in
    flight plus Serve's ongoing requests, `target_ongoing_requests` of them per replica (Serve's
    default policy counts only its own ongoing requests, and sockets and requests served directly
    are not Serve's). Serve applies the bounds, delays and smoothing factors of the deployment's
    autoscaling config to the result."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    reported = ctx.aggregated_metrics or {}
    direct = sum(reported.get(SOCKETS_METRIC, {}).values()) + sum(reported.get(REQUESTS_METRIC, {}).values())
    return (ctx.total_num_requests + direct) / ctx.config.get_target_ongoing_requests(), {}


class AnalyzerReplica(AnalyzerService):
    """The Analyzer deployment's shell: reads the settings in the replica's own process (its
    runtime_env), as before, and hands the actors layer only their `AnalysisConfig`."""

    def __init__(self) -> None:
        from actors import tracing
        from serve_app.settings import Settings

        tracing.configure("essaycoach-analyzer")  # in the replica, from its own OTEL_* environment
        super().__init__(Settings().analysis_config())


def build_app(args: dict[str, Any] | GatewayArgs | None = None) -> Application:
    opts = args if isinstance(args, GatewayArgs) else GatewayArgs(**(args or {}))
    fast = opts.fast_path if opts.fast_path is not None else fastpath.enabled({**os.environ, **opts.env})
    deployment = serve.deployment(
        Gateway,
        name="Gateway",
        # Requests on Serve's request path only: with the fast path on, sockets and HTTP requests go
        # past it (serve_app.fastpath.handoff), Serve's own /-/ routes excepted.
        max_ongoing_requests=opts.max_ongoing_requests,
        autoscaling_config={
            "min_replicas": opts.min_replicas,
            "max_replicas": opts.max_replicas,
            "target_ongoing_requests": opts.target_ongoing_requests,
            "policy": AutoscalingPolicy(policy_function=scale_on_sockets),
            **opts.autoscaling,
        },
        ray_actor_options={"num_cpus": 0.25, **({"resources": opts.resources} if opts.resources else {}),
                           "runtime_env": {"env_vars": {**opts.env, **fastpath.replica_env(on=fast)}}},
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
