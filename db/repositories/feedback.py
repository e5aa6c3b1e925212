"""Stored feedback sets (replaced whole per analysis run) and AI usage records."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from db.models import AiUsage, Assignment, Essay, FeedbackItem

COLUMNS = ("id", "kind", "source", "severity", "message", "suggestion", "quote", "start", "end", "anchor")


# One statement object, as `documents._STORE_SNAPSHOT`: every store of a typed essay replaces its set.
_DELETE_SET = delete(FeedbackItem).where(FeedbackItem.essay_id == bindparam("essay_id_"))


def replace(conn: Connection | Session, *, essay_id: uuid.UUID, items: list[dict[str, Any]]) -> None:
    """The essay's stored feedback set becomes `items` (synchronous: see `documents.append_updates`)."""
    conn.execute(_DELETE_SET, {"essay_id_": essay_id})
    if items:
        conn.execute(insert(cast(Table, FeedbackItem.__table__)), [
            {"essay_id": essay_id, **{k: item.get(k) for k in COLUMNS}} for item in items])


async def load(session: AsyncSession, *, essay_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = (await session.scalars(
        select(FeedbackItem).where(FeedbackItem.essay_id == essay_id).order_by(FeedbackItem.start))).all()
    return [{k: getattr(r, k) for k in COLUMNS} for r in rows]


async def assignment_prompt(session: AsyncSession, *, essay: Essay) -> str:
    if essay.assignment_id is None:
        return ""
    return await session.scalar(select(Assignment.prompt).where(Assignment.id == essay.assignment_id)) or ""


async def record_usage(
    session: AsyncSession, *, essay_id: uuid.UUID | None, class_id: uuid.UUID | None, provider: str, model: str,
    prompt_tokens: int, completion_tokens: int, submission_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
) -> None:
    session.add(AiUsage(essay_id=essay_id, class_id=class_id, submission_id=submission_id, provider=provider,
                        model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        user_id=user_id))
