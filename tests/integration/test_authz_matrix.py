"""Role x ownership over every REST route: what the caller may not see answers 404, what they can see
but not change answers 403 (serve_app/api/access.py), and no route works without a token.

The world: teacher X teaches class X (students A and C, rubric R, assignment aX graded by R, A's essay,
A's submission of it); teacher Y teaches class Y (student B, B's essay, Y's private rubric).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fakes import (
    RUBRIC,
    Account,
    assert_problem,
    join,
    make_admin,
    make_assignment,
    make_class,
    make_essay,
    make_rubric,
    register,
)

API = "/api/v1"


@dataclass
class World:
    teacher_x: Account
    teacher_y: Account
    student_a: Account  # in class X, owns essay_a
    student_b: Account  # in class Y, owns essay_b
    student_c: Account  # A's classmate in class X
    class_x: dict[str, Any]
    class_y: dict[str, Any]
    rubric_x: dict[str, Any]
    rubric_y: dict[str, Any]
    assignment_x: dict[str, Any]
    essay_a: dict[str, Any]
    essay_b: dict[str, Any]
    submission_a: dict[str, Any]  # A's submit of essay_a, graded by rubric_x in class X
    # For the roster and admin routes that change things: X's class Z (students C and D), an admin.
    class_z: dict[str, Any]
    student_d: Account
    admin: Account

    def ids(self) -> dict[str, str]:
        return {"class_x": self.class_x["id"], "rubric_x": self.rubric_x["id"], "rubric_y": self.rubric_y["id"],
                "assignment_x": self.assignment_x["id"], "essay_a": self.essay_a["id"],
                "join_x": self.class_x["join_code"], "submission_a": self.submission_a["id"],
                "criterion_x": self.rubric_x["criteria"][0]["id"], "class_z": self.class_z["id"],
                "student_c": self.student_c.id, "student_d": self.student_d.id, "teacher_y": self.teacher_y.id}


@pytest.fixture(scope="module")
async def world(client: httpx.AsyncClient, settings: Any) -> World:
    tx, ty = await register(client, "teacher"), await register(client, "teacher")
    a, b, c = [await register(client, "student") for _ in range(3)]
    cx, cy = await make_class(client, tx, "Class X"), await make_class(client, ty, "Class Y")
    await join(client, a, cx["join_code"])
    await join(client, c, cx["join_code"])
    await join(client, b, cy["join_code"])
    rx, ry = await make_rubric(client, tx), await make_rubric(client, ty)
    ax = await make_assignment(client, tx, cx["id"], rx["id"])
    ay = await make_assignment(client, ty, cy["id"])
    ea = await make_essay(client, a, ax["id"], text="Homework is useful.")
    eb = await make_essay(client, b, ay["id"], text="Homework is useless.")
    r = await client.post(f"{API}/essays/{ea['id']}/submit", headers=a.headers)
    assert r.status_code == 202, r.text
    cz, d = await make_class(client, tx, "Class Z"), await register(client, "student")
    await join(client, c, cz["join_code"])
    await join(client, d, cz["join_code"])
    admin = await make_admin(client, settings.database_url)
    return World(tx, ty, a, b, c, cx, cy, rx, ry, ax, ea, eb, r.json(), cz, d, admin)


# (method, path, json body, {caller: expected status}). Callers absent from a row are not asserted.
# The essay's owner and its class's teacher read; a classmate, another student or teacher sees nothing.
OWNER_AND_TEACHER_READ = {"student_a": 200, "teacher_x": 200, "student_c": 404, "student_b": 404, "teacher_y": 404}

MATRIX: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
    ("GET", "/me", None, {"teacher_x": 200, "student_a": 200}),
    ("GET", "/classes/{class_x}", None, {"teacher_x": 200, "student_a": 200, "teacher_y": 404, "student_b": 404}),
    ("GET", "/classes/{class_x}/students", None,
     {"teacher_x": 200, "student_a": 403, "teacher_y": 404, "student_b": 404}),
    ("POST", "/classes/{class_x}/assignments", {"title": "New", "prompt": "Write."},
     {"teacher_x": 201, "student_a": 403, "teacher_y": 404, "student_b": 404}),
    ("GET", "/classes/{class_x}/assignments", None,
     {"teacher_x": 200, "student_a": 200, "teacher_y": 404, "student_b": 404}),
    ("GET", "/classes/{class_x}/export?format=json", None,
     {"teacher_x": 200, "student_a": 403, "teacher_y": 404, "student_b": 404}),
    ("GET", "/classes/{class_x}/export?format=csv", None,
     {"teacher_x": 200, "student_a": 403, "teacher_y": 404, "student_b": 404}),
    ("GET", "/assignments/{assignment_x}", None,
     {"teacher_x": 200, "student_a": 200, "teacher_y": 404, "student_b": 404}),
    ("PATCH", "/assignments/{assignment_x}", {"prompt": "Write about homework."},
     {"teacher_x": 200, "student_a": 403, "teacher_y": 404, "student_b": 404}),
    ("POST", "/essays", {"title": "Mine", "assignment_id": "{assignment_x}"},
     {"student_a": 201, "student_b": 404, "teacher_y": 404}),
    ("GET", "/essays/{essay_a}", None,
     OWNER_AND_TEACHER_READ),
    ("PATCH", "/essays/{essay_a}", {"title": "Renamed"},
     {"student_a": 200, "teacher_x": 403, "student_c": 404, "student_b": 404, "teacher_y": 404}),
    ("DELETE", "/essays/{essay_a}", None, {"teacher_x": 403, "student_c": 404, "student_b": 404, "teacher_y": 404}),
    ("GET", "/rubrics/{rubric_x}", None,
     {"teacher_x": 200, "student_a": 200, "student_c": 200, "teacher_y": 404, "student_b": 404}),
    ("PATCH", "/rubrics/{rubric_x}", {"title": "Renamed rubric"},
     {"teacher_x": 200, "student_a": 403, "teacher_y": 404, "student_b": 404}),
    ("GET", "/rubrics/{rubric_y}", None, {"teacher_y": 200, "teacher_x": 404, "student_a": 404, "student_b": 404}),
    ("PATCH", "/rubrics/{rubric_y}", {"title": "Mine now"}, {"teacher_x": 404, "student_a": 404}),
    ("POST", "/rubrics", RUBRIC, {"teacher_x": 201, "student_a": 403}),
    ("GET", "/rubrics", None, {"teacher_x": 200, "student_a": 403}),
    ("POST", "/classes", {"name": "Another"}, {"teacher_x": 201, "student_a": 403}),
    ("GET", "/classes", None, {"teacher_x": 200, "student_a": 200}),
    ("POST", "/classes/join", {"join_code": "{join_x}"}, {"student_a": 200, "teacher_y": 403}),
    ("GET", "/essays", None, {"teacher_x": 200, "student_a": 200}),
    ("POST", "/auth/ws-ticket", None, {"teacher_x": 200, "student_a": 200}),
    # Live essay reads: the owner and the teacher of its class; a classmate or outsider sees nothing.
    ("GET", "/essays/{essay_a}/feedback", None,
     OWNER_AND_TEACHER_READ),
    ("POST", "/essays/{essay_a}/comments", {"body": "Say why.", "start": 0, "end": 8},
     {"teacher_x": 201, "student_a": 403, "student_c": 404, "student_b": 404, "teacher_y": 404}),
    ("GET", "/essays/{essay_a}/comments", None,
     OWNER_AND_TEACHER_READ),
    ("GET", "/essays/{essay_a}/revisions", None,
     OWNER_AND_TEACHER_READ),
    ("GET", "/essays/{essay_a}/revisions/1", None,
     OWNER_AND_TEACHER_READ),
    ("GET", "/essays/{essay_a}/replay", None,
     OWNER_AND_TEACHER_READ),
    ("GET", "/essays/{essay_a}/submissions", None,
     OWNER_AND_TEACHER_READ),
    # The coach chat: its owner asks; the class's teacher reads the history but does not ask.
    ("GET", "/essays/{essay_a}/coach", None,
     OWNER_AND_TEACHER_READ),
    ("POST", "/essays/{essay_a}/coach", {"question": "What should I work on first?", "about": "essay"},
     {"student_a": 201, "teacher_x": 403, "student_c": 404, "student_b": 404, "teacher_y": 404}),
    ("POST", "/essays/{essay_a}/submit", None,
     {"student_a": 202, "teacher_x": 403, "student_c": 404, "student_b": 404, "teacher_y": 404}),
    # Submissions: the requester (here the essay's owner) reads, the class's teacher reads and grades.
    ("GET", "/submissions/{submission_a}", None,
     OWNER_AND_TEACHER_READ),
    ("PUT", "/submissions/{submission_a}/scores", {"scores": [{"criterion_id": "{criterion_x}", "points": 2}]},
     {"teacher_x": 200, "student_a": 403, "student_c": 404, "student_b": 404, "teacher_y": 404}),
    ("GET", "/submissions", None, {"teacher_x": 200, "student_a": 200, "student_b": 200}),
    ("POST", "/submissions", {"text": "Homework is useful.", "assignment_id": "{assignment_x}"},
     {"student_a": 202, "student_c": 202, "student_b": 404, "teacher_y": 404}),
    ("POST", "/submissions", {"text": "Homework is useful.", "rubric_id": "{rubric_y}"},
     {"student_a": 404, "teacher_x": 404}),
    # Deadlines: the class's teachers give and withdraw extensions.
    ("PUT", "/classes/{class_x}/assignments/{assignment_x}/extensions/{student_c}", {"due_at": "2030-01-01T00:00:00Z"},
     {"teacher_x": 200, "student_a": 403, "student_c": 403, "teacher_y": 404, "student_b": 404}),
    ("GET", "/classes/{class_x}/assignments/{assignment_x}/extensions", None,
     {"teacher_x": 200, "student_a": 403, "student_c": 403, "teacher_y": 404, "student_b": 404}),
    ("DELETE", "/classes/{class_x}/assignments/{assignment_x}/extensions/{student_c}", None,
     {"teacher_x": 204, "student_a": 403, "student_c": 403, "teacher_y": 404, "student_b": 404}),
    # Roster control on class Z (X teaches it; C and D are its students).
    ("GET", "/classes/{class_z}/teachers", None, {"teacher_x": 200, "student_c": 403, "teacher_y": 404, "student_a": 404}),
    ("POST", "/classes/{class_z}/join-code", None,
     {"teacher_x": 200, "student_c": 403, "teacher_y": 404, "student_a": 404}),
    ("DELETE", "/classes/{class_z}/students/{student_d}", None,
     {"teacher_x": 204, "student_c": 403, "teacher_y": 404, "student_a": 404}),
    ("POST", "/classes/{class_z}/teachers", {"teacher_id": "{teacher_y}"},
     {"teacher_x": 201, "student_c": 403, "teacher_y": 404, "student_a": 404}),
    ("DELETE", "/classes/{class_z}/teachers/{teacher_y}", None,  # Y co-teaches Z now, but does not own it
     {"teacher_x": 204, "teacher_y": 403, "student_c": 403, "student_a": 404}),
    ("POST", "/classes/{class_z}/archive", None,
     {"teacher_x": 200, "student_c": 403, "teacher_y": 404, "student_a": 404}),
    ("POST", "/classes/{class_z}/unarchive", None,
     {"teacher_x": 200, "student_c": 403, "teacher_y": 404, "student_a": 404}),
    # Admin only.
    ("GET", "/admin/users", None, {"admin": 200, "teacher_x": 403, "student_a": 403}),
    ("PATCH", "/admin/users/{student_d}", {"role": "student"}, {"admin": 200, "teacher_x": 403, "student_a": 403}),
    ("POST", "/admin/users/{student_d}/suspend", None, {"admin": 200, "teacher_x": 403, "student_a": 403}),
    ("POST", "/admin/users/{student_d}/reactivate", None, {"admin": 200, "teacher_x": 403, "student_a": 403}),
    ("GET", "/admin/audit", None, {"admin": 200, "teacher_x": 403, "student_a": 403}),
    # Privacy: everyone exports their own data; admins delete students (D last: no row after needs D).
    ("GET", "/me/export", None, {"student_a": 200, "teacher_x": 200, "admin": 200}),
    ("DELETE", "/admin/users/{student_d}", None, {"admin": 200, "teacher_x": 403, "student_a": 403}),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


def _row_id(row: tuple[str, str, Any, dict[str, int]]) -> str:
    return f"{row[0]} {row[1]}"


# Denials run before the successful call, so a 2xx that changes state cannot mask a later check.
def _ordered(expected: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(expected.items(), key=lambda kv: kv[1] < 400)


@pytest.mark.parametrize("row", MATRIX, ids=_row_id)
async def test_route_answers_each_role_by_ownership(
    client: httpx.AsyncClient, world: World, row: tuple[str, str, dict[str, Any] | None, dict[str, int]]
) -> None:
    method, path, body, expected = row
    ids = world.ids()
    url = API + _fill(path, ids)
    for who, status in _ordered(expected):
        account: Account = getattr(world, who)
        r = await client.request(method, url, json=_fill(body, ids), headers=account.headers)
        if status >= 400:
            assert_problem(r, status, {403: "forbidden", 404: "not_found"}[status])
        else:
            assert r.status_code == status, f"{who}: {r.status_code} {r.text}"


@pytest.mark.parametrize("row", MATRIX, ids=_row_id)
async def test_route_refuses_callers_without_a_token(
    client: httpx.AsyncClient, world: World, row: tuple[str, str, dict[str, Any] | None, dict[str, int]]
) -> None:
    method, path, body, _ = row
    ids = world.ids()
    r = await client.request(method, API + _fill(path, ids), json=_fill(body, ids))
    assert_problem(r, 401, "unauthorized")


async def test_student_cannot_read_other_students_essay(client: httpx.AsyncClient, world: World) -> None:
    for who in (world.student_c, world.student_b):
        r = await client.get(f"{API}/essays/{world.essay_a['id']}", headers=who.headers)
        assert_problem(r, 404, "not_found")


async def test_teacher_cannot_read_essays_of_another_teachers_class(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get(f"{API}/essays/{world.essay_b['id']}", headers=world.teacher_x.headers)
    assert_problem(r, 404, "not_found")
    r = await client.get(f"{API}/essays/{world.essay_b['id']}", headers=world.teacher_y.headers)
    assert r.status_code == 200


async def test_teacher_cannot_see_a_students_essay_outside_their_class(client: httpx.AsyncClient, world: World) -> None:
    private = await make_essay(client, world.student_a, text="Just for me.")
    r = await client.get(f"{API}/essays/{private['id']}", headers=world.teacher_x.headers)
    assert_problem(r, 404, "not_found")


async def test_essay_lists_show_only_what_the_caller_may_read(client: httpx.AsyncClient, world: World) -> None:
    async def listed(who: Account) -> set[str]:
        r = await client.get(f"{API}/essays", params={"limit": 200}, headers=who.headers)
        assert r.status_code == 200
        return {e["id"] for e in r.json()["items"]}

    assert world.essay_a["id"] in await listed(world.student_a)
    assert world.essay_a["id"] in await listed(world.teacher_x)
    for outsider in (world.student_b, world.student_c, world.teacher_y):
        assert world.essay_a["id"] not in await listed(outsider)
    assert world.essay_b["id"] not in await listed(world.teacher_x)
    # A filter for someone else's class does not widen the view.
    r = await client.get(f"{API}/essays", params={"class_id": world.class_x["id"]}, headers=world.student_c.headers)
    assert world.essay_a["id"] not in {e["id"] for e in r.json()["items"]}


async def test_class_lists_show_only_the_callers_classes(client: httpx.AsyncClient, world: World) -> None:
    for who, mine, theirs in ((world.teacher_x, world.class_x, world.class_y),
                              (world.student_a, world.class_x, world.class_y),
                              (world.student_b, world.class_y, world.class_x)):
        r = await client.get(f"{API}/classes", params={"limit": 200}, headers=who.headers)
        ids = {c["id"] for c in r.json()["items"]}
        assert mine["id"] in ids and theirs["id"] not in ids


async def test_teacher_cannot_grade_with_a_rubric_they_cannot_see(client: httpx.AsyncClient, world: World) -> None:
    r = await client.post(f"{API}/classes/{world.class_x['id']}/assignments",
                          json={"title": "Borrowed", "rubric_id": world.rubric_y["id"]},
                          headers=world.teacher_x.headers)
    assert_problem(r, 404, "not_found")


async def test_student_cannot_file_an_essay_under_another_class_assignment(
    client: httpx.AsyncClient, world: World
) -> None:
    r = await client.post(f"{API}/essays", json={"title": "Sneaky", "assignment_id": world.assignment_x["id"]},
                          headers=world.student_b.headers)
    assert_problem(r, 404, "not_found")


async def test_only_the_owner_deletes_an_essay(client: httpx.AsyncClient, world: World) -> None:
    essay = await make_essay(client, world.student_a, world.assignment_x["id"], text="Delete me.")
    url = f"{API}/essays/{essay['id']}"
    assert_problem(await client.delete(url, headers=world.teacher_x.headers), 403, "forbidden")
    assert_problem(await client.delete(url, headers=world.student_c.headers), 404, "not_found")
    assert (await client.delete(url, headers=world.student_a.headers)).status_code == 204
    assert_problem(await client.get(url, headers=world.student_a.headers), 404, "not_found")
    assert_problem(await client.get(url, headers=world.teacher_x.headers), 404, "not_found")


async def test_teacher_cannot_change_student_text(client: httpx.AsyncClient, world: World) -> None:
    url = f"{API}/essays/{world.essay_a['id']}"
    r = await client.patch(url, json={"text": "Teacher was here."}, headers=world.teacher_x.headers)
    assert_problem(r, 403, "forbidden")
    assert (await client.get(url, headers=world.student_a.headers)).json()["text"] == "Homework is useful."


async def test_unknown_ids_are_404_not_500(client: httpx.AsyncClient, world: World) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for path in (f"/classes/{missing}", f"/classes/{missing}/students", f"/essays/{missing}",
                 f"/rubrics/{missing}", f"/assignments/{missing}", f"/classes/{missing}/export",
                 f"/essays/{missing}/feedback", f"/essays/{missing}/comments", f"/essays/{missing}/revisions",
                 f"/essays/{missing}/revisions/1", f"/essays/{missing}/replay", f"/submissions/{missing}",
                 f"/essays/{missing}/coach"):
        assert_problem(await client.get(API + path, headers=world.teacher_x.headers), 404, "not_found")
    assert_problem(await client.post(f"{API}/essays/{missing}/submit", headers=world.student_a.headers),
                   404, "not_found")
    assert_problem(await client.put(f"{API}/submissions/{missing}/scores", headers=world.teacher_x.headers,
                                    json={"scores": [{"criterion_id": "c", "points": 1}]}), 404, "not_found")


async def test_only_the_classs_teacher_comments_and_both_read(client: httpx.AsyncClient, world: World) -> None:
    url = f"{API}/essays/{world.essay_a['id']}/comments"
    body = {"body": "Who says so?", "start": 0, "end": 8}
    assert_problem(await client.post(url, json=body, headers=world.student_a.headers), 403, "forbidden")
    assert_problem(await client.post(url, json=body, headers=world.teacher_y.headers), 404, "not_found")
    r = await client.post(url, json=body, headers=world.teacher_x.headers)
    assert r.status_code == 201, r.text
    for reader in (world.student_a, world.teacher_x):
        r = await client.get(url, headers=reader.headers)
        assert r.status_code == 200
        mine = [c for c in r.json()["items"] if c["body"] == "Who says so?"]
        assert [c["author_id"] for c in mine] == [world.teacher_x.id]


async def test_submission_lists_show_only_the_callers_submissions(client: httpx.AsyncClient, world: World) -> None:
    async def listed(who: Account) -> set[str]:
        r = await client.get(f"{API}/submissions", params={"limit": 200}, headers=who.headers)
        assert r.status_code == 200
        return {s["id"] for s in r.json()["items"]}

    assert world.submission_a["id"] in await listed(world.student_a)
    for other in (world.student_c, world.student_b, world.teacher_y, world.teacher_x):
        assert world.submission_a["id"] not in await listed(other)


async def test_essay_submissions_are_listed_to_its_owner_and_teacher(client: httpx.AsyncClient, world: World) -> None:
    for reader in (world.student_a, world.teacher_x):
        r = await client.get(f"{API}/essays/{world.essay_a['id']}/submissions", headers=reader.headers)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert world.submission_a["id"] in [s["id"] for s in items]  # the matrix may have submitted again
        assert {s["essay_id"] for s in items} == {world.essay_a["id"]}
    r = await client.get(f"{API}/essays/{world.essay_b['id']}/submissions", headers=world.teacher_y.headers)
    assert r.status_code == 200 and r.json()["items"] == []


async def test_only_the_classs_teacher_changes_scores(client: httpx.AsyncClient, world: World) -> None:
    url = f"{API}/submissions/{world.submission_a['id']}"
    criterion = world.rubric_x["criteria"][1]["id"]
    body = {"scores": [{"criterion_id": criterion, "points": 1, "rationale": "outsider"}]}
    assert_problem(await client.put(url + "/scores", json=body, headers=world.student_a.headers), 403, "forbidden")
    for outsider in (world.teacher_y, world.student_b, world.student_c):
        assert_problem(await client.put(url + "/scores", json=body, headers=outsider.headers), 404, "not_found")
    r = await client.get(url, headers=world.teacher_x.headers)
    assert r.status_code == 200
    assert not [s for s in r.json()["scores"] if s["criterion_id"] == criterion and s.get("final")]
