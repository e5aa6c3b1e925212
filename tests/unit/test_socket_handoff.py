"""Sockets served past Serve's request path (serve_app.fastpath.handoff and the replica middleware
serve_app.fastpath.serve_hooks.SkipServe), and the Gateway's autoscaling on open sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import websockets

from serve_app.deployments import REQUESTS_METRIC, SOCKETS_METRIC, Gateway, scale_on_sockets
from serve_app.fastpath import handoff
from serve_app.fastpath.serve_hooks import DISCONNECT_DISABLED, SkipServe
from tests.conftest import serving, serving_with_server


class Recorder:
    """A stand-in for Serve's request path behind the middleware: records what reaches it."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


class Echo:
    """Our app's part: accepts a socket, echoes text until the client goes."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        try:
            while (message := await receive())["type"] == "websocket.receive":
                await send({"type": "websocket.send", "text": message["text"]})
        finally:
            self.ended.set()


@pytest.fixture
async def echo() -> Any:
    app = Echo()
    sockets = handoff.register(app)
    yield app, sockets
    handoff.unregister(sockets)


async def test_sockets_go_to_the_registered_app_and_serves_own_routes_to_serve(echo: Any) -> None:
    app, sockets = echo
    serve = Recorder()
    async with serving(SkipServe(serve)) as address:
        async with websockets.connect(f"ws://{address}/ws/anything") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            assert sockets.open == 1
            assert Gateway.record_autoscaling_stats(None) == {SOCKETS_METRIC: 1.0, REQUESTS_METRIC: 0.0}
        await asyncio.wait_for(app.ended.wait(), 5)
        for _ in range(50):
            if sockets.open == 0:
                break
            await asyncio.sleep(0.02)
        assert sockets.open == 0
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://{address}/-/healthz")).status_code == 204
    assert [s["type"] for s in serve.scopes] == ["http"]  # Serve saw its health check, not the socket


async def test_shutdown_closes_open_sockets_going_away_and_waits_for_their_handlers(echo: Any) -> None:
    app, sockets = echo
    async with serving(SkipServe(Recorder())) as address:
        async with websockets.connect(f"ws://{address}/ws/anything") as ws:
            await ws.send("x")
            await ws.recv()
            await sockets.close_all(timeout=5)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert app.ended.is_set() and sockets.open == 0


class Flood:
    """Our app's part for a peer that stops reading: accepts, then on "flood" sends until the
    send waits for the peer (flow control), else echoes."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            if message["text"] == "flood":
                while True:
                    await send({"type": "websocket.send", "bytes": os.urandom(64 * 1024)})
            await send({"type": "websocket.send", "text": message["text"]})


async def _flow_controlled(connection: Any) -> None:
    while connection.writable.is_set():  # the server's connection waits for its peer to read
        await asyncio.sleep(0.01)


async def test_shutdown_closes_every_socket_going_away_within_its_timeout_when_a_peer_reads_nothing() -> None:
    """A close frame waits for its peer's flow control: one peer that reads nothing must hold
    back neither the other sockets' close nor the app's shutdown."""
    sockets = handoff.register(Flood())
    try:
        async with serving_with_server(SkipServe(Recorder())) as (address, server):
            host, port = address.split(":")
            raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.setblocking(False)
            await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
            before = set(server.server_state.connections)
            stuck = await websockets.connect(f"ws://{address}/ws/stuck", sock=raw, max_queue=1, compression=None)
            (connection,) = set(server.server_state.connections) - before
            async with websockets.connect(f"ws://{address}/ws/reading") as reading:
                await stuck.send("flood")  # and never reads again
                await asyncio.wait_for(_flow_controlled(connection), 20)
                await asyncio.wait_for(sockets.close_all(timeout=0.5), 20)
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(reading.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            stuck.transport.abort()  # the dead peer goes; its handler ends with it
    finally:
        handoff.unregister(sockets)


async def test_without_an_app_on_this_loop_sockets_go_through_serve_marked_disconnect_disabled() -> None:
    serve = Recorder()
    middleware = SkipServe(serve)
    # An app registered from another event loop (Serve's user-code thread) is not used here.
    other: list[handoff.Handoff] = []

    def register_elsewhere() -> None:
        async def main() -> None:
            other.append(handoff.register(Echo()))
        asyncio.run(main())

    thread = threading.Thread(target=register_elsewhere)
    thread.start()
    thread.join()
    try:
        assert handoff.for_this_loop() is None
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await middleware({"type": "websocket", "headers": [(b"host", b"x")]}, None, send)
        await middleware({"type": "http", "headers": [(b"host", b"x")]}, None, send)
    finally:
        handoff.unregister(other[0])
    assert serve.scopes[0]["headers"] == [(b"host", b"x"), DISCONNECT_DISABLED]
    assert serve.scopes[1]["headers"] == [(b"host", b"x")]


async def test_a_socket_going_through_serve_is_never_written_past_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our `SendQueue` writes straight to the connection only where our app owns it: a socket
    handed to Serve's path must not see the connection (its frames could overtake Serve's)."""
    from serve_app.fastpath import uvicorn_protocol

    seen: list[Any] = []

    class Serve:
        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append(uvicorn_protocol.current_connection())

    monkeypatch.setattr(handoff, "_registered", [])  # no app of ours on this loop (another test's may be)
    uvicorn_protocol._CONNECTION.set(SimpleNamespace(loop=asyncio.get_running_loop()))  # type: ignore[arg-type]
    assert uvicorn_protocol.current_connection() is not None and handoff.for_this_loop() is None
    await SkipServe(Serve())({"type": "websocket", "headers": []}, None, None)
    assert seen == [None]


def autoscaling_context(*, replicas: int, requests: float, sockets: dict[str, float],
                        in_flight: dict[str, float] | None = None, target: int = 200) -> Any:
    reported = {**({SOCKETS_METRIC: sockets} if sockets else {}), **({REQUESTS_METRIC: in_flight} if in_flight else {})}
    return SimpleNamespace(current_num_replicas=replicas, target_num_replicas=replicas, total_num_requests=requests,
                           aggregated_metrics=reported or None,
                           config=SimpleNamespace(get_target_ongoing_requests=lambda: target))


def test_the_gateway_scales_on_open_sockets_plus_requests() -> None:
    # 1,000 sockets on one replica at 200 per replica want 5 (+ 10 of Serve's ongoing requests).
    desired, state = scale_on_sockets(autoscaling_context(replicas=1, requests=10, sockets={"r1": 1000}))
    assert desired == pytest.approx(1010 / 200) and state == {}
    # Sockets spread over replicas add up; no sockets reported yet: requests alone.
    assert scale_on_sockets(autoscaling_context(replicas=2, requests=0, sockets={"r1": 150, "r2": 250}))[0] == 2
    assert scale_on_sockets(autoscaling_context(replicas=3, requests=100, sockets={}))[0] == 0.5
    # No replica yet: Serve's cold start decides.
    assert scale_on_sockets(autoscaling_context(replicas=0, requests=0, sockets={}))[0] == 0


def test_the_gateway_scales_on_its_http_requests_in_flight_too() -> None:
    """HTTP requests served past Serve's request path are not Serve's ongoing requests: the
    replicas report them (`REQUESTS_METRIC`) and the policy adds them up with the sockets."""
    desired, _ = scale_on_sockets(autoscaling_context(replicas=2, requests=0, sockets={"r1": 100, "r2": 100},
                                                      in_flight={"r1": 150, "r2": 50}))
    assert desired == 2
    assert scale_on_sockets(autoscaling_context(replicas=1, requests=0, sockets={}, in_flight={"r1": 300}))[0] == 1.5


def test_the_gateway_deployment_uses_the_socket_policy() -> None:
    from serve_app.deployments import GatewayArgs, build_app

    gateway = build_app(GatewayArgs())._bound_deployment
    policy = gateway._deployment_config.autoscaling_config.policy
    assert policy.policy_function == "serve_app.deployments.scale_on_sockets"  # what Serve's controller imports
