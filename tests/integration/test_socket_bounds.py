"""Bounds a hostile client cannot push past, through real sockets (uvicorn, in-process hosts):
awareness (one client id per socket, size, cleared on close), outbound bytes, open sockets per
user, tickets per user, bogus tickets (kept away from the store) and the store's purge."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import websockets
from fastapi import FastAPI
from sqlalchemy import delete, event, select, update
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from db.models import RefreshToken, User, WsTicket
from db.repositories import users
from ops.loadtest.yclient import YClient
from serve_app.app import create_app
from serve_app.auth import check_ticket, new_ticket
from serve_app.realtime.awareness import encode_awareness_entries
from serve_app.realtime.protocol import (
    Awareness,
    AwarenessEntry,
    SyncStep2,
    encode_awareness,
    encode_sync_step1,
    parse_message,
)
from tests.conftest import serving
from tests.fakes import make_essay, register
from tests.integration.test_sockets import classroom, doc_url, ticket  # noqa: F401  (classroom: a fixture)


def awareness_frame(*entries: tuple[int, int, object]) -> bytes:
    return encode_awareness(encode_awareness_entries(
        [AwarenessEntry(client_id=c, clock=k, state_json=json.dumps(state)) for c, k, state in entries]))


async def next_awareness(ws: websockets.ClientConnection, timeout: float = 5) -> list[AwarenessEntry]:
    """The entries of the next awareness message on a raw doc socket (other frames skipped)."""
    async def read() -> list[AwarenessEntry]:
        while True:
            message = parse_message(await ws.recv())
            if isinstance(message, Awareness):
                return list(message.entries)
    return await asyncio.wait_for(read(), timeout)


async def test_a_socket_relays_awareness_only_for_the_first_client_id_it_announces(
        live_client, live_server, classroom) -> None:
    student, teacher, essay = classroom["student"], classroom["teacher"], classroom["essay"]
    watcher = await websockets.connect(await doc_url(live_client, live_server, teacher, essay["id"]))
    sender = await websockets.connect(await doc_url(live_client, live_server, student, essay["id"]))
    await sender.send(awareness_frame((7, 1, {"cursor": 1}), (8, 1, {"user": "forged"}), (9, 1, {"x": 1})))
    assert [(e.client_id, e.clock) for e in await next_awareness(watcher)] == [(7, 1)]
    await sender.send(awareness_frame((1000 + 1, 1, {"user": "another"})))  # only foreign ids: dropped
    await sender.send(awareness_frame((8, 2, {}), (7, 2, {"cursor": 5})))  # an echo of others plus its own
    # One socket's frames reach the watcher in order: the next awareness it sees is this one, so the
    # foreign-only frame before it never came.
    assert [(e.client_id, e.clock, e.state_json) for e in await next_awareness(watcher)] == [
        (7, 2, '{"cursor": 5}')]
    await sender.close()
    await watcher.close()


async def test_an_awareness_update_over_4_kib_closes_1009_and_reaches_nobody(
        live_client, live_server, classroom) -> None:
    student, teacher, essay = classroom["student"], classroom["teacher"], classroom["essay"]
    watcher = await websockets.connect(await doc_url(live_client, live_server, teacher, essay["id"]))
    sender = await websockets.connect(await doc_url(live_client, live_server, student, essay["id"]))
    await sender.send(awareness_frame((7, 1, {"name": "x" * 5000})))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(sender.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # Anything the closed socket had relayed was queued to the watcher before its close; a cursor
    # sent after the close by another socket is the first awareness the watcher sees.
    marker = await websockets.connect(await doc_url(live_client, live_server, student, essay["id"]))
    await marker.send(awareness_frame((11, 1, {"cursor": 0})))
    assert [(e.client_id, e.clock) for e in await next_awareness(watcher)] == [(11, 1)]
    await marker.close()
    await watcher.close()


async def test_a_closed_socket_s_awareness_is_removed_for_everyone(live_client, live_server, classroom) -> None:
    student, teacher, essay = classroom["student"], classroom["teacher"], classroom["essay"]
    watcher = await websockets.connect(await doc_url(live_client, live_server, teacher, essay["id"]))
    sender = await websockets.connect(await doc_url(live_client, live_server, student, essay["id"]))
    await sender.send(awareness_frame((7, 3, {"cursor": 1})))
    assert [(e.client_id, e.clock) for e in await next_awareness(watcher)] == [(7, 3)]
    await sender.close()  # the tab goes away without saying goodbye to its peers
    (gone,) = await next_awareness(watcher)
    assert (gone.client_id, gone.clock, gone.removed) == (7, 4, True)
    await watcher.close()


async def test_a_teacher_s_cursor_presence_reaches_the_student(live_client, live_server, classroom) -> None:
    """Decision (serve_app/realtime/awareness.py): teachers may publish awareness, same bounds."""
    student, teacher, essay = classroom["student"], classroom["teacher"], classroom["essay"]
    writer = await websockets.connect(await doc_url(live_client, live_server, student, essay["id"]))
    reader = await websockets.connect(await doc_url(live_client, live_server, teacher, essay["id"]))
    await reader.send(awareness_frame((42, 1, {"user": "Ms T"})))
    assert [(e.client_id, e.clock) for e in await next_awareness(writer)] == [(42, 1)]
    await reader.close()
    await writer.close()


class SlowReader:
    """A websocket client that reads only when told to (websockets' own client reads everything
    the server sends into memory as it arrives, so the server never sees a slow peer)."""

    def __init__(self, url: str) -> None:
        self.uri = parse_uri(url)
        self.protocol = ClientProtocol(self.uri, max_size=None)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> SlowReader:
        host, port = self.uri.host, self.uri.port
        sock = socket.socket()
        # A fixed small receive buffer: Linux would otherwise grow it (tcp_rmem) and the kernel,
        # not the server, would hold what this client does not read.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect((host, port))
        sock.setblocking(False)
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:
            self.protocol.receive_data(await self.reader.read(65536))
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc
        return self

    def _flush(self) -> None:
        assert self.writer is not None
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)

    async def send(self, frame: bytes) -> None:
        self.protocol.send_binary(frame)
        self._flush()
        assert self.writer is not None
        await self.writer.drain()

    def close(self) -> None:
        assert self.writer is not None
        self.writer.close()

    async def frames_until_close(self, timeout: float = 10) -> tuple[list[bytes], int | None]:
        """Read everything: (binary frames, the close code), or raise TimeoutError."""
        assert self.reader is not None
        frames: list[bytes] = []
        while True:
            for event in self.protocol.events_received():
                if not isinstance(event, Frame):
                    continue  # the handshake's response
                if event.opcode == Opcode.CLOSE:
                    return frames, self.protocol.close_rcvd.code if self.protocol.close_rcvd else None
                if event.opcode == Opcode.BINARY:
                    frames.append(bytes(event.data))
            data = await asyncio.wait_for(self.reader.read(1 << 20), timeout)
            if not data:
                return frames, None
            self.protocol.receive_data(data)


async def test_a_socket_that_asks_for_the_whole_document_and_never_reads_is_closed_1013(
        live_client, live_server, classroom) -> None:
    """Each sync step 1 with an empty state vector is answered with the whole essay (~150 KB
    here): 150 of them is far fewer frames than the frame cap (2,000) but ~22 MB queued for one
    socket; the byte cap (WS_OUTBOUND_MAX_BYTES, 4 MiB) closes it instead."""
    student = classroom["student"]
    essay = await make_essay(live_client, student, text="All work and no play. " * 7000)
    client = await SlowReader(await doc_url(live_client, live_server, student, essay["id"])).connect()
    for _ in range(150):
        try:
            await client.send(encode_sync_step1(b"\x00"))
        except (ConnectionError, InvalidState):
            break  # the server closed already
    frames, code = await client.frames_until_close()
    client.close()
    assert code == 1013
    assert sum(isinstance(parse_message(f), SyncStep2) for f in frames) < 150


@asynccontextmanager
async def tight_server(settings, **limits: object) -> AsyncIterator[tuple[str, httpx.AsyncClient, FastAPI]]:
    """An app of its own with these limits (the per-address counts would leak into other tests)."""
    application = create_app(settings.model_copy(update=limits))
    async with serving(application) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        yield server, client, application


async def closed_code(ws: websockets.ClientConnection) -> int | None:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code if closed.value.rcvd else None


async def test_a_user_over_the_open_socket_limit_is_closed_4429_and_a_closed_socket_frees_its_place(
        settings) -> None:
    async with tight_server(settings, ws_max_sockets_per_user=3) as (server, client, _):
        student = await register(client, "student")
        essay = await make_essay(client, student)
        other_student = await register(client, "student")
        other_essay = await make_essay(client, other_student)
        held = [await websockets.connect(await doc_url(client, server, student, essay["id"])) for _ in range(2)]
        held.append(await websockets.connect(
            f"ws://{server}/ws/essays/{essay['id']}/events?ticket={await ticket(client, student)}"))
        extra = await websockets.connect(await doc_url(client, server, student, essay["id"]))
        assert await closed_code(extra) == 4429
        others = await YClient(await doc_url(client, server, other_student, other_essay["id"])).connect()
        await held.pop().close()  # a place frees up once the server sees the close
        for _ in range(50):
            again = await websockets.connect(await doc_url(client, server, student, essay["id"]))
            try:
                await asyncio.wait_for(again.recv(), 2)  # the server's sync step 1: accepted
                break
            except websockets.ConnectionClosed:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("a closed socket never freed its place")
        await again.close()
        await others.close()
        for ws in held:
            await ws.close()


async def test_by_default_a_user_gets_tickets_for_all_32_sockets_and_a_retry_each_and_the_33rd_socket_is_closed_4429(
        settings) -> None:
    """The defaults (`WS_MAX_SOCKETS_PER_USER` 32, `WS_TICKETS_PER_USER_PER_MINUTE` 64): the web
    app holds two sockets per open view, so 32 is 16 tabs; all of them reconnecting at once, and
    trying once more, is 64 tickets."""
    async with tight_server(settings) as (server, client, _):
        student = await register(client, "student")
        essay = await make_essay(client, student)
        started = time.monotonic()
        tickets = [await ticket(client, student) for _ in range(64)]  # each asserts a 200
        # Then 429s: the bucket refills 64 a minute, so a slow machine may get a few more first.
        more = 0
        while (await client.post("/api/v1/auth/ws-ticket", headers=student.headers)).status_code == 200:
            more += 1
            assert more <= 1 + (time.monotonic() - started) * 64 / 60, "the ticket cap is not 64 a minute"
        url = f"ws://{server}/ws/essays/{essay['id']}/doc?ticket="
        held = list(await asyncio.gather(*(websockets.connect(url + t) for t in tickets[:32])))
        try:
            for ws in held:
                await asyncio.wait_for(ws.recv(), 10)  # the server's sync step 1: open
            extra = await websockets.connect(url + tickets[32])
            assert await closed_code(extra) == 4429
        finally:
            await asyncio.gather(*(ws.close() for ws in held))


async def test_ws_tickets_beyond_the_per_user_rate_get_429_problem_json(settings) -> None:
    async with tight_server(settings, ws_tickets_per_user_per_minute=5) as (_, client, _app):
        greedy, other = await register(client, "student"), await register(client, "student")
        for _ in range(5):
            await ticket(client, greedy)
        r = await client.post("/api/v1/auth/ws-ticket", headers=greedy.headers)
        assert r.status_code == 429 and r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        await ticket(client, other)  # per user
        # Counted in rate buckets (Redis, or this replica's memory), not in ticket rows: purging rows frees nothing.
        async with _app.state.ctx.sessions() as session:
            await session.execute(delete(WsTicket).where(WsTicket.user_id == uuid.UUID(greedy.id)))
            await session.commit()
        r = await client.post("/api/v1/auth/ws-ticket", headers=greedy.headers)
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"


def store_statements(application: FastAPI) -> list[str]:
    """The SQL statements on tickets or users the app's engine runs from now on (SQLAlchemy's own
    event hook; the submission runner's background polling is not a handshake's)."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "ws_tickets" in statement or "users" in statement:
            seen.append(statement)

    event.listen(application.state.ctx.engine.sync_engine, "before_cursor_execute", record)
    return seen


def writes(statements: list[str]) -> list[str]:
    return [s for s in statements if s.split()[0].upper() in ("UPDATE", "INSERT", "DELETE")]


async def test_made_up_expired_or_altered_tickets_never_reach_the_store_and_a_gone_user_s_writes_nothing(
        settings) -> None:
    async with tight_server(settings) as (server, client, application):
        student = await register(client, "student")
        essay = await make_essay(client, student)
        url = f"ws://{server}/ws/essays/{essay['id']}/doc?ticket="
        statements = store_statements(application)
        for bogus in ("short", "x" * 77 + "!", secrets.token_urlsafe(60)[:78], "z" * 300, "ä" * 78):
            with pytest.raises(websockets.InvalidStatus):
                await websockets.connect(url + bogus)
        assert statements == []
        soon = datetime.now(UTC) + timedelta(seconds=60)
        of_nobody = new_ticket(settings, user_id=uuid.uuid4(), expires_at=soon)  # genuine: a deleted user's
        expired = new_ticket(settings, user_id=uuid.UUID(student.id), expires_at=datetime.now(UTC) - timedelta(seconds=1))
        tampered = of_nobody[:-1] + ("A" if of_nobody[-1] != "A" else "B")
        for bogus in (expired, tampered):
            with pytest.raises(websockets.InvalidStatus):
                await websockets.connect(url + bogus)
        assert statements == []
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(url + of_nobody)
        assert statements and not writes(statements)
        good = await YClient(await doc_url(client, server, student, essay["id"])).connect()
        await good.close()


async def test_a_ticket_whose_user_id_was_swapped_for_another_user_s_is_refused_without_the_store(
        settings) -> None:
    """The ticket names its user, under the tag: put a teacher's id in a student's ticket and it is
    no ticket at all (HTTP 403, not a read)."""
    async with tight_server(settings) as (server, client, application):
        student, teacher = await register(client, "student"), await register(client, "teacher")
        essay = await make_essay(client, student)
        raw = await ticket(client, student)
        claims = check_ticket(settings, raw, now=datetime.now(UTC))
        assert claims is not None and claims.user_id == uuid.UUID(student.id)
        mine = base64.urlsafe_b64encode(uuid.UUID(student.id).bytes).decode().rstrip("=")
        theirs = base64.urlsafe_b64encode(uuid.UUID(teacher.id).bytes).decode().rstrip("=")
        assert raw.count(mine) == 1
        forged = raw.replace(mine, theirs)
        statements = store_statements(application)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://{server}/ws/essays/{essay['id']}/doc?ticket={forged}")
        assert refused.value.response.status_code == 403
        assert statements == []
        opened = await YClient(f"ws://{server}/ws/essays/{essay['id']}/doc?ticket={raw}").connect()  # the real one works
        await opened.close()


async def test_issuing_a_ticket_writes_nothing_to_the_store(settings) -> None:
    """A ticket is signed with its user and expiry; the handshake spends it. Issuing it runs no
    INSERT, UPDATE or DELETE on the store (its user's read, for the access token, stays)."""
    async with tight_server(settings) as (server, client, application):
        student = await register(client, "student")
        essay = await make_essay(client, student)
        seen: list[str] = []
        event.listen(application.state.ctx.engine.sync_engine, "before_cursor_execute",
                     lambda _c, _k, statement, *_: seen.append(statement))
        raws = [await ticket(client, student) for _ in range(3)]
        assert seen and not writes(seen)
        opened = await YClient(f"ws://{server}/ws/essays/{essay['id']}/doc?ticket={raws[1]}").connect()
        await opened.close()


async def test_a_suspended_user_s_ticket_is_refused_and_writes_nothing(settings) -> None:
    async with tight_server(settings) as (server, client, application):
        student = await register(client, "student")
        essay = await make_essay(client, student)
        url = await doc_url(client, server, student, essay["id"])  # issued before the suspension
        async with application.state.ctx.sessions() as session:
            await session.execute(update(User).where(User.id == uuid.UUID(student.id))
                                  .values(suspended_at=datetime.now(UTC)))
            await session.commit()
        statements = store_statements(application)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url)
        assert refused.value.response.status_code == 403
        assert statements and not writes(statements)


async def test_a_ticket_opens_one_socket_when_two_replicas_race_for_it(settings) -> None:
    """Two Gateway replicas on one store, the same ticket offered to both at once: one opens, the
    other is refused (HTTP 403) by the store's key, not by either replica's memory."""
    async with serving(create_app(settings)) as replica_a, serving(create_app(settings)) as replica_b, \
            httpx.AsyncClient(base_url=f"http://{replica_a}", timeout=30) as client:
        student = await register(client, "student")
        essay = await make_essay(client, student)
        for _ in range(3):
            raw = await ticket(client, student)
            tried = await asyncio.gather(
                *(websockets.connect(f"ws://{replica}/ws/essays/{essay['id']}/doc?ticket={raw}")
                  for replica in (replica_a, replica_b)), return_exceptions=True)
            opened = [ws for ws in tried if isinstance(ws, websockets.ClientConnection)]
            refused = [exc for exc in tried if isinstance(exc, websockets.InvalidStatus)]
            assert len(opened) == 1 and [exc.response.status_code for exc in refused] == [403], tried
            await opened[0].close()


async def test_a_ticket_spent_by_two_sessions_at_once_is_spent_by_one(settings) -> None:
    """The second spend waits for the first's transaction (the key's lock; SQLite's one writer)
    and then finds the ticket spent."""
    async with tight_server(settings) as (_, client, application):
        student = await register(client, "student")
        uid = uuid.UUID(student.id)
        now = datetime.now(UTC)
        spend = {"token_hash": secrets.token_hex(32), "user_id": uid, "expires_at": now + timedelta(seconds=60),
                 "now": now}
        sessions = application.state.ctx.sessions
        async with sessions() as first, sessions() as second:
            won = await users.spend_ticket(first, **spend)
            racing = asyncio.create_task(users.spend_ticket(second, **spend))
            await asyncio.sleep(0.2)  # the second is inside its INSERT, waiting on the first
            await first.commit()
            lost = await racing
            await second.rollback()
        assert won == users.TicketHolder(uid, "student", False) and lost is None
        async with sessions() as session:
            assert await users.spend_ticket(session, **spend) is None  # and later, again
            assert list(await session.scalars(select(WsTicket.token_hash).where(WsTicket.user_id == uid))) == [
                spend["token_hash"]]


async def test_a_handshake_reads_its_user_in_one_statement_and_spends_its_ticket_in_one_insert(
        settings) -> None:
    """The ticket names its user: the read is the user's role and suspension; the spend is one
    INSERT of the ticket's hash (no ticket row exists before)."""
    async with tight_server(settings) as (server, client, application):
        student = await register(client, "student")
        essay = await make_essay(client, student)
        url = await doc_url(client, server, student, essay["id"])
        statements = store_statements(application)
        opened = await YClient(url).connect()
        await opened.close()
    kinds = [(s.split()[0].upper(), "ws_tickets" in s, "users" in s) for s in statements]
    assert kinds == [("SELECT", False, True), ("INSERT", True, False)]


async def test_a_handshake_loads_only_the_essay_s_ids_not_its_text_or_document(settings) -> None:
    async with tight_server(settings) as (server, client, application):
        student = await register(client, "student")
        essay = await make_essay(client, student, text="A paragraph the handshake has no use for.")
        url = await doc_url(client, server, student, essay["id"])
        seen: list[str] = []
        event.listen(application.state.ctx.engine.sync_engine, "before_cursor_execute",
                     lambda _c, _k, statement, *_: seen.append(statement))
        opened = await YClient(url).connect()
        await opened.close()
    visible = [s for s in seen if "FROM essays" in s and "class_teachers" in s]  # `get_visible`'s clause
    assert len(visible) == 1 and "doc_state" not in visible[0] and "essays.text" not in visible[0]


async def test_a_spent_ticket_replayed_to_the_same_replica_is_refused_from_memory(settings) -> None:
    async with tight_server(settings) as (server, client, application):
        student = await register(client, "student")
        essay = await make_essay(client, student)
        url = await doc_url(client, server, student, essay["id"])
        first = await YClient(url).connect()
        statements = store_statements(application)
        for _ in range(3):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url)
            assert refused.value.response.status_code == 403
        assert statements == []
        await first.close()


async def test_the_gateway_purges_used_up_tickets_and_expired_refresh_tokens(settings) -> None:
    """A spent ticket's row outlives its expiry by a few minutes (`TICKET_GRACE`): it is what
    refuses the ticket's second use on a replica whose clock runs behind."""
    async with tight_server(settings, store_purge_interval_seconds=0.2) as (_, client, application):
        student = await register(client, "student")
        uid = uuid.UUID(student.id)
        now = datetime.now(UTC)
        sessions = application.state.ctx.sessions
        old_ticket, live_ticket, just_expired = secrets.token_hex(32), secrets.token_hex(32), secrets.token_hex(32)
        old_token, live_token = uuid.uuid4(), uuid.uuid4()
        async with sessions() as session:
            for digest, expires in ((old_ticket, now - timedelta(minutes=6)), (live_ticket, now + timedelta(seconds=60)),
                                    (just_expired, now - timedelta(seconds=30))):
                assert await users.spend_ticket(session, token_hash=digest, user_id=uid, expires_at=expires, now=now)
            for jti, expires in ((old_token, now - timedelta(days=2)), (live_token, now + timedelta(days=1))):
                await users.add_refresh(session, jti=jti, family_id=uuid.uuid4(), user_id=uid, expires_at=expires,
                                        family_expires_at=expires)
            await session.commit()

        async def present() -> set[object]:
            async with sessions() as session:
                tickets = set(await session.scalars(select(WsTicket.token_hash).where(WsTicket.user_id == uid)))
                tokens = set(await session.scalars(select(RefreshToken.id).where(RefreshToken.user_id == uid)))
            return tickets | tokens

        for _ in range(200):
            if old_ticket not in (left := await present()) and old_token not in left:
                break
            await asyncio.sleep(0.05)
        assert {old_ticket, old_token}.isdisjoint(left) and {live_ticket, live_token, just_expired} <= left


async def test_socket_handshakes_beyond_the_replicas_limit_wait_their_turn_and_all_open(
        settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of handshakes (one client opening many sockets at once) runs at most
    `WS_HANDSHAKES_AT_ONCE` at a time through the store; the rest wait, and every socket opens."""
    inside = most = 0
    real_spend = users.spend_ticket

    async def spend(*args: object, **kwargs: object) -> object:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        try:
            await asyncio.sleep(0.02)  # a store under load: the handshakes overlap if let through
            return await real_spend(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            inside -= 1

    monkeypatch.setattr(users, "spend_ticket", spend)
    async with tight_server(settings, ws_handshakes_at_once=2) as (server, client, _):
        student = await register(client, "student")
        essay = await make_essay(client, student)
        urls = [await doc_url(client, server, student, essay["id"]) for _ in range(8)]
        opened = await asyncio.gather(*(websockets.connect(url) for url in urls))
        try:
            for ws in opened:
                await asyncio.wait_for(ws.recv(), 5)  # the server's sync step 1: the socket is open
        finally:
            await asyncio.gather(*(ws.close() for ws in opened))
    assert most == 2
