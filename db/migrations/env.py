"""Alembic environment: async engine, batch mode on SQLite, an advisory lock on PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from db.engine import make_engine
from db.models import Base

MIGRATION_LOCK_ID = 0x45535359  # any constant; all starters must agree on it


def _run(connection: Connection) -> None:
    is_pg = connection.dialect.name == "postgresql"
    if is_pg:
        # Several replicas may start at once; only one migrates, the others wait and find nothing to do.
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_ID})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=not is_pg,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if is_pg:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_ID})
        connection.commit()


async def _main() -> None:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")


def _run_async() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_main())
        return
    # Called from inside a running loop (tests): run on a fresh loop in a worker thread.
    import threading

    err: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(_main())
        except BaseException as exc:  # re-raised in the caller's thread below
            err.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if err:
        raise err[0]


_run_async()
