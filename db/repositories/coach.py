"""Coach chat turns on an essay: appended by its owner's questions, read by the owner and its teachers."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import CoachTurn
from db.repositories.pagination import Page, paginate


async def add(
    session: AsyncSession, *, essay_id: uuid.UUID, student_id: uuid.UUID, about: str, question: str, answer: str,
    source: str, flags: list[str], prompt_tokens: int = 0, completion_tokens: int = 0,
    item: dict[str, Any] | None = None,
) -> CoachTurn:
    """Add a turn in the caller's transaction (with its usage row, so both commit together)."""
    turn = CoachTurn(
        essay_id=essay_id, student_id=student_id, about=about, question=question, answer=answer, source=source,
        flags=flags, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        item_id=item.get("id") if item else None, item_kind=item.get("kind") if item else None,
        item_message=item.get("message") if item else None, quote=item.get("quote") if item else None,
    )
    session.add(turn)
    await session.flush()
    return turn


async def list_for_essay(session: AsyncSession, *, essay_id: uuid.UUID, limit: int, cursor: str | None
                         ) -> Page[CoachTurn]:
    """The essay's turns, oldest first."""
    return await paginate(session, select(CoachTurn).where(CoachTurn.essay_id == essay_id), model=CoachTurn,
                          limit=limit, cursor=cursor)


async def recent(session: AsyncSession, *, essay_id: uuid.UUID, limit: int) -> list[CoachTurn]:
    """The essay's latest `limit` turns, oldest first (context for a follow-up question)."""
    rows = (await session.scalars(select(CoachTurn).where(CoachTurn.essay_id == essay_id)
                                  .order_by(CoachTurn.created_at.desc(), CoachTurn.id.desc()).limit(limit))).all()
    return list(reversed(rows))
