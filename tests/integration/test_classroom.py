"""Deadlines, roster control and admin over REST (issue 16 items 2-4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from db.engine import make_engine
from tests.fakes import Account, assert_problem, join, make_admin, make_assignment, make_class, make_essay, register

API = "/api/v1"


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def assignment_with(client: httpx.AsyncClient, teacher: Account, class_id: str, **times: Any) -> dict[str, Any]:
    r = await client.post(f"{API}/classes/{class_id}/assignments",
                          json={"title": "Timed", "prompt": "Write.", **times}, headers=teacher.headers)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
async def room(client: httpx.AsyncClient) -> dict[str, Any]:
    teacher, student = await register(client, "teacher"), await register(client, "student")
    cls = await make_class(client, teacher)
    await join(client, student, cls["join_code"])
    return {"teacher": teacher, "student": student, "class": cls}


# --- deadlines ------------------------------------------------------------------------------


async def test_after_the_hard_close_the_student_cannot_write_or_submit(client, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    open_a = await assignment_with(client, teacher, cls["id"], due_at=iso(timedelta(hours=1)),
                                   close_at=iso(timedelta(hours=2)))
    essay = await make_essay(client, student, open_a["id"], text="Draft.")
    closed = await assignment_with(client, teacher, cls["id"], due_at=iso(-timedelta(hours=2)),
                                   close_at=iso(-timedelta(seconds=1)))
    assert closed["close_at"] is not None
    # An essay started under an extension that is then withdrawn: the close applies again.
    ext_url = f"{API}/classes/{cls['id']}/assignments/{closed['id']}/extensions/{student.id}"
    assert (await client.put(ext_url, json={"due_at": iso(timedelta(days=1))}, headers=teacher.headers)).status_code == 200
    late_essay = await make_essay(client, student, closed["id"], text="Started in time.")
    assert (await client.delete(ext_url, headers=teacher.headers)).status_code == 204
    url = f"{API}/essays/{late_essay['id']}"
    assert_problem(await client.patch(url, json={"text": "More."}, headers=student.headers), 409, "assignment_closed")
    assert_problem(await client.patch(url, json={"title": "New"}, headers=student.headers), 409, "assignment_closed")
    assert_problem(await client.post(url + "/submit", headers=student.headers), 409, "assignment_closed")
    assert_problem(await client.post(f"{API}/essays", json={"assignment_id": closed["id"]}, headers=student.headers),
                   409, "assignment_closed")
    assert_problem(await client.post(f"{API}/submissions", json={"text": "Late.", "assignment_id": closed["id"]},
                                     headers=student.headers), 409, "assignment_closed")
    assert (await client.get(url, headers=student.headers)).json()["text"] == "Started in time."
    # The open assignment still takes writes and submits.
    r = await client.patch(f"{API}/essays/{essay['id']}", json={"text": "More."}, headers=student.headers)
    assert r.status_code == 200, r.text
    assert (await client.post(f"{API}/essays/{essay['id']}/submit", headers=student.headers)).status_code == 202


async def test_an_extension_reopens_writing_and_its_removal_closes_it_again(client, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    closed = await assignment_with(client, teacher, cls["id"], due_at=iso(-timedelta(hours=2)),
                                   close_at=iso(-timedelta(hours=1)))
    ext_url = f"{API}/classes/{cls['id']}/assignments/{closed['id']}/extensions/{student.id}"
    assert_problem(await client.post(f"{API}/essays", json={"assignment_id": closed["id"]}, headers=student.headers),
                   409, "assignment_closed")
    r = await client.put(ext_url, json={"due_at": iso(timedelta(days=1))}, headers=teacher.headers)
    assert r.status_code == 200, r.text
    assert r.json()["student_id"] == student.id and r.json()["granted_by"] == teacher.id
    essay = await make_essay(client, student, closed["id"], text="Extended work.")
    r = await client.post(f"{API}/essays/{essay['id']}/submit", headers=student.headers)
    assert r.status_code == 202, r.text
    assert (await client.delete(ext_url, headers=teacher.headers)).status_code == 204
    assert_problem(await client.patch(f"{API}/essays/{essay['id']}", json={"text": "x"}, headers=student.headers),
                   409, "assignment_closed")
    assert_problem(await client.delete(ext_url, headers=teacher.headers), 404, "no_extension")


async def test_extension_input_is_validated(client, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    a = await make_assignment(client, teacher, cls["id"])
    url = f"{API}/classes/{cls['id']}/assignments/{a['id']}/extensions/{student.id}"
    assert_problem(await client.put(url, json={"due_at": "2026-12-01T17:00:00"}, headers=teacher.headers),
                   422, "validation_failed")
    assert_problem(await client.put(url, json={"due_at": iso(timedelta(days=2)), "close_at": iso(timedelta(days=1))},
                                    headers=teacher.headers), 422, "validation_failed")
    outsider = await register(client, "student")
    assert_problem(await client.put(f"{API}/classes/{cls['id']}/assignments/{a['id']}/extensions/{outsider.id}",
                                    json={"due_at": iso(timedelta(days=1))}, headers=teacher.headers),
                   404, "unknown_student")


async def test_students_see_their_own_due_date_with_their_extension(client, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    classmate = await register(client, "student")
    await join(client, classmate, cls["join_code"])
    due, close = iso(timedelta(hours=1)), iso(timedelta(hours=2))
    a = await assignment_with(client, teacher, cls["id"], due_at=due, close_at=close)
    later = datetime.now(UTC) + timedelta(days=3)
    ext_url = f"{API}/classes/{cls['id']}/assignments/{a['id']}/extensions/{student.id}"
    assert (await client.put(ext_url, json={"due_at": later.isoformat()}, headers=teacher.headers)).status_code == 200

    def mine(account: Account) -> Any:
        return client.get(f"{API}/classes/{cls['id']}/assignments", headers=account.headers)

    [row] = (await mine(student)).json()["items"]
    assert datetime.fromisoformat(row["effective_due_at"]) == later
    # No close of its own, past the assignment's: the extension closes at its due time.
    assert datetime.fromisoformat(row["effective_close_at"]) == later
    assert row["extended"] is True and row["due_at"] == a["due_at"]  # the assignment's own time stays
    one = (await client.get(f"{API}/assignments/{a['id']}", headers=student.headers)).json()
    assert one["extended"] is True and one["effective_due_at"] == row["effective_due_at"]
    [other] = (await mine(classmate)).json()["items"]
    assert (other["effective_due_at"], other["effective_close_at"], other["extended"]) == (a["due_at"], a["close_at"],
                                                                                           False)
    [teachers] = (await mine(teacher)).json()["items"]
    assert (teachers["effective_due_at"], teachers["extended"]) == (a["due_at"], False)


async def test_teachers_list_an_assignments_extensions(client, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    a = await make_assignment(client, teacher, cls["id"])
    url = f"{API}/classes/{cls['id']}/assignments/{a['id']}/extensions"
    assert (await client.get(url, headers=teacher.headers)).json() == []
    await client.put(f"{url}/{student.id}", json={"due_at": iso(timedelta(days=1))}, headers=teacher.headers)
    [ext] = (await client.get(url, headers=teacher.headers)).json()
    assert ext["student_id"] == student.id and ext["granted_by"] == teacher.id
    assert_problem(await client.get(url, headers=student.headers), 403, "forbidden")
    other = await register(client, "teacher")
    assert (await client.get(url, headers=other.headers)).status_code == 404


async def test_export_carries_each_essays_deadline_status(client, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    late = await assignment_with(client, teacher, cls["id"], due_at=iso(-timedelta(hours=1)))
    on_time = await assignment_with(client, teacher, cls["id"], due_at=iso(timedelta(hours=1)))
    e_late = await make_essay(client, student, late["id"], text="Late.")
    e_on_time = await make_essay(client, student, on_time["id"], text="Early.")
    r = await client.get(f"{API}/classes/{cls['id']}/export", params={"format": "json"}, headers=teacher.headers)
    rows = {row["essay_id"]: row for row in r.json()["essays"]}
    assert rows[e_late["id"]]["deadline_status"] == "late"
    assert rows[e_on_time["id"]]["deadline_status"] == "on_time"
    assert rows[e_on_time["id"]]["due_at"] is not None and rows[e_on_time["id"]]["extended"] is False
    r = await client.get(f"{API}/classes/{cls['id']}/export", params={"format": "csv"}, headers=teacher.headers)
    header, *lines = r.text.splitlines()
    assert "deadline_status" in header.split(",") and "due_at" in header.split(",")
    assert any(e_late["id"] in line and ",late," in line for line in lines)


# --- roster -----------------------------------------------------------------------------------


async def test_removed_students_essays_leave_the_teachers_view(client, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    a = await make_assignment(client, teacher, cls["id"])
    essay = await make_essay(client, student, a["id"], text="My work.")
    url = f"{API}/essays/{essay['id']}"
    assert (await client.get(url, headers=teacher.headers)).status_code == 200
    submitted = await client.post(url + "/submit", headers=student.headers)
    sub_url = f"{API}/submissions/{submitted.json()['id']}"
    assert (await client.get(sub_url, headers=teacher.headers)).status_code == 200
    remove = f"{API}/classes/{cls['id']}/students/{student.id}"
    assert_problem(await client.delete(remove, headers=student.headers), 403, "forbidden")
    assert (await client.delete(remove, headers=teacher.headers)).status_code == 204
    assert_problem(await client.get(url, headers=teacher.headers), 404, "not_found")
    assert_problem(await client.get(sub_url, headers=teacher.headers), 404, "not_found")
    assert (await client.get(url, headers=student.headers)).json()["text"] == "My work."  # still theirs
    assert (await client.get(sub_url, headers=student.headers)).status_code == 200
    roster = (await client.get(f"{API}/classes/{cls['id']}/students", headers=teacher.headers)).json()["items"]
    assert student.id not in {row["student_id"] for row in roster}
    export = (await client.get(f"{API}/classes/{cls['id']}/export", headers=teacher.headers)).json()
    assert essay["id"] not in {row["essay_id"] for row in export["essays"]}
    assert_problem(await client.get(f"{API}/classes/{cls['id']}", headers=student.headers), 404, "not_found")
    assert_problem(await client.delete(remove, headers=teacher.headers), 404, "unknown_student")


async def test_rotated_join_code_replaces_the_old_one(client, room) -> None:
    teacher, cls = room["teacher"], room["class"]
    r = await client.post(f"{API}/classes/{cls['id']}/join-code", headers=teacher.headers)
    assert r.status_code == 200 and r.json()["join_code"] != cls["join_code"]
    newcomer = await register(client, "student")
    r2 = await client.post(f"{API}/classes/join", json={"join_code": cls["join_code"]}, headers=newcomer.headers)
    assert_problem(r2, 404, "unknown_join_code")
    await join(client, newcomer, r.json()["join_code"])


async def test_archived_class_is_read_only_takes_no_joins_and_is_hidden_by_default(client, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    a = await make_assignment(client, teacher, cls["id"])
    essay = await make_essay(client, student, a["id"], text="Before archive.")
    r = await client.post(f"{API}/classes/{cls['id']}/archive", headers=teacher.headers)
    assert r.status_code == 200 and r.json()["archived_at"] is not None
    newcomer = await register(client, "student")
    assert_problem(await client.post(f"{API}/classes/join", json={"join_code": cls["join_code"]},
                                     headers=newcomer.headers), 409, "class_archived")
    assert_problem(await client.patch(f"{API}/essays/{essay['id']}", json={"text": "After."},
                                      headers=student.headers), 409, "class_archived")
    assert_problem(await client.post(f"{API}/essays/{essay['id']}/submit", headers=student.headers),
                   409, "class_archived")
    assert_problem(await client.post(f"{API}/classes/{cls['id']}/assignments", json={"title": "More"},
                                     headers=teacher.headers), 409, "class_archived")
    for who in (teacher, student):
        listed = (await client.get(f"{API}/classes", params={"limit": 200}, headers=who.headers)).json()["items"]
        assert cls["id"] not in {c["id"] for c in listed}
        listed = (await client.get(f"{API}/classes", params={"limit": 200, "include_archived": "true"},
                                   headers=who.headers)).json()["items"]
        assert cls["id"] in {c["id"] for c in listed}
    assert (await client.get(f"{API}/essays/{essay['id']}", headers=teacher.headers)).status_code == 200
    r = await client.post(f"{API}/classes/{cls['id']}/unarchive", headers=teacher.headers)
    assert r.status_code == 200 and r.json()["archived_at"] is None
    assert (await client.patch(f"{API}/essays/{essay['id']}", json={"text": "After."},
                               headers=student.headers)).status_code == 200


async def test_co_teacher_has_the_teachers_rights_until_removed(client, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    a = await make_assignment(client, teacher, cls["id"])
    essay = await make_essay(client, student, a["id"], text="Read me.")
    co = await register(client, "teacher")
    assert_problem(await client.get(f"{API}/essays/{essay['id']}", headers=co.headers), 404, "not_found")
    r = await client.post(f"{API}/classes/{cls['id']}/teachers", json={"teacher_id": co.id}, headers=teacher.headers)
    assert r.status_code == 201, r.text
    assert {t["teacher_id"]: t["owner"] for t in r.json()} == {teacher.id: True, co.id: False}
    # Each right shows its effect, not just a status: the co-teacher sees what the owner sees.
    r = await client.get(f"{API}/essays/{essay['id']}", headers=co.headers)
    assert r.status_code == 200 and r.json()["text"] == "Read me."
    r = await client.get(f"{API}/classes/{cls['id']}/students", headers=co.headers)
    assert r.status_code == 200 and [row["student_id"] for row in r.json()["items"]] == [student.id]
    r = await client.get(f"{API}/classes/{cls['id']}/export", headers=co.headers)
    assert r.status_code == 200
    assert [(row["essay_id"], row["text"]) for row in r.json()["essays"]] == [(essay["id"], "Read me.")]
    r = await client.post(f"{API}/essays/{essay['id']}/comments", json={"body": "Good.", "start": 0, "end": 4},
                          headers=co.headers)
    assert r.status_code == 201, r.text
    assert (r.json()["author_id"], r.json()["quote"]) == (co.id, "Read")
    seen = (await client.get(f"{API}/essays/{essay['id']}/comments", headers=student.headers)).json()["items"]
    assert [(c["author_id"], c["body"]) for c in seen] == [(co.id, "Good.")]
    listed = (await client.get(f"{API}/classes", params={"limit": 200}, headers=co.headers)).json()["items"]
    assert cls["id"] in {c["id"] for c in listed}
    # A co-teacher does not manage co-teachers; a student is not a teacher.
    assert_problem(await client.post(f"{API}/classes/{cls['id']}/teachers", json={"teacher_id": co.id},
                                     headers=co.headers), 403, "forbidden")
    assert_problem(await client.post(f"{API}/classes/{cls['id']}/teachers", json={"teacher_id": student.id},
                                     headers=teacher.headers), 422, "unknown_teacher")
    assert (await client.delete(f"{API}/classes/{cls['id']}/teachers/{co.id}", headers=teacher.headers)).status_code == 204
    r = await client.get(f"{API}/classes/{cls['id']}/teachers", headers=teacher.headers)
    assert [t["teacher_id"] for t in r.json()] == [teacher.id]
    assert_problem(await client.get(f"{API}/essays/{essay['id']}", headers=co.headers), 404, "not_found")
    assert_problem(await client.get(f"{API}/classes/{cls['id']}/students", headers=co.headers), 404, "not_found")
    listed = (await client.get(f"{API}/classes", params={"limit": 200}, headers=co.headers)).json()["items"]
    assert cls["id"] not in {c["id"] for c in listed}


# --- admin --------------------------------------------------------------------------------------


@pytest.fixture
async def admin(client: httpx.AsyncClient, settings: Any) -> Account:
    return await make_admin(client, settings.database_url)


async def test_admin_searches_users_by_email_and_role(client, admin, room) -> None:
    student = room["student"]
    r = await client.get(f"{API}/admin/users", params={"q": student.email[:18].upper(), "role": "student"},
                         headers=admin.headers)
    assert r.status_code == 200, r.text
    assert student.id in {u["id"] for u in r.json()["items"]}
    r = await client.get(f"{API}/admin/users", params={"q": student.email, "role": "teacher"}, headers=admin.headers)
    assert r.json()["items"] == []
    assert_problem(await client.get(f"{API}/admin/users", headers=room["teacher"].headers), 403, "forbidden")


async def test_admin_search_folds_non_ascii_names_on_every_store(client, admin) -> None:
    student = await register(client, name="Ólafur Ñandú-Şahin")
    for q in ("ólafur ñandú", "ÓLAFUR", "ŞAHIN"):
        r = await client.get(f"{API}/admin/users", params={"q": q}, headers=admin.headers)
        assert r.status_code == 200, r.text
        assert [u["id"] for u in r.json()["items"]] == [student.id], q


async def test_suspension_stops_tokens_at_once_and_reactivation_lets_the_user_log_in(client, admin, room) -> None:
    student = room["student"]
    assert (await client.get(f"{API}/me", headers=student.headers)).status_code == 200
    r = await client.post(f"{API}/admin/users/{student.id}/suspend", headers=admin.headers)
    assert r.status_code == 200 and r.json()["suspended_at"] is not None
    assert_problem(await client.get(f"{API}/me", headers=student.headers), 401, "account_suspended")
    assert_problem(await client.post(f"{API}/auth/refresh", json={"refresh_token": student.refresh_token}),
                   401, "invalid_token")
    assert_problem(await client.post(f"{API}/auth/token", json={"email": student.email, "password": "violet-Harbor-93!"}),
                   403, "account_suspended")
    r = await client.post(f"{API}/admin/users/{student.id}/reactivate", headers=admin.headers)
    assert r.status_code == 200 and r.json()["suspended_at"] is None
    r = await client.post(f"{API}/auth/token", json={"email": student.email, "password": "violet-Harbor-93!"})
    assert r.status_code == 200
    assert_problem(await client.post(f"{API}/auth/refresh", json={"refresh_token": student.refresh_token}),
                   401, "invalid_token")  # the families revoked by the suspension stay revoked


async def test_admin_changes_roles_but_not_their_own(client, admin, room) -> None:
    student = room["student"]
    r = await client.patch(f"{API}/admin/users/{student.id}", json={"role": "teacher"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["role"] == "teacher"
    assert (await client.get(f"{API}/me", headers=student.headers)).json()["role"] == "teacher"
    assert_problem(await client.patch(f"{API}/admin/users/{admin.id}", json={"role": "student"},
                                      headers=admin.headers), 409, "self_action")
    assert_problem(await client.post(f"{API}/admin/users/{admin.id}/suspend", headers=admin.headers),
                   409, "self_action")
    assert_problem(await client.patch(f"{API}/admin/users/{student.id}", json={"role": "root"},
                                      headers=admin.headers), 422, "validation_failed")


async def test_audit_log_records_admin_and_teacher_overrides(client, admin, room) -> None:
    teacher, student, cls = room["teacher"], room["student"], room["class"]
    a = await make_assignment(client, teacher, cls["id"])
    await client.put(f"{API}/classes/{cls['id']}/assignments/{a['id']}/extensions/{student.id}",
                     json={"due_at": iso(timedelta(days=1))}, headers=teacher.headers)
    await client.post(f"{API}/classes/{cls['id']}/join-code", headers=teacher.headers)
    await client.post(f"{API}/classes/{cls['id']}/archive", headers=teacher.headers)
    await client.delete(f"{API}/classes/{cls['id']}/students/{student.id}", headers=teacher.headers)
    await client.patch(f"{API}/admin/users/{student.id}", json={"role": "teacher"}, headers=admin.headers)
    r = await client.get(f"{API}/admin/audit", params={"actor": teacher.id, "limit": 200}, headers=admin.headers)
    assert r.status_code == 200, r.text
    actions = [e["action"] for e in r.json()["items"]]
    assert actions == ["extension.set", "class.rotate_join_code", "class.archive", "roster.remove"]
    assert {e["target_id"] for e in r.json()["items"]} >= {cls["id"], a["id"]}
    assert {(e["actor_name"], e["actor_email"]) for e in r.json()["items"]} == {("Test User", teacher.email)}
    r = await client.get(f"{API}/admin/audit", params={"actor": admin.id, "action": "user.role"}, headers=admin.headers)
    (event,) = r.json()["items"]
    assert event["target_id"] == student.id and event["details"] == {"from": "student", "to": "teacher"}
    assert_problem(await client.get(f"{API}/admin/audit", headers=teacher.headers), 403, "forbidden")


async def test_audit_rows_cannot_be_changed_on_postgresql(client, admin, settings) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("the append-only trigger is PostgreSQL's")
    await client.post(f"{API}/admin/users/{admin.id}/suspend", headers=admin.headers)  # 409, not audited
    other = await register(client, "student")
    await client.post(f"{API}/admin/users/{other.id}/suspend", headers=admin.headers)
    engine = make_engine(settings.database_url)
    try:
        for statement in ("UPDATE audit_events SET action = 'forged'", "DELETE FROM audit_events"):
            with pytest.raises(Exception, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def test_openapi_lists_the_classroom_routes(client) -> None:
    paths = (await client.get(f"{API}/openapi.json")).json()["paths"]
    expected = {
        "/api/v1/classes/{class_id}/assignments/{assignment_id}/extensions/{student_id}": {"put", "delete"},
        "/api/v1/classes/{class_id}/assignments/{assignment_id}/extensions": {"get"},
        "/api/v1/classes/{class_id}/students/{student_id}": {"delete"},
        "/api/v1/classes/{class_id}/join-code": {"post"},
        "/api/v1/classes/{class_id}/archive": {"post"},
        "/api/v1/classes/{class_id}/unarchive": {"post"},
        "/api/v1/classes/{class_id}/teachers": {"get", "post"},
        "/api/v1/classes/{class_id}/teachers/{teacher_id}": {"delete"},
        "/api/v1/admin/users": {"get"},
        "/api/v1/admin/users/{user_id}": {"patch"},
        "/api/v1/admin/users/{user_id}/suspend": {"post"},
        "/api/v1/admin/users/{user_id}/reactivate": {"post"},
        "/api/v1/admin/audit": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths.get(path, {})), path
    # Append-only: no route changes or deletes an audit event.
    assert not [p for p in paths if p.startswith("/api/v1/admin/audit/")]
