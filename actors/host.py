"""EssayHost: the essays routed to one host process, their group-committed log and their lifecycle.

A plain class (tests and single-process runs use it directly); `actors.ray_host` wraps it in a
named Ray actor. Lifecycle per essay, after Hocuspocus: load on first touch (snapshot + log
replay), change (apply, log, ack, broadcast), store (compaction into a snapshot, revisions every
few minutes of activity), unload when idle with no connections, flush everything on shutdown.

The host routes and owns the lifecycle; the rest is its collaborators':

- `actors.essay.LiveEssay`: one loaded essay's state, changed only through its methods;
- `actors.decisions`: what is due (tier 1, a store, a revision, a dashboard row, an unload), pure
  functions of an essay's state and the clock;
- `actors.scheduler.FeedbackScheduler`: tier 1 and the LLM tier;
- `actors.compactor.Compactor`: snapshots, revisions and feedback sets;
- `actors.events.EventLog`: numbered events and dashboard rows, published while watched;
- `actors.leases.EssayLeases`: the essay's lease in the store, taken on load (the holder asked to
  hand over), checked by every write (fencing), renewed by the tick, released on unload and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, TypeVar

from pycrdt import create_update_message
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actors import decisions, tracing
from actors.analysis.local import spellchecker
from actors.broadcast import DELETED, MOVED, Bus, doc_message
from actors.committer import GroupCommitter
from actors.compactor import Compactor
from actors.config import HostConfig
from actors.doc import EssayDoc, InvalidUpdate, TextTooLong, replace_text_update
from actors.essay import EssayMeta, LiveEssay
from actors.events import EventLog
from actors.host_api import EssayMoved
from actors.leases import EssayLeases, HandOver
from actors.metrics import metric
from actors.scheduler import Analyzer, FeedbackScheduler, repeat
from db.engine import SqliteWriter, log_engine_for, store_engine_for
from db.repositories import documents
from db.repositories import essays as essays_repo
from db.repositories import feedback as feedback_repo
from db.types import utcnow

__all__ = ["Analyzer", "EssayHost", "EssayNotFound", "HostConfig", "UpdateRejected", "UpdateTooLarge"]

log = logging.getLogger("essaycoach.host")
T = TypeVar("T")
# After handing an essay over, this host refuses to load it again for this long (its sockets
# closed 1013 and reconnect to the host routing names): long enough for the asking host to take
# the lease, short enough that a host count changed back is followed soon.
HAND_OVER_GRACE_SECONDS = 5.0
# Dashboard rows one tick builds between two turns of the event loop (a row is ~0.03 ms, more
# for a long essay).
TICK_ROWS_PER_TURN = 32


class EssayNotFound(LookupError):
    """No essay with this id exists in the store."""


class UpdateRejected(ValueError):
    """An update failed to decode or is not plain text; the document is unchanged."""


class UpdateTooLarge(UpdateRejected):
    """An update that would take the essay over `max_essay_chars` characters or its update log
    over `max_log_bytes`; the document is unchanged (sockets: permission-denied, close 4413)."""


class EssayHost:
    """Hosts essays routed to it; the only writer of those essays' logs and snapshots."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], bus: Bus,
                 config: HostConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], datetime] = utcnow, analyzer: Analyzer | None = None,
                 local_analyzer: Analyzer | None = None, name: str = "essay-host",
                 hand_over: HandOver | None = None) -> None:
        """`name`: the `host` label of `essaycoach_essays_open` and the holder of this host's leases
        (the Ray actor's name under Ray: unique while it runs). `hand_over(name, essay_id)` asks
        the host of that name to hand an essay over (None: wait for its lease to run out)."""
        self.sessions = sessions
        self.analyzer = analyzer
        self.bus = bus
        self.config = config or HostConfig()
        self.clock = clock
        self.wallclock = wallclock
        self.essays: dict[uuid.UUID, LiveEssay] = {}
        self._open_gauge = metric("essaycoach_essays_open").labels(name)  # set where essays load/unload
        self._moved_counter = metric("essaycoach_essays_moved_total")
        self._loading: dict[uuid.UUID, asyncio.Lock] = {}
        # Essays being deleted (`drop` until `release`): not loaded again, so an update racing
        # the row's removal cannot bring one back.
        self._deleted: set[uuid.UUID] = set()
        # Essays handed over (`hand_over`) -> until when (clock) this host refuses to load them
        # again: the host that asked must get the lease, not a straggling update here.
        self._handed_over: dict[uuid.UUID, float] = {}
        self.committer = GroupCommitter(self._write_log, interval=self.config.commit_interval,
                                        permanent=(IntegrityError,))
        self.events = EventLog(bus)
        self.leases = EssayLeases(name=name, store=self._store, seconds=self.config.lease_seconds,
                                  wallclock=wallclock, hand_over=hand_over)
        self._renewed_at = clock()
        self._notices: set[asyncio.Task[None]] = set()  # MOVED publishes after a refused commit
        self.compactor = Compactor(store=self._store, config=self.config, events=self.events, clock=clock,
                                   wallclock=wallclock, on_failed=self._failed, fence=self.leases.fence,
                                   on_lost=self._lost)
        self.scheduler = None if analyzer is None else FeedbackScheduler(
            analyzer=analyzer, local_analyzer=local_analyzer, config=self.config, events=self.events,
            record_usage=self._record_usage, clock=clock, name=name)
        self._ticker: asyncio.Task[None] | None = None
        self._tier1: asyncio.Task[None] | None = None
        self._write_gate = asyncio.Lock()
        self._writer = SqliteWriter.for_sessions(sessions, commit_in_thread=self.config.sqlite_commit_in_thread)
        bind = sessions.kw.get("bind")
        self._single_writer = bind is None or bind.dialect.name == "sqlite"
        self._log_engine = log_engine_for(bind)
        self._store_engine = store_engine_for(bind)

    @property
    def knows_every_socket(self) -> bool:
        """False in a host process that replaced a crashed one: it then publishes everything, as
        it cannot know which sockets opened before the crash (set by `actors.ray_host`)."""
        return self.events.knows_every_socket

    @knows_every_socket.setter
    def knows_every_socket(self, value: bool) -> None:
        self.events.knows_every_socket = value

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # Tier 1's spelling dictionary loads on first use (~1 s of CPU, ~57 MiB: SCOWL words and
        # the SymSpell index): load it now, off the event loop, instead of stalling every essay's
        # acks at the first pause.
        await asyncio.to_thread(spellchecker)
        self._open_gauge.set(len(self.essays))  # the series exists (under Ray: is exported) from the start
        self.committer.start()
        if self._ticker is None:
            self._ticker = asyncio.create_task(repeat(self.config.tick_seconds, self.tick, "host tick"),
                                               name="host-tick")
        if self._tier1 is None and self.scheduler is not None:
            self._tier1 = asyncio.create_task(self.scheduler.run(), name="host-tier1")

    async def stop(self) -> None:
        """Flush every essay: log, then snapshot. Called on graceful shutdown."""
        for task in (self._ticker, self._tier1):
            if task is not None:
                task.cancel()
        self._ticker = self._tier1 = None
        for essay in self.essays.values():
            essay.cancel_analysis()
        await self.committer.flush()
        await self.compactor.compact_all(list(self.essays.values()))
        await self.committer.close()
        try:  # the next host need not wait for them to run out
            await self.leases.release({e.essay_id: e.lease for e in self.essays.values()})
        except Exception:
            log.warning("releasing leases on stop failed; they run out", exc_info=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for engine in (self._log_engine, self._store_engine):
            if engine is not None:
                await engine.dispose()

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        """A write transaction; on SQLite one at a time per host.

        SQLite has a single writer: a second connection of this process that finds the lock
        taken sleeps in SQLite's busy handler (1 ms, 2, 5, ... up to 100 ms steps), which made
        a compaction or a feedback write cost a group commit up to a tenth of a second. Queueing
        here hands the lock over at once. PostgreSQL takes concurrent writers: a group commit
        does not wait there behind a batch of snapshots (what must come first, an essay's log
        rows before its snapshot, is awaited by the writer that needs it).
        """
        async with self._write_gate if self._single_writer else contextlib.nullcontext():
            async with self.sessions() as session, session.begin():
                yield session

    async def _store(self, work: Callable[[Any], T], *, inline: bool = True) -> T:
        """Run the synchronous write `work(connection)` as one transaction of this host: on SQLite
        through `db.engine.SqliteWriter` (statements inline when the lock is free and `inline`,
        where aiosqlite takes a thread hop per statement; the commit off the event loop),
        on PostgreSQL on a Core connection of `db.engine.store_engine_for` (`run_sync`): the writes
        are Core statements, and through an ORM session each one also went through its ORM layer
        (a snapshot's `update(Essay)` through the bulk-update path, evaluating the session's
        objects: it has none). Its connections are not pre-pinged: a transaction whose statements
        met a dead one (the server restarted) runs once more, on a new connection. A COMMIT that
        fails is never run again: it may have reached the server (a revision stored twice), so the
        error goes to the caller, as any other store error does."""
        if self._writer is not None:
            async with self._write_gate:
                return await self._writer.run(work, inline=inline)
        if self._store_engine is None:
            async with self._writing() as session:
                conn = await session.connection()
                return await conn.run_sync(work)
        for last_try in (False, True):
            async with self._store_engine.connect() as conn:
                await conn.begin()
                try:
                    result = await conn.run_sync(work)
                except DBAPIError as exc:
                    if last_try or not exc.connection_invalidated:
                        raise
                    log.warning("store connection lost; running the transaction again",
                                extra={"error": repr(exc)})
                    continue
                await conn.commit()
                return result
        raise AssertionError("unreachable: the last try returns or raises")

    async def _write_log(self, rows: list[dict[str, Any]]) -> dict[int, BaseException]:
        """One group commit: the rows of essays whose lease is still ours under their token; the
        others are refused (not stored, not acknowledged) and their essays unloaded."""
        refused: dict[int, BaseException]
        if self._log_engine is not None:
            async with self._log_engine.connect() as conn:
                refused = await self.leases.append_fenced_at_once(conn, rows)
        else:
            refused = await self._store(lambda conn: self.leases.append_fenced(conn, rows))
        for i in refused:
            essay = self.essays.get(rows[i]["essay_id"])
            if essay is not None and essay.lease == rows[i]["lease"]:
                # Unloaded now; the sockets are told after: this function is what the committer's
                # retry policy repeats, and a bus call here would retry a committed batch on a bus
                # failure and hold every other essay's ack behind the publish.
                self._drop_lost(essay)
                task = asyncio.create_task(self._moved(essay.essay_id), name="essay-moved")
                self._notices.add(task)
                task.add_done_callback(self._notices.discard)
        return refused

    async def _record_usage(self, essay: LiveEssay, usage: Any) -> None:
        async with self._writing() as session:
            await feedback_repo.record_usage(
                session, essay_id=essay.essay_id, class_id=essay.meta.class_id, provider="llm",
                model="", user_id=essay.meta.owner_id, prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens)

    async def open(self, essay_id: uuid.UUID) -> LiveEssay:
        """The loaded essay, loading it from the store on first touch."""
        essay = self.essays.get(essay_id)
        if essay is not None:
            return essay
        if essay_id in self._deleted:
            raise EssayNotFound(str(essay_id))
        lock = self._loading.setdefault(essay_id, asyncio.Lock())
        try:
            async with lock:
                essay = self.essays.get(essay_id)
                if essay is None:
                    if self._handed_over.get(essay_id, float("-inf")) > self.clock():
                        raise EssayMoved(f"essay {essay_id} was handed to another host")
                    essay = await self._load(essay_id)
                    if essay_id in self._deleted:  # deleted while it loaded
                        raise EssayNotFound(str(essay_id))
                    self.essays[essay_id] = essay
                    self._open_gauge.set(len(self.essays))
        finally:
            self._loading.pop(essay_id, None)
        return essay

    async def _load(self, essay_id: uuid.UUID) -> LiveEssay:
        """The essay from the store, under this host's lease (taken first: the store then holds
        every write of the previous holder, which can write nothing more)."""
        try:
            lease = await self.leases.acquire(essay_id)
        except LookupError:
            raise EssayNotFound(str(essay_id)) from None
        try:
            essay = await self._read(essay_id)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.leases.release({essay_id: lease})
            raise
        essay.lease = lease
        return essay

    async def _read(self, essay_id: uuid.UUID) -> LiveEssay:
        async with self.sessions() as session:
            stored = await documents.load(session, essay_id=essay_id)
            if stored is None:
                raise EssayNotFound(str(essay_id))
            last = await documents.last_revision(session, essay_id=essay_id)
            log_bytes = await documents.log_bytes(session, essay_id=essay_id)
            items = await feedback_repo.load(session, essay_id=essay_id)
            prompt = await feedback_repo.assignment_prompt(session, essay=stored.essay)
        row = stored.essay
        doc = EssayDoc.from_state(row.doc_state, (r.data for r in stored.log))
        seq = stored.log[-1].seq if stored.log else row.log_watermark
        essay = LiveEssay.loaded(
            meta=EssayMeta(row.id, row.owner_id, row.class_id, row.title), doc=doc, seq=seq,
            watermark=row.log_watermark, typing_seconds=float(row.typing_seconds), last_active_at=row.updated_at,
            log_bytes=log_bytes, revision_seq=last.seq if last else None, items=items, assignment_prompt=prompt,
            now=self.clock())
        log.info("essay loaded", extra={"essay_id": str(essay_id), "seq": seq, "replayed": len(stored.log)})
        return essay

    # --- changes --------------------------------------------------------------------------

    async def apply_update(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None,
                           origin: str, live: bool = True, node: str | None = None) -> int:
        """Apply, log and broadcast one client update; returns once it is durable (the ack point).

        `live` is False for a reconnecting client's sync step 2, which carries everything typed
        offline at once and so must not count as a paste. `node` is the bus node of a caller that
        delivers the update to its own sockets itself: the bus copy skips it. Returns the essay's
        seq after the update (unchanged for duplicates, which need no log row).
        """
        essay = await self.open(essay_id)
        now = self.clock()
        if essay.log_bytes + len(update) > self.config.max_log_bytes and essay.doc.would_change(update):
            raise UpdateTooLarge(f"the essay's edit history is over its {self.config.max_log_bytes} byte budget")
        try:
            # Apply and seq assignment run without an await in between: per-essay order is the
            # event loop's order, so no two updates can take the same seq.
            effect = essay.apply(update, now=now, wall=self.wallclock(),
                                 large_paste_chars=self.config.large_paste_chars if live else 2**62,
                                 max_chars=self.config.max_essay_chars)
        except TextTooLong as exc:
            raise UpdateTooLarge(str(exc)) from exc
        except InvalidUpdate as exc:
            raise UpdateRejected(str(exc)) from exc
        if not effect.needs_persist:
            # Nothing new, but the client may take this ack to cover earlier updates too: it must
            # not come before they are durable (a reconnect's step 2 can be all duplicates).
            await essay.durable()
            return essay.seq
        seq = essay.seq
        commit = self.committer.submit({
            "essay_id": essay_id, "lease": essay.lease, "seq": seq, "data": bytes(update), "author_id": author_id,
            "inserted_chars": effect.inserted_chars, "deleted_chars": effect.deleted_chars,
            "created_at": self.wallclock(),
        })
        essay.logging(commit)
        traced = tracing.enabled and tracing.recording()  # within a sampled update's trace
        if traced:
            await tracing.within("host.group_commit", asyncio.shield(commit), seq=seq)
        else:
            await asyncio.shield(commit)
        # The bus copy leaves after the commit; a Gateway that passed `node` has already handed
        # the update to its own sockets on receipt (see serve_app.realtime.sockets).
        if essay.others_listen(node, knows_every_socket=self.knows_every_socket):
            channel, message = f"essay:{essay_id}:doc", create_update_message(update)
            if traced:  # the message carries the publish's trace context to the sockets
                with tracing.span("bus.publish", kind="PRODUCER", channel=channel):
                    await self.bus.publish(channel, doc_message(origin, message, tracing.traceparent()),
                                           skip_node=node)
            else:
                await self.bus.publish(channel, doc_message(origin, message), skip_node=node)
        if essay.row_changed() and decisions.row_due(essay, now, self.config):
            await self.events.publish_row(essay, now)
        if effect.changed and self.scheduler is not None:
            # Typing never waits on analysis: the scheduler runs it once the student pauses.
            self.scheduler.typed(essay)
        return seq

    async def would_change(self, essay_id: uuid.UUID, update: bytes) -> bool:
        """Whether `update` carries anything the essay lacks (tried on a scratch copy).

        A read-only client's sync step 2 always repeats the delete set it has seen; only real
        news from a reader is refused.
        """
        essay = await self.open(essay_id)
        return essay.doc.would_change(update)

    async def set_text(self, essay_id: uuid.UUID, text: str, *, author_id: uuid.UUID | None) -> int:
        """Replace the whole text (REST writes) as one ordinary CRDT update."""
        essay = await self.open(essay_id)
        update = replace_text_update(essay.doc, text)
        seq = await self.apply_update(essay_id, update, author_id=author_id, origin="rest", live=False)
        await self.compactor.compact(essay, force_revision=False)
        return seq

    async def sync(self, essay_id: uuid.UUID, state_vector: bytes) -> tuple[bytes, bytes]:
        """Sync step 1 answer: (the update the peer is missing, our state vector for step 1)."""
        essay = await self.open(essay_id)
        return essay.doc.diff(state_vector), essay.doc.state_vector()

    def room(self, essay_id: uuid.UUID) -> tuple[int, int] | None:
        """What the essay can still take before `apply_update` refuses it as too large:
        (characters under `max_essay_chars`, update-log bytes under `max_log_bytes`), or None
        when it is not loaded here. The host stream tells it with each ack, so a Gateway hands
        typing to its watchers on receipt only while it surely fits (`serve_app.realtime.receipt`)."""
        essay = self.essays.get(essay_id)
        if essay is None:
            return None
        return (max(0, self.config.max_essay_chars - essay.doc.length_at_most()),
                max(0, self.config.max_log_bytes - essay.log_bytes))

    async def read(self, essay_id: uuid.UUID) -> dict[str, Any] | None:
        """Live text, word count and seq of a loaded essay; None when it is not loaded here."""
        essay = self.essays.get(essay_id)
        if essay is None:
            return None
        return {"text": essay.doc.text, "word_count": essay.doc.word_count, "seq": essay.seq}

    async def current(self, essay_id: uuid.UUID) -> dict[str, Any]:
        """Like `read`, loading the essay first (snapshot + log replay) if it is not loaded."""
        await self.open(essay_id)
        data = await self.read(essay_id)
        assert data is not None
        return data

    async def drop(self, essay_id: uuid.UUID) -> None:
        """The essay is being deleted: refuse it from now on (until `release`: every later
        update, sync or load gets `EssayNotFound`), forget it without writing it back, and close
        its sockets (DELETED on its channels: 4404)."""
        self._deleted.add(essay_id)
        essay = self.essays.get(essay_id)
        if essay is not None:
            with contextlib.suppress(Exception):  # a refused row changes nothing: it is being deleted
                await essay.durable()  # its in-flight rows land before the essay row goes
            self._evict(essay)
        for channel in (f"essay:{essay_id}:doc", f"essay:{essay_id}"):
            await self.bus.publish(channel, DELETED)

    async def release(self, essay_id: uuid.UUID) -> None:
        """The deletion `drop` announced is over: its row is gone (a load finds nothing), or
        removing it failed and the essay may be used again."""
        self._deleted.discard(essay_id)

    # --- leases ---------------------------------------------------------------------------

    async def hand_over(self, essay_id: uuid.UUID) -> None:
        """Another host is to load the essay: unload it here once everything applied is durable
        (its snapshot stored), give up its lease (this host's, or an earlier process's of the same
        name), and close its sockets (MOVED: 1013) so they reconnect to the host routing now names.
        Loads of it here wait until this is done."""
        lock = self._loading.setdefault(essay_id, asyncio.Lock())
        try:
            async with lock:
                essay = self.essays.get(essay_id)
                if essay is not None:
                    self._evict(essay)  # updates from now on wait for the lock, then load it anew
                    try:
                        await essay.durable()
                        await self.compactor.compact(essay, force_revision=False)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # the log holds everything acknowledged: the next host replays it
                        log.warning("hand-over: storing the snapshot failed", exc_info=True,
                                    extra={"essay_id": str(essay_id)})
                await self.leases.release_named(essay_id)
                self._handed_over[essay_id] = self.clock() + HAND_OVER_GRACE_SECONDS
        finally:
            if self._loading.get(essay_id) is lock:
                del self._loading[essay_id]
        if essay is not None:
            log.info("essay handed over", extra={"essay_id": str(essay_id)})
            self._moved_counter.labels(self.leases.holder.name, "handed_over").inc()
            await self._moved(essay_id)

    async def _lost(self, essay: LiveEssay) -> None:
        """Another host took the essay's lease (this one stalled past its expiry, or could not
        renew it): its writes were refused; unload it and close its sockets."""
        if self._drop_lost(essay):
            await self._moved(essay.essay_id)

    def _drop_lost(self, essay: LiveEssay) -> bool:
        """Unload an essay whose lease was lost; False when a newer copy (a newer lease) is loaded."""
        current = self.essays.get(essay.essay_id)
        if current is not None and current is not essay:
            return False
        log.warning("essay lease lost: unloaded", extra={"essay_id": str(essay.essay_id)})
        self._moved_counter.labels(self.leases.holder.name, "lease_lost").inc()
        if current is not None:
            self._evict(essay)
        return True

    async def _moved(self, essay_id: uuid.UUID) -> None:
        for channel in (f"essay:{essay_id}:doc", f"essay:{essay_id}"):
            await self.bus.publish(channel, MOVED)

    async def _renew_leases(self, now: float) -> None:
        """Every third of the lease: extend the leases of the loaded essays, unload those lost."""
        if now - self._renewed_at < self.config.lease_seconds / 3:
            return
        self._renewed_at = now
        self._handed_over = {e: until for e, until in self._handed_over.items() if until > now}
        essays = list(self.essays.values())
        try:
            lost = await self.leases.renew({e.essay_id: e.lease for e in essays})
        except asyncio.CancelledError:
            raise
        except Exception:  # the store is away: the next tick tries again (writes are fenced meanwhile)
            log.warning("renewing leases failed", exc_info=True)
            self._renewed_at = now - self.config.lease_seconds / 3 + self.config.tick_seconds * 4
            return
        for essay in essays:
            if essay.essay_id in lost:
                await self._lost(essay)

    # --- feedback -------------------------------------------------------------------------

    def _scheduler(self) -> FeedbackScheduler:
        if self.scheduler is None:
            raise RuntimeError("this host has no analyzer")
        return self.scheduler

    async def analyze_now(self, essay_id: uuid.UUID) -> dict[str, Any]:
        """On demand: the whole essay, structure included, with the LLM when one is configured."""
        essay = await self.open(essay_id)
        await self._scheduler().analyze_now(essay)
        return await essay.feedback()

    async def score_now(self, essay_id: uuid.UUID, rubric: dict[str, Any]) -> list[dict[str, Any]]:
        """On-demand rubric scores for the current text (the LLM proposes; local rules estimate)."""
        essay = await self.open(essay_id)
        return await self._scheduler().score(essay, rubric)

    async def feedback(self, essay_id: uuid.UUID) -> dict[str, Any]:
        """The current feedback set, offsets resolved against the current text."""
        return await (await self.open(essay_id)).feedback()

    # --- sockets and dashboards -------------------------------------------------------------

    async def student_rows(self, class_id: uuid.UUID) -> list[dict[str, Any]]:
        """Dashboard rows of this class's essays loaded here (the rest come from the store)."""
        return [e.status_row() for e in self.essays.values() if e.meta.class_id == class_id]

    async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]:
        """Owners of this class's essays that have an open socket on this host."""
        return {e.meta.owner_id for e in self.essays.values()
                if e.meta.class_id == class_id and e.connections > 0}

    async def attach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        """A document socket opened on bus node `node` (before its first sync)."""
        (await self.open(essay_id)).attach(node)

    async def detach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        essay = self.essays.get(essay_id)
        if essay is not None:
            essay.detach(node, now=self.clock())

    async def watch(self, channel: str, delta: int) -> None:
        """A JSON socket (events: `essay:{id}`, dashboard: `class:{id}`) opened (+1) or closed (-1).

        It registers before it reads its opening state, so whatever is published after that
        reaches it. Every host hears of every dashboard (`EssayHosts.watch_class`); an essay's events socket
        only its host.
        """
        self.events.watch(channel, delta)

    @property
    def watchers(self) -> dict[str, int]:
        """JSON channel -> sockets watching it (see `watch`)."""
        return self.events.watchers

    # --- anchors --------------------------------------------------------------------------

    async def anchor_for(self, essay_id: uuid.UUID, start: int, end: int) -> dict[str, Any]:
        """An edit-surviving anchor for [start, end) of the current text, with its quote.

        Raises ValueError when the range is outside the text.
        """
        essay = await self.open(essay_id)
        text, seq = essay.doc.text, essay.seq
        if not 0 <= start <= end <= len(text):
            raise ValueError(f"range [{start}, {end}) outside text of length {len(text)}")
        [anchor] = await essay.encode_anchors([(start, end)])
        return {"anchor": anchor, "quote": text[start:end], "doc_seq": seq}

    async def resolve(self, essay_id: uuid.UUID, anchors: list[str | None]) -> list[tuple[int, int] | None]:
        """Current offsets of each anchor (None: deleted, missing or unreadable)."""
        essay = await self.open(essay_id)
        return (await essay.resolve_anchors(anchors))[2]

    # --- events ---------------------------------------------------------------------------

    async def publish_event(self, essay_id: uuid.UUID, type_: str, **payload: Any) -> None:
        """Number and keep an event of the essay (for `resume`); on the bus while watched."""
        await self.events.publish(await self.open(essay_id), type_, **payload)

    async def event_state(self, essay_id: uuid.UUID) -> dict[str, Any]:
        """Where the essay's event stream stands (sent on connect and with `resync`)."""
        essay = await self.open(essay_id)
        return {"seq": essay.events.seq, "epoch": essay.events.epoch, "doc_seq": essay.seq,
                "word_count": essay.doc.word_count, "connections": essay.connections}

    async def events_after(self, essay_id: uuid.UUID, last_seq: int, epoch: str | None) -> list[str] | None:
        return (await self.open(essay_id)).events_after(last_seq, epoch)

    # --- store ----------------------------------------------------------------------------

    async def revision(self, essay_id: uuid.UUID, *, reason: str) -> int:
        """Freeze a revision now (submit); returns its number."""
        essay = await self.open(essay_id)
        n = await self.compactor.compact(essay, force_revision=True, reason=reason)
        assert n is not None
        return n

    async def tick(self) -> None:
        """Publish dashboard rows, store quiet or busy essays (together, `COMPACT_BATCH` per
        transaction) and unload idle ones, as `actors.decisions` says; one essay's failure stays
        its own."""
        cfg = self.config
        now = self.clock()
        due: list[LiveEssay] = []
        idle: list[LiveEssay] = []
        published = 0
        for essay in list(self.essays.values()):
            if decisions.at_rest(essay):
                continue  # most essays, most ticks: nothing to store, publish or unload
            if decisions.row_due(essay, now, cfg):
                try:
                    await self.events.publish_row(essay, now)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    await self._failed(essay)
                published += 1
                if published % TICK_ROWS_PER_TURN == 0:
                    # Under continuous typing a quarter of all essays' rows come due each tick;
                    # building them all in one callback held every ack behind it.
                    await asyncio.sleep(0)
            if essay.lock.locked():
                continue  # a revision or an on-demand analysis holds it: the next tick comes back
            unload = decisions.should_unload(essay, now, cfg)
            if unload or decisions.compaction_due(essay, now, cfg):
                due.append(essay)
            if unload:
                idle.append(essay)
        await self.compactor.compact_all(due)
        unloaded: dict[uuid.UUID, int] = {}
        for essay in idle:
            if decisions.can_evict(essay) and self.essays.get(essay.essay_id) is essay:
                self._evict(essay)
                unloaded[essay.essay_id] = essay.lease
                log.info("essay unloaded", extra={"essay_id": str(essay.essay_id)})
        if unloaded:
            try:
                await self.leases.release(unloaded)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("releasing leases failed; they run out", exc_info=True)
        await self._renew_leases(now)

    async def _failed(self, essay: LiveEssay) -> None:
        """A tick's step failed for `essay` (called while handling it): logged, and an essay
        deleted under us is forgotten (nothing left to store)."""
        log.exception("essay tick failed", extra={"essay_id": str(essay.essay_id)})
        if not await self._exists(essay.essay_id):
            self._evict(essay)

    def _evict(self, essay: LiveEssay) -> None:
        if self.essays.get(essay.essay_id) is essay:
            del self.essays[essay.essay_id]
            self._open_gauge.set(len(self.essays))
        if self.scheduler is not None:
            self.scheduler.forget(essay)
        essay.cancel_analysis()

    async def _exists(self, essay_id: uuid.UUID) -> bool:
        async with self.sessions() as session:
            return await essays_repo.get(session, essay_id=essay_id) is not None
