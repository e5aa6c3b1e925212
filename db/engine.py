"""Engine and session factory. Built by callers from settings; nothing connects at import time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

T = TypeVar("T")


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged update must survive power loss, not only a process crash.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout so replicas can share it."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_pragmas(engine.sync_engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_async_engine(url, **kwargs)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class SqliteWriter:
    """Runs write transactions on SQLite in one thread hop each (the update log, compaction).

    Through aiosqlite a transaction is five or so hops between the event loop and the database
    thread (begin, execute, commit, ...), each waiting for a busy loop to come round; under load
    that was most of an ack's latency. Here the whole transaction runs in this writer's own thread
    on a plain sqlite3 connection, with the same pragmas and SQLAlchemy's type handling.
    """

    def __init__(self, async_engine: AsyncEngine) -> None:
        self.engine = create_engine(async_engine.url.set(drivername="sqlite"), connect_args={"timeout": 30},
                                    pool_size=1, max_overflow=0)
        _sqlite_pragmas(self.engine)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-writer")

    @classmethod
    def for_sessions(cls, sessions: async_sessionmaker[AsyncSession]) -> SqliteWriter | None:
        """A writer for the database behind `sessions` if it is an SQLite file, else None."""
        bind = sessions.kw.get("bind")
        if isinstance(bind, AsyncEngine) and bind.dialect.name == "sqlite" and bind.url.database not in (None, "", ":memory:"):
            return cls(bind)
        return None

    async def run(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` inside one transaction, in the writer's thread; its result."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._transaction, work)

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return work(conn)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.engine.dispose()
