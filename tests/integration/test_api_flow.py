"""The newcomer's flow end to end over the API: register -> token -> class -> join -> essay -> read."""

from __future__ import annotations

import httpx

from tests.fakes import join, make_assignment, make_class, make_essay, make_rubric, register


async def test_register_token_class_join_essay_read_flow(client: httpx.AsyncClient) -> None:
    teacher = await register(client, "teacher")
    student = await register(client, "student")
    cls = await make_class(client, teacher)
    await join(client, student, cls["join_code"])
    rubric = await make_rubric(client, teacher)
    assignment = await make_assignment(client, teacher, cls["id"], rubric["id"])
    essay = await make_essay(client, student, assignment["id"], text="Homework helps students learn.")
    assert essay["text"] == "Homework helps students learn."
    assert essay["word_count"] == 4
    assert essay["class_id"] == cls["id"]

    r = await client.get(f"/api/v1/essays/{essay['id']}", headers=teacher.headers)
    assert r.status_code == 200
    assert r.json()["text"] == "Homework helps students learn."

    r = await client.patch(f"/api/v1/essays/{essay['id']}", json={"text": "Homework helps everyone learn."},
                           headers=student.headers)
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "Homework helps everyone learn."
    assert r.json()["seq"] == 2

    roster = (await client.get(f"/api/v1/classes/{cls['id']}/students", headers=teacher.headers)).json()
    assert [row["student_id"] for row in roster["items"]] == [student.id]
    assert roster["items"][0]["essay_count"] == 1


async def test_readiness_checks_the_store_and_the_essay_hosts(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["checks"]["store"] == "ok" and all(
        v == "ok" for v in body["checks"].values())
