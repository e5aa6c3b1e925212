"""EssayHost's writes through `_store` (compaction, feedback sets, leases) on PostgreSQL run as Core
statements on the session's connection, not through the ORM session's execution layer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from actors.broadcast import InMemoryBus
from actors.host import EssayHost, HostConfig
from db.engine import make_engine, make_sessionmaker
from db.repositories import documents
from tests.integration.test_host import FakeClock, new_essay, typed_updates


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[object]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@contextmanager
def orm_executions() -> Iterator[list[str]]:
    """The statements executed through an ORM `Session` meanwhile."""
    seen: list[str] = []

    def on_execute(state: Any) -> None:
        seen.append(str(state.statement)[:60])

    event.listen(Session, "do_orm_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(Session, "do_orm_execute", on_execute)


async def test_a_compaction_with_a_revision_and_a_lease_renewal_execute_no_orm_statement(sessions: object) -> None:
    if sessions.kw["bind"].dialect.name != "postgresql":  # type: ignore[attr-defined]
        pytest.skip("PostgreSQL only (SQLite writes through db.engine.SqliteWriter's Core connection)")
    essay_id: uuid.UUID = await new_essay(sessions)
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), clock=FakeClock(),  # type: ignore[arg-type]
                     config=HostConfig(compact_every=10, tick_seconds=3600))
    await host.start()
    try:
        for update in typed_updates([f"x{i} " for i in range(12)]):
            await host.apply_update(essay_id, update, author_id=None, origin="t")
        essay = await host.open(essay_id)
        with orm_executions() as seen:
            await host.compactor.compact(essay, force_revision=True)
            assert await host.leases.renew({essay_id: essay.lease}) == set()
        assert seen == []
        async with sessions() as session:  # type: ignore[operator]
            stored = await documents.load(session, essay_id=essay_id)
            assert stored is not None and stored.essay.log_watermark == 12 and stored.log == []
            assert stored.essay.text.startswith("x0 x1") and stored.essay.word_count == 12
            revision = await documents.last_revision(session, essay_id=essay_id)
            assert revision is not None and revision.n == 1 and revision.seq == 12
    finally:
        await host.stop()
