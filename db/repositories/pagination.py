"""Keyset pagination over (created_at, id): stable under inserts, every row exactly once."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


class BadCursor(ValueError):
    """The cursor is not one this service issued."""


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(created_at: datetime, row_id: Any) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        when = datetime.fromisoformat(created)
    except (ValueError, TypeError) as exc:
        raise BadCursor("cursor is malformed") from exc
    if when.tzinfo is None or not isinstance(row_id, str):
        raise BadCursor("cursor is malformed")
    return when, row_id


async def paginate(
    session: AsyncSession, stmt: Select[Any], *, model: Any, limit: int, cursor: str | None
) -> Page[Any]:
    """Run `stmt` (selecting `model` rows) ordered by (created_at, id), one page at a time."""
    created_col, id_col = model.created_at, model.id
    if cursor:
        created, row_id = decode_cursor(cursor)
        try:
            key = id_col.type.python_type(row_id)
        except (ValueError, TypeError) as exc:
            raise BadCursor("cursor is malformed") from exc
        stmt = stmt.where(or_(created_col > created, and_(created_col == created, id_col > key)))
    rows = list((await session.scalars(stmt.order_by(created_col, id_col).limit(limit + 1))).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return Page(rows, next_cursor)
