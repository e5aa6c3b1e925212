"""A doc socket whose peer has fallen behind still gets the ack of every durable update before
its close frame, whoever closes it: the server stopping (1012), the app stopping (1001), a
fan-out that overflows its send queue (1013), a REST action closing it on the bus (`control`),
its essay moving to another host (1013), and its own task's closes for an unavailable host
(1013) or an internal error (1011). The ack was queued behind frames the peer had not read, and
every one of those closes drops the queue; the socket's last words
(`serve_app.realtime.connection.SendQueue.before_close`) are written by our websocket protocol
just before the close frame, without waiting for the peer.

Over real websockets with in-process hosts (no Ray). Student A's socket stops reading (a small
receive buffer on its side, a small send buffer on the server's: a slow link) while the same
student's second socket B types, until the server's connection to A is flow-controlled and its
frames wait in A's send queue. Then A sends one update; its ack is released and queued behind
them; then the close comes. A reads everything afterwards and must find that ack before the
close frame.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from pycrdt import Doc, Text, create_sync_message, create_update_message

from actors.broadcast import MOVED
from actors.host_api import HostUnavailable
from ops.loadtest.yclient import YClient
from serve_app.fastpath import handoff
from serve_app.fastpath.serve_hooks import SkipServe
from serve_app.realtime import connection as connection_module
from serve_app.realtime import control
from serve_app.realtime.protocol import CloseCode

OUTBOUND_MAX_BYTES = 128 * 1024
CHUNK = 16 * 1024


@dataclass
class Behind:
    """A's raw socket (not reading), the server's connection to it, and what the test needs."""

    a: websockets.ClientConnection
    b: YClient
    connection: Any  # the server's `LeanWebSocketProtocol` for A
    application: Any
    server: Any
    essay_id: uuid.UUID
    student_id: uuid.UUID
    update: bytes  # A's one update (its ack counts 1)
    acked: asyncio.Event  # A's update is answered and its ack written (queued) by the server


def _watch_answer(hosts: Any, update: Callable[[], bytes | None], acked: asyncio.Event) -> None:
    """`acked` is set one callback after the host's answer to `update()`: after the turn's
    `AckBatch` flush, which the answer scheduled first."""
    submit = hosts.submit_update

    def submit_update(essay_id: Any, data: bytes, *args: Any, answer: Callable[..., None], **kwargs: Any) -> None:
        if data != update():
            submit(essay_id, data, *args, answer=answer, **kwargs)
            return

        def answered(*result: Any) -> None:
            answer(*result)
            asyncio.get_running_loop().call_soon(acked.set)

        submit(essay_id, data, *args, answer=answered, **kwargs)

    hosts.submit_update = submit_update


async def _open_not_reading(url: str, address: str) -> websockets.ClientConnection:
    """A client socket with a small receive buffer that reads one message ahead at most."""
    host, port = address.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window stays small
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    # No compression: the typing must fill the link, not deflate to nothing.
    return await websockets.connect(url, sock=sock, max_queue=1, max_size=None, compression=None, open_timeout=20)


@asynccontextmanager
async def behind(settings: Any) -> AsyncIterator[Behind]:
    from serve_app.app import create_app
    from serve_app.hosts import InProcessHosts
    from tests.conftest import serving_with_server
    from tests.fakes import class_essay

    settings = settings.model_copy(update={"ws_outbound_max_bytes": OUTBOUND_MAX_BYTES, "max_essay_chars": 5_000_000,
                                           "fast_path": True})
    application = create_app(settings, hosts_factory=lambda s, ctx: InProcessHosts(s, ctx))
    # The replica middleware in front, as on a Gateway replica: sockets go through the app's hand-off.
    async with serving_with_server(SkipServe(application)) as (address, server), \
            httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as client:
        _, student, essay = await class_essay(client)
        hosts = application.state.ctx.hosts
        acked = asyncio.Event()
        mine: list[bytes] = []
        _watch_answer(hosts, lambda: mine[0] if mine else None, acked)

        async def doc_url() -> str:
            r = await client.post("/api/v1/auth/ws-ticket", headers=student.headers)
            return f"ws://{address}/ws/essays/{essay['id']}/doc?ticket={r.json()['ticket']}"

        b = await YClient(await doc_url()).connect()
        b.type("start ")
        await b.wait_acked()  # the essay's room is known here: B's typing reaches A on receipt
        before = set(server.server_state.connections)
        a = await _open_not_reading(await doc_url(), address)
        try:
            (connection,) = set(server.server_state.connections) - before
            # A slow link: what the server has written waits in its own small send buffer.
            connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            for _ in range(100):
                if not connection.writable.is_set():
                    break
                b.type("x" * CHUNK)
                await b.wait_acked()
            assert not connection.writable.is_set(), "the server's connection to A never fell behind"
            b.type("y" * CHUNK)  # at least one frame for A waits in its send queue now
            await b.wait_acked()
            doc = Doc()
            text = doc.get("content", type=Text)
            updates: list[bytes] = []
            doc.observe(lambda event: updates.append(event.update))
            text += "mine"
            mine.append(updates[0])
            await a.send(create_update_message(updates[0]))
            await asyncio.wait_for(acked.wait(), 20)
            yield Behind(a=a, b=b, connection=connection, application=application, server=server,
                         essay_id=uuid.UUID(essay["id"]), student_id=uuid.UUID(student.id), update=mine[0],
                         acked=acked)
        finally:
            await b.close()
            await a.close()


async def _read_to_close(a: websockets.ClientConnection) -> tuple[int, int | None]:
    """A reads everything now: (the largest ack n it got before the close frame, the close code)."""
    acked = 0
    try:
        async for frame in a:
            if isinstance(frame, bytes) and frame[:1] == b"\x64":  # [100][n], n < 128 here
                acked = max(acked, frame[1])
    except websockets.ConnectionClosed:
        pass
    return acked, a.close_code


def _failing_sync(hosts: list[Any], error: Exception) -> None:
    for host in hosts:
        async def sync(_essay_id: uuid.UUID, _state_vector: bytes) -> Any:
            raise error

        host.sync = sync


@pytest.mark.parametrize(("closing", "code"), [
    ("server-stops", 1012),
    # The app's 1001 does not drop the queue: its close frame waits behind it for the peer, so
    # this one holds without the last words too (`test_socket_handoff` has its bound).
    ("app-stops", CloseCode.GOING_AWAY),
    ("queue-overflows", CloseCode.TRY_AGAIN_LATER),
    ("rest-action", CloseCode.FORBIDDEN),
    ("essay-moved", CloseCode.TRY_AGAIN_LATER),
    ("host-unavailable", CloseCode.TRY_AGAIN_LATER),
    ("internal-error", CloseCode.INTERNAL_ERROR),
])
async def test_a_peer_behind_gets_its_durable_updates_ack_before_any_close(
        settings: Any, closing: str, code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The handler's own closes wait a moment for the queue to go out: A is slower than that.
    monkeypatch.setattr(connection_module, "CLOSE_DRAIN_SECONDS", 0)
    async with behind(settings) as s:
        hosts = s.application.state.ctx.hosts
        stopping: asyncio.Future[None] | None = None
        if closing == "server-stops":
            s.connection.shutdown()  # what uvicorn's `Server.shutdown` does to each connection
        elif closing == "app-stops":
            sockets = handoff.current()
            assert sockets is not None and sockets.open == 2
            stopping = asyncio.ensure_future(sockets.close_all(timeout=30))  # the app's lifespan, ending
        elif closing == "queue-overflows":
            s.b.type("z" * (OUTBOUND_MAX_BYTES + 1))  # one fan-out frame more than A's queue may hold
        elif closing == "rest-action":
            await control.close_sockets(hosts.bus, code=CloseCode.FORBIDDEN, reason="class archived",
                                        essay_ids=[s.essay_id])
        elif closing == "essay-moved":
            hosts.bus.deliver_local(f"essay:{s.essay_id}:doc", MOVED)  # as its host hands it over
        else:
            _failing_sync(hosts.host_objects, HostUnavailable("essay host unavailable") if closing == "host-unavailable"
                          else RuntimeError("a bug in the host"))
            await s.a.send(create_sync_message(Doc()))  # A's sync step 1 reaches the failing host
        acked, close_code = await asyncio.wait_for(_read_to_close(s.a), 30)
        if stopping is not None:
            await stopping
        assert close_code == code
        assert acked == 1  # A's one update was durable: its ack came before the close frame
