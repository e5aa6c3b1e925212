"""PATCH /assignments/{id}: the class's teachers edit an assignment; deadlines move for students."""

from __future__ import annotations

from tests.fakes import assert_problem, join, make_admin, make_assignment, make_class, make_rubric, register

API = "/api/v1"


async def test_teacher_edits_an_assignment_and_students_see_it(client) -> None:
    teacher, student = await register(client, "teacher"), await register(client, "student")
    cls = await make_class(client, teacher)
    await join(client, student, cls["join_code"])
    rubric = await make_rubric(client, teacher)
    assignment = await make_assignment(client, teacher, cls["id"], rubric["id"])
    r = await client.patch(f"{API}/assignments/{assignment['id']}", headers=teacher.headers, json={
        "title": "Persuasive essay", "due_at": "2030-01-01T17:00:00Z", "close_at": "2030-01-02T17:00:00Z",
        "late_policy": "flag"})
    assert r.status_code == 200, r.text
    seen = (await client.get(f"{API}/assignments/{assignment['id']}", headers=student.headers)).json()
    assert (seen["title"], seen["late_policy"], seen["rubric_id"]) == ("Persuasive essay", "flag", rubric["id"])
    assert seen["due_at"].startswith("2030-01-01T17:00") and seen["close_at"].startswith("2030-01-02T17:00")
    # null clears an optional field; fields not sent stay
    r = await client.patch(f"{API}/assignments/{assignment['id']}", headers=teacher.headers,
                           json={"rubric_id": None, "close_at": None})
    assert (r.json()["rubric_id"], r.json()["close_at"], r.json()["title"]) == (None, None, "Persuasive essay")


async def test_bad_edits_are_refused_and_change_nothing(client) -> None:
    teacher, other = await register(client, "teacher"), await register(client, "teacher")
    cls = await make_class(client, teacher)
    assignment = await make_assignment(client, teacher, cls["id"])
    url = f"{API}/assignments/{assignment['id']}"
    assert_problem(await client.patch(url, headers=teacher.headers,
                                      json={"due_at": "2030-01-02T00:00:00Z", "close_at": "2030-01-01T00:00:00Z"}),
                   422, "validation_failed")
    assert_problem(await client.patch(url, headers=teacher.headers, json={"due_at": "2030-01-02T00:00:00"}),
                   422, "validation_failed")
    assert_problem(await client.patch(url, headers=teacher.headers, json={"title": None}), 422, "validation_failed")
    foreign = await make_rubric(client, other)
    assert_problem(await client.patch(url, headers=teacher.headers, json={"rubric_id": foreign["id"]}),
                   404, "not_found")
    unchanged = (await client.get(url, headers=teacher.headers)).json()
    assert (unchanged["title"], unchanged["due_at"], unchanged["rubric_id"]) == (
        assignment["title"], assignment["due_at"], assignment["rubric_id"])


async def test_edits_are_audited_and_an_archived_class_is_read_only(client, settings) -> None:
    teacher = await register(client, "teacher")
    cls = await make_class(client, teacher)
    assignment = await make_assignment(client, teacher, cls["id"])
    url = f"{API}/assignments/{assignment['id']}"
    assert (await client.patch(url, headers=teacher.headers, json={"title": "Renamed"})).status_code == 200
    admin = await make_admin(client, settings.database_url)
    events = (await client.get(f"{API}/admin/audit", headers=admin.headers,
                               params={"action": "assignment.update"})).json()["items"]
    mine = [e for e in events if e["target_id"] == assignment["id"]]
    assert mine and mine[0]["details"]["title"] == {"from": assignment["title"], "to": "Renamed"}
    assert (await client.post(f"{API}/classes/{cls['id']}/archive", headers=teacher.headers)).status_code == 200
    assert_problem(await client.patch(url, headers=teacher.headers, json={"title": "Again"}), 409, "class_archived")
