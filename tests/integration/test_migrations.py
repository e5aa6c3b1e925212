"""Migrations build the models' schema from an empty database, downgrade to nothing and upgrade again.

Each test gets a database of its own (a fresh SQLite file, or a fresh PostgreSQL database on the
test server), so the shared test store is never touched.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from db.engine import make_engine
from db.migrate import downgrade, upgrade
from db.models import Base


@pytest.fixture
async def empty_database_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"essaycoach_mig_{uuid.uuid4().hex[:12]}"
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT")  # CREATE DATABASE refuses a transaction
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _diff(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata))


async def _inspect(url: str, fn: Any) -> Any:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


async def test_upgrade_from_empty_builds_the_models_schema(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    tables = await _inspect(empty_database_url, _tables)
    assert set(Base.metadata.tables) <= tables
    assert await _inspect(empty_database_url, _diff) == []


async def test_downgrade_to_base_and_upgrade_again(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    await asyncio.to_thread(downgrade, empty_database_url, "base")
    assert await _inspect(empty_database_url, _tables) <= {"alembic_version"}
    await asyncio.to_thread(upgrade, empty_database_url)
    assert set(Base.metadata.tables) <= await _inspect(empty_database_url, _tables)
    assert await _inspect(empty_database_url, _diff) == []


async def test_upgrade_at_head_is_a_no_op(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    await asyncio.to_thread(upgrade, empty_database_url)
    version = await _inspect(empty_database_url,
                             lambda c: c.execute(text("SELECT version_num FROM alembic_version")).scalars().all())
    assert len(version) == 1
