"""The event log: each essay's numbered JSON events, kept for `resume`, and their publication.

Sequence numbers: `EventBacklog.seq` numbers the JSON events published on an essay's channel
(`essay:{id}`), densely within an `epoch` (one incarnation of the essay on a host), so a client
that sees a gap or a new epoch resumes or resyncs. Each event also carries `doc_seq`, the
document's version (`LiveEssay.seq`) when it was made.

`EventBacklog` is pure (one per loaded essay); `EventLog` is the host's: it knows which channels a
socket watches and publishes on the bus only then (dashboard rows, `class:{id}`, likewise).
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.broadcast import Bus

if TYPE_CHECKING:
    from actors.essay import LiveEssay

# Events kept for `resume`: at most this many, and at most this many bytes of JSON (the newest
# event is always kept). Feedback diffs are not kept at all: a resume that missed any gets one
# `feedback` event with the current full set instead, at the place of the latest (it supersedes
# the diffs before it). Likewise only the latest `saved` event is kept (each supersedes the one
# before; an essay being typed saves every few seconds). Neither leaves a trace in the backlog:
# a place kept per diff was ~90 bytes, ~11 KiB per essay once 128 had piled up. What is kept
# (comments, submissions, the latest save) is the JSON text sent.
EVENT_BACKLOG = 128
EVENT_BACKLOG_BYTES = 16 * 1024


def encode_event(event: dict[str, Any]) -> str:
    """An event's JSON text, as sent on the events socket."""
    return json.dumps(event, default=str, separators=(",", ":"))


@dataclass(slots=True)
class EventBacklog:
    """One essay's event stream: the numbering and what a `resume` needs (see EVENT_BACKLOG)."""

    essay_id: uuid.UUID
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    seq: int = 0
    # Kept events (comments, submissions) as (seq, JSON text), oldest first; made at the first
    # one (an empty deque is ~0.6 KiB). Feedback and saves are not in it (see EVENT_BACKLOG).
    kept: deque[tuple[int, str]] | None = None
    kept_bytes: int = 0
    floor: int = 1  # a resume from any seq >= floor - 1 can be answered; older ones resync
    last_feedback: tuple[int, int] | None = None  # (seq, doc_seq) of the latest feedback event
    last_saved: tuple[int, str] | None = None  # (seq, JSON text) of the latest saved event

    def next(self, type_: str, doc_seq: int, **payload: Any) -> dict[str, Any]:
        """Number an event made at document version `doc_seq` and keep what a `resume` needs of it."""
        self.seq += 1
        event = {"type": type_, "essay_id": str(self.essay_id), "seq": self.seq,
                 "epoch": self.epoch, "doc_seq": doc_seq, **payload}
        if type_ == "feedback":
            self.last_feedback = (self.seq, doc_seq)
        elif type_ == "saved":
            self.last_saved = (self.seq, encode_event(event))
        else:
            if self.kept is None:
                self.kept = deque()
            text = encode_event(event)
            self.kept.append((self.seq, text))
            self.kept_bytes += len(text)
            while len(self.kept) > 1 and (len(self.kept) > EVENT_BACKLOG or self.kept_bytes > EVENT_BACKLOG_BYTES):
                dropped, old = self.kept.popleft()
                self.kept_bytes -= len(old)
                self.floor = dropped + 1
        return event

    def after(self, last_seq: int, epoch: str | None,
              feedback_set: Callable[[], dict[str, Any]]) -> list[str] | None:
        """Events after `last_seq` (JSON texts, in seq order), or None when some are no longer
        kept (the client resyncs). Missed feedback diffs come as one `feedback` event holding
        `feedback_set()` (the current items, `full: true`) with the latest diff's seq; missed
        saves as the latest `saved` event only."""
        if epoch is not None and epoch != self.epoch:
            return None
        if last_seq >= self.seq:
            return []
        if last_seq + 1 < self.floor:
            return None
        out = [(seq, text) for seq, text in self.kept or () if seq > last_seq]
        if self.last_feedback is not None and self.last_feedback[0] > last_seq:
            seq, doc_seq = self.last_feedback
            out.append((seq, encode_event({"type": "feedback", "essay_id": str(self.essay_id), "seq": seq,
                                           "epoch": self.epoch, "doc_seq": doc_seq, **feedback_set()})))
        if self.last_saved is not None and self.last_saved[0] > last_seq:
            out.append(self.last_saved)
        out.sort()
        return [text for _, text in out]


class EventLog:
    """A host's publisher of essay events and dashboard rows: numbered and kept always, put on
    the bus only while a socket watches the channel (`watch`).

    `knows_every_socket` is False in a host process that replaced a crashed one: it then
    publishes everything, as it cannot know which sockets opened before the crash.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.knows_every_socket = True
        self.watchers: dict[str, int] = {}  # JSON channel -> sockets watching it

    def watch(self, channel: str, delta: int) -> None:
        """A JSON socket (events: `essay:{id}`, dashboard: `class:{id}`) opened (+1) or closed (-1)."""
        count(self.watchers, channel, delta)

    def watched(self, channel: str) -> bool:
        return not self.knows_every_socket or channel in self.watchers

    async def publish(self, essay: LiveEssay, type_: str, **payload: Any) -> dict[str, Any]:
        """Number and keep an event of `essay`; on the bus (encoded only then) when watched."""
        event = essay.events.next(type_, essay.seq, **payload)
        channel = f"essay:{essay.essay_id}"
        if self.watched(channel):
            await self.bus.publish(channel, encode_event(event).encode())
        return event

    async def publish_row(self, essay: LiveEssay, now: float) -> None:
        """The teacher dashboard row of `essay` (coalesced by the caller to about one per second);
        built only when a dashboard of its class is open (one that opens reads the rows itself)."""
        essay.row_published(now)
        channel = f"class:{essay.meta.class_id}"
        if self.watched(channel):
            await self.bus.publish(channel, json.dumps(essay.status_row()).encode())


def count(counts: dict[str, int], key: str, delta: int) -> None:
    """Add `delta` to `counts[key]`, dropping the key at zero (never negative)."""
    n = counts.get(key, 0) + delta
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
