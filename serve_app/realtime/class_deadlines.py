"""Deadline fields on the teacher's live class rows (`/ws/classes/{id}/live`).

Rows come from the essay hosts, which know nothing of assignments; the Gateway adds
`deadline_status`, `due_at`, `close_at` and `extended` to each row it forwards. The class's
statuses are read from the store at most once per `TTL_SECONDS` on each replica (an extension or a
submission shows within that), all of the class's essays at once, their deadline columns only, so
forwarding a row costs a JSON round trip, not a query, and one round trip for all the replica's
teacher sockets on the class (`serve_app.realtime.class_live_socket.ClassFeed`). (Read essay by
essay, with the whole row, a class of 30 typing students cost 30 reads of three queries each per
`TTL_SECONDS`, their text and document state included: ~7% of the Gateway's loop at 300 typists
on the web app's sockets, py-spy 2026-12-07.)
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from db.repositories import essays
from db.types import utcnow
from serve_app.api.writability import deadline_fields, essay_deadlines
from serve_app.deps import Context

TTL_SECONDS = 30.0


class ClassDeadlines:
    """One class's cache of its essays' deadline fields on this replica, shared by its live sockets."""

    def __init__(self, ctx: Context, class_id: uuid.UUID, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx, self.class_id, self.clock = ctx, class_id, clock
        self._fields: dict[uuid.UUID, tuple[float, dict[str, Any]]] = {}
        self._loading: dict[uuid.UUID | None, asyncio.Future[None]] = {}  # None: the whole class

    async def load(self, essay_ids: list[uuid.UUID] | None = None) -> None:
        """Refresh these essays (None: all of the class's)."""
        async with self.ctx.sessions() as session:
            rows = await essays.deadline_keys_for_class(session, class_id=self.class_id, essay_ids=essay_ids)
            deadlines = await essay_deadlines(session, essays=rows, now=utcnow())
        at = self.clock()
        for essay in rows:
            fields = deadline_fields(deadlines[essay.id] if essay.assignment_id else None)
            self._fields[essay.id] = (at, fields)
        for eid in essay_ids or ():
            self._fields.setdefault(eid, (at, deadline_fields(None)))  # left the class: no deadline

    def fresh(self, essay_id: uuid.UUID) -> dict[str, Any] | None:
        cached = self._fields.get(essay_id)
        if cached is None or self.clock() - cached[0] > TTL_SECONDS:
            return None
        return cached[1]

    async def fields(self, essay_id: uuid.UUID) -> dict[str, Any]:
        found = self.fresh(essay_id)
        if found is not None:
            return found
        await self._loaded(None)  # the whole class: its other essays come due together
        found = self.fresh(essay_id)
        if found is not None:
            return found
        await self._loaded(essay_id)  # not in the class (any more), or joined after that read
        return self._fields[essay_id][1]

    async def _loaded(self, essay_id: uuid.UUID | None) -> None:
        """One load of the essay (None: the class) at a time, however many rows wait on it."""
        pending = self._loading.get(essay_id)
        if pending is None:
            pending = self._loading[essay_id] = asyncio.ensure_future(
                self.load(None if essay_id is None else [essay_id]))
            pending.add_done_callback(lambda _f: self._loading.pop(essay_id, None))
        await asyncio.shield(pending)

    def annotate(self, row: dict[str, Any]) -> dict[str, Any]:
        """Add cached fields to a row synchronously (no essay, or not cached: null fields)."""
        eid = row.get("essay_id")
        cached = self._fields.get(uuid.UUID(eid)) if eid else None
        return {**row, **(cached[1] if cached else deadline_fields(None))}

    async def annotate_message(self, message: bytes) -> str:
        """A bus row with its deadline fields, as the text frame to send."""
        row = json.loads(message)
        eid = row.get("essay_id") if isinstance(row, dict) else None
        if eid:
            row.update(await self.fields(uuid.UUID(eid)))
        return json.dumps(row, default=str)
