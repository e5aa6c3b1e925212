"""Classes, join codes, rosters and assignments."""

from __future__ import annotations

import secrets
import uuid

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from db.repositories import assignments, classes
from serve_app.api.access import class_for_member, class_for_teacher
from serve_app.deps import ContextDep, CurrentUser, PageDep, SessionDep, Student, Teacher
from serve_app.errors import Conflict, NotFound
from serve_app.schemas import (
    AssignmentIn,
    AssignmentOut,
    ClassIn,
    ClassOut,
    JoinIn,
    PageOut,
    RosterRow,
    dump,
)
from serve_app.api.access import rubric_for_reader

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
    live = await ctx.live.live_students(class_id)
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
    return dump(AssignmentOut, assignment)


@router.get("/classes/{class_id}/assignments", response_model=PageOut[AssignmentOut])
async def list_assignments(
    class_id: uuid.UUID, session: SessionDep, user: CurrentUser, page: PageDep
) -> dict[str, object]:
    await class_for_member(session, user, class_id)
    result = await assignments.list_for_class(session, class_id=class_id, limit=page.limit,
                                              cursor=page.cursor)
    return {"items": [dump(AssignmentOut, a) for a in result.items], "next_cursor": result.next_cursor}
