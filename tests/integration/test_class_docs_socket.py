"""`/ws/classes/{id}/docs`: a teacher follows many essays of the class over one socket."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from pycrdt import create_update_message

from ops.loadtest.yclient import ClassDocsClient, YClient, _name
from tests.fakes import Account, join, make_assignment, make_class, make_essay, register
from tests.integration.test_sockets import doc_url, ticket


async def docs_url(client: httpx.AsyncClient, server: str, account: Account, class_id: str) -> str:
    return f"ws://{server}/ws/classes/{class_id}/docs?ticket={await ticket(client, account)}"


@pytest.fixture
async def class_of_two(live_client: httpx.AsyncClient) -> dict[str, object]:
    teacher = await register(live_client, "teacher")
    cls = await make_class(live_client, teacher)
    assignment = await make_assignment(live_client, teacher, cls["id"])
    students, essays = [], []
    for _ in range(2):
        student = await register(live_client, "student")
        await join(live_client, student, cls["join_code"])
        students.append(student)
        essays.append(await make_essay(live_client, student, assignment["id"], text="Start. "))
    return {"teacher": teacher, "class": cls, "students": students, "essays": essays}


async def test_one_socket_follows_every_students_typing(live_client, live_server, class_of_two) -> None:
    teacher, cls = class_of_two["teacher"], class_of_two["class"]
    students, essays = class_of_two["students"], class_of_two["essays"]
    watcher = await ClassDocsClient(await docs_url(live_client, live_server, teacher, cls["id"])).connect()
    followed = [await watcher.follow(e["id"]) for e in essays]
    assert [str(f.text) for f in followed] == ["Start. ", "Start. "]
    writers = [await YClient(await doc_url(live_client, live_server, s, e["id"])).connect()
               for s, e in zip(students, essays)]
    for i, writer in enumerate(writers):
        for word in ("one ", "two ", "three "):
            writer.type(f"{i}-{word}")
    for i, (writer, f) in enumerate(zip(writers, followed)):
        await writer.wait_acked()
        await f.wait_text(lambda t, i=i: t == f"Start. {i}-one {i}-two {i}-three ")
    # Unfollowing one stops its updates; the other keeps coming.
    await watcher.unfollow(essays[0]["id"])
    await asyncio.sleep(0.2)
    before = watcher.frames_by_name[essays[0]["id"]]
    writers[0].type("unseen ")
    writers[1].type("seen ")
    await followed[1].wait_text(lambda t: t.endswith("seen "))
    await writers[0].wait_acked()
    await asyncio.sleep(0.2)
    assert watcher.frames_by_name[essays[0]["id"]] == before  # the server sent nothing more for it
    for c in (*writers, watcher):
        await c.close()


async def test_essays_outside_the_class_are_denied_and_the_socket_stays_open(live_client, live_server,
                                                                            class_of_two) -> None:
    teacher, cls, essays = class_of_two["teacher"], class_of_two["class"], class_of_two["essays"]
    outsider = await register(live_client, "student")
    elsewhere = await make_essay(live_client, outsider, text="not yours")
    watcher = await ClassDocsClient(await docs_url(live_client, live_server, teacher, cls["id"])).connect()
    for essay_id in (elsewhere["id"], "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        refused = await watcher.follow(essay_id)
        assert refused.denied.is_set() and not refused.synced.is_set() and str(refused.text) == ""
    ok = await watcher.follow(essays[0]["id"])  # a round trip after the denials: the socket stayed open
    assert ok.synced.is_set() and str(ok.text) == "Start. "
    await watcher.close()


async def test_a_write_closes_4403_and_nothing_is_applied(live_client, live_server, class_of_two) -> None:
    teacher, cls, essays = class_of_two["teacher"], class_of_two["class"], class_of_two["essays"]
    watcher = await ClassDocsClient(await docs_url(live_client, live_server, teacher, cls["id"])).connect()
    followed = await watcher.follow(essays[0]["id"])
    followed.text.insert(0, "teacher was here ")
    await watcher.send_raw(_name(essays[0]["id"]) + create_update_message(followed.doc.get_update()))
    assert await watcher.wait_closed() == 4403
    r = await live_client.get(f"/api/v1/essays/{essays[0]['id']}", headers=class_of_two["students"][0].headers)
    assert r.json()["text"] == "Start. "


@pytest.mark.parametrize("frame, code", [
    (b"\x05ab", 4400),                              # name longer than the frame
    (_name("x"), 4400),                             # nothing after the name
    (_name("x") + b"\x07\x00", 4415),               # unknown message type
    (_name("x") + b"\x00\x00\x05\x01", 4400),       # truncated state vector
])
async def test_bad_frames_get_their_close_code(live_client, live_server, class_of_two, frame, code) -> None:
    teacher, cls = class_of_two["teacher"], class_of_two["class"]
    watcher = await ClassDocsClient(await docs_url(live_client, live_server, teacher, cls["id"])).connect()
    await watcher.send_raw(frame)
    assert await watcher.wait_closed() == code


async def test_only_the_classs_teacher_may_open_it(live_client, live_server, class_of_two) -> None:
    cls, student = class_of_two["class"], class_of_two["students"][0]
    other_teacher = await register(live_client, "teacher")
    for account, code in ((student, 4403), (other_teacher, 4404)):
        async with websockets.connect(await docs_url(live_client, live_server, account, cls["id"])) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == code


async def test_names_are_canonical_essay_ids(live_client, live_server, class_of_two) -> None:
    teacher, cls, essays = class_of_two["teacher"], class_of_two["class"], class_of_two["essays"]
    watcher = await ClassDocsClient(await docs_url(live_client, live_server, teacher, cls["id"])).connect()
    for spelling in (essays[0]["id"].upper(), essays[0]["id"].replace("-", ""), "{" + essays[0]["id"] + "}"):
        assert (await watcher.follow(spelling)).denied.is_set()
    assert str((await watcher.follow(essays[0]["id"])).text) == "Start. "
    await watcher.send_raw(_name("x" * 65) + b"\x03")
    assert await watcher.wait_closed() == 4400


async def test_a_deleted_essay_is_denied_and_the_others_keep_coming(live_client, live_server, class_of_two) -> None:
    teacher, cls = class_of_two["teacher"], class_of_two["class"]
    students, essays = class_of_two["students"], class_of_two["essays"]
    watcher = await ClassDocsClient(await docs_url(live_client, live_server, teacher, cls["id"])).connect()
    gone, kept = [await watcher.follow(e["id"]) for e in essays]
    r = await live_client.delete(f"/api/v1/essays/{essays[0]['id']}", headers=students[0].headers)
    assert r.status_code == 204
    again = await watcher.follow(essays[0]["id"])  # a fresh sync of the deleted essay
    assert again.denied.is_set() and not again.synced.is_set()
    writer = await YClient(await doc_url(live_client, live_server, students[1], essays[1]["id"])).connect()
    writer.type("still live ")
    await kept.wait_text(lambda t: t.endswith("still live "))
    for c in (writer, watcher):
        await c.close()


async def test_closing_the_socket_detaches_every_followed_essay(live_client, live_server, class_of_two) -> None:
    teacher, cls, essays = class_of_two["teacher"], class_of_two["class"], class_of_two["essays"]
    watcher = await ClassDocsClient(await docs_url(live_client, live_server, teacher, cls["id"])).connect()
    for e in essays:
        await watcher.follow(e["id"])

    async def connections(essay_id: str) -> int:
        url = f"ws://{live_server}/ws/essays/{essay_id}/events?ticket={await ticket(live_client, teacher)}"
        async with websockets.connect(url) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))["connections"]

    assert [await connections(e["id"]) for e in essays] == [1, 1]
    await watcher.close()
    for _ in range(50):
        if [await connections(e["id"]) for e in essays] == [0, 0]:
            break
        await asyncio.sleep(0.1)
    assert [await connections(e["id"]) for e in essays] == [0, 0]


async def test_the_loadtests_json_socket_client_counts_the_web_apps_other_sockets_messages(
        live_client, live_server, class_of_two) -> None:
    """essaycoach-web's client (ops/loadtest): the class live socket and a student's events socket,
    each message counted by its type."""
    from ops.loadtest.yclient import JsonSocketClient

    teacher, cls = class_of_two["teacher"], class_of_two["class"]
    student, essay = class_of_two["students"][0], class_of_two["essays"][0]
    live = await JsonSocketClient(
        f"ws://{live_server}/ws/classes/{cls['id']}/live?ticket={await ticket(live_client, teacher)}").connect()
    events = await JsonSocketClient(
        f"ws://{live_server}/ws/essays/{essay['id']}/events?ticket={await ticket(live_client, student)}").connect()
    for _ in range(100):  # a row per student at once
        if live.by_type["student"] >= 2 and events.by_type:
            break
        await asyncio.sleep(0.05)
    rows = live.by_type["student"]
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    writer.type("More words. ")
    await writer.wait_acked()
    for _ in range(100):
        if live.by_type["student"] > rows:
            break
        await asyncio.sleep(0.05)
    assert rows >= 2 and live.by_type["student"] > rows  # then the writer's change
    assert sum(events.by_type.values()) >= 1 and "not json" not in events.by_type
    assert live.bytes_received > 0 and events.bytes_received > 0
    for c in (writer, live, events):
        await c.close()
    assert live.close_code is not None and events.close_code is not None
