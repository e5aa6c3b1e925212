"""Anchored teacher comments (stored and live), revisions with diffs, and replay."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import websockets
from pycrdt import Doc, Text

from ops.loadtest.yclient import YClient
from tests.fakes import join, make_assignment, make_class, make_essay, register
from tests.integration.test_sockets import doc_url, ticket


async def setup(client: httpx.AsyncClient, text: str) -> tuple:
    teacher, student = await register(client, "teacher"), await register(client, "student")
    cls = await make_class(client, teacher)
    await join(client, student, cls["join_code"])
    assignment = await make_assignment(client, teacher, cls["id"])
    essay = await make_essay(client, student, assignment["id"], text=text)
    return teacher, student, essay


async def test_comment_is_delivered_live_and_its_anchor_follows_later_edits(live_client, live_server) -> None:
    teacher, student, essay = await setup(live_client, "Dogs are loyal. Cats are independent.")
    events = await websockets.connect(
        f"ws://{live_server}/ws/essays/{essay['id']}/events?ticket={await ticket(live_client, student)}")
    assert json.loads(await events.recv())["type"] == "presence"
    r = await live_client.post(f"/api/v1/essays/{essay['id']}/comments",
                               json={"body": "Give an example.", "start": 16, "end": 37}, headers=teacher.headers)
    assert r.status_code == 201, r.text
    assert r.json()["quote"] == "Cats are independent."
    live = json.loads(await asyncio.wait_for(events.recv(), 5))
    assert live["type"] == "comment" and live["comment"]["body"] == "Give an example."

    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    writer.insert(0, "In my view, ")
    await writer.wait_acked()
    listed = (await live_client.get(f"/api/v1/essays/{essay['id']}/comments", headers=student.headers)).json()
    item = listed["items"][0]
    assert (item["start"], item["end"]) == (28, 49)
    assert writer.text.to_py()[item["start"]:item["end"]] == "Cats are independent."
    await writer.close()
    await events.close()


async def test_student_cannot_comment_and_range_must_be_inside_text(client: httpx.AsyncClient) -> None:
    teacher, student, essay = await setup(client, "Short.")
    r = await client.post(f"/api/v1/essays/{essay['id']}/comments", json={"body": "x", "start": 0, "end": 1},
                          headers=student.headers)
    assert r.status_code == 403
    r = await client.post(f"/api/v1/essays/{essay['id']}/comments", json={"body": "x", "start": 0, "end": 99},
                          headers=teacher.headers)
    assert r.status_code == 422 and r.json()["code"] == "range_outside_text"
    stranger = await register(client, "teacher")
    r = await client.get(f"/api/v1/essays/{essay['id']}/comments", headers=stranger.headers)
    assert r.status_code == 404


async def test_replay_plays_the_writing_back_in_order(client: httpx.AsyncClient) -> None:
    teacher, student, essay = await setup(client, "First draft.")
    for text in ("First draft. More.", "Final: First draft. More."):
        r = await client.patch(f"/api/v1/essays/{essay['id']}", json={"text": text}, headers=student.headers)
        assert r.status_code == 200
    r = await client.get(f"/api/v1/essays/{essay['id']}/replay?include_text=true", headers=teacher.headers)
    steps = r.json()["items"]
    assert [s["seq"] for s in steps] == [1, 2, 3]
    assert [s["text"] for s in steps] == ["First draft.", "First draft. More.", "Final: First draft. More."]
    doc = Doc()
    for s in steps:
        doc.apply_update(base64.b64decode(s["update"]))
    assert str(doc.get("content", type=Text)) == "Final: First draft. More."
    later = (await client.get(f"/api/v1/essays/{essay['id']}/replay?after_seq=1&include_text=true",
                              headers=student.headers)).json()["items"]
    assert [s["text"] for s in later] == ["First draft. More.", "Final: First draft. More."]


async def test_revisions_list_text_and_diff_to_previous(client: httpx.AsyncClient, app) -> None:
    teacher, student, essay = await setup(client, "One.\nTwo.")
    live = app.state.ctx.hosts
    import uuid

    eid = uuid.UUID(essay["id"])
    # The first store of an essay's text is its first periodic revision.
    first = await live.of(eid).revision(eid, reason="manual")
    await client.patch(f"/api/v1/essays/{essay['id']}", json={"text": "One.\nTwo, improved."}, headers=student.headers)
    second = await live.of(eid).revision(eid, reason="submit")
    assert second == first + 1
    revs = (await client.get(f"/api/v1/essays/{essay['id']}/revisions", headers=teacher.headers)).json()["items"]
    assert [(r["n"], r["reason"], r["text"]) for r in revs[-2:]] == [(first, "manual", "One.\nTwo."),
                                                                     (second, "submit", "One.\nTwo, improved.")]
    assert revs[0]["reason"] == "periodic" and revs[0]["diff"].count("+") >= 2
    assert "-Two." in revs[-1]["diff"] and "+Two, improved." in revs[-1]["diff"]
    one = (await client.get(f"/api/v1/essays/{essay['id']}/revisions/{second}", headers=student.headers)).json()
    assert one["diff"] == revs[-1]["diff"]
    assert (await client.get(f"/api/v1/essays/{essay['id']}/revisions/9", headers=student.headers)).status_code == 404
