"""Shared fixtures: a migrated store per backend and the API app from its factory (no Ray).

Store and API tests run on SQLite always and on PostgreSQL when ESSAYCOACH_TEST_DATABASE_URL is
set; when it is set and the server is unreachable the run fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from db.engine import make_engine
from db.migrate import upgrade
from serve_app.app import create_app
from serve_app.hosts import InProcessHosts
from serve_app.ports import pick_free_port as free_port
from serve_app.settings import Settings

PG_URL = os.environ.get("ESSAYCOACH_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgres"] if PG_URL else [])
TEST_SECRET = "test-secret-" + "x" * 40


async def _reset_postgres(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    except OSError as exc:
        raise RuntimeError(f"ESSAYCOACH_TEST_DATABASE_URL is set but unreachable: {exc}") from exc
    finally:
        await engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgres":
        assert PG_URL
        await _reset_postgres(PG_URL)
        url = PG_URL
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    await asyncio.to_thread(upgrade, url)
    return url


@asynccontextmanager
async def fresh_database(database_url: str, tmp_path: Path, *, migrated: bool = True) -> AsyncIterator[str]:
    """A new, empty database of the same kind as `database_url` (migrated unless told not to),
    dropped afterwards: for tests whose background workers (submission runners, hosts) must not
    share a store with the session's app."""
    import asyncpg
    from sqlalchemy.engine import make_url

    if database_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path / f'fresh-{uuid.uuid4().hex[:8]}.db'}"
        if migrated:
            await asyncio.to_thread(upgrade, url)
        yield url
        return
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    server = make_url(database_url).set(drivername="postgresql")
    admin = await asyncpg.connect(server.render_as_string(hide_password=False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = server.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
        if migrated:
            await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def make_settings(database_url: str, var_dir: Path, **overrides: object) -> Settings:
    # No rules-worker process unless a test asks (analysis_process=True): one per host is
    # ~100 MiB and a second of start-up for every app a test builds.
    overrides.setdefault("analysis_process", False)
    return Settings(database_url=database_url, var_dir=var_dir, jwt_secret=TEST_SECRET, dev_mode=False,
                    **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(database_url, tmp_path_factory.mktemp("var"),
                         login_ip_failure_burst=100_000, submissions_per_user_per_hour=100_000)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    """The API app in this process (ASGI, no port), beside `live_server` on the same store: its
    hosts are named apart (`InProcessHosts`), so neither takes the other's essays. With one name,
    this app's submission runner, telling an essay's editors that its job finished, loaded an
    essay `live_server` held and the student's next keystroke there was refused (1013). Apps a
    test makes with `create_app(settings)` share `live_server`'s host names (they stand for its
    replicas): one that submits essays there can take `live_server`'s essays the same way."""
    application = create_app(settings, hosts_factory=lambda s, ctx: InProcessHosts(s, ctx, name="asgi-essay-host"))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


@asynccontextmanager
async def serving(application: Any, *, lean_protocol: bool = True) -> AsyncIterator[str]:
    """Serve an app with uvicorn on a free port (real HTTP and websockets); yields host:port.
    `lean_protocol`: our websocket protocol, as the Gateway replica's server uses on the fast path;
    False: uvicorn's default (the fast path off)."""
    async with serving_with_server(application, lean_protocol=lean_protocol) as (address, _server):
        yield address


@asynccontextmanager
async def serving_with_server(application: Any, *, lean_protocol: bool = True) -> AsyncIterator[tuple[str, Any]]:
    """`serving`, yielding (host:port, the `uvicorn.Server`) for tests of the server's own steps."""
    import uvicorn

    from serve_app.fastpath.uvicorn_protocol import IMPORT_PATH as LEAN_PROTOCOL

    port = free_port()
    ws: dict[str, Any] = {"ws": LEAN_PROTOCOL} if lean_protocol else {}
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", **ws))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    try:
        yield f"127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await task


async def until_ready(http: httpx.AsyncClient, *, seconds: float, alive: Callable[[], None] = lambda: None) -> bool:
    """Poll `GET /readyz` until it answers 200 (True) or `seconds` pass (False); `alive()` runs
    before each try and may raise to give up early (the server process exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive()
        try:
            if (await http.get("/readyz")).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    return False


@pytest.fixture(scope="session")
async def live_server(settings: Settings) -> AsyncIterator[str]:
    """The API app on a real port, in-process hosts, no Ray."""
    async with serving(create_app(settings)) as address:
        yield address


@pytest.fixture(scope="session")
async def live_client(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{live_server}", timeout=30) as c:
        yield c


REDIS_URL = os.environ.get("ESSAYCOACH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A local Ray cluster for this test session (started once, ended by us, never `ray stop`)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from serve_app.fastpath.ingress import fast_path_env
    from serve_app.haproxy_launcher import end_recorded, real_haproxy_binary, serve_env

    os.environ.update(fast_path_env())  # test the ingress `make run` uses
    # Serve's HAProxy through our launcher, as `essaycoach run` starts it: its pids recorded (ended
    # below, also those re-parented by a reload), no stats or metrics listeners to collide on.
    run_dir = tmp_path_factory.mktemp("haproxy")
    os.environ.update(serve_env(run_dir, real_binary=real_haproxy_binary(), host="127.0.0.1",
                                stats_port=0, metrics_port=0))
    from serve_app.ports import serve_ports_env

    # Serve's replica and fallback ports of our own: other Serve instances on this machine must
    # never receive this session's requests (nor we theirs).
    os.environ.update(serve_ports_env(free_port()))
    import ray

    ray.init(address="local", namespace=f"test-{uuid.uuid4().hex[:6]}", include_dashboard=False,
             num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()
    from serve_app.haproxy_launcher import recorded
    from serve_app.processes import is_alive

    deadline = time.monotonic() + 10  # killed workers take a moment to go, and their HAProxy with them
    while any(is_alive(r) for r in recorded(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert end_recorded(run_dir) == 0, "Serve's HAProxy outlived ray.shutdown()"


class RedisProcess:
    """A private redis-server on a free port that a test may kill and restart (by pid)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess
        import time

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)], stdout=subprocess.DEVNULL)
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_process(tmp_path: Path) -> Any:
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()
