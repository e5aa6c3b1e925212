"""Bad input gets a clear problem+json answer: malformed and unknown JSON (422), oversized bodies and
essays (413), bad path ids (422), unknown routes and methods (404, 405)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from serve_app.settings import Settings
from tests.fakes import assert_problem, make_essay, register

API = "/api/v1"
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("raw", [b"{", b"{'name': 'single quotes'}", b"[1, 2", b"\xff\xfe", b"null", b"[]"])
async def test_malformed_json_is_422_problem(client: httpx.AsyncClient, raw: bytes) -> None:
    teacher = await register(client, "teacher")
    r = await client.post(f"{API}/classes", content=raw, headers={**JSON, **teacher.headers})
    assert_problem(r, 422, "validation_failed")


@pytest.mark.parametrize("raw", [b"{", b'{"email": 1}', b"[]"])
async def test_malformed_login_body_is_422_problem(client: httpx.AsyncClient, raw: bytes) -> None:
    assert_problem(await client.post(f"{API}/auth/token", content=raw, headers=JSON), 422, "validation_failed")


async def test_unknown_fields_are_refused(client: httpx.AsyncClient) -> None:
    teacher = await register(client, "teacher")
    student = await register(client)
    cases = [
        (teacher, f"{API}/classes", {"name": "English", "teacher_id": student.id}),
        (student, f"{API}/essays", {"title": "Mine", "owner_id": teacher.id}),
        (None, f"{API}/auth/register", {"email": "x@example.com", "password": "violet-Harbor-93!", "name": "X",
                                        "role": "student", "is_admin": True}),
        (None, f"{API}/auth/token", {"email": student.email, "password": "violet-Harbor-93!", "scope": "admin"}),
    ]
    for who, url, body in cases:
        r = await client.post(url, json=body, headers=who.headers if who else {})
        problem = assert_problem(r, 422, "validation_failed")
        assert "extra" in problem["detail"].lower() or "not permitted" in problem["detail"].lower(), problem


async def test_unknown_field_in_essay_patch_is_refused(client: httpx.AsyncClient) -> None:
    student = await register(client)
    essay = await make_essay(client, student)
    r = await client.patch(f"{API}/essays/{essay['id']}", json={"owner_id": student.id}, headers=student.headers)
    body = assert_problem(r, 422, "validation_failed")
    assert body["errors"][0]["loc"][-1] == "owner_id"


async def test_missing_required_field_names_the_field(client: httpx.AsyncClient) -> None:
    teacher = await register(client, "teacher")
    body = assert_problem(await client.post(f"{API}/classes", json={}, headers=teacher.headers), 422,
                          "validation_failed")
    assert body["detail"].startswith("name")


async def test_body_over_the_byte_limit_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    student = await register(client)
    raw = b'{"title": "' + b"a" * settings.max_body_bytes + b'"}'
    r = await client.post(f"{API}/essays", content=raw, headers={**JSON, **student.headers})
    assert_problem(r, 413, "payload_too_large")


def _streamed(limit: int) -> AsyncIterator[bytes]:
    """A JSON body over `limit` bytes sent chunked (no content-length): the limit applies while reading."""
    chunk = b"a" * 65536

    async def body() -> AsyncIterator[bytes]:
        yield b'{"email": "'
        for _ in range(limit // len(chunk) + 2):
            yield chunk
        yield b'"}'

    return body()


async def test_streamed_login_body_over_the_byte_limit_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.post(f"{API}/auth/token", content=_streamed(settings.max_body_bytes), headers=JSON)
    assert_problem(r, 413, "payload_too_large")


async def test_streamed_model_body_over_the_byte_limit_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    student = await register(client)
    r = await client.post(f"{API}/essays", content=_streamed(settings.max_body_bytes),
                          headers={**JSON, **student.headers})
    assert_problem(r, 413, "payload_too_large")


async def test_essay_text_over_the_char_limit_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    student = await register(client)
    too_long = "a" * (settings.max_essay_chars + 1)
    body = assert_problem(await client.post(f"{API}/essays", json={"title": "Long", "text": too_long},
                                            headers=student.headers), 413, "essay_too_large")
    assert str(settings.max_essay_chars) in body["detail"]
    essay = await make_essay(client, student, text="short")
    r = await client.patch(f"{API}/essays/{essay['id']}", json={"text": too_long}, headers=student.headers)
    assert_problem(r, 413, "essay_too_large")
    assert (await client.get(f"{API}/essays/{essay['id']}", headers=student.headers)).json()["text"] == "short"


async def test_essay_text_is_stored_verbatim_with_its_whitespace(client: httpx.AsyncClient) -> None:
    student = await register(client)
    text = "    Indented first line.\n\nSecond paragraph.\n"
    essay = await make_essay(client, student, text=text)
    assert essay["text"] == text
    patched = "\tTabbed.\n"
    r = await client.patch(f"{API}/essays/{essay['id']}", json={"text": patched}, headers=student.headers)
    assert r.json()["text"] == patched


async def test_essay_text_at_the_char_limit_is_accepted(client: httpx.AsyncClient, settings: Settings) -> None:
    student = await register(client)
    text = ("word " * (settings.max_essay_chars // 5))[: settings.max_essay_chars]
    essay = await make_essay(client, student, text=text)
    assert len(essay["text"]) == settings.max_essay_chars


async def test_non_uuid_path_id_is_422(client: httpx.AsyncClient) -> None:
    student = await register(client)
    assert_problem(await client.get(f"{API}/essays/not-a-uuid", headers=student.headers), 422, "validation_failed")


async def test_unknown_route_and_wrong_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(f"{API}/no-such-thing"), 404, "not_found")
    assert_problem(await client.put(f"{API}/auth/token", json={}), 405, "method_not_allowed")


@pytest.mark.parametrize("title", ["", "   ", "x" * 301])
async def test_essay_title_must_be_1_to_300_chars(client: httpx.AsyncClient, title: str) -> None:
    student = await register(client)
    r = await client.post(f"{API}/essays", json={"title": title}, headers=student.headers)
    assert_problem(r, 422, "validation_failed")


async def test_rubric_level_with_min_above_max_is_refused(client: httpx.AsyncClient) -> None:
    teacher = await register(client, "teacher")
    body = {"title": "Bad", "criteria": [{"name": "C", "levels": [
        {"min_score": 3, "max_score": 1, "descriptor": "upside down"}]}]}
    assert_problem(await client.post(f"{API}/rubrics", json=body, headers=teacher.headers), 422,
                   "validation_failed")


async def test_assignment_due_date_needs_a_timezone(client: httpx.AsyncClient) -> None:
    teacher = await register(client, "teacher")
    cls = (await client.post(f"{API}/classes", json={"name": "C"}, headers=teacher.headers)).json()
    r = await client.post(f"{API}/classes/{cls['id']}/assignments",
                          json={"title": "T", "due_at": "2026-12-01T17:00:00"}, headers=teacher.headers)
    assert_problem(r, 422, "validation_failed")


async def test_unknown_join_code_is_404_with_its_code(client: httpx.AsyncClient) -> None:
    student = await register(client)
    r = await client.post(f"{API}/classes/join", json={"join_code": "ZZZZZZZZ"}, headers=student.headers)
    assert_problem(r, 404, "unknown_join_code")


async def test_out_of_range_numbers_are_clean_errors_not_500(client: httpx.AsyncClient) -> None:
    student = await register(client)
    r = await client.post(f"{API}/essays", json={"title": "t", "text": "x"}, headers=student.headers)
    essay = r.json()["id"]
    for path in (f"/essays/{essay}/revisions?cursor=99999999999999999999",
                 f"/essays/{essay}/revisions/99999999999", f"/essays/{essay}/replay?after_seq={2**64}"):
        r = await client.get(f"{API}{path}", headers=student.headers)
        assert r.status_code in (200, 404, 422), (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json") or \
            r.headers["content-type"].startswith("application/problem+json")


async def test_concurrent_joins_by_the_same_student_both_succeed(client: httpx.AsyncClient) -> None:
    import asyncio

    teacher, student = await register(client, "teacher"), await register(client)
    cls = (await client.post(f"{API}/classes", json={"name": "c"}, headers=teacher.headers)).json()
    replies = await asyncio.gather(*(client.post(f"{API}/classes/join", json={"join_code": cls["join_code"]},
                                                 headers=student.headers) for _ in range(5)))
    assert [r.status_code for r in replies] == [200] * 5
