"""Roster control: remove a student, rotate the join code, archive a class, co-teachers.

- `DELETE /classes/{id}/students/{student_id}` (a teacher of the class): the student leaves the class.
  Their essays in it leave the class too (the student keeps them as private essays): the teachers
  get 404 on them and no longer see them in the roster, the live view (open `/ws/classes/{id}/live`
  sockets get `{type: "student_removed", class_id, student_id}`) or exports. Every open socket
  on those essays, on every replica, closes with 4404 at once (`serve_app.realtime.control`).
- `POST /classes/{id}/join-code` (a teacher): a new join code; the old one stops working.
- `POST /classes/{id}/archive` (a teacher): read-only from then on: no joins (409 `class_archived`),
  no new assignments or essays, no writes or submits by students (409 `class_archived`; open doc
  sockets of students close 4403 and reopen read-only); hidden from `GET /classes` unless
  `?include_archived=true`. `POST /classes/{id}/unarchive` undoes it.
- `POST /classes/{id}/teachers` `{teacher_id}` and `DELETE /classes/{id}/teachers/{teacher_id}` (the
  class's owner): a co-teacher has the owner's rights on the class except managing co-teachers.
  A removed co-teacher's open sockets on the class (live view, whole-class text, its essays' doc
  and events sockets) close 4404 at once on every replica; the other teachers' stay open.
  `GET /classes/{id}/teachers` lists the owner and co-teachers.

Every action is written to the audit log in the same transaction.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from sqlalchemy.exc import IntegrityError

from db.repositories import audit, classes, essays, users
from db.types import utcnow
from serve_app.api.access import class_for_owner, class_for_teacher
from serve_app.api.classes import new_join_code
from serve_app.deps import ContextDep, CurrentUser, SessionDep
from serve_app.errors import Conflict, NotFound, ValidationFailed
from serve_app.realtime.control import close_sockets
from serve_app.realtime.protocol import CloseCode
from serve_app.schemas import Body, ClassOut, Out, dump

router = APIRouter(tags=["classes"])


class TeacherIn(Body):
    teacher_id: uuid.UUID


class ClassTeacherOut(Out):
    teacher_id: uuid.UUID
    name: str
    email: str
    owner: bool


def student_removed(class_id: uuid.UUID, student_id: uuid.UUID) -> bytes:
    """The class-channel event on which live views drop a student's row."""
    return json.dumps({"type": "student_removed", "class_id": str(class_id), "student_id": str(student_id)}).encode()


@router.delete("/classes/{class_id}/students/{student_id}", status_code=204)
async def remove_student(class_id: uuid.UUID, student_id: uuid.UUID, ctx: ContextDep, session: SessionDep,
                         user: CurrentUser) -> Response:
    """Remove a student from the class; their sockets on its essays close 4404 at once."""
    await class_for_teacher(session, user, class_id)
    essay_ids = await classes.unenroll(session, class_id=class_id, student_id=student_id)
    if essay_ids is None:
        raise NotFound("no such student in this class", code="unknown_student")
    await audit.append(session, actor_id=user.id, action="roster.remove", target_type="class", target_id=class_id,
                       details={"student_id": str(student_id), "essay_ids": [str(e) for e in essay_ids]})
    await session.commit()
    # Open live views drop the student's row (every replica forwards the class channel).
    await ctx.hosts.bus.publish(f"class:{class_id}", student_removed(class_id, student_id))
    if essay_ids:
        await close_sockets(ctx.hosts.bus, essay_ids=essay_ids, code=CloseCode.UNKNOWN_ESSAY,
                            reason="the essay left the class")
        for eid in essay_ids:
            # `drop` ends the essay's live actor (its sockets close 4404) and refuses it until
            # `release`: it reloads on next touch, outside the class (no more class rows).
            await ctx.hosts.drop(eid)
            await ctx.hosts.release(eid)
    return Response(status_code=204)


@router.post("/classes/{class_id}/join-code", response_model=ClassOut)
async def rotate_join_code(class_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, object]:
    """A new join code; the old one no longer joins. Enrolled students stay."""
    cls = await class_for_teacher(session, user, class_id)
    for _attempt in range(5):
        cls.join_code = new_join_code()
        try:
            await audit.append(session, actor_id=user.id, action="class.rotate_join_code", target_type="class",
                               target_id=class_id, details={})
            await session.commit()
            return dump(ClassOut, cls)
        except IntegrityError:  # another class holds this code: draw again
            await session.rollback()
            cls = await class_for_teacher(session, user, class_id)
    raise RuntimeError("could not allocate a unique join code")


async def _set_archived(ctx: ContextDep, session: SessionDep, user: CurrentUser, class_id: uuid.UUID,
                        archived_at: datetime | None) -> dict[str, object]:
    cls = await class_for_teacher(session, user, class_id)
    if (cls.archived_at is None) == (archived_at is None):
        return dump(ClassOut, cls)  # already so: nothing to record
    cls.archived_at = archived_at
    await audit.append(session, actor_id=user.id, action="class.archive" if archived_at else "class.unarchive",
                       target_type="class", target_id=class_id, details={})
    out = dump(ClassOut, cls)
    essay_ids = await essays.ids_for_class(session, class_id=class_id) if archived_at else []
    await session.commit()
    if essay_ids:  # writers reconnect read-only
        await close_sockets(ctx.hosts.bus, essay_ids=essay_ids, code=CloseCode.FORBIDDEN,
                            reason="the class was archived: read-only")
    return out


@router.post("/classes/{class_id}/archive", response_model=ClassOut)
async def archive_class(class_id: uuid.UUID, ctx: ContextDep, session: SessionDep,
                        user: CurrentUser) -> dict[str, object]:
    """Archive: read-only, no joins, hidden from default lists."""
    return await _set_archived(ctx, session, user, class_id, utcnow())


@router.post("/classes/{class_id}/unarchive", response_model=ClassOut)
async def unarchive_class(class_id: uuid.UUID, ctx: ContextDep, session: SessionDep,
                          user: CurrentUser) -> dict[str, object]:
    return await _set_archived(ctx, session, user, class_id, None)


@router.get("/classes/{class_id}/teachers", response_model=list[ClassTeacherOut])
async def list_teachers(class_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> list[ClassTeacherOut]:
    cls = await class_for_teacher(session, user, class_id)
    owner = await users.get(session, user_id=cls.teacher_id)
    rows = [owner] if owner is not None else []
    rows += await classes.co_teachers(session, class_id=class_id)
    return [ClassTeacherOut(teacher_id=t.id, name=t.name, email=t.email, owner=t.id == cls.teacher_id) for t in rows]


@router.post("/classes/{class_id}/teachers", status_code=201, response_model=list[ClassTeacherOut])
async def add_teacher(class_id: uuid.UUID, body: TeacherIn, session: SessionDep,
                      user: CurrentUser) -> list[ClassTeacherOut]:
    """Add a co-teacher (a user with the teacher role)."""
    cls = await class_for_owner(session, user, class_id)
    teacher = await users.get(session, user_id=body.teacher_id)
    if teacher is None or teacher.role != "teacher":
        raise ValidationFailed("teacher_id: no teacher with this id", code="unknown_teacher")
    if teacher.id == cls.teacher_id:
        raise Conflict("this teacher owns the class", code="already_teacher")
    if await classes.add_teacher(session, class_id=class_id, teacher_id=teacher.id):
        await audit.append(session, actor_id=user.id, action="class.add_teacher", target_type="class",
                           target_id=class_id, details={"teacher_id": str(teacher.id)})
    await session.commit()
    return await list_teachers(class_id, session, user)


@router.delete("/classes/{class_id}/teachers/{teacher_id}", status_code=204)
async def remove_teacher(class_id: uuid.UUID, teacher_id: uuid.UUID, ctx: ContextDep, session: SessionDep,
                         user: CurrentUser) -> Response:
    """Remove a co-teacher; the sockets they hold on the class and its essays close 4404 at once."""
    await class_for_owner(session, user, class_id)
    if not await classes.remove_teacher(session, class_id=class_id, teacher_id=teacher_id):
        raise NotFound("no such co-teacher in this class", code="unknown_teacher")
    await audit.append(session, actor_id=user.id, action="class.remove_teacher", target_type="class",
                       target_id=class_id, details={"teacher_id": str(teacher_id)})
    essay_ids = await essays.ids_for_class(session, class_id=class_id)
    await session.commit()
    await close_sockets(ctx.hosts.bus, of_user=teacher_id, class_id=class_id, essay_ids=essay_ids,
                        code=CloseCode.UNKNOWN_ESSAY, reason="you are no longer a teacher of this class")
    return Response(status_code=204)
