"""Essay leases: which essay host may write an essay, with a fencing token (`db.models.EssayLease`).

Every function is one statement, atomic on SQLite and PostgreSQL alike: a conditional upsert or a
conditional UPDATE, never a read then a write. A lease is free when `expires_at` has passed; a
host may also take over a lease held under its own name by another instance (an earlier process
of the same Ray actor, which crashed: a named actor runs once). Each acquisition adds one to
`token`; the writes of the essay carry the token they were loaded with (`fence`), so a host that
lost its lease cannot write any more, even if it has not noticed yet.

Synchronous, like `documents.append_updates`: they run in the essay host's write transactions
(a `Connection` through `db.engine.SqliteWriter`, a `Session` through `run_sync`). The caller owns
the transaction.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Dialect, Update, bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import EssayLease

RELEASED = datetime(1970, 1, 1, tzinfo=UTC)
"""`expires_at` of a released lease (the row stays: its token keeps counting)."""
# Pairs per statement: (essay_id, token) is two bind parameters, far below either database's limit.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease: the host's name and the process instance that took it."""

    name: str
    instance: str


def _dialect(conn: Connection | Session) -> str:
    return (conn.get_bind() if isinstance(conn, Session) else conn).dialect.name


def acquire(conn: Connection | Session, *, essay_id: uuid.UUID, holder: Holder, now: datetime,
            expires_at: datetime) -> int | None:
    """Take the essay's lease for `holder` until `expires_at` if it is free (expired or released),
    or held under `holder.name` (ours, or an earlier process of this host); its new token, or
    None when another live host holds it (`holder_of` says who). The essay must exist (else
    IntegrityError)."""
    stmt = (postgresql.insert if _dialect(conn) == "postgresql" else sqlite.insert)(EssayLease).values(
        essay_id=essay_id, holder=holder.name, instance=holder.instance, token=1, expires_at=expires_at)
    upsert = stmt.on_conflict_do_update(
        index_elements=[EssayLease.essay_id],
        set_={"holder": stmt.excluded.holder, "instance": stmt.excluded.instance,
              "token": EssayLease.token + 1, "expires_at": stmt.excluded.expires_at},
        where=(EssayLease.expires_at <= now) | (EssayLease.holder == holder.name),
    ).returning(EssayLease.token)
    token: int | None = conn.execute(upsert).scalar_one_or_none()
    return token


def holder_of(conn: Connection | Session, *, essay_id: uuid.UUID) -> Holder | None:
    """Who holds (or last held) the essay's lease; None: nobody ever did."""
    row = conn.execute(select(EssayLease.holder, EssayLease.instance).where(EssayLease.essay_id == essay_id)).first()
    return None if row is None else Holder(row.holder, row.instance)


def _ours(holder: Holder, leases: Iterable[tuple[uuid.UUID, int]]) -> Iterator[tuple[ColumnElement[bool], ...]]:
    """The WHERE clauses of `holder`'s leases among `leases` ((essay id, token) pairs), one per
    `CHUNK` pairs, in essay id order (see `_update_in_order`)."""
    pairs = sorted(leases)
    for i in range(0, len(pairs), CHUNK):
        yield (tuple_(EssayLease.essay_id, EssayLease.token).in_(pairs[i:i + CHUNK]),
               EssayLease.holder == holder.name, EssayLease.instance == holder.instance)


def fence(conn: Connection | Session, *, holder: Holder, leases: Iterable[tuple[uuid.UUID, int]],
          expires_at: datetime | None = None) -> set[tuple[uuid.UUID, int]]:
    """The (essay id, token) pairs of `leases` whose lease `holder` still holds with that token,
    locked until the caller's transaction ends, so a concurrent `acquire` waits for it and a write
    checked here lands before the next holder loads (PostgreSQL: FOR SHARE, or the UPDATE's row
    locks; SQLite: the essay host's write transactions begin IMMEDIATE, holding the database's
    write lock). `expires_at` also renews them."""
    held: set[tuple[uuid.UUID, int]] = set()
    if expires_at is None:
        wanted = set(leases)
        ids = sorted({essay_id for essay_id, _ in wanted})
        connection = conn.connection() if isinstance(conn, Session) else conn  # Core: no ORM layer
        if connection.dialect.name == "sqlite":
            return _held_sqlite(connection, holder=holder, ids=ids, wanted=wanted)
        for i in range(0, len(ids), CHUNK):
            rows = connection.execute(_HELD, {"ids": ids[i:i + CHUNK], "holder": holder.name,
                                              "instance": holder.instance})
            held.update(lease for lease in rows if lease in wanted)
        return held
    for ours in _ours(holder, leases):
        found = conn.execute(_update_in_order(ours).values(expires_at=expires_at)
                             .returning(EssayLease.essay_id, EssayLease.token))
        held.update((essay_id, token) for essay_id, token in found)
    return held


def _update_in_order(ours: tuple[ColumnElement[bool], ...]) -> Update:
    """An UPDATE of the lease rows `ours` selects that locks them in essay id order first
    (PostgreSQL: a FOR UPDATE sub-select ordered by essay_id; SQLite has one writer anyway).

    Every statement that locks several lease rows takes them in essay id order: this one (renewal,
    release, one chunk after another in that order too) and the group commit's FOR SHARE (`_HELD`,
    `documents.append_fenced_at_once`). In whatever order its scan met them, a renewal could hold
    one row and wait for another that a group commit held while it waited for the first: a
    deadlock, which PostgreSQL breaks after `deadlock_timeout` (1 s) by failing one of them, the
    commit's acks waiting meanwhile (seen once in about twelve host_bench runs on PostgreSQL)."""
    rows = select(EssayLease.essay_id).where(*ours).order_by(EssayLease.essay_id).with_for_update()
    return update(EssayLease).where(EssayLease.essay_id.in_(rows), *ours)


# `fence` without renewal, on every group commit: one statement object, so its compiled form is
# found in the cache without building and hashing a new `(essay_id, token) IN (...)` clause per
# call; the tokens are compared here (a row of ours with another token, an essay loaded again
# since, is locked too: harmless, it is ours).
_HELD = (select(EssayLease.essay_id, EssayLease.token)
         .where(EssayLease.essay_id.in_(bindparam("ids", expanding=True)),
                EssayLease.holder == bindparam("holder"), EssayLease.instance == bindparam("instance"))
         .order_by(EssayLease.essay_id)  # locked in this order: see `_update_in_order`
         .with_for_update(read=True))


def _held_sqlite(connection: Connection, *, holder: Holder, ids: list[uuid.UUID],
                 wanted: set[tuple[uuid.UUID, int]]) -> set[tuple[uuid.UUID, int]]:
    """`fence` without renewal on SQLite (every group commit there): `_HELD` as driver SQL, the
    ids bound as the column stores them and the rows compared as they come, with no statement
    to compile, cache-key or expand and no result processing. Through `_HELD` it was about half
    of a group commit's CPU on the host's event loop (`ops.loadtest.host_bench`, 1,000
    continuous typists). No FOR SHARE and no lock order: the write transaction holds SQLite's
    one write lock from its BEGIN IMMEDIATE (`db.engine.SqliteWriter`)."""
    to_stored = _sqlite_essay_id(connection.dialect)
    ours = {(to_stored(essay_id), token): (essay_id, token) for essay_id, token in wanted}
    held: set[tuple[uuid.UUID, int]] = set()
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i:i + CHUNK]
        rows = connection.exec_driver_sql(_sqlite_held_sql(len(chunk)),
                                          (*map(to_stored, chunk), holder.name, holder.instance))
        for stored_id, token in rows:
            lease = ours.get((stored_id, token))
            if lease is not None:
                held.add(lease)
    return held


@functools.lru_cache(maxsize=CHUNK)
def _sqlite_held_sql(n: int) -> str:
    return (f"SELECT essay_id, token FROM {EssayLease.__tablename__} "
            f"WHERE essay_id IN ({', '.join('?' * n)}) AND holder = ? AND instance = ?")


def _sqlite_essay_id(dialect: Dialect) -> Callable[[uuid.UUID], Any]:
    """An essay id as SQLite stores it: what SQLAlchemy's bind processor of the column makes."""
    process = EssayLease.__table__.c.essay_id.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else (lambda value: value)


def release(conn: Connection | Session, *, holder: Holder, leases: Iterable[tuple[uuid.UUID, int]]) -> None:
    """Give up these leases ((essay id, token) pairs; when still held with these tokens): free
    for any host at once."""
    for ours in _ours(holder, leases):
        conn.execute(_update_in_order(ours).values(expires_at=RELEASED))


def release_named(conn: Connection | Session, *, name: str, essay_ids: Iterable[uuid.UUID] | None = None) -> None:
    """Give up every lease held under host name `name`, by any instance (all of them, or those of
    `essay_ids`): a host handing an essay over, or a host stopping."""
    stmt = update(EssayLease).where(EssayLease.holder == name)
    if essay_ids is not None:
        ids = list(essay_ids)
        if not ids:
            return
        stmt = stmt.where(EssayLease.essay_id.in_(ids))
    conn.execute(stmt.values(expires_at=RELEASED))
