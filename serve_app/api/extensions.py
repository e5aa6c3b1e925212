"""Per-student extensions: `PUT/DELETE /classes/{id}/assignments/{aid}/extensions/{student_id}`,
`GET /classes/{id}/assignments/{aid}/extensions` (the assignment's, for its class's teachers).

The class's teachers set them; each change is written to the audit log. The student's deadline
status (`serve_app.deadlines`) uses the extension's `due_at` and, when given, its `close_at`.

After the change is committed, each of the student's essays on the assignment gets a numbered
`deadline` event on its events socket (`{type: "deadline", essay_id, seq, assignment_id,
deadline_status, due_at, close_at, extended}`), through the essay's host like a comment, so a
client that was offline receives it on `resume`. The open editor shows the new times and reopens
its doc socket, whose write window (fixed when it opened) then has the new close.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import Field

from db.models import Assignment, User
from db.repositories import assignments, audit, classes, essays, extensions
from db.types import utcnow
from serve_app.api.access import class_for_teacher
from serve_app.api.writability import deadline_fields, essay_deadlines
from serve_app.deps import ContextDep, CurrentUser, SessionDep
from serve_app.errors import NotFound
from serve_app.schemas import DueTimes, Out

router = APIRouter(tags=["classes"])


class ExtensionIn(DueTimes):
    due_at: datetime  # type: ignore[assignment]  # required here
    close_at: datetime | None = Field(None, description="The student's own hard close (default: the later of "
                                                        "the assignment's close and this due_at)")


class ExtensionOut(Out):
    assignment_id: uuid.UUID
    student_id: uuid.UUID
    due_at: datetime
    close_at: datetime | None
    granted_by: uuid.UUID | None
    created_at: datetime


async def _assignment(session: SessionDep, user: User, class_id: uuid.UUID, assignment_id: uuid.UUID) -> Assignment:
    await class_for_teacher(session, user, class_id)
    assignment = await assignments.get(session, assignment_id=assignment_id)
    if assignment is None or assignment.class_id != class_id:
        raise NotFound("no such assignment in this class")
    return assignment


async def _assignment_and_student(session: SessionDep, user: User, class_id: uuid.UUID,
                                  assignment_id: uuid.UUID, student_id: uuid.UUID) -> Assignment:
    assignment = await _assignment(session, user, class_id, assignment_id)
    if not await classes.is_enrolled(session, class_id=class_id, student_id=student_id):
        raise NotFound("no such student in this class", code="unknown_student")
    return assignment


async def push_deadline(ctx: ContextDep, session: SessionDep, *, assignment_id: uuid.UUID,
                        student_id: uuid.UUID) -> None:
    """Tell the student's open essays on the assignment their new deadline (after the commit)."""
    rows = await essays.list_for_owner_assignment(session, owner_id=student_id, assignment_id=assignment_id)
    deadlines = await essay_deadlines(session, essays=rows, now=utcnow())
    for essay in rows:
        await ctx.hosts.of(essay.id).publish_event(essay.id, "deadline", assignment_id=str(assignment_id),
                                                   **deadline_fields(deadlines[essay.id]))


@router.get("/classes/{class_id}/assignments/{assignment_id}/extensions", response_model=list[ExtensionOut])
async def list_extensions(class_id: uuid.UUID, assignment_id: uuid.UUID, session: SessionDep,
                          user: CurrentUser) -> list[ExtensionOut]:
    """The assignment's extensions (the class's teachers)."""
    await _assignment(session, user, class_id, assignment_id)
    rows = await extensions.for_assignment(session, assignment_id=assignment_id)
    return [ExtensionOut.model_validate(e) for e in rows]


@router.put("/classes/{class_id}/assignments/{assignment_id}/extensions/{student_id}",
            response_model=ExtensionOut)
async def put_extension(class_id: uuid.UUID, assignment_id: uuid.UUID, student_id: uuid.UUID, body: ExtensionIn,
                        ctx: ContextDep, session: SessionDep, user: CurrentUser) -> ExtensionOut:
    """Give (or change) one student's extension."""
    await _assignment_and_student(session, user, class_id, assignment_id, student_id)
    ext = await extensions.put(session, assignment_id=assignment_id, student_id=student_id, due_at=body.due_at,
                               close_at=body.close_at, granted_by=user.id)
    await audit.append(session, actor_id=user.id, action="extension.set", target_type="assignment",
                       target_id=assignment_id, details={"student_id": str(student_id), "class_id": str(class_id),
                                                         **body.model_dump(mode="json")})
    out = ExtensionOut.model_validate(ext)
    await session.commit()
    await push_deadline(ctx, session, assignment_id=assignment_id, student_id=student_id)
    return out


@router.delete("/classes/{class_id}/assignments/{assignment_id}/extensions/{student_id}", status_code=204)
async def delete_extension(class_id: uuid.UUID, assignment_id: uuid.UUID, student_id: uuid.UUID,
                           ctx: ContextDep, session: SessionDep, user: CurrentUser) -> Response:
    """Withdraw a student's extension (404 when they have none)."""
    await _assignment_and_student(session, user, class_id, assignment_id, student_id)
    if not await extensions.remove(session, assignment_id=assignment_id, student_id=student_id):
        raise NotFound("this student has no extension on this assignment", code="no_extension")
    await audit.append(session, actor_id=user.id, action="extension.remove", target_type="assignment",
                       target_id=assignment_id, details={"student_id": str(student_id), "class_id": str(class_id)})
    await session.commit()
    await push_deadline(ctx, session, assignment_id=assignment_id, student_id=student_id)
    return Response(status_code=204)
