"""HTTP requests served past Serve's request path (serve_app.fastpath.handoff and the replica
middleware serve_app.fastpath.serve_hooks.SkipServe): they reach our app without Serve's handling,
count as in flight for the autoscaler and at shutdown, errors still answer 500 problem+json, and
Serve's own routes stay Serve's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from ray.serve._private.http_util import RequestIdMiddleware

from serve_app.deployments import REQUESTS_METRIC, SOCKETS_METRIC, Gateway
from serve_app.errors import PROBLEM, install_handlers
from serve_app.fastpath import handoff
from serve_app.fastpath.serve_hooks import SkipServe
from tests.conftest import serving_with_server


class Serve:
    """A stand-in for Serve's request path behind the middleware (`Replica._direct_ingress_asgi`,
    on a replica with `route_prefix`): records the paths that reach it and answers 204."""

    def __init__(self, route_prefix: str = "/") -> None:
        self._route_prefix = route_prefix
        self.paths: list[str] = []

    async def _direct_ingress_asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def server_app(self) -> Any:
        """Our middleware around Serve's, as `http_util._apply_middlewares` builds the replica's
        app (whose server runs with lifespan off)."""
        app = SkipServe(RequestIdMiddleware(self._direct_ingress_asgi))

        async def no_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "lifespan":
                await app(scope, receive, send)

        return no_lifespan


class Ours:
    """Our app's part: answers each request with its path and root path; `/slow` waits for `release`."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        if scope["path"].endswith("/slow"):
            self.entered.set()
            await self.release.wait()
        body = f"{scope['root_path']}|{scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@contextmanager
def handed_off(app: Any) -> Iterator[handoff.Handoff]:
    """`app` takes the replica middleware's hand-off while inside (from a coroutine: its loop)."""
    registered = handoff.register(app)
    try:
        yield registered
    finally:
        handoff.unregister(registered)


@pytest.fixture
async def ours() -> AsyncIterator[tuple[Ours, handoff.Handoff]]:
    app = Ours()
    with handed_off(app) as registered:
        yield app, registered


async def test_an_http_request_reaches_our_app_past_serve_and_counts_in_flight(ours: Any) -> None:
    app, registered = ours
    serve = Serve()
    async with serving_with_server(serve.server_app()) as (address, _server), \
            httpx.AsyncClient(base_url=f"http://{address}") as http:
        r = await http.get("/api/v1/auth/me")
        assert (r.status_code, r.text) == (200, "|/api/v1/auth/me")
        assert "x-request-id" not in r.headers  # Serve's RequestIdMiddleware was not entered either
        slow = asyncio.create_task(http.get("/api/v1/slow"))
        await asyncio.wait_for(app.entered.wait(), 10)
        try:
            assert registered.requests == 1
            assert Gateway.record_autoscaling_stats(None) == {SOCKETS_METRIC: 0.0, REQUESTS_METRIC: 1.0}
        finally:
            app.release.set()
        assert (await asyncio.wait_for(slow, 10)).status_code == 200
        assert registered.requests == 0
    assert serve.paths == []


async def test_serves_own_routes_stay_serves_and_the_rest_is_ours(ours: Any) -> None:
    """`/-/healthz` (HAProxy's health check of the replica: 503 while it drains) and `/-/routes`
    are answered by Serve on the replica's server; every other path is our app's."""
    app, _ = ours
    serve = Serve()
    async with serving_with_server(serve.server_app()) as (address, _server), \
            httpx.AsyncClient(base_url=f"http://{address}") as http:
        for path in ("/-/healthz", "/-/routes", "/healthz", "/api/v1/classes"):
            await http.get(path)
    assert serve.paths == ["/-/healthz", "/-/routes"]
    assert [s["path"] for s in app.scopes] == ["/healthz", "/api/v1/classes"]


async def test_under_a_route_prefix_our_app_gets_it_as_root_path_and_other_paths_stay_serves(ours: Any) -> None:
    """As Serve's `_direct_ingress_asgi` routes: the replica's route prefix (read per request)
    becomes the root path; a path outside it is Serve's (its 404)."""
    app, _ = ours
    serve = Serve(route_prefix="/plain")
    async with serving_with_server(serve.server_app()) as (address, _server), \
            httpx.AsyncClient(base_url=f"http://{address}") as http:
        assert (await http.get("/plain/api/v1/classes")).text == "/plain|/plain/api/v1/classes"
        assert (await http.get("/other/api/v1/classes")).status_code == 204
        serve._route_prefix = "/"  # redeployed at /
        assert (await http.get("/other/api/v1/classes")).text == "|/other/api/v1/classes"
    assert serve.paths == ["/other/api/v1/classes"]


async def test_a_request_in_flight_when_the_server_stops_finishes_and_the_apps_shutdown_waits_for_it(
        ours: Any) -> None:
    """A replica's stop: Serve stops its server (uvicorn lets the request finish), then our app's
    lifespan (`close_all`) waits for requests still in flight before it closes anything."""
    app, registered = ours
    async with serving_with_server(Serve().server_app()) as (address, server), \
            httpx.AsyncClient(base_url=f"http://{address}") as http:
        slow = asyncio.create_task(http.get("/api/v1/slow"))
        await asyncio.wait_for(app.entered.wait(), 10)
        server.should_exit = True
        closing = asyncio.create_task(registered.close_all(timeout=60))
        try:
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert not closing.done() and not slow.done() and registered.requests == 1
        finally:
            app.release.set()  # else a failure above would wait for the request forever
        r = await asyncio.wait_for(slow, 10)
        assert (r.status_code, r.text) == (200, "|/api/v1/slow")
        await asyncio.wait_for(closing, 10)
        assert registered.requests == 0


async def test_a_handler_error_answers_500_problem_json_and_keeps_the_connection() -> None:
    """Our app's handler answers and logs the error (serve_app.errors); Starlette raises it again,
    which Serve's path swallowed: so does the hand-off, so uvicorn keeps the connection (HAProxy's,
    kept alive) open for the next request."""
    api = FastAPI()
    install_handlers(api)
    clients: list[Any] = []

    @api.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            clients.append(scope["client"])
        await api(scope, receive, send)

    serve = Serve()
    with handed_off(app) as registered:
        async with serving_with_server(serve.server_app()) as (address, _server), \
                httpx.AsyncClient(base_url=f"http://{address}") as http:
            for _ in range(2):
                r = await http.get("/boom")
                assert r.status_code == 500 and r.headers["content-type"] == PROBLEM
                assert r.json()["code"] == "internal_error"
        assert serve.paths == [] and registered.requests == 0
    assert len(clients) == 2 and clients[0] == clients[1]  # one connection for both
