"""Assignments of a class."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Assignment
from db.repositories.pagination import Page, paginate


async def create(
    session: AsyncSession, *, class_id: uuid.UUID, title: str, prompt: str, rubric_id: uuid.UUID | None,
    due_at: datetime | None, late_policy: str, close_at: datetime | None = None,
) -> Assignment:
    assignment = Assignment(class_id=class_id, title=title, prompt=prompt, rubric_id=rubric_id,
                            due_at=due_at, late_policy=late_policy, close_at=close_at)
    session.add(assignment)
    await session.flush()
    return assignment


async def get(session: AsyncSession, *, assignment_id: uuid.UUID) -> Assignment | None:
    return await session.get(Assignment, assignment_id)


async def list_for_class(
    session: AsyncSession, *, class_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[Assignment]:
    stmt = select(Assignment).where(Assignment.class_id == class_id)
    return await paginate(session, stmt, model=Assignment, limit=limit, cursor=cursor)
