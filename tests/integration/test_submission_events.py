"""A teacher's score override reaches the student's open editor as a `submission` event."""

from __future__ import annotations

import asyncio
import json

import websockets

from tests.fakes import join, make_assignment, make_class, make_essay, make_rubric, register
from tests.integration.test_sockets import ticket


async def test_score_override_is_published_on_the_essays_event_socket(live_client, live_server) -> None:
    teacher, student = await register(live_client, "teacher"), await register(live_client, "student")
    cls = await make_class(live_client, teacher)
    await join(live_client, student, cls["join_code"])
    rubric = await make_rubric(live_client, teacher)
    assignment = await make_assignment(live_client, teacher, cls["id"], rubric["id"])
    essay = await make_essay(live_client, student, assignment["id"], text="Homework should be optional.")
    r = await live_client.post(f"/api/v1/essays/{essay['id']}/submit", headers=student.headers)
    assert r.status_code == 202, r.text
    submission_id = r.json()["id"]
    events = await websockets.connect(
        f"ws://{live_server}/ws/essays/{essay['id']}/events?ticket={await ticket(live_client, student)}")
    try:
        assert json.loads(await events.recv())["type"] == "presence"
        r = await live_client.put(f"/api/v1/submissions/{submission_id}/scores", headers=teacher.headers, json={
            "scores": [{"criterion_id": rubric["criteria"][0]["id"], "points": 3}]})
        assert r.status_code == 200, r.text
        while True:  # the job's own progress events may come first
            event = json.loads(await asyncio.wait_for(events.recv(), 10))
            if event["type"] == "submission" and event.get("scores_updated"):
                break
        assert event["submission_id"] == submission_id and event["essay_id"] == essay["id"]
    finally:
        await events.close()
