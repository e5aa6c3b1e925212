"""Privacy (README "Privacy"): a student downloads all their data, and an admin deletes a student
with everything of theirs, on SQLite and PostgreSQL, through the real app over real sockets."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import func, select

from db.engine import make_engine, make_sessionmaker
from db.models import Base, EssayUpdate, Revision
from db.repositories import submissions as submissions_repo
from ops.loadtest.yclient import YClient
from serve_app.app import create_app
from tests.conftest import make_settings
from tests.fakes import (
    PASSWORD,
    Account,
    assert_problem,
    join,
    login,
    make_admin,
    make_assignment,
    make_class,
    make_essay,
    register,
)
from tests.integration.test_sockets import doc_url, ticket

API = "/api/v1"


async def submitted(client: httpx.AsyncClient, account: Account, essay_id: str) -> dict[str, Any]:
    """Submit the essay and wait until its analysis is done."""
    r = await client.post(f"{API}/essays/{essay_id}/submit", headers=account.headers)
    assert r.status_code == 202, r.text
    for _ in range(300):
        sub = (await client.get(f"{API}/submissions/{r.json()['id']}", headers=account.headers)).json()
        if sub["status"] in ("done", "failed"):
            return sub  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError("the submission never finished")


@pytest.fixture
async def school(live_client: httpx.AsyncClient, settings) -> dict[str, Any]:
    """A class with two students, each with an essay for its assignment; the teacher commented on
    the first one's essay and both submitted; the first has AI usage and rate buckets."""
    teacher = await register(live_client, "teacher", name="Ms Teacher")
    name = f"Ada Lovelace {uuid.uuid4().hex[:6]}"
    ada, bob = await register(live_client, "student", name=name), await register(live_client, "student")
    cls = await make_class(live_client, teacher)
    for s in (ada, bob):
        await join(live_client, s, cls["join_code"])
    assignment = await make_assignment(live_client, teacher, cls["id"])
    marker = f"Aardvark{uuid.uuid4().hex[:8]}"
    essay = await make_essay(live_client, ada, assignment["id"], text=f"My thesis on the {marker}. It is strong.")
    other = await make_essay(live_client, bob, assignment["id"], text="Bob's own Okapi paragraph stays.")
    r = await live_client.post(f"{API}/essays/{essay['id']}/comments", json={"body": "Nice thesis", "start": 0,
                                                                             "end": 8}, headers=teacher.headers)
    assert r.status_code == 201, r.text
    r = await live_client.post(f"{API}/essays/{essay['id']}/coach", headers=ada.headers,
                               json={"question": f"How can my {marker} thesis be clearer?", "about": "essay"})
    assert r.status_code == 201, r.text
    ada_sub, bob_sub = await submitted(live_client, ada, essay["id"]), await submitted(live_client, bob, other["id"])
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            await submissions_repo.add_usage(
                session, submission_id=uuid.UUID(ada_sub["id"]), essay_id=uuid.UUID(essay["id"]),
                class_id=uuid.UUID(cls["id"]), provider="openai", model="gpt-test", prompt_tokens=120,
                completion_tokens=30, now=datetime.now().astimezone(), user_id=uuid.UUID(ada.id))
            await session.commit()
    finally:
        await engine.dispose()
    assert (await login(live_client, ada.email, "wrong-password-1!")).status_code == 401  # a login bucket
    return {"teacher": teacher, "ada": ada, "bob": bob, "class": cls, "essay": essay, "other": other,
            "marker": marker, "name": name, "ada_sub": ada_sub, "bob_sub": bob_sub}


async def test_a_student_downloads_all_their_data_and_nothing_of_anyone_else(live_client, school) -> None:
    ada, essay, marker = school["ada"], school["essay"], school["marker"]
    r = await live_client.get(f"{API}/me/export", headers=ada.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"].startswith('attachment; filename="essaycoach-export-')
    data = r.json()
    assert data["format"] == "essaycoach-export/1"
    assert data["account"] == {"id": ada.id, "email": ada.email, "name": school["name"], "role": "student",
                               "created_at": data["account"]["created_at"]}
    assert [c["id"] for c in data["classes"]] == [school["class"]["id"]]
    assert data["classes"][0]["teacher_name"] == "Ms Teacher"
    [exported] = data["essays"]
    assert exported["id"] == essay["id"] and marker in exported["text"]
    assert exported["revisions"] and any(marker in rev["text"] for rev in exported["revisions"])
    assert [(c["author_name"], c["body"]) for c in exported["comments"]] == [("Ms Teacher", "Nice thesis")]
    assert isinstance(exported["feedback"], list)
    [turn] = exported["coach"]
    assert turn["question"] == f"How can my {marker} thesis be clearer?" and turn["answer"]
    [sub] = data["submissions"]
    assert sub["id"] == school["ada_sub"]["id"] and marker in sub["text"] and sub["status"] == "done"
    assert "scores" in sub and "feedback" in sub
    assert ("gpt-test", 120) in [(u["model"], u["prompt_tokens"]) for u in data["ai_usage"]]
    assert {u["submission_id"] for u in data["ai_usage"]} == {school["ada_sub"]["id"]}
    raw = r.text
    for foreign in ("Okapi", school["bob"].id, school["bob"].email, school["other"]["id"], school["bob_sub"]["id"]):
        assert foreign not in raw, foreign
    for secret in ("password", "hash", "refresh", "argon2", "secret"):
        assert secret not in raw.lower(), secret


async def test_export_needs_a_login_and_is_rate_limited(live_client, database_url, tmp_path: Path) -> None:
    r = await live_client.get(f"{API}/me/export")
    assert_problem(r, 401, "unauthorized")
    app = create_app(make_settings(database_url, tmp_path, exports_per_user_per_hour=1))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                   base_url="http://test") as client:
        student = await register(client)
        assert (await client.get(f"{API}/me/export", headers=student.headers)).status_code == 200
        r = await client.get(f"{API}/me/export", headers=student.headers)
        assert_problem(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) > 0


async def _rows(settings, model: Any, **where: Any) -> int:
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            stmt = select(func.count()).select_from(model)
            for column, value in where.items():
                stmt = stmt.where(getattr(model, column) == value)
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


async def leftovers(settings, needles: list[str], *, allowed_in_audit: set[str]) -> list[tuple[str, str]]:
    """(table, needle) for every row of every table of the metadata (so a table added later is
    checked too) that still mentions one of `needles`; the audit log may name `allowed_in_audit`."""
    found = []
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                for row in (await conn.execute(select(table))).all():
                    text = " ".join(v.decode("utf-8", "replace") if isinstance(v, bytes)
                                    else json.dumps(v, default=str) if isinstance(v, (dict, list))
                                    else str(v).replace("-", "") if isinstance(v, uuid.UUID) else str(v)
                                    for v in row)
                    for needle in needles:
                        if needle.replace("-", "") in text.replace("-", "") and not (
                                table.name == "audit_events" and needle in allowed_in_audit):
                            found.append((table.name, needle))
    finally:
        await engine.dispose()
    return found


async def test_an_admin_deletes_a_student_and_everything_of_theirs_while_others_stay(
        live_client, live_server, school, settings) -> None:
    ada, bob, teacher, essay, other = school["ada"], school["bob"], school["teacher"], school["essay"], school["other"]
    admin = await make_admin(live_client, settings.database_url)
    bob_updates = await _rows(settings, EssayUpdate, essay_id=uuid.UUID(other["id"]))
    bob_revisions = await _rows(settings, Revision, essay_id=uuid.UUID(other["id"]))
    writer = await YClient(await doc_url(live_client, live_server, ada, essay["id"])).connect()
    watcher = await YClient(await doc_url(live_client, live_server, teacher, essay["id"])).connect()
    live = await websockets.connect(
        f"ws://{live_server}/ws/classes/{school['class']['id']}/live?ticket={await ticket(live_client, teacher)}")
    await asyncio.wait_for(live.recv(), 10)
    bob_writer = await YClient(await doc_url(live_client, live_server, bob, other["id"])).connect()

    r = await live_client.delete(f"{API}/admin/users/{ada.id}", headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == ada.id and r.json()["deleted"]["essays"] == 1

    assert await writer.wait_closed() in (4401, 4404)  # suspended first (4401), or its essay went (4404)
    assert await watcher.wait_closed() == 4404
    while (message := json.loads(await asyncio.wait_for(live.recv(), 10)))["type"] != "student_removed":
        pass
    assert message["student_id"] == ada.id
    await live.close()
    assert_problem(await live_client.get(f"{API}/me", headers=ada.headers), 401, "invalid_token")
    assert_problem(await live_client.get(f"{API}/essays/{essay['id']}", headers=teacher.headers), 404, "not_found")

    needles = [ada.id, ada.email, essay["id"], school["ada_sub"]["id"], school["marker"], school["name"]]
    assert await leftovers(settings, needles, allowed_in_audit={ada.id}) == []
    # (After the scan: a failed login counts against its email's bucket, account or not.)
    assert (await login(live_client, ada.email, PASSWORD)).status_code == 401

    # The audit log says who deleted whom, without the content.
    r = await live_client.get(f"{API}/admin/audit", params={"action": "user.delete", "actor": admin.id},
                              headers=admin.headers)
    [event] = r.json()["items"]
    assert event["target_id"] == ada.id and event["details"]["rows"]["essays"] == 1
    assert ada.email not in json.dumps(event) and school["marker"] not in json.dumps(event)

    # Bob, his essay, its log and his socket are untouched.
    assert bob_writer.close_code is None
    bob_writer.type(" And more.")
    await bob_writer.wait_acked()
    await bob_writer.close()
    r = await live_client.get(f"{API}/essays/{other['id']}", headers=bob.headers)
    assert r.json()["text"] == "Bob's own Okapi paragraph stays. And more."
    assert await _rows(settings, EssayUpdate, essay_id=uuid.UUID(other["id"])) > bob_updates
    assert await _rows(settings, Revision, essay_id=uuid.UUID(other["id"])) >= bob_revisions
    assert (await live_client.get(f"{API}/submissions/{school['bob_sub']['id']}", headers=bob.headers)).status_code == 200
    roster = (await live_client.get(f"{API}/classes/{school['class']['id']}/students", headers=teacher.headers)).json()
    assert [s["student_id"] for s in roster["items"]] == [bob.id]


async def test_only_admins_delete_and_only_students(live_client, settings) -> None:
    admin = await make_admin(live_client, settings.database_url)
    teacher, student = await register(live_client, "teacher"), await register(live_client, "student")
    r = await live_client.delete(f"{API}/admin/users/{student.id}", headers=teacher.headers)
    assert_problem(r, 403, "forbidden")
    assert_problem(await live_client.delete(f"{API}/admin/users/{teacher.id}", headers=admin.headers), 409,
                   "not_a_student")
    assert_problem(await live_client.delete(f"{API}/admin/users/{admin.id}", headers=admin.headers), 409,
                   "self_action")
    assert_problem(await live_client.delete(f"{API}/admin/users/{uuid.uuid4()}", headers=admin.headers), 404,
                   "not_found")
    assert (await live_client.get(f"{API}/me", headers=student.headers)).status_code == 200
