"""Classes, join codes, rosters and assignments."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Assignment, User
from db.repositories import assignments, audit, classes
from serve_app.api.access import assignment_for_member, class_for_member, class_for_teacher, rubric_for_reader
from serve_app.api.writability import effective_fields
from serve_app.deps import ContextDep, CurrentUser, PageDep, SessionDep, Student, Teacher
from serve_app.errors import Conflict, NotFound, ValidationFailed
from serve_app.schemas import (
    AssignmentIn,
    AssignmentOut,
    AssignmentPatch,
    ClassIn,
    ClassOut,
    JoinIn,
    PageOut,
    RosterRow,
    dump,
)

router = APIRouter(tags=["classes"])

# No 0/O/1/I/L: join codes are read aloud and copied off a whiteboard.
JOIN_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


def new_join_code(length: int = 8) -> str:
    return "".join(secrets.choice(JOIN_ALPHABET) for _ in range(length))


@router.post("/classes", status_code=201, response_model=ClassOut)
async def create_class(body: ClassIn, session: SessionDep, user: Teacher) -> dict[str, object]:
    for _attempt in range(5):
        try:
            cls = await classes.create(session, name=body.name, teacher_id=user.id, join_code=new_join_code())
            await session.commit()
            return dump(ClassOut, cls)
        except IntegrityError:  # join code collision: 31^8 makes a second one vanishingly rare
            await session.rollback()
    raise RuntimeError("could not allocate a unique join code")


@router.get("/classes", response_model=PageOut[ClassOut])
async def list_classes(session: SessionDep, user: CurrentUser, page: PageDep,
                       include_archived: bool = False) -> dict[str, object]:
    """The caller's classes (taught, co-taught or joined); archived ones only with `include_archived`."""
    result = await classes.list_for_user(session, user_id=user.id, limit=page.limit, cursor=page.cursor,
                                         include_archived=include_archived)
    return {"items": [dump(ClassOut, c) for c in result.items], "next_cursor": result.next_cursor}


@router.post("/classes/join", response_model=ClassOut)
async def join_class(body: JoinIn, session: SessionDep, user: Student) -> dict[str, object]:
    cls = await classes.get_by_join_code(session, join_code=body.join_code.upper())
    if cls is None:
        raise NotFound("no class has this join code", code="unknown_join_code")
    if cls.archived_at is not None:
        raise Conflict("the class is archived and takes no new students", code="class_archived")
    out = dump(ClassOut, cls)
    try:
        await classes.enroll(session, class_id=cls.id, student_id=user.id)
        await session.commit()
    except IntegrityError:
        await session.rollback()  # a concurrent join by the same student got there first
    return out


@router.get("/classes/{class_id}", response_model=ClassOut)
async def get_class(class_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, object]:
    return dump(ClassOut, await class_for_member(session, user, class_id))


@router.get("/classes/{class_id}/students", response_model=PageOut[RosterRow])
async def roster(
    class_id: uuid.UUID, ctx: ContextDep, session: SessionDep, user: CurrentUser, page: PageDep
) -> dict[str, object]:
    await class_for_teacher(session, user, class_id)
    rows, next_cursor = await classes.roster(session, class_id=class_id, limit=page.limit, cursor=page.cursor)
    live = await ctx.hosts.live_students(class_id)
    items = [RosterRow(**row, live=row["student_id"] in live) for row in rows]
    return {"items": items, "next_cursor": next_cursor}


@router.post("/classes/{class_id}/assignments", status_code=201, response_model=AssignmentOut)
async def create_assignment(
    class_id: uuid.UUID, body: AssignmentIn, session: SessionDep, user: CurrentUser
) -> dict[str, object]:
    cls = await class_for_teacher(session, user, class_id)
    if cls.archived_at is not None:
        raise Conflict("the class is archived: read-only", code="class_archived")
    if body.rubric_id is not None:
        await rubric_for_reader(session, user, body.rubric_id)
    assignment = await assignments.create(
        session, class_id=class_id, title=body.title, prompt=body.prompt, rubric_id=body.rubric_id,
        due_at=body.due_at, late_policy=body.late_policy, close_at=body.close_at,
    )
    await session.commit()
    return (await assignments_out(session, user, [assignment]))[0]


@router.patch("/assignments/{assignment_id}", response_model=AssignmentOut)
async def update_assignment(
    assignment_id: uuid.UUID, body: AssignmentPatch, session: SessionDep, user: CurrentUser
) -> dict[str, object]:
    """The class's teachers edit an assignment: title, prompt, rubric, late policy, due and hard
    close times (null clears the rubric or a time). Each change is written to the audit log;
    students see new deadlines on their next request, live class rows within their refresh."""
    assignment = await assignment_for_member(session, user, assignment_id)
    cls = await class_for_teacher(session, user, assignment.class_id)
    if cls.archived_at is not None:
        raise Conflict("the class is archived: read-only", code="class_archived")
    changes = body.model_dump(exclude_unset=True)
    for required in ("title", "prompt", "late_policy"):
        if required in changes and changes[required] is None:
            raise ValidationFailed(f"{required} cannot be null", code="validation_failed")
    if changes.get("rubric_id") is not None:
        await rubric_for_reader(session, user, changes["rubric_id"])
    due = changes.get("due_at", assignment.due_at)
    close = changes.get("close_at", assignment.close_at)
    if due is not None and close is not None and close < due:
        raise ValidationFailed("close_at must not be before due_at", code="validation_failed")
    before = {key: getattr(assignment, key) for key in changes}
    for key, value in changes.items():
        setattr(assignment, key, value)
    await audit.append(session, actor_id=user.id, action="assignment.update", target_type="assignment",
                       target_id=assignment.id,
                       details={key: {"from": _plain(before[key]), "to": _plain(value)}
                                for key, value in changes.items()})
    await session.commit()
    await session.refresh(assignment)
    return (await assignments_out(session, user, [assignment]))[0]


def _plain(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if isinstance(value, uuid.UUID) else value)


@router.get("/classes/{class_id}/assignments", response_model=PageOut[AssignmentOut])
async def list_assignments(
    class_id: uuid.UUID, session: SessionDep, user: CurrentUser, page: PageDep
) -> dict[str, object]:
    """The class's assignments; each carries the caller's `effective_due_at` / `effective_close_at`
    (a student's extension applied) and `extended`."""
    await class_for_member(session, user, class_id)
    result = await assignments.list_for_class(session, class_id=class_id, limit=page.limit,
                                              cursor=page.cursor)
    return {"items": await assignments_out(session, user, result.items), "next_cursor": result.next_cursor}


async def assignments_out(session: AsyncSession, user: User, rows: Sequence[Assignment]) -> list[dict[str, object]]:
    """`AssignmentOut`s with the caller's own due time and close (`effective_fields`)."""
    fields = await effective_fields(session, student_id=user.id if user.role == "student" else None, rows=rows)
    return [AssignmentOut.model_validate(a).model_copy(update=fields[a.id]).model_dump(mode="json") for a in rows]
