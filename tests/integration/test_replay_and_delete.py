"""Replay pages stay bounded in bytes, and deleting an essay ends it everywhere at once (issue 13,
item 5)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import websockets

from ops.loadtest.yclient import YClient
from tests.fakes import join, make_assignment, make_class, make_essay, register
from tests.integration.test_sockets import doc_url, ticket

MiB = 1024 * 1024


async def test_replay_with_text_of_a_big_essay_is_paged_by_bytes(live_client, live_server) -> None:
    student = await register(live_client, "student")
    base = "Ж" * 150_000  # 300 KB of text after each step
    essay = await make_essay(live_client, student, text=base)
    c = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    for i in range(40):  # 41 steps x ~300 KB of text: more than one 8 MiB page
        c.type(f" {i}")
        await c.wait_acked()
    await c.close()
    final = (await live_client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)).json()["text"]
    steps, cursor, pages = [], None, 0
    while True:
        params = {"include_text": "true", "limit": 1000, **({"after_seq": cursor} if cursor else {})}
        r = await live_client.get(f"/api/v1/essays/{essay['id']}/replay", params=params, headers=student.headers)
        assert r.status_code == 200
        assert len(r.content) <= 8 * MiB + 400_000  # the budget, plus at most the step that crossed it
        page = r.json()
        steps += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["items"], "a page always moves the cursor"
    assert pages >= 2
    assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 41
    assert steps[-1]["text"] == final


@pytest.fixture
async def server(settings):
    from serve_app.app import create_app
    from tests.conftest import serving

    application = create_app(settings)
    async with serving(application) as address, httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as client:
        yield application, address, client


async def test_deleting_an_essay_closes_its_sockets_and_an_update_racing_it_is_refused(
        server, monkeypatch) -> None:
    from db.repositories import essays as essays_repo

    application, address, client = server
    teacher, student = await register(client, "teacher"), await register(client, "student")
    cls = await make_class(client, teacher)
    await join(client, student, cls["join_code"])
    essay = await make_essay(client, student, (await make_assignment(client, teacher, cls["id"]))["id"], text="draft")
    writer = await YClient(await doc_url(client, address, student, essay["id"])).connect()
    reader = await YClient(await doc_url(client, address, teacher, essay["id"])).connect()
    events = await websockets.connect(
        f"ws://{address}/ws/essays/{essay['id']}/events?ticket={await ticket(client, student)}")
    assert json.loads(await events.recv())["type"] == "presence"

    racing: list[int] = []
    remove = essays_repo.remove

    async def remove_after_a_racing_write(session, *, essay_id: uuid.UUID) -> None:
        # Between the host's unload and the row's removal, another write arrives.
        r = await client.patch(f"/api/v1/essays/{essay_id}", json={"text": "zombie"}, headers=student.headers)
        racing.append(r.status_code)
        await remove(session, essay_id=essay_id)

    monkeypatch.setattr(essays_repo, "remove", remove_after_a_racing_write)
    r = await client.delete(f"/api/v1/essays/{essay['id']}", headers=student.headers)
    assert r.status_code == 204
    assert racing == [404]  # refused: the host would not load the essay again
    assert await writer.wait_closed() == 4404
    assert await reader.wait_closed() == 4404
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(events.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
    hosts = application.state.ctx.hosts.host_objects
    assert all(uuid.UUID(essay["id"]) not in h.essays for h in hosts)
    assert (await client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)).status_code == 404


async def test_a_deleted_essay_stays_gone_after_a_host_reload(settings) -> None:
    from serve_app.app import create_app
    from tests.conftest import serving

    async with serving(create_app(settings)) as address, httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as client:
        student = await register(client, "student")
        essay = await make_essay(client, student, text="draft")
        writer = await YClient(await doc_url(client, address, student, essay["id"])).connect()
        writer.type(" more")
        await writer.wait_acked()
        assert (await client.delete(f"/api/v1/essays/{essay['id']}", headers=student.headers)).status_code == 204
        assert await writer.wait_closed() == 4404
    async with serving(create_app(settings)) as address, httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as client:
        assert (await client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)).status_code == 404
        r = await client.post("/api/v1/auth/ws-ticket", headers=student.headers)
        c = YClient(f"ws://{address}/ws/essays/{essay['id']}/doc?ticket={r.json()['ticket']}")
        await c.connect(wait_synced=False)
        assert await c.wait_closed() == 4404
