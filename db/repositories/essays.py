"""Essays: rows, visibility and listing. The live document path (update log) lives beside it."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import load_only

from db.models import Essay
from db.repositories.classes import taught_class_ids
from db.repositories.pagination import Page, paginate


async def create(
    session: AsyncSession, *, owner_id: uuid.UUID, title: str, assignment_id: uuid.UUID | None,
    class_id: uuid.UUID | None,
) -> Essay:
    essay = Essay(owner_id=owner_id, title=title, assignment_id=assignment_id, class_id=class_id)
    session.add(essay)
    await session.flush()
    return essay


async def get(session: AsyncSession, *, essay_id: uuid.UUID) -> Essay | None:
    return await session.get(Essay, essay_id)


_IDS_ONLY = load_only(Essay.owner_id, Essay.class_id, Essay.assignment_id, raiseload=True)


def _visible_clause(user_id: uuid.UUID) -> Any:
    return or_(Essay.owner_id == user_id, Essay.class_id.in_(taught_class_ids(user_id)))


async def get_visible(session: AsyncSession, *, essay_id: uuid.UUID, user_id: uuid.UUID,
                      ids_only: bool = False) -> Essay | None:
    """The essay if `user_id` owns it or teaches its class; None otherwise (callers answer 404).
    `ids_only` (a socket's handshake): only its owner, class and assignment are loaded (any other
    attribute raises), not its text and document state, which a socket never reads from the row
    and which cost a decryption each when sealed."""
    query = select(Essay).where(Essay.id == essay_id, _visible_clause(user_id))
    return await session.scalar(query.options(_IDS_ONLY) if ids_only else query)


async def list_visible(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None,
    assignment_id: uuid.UUID | None = None, class_id: uuid.UUID | None = None,
) -> Page[Essay]:
    stmt = select(Essay).where(_visible_clause(user_id))
    if assignment_id is not None:
        stmt = stmt.where(Essay.assignment_id == assignment_id)
    if class_id is not None:
        stmt = stmt.where(Essay.class_id == class_id)
    return await paginate(session, stmt, model=Essay, limit=limit, cursor=cursor)


async def ids_for_class(session: AsyncSession, *, class_id: uuid.UUID) -> list[uuid.UUID]:
    """The ids of the class's essays (their rows hold whole documents: not loaded for this)."""
    return list((await session.scalars(select(Essay.id).where(Essay.class_id == class_id))).all())


async def list_for_class_by_activity(
    session: AsyncSession, *, class_id: uuid.UUID, essay_ids: list[uuid.UUID] | None = None,
) -> list[Essay]:
    """The class's essays (or those of `essay_ids` still in it), least recently updated first."""
    stmt = select(Essay).where(Essay.class_id == class_id)
    if essay_ids is not None:
        stmt = stmt.where(Essay.id.in_(essay_ids))
    return list((await session.scalars(stmt.order_by(Essay.updated_at, Essay.id))).all())


async def deadline_keys_for_class(
    session: AsyncSession, *, class_id: uuid.UUID, essay_ids: list[uuid.UUID] | None = None,
) -> list[Essay]:
    """The class's essays (or those of `essay_ids` still in it) with only what a deadline status
    needs loaded (id, assignment, owner, submitted_at): not their text or document state."""
    stmt = (select(Essay).where(Essay.class_id == class_id)
            .options(load_only(Essay.id, Essay.assignment_id, Essay.owner_id, Essay.submitted_at)))
    if essay_ids is not None:
        stmt = stmt.where(Essay.id.in_(essay_ids))
    return list((await session.scalars(stmt)).all())


async def list_for_owner_assignment(session: AsyncSession, *, owner_id: uuid.UUID,
                                    assignment_id: uuid.UUID) -> list[Essay]:
    """One student's essays on one assignment (usually one)."""
    stmt = select(Essay).where(Essay.owner_id == owner_id, Essay.assignment_id == assignment_id)
    return list((await session.scalars(stmt.order_by(Essay.created_at, Essay.id))).all())


async def remove(session: AsyncSession, *, essay_id: uuid.UUID) -> None:
    await session.execute(delete(Essay).where(Essay.id == essay_id))
