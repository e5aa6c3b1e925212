"""`documents.store_compaction` (one prepared statement object): what a store writes, and that a
snapshot never moves the watermark back; the feedback set it replaces."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from db.engine import make_engine, make_sessionmaker
from db.repositories import documents
from db.repositories import feedback as feedback_repo
from db.types import utcnow
from tests.integration.test_host import new_essay


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[object]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


def item(n: int) -> dict[str, object]:
    return {"id": f"i{n}", "kind": "spelling", "source": "local", "severity": "info", "message": f"m{n}",
            "suggestion": "s", "quote": "q", "start": n, "end": n + 2, "anchor": None}


async def store(sessions: object, essay_id: uuid.UUID, seq: int, text: str, **kwargs: object) -> None:
    async with sessions() as session, session.begin():  # type: ignore[operator]
        conn = await session.connection()
        await conn.run_sync(lambda c: documents.store_compaction(
            c, essay_id=essay_id, doc_state=text.encode(), text=text, word_count=len(text.split()), seq=seq,
            typing_seconds=seq * 10, updated_at=utcnow() - timedelta(seconds=100 - seq), **kwargs))


async def test_a_store_writes_the_snapshot_and_an_older_one_changes_nothing(sessions: object) -> None:
    first, second = await new_essay(sessions), await new_essay(sessions)
    await store(sessions, first, 7, "seven words are here in this text", feedback=[item(1), item(2)])
    await store(sessions, second, 3, "another essay")
    await store(sessions, first, 5, "older snapshot")  # a late store of an older version
    async with sessions() as session:  # type: ignore[operator]
        stored = await documents.load(session, essay_id=first)
        other = await documents.load(session, essay_id=second)
        items = await feedback_repo.load(session, essay_id=first)
    assert stored is not None and other is not None
    essay = stored.essay
    assert (essay.text, essay.doc_state, essay.word_count, essay.seq, essay.log_watermark, essay.typing_seconds) == (
        "seven words are here in this text", b"seven words are here in this text", 7, 7, 7, 70)
    assert (other.essay.text, other.essay.seq, other.essay.log_watermark) == ("another essay", 3, 3)
    assert [i["id"] for i in items] == ["i1", "i2"]


async def test_a_store_replaces_only_its_own_essays_feedback_set(sessions: object) -> None:
    first, second = await new_essay(sessions), await new_essay(sessions)
    await store(sessions, first, 1, "a", feedback=[item(1), item(2)])
    await store(sessions, second, 1, "b", feedback=[item(3)])
    await store(sessions, first, 2, "a b", feedback=[item(4)])
    async with sessions() as session:  # type: ignore[operator]
        assert [i["id"] for i in await feedback_repo.load(session, essay_id=first)] == ["i4"]
        assert [i["id"] for i in await feedback_repo.load(session, essay_id=second)] == ["i3"]
