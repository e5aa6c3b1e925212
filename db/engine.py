"""Engine and session factory. Built by callers from settings; nothing connects at import time."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from db.crypto import Keyring
from db.types import attach_keyring, keyring_of

T = TypeVar("T")
log = logging.getLogger("essaycoach.db")


def _sqlite_pragmas(engine: Engine, *, busy_timeout_ms: int = 30_000, cache_kib: int | None = None) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if cache_kib is not None:
            cur.execute(f"PRAGMA cache_size=-{cache_kib}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged update must survive power loss, not only a process crash.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cur.close()
        # SQLite's own lower() folds ASCII only; PostgreSQL's folds every letter. Case-insensitive
        # searches (`func.lower(column)`) then find "Ólafur" by "ólafur" on both.
        dbapi_conn.create_function("lower", 1, _unicode_lower, deterministic=True)


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _begin_immediate(engine: Engine) -> None:
    """Transactions take SQLite's write lock at BEGIN (pysqlite's own BEGIN is turned off).

    A deferred transaction that reads before it writes (a revision's `max(n)`) fails with
    SQLITE_BUSY, busy timeout or not, when another connection committed in between; one that
    holds the lock from the start cannot.
    """
    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _is_busy(exc: OperationalError) -> bool:
    """The write lock was taken (SQLITE_BUSY or SQLITE_LOCKED, extended codes included)."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "database is locked" in str(exc.orig)


def make_engine(url: str, *, keyring: Keyring | None = None, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout so replicas can share it.
    With `keyring`, its sealed columns are encrypted at rest (db/crypto.py)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # aiosqlite runs each connection on a thread of its own, opened with the connection: an
        # overflow connection (beyond SQLAlchemy's default 5 pooled) is a new thread, a file open
        # and the pragmas for one request, then closed. A burst of requests (a class signing in,
        # a client opening its sockets) paid that per request; 20 pooled keeps them.
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 20)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_pragmas(engine.sync_engine)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        engine = create_async_engine(url, **kwargs)
    attach_keyring(engine.sync_engine.dialect, keyring)
    return engine


def log_engine_for(bind: Any) -> AsyncEngine | None:
    """For the essay host's group commits on PostgreSQL (`documents.append_fenced_at_once`): an
    engine of the same database and data key whose connections autocommit (the one statement
    is its own transaction: no BEGIN and COMMIT round trips) and are not pre-pinged (a ping is
    BEGIN, SELECT, ROLLBACK on asyncpg: three more round trips a commit). A connection that died
    fails its write; SQLAlchemy invalidates it and the committer's retry takes a new one. None
    for SQLite (`SqliteWriter`) or no engine."""
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "postgresql":
        return None
    # Commits run one at a time; the overflow one covers a straggler being returned.
    engine = create_async_engine(bind.url, isolation_level="AUTOCOMMIT", pool_pre_ping=False,
                                 pool_size=1, max_overflow=1)
    attach_keyring(engine.sync_engine.dialect, keyring_of(bind.sync_engine.dialect))
    return engine


def store_engine_for(bind: Any) -> AsyncEngine | None:
    """For an essay host's write transactions on PostgreSQL (compaction, feedback sets, leases:
    `EssayHost._store`): an engine of the same database and data key whose connections are not
    pre-pinged. A ping is BEGIN, SELECT, ROLLBACK on asyncpg, three round trips through the host's
    event loop before each of its ~10-30 transactions a second. A connection that died (the server
    restarted) fails its transaction's first statement instead; SQLAlchemy then invalidates the
    pool, and `_store` runs the transaction once more on a new connection (never a failed COMMIT).
    A small pool of its own (2 + 2 overflow): the host's writes are few at a time (a host_bench
    run at 1,000 typists held 3), and every host process holds one beside the shared engine's, so
    the connections a deployment needs stay under PostgreSQL's default `max_connections`. None
    for SQLite (`SqliteWriter`) or no engine."""
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "postgresql":
        return None
    engine = create_async_engine(bind.url, pool_pre_ping=False, pool_size=2, max_overflow=2)
    attach_keyring(engine.sync_engine.dialect, keyring_of(bind.sync_engine.dialect))
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# Page cache of each writer connection (SQLite's default is 2 MiB per connection). The writer
# appends to the log's rightmost pages and rewrites snapshot rows; the OS caches the file anyway.
WRITER_CACHE_KIB = 256


class SqliteWriter:
    """Runs write transactions on SQLite (the update log, compaction): the statements on the
    calling thread when the write lock is free, else the whole transaction in the writer's own
    thread; the COMMIT always in a thread of its own.

    Through aiosqlite a transaction is five or so hops between the event loop and the database
    thread (begin, execute, commit, ...), each waiting for a busy loop to come round. A whole
    transaction in one thread hop was better, but not good: every sqlite3 call releases the GIL,
    and the writer thread then waited for the busy event loop thread to hand it back (up to the
    5 ms switch interval each time), so a group commit of ~20 rows, ~1 ms of work, took 3-35 ms
    at 1,000 typists (ops/loadtest, 2026-11-30). Inline it takes its ~1 ms. The inline attempt
    never waits for the lock (busy timeout 0, lock taken at BEGIN): when another process holds
    it, the transaction runs in the thread instead, which waits up to 30 s without stopping the
    event loop.

    The COMMIT is not inline: with `synchronous=FULL` it waits for the WAL's fsync, which on a
    busy disk took 3 ms p50 but 67 ms p99 and up to 0.3 s (ops/loadtest/host_bench.py under
    continuous typing, 2026-12-06), and the event loop stopped for all of it: every essay's acks,
    the typing stream and tier 1 with it. It runs in `commits`, a thread that does nothing else
    (so it never queues behind a checkpoint), and sqlite3 releases the GIL while it waits: the
    loop goes on applying updates, which the next group commit gathers. `run(work, inline=False)`
    runs the whole transaction in the writer's thread (compaction: a batch of snapshots is tens
    of ms of statements).

    Checkpoints (copying the WAL into the database file) run in the thread too, at most every
    `checkpoint_seconds` after a write: SQLite's automatic checkpoint runs inside whichever
    commit crosses 1,000 WAL pages, and that commit was on the event loop.
    """

    def __init__(self, async_engine: AsyncEngine, *, checkpoint_seconds: float = 1.0,
                 commit_in_thread: bool = True) -> None:
        url = async_engine.url.set(drivername="sqlite")
        self.engine = self._engine(url, busy_timeout_ms=30_000)
        self.eager = self._engine(url, busy_timeout_ms=0, autocheckpoint=False)
        for engine in (self.engine, self.eager):  # the same data key as the engine it writes for
            attach_keyring(engine.dialect, keyring_of(async_engine.sync_engine.dialect))
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-writer")
        self._commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-commit")
        # False: the behaviour before 2026-12-06 (COMMIT and compaction inline), for A/B runs.
        self.commit_in_thread = commit_in_thread
        self.deferred = 0  # transactions that found the lock taken and ran in the thread
        self.checkpoints = 0
        self.checkpoint_seconds = checkpoint_seconds
        self._last_checkpoint = time.monotonic()
        self._checkpointing: asyncio.Future[tuple[int, int, int]] | None = None

    @staticmethod
    def _engine(url: Any, *, busy_timeout_ms: int, autocheckpoint: bool = True) -> Engine:
        engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000}, pool_size=1, max_overflow=0)
        _sqlite_pragmas(engine, busy_timeout_ms=busy_timeout_ms, cache_kib=WRITER_CACHE_KIB)
        _begin_immediate(engine)
        if not autocheckpoint:
            @event.listens_for(engine, "connect")
            def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")
        return engine

    @classmethod
    def for_sessions(cls, sessions: async_sessionmaker[AsyncSession], *,
                     commit_in_thread: bool = True) -> SqliteWriter | None:
        """A writer for the database behind `sessions` if it is an SQLite file, else None."""
        bind = sessions.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            return None
        if bind.dialect.name == "sqlite" and bind.url.database not in (None, "", ":memory:"):
            return cls(bind, commit_in_thread=commit_in_thread)
        return None

    async def run(self, work: Callable[[Connection], T], *, inline: bool = True) -> T:
        """`work(connection)` inside one transaction, committed; its result. Callers serialise
        their calls (one writer per process, and the inline connection is the only one of its
        pool). With `inline`, `work` runs on this thread when the lock is free, else (and
        without `inline`) in the writer's thread."""
        loop = asyncio.get_running_loop()
        if not inline and self.commit_in_thread:
            return await loop.run_in_executor(self._thread, self._transaction, self.engine, work)
        conn = self.eager.connect()
        try:
            transaction = conn.begin()  # BEGIN IMMEDIATE: takes the lock now, or fails at once
        except OperationalError as exc:
            conn.close()
            if not _is_busy(exc):
                raise
            self.deferred += 1
            return await loop.run_in_executor(self._thread, self._transaction, self.engine, work)
        try:
            result = work(conn)
        except BaseException:
            transaction.rollback()
            conn.close()
            raise
        if not self.commit_in_thread:
            self._commit(conn, transaction)
            return self._after_write(result)
        commit = loop.run_in_executor(self._commits, self._commit, conn, transaction)
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            # The connection is its pool's only one: the next writer must find it handed back.
            await asyncio.wait({commit})
            raise
        return self._after_write(result)

    def _after_write(self, result: T) -> T:
        if self._checkpointing is None and time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
            self._checkpointing = asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint)
            self._checkpointing.add_done_callback(self._checkpointed)
        return result

    async def checkpoint(self) -> tuple[int, int, int]:
        """A passive checkpoint now, in the thread: (busy, WAL frames, frames checkpointed)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint)

    def _checkpoint(self) -> tuple[int, int, int]:
        raw = self.engine.raw_connection()  # no SQLAlchemy transaction: a checkpoint runs outside one
        try:
            sqlite = raw.driver_connection
            assert sqlite is not None  # a pooled connection is open
            busy, frames, done = sqlite.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            raw.close()
        self.checkpoints += 1
        return busy, frames, done

    def _checkpointed(self, fut: asyncio.Future[Any]) -> None:
        self._checkpointing = None
        self._last_checkpoint = time.monotonic()
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("WAL checkpoint failed", exc_info=fut.exception())

    @staticmethod
    def _transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
        with engine.begin() as conn:
            return work(conn)

    @staticmethod
    def _commit(conn: Connection, transaction: Any) -> None:
        try:
            transaction.commit()
        except BaseException:
            transaction.rollback()
            raise
        finally:
            conn.close()

    def close(self) -> None:
        self._commits.shutdown(wait=True)
        self._thread.shutdown(wait=True)
        self.engine.dispose()
        self.eager.dispose()
