"""`WS /ws/classes/{id}/live`: a teacher watches their class write. JSON messages
`{type: "student", student_id, essay_id, title, word_count, last_active_at, excerpt,
feedback_counts, flags, typing_seconds, name, deadline_status, due_at, close_at, extended}`, one
per student on connect (`initial_rows`), then as the essay hosts publish them (coalesced to
about one per second per student); `{type: "resync", class_id}` and fresh rows when the bus lost
some. The socket only sends: anything received is answered with an `unknown_type` error frame.

Rows come from the essay hosts, which know nothing of assignments; the Gateway adds the deadline
fields (`ClassDeadlines`). A replica's teacher sockets on one class share one `ClassFeed`: it
subscribes to the class's channel once, and each row gets its fields and is encoded once, then
handed to every socket (one class, three teachers: one decode and encode per row, not three).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import WebSocket

from actors.broadcast import RESYNC, Bus
from actors.essay import excerpt
from db.models import Essay
from db.repositories import classes, essays
from serve_app.deps import Context
from serve_app.realtime.class_deadlines import ClassDeadlines
from serve_app.realtime.connection import SendQueue, background, open_class_socket
from serve_app.realtime.json_socket import error_frame, serve_json


class RowSink(Protocol):
    """Where a feed hands its frames: a socket's `SendQueue`."""

    def put(self, frame: bytes | str) -> object: ...


class RowAnnotator(Protocol):
    """Adds the deadline fields to rows: `ClassDeadlines`."""

    async def load(self, essay_ids: list[uuid.UUID] | None = None) -> None: ...

    def annotate(self, row: dict[str, Any]) -> dict[str, Any]: ...

    async def annotate_message(self, message: bytes) -> str: ...


class ClassFeed:
    """One class's live rows on this replica, shared by its open teacher sockets (`sinks`).

    Subscribes to `class:{id}` once (`ready`); each row from the bus is annotated and encoded
    once and the same frame is put on every sink. A bus resync tells every sink, then sends them
    all the class's rows, read once. `rows` reads the class's current rows (`initial_rows`).
    """

    def __init__(self, bus: Bus, class_id: uuid.UUID, deadlines: RowAnnotator,
                 rows: Callable[[], Awaitable[list[dict[str, Any]]]]) -> None:
        self.bus, self.class_id, self.deadlines, self.rows = bus, class_id, deadlines, rows
        self.sinks: set[RowSink] = set()
        self.ready: asyncio.Future[None] = asyncio.ensure_future(self._subscribe())
        self._unsubscribe: Callable[[], None] | None = None
        self.closed = False

    async def _subscribe(self) -> None:
        unsubscribe = await self.bus.subscribe(f"class:{self.class_id}", self._on_row)
        if self.closed:  # every socket left while we subscribed
            unsubscribe()
        else:
            self._unsubscribe = unsubscribe

    def close(self) -> None:
        self.closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def annotated_rows(self) -> list[str]:
        """The class's rows now, with fresh deadline fields, as text frames."""
        rows = await self.rows()
        await self.deadlines.load()
        return [json.dumps(self.deadlines.annotate(row), default=str) for row in rows]

    def _put_all(self, frames: list[str], sinks: list[RowSink]) -> None:
        for frame in frames:
            for sink in sinks:
                sink.put(frame)

    async def _forward(self, message: bytes) -> None:
        # One task per row, in arrival order; a row waits only while its essay's deadline loads.
        frame = await self.deadlines.annotate_message(message)
        self._put_all([frame], list(self.sinks))

    async def _resend_rows(self, sinks: list[RowSink]) -> None:
        self._put_all(await self.annotated_rows(), sinks)

    def _on_row(self, _channel: str, message: bytes) -> None:
        if self.closed:
            return
        if message == RESYNC:
            sinks = list(self.sinks)
            self._put_all([json.dumps({"type": "resync", "class_id": str(self.class_id)})], sinks)
            background(self._resend_rows(sinks))
        else:
            background(self._forward(message))


def _feeds(app: Any) -> dict[uuid.UUID, ClassFeed]:
    """This replica's class feeds, by class id."""
    feeds = getattr(app.state, "class_feeds", None)
    if feeds is None:
        feeds = app.state.class_feeds = {}
    return feeds


async def join_feed(app: Any, class_id: uuid.UUID, sink: RowSink,
                    make: Callable[[], ClassFeed]) -> tuple[ClassFeed, Callable[[], None]]:
    """Add `sink` to the class's feed on this replica (made by `make` for its first socket, ended
    with its last) once it is subscribed: (the feed, the function that takes `sink` out)."""
    feeds = _feeds(app)
    feed = feeds.get(class_id)
    if feed is None:
        feed = feeds[class_id] = make()
    feed.sinks.add(sink)

    def leave() -> None:
        feed.sinks.discard(sink)
        if not feed.sinks:
            feed.close()
            if feeds.get(class_id) is feed:
                del feeds[class_id]

    try:
        await asyncio.shield(feed.ready)  # its first socket's cancel must not end the others' wait
    except BaseException:
        leave()
        if feed.ready.done() and feeds.get(class_id) is feed:  # the subscribe failed: the next socket tries anew
            del feeds[class_id]
        raise
    return feed, leave


async def class_live_socket(ws: WebSocket) -> None:
    opened = await open_class_socket(ws)
    if opened is None:
        return
    ctx, class_id_ = opened
    out = SendQueue(ws, ctx.settings.ws_outbound_max_bytes)
    feed: ClassFeed | None = None

    def make_feed() -> ClassFeed:
        return ClassFeed(ctx.hosts.bus, class_id_, ClassDeadlines(ctx, class_id_),
                         lambda: initial_rows(ctx, class_id_))

    async def subscribe() -> Callable[[], None]:
        nonlocal feed
        feed, leave = await join_feed(ws.app, class_id_, out, make_feed)
        return leave

    async def send_rows() -> None:
        assert feed is not None
        for frame in await feed.annotated_rows():
            out.put(frame)

    async def on_message(message: dict[str, Any]) -> None:
        out.put(error_frame("unknown_type", "this socket only sends; nothing to receive"))

    await serve_json(ws, ctx, out, subscribe=subscribe, start=send_rows,
                     on_message=on_message, name="class", context={"class_id": str(class_id_)},
                     watch=lambda delta: ctx.hosts.watch_class(class_id_, delta))


async def initial_rows(ctx: Context, class_id: uuid.UUID) -> list[dict[str, Any]]:
    """One row per student: their most recently active essay, live state where it is loaded."""
    async with ctx.sessions() as session:
        students = await classes.students_of(session, class_id=class_id)
        stored = await essays.list_for_class_by_activity(session, class_id=class_id)
    live = {row["essay_id"]: row for row in await ctx.hosts.student_rows(class_id)}
    latest: dict[uuid.UUID, Essay] = {e.owner_id: e for e in stored}  # ordered by updated_at
    rows = []
    for student in students:
        essay = latest.get(student.id)
        if essay is not None and str(essay.id) in live:
            row = dict(live[str(essay.id)])
        elif essay is not None:
            row = {"type": "student", "student_id": str(student.id), "essay_id": str(essay.id),
                   "title": essay.title, "word_count": essay.word_count,
                   "last_active_at": essay.updated_at.isoformat(), "excerpt": excerpt(essay.text),
                   "feedback_counts": {}, "flags": [], "typing_seconds": essay.typing_seconds}
        else:
            row = {"type": "student", "student_id": str(student.id), "essay_id": None, "title": None,
                   "word_count": 0, "last_active_at": None, "excerpt": "", "feedback_counts": {},
                   "flags": [], "typing_seconds": 0}
        row["name"] = student.name
        rows.append(row)
    return rows
