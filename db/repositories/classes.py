"""Classes, enrollments and rosters."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Class, Enrollment, Essay, User
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


def _member_clause(user_id: uuid.UUID) -> Any:
    enrolled = exists().where(Enrollment.class_id == Class.id, Enrollment.student_id == user_id)
    return or_(Class.teacher_id == user_id, enrolled)


async def list_for_user(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[Class]:
    stmt = select(Class).where(_member_clause(user_id))
    return await paginate(session, stmt, model=Class, limit=limit, cursor=cursor)


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
