"""Rewrite every sealed column's rows under the current data key (`essaycoach reseal`).

After a key rotation (new `ESSAYCOACH_DATA_KEY`, the previous one in `ESSAYCOACH_DATA_KEYS_OLD`),
after turning encryption on (plaintext rows from before), or to turn it off (no current key, the
old ones given: rows are written back as plaintext). The columns are found from the models'
metadata (every `SealedText` / `SealedBytes` column), so a table added later is covered.

Runs beside the live service: each batch is one short transaction, walked in primary-key order,
and each row is rewritten only if it still holds the value read (compare-and-set on the stored
bytes), so a snapshot the service wrote meanwhile is never replaced by an older one (it was
written with the current key anyway). Idempotent: a second run finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table, and_, select, tuple_, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncEngine

from db.crypto import Keyring, sealed_key_id
from db.models import Base
from db.types import SealedBytes, SealedText, keyring_of


def sealed_columns() -> list[tuple[Table, list[Column[Any]]]]:
    """Every table with sealed columns, and those columns."""
    out = []
    for table in Base.metadata.sorted_tables:
        cols = [c for c in table.columns if isinstance(c.type, (SealedText, SealedBytes))]
        if cols:
            out.append((table, cols))
    return out


@dataclass
class ResealReport:
    """Rows looked at and rows rewritten, per table."""

    scanned: dict[str, int]
    rewritten: dict[str, int]


async def reseal(engine: AsyncEngine, *, batch: int = 500,
                 progress: Callable[[str, int, int], None] = lambda _t, _s, _r: None) -> ResealReport:
    """Rewrite every sealed value whose key is not the engine's current one (plaintext included
    when there is a current key; every envelope when there is none). `engine` must carry the
    keyring (`make_engine(keyring=...)`) with every key the stored rows may use."""
    keyring = keyring_of(engine.sync_engine.dialect)
    if keyring is None:
        raise ValueError("no data keys: set ESSAYCOACH_DATA_KEY (and ESSAYCOACH_DATA_KEYS_OLD)")
    report = ResealReport({}, {})
    for table, cols in sealed_columns():
        scanned, rewritten = await _reseal_table(engine, keyring, table, cols, batch=batch)
        report.scanned[table.name], report.rewritten[table.name] = scanned, rewritten
        progress(table.name, scanned, rewritten)
    return report


def _raw(col: Column[Any]) -> Any:
    """The column as stored (no sealing or opening on the way)."""
    return type_coerce(col, col.type.impl_instance)  # type: ignore[attr-defined]


async def _reseal_table(engine: AsyncEngine, keyring: Keyring, table: Table, cols: list[Column[Any]], *,
                        batch: int) -> tuple[int, int]:
    pk = list(table.primary_key.columns)
    last: tuple[Any, ...] | None = None
    scanned = rewritten = 0
    while True:
        stmt = select(*pk, *(_raw(c).label(c.name) for c in cols)).order_by(*pk).limit(batch)
        if last is not None:
            stmt = stmt.where(tuple_(*pk) > tuple_(*last))
        async with engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
            for row in rows:
                keys = tuple(row[: len(pk)])
                changes: dict[str, Any] = {}
                guards = []
                for i, col in enumerate(cols):
                    stored = row[len(pk) + i]
                    if stored is None or sealed_key_id(stored) == keyring.current:
                        continue
                    # Assigned as plaintext: the column type seals it under the current key.
                    changes[col.name] = (keyring.open_text(stored) if isinstance(stored, str)
                                         else keyring.open(bytes(stored)))
                    guards.append(_raw(col) == type_coerce(stored, col.type.impl_instance))  # type: ignore[attr-defined]
                if changes:
                    where = and_(*(c == v for c, v in zip(pk, keys)), *guards)
                    result = await conn.execute(update(table).where(where).values(changes))
                    rewritten += int(result.rowcount or 0)
        scanned += len(rows)
        if len(rows) < batch:
            return scanned, rewritten
        last = tuple(rows[-1][: len(pk)])
