"""Feedback while typing: local rules run after a pause, arrive as diffs, survive edits."""

from __future__ import annotations

import asyncio
import json

import websockets

from ops.loadtest.yclient import YClient
from tests.fakes import join, make_assignment, make_class, make_essay, register
from tests.integration.test_sockets import doc_url, ticket


async def next_of(ws: websockets.ClientConnection, type_: str, timeout: float = 5) -> dict:
    async def find() -> dict:
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == type_:
                return event

    return await asyncio.wait_for(find(), timeout)


async def test_typing_gets_feedback_diffs_and_counts_reach_the_teacher(live_client, live_server) -> None:
    teacher, student = await register(live_client, "teacher"), await register(live_client, "student")
    cls = await make_class(live_client, teacher)
    await join(live_client, student, cls["join_code"])
    essay = await make_essay(live_client, student, (await make_assignment(live_client, teacher, cls["id"]))["id"])
    events = await websockets.connect(
        f"ws://{live_server}/ws/essays/{essay['id']}/events?ticket={await ticket(live_client, student)}")
    live = await websockets.connect(
        f"ws://{live_server}/ws/classes/{cls['id']}/live?ticket={await ticket(live_client, teacher)}")
    await live.recv()

    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    writer.type("I beleive that the the homework is important.")
    await writer.wait_acked()
    feedback = await next_of(events, "feedback")
    quotes = {(i["kind"], i["quote"]) for i in feedback["items"]}
    assert ("spelling", "beleive") in quotes
    assert ("grammar", "the the") in quotes
    spelling = next(i for i in feedback["items"] if i["quote"] == "beleive")
    assert spelling["suggestion"] == "believe" and spelling["anchor"]
    assert feedback["removed"] == []

    writer.insert(0, "Honestly, ")  # shifts every offset; the fixed text drops its item
    writer.text[len("Honestly, I "):len("Honestly, I beleive")] = "believe"
    await writer.wait_acked()
    diff = await next_of(events, "feedback")
    assert spelling["id"] in diff["removed"]

    current = (await live_client.get(f"/api/v1/essays/{essay['id']}/feedback", headers=teacher.headers)).json()
    text = writer.text.to_py()
    for item in current["items"]:
        assert text[item["start"]:item["end"]] == item["quote"]
    assert not any(i["quote"] == "beleive" for i in current["items"])

    row = await next_of(live, "student", timeout=5)
    while not row["feedback_counts"]:
        row = await next_of(live, "student", timeout=5)
    assert row["feedback_counts"].get("grammar", 0) >= 1
    await writer.close()
    await events.close()
    await live.close()
