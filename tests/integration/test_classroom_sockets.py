"""Roster removal, suspension, archive and deadlines as seen by real sockets (uvicorn, in-process
hosts; across two Gateway replicas sharing Redis for the removal)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets

from ops.loadtest.yclient import ClassDocsClient, YClient
from serve_app.app import create_app
from tests.conftest import REDIS_URL, serving
from tests.fakes import Account, join, make_admin, make_assignment, make_class, make_essay, register
from tests.integration.test_class_docs_socket import docs_url
from tests.integration.test_sockets import doc_url, ticket

API = "/api/v1"


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


@pytest.fixture
async def room(live_client: httpx.AsyncClient) -> dict[str, Any]:
    teacher, student = await register(live_client, "teacher"), await register(live_client, "student")
    cls = await make_class(live_client, teacher)
    await join(live_client, student, cls["join_code"])
    assignment = await make_assignment(live_client, teacher, cls["id"])
    essay = await make_essay(live_client, student, assignment["id"], text="Mine.")
    return {"teacher": teacher, "student": student, "class": cls, "essay": essay}


async def test_removal_closes_every_socket_on_the_students_class_essays_4404(live_client, live_server, room) -> None:
    teacher, student, cls, essay = room["teacher"], room["student"], room["class"], room["essay"]
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    watcher = await YClient(await doc_url(live_client, live_server, teacher, essay["id"])).connect()
    events = await websockets.connect(
        f"ws://{live_server}/ws/essays/{essay['id']}/events?ticket={await ticket(live_client, student)}")
    await events.recv()  # presence: open and tracked
    live = await websockets.connect(
        f"ws://{live_server}/ws/classes/{cls['id']}/live?ticket={await ticket(live_client, teacher)}")
    assert json.loads(await asyncio.wait_for(live.recv(), 10))["student_id"] == student.id
    r = await live_client.delete(f"{API}/classes/{cls['id']}/students/{student.id}", headers=teacher.headers)
    assert r.status_code == 204
    while (message := json.loads(await asyncio.wait_for(live.recv(), 10)))["type"] != "student_removed":
        pass
    assert message == {"type": "student_removed", "class_id": cls["id"], "student_id": student.id}
    await live.close()
    assert await writer.wait_closed() == 4404
    assert await watcher.wait_closed() == 4404
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(events.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4404
    # The teacher cannot come back; the student reopens their (now private) essay and writes.
    late_watcher = await websockets.connect(await doc_url(live_client, live_server, teacher, essay["id"]))
    with pytest.raises(websockets.ConnectionClosed) as refused:
        await asyncio.wait_for(late_watcher.recv(), 10)  # closed after accept, before any sync
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 4404
    again = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    again.type(" Still mine.")
    await again.wait_acked()
    await again.close()


async def test_removal_on_one_replica_closes_sockets_held_by_another(settings, room, live_client) -> None:
    teacher, student, cls, essay = room["teacher"], room["student"], room["class"], room["essay"]
    shared = settings.model_copy(update={"redis_url": REDIS_URL})
    async with serving(create_app(shared)) as replica_a, serving(create_app(shared)) as replica_b:
        async with httpx.AsyncClient(base_url=f"http://{replica_a}", timeout=30) as client_a, \
                httpx.AsyncClient(base_url=f"http://{replica_b}", timeout=30) as client_b:
            writer = await YClient(await doc_url(client_a, replica_a, student, essay["id"])).connect()
            r = await client_b.delete(f"{API}/classes/{cls['id']}/students/{student.id}", headers=teacher.headers)
            assert r.status_code == 204
            assert await writer.wait_closed() == 4404


async def test_suspension_closes_the_users_sockets_and_refuses_new_ones(live_client, live_server, room,
                                                                       settings) -> None:
    student, essay, teacher = room["student"], room["essay"], room["teacher"]
    admin = await make_admin(live_client, settings.database_url)
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    spare = await ticket(live_client, student)  # issued before the suspension
    watcher = await YClient(await doc_url(live_client, live_server, teacher, essay["id"])).connect()
    r = await live_client.post(f"{API}/admin/users/{student.id}/suspend", headers=admin.headers)
    assert r.status_code == 200
    assert await writer.wait_closed() == 4401
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(f"ws://{live_server}/ws/essays/{essay['id']}/doc?ticket={spare}")
    r = await live_client.post(f"{API}/auth/ws-ticket", headers=student.headers)
    assert r.status_code == 401 and r.json()["code"] == "account_suspended"
    # Other users' sockets on the same essay stay open (the replica closed the matching ones at once).
    await watcher.round_trip()
    await watcher.close()


async def _closed_essay(client: httpx.AsyncClient, teacher: Account, student: Account, class_id: str) -> dict[str, Any]:
    """An essay of `student` on an assignment past its hard close (started under a withdrawn extension)."""
    r = await client.post(f"{API}/classes/{class_id}/assignments",
                          json={"title": "Closed", "due_at": iso(-timedelta(hours=2)),
                                "close_at": iso(-timedelta(hours=1))}, headers=teacher.headers)
    assignment = r.json()
    ext = f"{API}/classes/{class_id}/assignments/{assignment['id']}/extensions/{student.id}"
    assert (await client.put(ext, json={"due_at": iso(timedelta(days=1))}, headers=teacher.headers)).status_code == 200
    essay = await make_essay(client, student, assignment["id"], text="Before the close.")
    assert (await client.delete(ext, headers=teacher.headers)).status_code == 204
    return essay


async def test_after_the_close_doc_socket_writes_are_refused_like_a_readers(live_client, live_server, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    essay = await _closed_essay(live_client, teacher, student, cls["id"])
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    assert str(writer.text) == "Before the close."  # reads still work
    writer.type(" After the close.")
    assert await writer.wait_closed() == 4403
    assert writer.permission_denied
    r = await live_client.get(f"{API}/essays/{essay['id']}", headers=student.headers)
    assert r.json()["text"] == "Before the close."


async def test_archiving_closes_writers_4403_and_they_reopen_read_only(live_client, live_server, room) -> None:
    teacher, student, cls, essay = room["teacher"], room["student"], room["class"], room["essay"]
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    assert (await live_client.post(f"{API}/classes/{cls['id']}/archive", headers=teacher.headers)).status_code == 200
    assert await writer.wait_closed() == 4403
    reader = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    reader.type(" archived?")
    assert await reader.wait_closed() == 4403 and reader.permission_denied
    assert (await live_client.get(f"{API}/essays/{essay['id']}", headers=student.headers)).json()["text"] == "Mine."


async def test_live_class_rows_carry_the_deadline_status_on_every_teacher_socket(live_client, live_server,
                                                                                 room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    r = await live_client.post(f"{API}/classes/{cls['id']}/assignments",
                               json={"title": "Due soon", "due_at": iso(timedelta(hours=3))}, headers=teacher.headers)
    essay = await make_essay(live_client, student, r.json()["id"], text="Fresh start.")
    lives = [await websockets.connect(
        f"ws://{live_server}/ws/classes/{cls['id']}/live?ticket={await ticket(live_client, teacher)}")
        for _ in range(2)]  # two tabs: they share the class's feed on this replica
    for live in lives:
        first = json.loads(await asyncio.wait_for(live.recv(), 10))
        assert first["essay_id"] == essay["id"]  # the student's most recent essay
        assert first["deadline_status"] == "on_time" and first["due_at"] is not None
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    writer.type(" More words.")
    await writer.wait_acked()
    rows = [json.loads(await asyncio.wait_for(live.recv(), 10)) for live in lives]
    assert rows[0] == rows[1]
    assert rows[0]["essay_id"] == essay["id"] and rows[0]["deadline_status"] == "on_time"
    assert rows[0]["due_at"] is not None
    await writer.close()
    for live in lives:
        await live.close()


async def test_removing_a_co_teacher_closes_their_sockets_on_the_class_only(live_client, live_server, room) -> None:
    teacher, cls, essay = room["teacher"], room["class"], room["essay"]
    co = await register(live_client, "teacher")
    r = await live_client.post(f"{API}/classes/{cls['id']}/teachers", json={"teacher_id": co.id},
                               headers=teacher.headers)
    assert r.status_code == 201, r.text
    other_cls = await make_class(live_client, co, "Their own class")

    async def live_socket(account: Account, class_id: str) -> Any:
        ws = await websockets.connect(
            f"ws://{live_server}/ws/classes/{class_id}/live?ticket={await ticket(live_client, account)}")
        return ws

    co_live, owner_live = await live_socket(co, cls["id"]), await live_socket(teacher, cls["id"])
    for ws in (co_live, owner_live):  # open and tracked
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["essay_id"] == essay["id"]
    co_own = await live_socket(co, other_cls["id"])
    co_doc = await YClient(await doc_url(live_client, live_server, co, essay["id"])).connect()
    owner_doc = await YClient(await doc_url(live_client, live_server, teacher, essay["id"])).connect()
    co_docs = await ClassDocsClient(await docs_url(live_client, live_server, co, cls["id"])).connect()
    owner_docs = await ClassDocsClient(await docs_url(live_client, live_server, teacher, cls["id"])).connect()
    await co_docs.follow(essay["id"])
    await owner_docs.follow(essay["id"])
    r = await live_client.delete(f"{API}/classes/{cls['id']}/teachers/{co.id}", headers=teacher.headers)
    assert r.status_code == 204
    assert await co_doc.wait_closed() == 4404
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(co_live.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4404
    assert await co_docs.wait_closed() == 4404
    # Their socket on their own class and the owner's sockets on this one (closed, were they
    # matched, by the same message as the co-teacher's) answer after it.
    for ws in (co_own, owner_live):
        await asyncio.wait_for(await ws.ping(), 10)
    await owner_doc.round_trip()
    await asyncio.wait_for(owner_docs.follow(essay["id"]), 20)
    assert owner_docs.close_code is None and owner_docs.docs[essay["id"]].synced.is_set()
    for ws in (owner_live, co_own):
        await ws.close()
    for client in (owner_doc, owner_docs):
        await client.close()


async def test_a_new_extension_reaches_the_students_open_events_socket(live_client, live_server, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    assignment_id = room["essay"]["assignment_id"]
    events = await websockets.connect(
        f"ws://{live_server}/ws/essays/{room['essay']['id']}/events?ticket={await ticket(live_client, student)}")
    presence = json.loads(await asyncio.wait_for(events.recv(), 10))
    assert presence["type"] == "presence"
    due = datetime.now(UTC) + timedelta(days=2)
    ext = f"{API}/classes/{cls['id']}/assignments/{assignment_id}/extensions/{student.id}"
    assert (await live_client.put(ext, json={"due_at": due.isoformat()}, headers=teacher.headers)).status_code == 200

    async def next_deadline() -> dict[str, Any]:
        while (event := json.loads(await asyncio.wait_for(events.recv(), 10)))["type"] != "deadline":
            pass
        return event  # type: ignore[no-any-return]

    event = await next_deadline()
    assert event["essay_id"] == room["essay"]["id"] and event["assignment_id"] == assignment_id
    assert event["extended"] is True and datetime.fromisoformat(event["due_at"]) == due
    assert event["deadline_status"] == "on_time" and event["seq"] > presence["seq"]  # numbered: resumable
    assert (await live_client.delete(ext, headers=teacher.headers)).status_code == 204
    withdrawn = await next_deadline()
    assert withdrawn["extended"] is False and withdrawn["seq"] == event["seq"] + 1
    await events.close()
