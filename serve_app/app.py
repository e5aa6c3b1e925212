"""The FastAPI application factory. Each Serve replica (and each test) builds its own app."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.types import Receive, Scope, Send

from actors import tracing
from actors.analysis.coach import build_coach
from actors.metrics import flush as flush_counters
from actors.process_tuning import release_free_memory_periodically
from db.engine import make_engine, make_sessionmaker
from serve_app import web
from serve_app.api import (
    admin,
    auth,
    classes,
    coach,
    comments,
    essays,
    exports,
    extensions,
    health,
    history,
    privacy,
    roster,
    rubrics,
    submissions,
    uploads,
    webhooks,
)
from serve_app.cpu_work import CpuWork
from serve_app.deps import Context
from serve_app.errors import install_handlers
from serve_app.fastpath import handoff
from serve_app.hosts import EssayHosts, make_hosts
from serve_app.housekeeping import purge_periodically
from serve_app.jobs_wiring import start_runner, stop_runner
from serve_app.observability import Metrics, RequestContextMiddleware, TracingMiddleware, configure_logging
from serve_app.ratelimit import (
    BucketPolicy,
    LoginThrottle,
    MemoryBucketStore,
    RateLimit,
    evict_periodically,
    make_bucket_store,
)
from serve_app.realtime import control, sockets
from serve_app.settings import Settings

API_PREFIX = "/api/v1"
log = logging.getLogger("essaycoach.app")


class _App(FastAPI):
    """FastAPI, with our websockets served before the HTTP middleware stack and router
    (`serve_app.realtime.sockets.serve_socket` says why)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope["app"] = self
            if await sockets.serve_socket(scope, receive, send):
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    hosts_factory: Callable[[Settings, Context], EssayHosts] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Build the app. `settings` defaults to the environment; `hosts_factory` picks how essays are
    hosted (in-process hosts for tests and single-process runs, Ray actors under Serve)."""
    settings = settings or Settings()
    configure_logging()
    tracing.configure("essaycoach-gateway")  # here, in the replica: OTEL_* of its own environment
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, keyring=settings.keyring)
        sessions = make_sessionmaker(engine)
        buckets = make_bucket_store(settings.redis_url, sessions)
        throttle = LoginThrottle(
            buckets,
            per_account=BucketPolicy.every(burst=settings.login_account_failure_burst,
                                           seconds=settings.login_account_failure_drain_seconds),
            per_ip=BucketPolicy.every(burst=settings.login_ip_failure_burst,
                                      seconds=settings.login_ip_failure_drain_seconds))
        ctx = Context(settings=settings, engine=engine, sessions=sessions, throttle=throttle,
                      hosts=None, metrics=metrics, clock=clock, buckets=buckets,  # type: ignore[arg-type]
                      trusted_proxies=settings.trusted_proxy_networks,
                      submissions_limit=RateLimit(buckets, prefix="submit:user:", policy=BucketPolicy.every(
                          burst=settings.submissions_per_user_per_hour,
                          seconds=3600 / settings.submissions_per_user_per_hour)),
                      # Redis when configured; else this replica's memory, not the SQL store
                      # (a write per socket open: serve_app.ratelimit.MemoryBucketStore).
                      tickets_limit=RateLimit(buckets if settings.redis_url else MemoryBucketStore(),
                                              prefix="ws-ticket:user:", policy=BucketPolicy.every(
                          burst=settings.ws_tickets_per_user_per_minute,
                          seconds=60 / settings.ws_tickets_per_user_per_minute)),
                      coach_limit=RateLimit(buckets, prefix="coach:user:", policy=BucketPolicy.every(
                          burst=settings.coach_questions_per_user_per_hour,
                          seconds=3600 / settings.coach_questions_per_user_per_hour)),
                      coach=build_coach(settings.analysis_config()),
                      passwords=CpuWork(settings.cpu_work_threads, name="cpu-work-passwords"),
                      cpu=CpuWork(settings.cpu_work_threads))
        ctx.hosts = (hosts_factory or make_hosts)(settings, ctx)
        app.state.ctx = ctx
        await ctx.hosts.start()
        stop_control = await control.install(app, ctx.hosts.bus)
        await start_runner(ctx)
        trim = asyncio.create_task(release_free_memory_periodically())
        purge = asyncio.create_task(purge_periodically(ctx.sessions, interval=settings.store_purge_interval_seconds))
        evict = asyncio.create_task(evict_periodically(buckets))
        # The replica middleware hands sockets to this app only on the fast path.
        socket_handoff = handoff.register(app) if settings.fast_path else None
        log.info("gateway started", extra={"database": engine.url.render_as_string(hide_password=True)})
        try:
            yield
        finally:
            stop_control()
            if socket_handoff is not None:
                handoff.unregister(socket_handoff)
                await socket_handoff.close_all()
            trim.cancel()
            purge.cancel()
            evict.cancel()
            await stop_runner(ctx)
            await ctx.coach.aclose()
            await ctx.hosts.stop()
            await buckets.aclose()
            await engine.dispose()
            ctx.passwords.shutdown()
            ctx.cpu.shutdown()
            flush_counters()  # last: the runner's, hosts' and store's final counts too
            tracing.flush()

    app = _App(
        title="EssayCoach Live",
        version="1.0.0",
        description="Realtime essay coaching: live essays, AI feedback, teacher dashboards.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
        swagger_ui_init_oauth={"usePkceWithAuthorizationCodeGrant": False},
    )
    install_handlers(app)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes)
    if tracing.enabled:
        app.add_middleware(TracingMiddleware)  # outermost: the span covers the whole request
    api = APIRouter(prefix=API_PREFIX)
    for module in (auth, classes, roster, extensions, rubrics, uploads, essays, comments, coach, history, exports,
                   submissions, webhooks, admin, privacy):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    web.install(app, settings.web_dist)  # the browser app: only what no route above matched
    return app
