"""EssayHost against the real store: durability, replay, compaction, revisions, unload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from pycrdt import Doc, Text
from sqlalchemy import event

from actors.broadcast import InMemoryBus
from actors.doc import EssayDoc
from actors.host import EssayHost, EssayNotFound, HostConfig, UpdateRejected
from db.engine import SqliteWriter, make_engine, make_sessionmaker
from db.models import User
from db.repositories import documents, essays
from db.types import utcnow
from tests.conftest import fresh_database


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[object]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def new_essay(sessions: object) -> uuid.UUID:
    async with sessions() as session:  # type: ignore[operator]
        user = User(email=f"h-{uuid.uuid4().hex[:8]}@example.com", name="H", role="student", password_hash="x")
        session.add(user)
        await session.flush()
        essay = await essays.create(session, owner_id=user.id, title="t", assignment_id=None, class_id=None)
        await session.commit()
        return essay.id


def typed_updates(words: list[str]) -> list[bytes]:
    doc = Doc()
    text = doc.get("content", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    for w in words:
        text.insert(len(text), w)
    return updates


def log_row(essay_id: uuid.UUID, seq: int) -> dict[str, object]:
    """An update log row typing "hi" (what `EssayHost` hands its committer)."""
    return {"essay_id": essay_id, "seq": seq, "data": typed_updates(["hi"])[0], "author_id": None,
            "inserted_chars": 2, "deleted_chars": 0, "created_at": utcnow()}


async def leased_row(host: EssayHost, essay_id: uuid.UUID, seq: int) -> dict[str, object]:
    """`log_row` as the host's group commit gets it: with the token of the host's lease."""
    return {**log_row(essay_id, seq), "lease": await host.leases.acquire(essay_id)}


async def stored_text(sessions: object, essay_id: uuid.UUID) -> str:
    async with sessions() as session:  # type: ignore[operator]
        stored = await documents.load(session, essay_id=essay_id)
    assert stored is not None
    return EssayDoc.from_state(stored.essay.doc_state, [r.data for r in stored.log]).text


async def test_acked_updates_survive_a_host_that_dies_without_flushing(sessions: object) -> None:
    essay_id = await new_essay(sessions)
    host = EssayHost(sessions=sessions, bus=InMemoryBus())  # type: ignore[arg-type]
    await host.start()
    words = [f"w{i} " for i in range(50)]
    for update in typed_updates(words):
        await host.apply_update(essay_id, update, author_id=None, origin="t")
    # No stop(): the process "dies". Every acknowledged update must be in the log.
    host.committer._task.cancel()  # type: ignore[union-attr]
    host._ticker.cancel()  # type: ignore[union-attr]
    assert await stored_text(sessions, essay_id) == "".join(words)
    reborn = EssayHost(sessions=sessions, bus=InMemoryBus())  # type: ignore[arg-type]
    await reborn.start()
    assert (await reborn.read(essay_id)) is None
    await reborn.open(essay_id)
    assert (await reborn.read(essay_id))["text"] == "".join(words)  # type: ignore[index]
    assert (await reborn.read(essay_id))["seq"] == 50  # type: ignore[index]
    await reborn.stop()


async def test_compaction_moves_watermark_with_snapshot_and_keeps_the_log_for_replay(sessions: object) -> None:
    essay_id = await new_essay(sessions)
    clock = FakeClock()
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), clock=clock,  # type: ignore[arg-type]
                     config=HostConfig(compact_every=10, tick_seconds=3600))
    await host.start()
    for update in typed_updates([f"x{i} " for i in range(12)]):
        await host.apply_update(essay_id, update, author_id=None, origin="t")
    await host.tick()
    async with sessions() as session:  # type: ignore[operator]
        stored = await documents.load(session, essay_id=essay_id)
        assert stored is not None and stored.essay.log_watermark == 12 and stored.log == []
        assert stored.essay.text.startswith("x0 x1") and stored.essay.word_count == 12
        assert len(await documents.replay(session, essay_id=essay_id, after_seq=0, limit=100)) == 12
        revision = await documents.last_revision(session, essay_id=essay_id)
        assert revision is not None and revision.n == 1 and revision.seq == 12
    await host.stop()


async def test_a_tick_stores_every_due_essay_in_one_transaction_and_one_failure_spares_the_rest(
        sessions: object) -> None:
    ids = [await new_essay(sessions) for _ in range(3)]
    clock = FakeClock()
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), clock=clock,  # type: ignore[arg-type]
                     config=HostConfig(compact_idle_seconds=2, tick_seconds=3600))
    await host.start()
    writes = []
    real_store = host.compactor.store

    async def counting_store(work: object, **kwargs: object) -> object:
        writes.append(work)
        return await real_store(work, **kwargs)  # type: ignore[arg-type]

    host.compactor.store = counting_store
    for essay_id in ids:
        for update in typed_updates([f"{essay_id.hex[:4]} ", "words "]):
            await host.apply_update(essay_id, update, author_id=None, origin="t")
    log_writes = len(writes)
    clock.now += 3
    await host.tick()
    assert len(writes) == log_writes + 1  # three snapshots, one transaction (the log commits elsewhere)
    for essay_id in ids:
        assert (await stored_text(sessions, essay_id)).startswith(essay_id.hex[:4])
        assert host.essays[essay_id].watermark == 2

    # Deleted under the host: its revision row is refused, which fails the batch; the others
    # are then stored one by one and the deleted essay is forgotten.
    for essay_id in ids:
        await host.apply_update(essay_id, typed_updates(["more "])[0], author_id=None, origin="t")
    async with sessions() as session:  # type: ignore[operator]
        await essays.remove(session, essay_id=ids[0])
        await session.commit()
    host.essays[ids[0]].last_revision_at = None  # due: its revision row needs the essay row
    clock.now += 3
    await host.tick()
    assert ids[0] not in host.essays
    for essay_id in ids[1:]:
        assert host.essays[essay_id].watermark == 3
    await host.stop()


async def test_idle_essay_unloads_after_flushing(sessions: object) -> None:
    essay_id = await new_essay(sessions)
    clock = FakeClock()
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), clock=clock,  # type: ignore[arg-type]
                     config=HostConfig(unload_idle_seconds=60, tick_seconds=3600))
    await host.start()
    await host.set_text(essay_id, "kept", author_id=None)
    clock.now += 61
    await host.tick()
    assert essay_id not in host.essays
    async with sessions() as session:  # type: ignore[operator]
        essay = await essays.get(session, essay_id=essay_id)
        assert essay is not None and essay.text == "kept" and essay.log_watermark == 1
    await host.stop()


async def test_invalid_update_is_rejected_and_changes_nothing(sessions: object) -> None:
    essay_id = await new_essay(sessions)
    host = EssayHost(sessions=sessions, bus=InMemoryBus())  # type: ignore[arg-type]
    await host.start()
    await host.set_text(essay_id, "safe", author_id=None)
    with pytest.raises(UpdateRejected):
        await host.apply_update(essay_id, b"\x01\x02\x03garbage", author_id=None, origin="t")
    assert (await host.read(essay_id))["seq"] == 1  # type: ignore[index]
    with pytest.raises(EssayNotFound):
        await host.open(uuid.uuid4())
    await host.stop()
    assert await stored_text(sessions, essay_id) == "safe"


async def test_duplicate_update_is_not_acked_before_earlier_updates_are_durable(sessions: object) -> None:
    import asyncio

    from actors.committer import GroupCommitter

    essay_id = await new_essay(sessions)
    host = EssayHost(sessions=sessions, bus=InMemoryBus())  # type: ignore[arg-type]
    await host.start()
    gate = asyncio.Event()
    real_write = host._write_log

    async def slow_write(rows: list) -> None:
        await gate.wait()
        await real_write(rows)

    await host.committer.close()
    host.committer = GroupCommitter(slow_write, interval=0.001)
    host.committer.start()
    update = typed_updates(["durable"])[0]
    first = asyncio.create_task(host.apply_update(essay_id, update, author_id=None, origin="a"))
    await asyncio.sleep(0.05)
    duplicate = asyncio.create_task(host.apply_update(essay_id, update, author_id=None, origin="b"))
    await asyncio.sleep(0.05)
    assert not first.done() and not duplicate.done()  # the duplicate waits for the original
    gate.set()
    assert await first == 1 and await duplicate == 1
    await host.stop()


async def test_rest_read_after_a_host_crash_includes_the_unsnapshotted_log(database_url: str, tmp_path) -> None:
    import httpx

    from serve_app.app import create_app
    from tests.conftest import make_settings
    from tests.fakes import make_essay, register

    app = create_app(make_settings(database_url, tmp_path))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            student = await register(http)
            essay = await make_essay(http, student)
            eid = uuid.UUID(essay["id"])
            live = app.state.ctx.hosts
            host = live.host_for(eid)
            for update in typed_updates(["logged ", "only"]):
                await host.apply_update(eid, update, author_id=None, origin="t")
            host.essays.clear()  # the host "crashed": no snapshot was taken, the log has it all
            r = await http.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
            assert r.json()["text"] == "logged only" and r.json()["seq"] == 2


class CountingAnalyzer:
    """The local engine, counting tier-1 runs."""

    def __init__(self) -> None:
        from actors.analysis.service import build_engine
        from actors.config import AnalysisConfig

        self.engine = build_engine(AnalysisConfig(provider="local"))
        self.runs: list[str] = []

    @property
    def llm_enabled(self) -> bool:
        return False

    async def analyze_changed(self, old_text: str, new_text: str, **kwargs: object) -> object:
        self.runs.append(new_text)
        return await self.engine.analyze_changed(old_text, new_text, **kwargs)  # type: ignore[arg-type]


async def test_the_tier1_loop_runs_on_the_host_and_analyses_the_final_text(sessions: object) -> None:
    """The loop really runs (how often it reruns while typing goes on is decided by
    `actors.decisions.tier1_due`, tested on a fake clock in tests/unit/test_host_scheduler.py)."""
    essay_id = await new_essay(sessions)
    analyzer = CountingAnalyzer()
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), analyzer=analyzer,  # type: ignore[arg-type]
                     config=HostConfig(local_pause_seconds=0.05, local_min_interval=0.6, tick_seconds=3600))
    await host.start()
    words = [f"word{i} " for i in range(8)]
    for update in typed_updates(words):
        await host.apply_update(essay_id, update, author_id=None, origin="t")

    async def final_text_analysed() -> None:
        while not analyzer.runs or analyzer.runs[-1] != "".join(words):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(final_text_analysed(), 10)
    # One scheduler for the host: no task per essay without an LLM, nothing left to analyse.
    assert host.scheduler is not None
    assert host.essays[essay_id].analysis_task is None and not host.scheduler.waiting
    await host.stop()


class RecordingBus(InMemoryBus):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, str | None]] = []

    async def publish(self, channel: str, message: bytes, *, skip_node: str | None = None) -> None:
        self.published.append((channel, skip_node))
        await super().publish(channel, message, skip_node=skip_node)


async def test_doc_updates_go_on_the_bus_only_when_another_node_has_a_socket(sessions: object) -> None:
    essay_id = await new_essay(sessions)
    bus = RecordingBus()
    host = EssayHost(sessions=sessions, bus=bus, config=HostConfig(tick_seconds=3600))  # type: ignore[arg-type]
    await host.start()
    updates = iter(typed_updates([f"w{i} " for i in range(5)]))
    channel = f"essay:{essay_id}:doc"

    async def doc_publishes(node: str | None) -> list[str | None]:
        bus.published.clear()
        await host.apply_update(essay_id, next(updates), author_id=None, origin="o", node=node)
        return [skip for ch, skip in bus.published if ch == channel]

    await host.attach(essay_id, node="a")  # the writer's replica delivers to its own sockets
    assert await doc_publishes("a") == []
    await host.attach(essay_id, node="b")  # a teacher on another replica
    assert await doc_publishes("a") == ["a"]
    await host.detach(essay_id, node="b")
    assert await doc_publishes("a") == []
    assert await doc_publishes(None) == [None]  # a caller that does not deliver locally
    host.knows_every_socket = False  # a restarted host: sockets may exist it never heard of
    assert await doc_publishes("a") == ["a"]
    await host.stop()


async def test_events_and_dashboard_rows_go_on_the_bus_only_while_watched(sessions: object) -> None:
    essay_id = await new_essay(sessions)
    bus = RecordingBus()
    host = EssayHost(sessions=sessions, bus=bus, config=HostConfig(tick_seconds=3600))  # type: ignore[arg-type]
    await host.start()
    channel = f"essay:{essay_id}"

    async def published_event() -> bool:
        bus.published.clear()
        await host.publish_event(essay_id, "comment", text="x")
        return any(ch == channel for ch, _ in bus.published)

    assert not await published_event()
    await host.watch(channel, 1)
    await host.watch(channel, 1)
    assert await published_event()
    await host.watch(channel, -1)
    assert await published_event()  # one socket still watches
    await host.watch(channel, -1)
    assert not await published_event()
    # Unpublished events are still numbered and kept: a reconnecting socket resumes them.
    kept = await host.events_after(essay_id, 0, None)
    assert kept is not None and [json.loads(e)["seq"] for e in kept] == [1, 2, 3, 4]
    host.knows_every_socket = False
    assert await published_event()
    await host.stop()


async def test_sqlite_log_writer_commits_and_refuses_rows_of_missing_essays(
    sessions: object, database_url: str
) -> None:
    from sqlalchemy.exc import IntegrityError

    writer = SqliteWriter.for_sessions(sessions)  # type: ignore[arg-type]
    if not database_url.startswith("sqlite"):
        assert writer is None  # PostgreSQL: asyncpg is natively async, no thread hops to save
        return
    assert writer is not None
    essay_id = await new_essay(sessions)
    row = log_row(essay_id, 1)
    await writer.run(lambda conn: documents.append_updates(conn, rows=[row]))
    assert await stored_text(sessions, essay_id) == "hi"
    with pytest.raises(IntegrityError):  # the committer splits the batch on this
        await writer.run(lambda conn: documents.append_updates(conn, rows=[{**row, "essay_id": uuid.uuid4()}]))
    writer.close()


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
async def test_update_log_rows_are_stored_alike_by_the_prepared_and_the_core_insert(
    database_url: str, sealed: bool, tmp_path: Path
) -> None:
    """On a database of its own: the sealed rows it leaves would stop any later reader without the key
    (test_privacy reads every row of the shared one)."""
    from sqlalchemy import Table, Uuid, bindparam, insert, text
    from sqlalchemy.exc import IntegrityError

    from db.crypto import Keyring, new_key, open_anyway
    from db.models import EssayUpdate

    async with fresh_database(database_url, tmp_path) as url:
        keyring = Keyring.parse(new_key()) if sealed else None
        engine = make_engine(url, keyring=keyring)
        sessions = make_sessionmaker(engine)
        essay_id = await new_essay(sessions)
        prepared = {**log_row(essay_id, 1), "author_id": uuid.uuid4(), "lease": 7}  # "lease" is no column
        core = {**prepared, "seq": 2}
        for row in (prepared, core):
            assert all(key in row for key in documents.LOG_COLUMNS)
        async with sessions() as session:
            await session.run_sync(lambda s: documents.append_updates(s, rows=[prepared]))
            await session.execute(insert(cast(Table, EssayUpdate.__table__)),
                                  [{k: v for k, v in core.items() if k != "lease"}])
            await session.commit()
            stored = (await session.execute(text(
                "SELECT seq, essay_id, data, author_id, inserted_chars, deleted_chars, created_at FROM essay_updates"
                " WHERE essay_id = :essay ORDER BY seq").bindparams(bindparam("essay", essay_id, type_=Uuid())))).all()
            loaded = await documents.load(session, essay_id=essay_id)
        by_prepared, by_core = stored
        # The raw stored values match column by column (UUIDs as SQLite's hex, timestamps alike).
        assert by_prepared[1:2] + by_prepared[3:] == by_core[1:2] + by_core[3:]
        data_prepared, data_core = bytes(by_prepared[2]), bytes(by_core[2])
        if sealed:  # sealed apart (each sealing differs), opening to the same update
            assert data_prepared != prepared["data"] and data_core != prepared["data"]
            assert open_anyway(keyring, data_prepared) == open_anyway(keyring, data_core) == prepared["data"]
        else:
            assert data_prepared == data_core == prepared["data"]
        assert loaded is not None and [(u.seq, u.data, u.author_id) for u in loaded.log] == [
            (1, prepared["data"], prepared["author_id"]), (2, prepared["data"], prepared["author_id"])]
        async with sessions() as session:
            with pytest.raises(IntegrityError):  # the committer refuses the batch's rows on this
                await session.run_sync(lambda s: documents.append_updates(s, rows=[{**prepared, "seq": 1}]))
        await engine.dispose()


@pytest.fixture
def sqlite_writer(sessions: object, database_url: str) -> Iterator[SqliteWriter]:
    """The host's SQLite writer for the test database (SQLite only)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's single writer and its WAL")
    writer = SqliteWriter.for_sessions(sessions)  # type: ignore[arg-type]
    assert writer is not None
    yield writer
    writer.close()


async def test_sqlite_writer_waits_for_a_lock_held_elsewhere_without_stopping_the_event_loop(
    sessions: object, database_url: str, sqlite_writer: SqliteWriter
) -> None:
    import sqlite3

    writer = sqlite_writer
    essay_id = await new_essay(sessions)
    row = log_row(essay_id, 1)
    other = sqlite3.connect(database_url.split("///", 1)[-1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process (a Gateway's REST write) holds the lock
    write = asyncio.create_task(writer.run(lambda conn: documents.append_updates(conn, rows=[row])))
    ticks = 0
    for _ in range(10):  # the loop keeps turning while the write waits in the writer's thread
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 10 and not write.done() and writer.deferred == 1
    other.execute("COMMIT")
    await asyncio.wait_for(write, 10)
    assert await stored_text(sessions, essay_id) == "hi"
    other.close()


async def test_a_tick_publishing_many_dashboard_rows_lets_other_work_run_in_between(sessions: object) -> None:
    from actors.host import TICK_ROWS_PER_TURN
    from db.repositories import classes

    async with sessions() as session:  # type: ignore[operator]
        teacher = User(email=f"t-{uuid.uuid4().hex[:8]}@example.com", name="T", role="teacher", password_hash="x")
        session.add(teacher)
        await session.flush()
        cls = await classes.create(session, name="c", teacher_id=teacher.id, join_code=uuid.uuid4().hex[:8])
        ids = []
        for _ in range(TICK_ROWS_PER_TURN + 8):
            essay = await essays.create(session, owner_id=teacher.id, title="t", assignment_id=None, class_id=cls.id)
            ids.append(essay.id)
        await session.commit()
    bus = RecordingBus()
    host = EssayHost(sessions=sessions, bus=bus, config=HostConfig(tick_seconds=3600))  # type: ignore[arg-type]
    await host.start()
    await host.watch(f"class:{cls.id}", 1)  # the teacher's dashboard is open
    for essay_id in ids:
        await host.attach(essay_id)
        host.essays[essay_id].class_dirty = True  # typed in since its last row
    tick = asyncio.create_task(host.tick())
    turns: list[int] = []

    async def other_essay_work() -> None:  # e.g. another essay's ack, due on the same loop
        turns.append(sum(1 for ch, _ in bus.published if ch == f"class:{cls.id}"))

    await asyncio.gather(tick, other_essay_work())
    assert 0 < turns[0] < len(ids)  # it ran while the tick was part-way through the rows
    assert sum(1 for ch, _ in bus.published if ch == f"class:{cls.id}") == len(ids)
    await host.stop()


@contextlib.contextmanager
def held_commits(writer: SqliteWriter) -> Iterator[threading.Event]:
    """Every COMMIT of `writer` (inline or in its thread) waits for the yielded event, as for a
    slow fsync; the event is set, and the hold removed, when the block ends."""
    disk = threading.Event()

    def slow_disk(_conn: object) -> None:
        disk.wait(10)

    for engine in (writer.eager, writer.engine):
        event.listen(engine, "commit", slow_disk)
    try:
        yield disk
    finally:
        disk.set()
        for engine in (writer.eager, writer.engine):
            event.remove(engine, "commit", slow_disk)


async def logged_seqs(sessions: object, essay_id: uuid.UUID) -> list[int]:
    async with sessions() as session:  # type: ignore[operator]
        stored = await documents.load(session, essay_id=essay_id)
    assert stored is not None
    return [row.seq for row in stored.log]


def append(essay_id: uuid.UUID, seq: int) -> Callable[[Any], None]:
    return lambda conn: documents.append_updates(conn, rows=[log_row(essay_id, seq)])


async def test_sqlite_writer_commits_off_the_event_loop_which_keeps_turning_meanwhile(
    sessions: object, sqlite_writer: SqliteWriter
) -> None:
    essay_id = await new_essay(sessions)
    with held_commits(sqlite_writer) as disk:
        for seq, inline in ((1, True), (2, False)):  # group commits (statements inline), compactions (thread)
            disk.clear()
            write = asyncio.create_task(sqlite_writer.run(append(essay_id, seq), inline=inline))
            await asyncio.sleep(0)  # the write starts; an inline COMMIT would hold the loop here
            turned = not write.done()
            disk.set()
            await asyncio.wait_for(write, 10)
            assert turned
    assert await logged_seqs(sessions, essay_id) == [1, 2]


async def test_sqlite_commit_in_thread_false_commits_on_the_event_loops_thread_as_before(
    sessions: object, database_url: str
) -> None:
    from serve_app.settings import Settings

    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's writer")
    essay_id = await new_essay(sessions)
    for in_thread in (True, False):
        config = Settings(database_url=database_url, jwt_secret="x" * 40,  # type: ignore[call-arg]
                          sqlite_commit_in_thread=in_thread).host_config()
        host = EssayHost(sessions=sessions, bus=InMemoryBus(), config=config)  # type: ignore[arg-type]
        assert host._writer is not None
        threads: list[threading.Thread] = []
        row = await leased_row(host, essay_id, 1 if in_thread else 2)

        def on_commit(_conn: object, seen: list[threading.Thread] = threads) -> None:
            seen.append(threading.current_thread())

        for engine in (host._writer.eager, host._writer.engine):
            event.listen(engine, "commit", on_commit)
        await host._write_log([row])
        await host.compactor.compact(await host.open(essay_id), force_revision=False)
        on_loop = [t is threading.main_thread() for t in threads]
        # The log's commit, the lease's (the load takes it anew), the snapshot's.
        assert on_loop == ([False] * 3 if in_thread else [True] * 3)
        await host.stop()


async def test_a_cancelled_sqlite_write_hands_its_connection_back_before_it_ends(
    sessions: object, sqlite_writer: SqliteWriter
) -> None:
    essay_id = await new_essay(sessions)
    with held_commits(sqlite_writer) as disk:
        write = asyncio.create_task(sqlite_writer.run(append(essay_id, 1)))
        await asyncio.sleep(0)
        write.cancel()  # the host stopping mid-commit
        for _ in range(5):
            await asyncio.sleep(0)
        assert not write.done()  # still waiting for its commit: the connection is in use
        disk.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(write, 10)
    # The commit landed, and the next write finds the connection free.
    await asyncio.wait_for(sqlite_writer.run(append(essay_id, 2)), 10)
    assert await logged_seqs(sessions, essay_id) == [1, 2]


async def test_sqlite_writer_checkpoints_the_wal_in_its_thread_not_inside_commits(
    sessions: object, sqlite_writer: SqliteWriter
) -> None:
    writer = sqlite_writer
    with writer.eager.connect() as conn:  # inline commits never run SQLite's automatic checkpoint
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    essay_id = await new_essay(sessions)
    writer.checkpoint_seconds = 3600.0
    for seq in range(1, 4):
        await writer.run(append(essay_id, seq))
    assert writer.checkpoints == 0 and writer.deferred == 0  # the lock was free: all inline
    busy, frames, done = await writer.checkpoint()
    assert (busy, done) == (0, frames) and frames > 0  # everything written so far reached the file
    writer.checkpoint_seconds = 0.0  # the next write schedules one in the thread
    await writer.run(lambda conn: documents.append_updates(conn, rows=[log_row(essay_id, 4)]))
    for _ in range(100):
        if writer.checkpoints == 2:
            break
        await asyncio.sleep(0.01)
    assert writer.checkpoints == 2


async def test_on_postgresql_a_group_commit_does_not_wait_behind_another_write(
    sessions: object, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer: there the host queues its writes")
    essay_id = await new_essay(sessions)
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), config=HostConfig(tick_seconds=3600))  # type: ignore[arg-type]
    row = await leased_row(host, essay_id, 1)
    async with host._writing():  # a batch of snapshots, still being written
        await asyncio.wait_for(host._write_log([row]), 5)
    assert await stored_text(sessions, essay_id) == "hi"


async def test_a_failed_feedback_write_stays_dirty_for_the_next_tick(sessions: object) -> None:
    essay_id = await new_essay(sessions)
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), config=HostConfig(tick_seconds=3600))  # type: ignore[arg-type]
    actor = await host.open(essay_id)
    actor.feedback_dirty = True

    async def failing_store(work: object, **kwargs: object) -> None:
        raise OSError("disk full")

    host.compactor.store = failing_store
    with pytest.raises(OSError):
        await host.compactor.compact(actor, force_revision=False)
    assert actor.feedback_dirty


async def test_starting_a_host_loads_the_spelling_dictionary(sessions: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded at start, in a thread: not on the event loop at the first essay's first pause."""
    from actors.analysis import spelling

    monkeypatch.setattr(spelling, "_english", None)
    host = EssayHost(sessions=sessions, bus=InMemoryBus())  # type: ignore[arg-type]
    await host.start()
    try:
        assert spelling._english is not None and spelling._english.known("essay")
    finally:
        await host.stop()


def _sample(name: str, labels: dict[str, str]) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_open_essays_are_counted_per_host_as_they_load_and_unload(sessions: object) -> None:
    """`essaycoach_essays_open{host}` follows the host's loads and unloads (in-process too, no Ray)."""
    ids = [await new_essay(sessions) for _ in range(2)]
    clock = FakeClock()
    name = f"test-host-{uuid.uuid4().hex[:8]}"
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), clock=clock, name=name,  # type: ignore[arg-type]
                     config=HostConfig(unload_idle_seconds=60, tick_seconds=3600))
    await host.start()
    try:
        await host.set_text(ids[0], "one", author_id=None)
        assert _sample("essaycoach_essays_open", {"host": name}) == 1
        clock.now += 30
        await host.set_text(ids[1], "two", author_id=None)
        assert _sample("essaycoach_essays_open", {"host": name}) == 2
        clock.now += 31  # the first is idle past 60 s, the second is not
        await host.tick()
        assert list(host.essays) == [ids[1]]
        assert _sample("essaycoach_essays_open", {"host": name}) == 1
    finally:
        await host.stop()


async def test_failed_snapshot_and_feedback_writes_count_as_store_errors(sessions: object) -> None:
    essay_id = await new_essay(sessions)
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), config=HostConfig(tick_seconds=3600))  # type: ignore[arg-type]
    await host.start()
    try:
        await host.set_text(essay_id, "some text", author_id=None)
        essay = host.essays[essay_id]

        async def failing_store(work: object, **kwargs: object) -> None:
            raise OSError("disk full")

        host.compactor.store = failing_store
        before = {op: _sample("essaycoach_store_errors_total", {"operation": op}) for op in ("compaction", "feedback")}
        with pytest.raises(OSError):  # a forced revision: a snapshot row to write
            await host.compactor.compact(essay, force_revision=True)
        essay.feedback_dirty = True
        essay.watermark = essay.revision_seq = essay.seq  # as if stored: only the feedback set is left
        with pytest.raises(OSError):
            await host.compactor.compact(essay, force_revision=False)
        after = {op: _sample("essaycoach_store_errors_total", {"operation": op}) for op in before}
        assert after == {"compaction": before["compaction"] + 1, "feedback": before["feedback"] + 1}
    finally:
        host.compactor.store = host._store
        await host.stop()
