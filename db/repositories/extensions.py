"""Per-student extensions of an assignment's due date and hard close."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Extension


async def get(session: AsyncSession, *, assignment_id: uuid.UUID, student_id: uuid.UUID) -> Extension | None:
    return await session.get(Extension, (assignment_id, student_id))


async def put(
    session: AsyncSession, *, assignment_id: uuid.UUID, student_id: uuid.UUID, due_at: datetime,
    close_at: datetime | None, granted_by: uuid.UUID,
) -> Extension:
    ext = await get(session, assignment_id=assignment_id, student_id=student_id)
    if ext is None:
        ext = Extension(assignment_id=assignment_id, student_id=student_id, due_at=due_at, close_at=close_at,
                        granted_by=granted_by)
        session.add(ext)
    else:
        ext.due_at, ext.close_at, ext.granted_by = due_at, close_at, granted_by
    await session.flush()
    return ext


async def remove(session: AsyncSession, *, assignment_id: uuid.UUID, student_id: uuid.UUID) -> bool:
    result = await session.execute(delete(Extension).where(Extension.assignment_id == assignment_id,
                                                           Extension.student_id == student_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def for_assignments(session: AsyncSession, *, assignment_ids: list[uuid.UUID]
                          ) -> dict[tuple[uuid.UUID, uuid.UUID], Extension]:
    """Extensions keyed by (assignment id, student id)."""
    if not assignment_ids:
        return {}
    rows = await session.scalars(select(Extension).where(Extension.assignment_id.in_(assignment_ids)))
    return {(e.assignment_id, e.student_id): e for e in rows}


async def for_assignment(session: AsyncSession, *, assignment_id: uuid.UUID) -> list[Extension]:
    """An assignment's extensions (one per student at most), earliest due first."""
    stmt = select(Extension).where(Extension.assignment_id == assignment_id)
    return list((await session.scalars(stmt.order_by(Extension.due_at, Extension.student_id))).all())
