"""An essay's deadline status: one pure function of (assignment, extension, submitted_at, now).

No database, no clock of its own: callers pass `now`, tests pass a fixed one.

- The *due* time is the student's extension's `due_at` if they have one, else the assignment's.
- The *hard close* is the extension's `close_at`, else the assignment's `close_at`; with the
  `reject` late policy the due time is also a hard close. An extension that moves the due time past
  the assignment's close without giving a close of its own closes at its due time (an extension
  never leaves a student with less time than its due date).
- Status: `on_time` (submitted by the due time, or not submitted and not yet due), `late`
  (submitted after it, or not submitted and past due before the close), `closed` (not submitted
  and past the hard close). `writable` is False once the hard close has passed, submitted or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

Status = Literal["on_time", "late", "closed"]


class AssignmentTimes(Protocol):
    due_at: datetime | None
    close_at: datetime | None
    late_policy: str


class ExtensionTimes(Protocol):
    due_at: datetime
    close_at: datetime | None


@dataclass(frozen=True)
class Deadline:
    status: Status
    due_at: datetime | None
    close_at: datetime | None
    extended: bool
    writable: bool


def effective_times(assignment: AssignmentTimes, extension: ExtensionTimes | None
                    ) -> tuple[datetime | None, datetime | None]:
    """(due, hard close) for one student, extension applied."""
    due = assignment.due_at
    close = assignment.close_at
    if extension is not None:
        due = extension.due_at
        if extension.close_at is not None:
            close = extension.close_at
        elif close is not None and close < due:
            close = due
    if assignment.late_policy == "reject" and due is not None:
        close = due if close is None else min(close, due)
    return due, close


def deadline_status(assignment: AssignmentTimes | None, extension: ExtensionTimes | None,
                    submitted_at: datetime | None, now: datetime) -> Deadline:
    """The student's status on this assignment at `now` (no assignment: always on time, writable)."""
    if assignment is None:
        return Deadline("on_time", None, None, False, True)
    due, close = effective_times(assignment, extension)
    writable = close is None or now <= close
    if submitted_at is not None:
        status: Status = "late" if due is not None and submitted_at > due else "on_time"
    elif due is None or now <= due:
        status = "on_time" if writable else "closed"
    else:
        status = "late" if writable else "closed"
    return Deadline(status, due, close, extension is not None, writable)
