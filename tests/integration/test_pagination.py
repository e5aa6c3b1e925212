"""Keyset pagination: walking `next_cursor` returns every item exactly once, in a stable order, even
while rows are inserted; bad cursors and limits are refused with a problem, never a 500."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.fakes import (
    RUBRIC,
    assert_problem,
    join,
    make_assignment,
    make_class,
    make_essay,
    register,
    walk,
)

API = "/api/v1"


def _ids(pages: list[list[dict[str, object]]], key: str = "id") -> list[str]:
    return [str(item[key]) for page in pages for item in page]


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 50])
async def test_essay_pages_return_every_essay_once(client: httpx.AsyncClient, limit: int) -> None:
    student = await register(client)
    created = [(await make_essay(client, student))["id"] for _ in range(7)]
    pages = await walk(client, f"{API}/essays", student.headers, limit=limit)
    assert _ids(pages) == created
    assert all(len(page) <= limit for page in pages)
    assert len(pages) == max(1, -(-7 // limit))


async def test_class_pages_return_every_class_once(client: httpx.AsyncClient) -> None:
    teacher = await register(client, "teacher")
    created = [(await make_class(client, teacher, f"Class {i}"))["id"] for i in range(5)]
    assert _ids(await walk(client, f"{API}/classes", teacher.headers, limit=2)) == created


async def test_rubric_pages_return_every_rubric_once(client: httpx.AsyncClient) -> None:
    teacher = await register(client, "teacher")
    created = []
    for i in range(5):
        r = await client.post(f"{API}/rubrics", json={**RUBRIC, "title": f"R{i}"}, headers=teacher.headers)
        created.append(r.json()["id"])
    assert _ids(await walk(client, f"{API}/rubrics", teacher.headers, limit=2)) == created


async def test_assignment_pages_return_every_assignment_once(client: httpx.AsyncClient) -> None:
    teacher = await register(client, "teacher")
    cls = await make_class(client, teacher)
    created = [(await make_assignment(client, teacher, cls["id"]))["id"] for _ in range(5)]
    pages = await walk(client, f"{API}/classes/{cls['id']}/assignments", teacher.headers, limit=2)
    assert _ids(pages) == created


async def test_roster_pages_return_every_student_once_in_join_order(client: httpx.AsyncClient) -> None:
    teacher = await register(client, "teacher")
    cls = await make_class(client, teacher)
    students = [await register(client) for _ in range(5)]
    for s in students:
        await join(client, s, cls["join_code"])
    pages = await walk(client, f"{API}/classes/{cls['id']}/students", teacher.headers, limit=2)
    assert _ids(pages, "student_id") == [s.id for s in students]


async def test_items_added_during_a_walk_are_not_duplicated_or_skipped(client: httpx.AsyncClient) -> None:
    student = await register(client)
    created = [(await make_essay(client, student))["id"] for _ in range(4)]
    first = (await client.get(f"{API}/essays", params={"limit": 2}, headers=student.headers)).json()
    created.append((await make_essay(client, student))["id"])  # newest sorts last
    rest = await walk(client, f"{API}/essays", student.headers, limit=2, params={"cursor": first["next_cursor"]})
    assert _ids([first["items"], *rest]) == created


async def test_last_page_has_no_cursor(client: httpx.AsyncClient) -> None:
    student = await register(client)
    await make_essay(client, student)
    body = (await client.get(f"{API}/essays", params={"limit": 1}, headers=student.headers)).json()
    assert len(body["items"]) == 1 and body["next_cursor"] is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = [
    "not-base64-!!",
    _b64(b"not json"),
    _b64(json.dumps({"a": 1}).encode()),
    _b64(json.dumps(["2026-01-01T00:00:00+00:00", "not-a-uuid"]).encode()),
    _b64(json.dumps(["2026-01-01T00:00:00", "00000000-0000-4000-8000-000000000000"]).encode()),  # naive
    _b64(json.dumps(["yesterday", "00000000-0000-4000-8000-000000000000"]).encode()),
    _b64(json.dumps([1, 2]).encode()),
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
async def test_malformed_cursor_is_refused_with_a_problem(client: httpx.AsyncClient, cursor: str) -> None:
    teacher = await register(client, "teacher")
    cls = await make_class(client, teacher)
    for path in ("/essays", "/classes", "/rubrics", f"/classes/{cls['id']}/assignments",
                 f"/classes/{cls['id']}/students"):
        r = await client.get(API + path, params={"cursor": cursor}, headers=teacher.headers)
        assert_problem(r, 422, "invalid_cursor")


@pytest.mark.parametrize("limit", ["0", "-1", "201", "ten"])
async def test_limit_outside_1_to_200_is_refused(client: httpx.AsyncClient, limit: str) -> None:
    student = await register(client)
    r = await client.get(f"{API}/essays", params={"limit": limit}, headers=student.headers)
    assert_problem(r, 422, "validation_failed")
