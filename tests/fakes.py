"""Factories for test data through the public API (so every test exercises real routes)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import REGISTRY

PASSWORD = "violet-Harbor-93!"


@dataclass
class Account:
    id: str
    email: str
    role: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def register(client: httpx.AsyncClient, role: str = "student", name: str = "Test User") -> Account:
    email = f"{role}-{uuid.uuid4().hex[:10]}@example.com"
    r = await client.post("/api/v1/auth/register",
                          json={"email": email, "password": PASSWORD, "name": name, "role": role})
    assert r.status_code == 201, r.text
    t = await client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert t.status_code == 200, t.text
    body = t.json()
    return Account(r.json()["id"], email, role, body["access_token"], body["refresh_token"])


async def make_class(client: httpx.AsyncClient, teacher: Account, name: str = "English 9") -> dict[str, Any]:
    r = await client.post("/api/v1/classes", json={"name": name}, headers=teacher.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def join(client: httpx.AsyncClient, student: Account, join_code: str) -> None:
    r = await client.post("/api/v1/classes/join", json={"join_code": join_code}, headers=student.headers)
    assert r.status_code == 200, r.text


RUBRIC = {
    "title": "Argumentative essay",
    "criteria": [
        {"name": "Thesis", "weight": 2, "levels": [
            {"min_score": 0, "max_score": 1, "descriptor": "No clear thesis"},
            {"min_score": 2, "max_score": 3, "descriptor": "Clear, arguable thesis"}]},
        {"name": "Evidence", "weight": 1, "levels": [
            {"min_score": 0, "max_score": 2, "descriptor": "Little evidence"},
            {"min_score": 3, "max_score": 4, "descriptor": "Relevant, cited evidence"}]},
    ],
}


async def make_rubric(client: httpx.AsyncClient, teacher: Account) -> dict[str, Any]:
    r = await client.post("/api/v1/rubrics", json=RUBRIC, headers=teacher.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def make_assignment(client: httpx.AsyncClient, teacher: Account, class_id: str,
                          rubric_id: str | None = None) -> dict[str, Any]:
    body = {"title": "Should homework be banned?", "prompt": "Argue for or against.", "rubric_id": rubric_id}
    r = await client.post(f"/api/v1/classes/{class_id}/assignments", json=body, headers=teacher.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def make_essay(client: httpx.AsyncClient, student: Account, assignment_id: str | None = None,
                     text: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"title": "My essay", "assignment_id": assignment_id}
    if text is not None:
        body["text"] = text
    r = await client.post("/api/v1/essays", json=body, headers=student.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def class_essay(client: httpx.AsyncClient) -> tuple[Account, Account, dict[str, Any]]:
    """(teacher, student, essay): a class of one student with an essay for its assignment."""
    teacher, student = await register(client, "teacher"), await register(client, "student")
    cls = await make_class(client, teacher)
    await join(client, student, cls["join_code"])
    return teacher, student, await make_essay(client, student, (await make_assignment(client, teacher, cls["id"]))["id"])


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and stable code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert {"type", "title", "status", "detail", "code"} <= body.keys(), body
    assert body["status"] == status
    assert body["code"] == code, body
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body  # type: ignore[no-any-return]


async def register_with(client: httpx.AsyncClient, *, email: str | None = None, password: str = PASSWORD,
                        name: str = "Test User", role: str = "student") -> httpx.Response:
    """POST /auth/register with exactly these fields (for validation tests); returns the raw response."""
    email = f"{role}-{uuid.uuid4().hex[:10]}@example.com" if email is None else email
    return await client.post("/api/v1/auth/register",
                             json={"email": email, "password": password, "name": name, "role": role})


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/auth/token", json={"email": email, "password": password})


async def walk(client: httpx.AsyncClient, path: str, headers: dict[str, str], *, limit: int,
               params: dict[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """Every page of a paginated list, following next_cursor until it is null."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"limit": limit, **(params or {})}
        if cursor:
            query["cursor"] = cursor
        r = await client.get(path, params=query, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 1000, "pagination does not terminate"


def secret_updates() -> tuple[bytes, bytes]:
    """Issue 13's repro: client 999 inserts "hello secret" (clocks 0-11), then deletes it;
    returns (insert, delete) so a test can deliver the delete first."""
    from pycrdt import Doc, Text

    author = Doc(client_id=999)
    text = author.get("content", type=Text)
    text.insert(0, "hello secret")
    insert = author.get_update()
    before = author.get_state()
    del text[0:12]
    return insert, author.get_update(before)


async def make_admin(client: httpx.AsyncClient, database_url: str) -> Account:
    """An admin as `essaycoach create-admin` makes one: a user row with the admin role (registration
    refuses it), then a login through the API."""
    from sqlalchemy import update

    from db.engine import make_engine
    from db.models import User

    account = await register(client, "teacher", name="Admin")
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(User).where(User.id == uuid.UUID(account.id)).values(role="admin"))
    finally:
        await engine.dispose()
    account.role = "admin"
    return account


async def stored_text(database_url: str, essay_id: str) -> str:
    """The essay as the store has it (snapshot plus update log), read straight from the database."""
    from actors.doc import EssayDoc
    from db.engine import make_engine, make_sessionmaker
    from db.repositories import documents

    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            doc = await documents.load(session, essay_id=uuid.UUID(essay_id))
    finally:
        await engine.dispose()
    assert doc is not None
    return EssayDoc.from_state(doc.essay.doc_state, [r.data for r in doc.log]).text


def metric_value(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of this process's default Prometheus registry (0 when not recorded yet)."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0
