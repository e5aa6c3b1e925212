"""LiveEssay: one loaded essay's in-memory state and the mutations of it. No Ray, database or network.

The host serialises calls per essay (the event loop plus `lock` for the async steps) and asks
`actors.decisions` what is due; the essay changes only through its own methods. Sequence
numbers: `seq` numbers the update log densely per essay (the document's version); the essay's
JSON events are numbered by its `events` backlog (`actors.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from actors.analysis.items import FeedbackItem, diff_items
from actors.doc import (
    EssayDoc,
    UpdateEffect,
    anchors_are_cheap,
    encode_anchor,
    encode_anchors,
    resolve_anchors,
    resolve_anchors_live,
)
from actors.events import EventBacklog, count
from actors.feedback import count_kinds, settled_text, wire_item

TYPING_GAP_SECONDS = 10.0


@dataclass(slots=True)
class EssayMeta:
    essay_id: uuid.UUID
    owner_id: uuid.UUID
    class_id: uuid.UUID | None
    title: str


@dataclass(slots=True)
class LiveEssay:
    """One essay loaded on a host: its Yjs document, log position, activity signals, feedback and
    event backlog (slotted: a host holds thousands; a per-instance `__dict__` of ~35 fields was
    ~1.5 KiB each). Times (`now`) are the host's monotonic clock."""

    meta: EssayMeta
    doc: EssayDoc
    seq: int
    watermark: int  # the last seq in the stored snapshot
    lease: int = 0  # the fencing token of the host's lease it was loaded under (actors.leases)
    log_bytes: int = 0  # bytes of this essay's update log (all of it, for `max_log_bytes`)
    typing_seconds: float = 0.0
    events: EventBacklog = field(init=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flags: set[str] = field(default_factory=set)
    last_edit_at: float | None = None
    last_active_at: datetime | None = None
    last_revision_at: float | None = None
    revision_seq: int = 0
    connections: int = 0
    socket_nodes: dict[str, int] = field(default_factory=dict)  # bus node -> open document sockets
    idle_since: float = 0.0
    class_dirty: bool = False
    last_class_publish: float = float("-inf")
    feedback_counts: dict[str, int] = field(default_factory=dict)
    # Analysis state: the text the current `items` describe, and the task analysing newer text.
    analyzed_text: str = ""
    items: list[FeedbackItem] = field(default_factory=list)
    analysis_task: asyncio.Task[None] | None = None
    assignment_prompt: str = ""
    active_paragraphs: set[str] = field(default_factory=set)
    last_local_run: float = float("-inf")
    last_commit: asyncio.Future[None] | None = None
    feedback_dirty: bool = False

    def __post_init__(self) -> None:
        self.events = EventBacklog(self.meta.essay_id)

    @classmethod
    def loaded(cls, *, meta: EssayMeta, doc: EssayDoc, seq: int, watermark: int, typing_seconds: float,
               last_active_at: datetime | None, log_bytes: int, revision_seq: int | None,
               items: list[dict[str, Any]], assignment_prompt: str, now: float) -> LiveEssay:
        """An essay as the store had it: `revision_seq` is its latest revision's (None: none yet,
        so a revision is due at its first compaction); `items` its stored feedback set, which
        describes the stored text."""
        essay = cls(meta=meta, doc=doc, seq=seq, watermark=watermark, typing_seconds=typing_seconds,
                    last_active_at=last_active_at, idle_since=now, revision_seq=revision_seq or 0,
                    log_bytes=log_bytes, assignment_prompt=assignment_prompt)
        essay.last_revision_at = now if revision_seq is not None else None
        essay.items = [FeedbackItem(**item) for item in items]
        essay.analyzed_text = doc.text if items else ""
        essay.feedback_counts = count_kinds(items)
        return essay

    @property
    def essay_id(self) -> uuid.UUID:
        return self.meta.essay_id

    # --- the document -----------------------------------------------------------------------

    def apply(self, update: bytes, *, now: float, wall: datetime, large_paste_chars: int,
              max_chars: int | None = None) -> UpdateEffect:
        """Apply a client update; assigns the next `seq` when it carries anything new.

        Raises `actors.doc.InvalidUpdate` (`TextTooLong` over `max_chars`) and leaves the
        document unchanged on bad bytes.
        """
        effect = self.doc.apply_update(update, max_chars=max_chars)
        if not effect.needs_persist:
            return effect
        self.seq += 1
        self.log_bytes += len(update)
        if effect.changed:
            if self.last_edit_at is not None and now - self.last_edit_at <= TYPING_GAP_SECONDS:
                self.typing_seconds += now - self.last_edit_at
            self.last_edit_at = now
            self.last_active_at = wall
            if effect.is_large_paste(large_paste_chars):
                self.flags.add("large_paste")
        return effect

    def logging(self, commit: asyncio.Future[None]) -> None:
        """The group commit that writes the latest update's log row (see `durable`)."""
        self.last_commit = commit

    async def durable(self) -> None:
        """Wait until every update applied so far is in the update log (commits land in order,
        so the latest one's future covers the rest)."""
        if self.last_commit is not None and not self.last_commit.done():
            await asyncio.shield(self.last_commit)

    def stored(self, seq: int, *, revision: bool, now: float) -> bool:
        """A snapshot at `seq` is stored (with a revision when `revision`); whether it saved
        anything new (the `saved` event is due)."""
        saved = seq > self.watermark
        self.watermark = seq
        if revision:
            self.revision_seq, self.last_revision_at = seq, now
        return saved

    # --- sockets and the dashboard row --------------------------------------------------------

    def attach(self, node: str | None) -> None:
        """A document socket opened (on bus node `node`)."""
        self.connections += 1
        if node is not None:
            count(self.socket_nodes, node, 1)

    def detach(self, node: str | None, *, now: float) -> None:
        self.connections = max(0, self.connections - 1)
        self.idle_since = now
        if node is not None:
            count(self.socket_nodes, node, -1)

    def others_listen(self, node: str | None, *, knows_every_socket: bool) -> bool:
        """Whether a document socket outside `node` may need this essay's updates from the bus.

        Sockets attach before their first sync, so an update applied after that reaches them
        here and one applied before is in their sync answer. A restarted host never saw the
        attaches of sockets opened before its crash: it always publishes.
        """
        if node is None or not knows_every_socket:
            return True
        return any(n != node for n in self.socket_nodes)

    def row_changed(self) -> bool:
        """Its dashboard row changed (typing, feedback); False when it has none (no class)."""
        if self.meta.class_id is None:
            return False
        self.class_dirty = True
        return True

    def row_published(self, now: float) -> None:
        self.class_dirty = False
        self.last_class_publish = now

    def status_row(self, *, student_name: str = "") -> dict[str, Any]:
        text = self.doc.text
        return {
            "type": "student", "student_id": str(self.meta.owner_id), "essay_id": str(self.essay_id),
            "title": self.meta.title, "word_count": self.doc.word_count,
            "last_active_at": self.last_active_at.isoformat() if self.last_active_at else None,
            "excerpt": excerpt(text), "flags": sorted(self.flags),
            "feedback_counts": dict(self.feedback_counts),
            "typing_seconds": int(self.typing_seconds), "name": student_name,
        }

    # --- feedback ---------------------------------------------------------------------------

    def tier1_started(self, now: float) -> None:
        self.last_local_run = now

    def paragraphs_in_progress(self, hashes: set[str]) -> None:
        """The paragraphs the latest analysis saw change (the LLM holds them until they settle)."""
        self.active_paragraphs = hashes

    def take_feedback(self, items: list[FeedbackItem], text: str) -> tuple[list[FeedbackItem], list[str]]:
        """The feedback set for `text` is now `items`; returns (changed items, removed ids).

        A change is stored with the next snapshot (the host serves it until then) and moves the
        dashboard row.
        """
        changed, removed = diff_items(self.items, items)
        self.items, self.analyzed_text = items, text
        self.feedback_counts = count_kinds(items)
        if changed or removed:
            self.feedback_dirty = True
            self.row_changed()
        return changed, removed

    @contextlib.contextmanager
    def dirty_feedback(self) -> Iterator[list[dict[str, Any]] | None]:
        """The feedback set a write should store (None when unchanged since the last store); it
        stays dirty, for the next store, if that write fails."""
        items = [i.as_dict() for i in self.items] if self.feedback_dirty else None
        self.feedback_dirty = False
        try:
            yield items
        except BaseException:
            self.feedback_dirty = self.feedback_dirty or items is not None
            raise

    def run_analysis(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work()` as this essay's analysis task unless one is running (it sees new text itself)."""
        if self.analysis_task is None or self.analysis_task.done():
            self.analysis_task = asyncio.create_task(work())

    def cancel_analysis(self) -> None:
        if self.analysis_task is not None:
            self.analysis_task.cancel()

    def feedback_set(self) -> dict[str, Any]:
        """The current items as a full `feedback` event's payload (what a resume gets)."""
        return {"items": [wire_item(i) for i in self.items], "removed": [], "counts": self.feedback_counts,
                "full": True}

    async def feedback(self) -> dict[str, Any]:
        """The current feedback set, offsets resolved against the current text."""
        items, analyzed_text = self.items, self.analyzed_text
        text, seq, spans = await self.resolve_anchors([item.anchor for item in items])
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

    # --- events -----------------------------------------------------------------------------

    def events_after(self, last_seq: int, epoch: str | None) -> list[str] | None:
        """`EventBacklog.after`, missed feedback as the current full set."""
        return self.events.after(last_seq, epoch, self.feedback_set)

    # --- anchors ----------------------------------------------------------------------------

    async def encode_anchors(self, ranges: list[tuple[int, int]]) -> list[str]:
        """Anchors for ranges of the current text: on the loop when that is cheap (ASCII, short,
        or the view is built), else on a worker thread from plain data (pycrdt objects stay on
        their thread); the caller checks `seq` afterwards if the text may have moved."""
        doc = self.doc
        if not ranges:
            return []
        if anchors_are_cheap(doc):
            return [encode_anchor(doc, start, end) for start, end in ranges]
        return await asyncio.to_thread(encode_anchors, doc.text, doc.full_state(), ranges)

    async def resolve_anchors(self, anchors: list[str | None]) -> tuple[str, int, list[tuple[int, int] | None]]:
        """(text, seq, spans): each anchor resolved against that text version (None: deleted,
        missing or unreadable), off the loop like `encode_anchors` when that is not cheap."""
        doc = self.doc
        text, seq = doc.text, self.seq
        if not any(anchors):
            return text, seq, [None] * len(anchors)
        if anchors_are_cheap(doc):
            return text, seq, resolve_anchors_live(doc, anchors)
        return text, seq, await asyncio.to_thread(resolve_anchors, text, doc.full_state(), anchors)


def excerpt(text: str, limit: int = 240) -> str:
    """The end of the text (where the student is typing), cut at a word boundary."""
    text = " ".join(text[-4 * limit:].split())  # only the tail matters: rows go out every second
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    cut = tail.find(" ")
    return "…" + (tail[cut + 1:] if 0 <= cut < 40 else tail)
