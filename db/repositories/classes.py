"""Classes, enrollments and rosters."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Class, ClassTeacher, Enrollment, Essay, Submission, User
from db.repositories.pagination import BadCursor, Page, decode_cursor, encode_cursor, paginate


async def create(session: AsyncSession, *, name: str, teacher_id: uuid.UUID, join_code: str) -> Class:
    cls = Class(name=name, teacher_id=teacher_id, join_code=join_code)
    session.add(cls)
    await session.flush()
    return cls


async def get(session: AsyncSession, *, class_id: uuid.UUID) -> Class | None:
    return await session.get(Class, class_id)


async def get_by_join_code(session: AsyncSession, *, join_code: str) -> Class | None:
    return await session.scalar(select(Class).where(Class.join_code == join_code))


def teaches_clause(user_id: uuid.UUID) -> Any:
    """SQL: `user_id` teaches `Class` (its owner or a co-teacher). The one definition of "teacher of
    class": access checks, essay visibility and sockets all use it or `teaches`."""
    co_teacher = exists().where(ClassTeacher.class_id == Class.id, ClassTeacher.teacher_id == user_id)
    return or_(Class.teacher_id == user_id, co_teacher)


def taught_class_ids(user_id: uuid.UUID) -> Any:
    """Subquery: ids of the classes `user_id` teaches."""
    return select(Class.id).where(teaches_clause(user_id))


async def teaches(session: AsyncSession, *, cls: Class, user_id: uuid.UUID) -> bool:
    if cls.teacher_id == user_id:
        return True
    return (await session.get(ClassTeacher, (cls.id, user_id))) is not None


def _member_clause(user_id: uuid.UUID) -> Any:
    enrolled = exists().where(Enrollment.class_id == Class.id, Enrollment.student_id == user_id)
    return or_(teaches_clause(user_id), enrolled)


async def list_for_user(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None, include_archived: bool = False,
) -> Page[Class]:
    stmt = select(Class).where(_member_clause(user_id))
    if not include_archived:
        stmt = stmt.where(Class.archived_at.is_(None))
    return await paginate(session, stmt, model=Class, limit=limit, cursor=cursor)


async def add_teacher(session: AsyncSession, *, class_id: uuid.UUID, teacher_id: uuid.UUID) -> bool:
    """Add a co-teacher; False when already one."""
    if await session.get(ClassTeacher, (class_id, teacher_id)) is not None:
        return False
    session.add(ClassTeacher(class_id=class_id, teacher_id=teacher_id))
    await session.flush()
    return True


async def remove_teacher(session: AsyncSession, *, class_id: uuid.UUID, teacher_id: uuid.UUID) -> bool:
    result = await session.execute(delete(ClassTeacher).where(ClassTeacher.class_id == class_id,
                                                              ClassTeacher.teacher_id == teacher_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def co_teachers(session: AsyncSession, *, class_id: uuid.UUID) -> list[User]:
    stmt = (select(User).join(ClassTeacher, ClassTeacher.teacher_id == User.id)
            .where(ClassTeacher.class_id == class_id).order_by(ClassTeacher.added_at, User.id))
    return list((await session.scalars(stmt)).all())


async def unenroll(session: AsyncSession, *, class_id: uuid.UUID, student_id: uuid.UUID) -> list[uuid.UUID] | None:
    """Remove a student: None when not enrolled, else the ids of their essays in the class, which
    leave it (class_id cleared: the student keeps them as private essays, the teachers lose sight
    of them and of their submissions)."""
    result = await session.execute(delete(Enrollment).where(Enrollment.class_id == class_id,
                                                            Enrollment.student_id == student_id))
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    essay_ids = list((await session.scalars(
        select(Essay.id).where(Essay.class_id == class_id, Essay.owner_id == student_id))).all())
    await session.execute(update(Essay).where(Essay.class_id == class_id, Essay.owner_id == student_id)
                          .values(class_id=None))
    await session.execute(update(Submission).where(Submission.class_id == class_id,
                                                   Submission.requester_id == student_id).values(class_id=None))
    return essay_ids


async def is_member(session: AsyncSession, *, class_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    stmt = select(Class.id).where(Class.id == class_id, _member_clause(user_id))
    return (await session.scalar(stmt)) is not None


async def is_enrolled(session: AsyncSession, *, class_id: uuid.UUID, student_id: uuid.UUID) -> bool:
    return (await session.get(Enrollment, (class_id, student_id))) is not None


async def enroll(session: AsyncSession, *, class_id: uuid.UUID, student_id: uuid.UUID) -> bool:
    """Enroll a student; False when already enrolled (joining twice is harmless)."""
    if await is_enrolled(session, class_id=class_id, student_id=student_id):
        return False
    session.add(Enrollment(class_id=class_id, student_id=student_id))
    await session.flush()
    return True


async def roster(
    session: AsyncSession, *, class_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Enrolled students with their essay count and last activity in this class, by join order."""
    essay_stats = (
        select(Essay.owner_id.label("owner_id"), func.count(Essay.id).label("n"),
               func.max(Essay.updated_at).label("last"))
        .where(Essay.class_id == class_id)
        .group_by(Essay.owner_id)
        .subquery()
    )
    stmt = (
        select(User, Enrollment.joined_at, essay_stats.c.n, essay_stats.c.last)
        .join(Enrollment, Enrollment.student_id == User.id)
        .outerjoin(essay_stats, essay_stats.c.owner_id == User.id)
        .where(Enrollment.class_id == class_id)
    )
    if cursor:
        joined, sid = decode_cursor(cursor)
        try:
            student_id = uuid.UUID(sid)
        except ValueError as exc:
            raise BadCursor("cursor is malformed") from exc
        stmt = stmt.where(or_(Enrollment.joined_at > joined,
                              (Enrollment.joined_at == joined) & (User.id > student_id)))
    rows = (await session.execute(stmt.order_by(Enrollment.joined_at, User.id).limit(limit + 1))).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1][1], rows[-1][0].id)
    items = [
        {"student_id": u.id, "name": u.name, "email": u.email, "essay_count": n or 0,
         "last_active_at": last, "joined_at": joined}
        for u, joined, n, last in rows
    ]
    return items, next_cursor


async def students_of(session: AsyncSession, *, class_id: uuid.UUID) -> list[User]:
    stmt = (select(User).join(Enrollment, Enrollment.student_id == User.id)
            .where(Enrollment.class_id == class_id).order_by(User.name, User.id))
    return list((await session.scalars(stmt)).all())
