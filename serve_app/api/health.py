"""Liveness, readiness and Prometheus metrics (no /api/v1 prefix, no auth)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from serve_app.deps import ContextDep

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ctx: ContextDep) -> JSONResponse:
    checks: dict[str, str] = {}

    async def store() -> None:
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    for name, probe in (("store", store), *ctx.hosts.readiness_probes()):
        try:
            async with asyncio.timeout(2.0):
                await probe()
            checks[name] = "ok"
        except Exception as exc:  # readiness reports any failure as not ready, with its reason
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:200]
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(ctx: ContextDep) -> Response:
    # This process's view: the catalogue (actors/metrics.py) and the process collectors. A
    # cluster-wide scrape reads Ray's per-node metrics export instead (README "Metrics").
    body = generate_latest(ctx.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
