"""Rubrics: weighted criteria with level score ranges, stored whole as JSON."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Rubric
from db.repositories.pagination import Page, paginate
from db.types import utcnow


async def create(
    session: AsyncSession, *, owner_id: uuid.UUID, title: str, criteria: list[dict[str, Any]]
) -> Rubric:
    rubric = Rubric(owner_id=owner_id, title=title, criteria=criteria)
    session.add(rubric)
    await session.flush()
    return rubric


async def get(session: AsyncSession, *, rubric_id: uuid.UUID) -> Rubric | None:
    return await session.get(Rubric, rubric_id)


async def list_for_owner(
    session: AsyncSession, *, owner_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[Rubric]:
    stmt = select(Rubric).where(Rubric.owner_id == owner_id)
    return await paginate(session, stmt, model=Rubric, limit=limit, cursor=cursor)


async def update(
    session: AsyncSession, *, rubric: Rubric, title: str | None, criteria: list[dict[str, Any]] | None
) -> Rubric:
    if title is not None:
        rubric.title = title
    if criteria is not None:
        rubric.criteria = criteria
    rubric.updated_at = utcnow()
    await session.flush()
    return rubric
