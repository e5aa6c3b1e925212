"""Compactor: stores a host's essays, snapshots, revisions and feedback sets, after their log.

A store ("compaction", after Hocuspocus' debounced store) writes the document's full state as
the essay's snapshot and moves its log watermark; when `actors.decisions.revision_due` says so
(every few minutes of activity) or a caller forces one (submit), it also freezes a numbered
revision. A feedback set that changed since the last store goes with it. What is due comes from
`actors.decisions`; this module only writes. Each transaction first fences its essays (`fence`:
whether the host still holds each one's lease under its token, `EssayLeases.fence`) and writes
nothing for the others, which go to `on_lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from actors import decisions
from actors.config import HostConfig
from actors.essay import LiveEssay
from actors.events import EventLog
from actors.metrics import metric
from db.repositories import documents
from db.repositories import feedback as feedback_repo

T = TypeVar("T")
# Essays whose snapshots one transaction stores (see `Compactor.compact_all`): enough to make a
# burst of pauses a few writes, few enough that a group commit queued behind one (SQLite has a
# single writer) waits a few ms. 16 was tens of ms per batch on a busy machine under continuous
# typing (75 ms p50, 0.5 s max in ops/loadtest/host_bench.py), and every ack waited behind it.
COMPACT_BATCH = 4

_STORE_ERRORS = metric("essaycoach_store_errors_total")

Store = Callable[..., Awaitable[Any]]  # `EssayHost._store(work, *, inline=True)`
Fence = Callable[[Any, Sequence[tuple[uuid.UUID, int]]], list[bool]]  # `EssayLeases.fence(conn, leases)`


class Compactor:
    """Writes snapshots, revisions and feedback sets through the host's `store` (one write
    transaction per call); `on_failed(essay)` handles an essay whose store failed on its own,
    `on_lost(essay)` one whose lease was lost (nothing of it written; see `fence`)."""

    def __init__(self, *, store: Store, config: HostConfig, events: EventLog, clock: Callable[[], float],
                 wallclock: Callable[[], datetime], on_failed: Callable[[LiveEssay], Awaitable[None]],
                 fence: Fence, on_lost: Callable[[LiveEssay], Awaitable[None]]) -> None:
        self.store = store
        self.fence = fence
        self.on_lost = on_lost
        self.config = config
        self.events = events
        self.clock = clock
        self.wallclock = wallclock
        self.on_failed = on_failed

    async def compact(self, essay: LiveEssay, *, force_revision: bool, reason: str = "periodic") -> int | None:
        """Snapshot the document once its updates are durable; also a revision when one is due
        or forced (its number, else None)."""
        return (await self.compact_many([essay], force_revision=force_revision, reason=reason))[0]

    async def compact_many(self, essays: list[LiveEssay], *, force_revision: bool = False,
                           reason: str = "periodic") -> list[int | None]:
        """`compact` for several essays in one transaction; each one's revision number or None.

        At 1,000 typists about as many compactions as group commits were written, each its own
        transaction queued at the write gate in front of the next commit (and every ack behind
        it); the tick now stores the essays that came due together.
        """
        async with contextlib.AsyncExitStack() as stack:
            for essay in essays:
                await stack.enter_async_context(essay.lock)
            # Their rows only (the latest commit of each covers the rest), not every essay's.
            await asyncio.gather(*(essay.durable() for essay in essays))
            now = self.clock()
            plans = [self._plan(essay, now, force_revision=force_revision, reason=reason) for essay in essays]
            feedback = [stack.enter_context(essay.dirty_feedback()) for essay in essays]
            if not any(plans) and all(f is None for f in feedback):
                return [None] * len(essays)

            lost: set[int] = set()  # indexes in `essays`

            def store(conn: Any) -> list[int | None]:
                held = self.fence(conn, [(e.essay_id, e.lease) for e in essays])
                lost.clear()  # a retried transaction fences again
                lost.update(i for i, ours in enumerate(held) if not ours)
                out: list[int | None] = []
                for essay, plan, items, ours in zip(essays, plans, feedback, held):
                    if not ours:
                        out.append(None)
                    elif plan is not None:
                        out.append(documents.store_compaction(conn, **plan, feedback=items))
                    else:
                        if items is not None:
                            feedback_repo.replace(conn, essay_id=essay.essay_id, items=items)
                        out.append(None)
                return out

            # A batch of snapshots is tens of ms of statements on a busy machine: in the writer's
            # thread, not on the loop that applies and acks every essay's typing.
            try:
                revisions: list[int | None] = await self.store(store, inline=False)
            except Exception:
                # "compaction": snapshots (and revisions, feedback with them); "feedback": sets alone.
                _STORE_ERRORS.labels("compaction" if any(plans) else "feedback").inc()
                raise
            for i in sorted(lost):
                await self.on_lost(essays[i])
            for i, (essay, plan) in enumerate(zip(essays, plans)):
                if plan is None or i in lost:
                    continue
                if essay.stored(plan["seq"], revision=plan["revision_reason"] is not None, now=now):
                    await self.events.publish(essay, "saved", word_count=plan["word_count"])
            return revisions

    def _plan(self, essay: LiveEssay, now: float, *, force_revision: bool, reason: str) -> dict[str, Any] | None:
        """The snapshot row to write (None: the snapshot is current and no revision is due; only
        the feedback set may be)."""
        revision = force_revision or decisions.revision_due(essay, now, self.config)
        if not decisions.snapshot_due(essay, revision=revision):
            return None
        doc = essay.doc
        return dict(essay_id=essay.essay_id, doc_state=doc.full_state(), text=doc.text, word_count=doc.word_count,
                    seq=essay.seq, typing_seconds=int(essay.typing_seconds),
                    updated_at=essay.last_active_at or self.wallclock(),
                    revision_reason=reason if revision else None)

    async def compact_all(self, essays: list[LiveEssay]) -> None:
        """Periodic compaction of `essays`, `COMPACT_BATCH` per transaction; when a batch fails,
        its essays one by one, so one essay's failure (deleted under us) keeps no other unsaved."""
        for i in range(0, len(essays), COMPACT_BATCH):
            batch = essays[i:i + COMPACT_BATCH]
            try:
                await self.compact_many(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                for essay in batch:
                    try:
                        await self.compact(essay, force_revision=False)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        await self.on_failed(essay)
