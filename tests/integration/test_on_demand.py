"""On-demand analysis (structure included) and on-demand rubric scores."""

from __future__ import annotations

import httpx

from tests.fakes import join, make_assignment, make_class, make_essay, make_rubric, register

ESSAY = (("Homework is important for students in many ways. " * 12).strip() + "\n"
         + ("I beleive it helps students practise what they learn every day. " * 10).strip())


async def test_refresh_analyses_the_whole_essay_now(client: httpx.AsyncClient) -> None:
    student = await register(client)
    essay = await make_essay(client, student, text=ESSAY)
    r = await client.post(f"/api/v1/essays/{essay['id']}/feedback/refresh", headers=student.headers)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert any(i["quote"] == "beleive" for i in items)
    assert any(i["kind"] == "structure" for i in items)
    for item in items:
        assert ESSAY[item["start"]:item["end"]] == item["quote"]


async def test_scores_on_demand_use_the_assignments_rubric_and_are_never_final(client: httpx.AsyncClient) -> None:
    teacher, student = await register(client, "teacher"), await register(client)
    cls = await make_class(client, teacher)
    await join(client, student, cls["join_code"])
    rubric = await make_rubric(client, teacher)
    assignment = await make_assignment(client, teacher, cls["id"], rubric["id"])
    essay = await make_essay(client, student, assignment["id"], text=ESSAY)
    r = await client.post(f"/api/v1/essays/{essay['id']}/scores", headers=teacher.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["final"] is False and body["rubric_id"] == rubric["id"]
    assert {s["criterion_id"] for s in body["scores"]} == {c["id"] for c in rubric["criteria"]}
    assert all(s["estimate"] for s in body["scores"])
    plain = await make_essay(client, student, text=ESSAY)
    r = await client.post(f"/api/v1/essays/{plain['id']}/scores", headers=student.headers)
    assert r.status_code == 409 and r.json()["code"] == "no_rubric"
    stranger = await register(client)
    r = await client.post(f"/api/v1/essays/{essay['id']}/scores", headers=stranger.headers)
    assert r.status_code == 404
