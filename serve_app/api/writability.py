"""Whether a student may still write to or submit an essay: its assignment's deadline (with their
extension) and its class's archive state. REST writes, submit and the doc socket ask here.

Refusals are 409 problems with stable codes: `assignment_closed` (past the hard close, the
extension's if any), `past_due` (the `reject` late policy after the due time), `class_archived`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Assignment, Essay
from db.repositories import assignments, classes, extensions
from serve_app.deadlines import Deadline, deadline_status, effective_times
from serve_app.errors import Conflict


async def student_deadline(session: AsyncSession, *, assignment: Assignment | None, student_id: uuid.UUID,
                           submitted_at: datetime | None, now: datetime) -> Deadline:
    ext = (await extensions.get(session, assignment_id=assignment.id, student_id=student_id)
           if assignment is not None else None)
    return deadline_status(assignment, ext, submitted_at, now)


def refuse_closed(assignment: Assignment | None, deadline: Deadline) -> None:
    """409 when the deadline no longer lets the student write or submit."""
    if deadline.writable or assignment is None:
        return
    closed_at = deadline.close_at.isoformat() if deadline.close_at else "?"
    if assignment.late_policy == "reject" and deadline.close_at == deadline.due_at:
        raise Conflict(f"the assignment was due at {closed_at}", code="past_due")
    raise Conflict(f"the assignment closed at {closed_at}; ask your teacher for an extension",
                   code="assignment_closed")


def flagged_late(assignment: Assignment | None, deadline: Deadline) -> bool:
    """A submission now is late and the assignment's `flag` policy marks it."""
    return assignment is not None and deadline.status == "late" and assignment.late_policy == "flag"


@dataclass(frozen=True)
class WriteWindow:
    """Whether the owner may write now (`refusal` None) and until when (`closes_at`, None: no close);
    `late`: a submission now would be flagged late (the submit route reads it, so the deadline is
    computed once per request)."""

    refusal: Conflict | None
    closes_at: datetime | None
    late: bool = False

    def refusal_at(self, now: datetime | None) -> str | None:
        """Why a write at `now` is refused (None: it is allowed). The doc socket asks per update:
        a comparison, no query; a socket open across the close turns read-only at the close."""
        if self.refusal is not None:
            return f"read-only: {self.refusal.detail}"
        if self.closes_at is not None and now is not None and now > self.closes_at:
            return "read-only: the assignment closed for writing at " + self.closes_at.isoformat()
        return None


READ_ONLY = WriteWindow(Conflict("this essay belongs to a student", code="read_only"), None)
"""A reader's window: never writes (a teacher watching a student's essay)."""


async def write_window(session: AsyncSession, *, essay: Essay, now: datetime) -> WriteWindow:
    if essay.class_id is not None:
        cls = await classes.get(session, class_id=essay.class_id)
        if cls is not None and cls.archived_at is not None:
            return WriteWindow(Conflict("the class is archived: its essays are read-only", code="class_archived"),
                               None)
    if essay.assignment_id is None:
        return WriteWindow(None, None)
    assignment = await assignments.get(session, assignment_id=essay.assignment_id)
    deadline = await student_deadline(session, assignment=assignment, student_id=essay.owner_id,
                                      submitted_at=None, now=now)
    try:
        refuse_closed(assignment, deadline)
    except Conflict as exc:
        return WriteWindow(exc, deadline.close_at)
    return WriteWindow(None, deadline.close_at, flagged_late(assignment, deadline))


async def check_writable(session: AsyncSession, *, essay: Essay, now: datetime) -> WriteWindow:
    """409 (`class_archived`, `assignment_closed`, `past_due`) when the owner may no longer write;
    else the window (whether a submission now is late)."""
    window = await write_window(session, essay=essay, now=now)
    if window.refusal is not None:
        raise window.refusal
    return window


async def essay_deadlines(session: AsyncSession, *, essays: Sequence[Essay], now: datetime
                          ) -> dict[uuid.UUID, Deadline]:
    """Each essay's deadline status (assignments and extensions loaded in two queries)."""
    assignment_ids = list({e.assignment_id for e in essays if e.assignment_id is not None})
    by_id: dict[uuid.UUID, Assignment] = {}
    if assignment_ids:
        by_id = {a.id: a for a in await session.scalars(select(Assignment).where(Assignment.id.in_(assignment_ids)))}
    exts = await extensions.for_assignments(session, assignment_ids=assignment_ids)
    out = {}
    for essay in essays:
        assignment = by_id.get(essay.assignment_id) if essay.assignment_id is not None else None
        ext = exts.get((assignment.id, essay.owner_id)) if assignment is not None else None
        out[essay.id] = deadline_status(assignment, ext, essay.submitted_at, now)
    return out


def deadline_fields(deadline: Deadline | None) -> dict[str, str | bool | None]:
    """The wire fields of a deadline (live class rows, exports)."""
    if deadline is None:
        return {"deadline_status": None, "due_at": None, "close_at": None, "extended": False}
    return {"deadline_status": deadline.status,
            "due_at": deadline.due_at.isoformat() if deadline.due_at else None,
            "close_at": deadline.close_at.isoformat() if deadline.close_at else None,
            "extended": deadline.extended}


async def effective_fields(session: AsyncSession, *, student_id: uuid.UUID | None,
                           rows: Sequence[Assignment]) -> dict[uuid.UUID, dict[str, datetime | bool | None]]:
    """Each assignment's `effective_due_at`, `effective_close_at` and `extended` for `student_id`
    (their extensions applied, one query); None (a teacher): the assignment's own times."""
    exts = (await extensions.for_assignments(session, assignment_ids=[a.id for a in rows])
            if student_id is not None else {})
    out: dict[uuid.UUID, dict[str, datetime | bool | None]] = {}
    for a in rows:
        ext = exts.get((a.id, student_id)) if student_id is not None else None
        due, close = effective_times(a, ext)
        out[a.id] = {"effective_due_at": due, "effective_close_at": close, "extended": ext is not None}
    return out
