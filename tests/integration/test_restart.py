"""Restarts: the service (text survives), and Redis (sockets recover, missed events resume)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from ops.loadtest.yclient import YClient
from serve_app.app import create_app
from tests.conftest import make_settings, serving
from tests.fakes import join, make_assignment, make_class, make_essay, register


async def ws_ticket(http: httpx.AsyncClient, account: Any) -> str:
    return (await http.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()["ticket"]


async def test_text_survives_a_service_restart(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    async with serving(create_app(settings)) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            student = await register(http, "student")
            essay = await make_essay(http, student)
            writer = await YClient(
                f"ws://{address}/ws/essays/{essay['id']}/doc?ticket={await ws_ticket(http, student)}").connect()
            for word in ("Nothing ", "typed ", "is ", "lost."):
                writer.type(word)
            await writer.wait_acked()
            await writer.close()
    async with serving(create_app(settings)) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            r = await http.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
            assert r.json()["text"] == "Nothing typed is lost."
            reader = await YClient(
                f"ws://{address}/ws/essays/{essay['id']}/doc?ticket={await ws_ticket(http, student)}").connect()
            assert await reader.wait_text(lambda t: t == "Nothing typed is lost.")
            await reader.close()


async def test_redis_restart_sockets_recover_and_resume_returns_missed_events(
    database_url: str, tmp_path: Path, redis_process: Any
) -> None:
    settings = make_settings(database_url, tmp_path, redis_url=redis_process.url)
    async with serving(create_app(settings)) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            teacher, student = await register(http, "teacher"), await register(http, "student")
            cls = await make_class(http, teacher)
            await join(http, student, cls["join_code"])
            essay = await make_essay(http, student, (await make_assignment(http, teacher, cls["id"]))["id"])
            base = f"ws://{address}/ws/essays/{essay['id']}"
            writer = await YClient(f"{base}/doc?ticket={await ws_ticket(http, student)}").connect()
            reader = await YClient(f"{base}/doc?ticket={await ws_ticket(http, teacher)}").connect()
            events = await websockets.connect(f"{base}/events?ticket={await ws_ticket(http, teacher)}")
            hello = json.loads(await events.recv())
            writer.type("before. ")
            await writer.wait_acked()
            await reader.wait_text(lambda t: t == "before. ")

            redis_process.stop()
            writer.type("during the outage. ")
            await writer.wait_acked()  # durability never depended on Redis
            await asyncio.sleep(3)  # saved/feedback events are published into the void
            redis_process.start()

            # The teacher's doc socket gets the whole document after resubscribe.
            assert await reader.wait_text(lambda t: t == "before. during the outage. ", timeout=20)
            kinds = []
            while "resync" not in kinds:
                kinds.append(json.loads(await asyncio.wait_for(events.recv(), 20))["type"])
            await events.send(json.dumps({"type": "resume", "last_seq": hello["seq"], "epoch": hello["epoch"]}))
            missed = []
            while not any(e["type"] == "saved" for e in missed):
                missed.append(json.loads(await asyncio.wait_for(events.recv(), 10)))
            assert missed[0]["seq"] == hello["seq"] + 1
            writer.type("after.")
            await writer.wait_acked()
            assert await reader.wait_text(lambda t: t.endswith("after."), timeout=10)
            await events.close()
            await writer.close()
            await reader.close()


async def test_while_an_essay_host_is_unavailable_sockets_close_1013_and_rest_answers_503(
    database_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """A host Ray is still restarting (its node lost) fails the Gateway's calls after the retry
    window with HostUnavailable: the client is told to come back (1013, 503), and nothing is lost."""
    from actors.host_api import HostUnavailable

    settings = make_settings(database_url, tmp_path)
    app = create_app(settings)
    async with serving(app) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            student = await register(http, "student")
            essay = await make_essay(http, student)
            base = f"ws://{address}/ws/essays/{essay['id']}"
            writer = await YClient(f"{base}/doc?ticket={await ws_ticket(http, student)}").connect()
            writer.type("Saved before the host went away.")
            await writer.wait_acked()
            await writer.close()

            import uuid

            host = app.state.ctx.hosts.host_for(uuid.UUID(essay["id"]))

            async def unavailable(*args: Any, **kwargs: Any) -> Any:
                raise HostUnavailable("essay host unavailable: its node is gone")

            for method in ("sync", "attach", "read", "current", "event_state", "events_after"):
                monkeypatch.setattr(host, method, unavailable)
            doc = await YClient(f"{base}/doc?ticket={await ws_ticket(http, student)}").connect(wait_synced=False)
            assert await doc.wait_closed() == 1013
            assert doc.close_reason == "essay host unavailable; reconnect"
            async with websockets.connect(f"{base}/events?ticket={await ws_ticket(http, student)}") as events:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(events.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            r = await http.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.json()["code"] == "essay_host_unavailable"

            monkeypatch.undo()  # the host is back: the text is all there
            reader = await YClient(f"{base}/doc?ticket={await ws_ticket(http, student)}").connect()
            assert str(reader.text) == "Saved before the host went away."
            await reader.close()
