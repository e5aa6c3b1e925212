"""The live document path: the update log, snapshots (compaction) and revisions."""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from db.models import Essay, EssayUpdate, Revision
from db.repositories.feedback import replace as replace_feedback
from db.types import utcnow


@dataclass(frozen=True)
class StoredDoc:
    essay: Essay
    log: list[EssayUpdate]


async def load(session: AsyncSession, *, essay_id: uuid.UUID) -> StoredDoc | None:
    """The essay's snapshot and the log rows written after its watermark, in seq order."""
    essay = await session.get(Essay, essay_id)
    if essay is None:
        return None
    log = (await session.scalars(
        select(EssayUpdate)
        .where(EssayUpdate.essay_id == essay_id, EssayUpdate.seq > essay.log_watermark)
        .order_by(EssayUpdate.seq)
    )).all()
    return StoredDoc(essay, list(log))


async def log_bytes(session: AsyncSession, *, essay_id: uuid.UUID) -> int:
    """Total bytes of the essay's update log (what `MAX_ESSAY_LOG_BYTES` bounds)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(func.length(EssayUpdate.data)), 0)).where(EssayUpdate.essay_id == essay_id))
    return int(total or 0)


LOG_COLUMNS = ("essay_id", "seq", "data", "author_id", "inserted_chars", "deleted_chars", "created_at")
"""The keys of an update-log row as the essay host writes it (`append_updates`' fast path)."""


@dataclass(frozen=True, slots=True)
class _PreparedInsert:
    """The update log's INSERT compiled once for a dialect: its SQL, whether its parameters are
    positional, and each column's bind processor (None: the value as it is) in parameter order."""

    sql: str
    positional: bool
    processors: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    def parameters(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]] | list[dict[str, Any]]:
        processors = self.processors
        values = [[row[key] if process is None or row[key] is None else process(row[key])
                   for key, process in processors] for row in rows]
        if self.positional:
            return [tuple(row) for row in values]
        return [dict(zip((key for key, _ in processors), row, strict=True)) for row in values]


_prepared_inserts: weakref.WeakKeyDictionary[Dialect, _PreparedInsert] = weakref.WeakKeyDictionary()


def _prepared_insert(dialect: Dialect) -> _PreparedInsert:
    prepared = _prepared_inserts.get(dialect)
    if prepared is None:
        table = cast(Table, EssayUpdate.__table__)
        # inline(): no RETURNING of the new id (SQLAlchemy's executemany of the Core INSERT has none).
        compiled = insert(table).inline().compile(dialect=dialect, column_keys=list(LOG_COLUMNS))
        order = list(compiled.positiontup or ()) if compiled.positional else list(LOG_COLUMNS)
        if sorted(order) != sorted(LOG_COLUMNS):
            raise RuntimeError(f"unexpected parameters of the update log's INSERT: {order}")
        # What SQLAlchemy's execution applies to each value: a TypeDecorator's first (the sealing,
        # with the keyring the dialect carries at each call), then the dialect's (UUID as hex on SQLite).
        processors = tuple((key, table.c[key].type.dialect_impl(dialect).bind_processor(dialect)) for key in order)
        prepared = _prepared_inserts[dialect] = _PreparedInsert(compiled.string, compiled.positional, processors)
    return prepared


def append_updates(conn: Connection | Session, *, rows: list[dict[str, Any]]) -> None:
    """One executemany INSERT for a whole group commit (rows of many essays).

    Synchronous: it runs through `db.engine.SqliteWriter` or `AsyncSession.run_sync`. A row's
    keys that are no column (the essay host's lease token) are not written.

    Rows with every key of `LOG_COLUMNS` (the essay host's) go to the driver's executemany
    through `exec_driver_sql`, with the INSERT compiled once per dialect and each value through
    its column's bind processor, as SQLAlchemy's execution would (same SQL, same bound values,
    same exceptions): its statement cache key, compiled-context set-up and per-row dicts were
    half of a group commit's CPU at 1,000 continuous typists. Other rows (defaults to fill) take
    the Core INSERT.
    """
    if not rows:
        return
    connection = conn.connection() if isinstance(conn, Session) else conn
    if not all(len(row) >= len(LOG_COLUMNS) and all(key in row for key in LOG_COLUMNS) for row in rows):
        connection.execute(insert(cast(Table, EssayUpdate.__table__)), rows)
        return
    prepared = _prepared_insert(connection.dialect)
    connection.exec_driver_sql(prepared.sql, prepared.parameters(rows))


# The array type of each log column in `append_fenced_at_once`'s `unnest`.
_PG_ARRAYS = {"essay_id": "uuid[]", "seq": "int8[]", "data": "bytea[]", "author_id": "uuid[]",
              "inserted_chars": "int4[]", "deleted_chars": "int4[]", "created_at": "timestamptz[]"}
# The lease check (`leases.fence`: FOR SHARE until the statement's transaction ends) and the
# INSERT of the rows whose (essay, token) it found, in one statement: an autocommit connection
# runs it as its own transaction, so the rows are committed when it returns. A data-modifying
# WITH runs to completion whether or not the outer SELECT reads it.
_PG_APPEND_FENCED = f"""
WITH held AS (
    SELECT essay_id, token FROM essay_leases
    WHERE essay_id = ANY($1::uuid[]) AND holder = $2 AND instance = $3
    ORDER BY essay_id  -- locked in this order, as every statement locking leases (leases._update_in_order)
    FOR SHARE
), written AS (
    INSERT INTO essay_updates ({", ".join(LOG_COLUMNS)})
    SELECT {", ".join(f"r.{c}" for c in LOG_COLUMNS)}
    FROM unnest({", ".join(f"${i}::{_PG_ARRAYS[c]}" for i, c in enumerate(LOG_COLUMNS, start=4))},
                ${len(LOG_COLUMNS) + 4}::int8[]) WITH ORDINALITY AS r({", ".join(LOG_COLUMNS)}, token, n)
    JOIN held ON held.essay_id = r.essay_id AND held.token = r.token
    ORDER BY r.n
)
SELECT essay_id, token FROM held"""


async def append_fenced_at_once(conn: AsyncConnection, *, holder: str, instance: str,
                                rows: list[dict[str, Any]]) -> set[tuple[uuid.UUID, int]]:
    """PostgreSQL, on an AUTOCOMMIT connection: a group commit's rows (each with its essay's
    lease token under "lease") in one statement, one round trip, committed on return: the rows
    whose essay `holder`/`instance` still holds under that token are written. Returns the
    (essay id, token) pairs held (`leases.fence`'s answer; rows of other pairs were not written).

    The transaction `append_updates` runs in took BEGIN, the fence's SELECT, the INSERT and
    COMMIT (and a pool pre-ping's BEGIN, SELECT, ROLLBACK): each a round trip through the
    event loop and the server, on a box where they share two cores. Keys of `LOG_COLUMNS` are
    required; each value goes through its column's bind processor (sealing), as SQLAlchemy's
    execution would.
    """
    if not rows:
        return set()
    processors = dict(_prepared_insert(conn.dialect).processors)
    columns = [[row[key] if processors[key] is None or row[key] is None else processors[key](row[key])  # type: ignore[misc]
                for row in rows] for key in LOG_COLUMNS]
    ids = list({row["essay_id"] for row in rows})
    result = await conn.exec_driver_sql(
        _PG_APPEND_FENCED, (ids, holder, instance, *columns, [row["lease"] for row in rows]))
    return set(cast(list[tuple[uuid.UUID, int]], [tuple(row) for row in result]))


def _snapshot_update() -> Any:
    essay = cast(Table, Essay.__table__).c
    return update(Essay).where(Essay.id == bindparam("essay_id_"), Essay.log_watermark <= bindparam("seq_")).values(
        {column: bindparam(f"{column}_", type_=essay[column].type)
         for column in ("doc_state", "text", "word_count", "typing_seconds", "updated_at")}
        | {"seq": bindparam("seq_", type_=essay.seq.type), "log_watermark": bindparam("seq_", type_=essay.seq.type)})


# A snapshot's UPDATE runs at every store of every typed essay (about one every ~12 s each under
# continuous typing): one statement object, found in the compiled cache without building and
# hashing a new statement per call (as `leases._HELD`), half of a store's CPU on PostgreSQL.
_STORE_SNAPSHOT = _snapshot_update()


def store_compaction(
    conn: Connection | Session, *, essay_id: uuid.UUID, doc_state: bytes, text: str, word_count: int, seq: int,
    typing_seconds: int, updated_at: datetime, feedback: list[dict[str, Any]] | None = None,
    revision_reason: str | None = None,
) -> int | None:
    """Compaction, in the caller's transaction: the snapshot and the watermark move together in
    one statement (never back: a snapshot older than the stored one changes nothing); the
    feedback set is replaced when given; a revision is added when a reason is given. Returns the
    new revision's number. Synchronous, like `append_updates`."""
    conn.execute(_STORE_SNAPSHOT, {"essay_id_": essay_id, "seq_": seq, "doc_state_": doc_state, "text_": text,
                                   "word_count_": word_count, "typing_seconds_": typing_seconds,
                                   "updated_at_": updated_at})
    if feedback is not None:
        replace_feedback(conn, essay_id=essay_id, items=feedback)
    if revision_reason is None:
        return None
    n = (conn.scalar(select(func.max(Revision.n)).where(Revision.essay_id == essay_id)) or 0) + 1
    conn.execute(insert(cast(Table, Revision.__table__)).values(
        essay_id=essay_id, n=n, seq=seq, reason=revision_reason, text=text, word_count=word_count,
        doc_state=doc_state, created_at=utcnow()))
    return n


async def last_revision(session: AsyncSession, *, essay_id: uuid.UUID) -> Revision | None:
    return await session.scalar(
        select(Revision).where(Revision.essay_id == essay_id).order_by(Revision.n.desc()).limit(1)
    )


async def list_revisions(
    session: AsyncSession, *, essay_id: uuid.UUID, after_n: int, limit: int
) -> list[Revision]:
    return list((await session.scalars(
        select(Revision).where(Revision.essay_id == essay_id, Revision.n > after_n)
        .order_by(Revision.n).limit(limit)
    )).all())


async def get_revision(session: AsyncSession, *, essay_id: uuid.UUID, n: int) -> Revision | None:
    return await session.scalar(select(Revision).where(Revision.essay_id == essay_id, Revision.n == n))


async def replay(
    session: AsyncSession, *, essay_id: uuid.UUID, after_seq: int, limit: int
) -> list[EssayUpdate]:
    return list((await session.scalars(
        select(EssayUpdate).where(EssayUpdate.essay_id == essay_id, EssayUpdate.seq > after_seq)
        .order_by(EssayUpdate.seq).limit(limit)
    )).all())


async def max_seq(session: AsyncSession, *, essay_id: uuid.UUID) -> int:
    return await session.scalar(
        select(func.coalesce(func.max(EssayUpdate.seq), 0)).where(EssayUpdate.essay_id == essay_id)
    ) or 0


async def revision_at_or_before(session: AsyncSession, *, essay_id: uuid.UUID, seq: int) -> Revision | None:
    return await session.scalar(
        select(Revision).where(Revision.essay_id == essay_id, Revision.seq <= seq)
        .order_by(Revision.seq.desc()).limit(1)
    )


async def updates_between(session: AsyncSession, *, essay_id: uuid.UUID, after_seq: int, upto_seq: int) -> list[bytes]:
    return list((await session.scalars(
        select(EssayUpdate.data).where(EssayUpdate.essay_id == essay_id, EssayUpdate.seq > after_seq,
                                       EssayUpdate.seq <= upto_seq).order_by(EssayUpdate.seq)
    )).all())
