"""Submissions (queued full-analysis jobs), their score overrides and AI usage.

Job claiming is one conditional UPDATE per job (``WHERE status = seen AND lease expired``) whose
rowcount says who won; it is atomic on PostgreSQL (the row lock re-checks the WHERE) and on SQLite
(writers are serialised), so any number of runners may poll the same table.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AiUsage, Essay, ScoreOverride, Submission
from db.repositories.pagination import Page, paginate

RUNNABLE = ("queued", "running")
FINISHED = ("done", "failed")


async def create(
    session: AsyncSession, *, requester_id: uuid.UUID, text: str, title: str = "",
    essay_id: uuid.UUID | None = None, assignment_id: uuid.UUID | None = None,
    rubric_id: uuid.UUID | None = None, class_id: uuid.UUID | None = None, revision_n: int | None = None,
    idempotency_key: str | None = None, request_hash: str | None = None, callback_url: str | None = None,
    late: bool = False,
) -> Submission:
    submission = Submission(
        requester_id=requester_id, text=text, title=title, essay_id=essay_id, assignment_id=assignment_id,
        rubric_id=rubric_id, class_id=class_id, revision_n=revision_n, idempotency_key=idempotency_key,
        request_hash=request_hash, callback_url=callback_url, late=late, status="queued", attempts=0,
        callback_attempts=0,
    )
    session.add(submission)
    await session.flush()
    return submission


async def get(session: AsyncSession, *, submission_id: uuid.UUID) -> Submission | None:
    return await session.get(Submission, submission_id, populate_existing=True)


async def get_by_key(session: AsyncSession, *, requester_id: uuid.UUID, idempotency_key: str) -> Submission | None:
    return await session.scalar(select(Submission).where(
        Submission.requester_id == requester_id, Submission.idempotency_key == idempotency_key))


async def list_for_requester(
    session: AsyncSession, *, requester_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[Submission]:
    stmt = select(Submission).where(Submission.requester_id == requester_id)
    return await paginate(session, stmt, model=Submission, limit=limit, cursor=cursor)


async def list_for_essay(
    session: AsyncSession, *, essay_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[Submission]:
    stmt = select(Submission).where(Submission.essay_id == essay_id)
    return await paginate(session, stmt, model=Submission, limit=limit, cursor=cursor)


async def essay_owner(session: AsyncSession, *, essay_id: uuid.UUID) -> uuid.UUID | None:
    return await session.scalar(select(Essay.owner_id).where(Essay.id == essay_id))


# --- score overrides ------------------------------------------------------------------------


async def add_overrides(
    session: AsyncSession, *, submission_id: uuid.UUID, teacher_id: uuid.UUID, rows: list[dict[str, Any]],
    now: datetime,
) -> None:
    """Append one override per criterion; earlier ones stay as the audit trail."""
    for row in rows:
        session.add(ScoreOverride(submission_id=submission_id, teacher_id=teacher_id, created_at=now,
                                  criterion_id=row["criterion_id"], points=row["points"],
                                  level=row.get("level"), rationale=row.get("rationale") or ""))
    await session.flush()


async def latest_overrides(session: AsyncSession, *, submission_id: uuid.UUID) -> list[ScoreOverride]:
    """The newest override of each criterion."""
    rows = (await session.scalars(
        select(ScoreOverride).where(ScoreOverride.submission_id == submission_id)
        .order_by(ScoreOverride.created_at, ScoreOverride.id)
    )).all()
    latest: dict[str, ScoreOverride] = {}
    for row in rows:
        latest[row.criterion_id] = row
    return list(latest.values())


# --- job runner -----------------------------------------------------------------------------


def _lease_free(now: datetime) -> Any:
    return or_(Submission.lease_until.is_(None), Submission.lease_until < now)


async def claimable(session: AsyncSession, *, now: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
    """(id, status) of jobs to run (queued, or running under an expired lease: its worker died) and
    of finished jobs whose webhook is still pending under an expired lease, oldest first."""
    stmt = (
        select(Submission.id, Submission.status)
        .where(_lease_free(now), or_(
            Submission.status.in_(RUNNABLE),
            and_(Submission.status.in_(FINISHED), Submission.callback_status == "pending"),
        ))
        .order_by(Submission.created_at, Submission.id).limit(limit)
    )
    return [(row[0], row[1]) for row in (await session.execute(stmt)).all()]


async def queue_stats(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many submissions wait in `queued`, and when the oldest of them was created."""
    row = (await session.execute(
        select(func.count(), func.min(Submission.created_at)).where(Submission.status == "queued"))).one()
    return int(row[0]), row[1]


async def claim(
    session: AsyncSession, *, submission_id: uuid.UUID, seen_status: str, worker_id: str, now: datetime,
    lease_until: datetime,
) -> bool:
    """Take the job's lease if nobody holds it; runnable jobs become `running` and count an attempt."""
    values: dict[str, Any] = {"worker_id": worker_id, "lease_until": lease_until}
    if seen_status in RUNNABLE:
        values.update(status="running", attempts=Submission.attempts + 1, started_at=now)
    result = await session.execute(
        update(Submission)
        .where(Submission.id == submission_id, Submission.status == seen_status, _lease_free(now))
        .values(**values).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult


async def renew_lease(
    session: AsyncSession, *, submission_id: uuid.UUID, worker_id: str, lease_until: datetime
) -> bool:
    result = await session.execute(
        update(Submission).where(Submission.id == submission_id, Submission.worker_id == worker_id)
        .values(lease_until=lease_until).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult


async def update_held(session: AsyncSession, *, submission_id: uuid.UUID, held_by: str, **values: Any) -> bool:
    """Write `values` only while `held_by` still holds the job (a worker that lost its lease to a
    newer one must not overwrite that one's result)."""
    result = await session.execute(
        update(Submission).where(Submission.id == submission_id, Submission.worker_id == held_by)
        .values(**values).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult


async def release_worker(session: AsyncSession, *, worker_id: str) -> None:
    """On a clean shutdown hand this worker's jobs back at once instead of waiting for the lease."""
    await session.execute(
        update(Submission).where(Submission.worker_id == worker_id, Submission.status == "running")
        .values(status="queued", worker_id=None, lease_until=None, attempts=Submission.attempts - 1)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Submission).where(Submission.worker_id == worker_id)
        .values(worker_id=None, lease_until=None).execution_options(synchronize_session=False)
    )


# --- AI usage -------------------------------------------------------------------------------


async def add_usage(
    session: AsyncSession, *, submission_id: uuid.UUID, essay_id: uuid.UUID | None, class_id: uuid.UUID | None,
    provider: str, model: str, prompt_tokens: int, completion_tokens: int, now: datetime,
    user_id: uuid.UUID | None = None,
) -> None:
    session.add(AiUsage(submission_id=submission_id, essay_id=essay_id, class_id=class_id, provider=provider,
                        model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        created_at=now, user_id=user_id))
    await session.flush()


async def tokens_used(
    session: AsyncSession, *, essay_id: uuid.UUID | None, class_id: uuid.UUID | None
) -> tuple[int, int]:
    """Tokens already spent on this essay and this class (across processes and restarts)."""
    total = func.coalesce(func.sum(AiUsage.prompt_tokens + AiUsage.completion_tokens), 0)
    by_essay = await session.scalar(select(total).where(AiUsage.essay_id == essay_id)) if essay_id else 0
    by_class = await session.scalar(select(total).where(AiUsage.class_id == class_id)) if class_id else 0
    return int(by_essay or 0), int(by_class or 0)


async def tokens_used_by_user(session: AsyncSession, *, user_id: uuid.UUID, since: datetime) -> int:
    """Tokens counted against `user_id` since `since` (submissions and live typing, every process)."""
    total = func.coalesce(func.sum(AiUsage.prompt_tokens + AiUsage.completion_tokens), 0)
    used = await session.scalar(select(total).where(AiUsage.user_id == user_id, AiUsage.created_at >= since))
    return int(used or 0)


async def usage_for(session: AsyncSession, *, submission_id: uuid.UUID) -> list[AiUsage]:
    return list((await session.scalars(select(AiUsage).where(AiUsage.submission_id == submission_id))).all())
