"""EssayActor: one open essay's in-memory state. Pure: no Ray, no database, no network.

The host serialises calls per essay (the event loop plus `lock` for the async steps). Sequence
numbers: `seq` numbers the update log densely per essay (the document's version); `event_seq`
numbers the JSON events published on the essay's channel, densely within an `epoch` (one
incarnation of the actor), so a client that sees a gap or a new epoch resumes or resyncs.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from actors.doc import EssayDoc, UpdateEffect

TYPING_GAP_SECONDS = 10.0
# Events kept for `resume`: at most this many, and at most this many bytes of JSON (the newest
# event is always kept). Feedback diffs are not kept at all: a resume that missed any gets one
# `feedback` event with the current full set instead, at the place of the latest (it supersedes
# the diffs before it). Likewise only the latest `saved` event is kept (each supersedes the one
# before; an essay being typed saves every few seconds). Neither leaves a trace in the backlog:
# a place kept per diff was ~90 bytes, ~11 KiB per essay once 128 had piled up. What is kept
# (comments, submissions, the latest save) is the JSON text sent.
EVENT_BACKLOG = 128
EVENT_BACKLOG_BYTES = 16 * 1024


@dataclass(slots=True)
class EssayMeta:
    essay_id: uuid.UUID
    owner_id: uuid.UUID
    class_id: uuid.UUID | None
    title: str


@dataclass(slots=True)
class EssayActor:
    """One essay: its Yjs document, log position, activity signals and recent events (slotted:
    a host holds thousands; a per-instance `__dict__` of ~35 fields was ~1.5 KiB each)."""

    meta: EssayMeta
    doc: EssayDoc
    seq: int
    watermark: int
    log_bytes: int = 0  # bytes of this essay's update log (all of it, for `max_log_bytes`)
    typing_seconds: float = 0.0
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    event_seq: int = 0
    # Kept events (comments, submissions) as (seq, JSON text), oldest first; made at the first
    # one (an empty deque is ~0.6 KiB). Feedback and saves are not in it (see EVENT_BACKLOG).
    events: deque[tuple[int, str]] | None = None
    events_bytes: int = 0
    events_floor: int = 1  # a resume from any seq >= floor - 1 can be answered; older ones resync
    last_feedback: tuple[int, int] | None = None  # (seq, doc_seq) of the latest feedback event
    last_saved: tuple[int, str] | None = None  # (seq, JSON text) of the latest saved event
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
    items: list[Any] = field(default_factory=list)
    analysis_task: asyncio.Task[None] | None = None
    assignment_prompt: str = ""
    active_paragraphs: set[str] = field(default_factory=set)
    last_local_run: float = float("-inf")
    last_commit: asyncio.Future[None] | None = None
    feedback_dirty: bool = False

    @property
    def essay_id(self) -> uuid.UUID:
        return self.meta.essay_id

    def apply(self, update: bytes, *, now: float, wall: datetime, large_paste_chars: int,
              max_chars: int | None = None) -> UpdateEffect:
        """Apply a validated update; assigns the next `seq` when it carries anything new.

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

    def next_event(self, type_: str, **payload: Any) -> dict[str, Any]:
        """Number an event and keep what a `resume` needs of it (see EVENT_BACKLOG)."""
        self.event_seq += 1
        event = {"type": type_, "essay_id": str(self.essay_id), "seq": self.event_seq,
                 "epoch": self.epoch, "doc_seq": self.seq, **payload}
        if type_ == "feedback":
            self.last_feedback = (self.event_seq, self.seq)
        elif type_ == "saved":
            self.last_saved = (self.event_seq, encode_event(event))
        else:
            if self.events is None:
                self.events = deque()
            text = encode_event(event)
            self.events.append((self.event_seq, text))
            self.events_bytes += len(text)
            while len(self.events) > 1 and (len(self.events) > EVENT_BACKLOG
                                            or self.events_bytes > EVENT_BACKLOG_BYTES):
                dropped, old = self.events.popleft()
                self.events_bytes -= len(old)
                self.events_floor = dropped + 1
        return event

    def events_after(self, last_seq: int, epoch: str | None,
                     feedback_set: Callable[[], dict[str, Any]]) -> list[str] | None:
        """Events after `last_seq` (JSON texts, in seq order), or None when some are no longer
        kept (the client resyncs). Missed feedback diffs come as one `feedback` event holding
        `feedback_set()` (the current items, `full: true`) with the latest diff's seq; missed
        saves as the latest `saved` event only."""
        if epoch is not None and epoch != self.epoch:
            return None
        if last_seq >= self.event_seq:
            return []
        if last_seq + 1 < self.events_floor:
            return None
        out = [(seq, text) for seq, text in self.events or () if seq > last_seq]
        if self.last_feedback is not None and self.last_feedback[0] > last_seq:
            seq, doc_seq = self.last_feedback
            out.append((seq, encode_event({"type": "feedback", "essay_id": str(self.essay_id), "seq": seq,
                                           "epoch": self.epoch, "doc_seq": doc_seq, **feedback_set()})))
        if self.last_saved is not None and self.last_saved[0] > last_seq:
            out.append(self.last_saved)
        out.sort()
        return [text for _, text in out]

    async def durable(self) -> None:
        """Wait until every update applied so far is in the update log (commits land in order,
        so the latest one's future covers the rest)."""
        if self.last_commit is not None and not self.last_commit.done():
            await asyncio.shield(self.last_commit)

    def needs_compaction(self, *, now: float, every: int, idle: float) -> bool:
        if self.seq <= self.watermark:
            return self.feedback_dirty
        quiet = self.last_edit_at is None or now - self.last_edit_at >= idle
        return self.seq - self.watermark >= every or quiet

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


def encode_event(event: dict[str, Any]) -> str:
    """An event's JSON text, as sent on the events socket."""
    return json.dumps(event, default=str, separators=(",", ":"))


def excerpt(text: str, limit: int = 240) -> str:
    """The end of the text (where the student is typing), cut at a word boundary."""
    text = " ".join(text[-4 * limit:].split())  # only the tail matters: rows go out every second
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    cut = tail.find(" ")
    return "…" + (tail[cut + 1:] if 0 <= cut < 40 else tail)
