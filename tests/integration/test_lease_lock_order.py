"""Every statement the essay hosts send PostgreSQL that locks lease rows takes them in essay id
order, so no two of them (a renewal and a group commit, say) can each hold a row the other waits
for: a deadlock PostgreSQL breaks only after `deadlock_timeout`, failing one of them (c100c07).

The test runs the lease and commit paths of two in-process hosts (`tests.integration.test_leases`:
acquire, a refused acquire, renewal, group commits and compactions of several essays, hand-over,
unload and stop, with `CHUNK` small so that renewals and fences take several statements), records
every statement through SQLAlchemy's `before_cursor_execute`, and checks each one that locks lease
rows (UPDATE, DELETE, upsert, SELECT ... FOR UPDATE / FOR SHARE, in a CTE or a sub-select too):

- one that may lock several rows locks them through `ORDER BY essay_id` right before its
  `FOR UPDATE` / `FOR SHARE` (an UPDATE or DELETE through such a sub-select: `_update_in_order`);
  a several-row upsert lists its rows in essay id order;
- within a transaction, each statement's new rows come after every row the transaction already
  holds (chunks one after another, or a sorted loop of single-row statements).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event

from db.repositories import leases as leases_repo
from tests.integration.test_host import (
    new_essay,
    sessions,  # noqa: F401  (the fixture)
    typed_updates,
)
from tests.integration.test_leases import FakeWall, started, type_into

_LOCKING_CLAUSE = re.compile(r"\bfor (?:no key update|update|key share|share)\b")
_ORDERED_BY_ESSAY = re.compile(r"order by (?:essay_leases\.)?essay_id(?: asc)?\s*$")
_ESSAY_CONDITION = re.compile(r"essay_id(?:\s*,\s*[a-z_.]+)*\)?\s*(?:=|\bin\b)")


def _normal(sql: str) -> str:
    """Lower case, SQL comments out, white space collapsed."""
    return " ".join(re.sub(r"--[^\n]*", " ", sql).lower().split())


def _values(parameters: Any) -> Iterator[Any]:
    """Every bound value in order, lists and the rows of an executemany flattened."""
    if isinstance(parameters, dict):
        parameters = list(parameters.values())
    if isinstance(parameters, (list, tuple)):
        for value in parameters:
            yield from _values(value)
    else:
        yield parameters


class LeaseLocks:
    """The lease-locking statements seen, by transaction, and what breaks the essay id order."""

    def __init__(self, essays: set[uuid.UUID]) -> None:
        self.essays = essays
        self.seen: list[str] = []  # the locking statements, normalised
        self.broken: list[str] = []
        self._held: dict[Any, set[uuid.UUID]] = {}  # transaction -> the lease rows it locked
        self._transactions: list[Any] = []  # kept referenced: their ids stay theirs

    def __call__(self, conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                 executemany: bool) -> None:
        sql = _normal(statement)
        if "essay_leases" not in sql:
            return
        updates = re.search(r"\b(?:update essay_leases|delete from essay_leases)\b", sql) is not None
        upsert = sql.startswith("insert into essay_leases") and "on conflict" in sql and "do update" in sql
        clauses = list(_LOCKING_CLAUSE.finditer(sql))
        if not (updates or upsert or clauses):
            return  # a plain read locks nothing
        self.seen.append(sql)
        in_order = [essay for essay in _values(parameters) if essay in self.essays]
        rows = set(in_order)
        several = len(rows) > 1 or not (upsert or _ESSAY_CONDITION.search(sql))  # no essay id condition: any number
        if several:
            if any(not _ORDERED_BY_ESSAY.search(sql[:clause.start()]) for clause in clauses):
                self.broken.append(f"locks several lease rows without ORDER BY essay_id: {sql}")
            elif updates and not clauses:
                self.broken.append(f"updates several lease rows with no ordered FOR UPDATE sub-select: {sql}")
            elif upsert and in_order != sorted(in_order):
                self.broken.append(f"upserts several lease rows out of essay id order: {sql}")
        transaction = conn.get_transaction()
        if transaction is None:
            return  # its own transaction: nothing held before it
        if transaction not in self._transactions:
            self._transactions.append(transaction)
        held = self._held.setdefault(id(transaction), set())
        new = rows - held
        if held and new and min(new) < max(held):
            self.broken.append(f"locks {sorted(new)} after {sorted(held)} in one transaction: {sql}")
        held |= rows


async def test_every_statement_locking_lease_rows_takes_them_in_essay_id_order(
        sessions: object, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    if sessions.kw["bind"].dialect.name != "postgresql":  # type: ignore[attr-defined]
        pytest.skip("row lock order is PostgreSQL's (SQLite has one writer)")
    monkeypatch.setattr(leases_repo, "CHUNK", 2)  # renewals, releases and fences of several statements
    wall = FakeWall()
    essays = [await new_essay(sessions) for _ in range(6)]
    locks = LeaseLocks(set(essays))
    event.listen(Engine, "before_cursor_execute", locks)
    try:
        async with started(sessions, wall, ask=True) as hosts:
            a, b = hosts.a, hosts.b
            for essay_id in sorted(essays, reverse=True):  # lease rows stored against id order
                await a.open(essay_id)
            for word in ("one ", "two "):  # group commits of every essay at once
                await asyncio.gather(*(type_into(a, essay_id, typed_updates([word])) for essay_id in essays))
            a.clock.now += 11  # type: ignore[attr-defined]  # a third of the lease: renewed
            wall.advance(11)
            await a.tick()
            await a.compactor.compact_many([a.essays[e] for e in reversed(essays)], force_revision=True)
            await b.open(essays[2])  # b asks a to hand it over (a releases it by name)
            await type_into(b, essays[2], typed_updates(["three"]))
            fenced = await a._store(lambda conn: a.leases.fence(conn, [(e, a.essays[e].lease) for e in
                                                                       reversed(essays) if e in a.essays]))
            assert fenced == [True] * 5
            a.clock.now += a.config.unload_idle_seconds + 1  # type: ignore[attr-defined]
            a.essays[essays[0]].attach(None)  # a socket keeps this one loaded
            await a.tick()  # the idle ones are unloaded and their leases released together
            assert list(a.essays) == [essays[0]]
    finally:
        event.remove(Engine, "before_cursor_execute", locks)
    assert locks.broken == []
    kinds = {"acquire": "insert into essay_leases", "renew or release": "update essay_leases set expires_at",
             "fence": "for share", "group commit": "with held as", "hand-over": "essay_leases.holder = $2"}
    for kind, marker in kinds.items():  # the test saw every path it is meant to watch
        assert any(marker in sql for sql in locks.seen), kind
