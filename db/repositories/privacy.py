"""A user's own data: everything to export (`GET /me/export`) and everything to delete when an
admin deletes a student (`DELETE /admin/users/{id}`). README "Privacy" lists both.

Deletion names every table it empties rather than trusting foreign-key cascades alone (SQLite
enforces them only with its pragma on; `ai_usage` and `submissions.essay_id` are SET NULL, which
would leave rows behind). tests/integration/test_privacy.py checks every table of the metadata
afterwards, so a table added later that holds a student's rows fails it until it is listed here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    AiUsage,
    Class,
    CoachTurn,
    Comment,
    Enrollment,
    Essay,
    EssayUpdate,
    Extension,
    FeedbackItem,
    RefreshToken,
    Revision,
    ScoreOverride,
    Submission,
    User,
    WebhookSecret,
    WsTicket,
)


@dataclass(frozen=True)
class Footprint:
    """The ids a user's rows hang from."""

    essay_ids: list[uuid.UUID]
    submission_ids: list[uuid.UUID]


async def footprint(session: AsyncSession, *, user_id: uuid.UUID) -> Footprint:
    essay_ids = list((await session.scalars(
        select(Essay.id).where(Essay.owner_id == user_id).order_by(Essay.created_at, Essay.id))).all())
    submission_ids = list((await session.scalars(
        select(Submission.id).where(_submissions_of(user_id, essay_ids)).order_by(Submission.created_at,
                                                                                 Submission.id))).all())
    return Footprint(essay_ids, submission_ids)


def _submissions_of(user_id: uuid.UUID, essay_ids: list[uuid.UUID]) -> ColumnElement[bool]:
    return or_(Submission.requester_id == user_id, Submission.essay_id.in_(essay_ids) if essay_ids else false())


def _usage_of(user_id: uuid.UUID, found: Footprint) -> ColumnElement[bool]:
    return or_(AiUsage.user_id == user_id,
               AiUsage.essay_id.in_(found.essay_ids) if found.essay_ids else false(),
               AiUsage.submission_id.in_(found.submission_ids) if found.submission_ids else false())


# --- export -------------------------------------------------------------------------------------

async def memberships(session: AsyncSession, *, user_id: uuid.UUID) -> list[tuple[Class, Enrollment, User]]:
    """The classes the user is enrolled in, each with its enrollment and its (owning) teacher."""
    rows = await session.execute(
        select(Class, Enrollment, User).join(Enrollment, Enrollment.class_id == Class.id)
        .join(User, User.id == Class.teacher_id).where(Enrollment.student_id == user_id)
        .order_by(Enrollment.joined_at, Class.id))
    return [(c, e, t) for c, e, t in rows.all()]


async def extensions(session: AsyncSession, *, user_id: uuid.UUID) -> list[Extension]:
    return list((await session.scalars(
        select(Extension).where(Extension.student_id == user_id).order_by(Extension.created_at))).all())


async def essays(session: AsyncSession, *, user_id: uuid.UUID) -> list[Essay]:
    return list((await session.scalars(
        select(Essay).where(Essay.owner_id == user_id).order_by(Essay.created_at, Essay.id))).all())


async def revisions(session: AsyncSession, *, essay_id: uuid.UUID) -> list[Revision]:
    return list((await session.scalars(
        select(Revision).where(Revision.essay_id == essay_id).order_by(Revision.n))).all())


async def feedback_items(session: AsyncSession, *, essay_id: uuid.UUID) -> list[FeedbackItem]:
    return list((await session.scalars(
        select(FeedbackItem).where(FeedbackItem.essay_id == essay_id).order_by(FeedbackItem.start,
                                                                               FeedbackItem.id))).all())


async def coach_turns(session: AsyncSession, *, essay_id: uuid.UUID) -> list[CoachTurn]:
    return list((await session.scalars(
        select(CoachTurn).where(CoachTurn.essay_id == essay_id).order_by(CoachTurn.created_at, CoachTurn.id))).all())


async def comments(session: AsyncSession, *, essay_id: uuid.UUID) -> list[tuple[Comment, User]]:
    """Comments on the essay with their authors (teachers)."""
    rows = await session.execute(select(Comment, User).join(User, User.id == Comment.author_id)
                                 .where(Comment.essay_id == essay_id).order_by(Comment.created_at, Comment.id))
    return [(c, u) for c, u in rows.all()]


async def submissions(session: AsyncSession, *, user_id: uuid.UUID, found: Footprint) -> list[Submission]:
    return list((await session.scalars(
        select(Submission).where(_submissions_of(user_id, found.essay_ids))
        .order_by(Submission.created_at, Submission.id))).all())


async def ai_usage(session: AsyncSession, *, user_id: uuid.UUID, found: Footprint) -> list[AiUsage]:
    return list((await session.scalars(
        select(AiUsage).where(_usage_of(user_id, found)).order_by(AiUsage.created_at, AiUsage.id))).all())


# --- deletion -----------------------------------------------------------------------------------

async def delete_user(session: AsyncSession, *, user_id: uuid.UUID, found: Footprint) -> dict[str, int]:
    """Delete the user and every row of theirs, in the caller's transaction (children first, so
    no cascade is relied on); returns rows deleted per table. Their rate buckets are the caller's
    (`BucketStore.forget`: the keys depend on the limiter, and may live in Redis)."""
    counts: dict[str, int] = {}

    async def gone(table: str, stmt: Any) -> None:
        result = await session.execute(stmt)
        counts[table] = counts.get(table, 0) + int(result.rowcount or 0)  # type: ignore[attr-defined]

    essays_, subs = found.essay_ids, found.submission_ids
    await gone("ai_usage", delete(AiUsage).where(_usage_of(user_id, found)))
    if subs:
        await gone("score_overrides", delete(ScoreOverride).where(ScoreOverride.submission_id.in_(subs)))
        await gone("submissions", delete(Submission).where(Submission.id.in_(subs)))
    if essays_:
        for model in (EssayUpdate, Revision, FeedbackItem, Comment, CoachTurn):
            await gone(model.__tablename__, delete(model).where(model.essay_id.in_(essays_)))
        await gone("essays", delete(Essay).where(Essay.id.in_(essays_)))
    # What the user wrote on others' essays (students write no comments today; teachers would).
    await gone("comments", delete(Comment).where(Comment.author_id == user_id))
    owned: tuple[tuple[Any, Any], ...] = ((Enrollment, Enrollment.student_id), (Extension, Extension.student_id),
                          (RefreshToken, RefreshToken.user_id), (WsTicket, WsTicket.user_id),
                          (WebhookSecret, WebhookSecret.user_id))
    for model, column in owned:
        await gone(model.__tablename__, delete(model).where(column == user_id))
    await gone("users", delete(User).where(User.id == user_id))
    return {table: n for table, n in counts.items() if n}
