"""EssayHost's writes through `_store` (compaction, feedback sets, leases) on PostgreSQL: Core
statements, not through an ORM session's execution layer, on connections that are not
pre-pinged, and that a server restart does not fail."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from actors.broadcast import InMemoryBus
from actors.essay import LiveEssay
from actors.host import EssayHost, HostConfig
from db.engine import make_engine, make_sessionmaker
from db.models import Revision
from db.repositories import documents
from tests.integration.test_host import FakeClock, new_essay, typed_updates
from tests.integration.test_leases import postgres_round_trips


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[object]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@contextmanager
def orm_executions(sessions: object) -> Iterator[list[str]]:
    """The statements executed meanwhile through an ORM `Session` on the engine of `sessions`
    (the listener is process-wide: another test's engine is not this host's)."""
    seen: list[str] = []
    engine = sessions.kw["bind"].sync_engine  # type: ignore[attr-defined]

    def on_execute(state: Any) -> None:
        if state.session.get_bind() is engine:
            seen.append(str(state.statement)[:200])

    event.listen(Session, "do_orm_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(Session, "do_orm_execute", on_execute)


async def terminate_other_connections(sessions: object) -> None:
    """Every connection of this database but the one asking goes, as in a server restart."""
    async with sessions() as session:  # type: ignore[operator]
        await session.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()"))


@asynccontextmanager
async def typed_essay_on_postgres(sessions: object, words: list[str]) -> AsyncIterator[tuple[EssayHost, LiveEssay]]:
    """A started host (PostgreSQL only: else the test skips) and its loaded essay, `words` typed."""
    if sessions.kw["bind"].dialect.name != "postgresql":  # type: ignore[attr-defined]
        pytest.skip("PostgreSQL only (SQLite writes through db.engine.SqliteWriter's Core connection)")
    essay_id: uuid.UUID = await new_essay(sessions)
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), clock=FakeClock(),  # type: ignore[arg-type]
                     config=HostConfig(compact_every=10, tick_seconds=3600))
    await host.start()
    try:
        for update in typed_updates(words):
            await host.apply_update(essay_id, update, author_id=None, origin="t")
        yield host, await host.open(essay_id)
    finally:
        await host.stop()


async def test_a_compaction_with_a_revision_and_a_lease_renewal_execute_no_orm_statement(sessions: object) -> None:
    async with typed_essay_on_postgres(sessions, [f"x{i} " for i in range(12)]) as (host, essay):
        with orm_executions(sessions) as seen:
            await host.compactor.compact(essay, force_revision=True)
            assert await host.leases.renew({essay.essay_id: essay.lease}) == set()
        assert seen == []
        async with sessions() as session:  # type: ignore[operator]
            stored = await documents.load(session, essay_id=essay.essay_id)
            assert stored is not None and stored.essay.log_watermark == 12 and stored.log == []
            assert stored.essay.text.startswith("x0 x1") and stored.essay.word_count == 12
            revision = await documents.last_revision(session, essay_id=essay.essay_id)
            assert revision is not None and revision.n == 1 and revision.seq == 12


async def test_host_writes_send_no_pool_ping_and_survive_their_connections_being_killed(sessions: object) -> None:
    """No pre-ping (BEGIN, SELECT, ROLLBACK) before each write transaction; a transaction that meets a
    connection the server closed (a restart) runs again on a new one, as the ping made sure of."""
    async with typed_essay_on_postgres(sessions, ["one ", "two "]) as (host, essay):
        leases = {essay.essay_id: essay.lease}
        with postgres_round_trips() as sent:
            await host.leases.renew(leases)  # its connection now logs what asyncpg sends
            sent.clear()
            await host.leases.renew(leases)
        assert sent and not any(s.strip() in (";", "ROLLBACK;", "ROLLBACK") for s in sent), sent
        await terminate_other_connections(sessions)
        assert await host.leases.renew(leases) == set()
        await terminate_other_connections(sessions)  # again: the compaction meets a dead one too
        await host.compactor.compact(essay, force_revision=True)
        async with sessions() as session:  # type: ignore[operator]
            stored = await documents.load(session, essay_id=essay.essay_id)
            assert stored is not None and stored.essay.text == "one two "


async def test_a_commit_whose_reply_is_lost_is_not_run_again(sessions: object) -> None:
    """The server committed, then the connection died before its answer: running the transaction
    again would store the revision twice (its number is the next free one). The error goes to the
    caller instead, and the store holds the one revision."""
    async with typed_essay_on_postgres(sessions, ["one ", "two "]) as (host, essay):
        assert host._store_engine is not None
        dialect = host._store_engine.sync_engine.dialect
        commit = dialect.do_commit
        lost = []

        def commit_then_lose_the_reply(dbapi_connection: Any) -> None:
            commit(dbapi_connection)
            if not lost:
                lost.append(True)
                dbapi_connection._connection.terminate()
                raise dialect.loaded_dbapi.InterfaceError("connection is closed")

        dialect.do_commit = commit_then_lose_the_reply  # type: ignore[method-assign]
        with contextlib.suppress(DBAPIError):
            await host.compactor.compact(essay, force_revision=True, reason="submit")
        assert lost
        async with sessions() as session:  # type: ignore[operator]
            revisions = (await session.execute(
                select(Revision.n).where(Revision.essay_id == essay.essay_id))).scalars().all()
        assert revisions == [1]
