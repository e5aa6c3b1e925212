"""`INSERT ... ON CONFLICT` for the session's dialect (PostgreSQL and SQLite spell it alike)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert(session: AsyncSession, model: Any) -> Any:
    """An insert of `model` that has `on_conflict_do_update` / `on_conflict_do_nothing`."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)
