"""Essay leases on the real store: two essay hosts sharing one database never both write an essay.

Hosts are in-process `EssayHost` objects (no Ray), each with its own bus so a test sees what each
one announces. Routing a changed host count sends an essay to a host while another holds it; these
tests play the two hosts' side of that (actors/leases.py), and the Gateway's side at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import Engine, event, func, select
from sqlalchemy.pool import Pool

from actors.broadcast import MOVED, InMemoryBus
from actors.host import EssayHost, HostConfig
from actors.host_api import EssayMoved
from db.models import Essay, Revision
from db.repositories import leases
from db.types import utcnow
from ops.loadtest.yclient import ClassDocsClient, YClient
from tests.fakes import class_essay, make_essay, register
from tests.fakes import metric_value as value
from tests.integration.test_host import (
    FakeClock,
    new_essay,
    sessions,  # noqa: F401  (the fixture)
    stored_text,
    typed_updates,
)
from tests.integration.test_sockets import doc_url, ticket


def moves(host: EssayHost, reason: str) -> float:
    return value("essaycoach_essays_moved_total", {"host": host.leases.holder.name, "reason": reason})


class FakeWall:
    """The hosts' shared wall clock (lease expiry), moved by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Pair:
    """Hosts `essay-host-0` (a) and `essay-host-1` (b) on one store, each asking the other by name
    to hand over when `ask` (as InProcessHosts and the Ray shells wire them)."""

    def __init__(self, sessions: object, *, ask: bool, wall: FakeWall, clock: FakeClock) -> None:
        self.by_name: dict[str, EssayHost] = {}
        config = HostConfig(tick_seconds=3600, lease_seconds=30)
        self.buses = [InMemoryBus(), InMemoryBus()]
        self.a, self.b = (
            EssayHost(sessions=sessions, bus=bus, config=config, wallclock=wall, clock=clock,  # type: ignore[arg-type]
                      name=f"essay-host-{i}", hand_over=self._ask if ask else None)
            for i, bus in enumerate(self.buses))
        self.by_name = {"essay-host-0": self.a, "essay-host-1": self.b}

    async def _ask(self, name: str, essay_id: uuid.UUID) -> None:
        await self.by_name[name].hand_over(essay_id)

    async def stop(self) -> None:
        for host in (self.a, self.b):
            await host.stop()


class Announced:
    """The channels on which a bus saw MOVED for an essay (call it); `wait` for the first
    (the host publishes MOVED in a task after the commit that found the lease gone)."""

    def __init__(self, bus: InMemoryBus, essay_id: uuid.UUID) -> None:
        self.seen: list[str] = []
        self._first = asyncio.Event()
        for channel in (f"essay:{essay_id}:doc", f"essay:{essay_id}"):
            bus.fanout.add(channel, self._on_message)

    def _on_message(self, channel: str, message: bytes) -> None:
        if message == MOVED:
            self.seen.append(channel)
            self._first.set()

    def __call__(self) -> list[str]:
        return self.seen

    async def wait(self) -> list[str]:
        async with asyncio.timeout(10):
            await self._first.wait()
        return self.seen


announced = Announced


@pytest.fixture
def wall() -> FakeWall:
    return FakeWall()


@contextlib.asynccontextmanager
async def started(sessions: object, wall: FakeWall, *, ask: bool) -> AsyncIterator[Pair]:
    hosts = Pair(sessions, ask=ask, wall=wall, clock=FakeClock())
    await hosts.a.start()
    await hosts.b.start()
    try:
        yield hosts
    finally:
        await hosts.stop()


@pytest.fixture
async def pair(sessions: object, wall: FakeWall) -> AsyncIterator[Pair]:
    async with started(sessions, wall, ask=True) as hosts:
        yield hosts


@pytest.fixture
async def strangers(sessions: object, wall: FakeWall) -> AsyncIterator[Pair]:
    """Two hosts that cannot reach each other (no hand-over): only expiry moves an essay."""
    async with started(sessions, wall, ask=False) as hosts:
        yield hosts


async def snapshot_row(sessions: object, essay_id: uuid.UUID) -> tuple[bytes, int, int]:
    """The essay's stored snapshot, its log watermark, and how many revisions it has."""
    async with sessions() as session:  # type: ignore[operator]
        essay = await session.get(Essay, essay_id)
        revisions = await session.scalar(select(func.count()).where(Revision.essay_id == essay_id))
    return essay.doc_state, essay.log_watermark, revisions


async def type_into(host: EssayHost, essay_id: uuid.UUID, updates: list[bytes]) -> None:
    for update in updates:
        await host.apply_update(essay_id, update, author_id=None, origin="t")


async def test_a_second_host_cannot_load_an_essay_a_live_host_holds(strangers: Pair, sessions: object) -> None:
    essay_id = await new_essay(sessions)
    mine, theirs = typed_updates(["mine ", "theirs"])
    await type_into(strangers.a, essay_id, [mine])
    with pytest.raises(EssayMoved):
        await strangers.b.open(essay_id)
    with pytest.raises(EssayMoved):
        await strangers.b.apply_update(essay_id, theirs, author_id=None, origin="t")
    assert essay_id not in strangers.b.essays
    await type_into(strangers.a, essay_id, [theirs])  # what b refused goes to the holder
    assert essay_id in strangers.a.essays
    assert await stored_text(sessions, essay_id) == "mine theirs"


async def test_hand_over_moves_the_essay_with_every_acknowledged_update(pair: Pair, sessions: object) -> None:
    essay_id = await new_essay(sessions)
    moved = announced(pair.buses[0], essay_id)
    words = [f"w{i} " for i in range(40)]
    updates = typed_updates(words)
    await type_into(pair.a, essay_id, updates[:20])
    handed_over = moves(pair.a, "handed_over")
    await pair.b.open(essay_id)  # routed to b now: b asks a to hand over
    assert moves(pair.a, "handed_over") == handed_over + 1
    assert essay_id not in pair.a.essays and essay_id in pair.b.essays
    assert sorted(moved()) == sorted([f"essay:{essay_id}:doc", f"essay:{essay_id}"])  # a's sockets: 1013
    assert (await pair.b.read(essay_id))["text"] == "".join(words[:20])  # type: ignore[index]
    await type_into(pair.b, essay_id, updates[20:])
    # A straggling update at the old host does not take the essay back while b settles in.
    with pytest.raises(EssayMoved):
        await pair.a.apply_update(essay_id, updates[-1], author_id=None, origin="t")
    assert essay_id in pair.b.essays
    assert await stored_text(sessions, essay_id) == "".join(words)


async def test_typing_during_a_hand_over_loses_no_acknowledged_update(pair: Pair, sessions: object) -> None:
    """A client types at the old host while the new one takes over; what the old host refuses
    (not acknowledged) the client sends again to the new one, as a reconnecting editor does."""
    essay_id = await new_essay(sessions)
    words = [f"t{i} " for i in range(120)]
    updates = typed_updates(words)
    acked_by: dict[int, str] = {}

    async def client() -> None:
        target = pair.a
        for i, update in enumerate(updates):
            try:
                await target.apply_update(essay_id, update, author_id=None, origin="c")
            except EssayMoved:
                target = pair.b  # the router's new answer
                await target.apply_update(essay_id, update, author_id=None, origin="c")
            acked_by[i] = target.leases.holder.name
            await asyncio.sleep(0)

    typing = asyncio.create_task(client())
    while len(acked_by) < 30:
        await asyncio.sleep(0.001)
    await pair.b.open(essay_id)
    await typing
    assert "essay-host-0" in acked_by.values() and "essay-host-1" in acked_by.values()
    assert await stored_text(sessions, essay_id) == "".join(words)


async def test_after_the_lease_runs_out_another_host_takes_the_essay(
        strangers: Pair, sessions: object, wall: FakeWall) -> None:
    essay_id = await new_essay(sessions)
    await type_into(strangers.a, essay_id, typed_updates(["before "]))
    wall.advance(31)  # a stopped renewing (hung, cut off): its lease ran out
    await strangers.b.open(essay_id)
    assert (await strangers.b.read(essay_id))["text"] == "before "  # type: ignore[index]


async def test_a_host_whose_lease_was_taken_cannot_commit(strangers: Pair, sessions: object, wall: FakeWall) -> None:
    essay_id = await new_essay(sessions)
    moved = announced(strangers.buses[0], essay_id)
    first, second, third = typed_updates(["one ", "two ", "three"])
    await type_into(strangers.a, essay_id, [first])
    wall.advance(31)
    await type_into(strangers.b, essay_id, [second])
    lost = moves(strangers.a, "lease_lost")
    # a has not noticed: its next update is fenced, neither stored nor acknowledged.
    with pytest.raises(EssayMoved):
        await strangers.a.apply_update(essay_id, third, author_id=None, origin="t")
    assert moves(strangers.a, "lease_lost") == lost + 1
    assert essay_id not in strangers.a.essays
    assert await moved.wait()  # its sockets are told to reconnect
    assert await stored_text(sessions, essay_id) == "one two "
    # The client sends it again, to the host that has the essay now.
    await type_into(strangers.b, essay_id, [third])
    assert await stored_text(sessions, essay_id) == "one two three"


async def test_one_commit_batch_stores_the_held_essays_and_refuses_the_fenced_ones(
        strangers: Pair, sessions: object, wall: FakeWall) -> None:
    taken, held = await new_essay(sessions), await new_essay(sessions)
    moved, stayed = announced(strangers.buses[0], taken), announced(strangers.buses[0], held)
    before, after = typed_updates(["before ", "after"])
    await type_into(strangers.a, taken, [before])
    await type_into(strangers.a, held, [before])
    wall.advance(31)  # both of a's leases ran out; b takes one of the essays
    await type_into(strangers.b, taken, typed_updates(["b "])[:1])
    lost, batches = moves(strangers.a, "lease_lost"), strangers.a.committer.batches
    acks = await asyncio.gather(
        strangers.a.apply_update(taken, after, author_id=None, origin="t"),
        strangers.a.apply_update(held, after, author_id=None, origin="t"), return_exceptions=True)
    assert strangers.a.committer.batches == batches + 1  # one group commit held both
    assert isinstance(acks[0], EssayMoved) and acks[1] == 2
    assert await stored_text(sessions, held) == "before after"
    assert "after" not in await stored_text(sessions, taken)
    assert taken not in strangers.a.essays and held in strangers.a.essays
    assert moves(strangers.a, "lease_lost") == lost + 1
    assert await moved.wait() and not stayed()


@contextlib.contextmanager
def postgres_round_trips() -> Iterator[list[str]]:
    """What every engine sends PostgreSQL meanwhile, a round trip each: SQLAlchemy's statements,
    and what asyncpg sends outside them (BEGIN, COMMIT, ROLLBACK, a pool ping's BEGIN and SELECT)."""
    sent: list[str] = []
    logged: set[int] = set()

    def on_checkout(dbapi_connection: Any, _record: object, _proxy: object) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in logged:  # asyncpg logs what it sends by itself (not prepared statements)
            logged.add(id(driver))
            driver.add_query_logger(lambda record: sent.append(record.query))

    def on_execute(*args: Any) -> None:
        sent.append(args[2])

    event.listen(Pool, "checkout", on_checkout)
    event.listen(Engine, "before_cursor_execute", on_execute)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)
        event.remove(Pool, "checkout", on_checkout)


async def test_a_group_commit_on_postgresql_is_one_round_trip(strangers: Pair, sessions: object) -> None:
    """The fence, the INSERT and the commit in one statement: on a box where the host and the
    server share two cores, each round trip of BEGIN / SELECT / INSERT / COMMIT (and a pool
    ping) was a turn of both through the host's event loop and the server."""
    if strangers.a.sessions.kw["bind"].dialect.name != "postgresql":  # type: ignore[attr-defined]
        pytest.skip("PostgreSQL only (SQLite writes through db.engine.SqliteWriter)")
    essay_id = await new_essay(sessions)
    first, second, third = typed_updates(["one ", "two ", "three"])
    await type_into(strangers.a, essay_id, [first, second])  # loaded, its lease taken, a commit's connection made
    with postgres_round_trips() as sent:
        await type_into(strangers.a, essay_id, [third])
    assert len(sent) == 1, sent
    assert await stored_text(sessions, essay_id) == "one two three"


async def test_a_group_commit_on_sqlite_compiles_no_statement(strangers: Pair, sessions: object) -> None:
    """On SQLite the fence and the INSERT of a group commit go to the driver as SQL text: no
    statement compiled, cache-keyed or expanded per commit on the host's event loop (the fence
    through a compiled `IN` was about half of a commit's CPU at 1,000 typists)."""
    if strangers.a.sessions.kw["bind"].dialect.name != "sqlite":  # type: ignore[attr-defined]
        pytest.skip("SQLite only (PostgreSQL's group commit is one statement: see above)")
    essay_id = await new_essay(sessions)
    first, second, third = typed_updates(["one ", "two ", "three"])
    await type_into(strangers.a, essay_id, [first, second])
    compiled: list[str] = []

    def on_execute(_conn: object, _cursor: object, statement: str, _parameters: object, context: Any,
                   _many: bool) -> None:
        if context is not None and context.compiled is not None:
            compiled.append(statement)

    event.listen(Engine, "before_cursor_execute", on_execute)
    try:
        await type_into(strangers.a, essay_id, [third])
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)
    assert compiled == []
    assert await stored_text(sessions, essay_id) == "one two three"


async def test_fencing_holds_only_an_essays_current_token(strangers: Pair, sessions: object) -> None:
    """A batch may hold an essay's rows under two tokens (unloaded and loaded again meanwhile)."""
    essay_id, leases_ = await new_essay(sessions), strangers.a.leases
    old = await leases_.acquire(essay_id)
    new = await leases_.acquire(essay_id)
    fenced = await strangers.a._store(lambda conn: leases_.fence(conn, [(essay_id, old), (essay_id, new)]))
    assert fenced == [False, True]


async def test_a_host_that_lost_its_lease_stores_no_snapshot_and_unloads_at_renewal(
        strangers: Pair, sessions: object, wall: FakeWall) -> None:
    essay_id = await new_essay(sessions)
    moved = announced(strangers.buses[0], essay_id)
    kept, b = typed_updates(["kept ", "b "])
    await type_into(strangers.a, essay_id, [kept])
    wall.advance(31)
    await type_into(strangers.b, essay_id, [b])
    await strangers.b.compactor.compact(strangers.b.essays[essay_id], force_revision=False)
    stored = await snapshot_row(sessions, essay_id)
    stale = strangers.a.essays[essay_id]
    await strangers.a.compactor.compact(stale, force_revision=True)  # fenced: nothing written
    assert essay_id not in strangers.a.essays and await moved.wait()
    # (The CRDT merge would give the same text either way: the rows say what a wrote.)
    assert await snapshot_row(sessions, essay_id) == stored and stored[1] == 2  # b's snapshot and watermark
    assert await stored_text(sessions, essay_id) == "kept b "

    other = await new_essay(sessions)
    await type_into(strangers.a, other, typed_updates(["x"]))
    wall.advance(31)
    await strangers.b.open(other)
    strangers.a.clock.now += 11  # type: ignore[attr-defined]  # a third of the lease
    await strangers.a.tick()
    assert other not in strangers.a.essays


async def test_renewal_keeps_a_lease_past_its_first_term(strangers: Pair, sessions: object, wall: FakeWall) -> None:
    essay_id = await new_essay(sessions)
    await type_into(strangers.a, essay_id, typed_updates(["renewed"]))
    for _ in range(4):  # 40 s of a 30 s lease, renewed every 10 s
        wall.advance(10)
        strangers.a.clock.now += 10  # type: ignore[attr-defined]
        await strangers.a.tick()
    with pytest.raises(EssayMoved):
        await strangers.b.open(essay_id)
    assert essay_id in strangers.a.essays


async def test_unload_and_stop_release_leases_for_the_next_host_at_once(
        strangers: Pair, sessions: object) -> None:
    idle, open_ = await new_essay(sessions), await new_essay(sessions)
    await type_into(strangers.a, idle, typed_updates(["idle"]))
    await type_into(strangers.a, open_, typed_updates(["open"]))
    strangers.a.clock.now += strangers.a.config.unload_idle_seconds + 1  # type: ignore[attr-defined]
    strangers.a.essays[open_].attach(None)  # a socket keeps this one loaded
    await strangers.a.tick()
    assert idle not in strangers.a.essays and open_ in strangers.a.essays
    await strangers.b.open(idle)
    with pytest.raises(EssayMoved):
        await strangers.b.open(open_)
    await strangers.a.stop()
    await strangers.b.open(open_)
    assert (await strangers.b.read(open_))["text"] == "open"  # type: ignore[index]


async def test_a_restarted_host_takes_its_earlier_processes_leases_at_once(
        sessions: object, wall: FakeWall) -> None:
    essay_id = await new_essay(sessions)
    survives, zombie = typed_updates(["survives", " zombie"])
    crashed = EssayHost(sessions=sessions, bus=InMemoryBus(), wallclock=wall, name="essay-host-3")  # type: ignore[arg-type]
    await crashed.start()
    await type_into(crashed, essay_id, [survives])
    # Not stopped: Ray thinks the process died and starts the actor again under the same name.
    reborn = EssayHost(sessions=sessions, bus=InMemoryBus(), wallclock=wall, name="essay-host-3")  # type: ignore[arg-type]
    await reborn.start()
    assert (await reborn.current(essay_id))["text"] == "survives"
    with pytest.raises(EssayMoved):  # were the old process still running, its writes are fenced
        await crashed.apply_update(essay_id, zombie, author_id=None, origin="z")
    assert await stored_text(sessions, essay_id) == "survives"
    await crashed.stop()
    await reborn.stop()


async def test_acquire_is_atomic_under_a_race(sessions: object, wall: FakeWall) -> None:
    essay_id = await new_essay(sessions)
    hosts = [EssayHost(sessions=sessions, bus=InMemoryBus(), wallclock=wall, name=f"racer-{i}")  # type: ignore[arg-type]
             for i in range(6)]
    results = await asyncio.gather(*(h.leases.acquire(essay_id) for h in hosts), return_exceptions=True)
    assert sum(isinstance(r, int) for r in results) == 1
    assert all(isinstance(r, EssayMoved) for r in results if not isinstance(r, int))
    async with sessions() as session:  # type: ignore[operator]
        holder = await session.run_sync(lambda s: leases.holder_of(s, essay_id=essay_id))
    winner = next(h for h, r in zip(hosts, results) if isinstance(r, int))
    assert holder == winner.leases.holder
    for host in hosts:
        await host.stop()


async def test_loading_a_missing_essay_takes_no_lease(pair: Pair) -> None:
    from actors.host import EssayNotFound

    with pytest.raises(EssayNotFound):
        await pair.a.open(uuid.uuid4())


# --- the Gateway's side: close codes and REST -----------------------------------------------


async def test_sockets_close_1013_on_hand_over_and_reconnect_to_the_new_host(settings) -> None:  # type: ignore[no-untyped-def]
    from serve_app.app import create_app
    from tests.conftest import serving

    application = create_app(settings)
    async with serving(application) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        _, student, essay = await class_essay(client)
        eid = uuid.UUID(essay["id"])
        writer = await YClient(await doc_url(client, server, student, essay["id"])).connect()
        events = await websockets.connect(
            f"ws://{server}/ws/essays/{essay['id']}/events?ticket={await ticket(client, student)}")
        await events.recv()  # the opening state
        writer.type("before the move")
        await writer.wait_acked()
        await application.state.ctx.hosts.host_for(eid).hand_over(eid)
        assert await writer.wait_closed() == 1013
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await events.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        # Its hand-over grace over, the host the router names loads it again for the reconnect.
        application.state.ctx.hosts.host_for(eid)._handed_over.clear()
        again = await YClient(await doc_url(client, server, student, essay["id"])).connect()
        assert await again.wait_text(lambda t: t == "before the move")
        again.type(", and after")
        await again.wait_acked()
        r = await client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
        assert r.json()["text"] == "before the move, and after"
        await again.close()


async def test_an_essay_another_live_host_holds_gets_1013_and_503_with_retry_after(
        live_client, live_server, sessions) -> None:  # type: ignore[no-untyped-def]
    student = await register(live_client, "student")
    essay = await make_essay(live_client, student)
    elsewhere = EssayHost(sessions=sessions, bus=InMemoryBus(), name="essay-host-elsewhere")
    await elsewhere.open(uuid.UUID(essay["id"]))  # held by a host this Gateway does not know
    r = await live_client.patch(f"/api/v1/essays/{essay['id']}", json={"text": "refused"}, headers=student.headers)
    assert r.status_code == 503 and r.json()["code"] == "essay_moving"
    assert r.headers["content-type"].startswith("application/problem+json") and r.headers["retry-after"] == "1"
    socket = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect(wait_synced=False)
    assert await socket.wait_closed() == 1013
    await elsewhere.stop()  # releases: the essay is this Gateway's hosts' again
    r = await live_client.patch(f"/api/v1/essays/{essay['id']}", json={"text": "accepted"}, headers=student.headers)
    assert r.status_code == 200, r.text


async def test_a_class_documents_socket_follows_a_moved_essay_or_closes_1013(
        settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A teacher's class documents socket is not closed by a hand-over: it attaches at the host
    routing names and gets the whole document again; when that host cannot take the essay yet
    (here: the one host, in its hand-over grace) the socket closes 1013 and the client reconnects."""
    from serve_app.app import create_app
    from tests.conftest import serving
    from tests.integration.test_class_docs_socket import docs_url

    application = create_app(settings)
    async with serving(application) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        teacher, student, essay = await class_essay(client)
        eid, host = uuid.UUID(essay["id"]), application.state.ctx.hosts.host_for(uuid.UUID(essay["id"]))
        watcher = await ClassDocsClient(await docs_url(client, server, teacher, essay["class_id"])).connect()
        followed = await watcher.follow(essay["id"])
        monkeypatch.setattr("actors.host.HAND_OVER_GRACE_SECONDS", 0.0)
        await host.hand_over(eid)
        for _ in range(200):  # the follower registers at the (same) host again
            if eid in host.essays and host.essays[eid].connections == 1:
                break
            await asyncio.sleep(0.02)
        assert host.essays[eid].connections == 1
        writer = await YClient(await doc_url(client, server, student, essay["id"])).connect()
        writer.type("after the move")
        await writer.wait_acked()
        assert await followed.wait_text(lambda t: t == "after the move")
        await writer.close()

        monkeypatch.setattr("actors.host.HAND_OVER_GRACE_SECONDS", 5.0)
        await host.hand_over(eid)
        for _ in range(200):
            if followed.close_code is not None:
                break
            await asyncio.sleep(0.02)
        assert followed.close_code == 1013


async def test_renewal_locks_lease_rows_in_essay_id_order_on_postgresql(sessions: object, wall: FakeWall) -> None:
    """A renewal waiting for one lease row holds none that comes after it in essay id order, as
    the group commit's FOR SHARE takes them: neither can hold a row the other waits for (a
    deadlock PostgreSQL breaks only after `deadlock_timeout`, the acks waiting). The later essay's
    row is written first, so a scan in storage order would lock it first."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    store = sessions.kw["bind"]  # type: ignore[attr-defined]
    if store.dialect.name != "postgresql":
        pytest.skip("row lock order is PostgreSQL's (SQLite has one writer)")
    engine = create_async_engine(store.url.render_as_string(hide_password=False), poolclass=NullPool)  # 3 at once
    first, second = sorted([await new_essay(sessions), await new_essay(sessions)])
    holder = leases.Holder("orderly", "i-1")
    expires = wall() + timedelta(seconds=30)
    tokens = {}
    for essay_id in (second, first):  # stored in this order
        async with engine.begin() as conn:
            tokens[essay_id] = await conn.run_sync(lambda c, e=essay_id: leases.acquire(
                c, essay_id=e, holder=holder, now=wall(), expires_at=expires))
    lock_row = text("SELECT essay_id FROM essay_leases WHERE essay_id = :id FOR UPDATE NOWAIT")
    async with engine.connect() as blocker, engine.connect() as renewer, engine.connect() as probe:
        await blocker.begin()
        await blocker.execute(lock_row, {"id": first})  # the first row is taken: the renewal waits on it

        async def renew() -> set[tuple[uuid.UUID, int]]:
            async with renewer.begin():
                return await renewer.run_sync(lambda c: leases.fence(
                    c, holder=holder, leases=tokens.items(), expires_at=expires + timedelta(seconds=30)))

        renewal = asyncio.ensure_future(renew())
        waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()")
        for _ in range(100):
            if (await probe.execute(waiting)).scalar_one():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the renewal never waited for the first row")
        await probe.rollback()  # the polling's transaction: the lock below takes a new one
        try:
            await probe.execute(lock_row, {"id": second})  # free: the renewal locks in id order
        except DBAPIError as exc:
            raise AssertionError("the renewal holds a later row while it waits for an earlier one") from exc
        finally:
            await probe.rollback()
            await blocker.rollback()
        assert await asyncio.wait_for(renewal, 10) == set(tokens.items())
    await engine.dispose()



async def test_the_asgi_app_does_not_take_essays_the_live_server_holds(
        app, live_client, live_server) -> None:  # type: ignore[no-untyped-def]
    """The session's two apps share one store; the ASGI app's hosts are named apart, so its
    submission runner telling an essay's editors that a job finished gets `EssayMoved` for an
    essay the live server holds, and the live server keeps writing it. With one host name the
    ASGI app took the lease at once and the student's next keystroke was refused, socket closed
    1013 (a CI failure of test_privacy)."""
    _, student, essay = await class_essay(live_client)
    eid = uuid.UUID(essay["id"])
    writer = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    with pytest.raises(EssayMoved):
        await app.state.ctx.hosts.of(eid).publish_event(eid, "submission", status="done")
    writer.type("still mine")
    await writer.wait_acked()
    assert writer.close_code is None
    await writer.close()
