"""The live sockets over real websockets (uvicorn), with in-process essay hosts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import pytest
import websockets
from pycrdt import create_sync_message

from ops.loadtest.yclient import YClient
from tests.fakes import Account, join, make_assignment, make_class, make_essay, register


async def ticket(client: httpx.AsyncClient, account: Account) -> str:
    r = await client.post("/api/v1/auth/ws-ticket", headers=account.headers)
    assert r.status_code == 200, r.text
    return r.json()["ticket"]


async def doc_url(client: httpx.AsyncClient, server: str, account: Account, essay_id: str) -> str:
    return f"ws://{server}/ws/essays/{essay_id}/doc?ticket={await ticket(client, account)}"


@pytest.fixture
async def classroom(live_client: httpx.AsyncClient) -> dict[str, object]:
    teacher = await register(live_client, "teacher")
    student = await register(live_client, "student")
    cls = await make_class(live_client, teacher)
    await join(live_client, student, cls["join_code"])
    assignment = await make_assignment(live_client, teacher, cls["id"])
    essay = await make_essay(live_client, student, assignment["id"])
    return {"teacher": teacher, "student": student, "class": cls, "essay": essay}


async def test_student_edit_is_acked_stored_and_seen_by_teacher(live_client, live_server, classroom) -> None:
    student, teacher, essay = classroom["student"], classroom["teacher"], classroom["essay"]
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    reader = await YClient(await doc_url(live_client, live_server, teacher, essay["id"])).connect()
    writer.type("Homework ")
    writer.type("is useful.")
    await writer.wait_acked()
    assert await reader.wait_text(lambda t: t == "Homework is useful.")
    r = await live_client.get(f"/api/v1/essays/{essay['id']}", headers=teacher.headers)
    assert r.json()["text"] == "Homework is useful."
    assert r.json()["word_count"] == 3
    await writer.close()
    await reader.close()


async def test_two_writers_converge(live_client, live_server, classroom) -> None:
    student, essay = classroom["student"], classroom["essay"]
    a = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    b = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    for i in range(20):
        a.insert(0, f"a{i} ")
        b.type(f"b{i} ")
        await asyncio.sleep(0.005)
    await a.wait_acked()
    await b.wait_acked()
    final_a = await a.wait_text(lambda t: t.count("b19") == 1 and t.count("a19") == 1)
    final_b = await b.wait_text(lambda t: t == final_a)
    assert final_a == final_b
    assert all(f"a{i} " in final_a and f"b{i} " in final_a for i in range(20))
    await a.close()
    await b.close()


async def test_teacher_write_is_refused_and_nothing_applied(live_client, live_server, classroom) -> None:
    teacher, student, essay = classroom["teacher"], classroom["student"], classroom["essay"]
    reader = await YClient(await doc_url(live_client, live_server, teacher, essay["id"])).connect()
    reader.type("teacher was here")
    assert await reader.wait_closed() == 4403
    assert reader.permission_denied
    r = await live_client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
    assert "teacher was here" not in r.json()["text"]


async def test_reconnect_resyncs_without_loss_or_duplication(live_client, live_server, classroom) -> None:
    student, essay = classroom["student"], classroom["essay"]
    first = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    first.type("one ")
    await first.wait_acked()
    await first.ws.close()  # network drops; the doc stays in the browser
    first.type("two ")  # typed offline
    second = YClient(await doc_url(live_client, live_server, student, essay["id"]))
    second.doc = first.doc  # same browser doc, new socket (what a provider does on reconnect)
    second.text = first.text
    second.doc.observe(second._on_local)
    await second.connect()
    await second.wait_acked()
    r = await live_client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
    assert r.json()["text"] == "one two "
    await second.close()


async def test_missing_or_spent_ticket_is_refused_before_accept(live_client, live_server, classroom) -> None:
    student, essay = classroom["student"], classroom["essay"]
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(f"ws://{live_server}/ws/essays/{essay['id']}/doc")
    url = await doc_url(live_client, live_server, student, essay["id"])
    ok = await YClient(url).connect()
    await ok.close()
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(url)


async def test_a_socket_path_we_do_not_serve_is_refused_and_ours_keep_working(
        live_client, live_server, classroom) -> None:
    student, essay = classroom["student"], classroom["essay"]
    for path in ("/ws/essays/x/unknown", "/ws/nothing", f"/ws/essays/{essay['id']}/doc/extra"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://{live_server}{path}?ticket={await ticket(live_client, student)}")
        assert refused.value.response.status_code == 403
    client = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    client.text.insert(0, "still here")
    await client.wait_acked(1)
    await client.close()


async def test_other_students_essay_closes_4404(live_client, live_server, classroom) -> None:
    stranger = await register(live_client, "student")
    c = await YClient(await doc_url(live_client, live_server, stranger, classroom["essay"]["id"])).connect(
        wait_synced=False)
    assert await c.wait_closed() == 4404


@pytest.mark.parametrize("frame, code", [
    (b"\x00\x02\xff", 4400),          # update whose length runs past the frame
    (b"\x07\x00", 4415),              # unknown message type
    (b"\x00\x02\x03\x01\x02\x03", 4400),  # update that is not a Yjs update
    ("text frame", 4400),             # text on a binary socket
    (b"\x00" * (1024 * 1024 + 10), 1009),
])
async def test_bad_frames_get_their_close_code_and_other_essays_are_untouched(
    live_client, live_server, classroom, frame, code
) -> None:
    student, essay = classroom["student"], classroom["essay"]
    other = await make_essay(live_client, student, text="untouched")
    c = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    await c.send_raw(frame)
    assert await c.wait_closed() == code
    r = await live_client.get(f"/api/v1/essays/{other['id']}", headers=student.headers)
    assert r.json()["text"] == "untouched"
    again = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    again.type("still works")
    await again.wait_acked()
    await again.close()


async def test_an_undecodable_update_never_reaches_a_watcher(live_client, live_server, classroom) -> None:
    """Typing is relayed to watchers on receipt, but only once it decodes as a Yjs update."""
    student, teacher, essay = classroom["student"], classroom["teacher"], classroom["essay"]
    reader = await YClient(await doc_url(live_client, live_server, teacher, essay["id"])).connect()
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    writer.type("kept")
    await reader.wait_text(lambda t: t == "kept")
    await writer.send_raw(b"\x00\x02\x03\x01\x02\x03")
    assert await writer.wait_closed() == 4400
    again = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    again.type(" and more")
    # Relayed, the bad frame would have reached the reader before this text, and decoding it
    # (ValueError) would have ended the reader's receive loop: the text would never arrive.
    assert await reader.wait_text(lambda t: t == "kept and more")
    await again.close()
    await reader.close()


async def test_flood_is_closed_1008(live_client, live_server, classroom) -> None:
    student, essay = classroom["student"], classroom["essay"]
    limited = 'essaycoach_rate_limited_total{code="ws_messages",route="websocket"}'

    def value(text: str) -> float:
        return next((float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(limited)), 0.0)

    before = value((await live_client.get("/metrics")).text)
    c = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    await query_awareness_flood(c, 600)
    assert await c.wait_closed() == 1008
    assert value((await live_client.get("/metrics")).text) == before + 1


async def query_awareness_flood(c: YClient, frames: int) -> None:
    """`frames` query-awareness frames (cheap, still counted by the rate limit), or until closed."""
    for _ in range(frames):
        try:
            await c.send_raw(b"\x03")
        except websockets.ConnectionClosed:
            return


async def taken_or_closed(c: YClient) -> None:
    """Until the server took every frame sent so far (its answer to a sync step 1 arrives, in
    order) or closed the socket."""
    c.synced.clear()
    with contextlib.suppress(websockets.ConnectionClosed):
        await c.send_raw(create_sync_message(c.doc))
    waits = [asyncio.ensure_future(c.synced.wait()), asyncio.ensure_future(c.wait_closed(10))]
    await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()


async def test_a_users_writing_sockets_share_one_rate_limit_and_readers_keep_their_own(
        live_client, live_server, classroom) -> None:
    """More sockets do not buy a writer more messages: 4 sockets of 120 frames each (under the
    socket's burst of 200 alone) pass the user's 200 together, and one closes 1008. A teacher's 4
    read-only sockets, whose handshakes alone add up across a class, keep a bucket each."""
    student, teacher, essay = classroom["student"], classroom["teacher"], classroom["essay"]

    async def flood(account: Account) -> list[int | None]:
        clients = [await YClient(await doc_url(live_client, live_server, account, essay["id"])).connect()
                   for _ in range(4)]
        for c in clients:
            await query_awareness_flood(c, 120)
        for c in clients:
            await taken_or_closed(c)
        codes = [c.close_code for c in clients]
        for c in clients:
            await c.close()
        return codes

    assert 1008 in await flood(student)
    assert await flood(teacher) == [None] * 4


async def test_a_writer_reconnecting_gets_no_fresh_burst(live_client, live_server, classroom) -> None:
    """The user's bucket outlives the socket until it has refilled: 150 frames, close, reconnect,
    150 more pass the user's 200 and close 1008 (each socket alone is under its own 200)."""
    student, essay = classroom["student"], classroom["essay"]
    codes = []
    for _ in range(2):
        c = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
        await query_awareness_flood(c, 150)
        await taken_or_closed(c)
        codes.append(c.close_code)
        await c.close()
    assert codes == [None, 1008]


async def test_events_socket_resume_and_class_live_rows(live_client, live_server, classroom) -> None:
    student, teacher, essay, cls = (classroom["student"], classroom["teacher"], classroom["essay"],
                                    classroom["class"])
    events = await websockets.connect(
        f"ws://{live_server}/ws/essays/{essay['id']}/events?ticket={await ticket(live_client, teacher)}")
    hello = json.loads(await events.recv())
    assert hello["type"] == "presence" and hello["essay_id"] == essay["id"]
    live = await websockets.connect(
        f"ws://{live_server}/ws/classes/{cls['id']}/live?ticket={await ticket(live_client, teacher)}")
    first = json.loads(await live.recv())
    assert first["type"] == "student" and first["student_id"] == student.id

    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    writer.type("A sentence long enough to paste. " * 10)
    await writer.wait_acked()
    row = json.loads(await asyncio.wait_for(live.recv(), 5))
    assert row["essay_id"] == essay["id"] and row["word_count"] == 60
    assert "large_paste" in row["flags"]

    seen = []
    while not any(e["type"] == "saved" for e in seen):
        seen.append(json.loads(await asyncio.wait_for(events.recv(), 10)))
    assert [e["seq"] for e in seen] == list(range(hello["seq"] + 1, hello["seq"] + 1 + len(seen)))
    await asyncio.sleep(0.5)  # let analysis publish too, then resume from the start
    while True:
        try:
            seen.append(json.loads(await asyncio.wait_for(events.recv(), 0.5)))
        except TimeoutError:
            break
    # Resuming from the start: the same events, except that the feedback diffs come as one full
    # set at the latest diff's place, equal to what applying the diffs gave.
    await events.send(json.dumps({"type": "resume", "last_seq": hello["seq"], "epoch": hello["epoch"]}))
    others = [e for e in seen if e["type"] != "feedback"]
    diffs = [e for e in seen if e["type"] == "feedback"]
    assert diffs, "the analysis published feedback"
    replayed = [json.loads(await asyncio.wait_for(events.recv(), 5)) for _ in range(len(others) + 1)]
    assert [e for e in replayed if e["type"] != "feedback"] == others
    (full,) = [e for e in replayed if e["type"] == "feedback"]
    assert [e["seq"] for e in replayed] == sorted(e["seq"] for e in others + [diffs[-1]])
    assert full["full"] is True and (full["seq"], full["doc_seq"]) == (diffs[-1]["seq"], diffs[-1]["doc_seq"])
    applied: dict[str, dict] = {}
    for diff in diffs:
        for removed in diff["removed"]:
            applied.pop(removed, None)
        applied.update((item["id"], item) for item in diff["items"])
    assert {i["id"]: i for i in full["items"]} == applied and full["counts"] == diffs[-1]["counts"]
    await events.send(json.dumps({"type": "resume", "last_seq": 0, "epoch": "another-epoch"}))
    assert json.loads(await asyncio.wait_for(events.recv(), 5))["type"] == "resync"
    await events.close()
    await live.close()
    await writer.close()


async def test_student_cannot_open_class_live_socket(live_client, live_server, classroom) -> None:
    student, cls = classroom["student"], classroom["class"]
    ws = await websockets.connect(
        f"ws://{live_server}/ws/classes/{cls['id']}/live?ticket={await ticket(live_client, student)}")
    with pytest.raises(websockets.ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd.code == 4403


async def test_offline_typing_sent_on_reconnect_is_not_flagged_as_a_paste(live_client, live_server, classroom) -> None:
    student, teacher, essay, cls = (classroom["student"], classroom["teacher"], classroom["essay"],
                                    classroom["class"])
    first = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    await first.ws.close()
    first.type("typed while the network was down, " * 20)  # arrives in one sync step 2
    again = YClient(await doc_url(live_client, live_server, student, essay["id"]))
    again.doc, again.text = first.doc, first.text
    again.doc.observe(again._on_local)
    await again.connect()
    await again.wait_acked()
    live = await websockets.connect(
        f"ws://{live_server}/ws/classes/{cls['id']}/live?ticket={await ticket(live_client, teacher)}")
    row = json.loads(await live.recv())
    assert row["word_count"] == 120 and "large_paste" not in row["flags"]
    await live.close()
    await again.close()


async def test_metrics_count_sockets_updates_and_ack_latency(live_client, live_server, classroom) -> None:
    student, essay = classroom["student"], classroom["essay"]
    c = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    before = (await live_client.get("/metrics")).text
    c.type("counted")
    await c.wait_acked()
    after = (await live_client.get("/metrics")).text

    def value(text: str, name: str) -> float:
        line = next(ln for ln in text.splitlines() if ln.startswith(name + " ") or ln.startswith(name + "{"))
        return float(line.rsplit(" ", 1)[1])

    assert value(after, "essaycoach_doc_updates_total") == value(before, "essaycoach_doc_updates_total") + 1
    assert value(after, "essaycoach_ack_seconds_count") == value(before, "essaycoach_ack_seconds_count") + 1
    assert value(after, 'essaycoach_ws_open{socket="doc"}') >= 1
    await c.close()


async def test_ack_latency_starts_at_the_frames_arrival_on_both_paths(live_client, live_server, classroom,
                                                                      monkeypatch) -> None:
    """`essaycoach_ack_seconds` runs from the connection's receipt stamp, whether the socket's
    task handles the update (a sync step 2) or the receive callback hands it over (typing into
    an idle socket): here every frame is stamped as having arrived 1,000 s ago."""
    from pycrdt import Doc, Text

    from serve_app.fastpath import uvicorn_protocol
    from serve_app.realtime.protocol import encode_ack, encode_sync_step2, encode_update

    student, essay = classroom["student"], classroom["essay"]
    ws = await websockets.connect(await doc_url(live_client, live_server, student, essay["id"]))
    doc = Doc()
    doc["content"] = text = Text()

    def typed(words: str) -> bytes:
        before = doc.get_state()
        text.insert(len(text), words)
        return doc.get_update(before)

    async def acked(n: int) -> None:
        while await asyncio.wait_for(ws.recv(), 10) != encode_ack(n):
            pass

    def ack_sum(text_: str) -> float:
        line = next(ln for ln in text_.splitlines() if ln.startswith("essaycoach_ack_seconds_sum"))
        return float(line.rsplit(" ", 1)[1])

    monkeypatch.setattr(uvicorn_protocol, "_clock", lambda: time.perf_counter() - 1000)
    for n, frame in ((1, encode_sync_step2(typed("by the task "))), (2, encode_update(typed("on receipt")))):
        before = ack_sum((await live_client.get("/metrics")).text)
        await ws.send(frame)
        await acked(n)
        assert 1000 <= ack_sum((await live_client.get("/metrics")).text) - before < 1100
    await ws.close()


async def test_teacher_reconnecting_after_deletions_is_not_refused(live_client, live_server, classroom) -> None:
    student, teacher, essay = classroom["student"], classroom["teacher"], classroom["essay"]
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    writer.type("Typo here.")
    del writer.text[0:4]  # deletions put a delete set into every later step 2
    await writer.wait_acked()
    first = await YClient(await doc_url(live_client, live_server, teacher, essay["id"])).connect()
    await first.wait_text(lambda t: t == " here.")
    await first.ws.close()
    again = YClient(await doc_url(live_client, live_server, teacher, essay["id"]))
    again.doc, again.text = first.doc, first.text  # the same browser doc reconnects
    await again.connect()
    writer.type(" More.")
    await writer.wait_acked()
    assert await again.wait_text(lambda t: t == " here. More.")
    await again.round_trip()  # the server has handled its reconnect step 2 without refusing it
    assert again.close_code is None and not again.permission_denied
    await again.close()
    await writer.close()


async def test_a_watcher_opening_while_typing_is_in_flight_still_gets_it(settings) -> None:
    """Typing handed to local sockets before a watcher subscribed, but applied by the host after
    the watcher's sync (Ray gives no order between calls), must still reach that watcher."""
    from serve_app.app import create_app
    from tests.conftest import serving

    application = create_app(settings)
    async with serving(application) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        teacher, student = await register(client, "teacher"), await register(client, "student")
        cls = await make_class(client, teacher)
        await join(client, student, cls["join_code"])
        essay = await make_essay(client, student, (await make_assignment(client, teacher, cls["id"]))["id"])
        writer = await YClient(await doc_url(client, server, student, essay["id"])).connect()
        writer.type("first")
        await writer.wait_acked()

        hosts = application.state.ctx.hosts.host_objects
        originals = [h.apply_update for h in hosts]

        def slowed(apply):  # the host gets to the update only after the watcher has synced
            async def apply_later(*args, **kwargs):
                await asyncio.sleep(0.5)
                return await apply(*args, **kwargs)
            return apply_later

        for host, apply in zip(hosts, originals):
            host.apply_update = slowed(apply)
        writer.type(" second")
        await asyncio.sleep(0.1)
        watcher = await YClient(await doc_url(client, server, teacher, essay["id"])).connect()
        await writer.wait_acked()
        for host in hosts:
            del host.apply_update
        assert await watcher.wait_text(lambda t: t == "first second", timeout=3)
        await writer.close()
        await watcher.close()


async def test_our_sockets_bypass_the_http_middleware_stack_and_other_paths_do_not(settings) -> None:
    """`serve_socket`: /ws/* routes run straight from the ASGI call (the HTTP middlewares kept a
    frame per socket alive for nothing); everything else still goes through the stack."""
    from serve_app.app import create_app
    from tests.conftest import serving

    app = create_app(settings)
    seen: list[tuple[str, str]] = []

    class Spy:
        def __init__(self, inner) -> None:
            self.inner = inner

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] in ("http", "websocket"):
                seen.append((scope["type"], scope["path"]))
            await self.inner(scope, receive, send)

    app.add_middleware(Spy)
    async with serving(app) as address:
        for path in ("/ws/essays/00000000-0000-0000-0000-000000000000/doc", "/ws/nothing"):
            with pytest.raises(websockets.InvalidStatus):  # no ticket: refused at the handshake
                await websockets.connect(f"ws://{address}{path}")
        async with httpx.AsyncClient(base_url=f"http://{address}") as c:
            assert (await c.get("/healthz")).status_code == 200
    assert seen == [("websocket", "/ws/nothing"), ("http", "/healthz")]
