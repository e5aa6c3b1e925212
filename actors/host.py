"""EssayHost: many EssayActors in one process, their group-committed log and their lifecycle.

A plain class (tests and single-process runs use it directly); `actors.ray_host` wraps it in a
named Ray actor. Lifecycle per essay, after Hocuspocus: load on first touch (snapshot + log
replay), change (apply, log, ack, broadcast), store (compaction into a snapshot, revisions every
few minutes of activity), unload when idle with no connections, flush everything on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pycrdt import create_update_message
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actors.broadcast import DELETED, Bus, doc_message
from actors.doc import (EssayDoc, InvalidUpdate, TextTooLong, anchors_are_cheap, encode_anchor, encode_anchors,
                        replace_text_update, resolve_anchors, resolve_anchors_live)
from actors.essay import EssayActor, EssayMeta, encode_event
from actors.analysis.items import FeedbackItem, diff_items
from actors.analysis.local import spellchecker
from actors.committer import GroupCommitter
from actors.config import HostConfig
from actors.feedback import carry_items, count_kinds, settled_text, wire_item
from db.engine import SqliteWriter
from db.repositories import documents
from db.repositories import essays as essays_repo
from db.repositories import feedback as feedback_repo
from db.types import utcnow

log = logging.getLogger("essaycoach.host")
T = TypeVar("T")
# Essays whose snapshots one transaction stores (see `EssayHost.tick`): enough to make a burst
# of pauses a few writes, few enough that a group commit queued behind one (SQLite has a single
# writer) waits a few ms. 16 was tens of ms per batch on a busy machine under continuous typing
# (75 ms p50, 0.5 s max in ops/loadtest/host_bench.py), and every ack waited behind it.
COMPACT_BATCH = 4
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


class Analyzer(Protocol):
    """What a host needs from analysis: `actors.analysis.engine.AnalysisEngine` in-process, or a
    client of the Analyzer Serve deployment."""

    @property
    def llm_enabled(self) -> bool: ...

    async def analyze_changed(self, old_text: str, new_text: str, **kwargs: Any) -> Any: ...

    async def score_rubric(self, text: str, rubric: Any, items: Any = (), **kwargs: Any) -> Any: ...


class EssayHost:
    """Hosts essays routed to it; the only writer of those essays' logs and snapshots."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], bus: Bus,
                 config: HostConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], datetime] = utcnow, analyzer: Analyzer | None = None,
                 local_analyzer: Analyzer | None = None) -> None:
        self.sessions = sessions
        self.analyzer = analyzer
        # Tier 1 (local rules) may run right here: a remote hop per pause costs more than the rules.
        self.local_analyzer = local_analyzer
        self.bus = bus
        self.config = config or HostConfig()
        self.clock = clock
        self.wallclock = wallclock
        self.essays: dict[uuid.UUID, EssayActor] = {}
        self._loading: dict[uuid.UUID, asyncio.Lock] = {}
        # Essays being deleted (`drop` until `release`): not loaded again, so an update racing
        # the row's removal cannot bring one back.
        self._deleted: set[uuid.UUID] = set()
        self.committer = GroupCommitter(self._write_log, interval=self.config.commit_interval,
                                        permanent=(IntegrityError,))
        self._ticker: asyncio.Task[None] | None = None
        # Essays typed in since their last tier-1 run, for `_tier1_loop` (one loop for the host,
        # not a sleeping task per essay: ~1.7 KiB each and a timer every 0.25 s while typing).
        self._to_analyze: dict[uuid.UUID, EssayActor] = {}
        self._tier1: asyncio.Task[None] | None = None
        self._write_gate = asyncio.Lock()
        self._writer = SqliteWriter.for_sessions(sessions, commit_in_thread=self.config.sqlite_commit_in_thread)
        bind = sessions.kw.get("bind")
        self._single_writer = bind is None or bind.dialect.name == "sqlite"
        # False in a host process that replaced a crashed one (see `_others_listen`): it then
        # publishes everything, as it cannot know which sockets opened before the crash.
        self.knows_every_socket = True
        self.watchers: dict[str, int] = {}  # JSON channel -> sockets watching it (see `watch`)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # Tier 1's spelling dictionary loads on first use (~1 s of CPU, ~57 MiB: SCOWL words and
        # the SymSpell index): load it now, off the event loop, instead of stalling every essay's
        # acks at the first pause.
        await asyncio.to_thread(spellchecker)
        self.committer.start()
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_loop(), name="host-tick")
        if self._tier1 is None and self.analyzer is not None:
            self._tier1 = asyncio.create_task(self._tier1_loop(), name="host-tier1")

    async def stop(self) -> None:
        """Flush every essay: log, then snapshot. Called on graceful shutdown."""
        for task in (self._ticker, self._tier1):
            if task is not None:
                task.cancel()
        self._ticker = self._tier1 = None
        for actor in self.essays.values():
            if actor.analysis_task is not None:
                actor.analysis_task.cancel()
        await self.committer.flush()
        await self._compact_all(list(self.essays.values()))
        await self.committer.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

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
        elsewhere through the async session (`run_sync`)."""
        if self._writer is not None:
            async with self._write_gate:
                return await self._writer.run(work, inline=inline)
        async with self._writing() as session:
            return await session.run_sync(work)

    async def _write_log(self, rows: list[dict[str, Any]]) -> None:
        await self._store(lambda conn: documents.append_updates(conn, rows=rows))

    async def open(self, essay_id: uuid.UUID) -> EssayActor:
        """The essay's actor, loading it from the store on first touch."""
        actor = self.essays.get(essay_id)
        if actor is not None:
            return actor
        if essay_id in self._deleted:
            raise EssayNotFound(str(essay_id))
        lock = self._loading.setdefault(essay_id, asyncio.Lock())
        try:
            async with lock:
                actor = self.essays.get(essay_id)
                if actor is None:
                    actor = await self._load(essay_id)
                    if essay_id in self._deleted:  # deleted while it loaded
                        raise EssayNotFound(str(essay_id))
                    self.essays[essay_id] = actor
        finally:
            self._loading.pop(essay_id, None)
        return actor

    async def _load(self, essay_id: uuid.UUID) -> EssayActor:
        async with self.sessions() as session:
            stored = await documents.load(session, essay_id=essay_id)
            if stored is None:
                raise EssayNotFound(str(essay_id))
            last = await documents.last_revision(session, essay_id=essay_id)
            log_bytes = await documents.log_bytes(session, essay_id=essay_id)
            items = await feedback_repo.load(session, essay_id=essay_id)
            prompt = await feedback_repo.assignment_prompt(session, essay=stored.essay)
        essay = stored.essay
        doc = EssayDoc.from_state(essay.doc_state, (row.data for row in stored.log))
        seq = stored.log[-1].seq if stored.log else essay.log_watermark
        actor = EssayActor(
            meta=EssayMeta(essay.id, essay.owner_id, essay.class_id, essay.title),
            doc=doc, seq=seq, watermark=essay.log_watermark, typing_seconds=float(essay.typing_seconds),
            last_active_at=essay.updated_at, idle_since=self.clock(),
            revision_seq=last.seq if last else 0, log_bytes=log_bytes,
        )
        actor.last_revision_at = self.clock() if last else None
        actor.assignment_prompt = prompt
        actor.items = [FeedbackItem(**item) for item in items]
        actor.analyzed_text = doc.text if items else ""
        actor.feedback_counts = count_kinds(items)
        log.info("essay loaded", extra={"essay_id": str(essay_id), "seq": seq, "replayed": len(stored.log)})
        return actor

    # --- changes --------------------------------------------------------------------------

    async def apply_update(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None,
                           origin: str, live: bool = True, node: str | None = None) -> int:
        """Apply, log and broadcast one client update; returns once it is durable (the ack point).

        `live` is False for a reconnecting client's sync step 2, which carries everything typed
        offline at once and so must not count as a paste. `node` is the bus node of a caller that
        delivers the update to its own sockets itself: the bus copy skips it. Returns the essay's
        seq after the update (unchanged for duplicates, which need no log row).
        """
        actor = await self.open(essay_id)
        now = self.clock()
        if actor.log_bytes + len(update) > self.config.max_log_bytes and _changes(actor.doc, update):
            raise UpdateTooLarge(f"the essay's edit history is over its {self.config.max_log_bytes} byte budget")
        try:
            # Apply and seq assignment run without an await in between: per-essay order is the
            # event loop's order, so no two updates can take the same seq.
            effect = actor.apply(update, now=now, wall=self.wallclock(),
                                 large_paste_chars=self.config.large_paste_chars if live else 2**62,
                                 max_chars=self.config.max_essay_chars)
        except TextTooLong as exc:
            raise UpdateTooLarge(str(exc)) from exc
        except InvalidUpdate as exc:
            raise UpdateRejected(str(exc)) from exc
        if not effect.needs_persist:
            # Nothing new, but the client may take this ack to cover earlier updates too: it must
            # not come before they are durable (a reconnect's step 2 can be all duplicates).
            await actor.durable()
            return actor.seq
        seq = actor.seq
        actor.last_commit = self.committer.submit({
            "essay_id": essay_id, "seq": seq, "data": bytes(update), "author_id": author_id,
            "inserted_chars": effect.inserted_chars, "deleted_chars": effect.deleted_chars,
            "created_at": self.wallclock(),
        })
        await asyncio.shield(actor.last_commit)
        # The bus copy leaves after the commit; a Gateway that passed `node` has already handed
        # the update to its own sockets on receipt (see serve_app.realtime.sockets).
        if self._others_listen(actor, node):
            await self.bus.publish(f"essay:{essay_id}:doc", doc_message(origin, create_update_message(update)),
                                   skip_node=node)
        if actor.meta.class_id is not None:
            actor.class_dirty = True
            if now - actor.last_class_publish >= self.config.class_row_interval:
                await self._publish_class_row(actor, now)
        if effect.changed and self.analyzer is not None:
            # Typing never waits on analysis: `_tier1_loop` runs it once the student pauses.
            self._to_analyze[essay_id] = actor
        return seq

    # --- feedback -------------------------------------------------------------------------

    async def _sleep_until_quiet(self, actor: EssayActor, pause: float, seq: int | None = None) -> bool:
        """Wait until nothing was typed for `pause` seconds; False as soon as the text moves past
        `seq` (new typing restarts the tiers, in short steps so tier 1 is never delayed)."""
        step = self.config.local_pause_seconds
        while True:
            if seq is not None and actor.seq != seq:
                return False
            quiet_for = self.clock() - (actor.last_edit_at or 0.0)
            if quiet_for >= pause:
                return True
            await asyncio.sleep(min(pause - quiet_for, step))

    async def _tier1_loop(self) -> None:
        """Tier 1 (local rules) for each essay typed in, once the student pauses for
        `local_pause_seconds` and at most once per `local_min_interval` while typing goes on;
        then, with an LLM, `_llm_when_quiet` takes over for that text.

        One essay at a time: tier 1 runs in this process (`local_analyzer`, or `analyzer` when
        that is the local engine), a fraction of a millisecond per paragraph.
        """
        await _repeat(self.config.local_pause_seconds / 2, self._tier1_round, "tier-1 round")

    async def _tier1_round(self) -> None:
        """Tier 1 for each essay that came due since the last round."""
        cfg = self.config
        now = self.clock()
        for actor in list(self._to_analyze.values()):
            due = max((actor.last_edit_at or 0.0) + cfg.local_pause_seconds,
                      actor.last_local_run + cfg.local_min_interval)
            if now < due or self._to_analyze.get(actor.essay_id) is not actor:
                continue
            del self._to_analyze[actor.essay_id]  # typing during the run puts it back
            try:
                await self._analyze(actor, run_llm=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("analysis failed", extra={"essay_id": str(actor.essay_id)})
            else:  # a running LLM task sees the new text itself
                llm = self.analyzer is not None and self.analyzer.llm_enabled
                if llm and (actor.analysis_task is None or actor.analysis_task.done()):
                    actor.analysis_task = asyncio.create_task(self._llm_when_quiet(actor))
            await asyncio.sleep(0)  # one essay's rules at a time between other callbacks

    async def _llm_when_quiet(self, actor: EssayActor) -> None:
        """Tier 2 (LLM) after a longer pause, the paragraph still being written once it settles;
        new typing waits for the next pause (tier 1 runs meanwhile, from `_tier1_loop`)."""
        cfg = self.config
        try:
            while True:
                seq = actor.seq
                if not await self._sleep_until_quiet(actor, cfg.llm_pause_seconds, seq):
                    continue
                if self._to_analyze.get(actor.essay_id) is actor:
                    # Tier 1 goes first: it tells which paragraph is still being written.
                    await asyncio.sleep(cfg.local_pause_seconds / 2)
                    continue
                await self._analyze(actor, run_llm=True)
                if actor.active_paragraphs and actor.seq == seq:
                    if not await self._sleep_until_quiet(actor, cfg.llm_settle_seconds, seq):
                        continue
                    await self._analyze(actor, run_llm=True)
                if actor.seq == seq:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("analysis failed", extra={"essay_id": str(actor.essay_id)})

    async def _analyze(self, actor: EssayActor, *, run_llm: bool, force: bool = False) -> bool:
        """One analysis run; False (result dropped) when newer typing made it stale."""
        assert self.analyzer is not None
        seq, text = actor.seq, settled_text(actor.doc.text)
        if text == actor.analyzed_text and not run_llm and not force:
            return True  # only the word still being typed changed: nothing new to check
        settled = force or self.clock() - (actor.last_edit_at or 0.0) >= self.config.llm_settle_seconds
        hold = frozenset() if settled else frozenset(actor.active_paragraphs)
        engine = self.analyzer if run_llm or self.local_analyzer is None else self.local_analyzer
        if not run_llm:
            actor.last_local_run = self.clock()
        result = await engine.analyze_changed(
            actor.analyzed_text, text, essay_id=str(actor.essay_id),
            class_id=str(actor.meta.class_id) if actor.meta.class_id else None,
            assignment_prompt=actor.assignment_prompt, run_llm=run_llm, previous_items=actor.items or None,
            llm_hold=hold, force_structure=force)
        if actor.seq != seq:
            return False  # offsets describe text that no longer exists; the next run reuses the cache
        new_items = list(result.items)
        if engine is self.local_analyzer and self.analyzer is not None and self.analyzer.llm_enabled:
            # The local engine knows nothing of the LLM's findings: keep those of unchanged paragraphs.
            llm_items = [i for i in actor.items if i.source == "llm"]
            new_items += carry_items(llm_items, actor.analyzed_text, text)
            new_items.sort(key=lambda i: (i.start, i.end, i.id))
        if result.changed:
            actor.active_paragraphs = {p.hash for p in result.changed}
        elif settled:
            actor.active_paragraphs = set()
        # Anchors are made now, against exactly the text the offsets were computed on. An item
        # whose id is unchanged sits in an unchanged paragraph: its anchor is still good.
        known = {item.id: item.anchor for item in actor.items if item.anchor}
        fresh = [item for item in new_items if not known.get(item.id)]
        made = dict(zip((item.id for item in fresh),
                        await self._encode_anchors(actor, [(item.start, item.end) for item in fresh])))
        if actor.seq != seq:
            return False  # typed while the anchors were made off the loop
        items = [item.replace(anchor=known.get(item.id) or made[item.id]) for item in new_items]
        changed, removed = diff_items(actor.items, items)
        actor.items, actor.analyzed_text = items, text
        actor.feedback_counts = count_kinds(items)
        if changed or removed:
            actor.feedback_dirty = True  # stored with the next snapshot; the host serves it until then
            # Numbered before any await: a resume's full set (the current items) must carry the
            # seq and doc_seq of the diff that made them current.
            await self.publish_event(actor.essay_id, "feedback", items=[wire_item(i) for i in changed],
                                     removed=removed, counts=actor.feedback_counts)
            if actor.meta.class_id is not None:
                actor.class_dirty = True
        if result.usage.total_tokens:
            async with self._writing() as session:
                await feedback_repo.record_usage(
                    session, essay_id=actor.essay_id, class_id=actor.meta.class_id, provider="llm",
                    model="", user_id=actor.meta.owner_id, prompt_tokens=result.usage.prompt_tokens,
                    completion_tokens=result.usage.completion_tokens)
        return True

    async def analyze_now(self, essay_id: uuid.UUID) -> dict[str, Any]:
        """On demand: the whole essay, structure included, with the LLM when one is configured."""
        actor = await self.open(essay_id)
        if self.analyzer is None:
            raise RuntimeError("this host has no analyzer")
        async with actor.lock:  # one on-demand run at a time per essay
            for _attempt in range(3):  # typing can make a run stale; the next reuses the cache
                if await self._analyze(actor, run_llm=self.analyzer.llm_enabled, force=True):
                    break
        return await self.feedback(essay_id)

    async def score_now(self, essay_id: uuid.UUID, rubric: dict[str, Any]) -> list[dict[str, Any]]:
        """On-demand rubric scores for the current text (the LLM proposes; local rules estimate)."""
        actor = await self.open(essay_id)
        if self.analyzer is None:
            raise RuntimeError("this host has no analyzer")
        scores, _usage = await self.analyzer.score_rubric(
            actor.doc.text, rubric, actor.items, essay_id=str(essay_id),
            class_id=str(actor.meta.class_id) if actor.meta.class_id else None)
        return [score.model_dump() for score in scores]

    async def feedback(self, essay_id: uuid.UUID) -> dict[str, Any]:
        """The current feedback set, offsets resolved against the current text."""
        actor = await self.open(essay_id)
        items, analyzed_text = actor.items, actor.analyzed_text
        text, seq, spans = await self._resolve_anchors(actor, [item.anchor for item in items])
        out = []
        for item, span in zip(items, spans):
            if not item.anchor:
                span = (item.start, item.end)
            if span is None:
                continue  # the text it was about is gone
            data = wire_item(item)
            data.update(start=span[0], end=span[1], quote=text[span[0]:span[1]])
            out.append(data)
        return {"items": out, "doc_seq": seq, "analyzed": analyzed_text == settled_text(text)}

    async def _publish_class_row(self, actor: EssayActor, now: float) -> None:
        """The teacher dashboard row, coalesced to about one per second per essay."""
        actor.class_dirty = False
        actor.last_class_publish = now
        channel = f"class:{actor.meta.class_id}"
        if self._watched(channel):  # nobody's dashboard is open: the row is built when one opens
            await self.bus.publish(channel, json.dumps(actor.status_row()).encode())

    async def student_rows(self, class_id: uuid.UUID) -> list[dict[str, Any]]:
        """Dashboard rows of this class's essays loaded here (the rest come from the store)."""
        return [a.status_row() for a in self.essays.values() if a.meta.class_id == class_id]

    async def would_change(self, essay_id: uuid.UUID, update: bytes) -> bool:
        """Whether `update` carries anything the essay lacks (tried on a scratch copy).

        A read-only client's sync step 2 always repeats the delete set it has seen; only real
        news from a reader is refused.
        """
        actor = await self.open(essay_id)
        return _changes(actor.doc, update)

    async def set_text(self, essay_id: uuid.UUID, text: str, *, author_id: uuid.UUID | None) -> int:
        """Replace the whole text (REST writes) as one ordinary CRDT update."""
        actor = await self.open(essay_id)
        update = replace_text_update(actor.doc, text)
        seq = await self.apply_update(essay_id, update, author_id=author_id, origin="rest", live=False)
        await self._compact(actor, force_revision=False)
        return seq

    async def sync(self, essay_id: uuid.UUID, state_vector: bytes) -> tuple[bytes, bytes]:
        """Sync step 1 answer: (the update the peer is missing, our state vector for step 1)."""
        actor = await self.open(essay_id)
        return actor.doc.diff(state_vector), actor.doc.state_vector()

    async def read(self, essay_id: uuid.UUID) -> dict[str, Any] | None:
        """Live text, word count and seq of a loaded essay; None when it is not loaded here."""
        actor = self.essays.get(essay_id)
        if actor is None:
            return None
        return {"text": actor.doc.text, "word_count": actor.doc.word_count, "seq": actor.seq}

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
        actor = self.essays.get(essay_id)
        if actor is not None:
            with contextlib.suppress(Exception):  # a refused row changes nothing: it is being deleted
                await actor.durable()  # its in-flight rows land before the essay row goes
            self._evict(actor)
        for channel in (f"essay:{essay_id}:doc", f"essay:{essay_id}"):
            await self.bus.publish(channel, DELETED)

    async def release(self, essay_id: uuid.UUID) -> None:
        """The deletion `drop` announced is over: its row is gone (a load finds nothing), or
        removing it failed and the essay may be used again."""
        self._deleted.discard(essay_id)

    async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]:
        """Owners of this class's essays that have an open socket on this host."""
        return {a.meta.owner_id for a in self.essays.values()
                if a.meta.class_id == class_id and a.connections > 0}

    async def attach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        """A document socket opened on bus node `node` (before its first sync)."""
        actor = await self.open(essay_id)
        actor.connections += 1
        if node is not None:
            _count(actor.socket_nodes, node, 1)

    async def detach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        actor = self.essays.get(essay_id)
        if actor is not None:
            actor.connections = max(0, actor.connections - 1)
            actor.idle_since = self.clock()
            if node is not None:
                _count(actor.socket_nodes, node, -1)

    def _others_listen(self, actor: EssayActor, node: str | None) -> bool:
        """Whether a document socket outside `node` may need this essay's updates from the bus.

        Sockets attach before their first sync, so an update applied after that reaches them
        here and one applied before is in their sync answer. A restarted host never saw the
        attaches of sockets opened before its crash: it always publishes.
        """
        if node is None or not self.knows_every_socket:
            return True
        return any(n != node for n in actor.socket_nodes)

    # --- anchors --------------------------------------------------------------------------

    async def anchor_for(self, essay_id: uuid.UUID, start: int, end: int) -> dict[str, Any]:
        """An edit-surviving anchor for [start, end) of the current text, with its quote.

        Raises ValueError when the range is outside the text.
        """
        actor = await self.open(essay_id)
        text, seq = actor.doc.text, actor.seq
        if not 0 <= start <= end <= len(text):
            raise ValueError(f"range [{start}, {end}) outside text of length {len(text)}")
        [anchor] = await self._encode_anchors(actor, [(start, end)])
        return {"anchor": anchor, "quote": text[start:end], "doc_seq": seq}

    async def resolve(self, essay_id: uuid.UUID, anchors: list[str | None]) -> list[tuple[int, int] | None]:
        """Current offsets of each anchor (None: deleted, missing or unreadable)."""
        actor = await self.open(essay_id)
        return (await self._resolve_anchors(actor, anchors))[2]

    async def _encode_anchors(self, actor: EssayActor, ranges: list[tuple[int, int]]) -> list[str]:
        """Anchors for ranges of the current text: on the loop when that is cheap (ASCII, short,
        or the view is built), else on a worker thread from plain data (pycrdt objects stay on
        their thread); the caller checks `actor.seq` afterwards if the text may have moved."""
        doc = actor.doc
        if not ranges:
            return []
        if anchors_are_cheap(doc):
            return [encode_anchor(doc, start, end) for start, end in ranges]
        return await asyncio.to_thread(encode_anchors, doc.text, doc.full_state(), ranges)

    async def _resolve_anchors(self, actor: EssayActor, anchors: list[str | None]
                               ) -> tuple[str, int, list[tuple[int, int] | None]]:
        """(text, seq, spans): each anchor resolved against that text version (None: deleted,
        missing or unreadable), off the loop like `_encode_anchors` when that is not cheap."""
        doc = actor.doc
        text, seq = doc.text, actor.seq
        if not any(anchors):
            return text, seq, [None] * len(anchors)
        if anchors_are_cheap(doc):
            return text, seq, resolve_anchors_live(doc, anchors)
        return text, seq, await asyncio.to_thread(resolve_anchors, text, doc.full_state(), anchors)

    # --- events ---------------------------------------------------------------------------

    async def publish_event(self, essay_id: uuid.UUID, type_: str, **payload: Any) -> None:
        actor = await self.open(essay_id)
        await self._publish_event(actor, actor.next_event(type_, **payload))

    async def _publish_event(self, actor: EssayActor, event: dict[str, Any]) -> None:
        """On the bus when an events socket watches (encoded only then); always kept for `resume`."""
        channel = f"essay:{actor.essay_id}"
        if self._watched(channel):
            await self.bus.publish(channel, encode_event(event).encode())

    async def watch(self, channel: str, delta: int) -> None:
        """A JSON socket (events: `essay:{id}`, dashboard: `class:{id}`) opened (+1) or closed (-1).

        It registers before it reads its opening state, so whatever is published after that
        reaches it. Every host hears of every dashboard (`EssayHosts.watch_class`); an essay's events socket
        only its host.
        """
        _count(self.watchers, channel, delta)

    def _watched(self, channel: str) -> bool:
        return not self.knows_every_socket or channel in self.watchers

    async def event_state(self, essay_id: uuid.UUID) -> dict[str, Any]:
        """Where the essay's event stream stands (sent on connect and with `resync`)."""
        actor = await self.open(essay_id)
        return {"seq": actor.event_seq, "epoch": actor.epoch, "doc_seq": actor.seq,
                "word_count": actor.doc.word_count, "connections": actor.connections}

    async def events_after(self, essay_id: uuid.UUID, last_seq: int, epoch: str | None) -> list[str] | None:
        actor = await self.open(essay_id)
        return actor.events_after(last_seq, epoch, lambda: {
            "items": [wire_item(i) for i in actor.items], "removed": [], "counts": actor.feedback_counts,
            "full": True})

    # --- store ----------------------------------------------------------------------------

    async def _compact(self, actor: EssayActor, *, force_revision: bool, reason: str = "periodic") -> int | None:
        """Snapshot the document once its updates are durable; also a revision when one is due."""
        return (await self._compact_many([actor], force_revision=force_revision, reason=reason))[0]

    async def _compact_many(self, actors: list[EssayActor], *, force_revision: bool = False,
                            reason: str = "periodic") -> list[int | None]:
        """`_compact` for several essays in one transaction; each one's revision number or None.

        At 1,000 typists about as many compactions as group commits were written, each its own
        transaction queued at the write gate in front of the next commit (and every ack behind
        it); the tick now stores the essays that came due together.
        """
        async with contextlib.AsyncExitStack() as stack:
            for actor in actors:
                await stack.enter_async_context(actor.lock)
            # Their rows only (the latest commit of each covers the rest), not every essay's.
            await asyncio.gather(*(actor.durable() for actor in actors))
            now = self.clock()
            plans: list[dict[str, Any] | None] = []
            for actor in actors:
                seq = actor.seq
                revision_due = force_revision or (
                    seq > actor.revision_seq and (actor.last_revision_at is None
                                                  or now - actor.last_revision_at >= self.config.revision_every_seconds))
                if seq <= actor.watermark and not revision_due:
                    plans.append(None)  # the snapshot is current; only the feedback may be due
                    continue
                plans.append(dict(
                    essay_id=actor.essay_id, doc_state=actor.doc.full_state(), text=actor.doc.text,
                    word_count=actor.doc.word_count, seq=seq, typing_seconds=int(actor.typing_seconds),
                    updated_at=actor.last_active_at or self.wallclock(),
                    revision_reason=reason if revision_due else None))
            feedback = [stack.enter_context(_dirty_feedback(actor)) for actor in actors]
            if not any(plans) and all(f is None for f in feedback):
                return [None] * len(actors)

            def store(conn: Any) -> list[int | None]:
                out: list[int | None] = []
                for actor, plan, items in zip(actors, plans, feedback):
                    if plan is not None:
                        out.append(documents.store_compaction(conn, **plan, feedback=items))
                    else:
                        if items is not None:
                            feedback_repo.replace(conn, essay_id=actor.essay_id, items=items)
                        out.append(None)
                return out

            # A batch of snapshots is tens of ms of statements on a busy machine: in the writer's
            # thread, not on the loop that applies and acks every essay's typing.
            revisions = await self._store(store, inline=False)
            for actor, plan in zip(actors, plans):
                if plan is None:
                    continue
                saved = plan["seq"] > actor.watermark
                actor.watermark = plan["seq"]
                if saved:
                    await self._publish_event(actor, actor.next_event("saved", word_count=plan["word_count"]))
                if plan["revision_reason"] is not None:
                    actor.revision_seq, actor.last_revision_at = plan["seq"], now
            return revisions

    async def revision(self, essay_id: uuid.UUID, *, reason: str) -> int:
        """Freeze a revision now (submit); returns its number."""
        actor = await self.open(essay_id)
        n = await self._compact(actor, force_revision=True, reason=reason)
        assert n is not None
        return n

    async def _tick_loop(self) -> None:
        await _repeat(self.config.tick_seconds, self.tick, "host tick")

    async def tick(self) -> None:
        """Publish dashboard rows, compact quiet or busy essays (together, `COMPACT_BATCH` per
        transaction) and unload idle ones; one essay's failure stays its own."""
        cfg = self.config
        now = self.clock()
        due: list[EssayActor] = []
        idle: list[EssayActor] = []
        published = 0
        for actor in list(self.essays.values()):
            if self._at_rest(actor):
                continue  # most essays, most ticks: nothing to store, publish or unload
            if actor.class_dirty and now - actor.last_class_publish >= cfg.class_row_interval:
                await self._each([actor], self._publish_class_row, now)
                published += 1
                if published % TICK_ROWS_PER_TURN == 0:
                    # Under continuous typing a quarter of all essays' rows come due each tick;
                    # building them all in one callback held every ack behind it.
                    await asyncio.sleep(0)
            if actor.lock.locked():
                continue  # a revision or an on-demand analysis holds it: the next tick comes back
            unload = actor.connections == 0 and now - max(actor.idle_since, actor.last_edit_at or 0.0) >= cfg.unload_idle_seconds
            if unload or actor.needs_compaction(now=now, every=cfg.compact_every, idle=cfg.compact_idle_seconds):
                due.append(actor)
            if unload:
                idle.append(actor)
        await self._compact_all(due)
        for actor in idle:
            if actor.connections == 0 and actor.seq == actor.watermark:
                self._evict(actor)
                log.info("essay unloaded", extra={"essay_id": str(actor.essay_id)})

    async def _compact_all(self, actors: list[EssayActor]) -> None:
        """Periodic compaction of `actors`, `COMPACT_BATCH` per transaction; when a batch fails,
        its essays one by one, so one essay's failure (deleted under us) keeps no other unsaved."""
        for i in range(0, len(actors), COMPACT_BATCH):
            batch = actors[i:i + COMPACT_BATCH]
            try:
                await self._compact_many(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                await self._each(batch, self._compact, force_revision=False)

    async def _each(self, actors: list[EssayActor], step: Callable[..., Awaitable[Any]], *args: Any,
                    **kwargs: Any) -> None:
        """`step(actor, ...)` for each essay; a failure is logged, and an essay deleted under us
        is forgotten (nothing left to store)."""
        for actor in actors:
            try:
                await step(actor, *args, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("essay tick failed", extra={"essay_id": str(actor.essay_id)})
                if not await self._exists(actor.essay_id):
                    self._evict(actor)

    @staticmethod
    def _at_rest(actor: EssayActor) -> bool:
        """Nothing for `tick` to do: stored, row published, and a socket keeps it loaded."""
        return (actor.seq <= actor.watermark and not actor.feedback_dirty and not actor.class_dirty
                and actor.connections > 0)

    def _evict(self, actor: EssayActor) -> None:
        if self.essays.get(actor.essay_id) is actor:
            del self.essays[actor.essay_id]
        if self._to_analyze.get(actor.essay_id) is actor:
            del self._to_analyze[actor.essay_id]
        if actor.analysis_task is not None:
            actor.analysis_task.cancel()

    async def _exists(self, essay_id: uuid.UUID) -> bool:
        async with self.sessions() as session:
            return await essays_repo.get(session, essay_id=essay_id) is not None


def _changes(doc: EssayDoc, update: bytes) -> bool:
    """Whether `update` carries anything `doc` lacks (tried on a scratch copy; O(document), for
    the rare callers: a reader's update, an essay at its log budget). Undecodable: True."""
    scratch = EssayDoc.from_state(doc.full_state())
    try:
        return scratch.apply_update(update).needs_persist
    except InvalidUpdate:
        return True


async def _repeat(interval: float, step: Callable[[], Awaitable[None]], what: str) -> None:
    """`step()` every `interval` seconds until cancelled; a failed round is logged and the next
    one runs (the loop ending would stop every essay's compaction or feedback on the host)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{what} failed")


def _count(counts: dict[str, int], key: str, delta: int) -> None:
    """Add `delta` to `counts[key]`, dropping the key at zero (never negative)."""
    n = counts.get(key, 0) + delta
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


@contextlib.contextmanager
def _dirty_feedback(actor: EssayActor) -> Iterator[list[dict[str, Any]] | None]:
    """The feedback set a write should store (None when unchanged since the last store); it stays
    dirty, for the next tick, if that write fails."""
    items = [i.as_dict() for i in actor.items] if actor.feedback_dirty else None
    actor.feedback_dirty = False
    try:
        yield items
    except BaseException:
        actor.feedback_dirty = actor.feedback_dirty or items is not None
        raise
