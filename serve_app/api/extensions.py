"""Per-student extensions: `PUT/DELETE /classes/{id}/assignments/{aid}/extensions/{student_id}`.

The class's teachers set them; each change is written to the audit log. The student's deadline
status (`serve_app.deadlines`) uses the extension's `due_at` and, when given, its `close_at`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import Field

from db.models import Assignment, User
from db.repositories import assignments, audit, classes, extensions
from serve_app.api.access import class_for_teacher
from serve_app.deps import CurrentUser, SessionDep
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


async def _assignment_and_student(session: SessionDep, user: User, class_id: uuid.UUID,
                                  assignment_id: uuid.UUID, student_id: uuid.UUID) -> Assignment:
    await class_for_teacher(session, user, class_id)
    assignment = await assignments.get(session, assignment_id=assignment_id)
    if assignment is None or assignment.class_id != class_id:
        raise NotFound("no such assignment in this class")
    if not await classes.is_enrolled(session, class_id=class_id, student_id=student_id):
        raise NotFound("no such student in this class", code="unknown_student")
    return assignment


@router.put("/classes/{class_id}/assignments/{assignment_id}/extensions/{student_id}",
            response_model=ExtensionOut)
async def put_extension(class_id: uuid.UUID, assignment_id: uuid.UUID, student_id: uuid.UUID, body: ExtensionIn,
                        session: SessionDep, user: CurrentUser) -> ExtensionOut:
    """Give (or change) one student's extension."""
    await _assignment_and_student(session, user, class_id, assignment_id, student_id)
    ext = await extensions.put(session, assignment_id=assignment_id, student_id=student_id, due_at=body.due_at,
                               close_at=body.close_at, granted_by=user.id)
    await audit.append(session, actor_id=user.id, action="extension.set", target_type="assignment",
                       target_id=assignment_id, details={"student_id": str(student_id), "class_id": str(class_id),
                                                         **body.model_dump(mode="json")})
    out = ExtensionOut.model_validate(ext)
    await session.commit()
    return out


@router.delete("/classes/{class_id}/assignments/{assignment_id}/extensions/{student_id}", status_code=204)
async def delete_extension(class_id: uuid.UUID, assignment_id: uuid.UUID, student_id: uuid.UUID,
                           session: SessionDep, user: CurrentUser) -> Response:
    """Withdraw a student's extension (404 when they have none)."""
    await _assignment_and_student(session, user, class_id, assignment_id, student_id)
    if not await extensions.remove(session, assignment_id=assignment_id, student_id=student_id):
        raise NotFound("this student has no extension on this assignment", code="no_extension")
    await audit.append(session, actor_id=user.id, action="extension.remove", target_type="assignment",
                       target_id=assignment_id, details={"student_id": str(student_id), "class_id": str(class_id)})
    await session.commit()
    return Response(status_code=204)
