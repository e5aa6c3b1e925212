"""The app with the fast path off (`ESSAYCOACH_FAST_PATH=off`), served as plain Serve would: by
uvicorn's own websocket protocol and Starlette's websockets, with no direct hand-off. The other
socket tests run with it on (`tests.conftest.serving` uses `uvicorn_protocol.LeanWebSocketProtocol`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from ops.loadtest.yclient import YClient
from serve_app.app import create_app
from serve_app.fastpath import handoff
from serve_app.settings import Settings
from tests.conftest import serving
from tests.fakes import join, make_assignment, make_class, make_essay, register


@pytest.fixture
async def plain(settings: Settings) -> AsyncIterator[tuple[str, httpx.AsyncClient, object]]:
    app = create_app(settings.model_copy(update={"fast_path": False}))
    async with serving(app, lean_protocol=False) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http:
            yield address, http, app


async def test_with_the_fast_path_off_sockets_are_served_by_plain_uvicorn_and_starlette(plain) -> None:
    address, http, app = plain
    assert all(d.app is not app for d in handoff._registered)  # nothing to hand sockets to
    teacher, student = await register(http, "teacher"), await register(http, "student")
    cls = await make_class(http, teacher)
    await join(http, student, cls["join_code"])
    essay = await make_essay(http, student, (await make_assignment(http, teacher, cls["id"]))["id"])

    async def url(account: object, kind: str = "doc") -> str:
        ticket = (await http.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()["ticket"]  # type: ignore[attr-defined]
        return f"ws://{address}/ws/essays/{essay['id']}/{kind}?ticket={ticket}"

    writer, reader = [await YClient(await url(account)).connect() for account in (student, teacher)]
    writer.type("Plain Serve still works.")
    await writer.wait_acked()  # committed: the ack path (no `send_now` here) holds
    assert await reader.wait_text(lambda t: t == "Plain Serve still works.")
    # uvicorn's defaults, untouched: it negotiates permessage-deflate (WS_COMPRESSION is a fast path setting).
    async with websockets.connect(await url(student, "events"), compression="deflate") as ws:
        assert ws.response is not None and "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        assert '"presence"' in await ws.recv()
    for client in (writer, reader):
        await client.close()
