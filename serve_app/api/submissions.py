"""Submissions: finished essays queued for full analysis and rubric scoring, and score overrides.

- `POST /submissions` (any user, e.g. an API client) and `POST /essays/{id}/submit` (the essay's
  owner) store a `queued` job before answering 202 with the submission, `submission_id` and a
  `Location`; the job runner (serve_app/jobs.py) picks it up. Retries are safe with `Idempotency-Key`:
  per requester, the same key and body give the same submission; the same key with another body is
  409 `idempotency_conflict`. The body's fingerprint is the SHA-256 of its canonical JSON (parsed
  fields with defaults, keys sorted, no whitespace).
- Spend: both POSTs share a per-user bucket (`SUBMISSIONS_PER_USER_PER_HOUR`, shared by replicas
  like the login throttle) and refuse once the user's stored AI usage today (UTC) reaches
  `AI_TOKEN_BUDGET_PER_USER_PER_DAY`: 429 `rate_limited` / `token_budget_exhausted` with
  `Retry-After`. An Idempotency-Key replay is answered before either check and counts for neither.
  The job runner caps each job's LLM spend at the user's remaining allowance (serve_app/jobs.py).
- `GET /submissions/{id}`: the requester, the essay's owner, or the teacher of the class (of the
  essay or assignment); anyone else gets 404.
- `GET /essays/{id}/submissions`: the essay's submissions, oldest first, for whoever may read the
  essay (its owner and the teacher of its class): how a teacher finds a student's latest one.
- `PUT /submissions/{id}/scores`: the class's teacher confirms or changes scores. AI scores are
  proposals (`final: false`); only teacher-confirmed scores are `final`. For a submission in no
  class, the rubric's author (a teacher) may grade it. The essay's event socket gets a
  `submission` event (`scores_updated: true`) so the student's open editor shows the new scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from actors.analysis.rubric import Criterion, parse_rubric
from actors.metrics import metric
from db.models import Assignment, Submission, User
from db.repositories import assignments, audit, documents, rubrics
from db.repositories import submissions as repo
from db.types import utcnow
from serve_app.api.access import (
    assignment_for_member,
    essay_for_owner,
    essay_for_reader,
    rubric_for_reader,
    teaches_class_id,
)
from serve_app.api.writability import check_writable, flagged_late, refuse_closed, student_deadline
from serve_app.deps import Context, ContextDep, CurrentUser, PageDep, SessionDep
from serve_app.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, RateLimited, ValidationFailed
from serve_app.jobs import day_start, effective_scores, rubric_document
from serve_app.jobs_wiring import wake
from serve_app.schemas import PageOut, ScoresIn, SubmissionIn, SubmissionOut, SubmissionSummary, dump
from serve_app.webhooks import UnsafeCallbackUrl, check_url_target

router = APIRouter(tags=["submissions"])
log = logging.getLogger("essaycoach.submissions")

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200,
           description="Makes retries safe: the same key and body return the same submission"),
]


def request_fingerprint(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def late_flag(session: AsyncSession, assignment: Assignment | None, student_id: uuid.UUID,
                    now: datetime) -> bool:
    """Apply the assignment's deadline for this student (their extension included): past the hard
    close 409 `assignment_closed` (`past_due` under the `reject` policy); late under `flag` marks it."""
    deadline = await student_deadline(session, assignment=assignment, student_id=student_id, submitted_at=None,
                                      now=now)
    refuse_closed(assignment, deadline)
    return flagged_late(assignment, deadline)


async def _criteria(session: AsyncSession, sub: Submission) -> list[Criterion]:
    rubric = await rubrics.get(session, rubric_id=sub.rubric_id) if sub.rubric_id else None
    return parse_rubric(rubric_document(rubric)) if rubric is not None else []


async def submission_view(session: AsyncSession, sub: Submission) -> dict[str, Any]:
    overrides = await repo.latest_overrides(session, submission_id=sub.id)
    scores = effective_scores(sub.ai_scores, overrides, await _criteria(session, sub))
    out = SubmissionOut.model_validate({
        **dump(SubmissionSummary, sub), "submission_id": sub.id, "class_id": sub.class_id,
        "started_at": sub.started_at, "attempts": sub.attempts, "error": sub.error,
        "callback_status": sub.callback_status,
        "feedback": {"items": (sub.feedback or {}).get("items", [])}, "scores": scores,
    })
    return out.model_dump(mode="json")


async def _accepted(session: AsyncSession, response: Response, sub: Submission) -> dict[str, Any]:
    response.headers["Location"] = f"/api/v1/submissions/{sub.id}"
    return await submission_view(session, sub)


async def check_spend(ctx: Context, session: AsyncSession, user: User) -> None:
    """429 when the user's submission bucket is full or today's token budget is spent."""
    if ctx.submissions_limit is not None:
        wait = await ctx.submissions_limit.wait(str(user.id))
        if wait:
            raise RateLimited("too many submissions; try again later", retry_after=wait)
    await check_token_budget(ctx, session, user)


async def check_token_budget(ctx: Context, session: AsyncSession, user: User, *, needed: int = 0) -> None:
    """429 `token_budget_exhausted` (`Retry-After`: UTC midnight) when the user's stored AI usage
    today (every kind: submissions, live feedback, the coach) plus `needed` exceeds
    `AI_TOKEN_BUDGET_PER_USER_PER_DAY` (with `needed` 0: once it is reached)."""
    budget = ctx.settings.ai_token_budget_per_user_per_day
    if not budget:
        return
    now = utcnow()
    used = await repo.tokens_used_by_user(session, user_id=user.id, since=day_start(now))
    if used >= budget or used + needed > budget:
        tomorrow = day_start(now) + timedelta(days=1)
        metric("essaycoach_ai_budget_refusals_total").labels("user_day").inc()
        raise RateLimited("today's AI token budget is spent", code="token_budget_exhausted",
                          retry_after=math.ceil((tomorrow - now).total_seconds()))


async def count_submission(ctx: Context, user_id: uuid.UUID) -> None:
    if ctx.submissions_limit is not None:
        await ctx.submissions_limit.hit(str(user_id))


def same_request(existing: Submission, fingerprint: str) -> Submission:
    if existing.request_hash != fingerprint:
        raise Conflict("this Idempotency-Key was used with a different request body", code="idempotency_conflict")
    return existing


async def _create_once(
    session: AsyncSession, user: User, key: str | None, fingerprint: str,
    create: Callable[[], Awaitable[Submission]],
) -> tuple[Submission, bool]:
    """(submission, created): an earlier submission with this key and body, or a new one."""
    requester_id = user.id  # read now: a rollback below expires every loaded object
    if key is not None:
        existing = await repo.get_by_key(session, requester_id=requester_id, idempotency_key=key)
        if existing is not None:
            return same_request(existing, fingerprint), False
    try:
        sub = await create()
        await session.commit()
    except IntegrityError:
        # A concurrent retry with the same key won the unique constraint: answer with its job.
        await session.rollback()
        existing = await repo.get_by_key(session, requester_id=requester_id, idempotency_key=key) if key else None
        if existing is None:
            raise
        return same_request(existing, fingerprint), False
    return sub, True


@router.post("/submissions", status_code=202, response_model=SubmissionOut)
async def create_submission(
    body: SubmissionIn, response: Response, ctx: ContextDep, session: SessionDep, user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    if len(body.text) > ctx.settings.max_essay_chars:
        raise PayloadTooLarge(f"essay text is {len(body.text)} characters; the limit is "
                              f"{ctx.settings.max_essay_chars}", code="essay_too_large")
    fingerprint = request_fingerprint(body.model_dump(mode="json"))
    if idempotency_key is not None:
        existing = await repo.get_by_key(session, requester_id=user.id, idempotency_key=idempotency_key)
        if existing is not None:  # a retry: answer before any other check, as the first time
            return await _accepted(session, response, same_request(existing, fingerprint))
    await check_spend(ctx, session, user)
    if body.callback_url is not None:
        try:
            await check_url_target(body.callback_url, allow_private=ctx.settings.webhook_private_allowed)
        except UnsafeCallbackUrl as exc:
            raise ValidationFailed(f"callback_url: {exc}", code="invalid_callback_url") from None
    assignment = None
    rubric_id = body.rubric_id
    if body.assignment_id is not None:
        assignment = await assignment_for_member(session, user, body.assignment_id)
        rubric_id = rubric_id or assignment.rubric_id
    if body.rubric_id is not None:
        await rubric_for_reader(session, user, body.rubric_id)
    late = await late_flag(session, assignment, user.id, utcnow())

    async def create() -> Submission:
        return await repo.create(
            session, requester_id=user.id, text=body.text, title=body.title, assignment_id=body.assignment_id,
            rubric_id=rubric_id, class_id=assignment.class_id if assignment else None,
            idempotency_key=idempotency_key, request_hash=fingerprint, callback_url=body.callback_url, late=late)

    sub, created = await _create_once(session, user, idempotency_key, fingerprint, create)
    if created:
        await count_submission(ctx, sub.requester_id)
        wake(ctx)
    return await _accepted(session, response, sub)


@router.post("/essays/{essay_id}/submit", status_code=202, response_model=SubmissionOut)
async def submit_essay(
    essay_id: uuid.UUID, response: Response, ctx: ContextDep, session: SessionDep, user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Freeze a revision of the essay, mark it submitted and queue full analysis (owner only)."""
    essay = await essay_for_owner(session, user, essay_id)
    fingerprint = request_fingerprint({"essay_id": str(essay.id)})
    if idempotency_key is not None:
        existing = await repo.get_by_key(session, requester_id=user.id, idempotency_key=idempotency_key)
        if existing is not None:  # a retry: answer before any other check, as the first time
            return await _accepted(session, response, same_request(existing, fingerprint))
    await check_spend(ctx, session, user)
    assignment = await assignments.get(session, assignment_id=essay.assignment_id) if essay.assignment_id else None
    now = utcnow()
    # One deadline computation: the window says both whether the owner may still submit and whether it is late.
    late = (await check_writable(session, essay=essay, now=now)).late
    await session.commit()  # end the read before the host writes the revision
    n = await ctx.hosts.of(essay.id).revision(essay.id, reason="submit")
    revision = await documents.get_revision(session, essay_id=essay.id, n=n)
    if revision is None:  # the host committed it before returning; this would be a host bug
        raise NotFound("the frozen revision is missing")
    if not revision.text.strip():
        raise ValidationFailed("the essay is empty", code="empty_essay")

    async def create() -> Submission:
        essay.submitted_at = now
        return await repo.create(
            session, requester_id=user.id, text=revision.text, title=essay.title, essay_id=essay.id,
            assignment_id=essay.assignment_id, rubric_id=assignment.rubric_id if assignment else None,
            class_id=essay.class_id, revision_n=n, idempotency_key=idempotency_key, request_hash=fingerprint,
            late=late)

    sub, created = await _create_once(session, user, idempotency_key, fingerprint, create)
    if created:
        await count_submission(ctx, sub.requester_id)
        wake(ctx)
        await publish_submission(ctx, sub, revision_n=n)
    return await _accepted(session, response, sub)


async def publish_submission(ctx: Context, sub: Submission, **extra: Any) -> None:
    """A `submission` event on the essay's event socket (after the commit). The change is stored
    either way: a failed publish is logged, and a client that missed it refetches on `resync`."""
    assert sub.essay_id is not None
    try:
        await ctx.hosts.of(sub.essay_id).publish_event(sub.essay_id, "submission",
                                                      submission_id=str(sub.id), status=sub.status, **extra)
    except Exception:
        log.exception("could not publish the submission event of essay %s", sub.essay_id)


@router.get("/submissions", response_model=PageOut[SubmissionSummary])
async def list_submissions(session: SessionDep, user: CurrentUser, page: PageDep) -> dict[str, Any]:
    """The caller's own submissions, oldest first."""
    result = await repo.list_for_requester(session, requester_id=user.id, limit=page.limit, cursor=page.cursor)
    return {"items": [dump(SubmissionSummary, s) for s in result.items], "next_cursor": result.next_cursor}


@router.get("/essays/{essay_id}/submissions", response_model=PageOut[SubmissionSummary])
async def list_essay_submissions(
    essay_id: uuid.UUID, session: SessionDep, user: CurrentUser, page: PageDep
) -> dict[str, Any]:
    """The essay's submissions, oldest first (its owner and its class's teacher)."""
    essay = await essay_for_reader(session, user, essay_id)
    result = await repo.list_for_essay(session, essay_id=essay.id, limit=page.limit, cursor=page.cursor)
    return {"items": [dump(SubmissionSummary, s) for s in result.items], "next_cursor": result.next_cursor}


async def _relation(session: AsyncSession, user: User, submission_id: uuid.UUID) -> tuple[Submission, str]:
    """The submission and how the caller relates to it (`grader` or `reader`); 404 if unrelated."""
    sub = await repo.get(session, submission_id=submission_id)
    if sub is None:
        raise NotFound("no such submission")
    if await teaches_class_id(session, user, sub.class_id):
        return sub, "grader"
    if sub.class_id is None and user.role == "teacher" and sub.rubric_id is not None:
        rubric = await rubrics.get(session, rubric_id=sub.rubric_id)
        if rubric is not None and rubric.owner_id == user.id and sub.requester_id == user.id:
            return sub, "grader"
    if sub.requester_id == user.id:
        return sub, "reader"
    if sub.essay_id is not None and await repo.essay_owner(session, essay_id=sub.essay_id) == user.id:
        return sub, "reader"
    raise NotFound("no such submission")


@router.get("/submissions/{submission_id}", response_model=SubmissionOut)
async def get_submission(submission_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    sub, _ = await _relation(session, user, submission_id)
    return await submission_view(session, sub)


@router.put("/submissions/{submission_id}/scores", response_model=SubmissionOut)
async def override_scores(
    submission_id: uuid.UUID, body: ScoresIn, ctx: ContextDep, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    """Set teacher scores for some or all criteria; the AI's proposal stays beside them."""
    sub, relation = await _relation(session, user, submission_id)
    if relation != "grader":
        raise Forbidden("only the class's teacher may grade this submission")
    criteria = await _criteria(session, sub)
    if not criteria:
        raise Conflict("this submission has no rubric to score against", code="no_rubric")
    by_id = {c.id: c for c in criteria}
    rows = []
    for i, score in enumerate(body.scores):
        criterion = by_id.get(score.criterion_id)
        if criterion is None:
            raise ValidationFailed(f"scores.{i}.criterion_id: not a criterion of this rubric",
                                   code="unknown_criterion")
        low = min(level.min_score for level in criterion.levels)
        if not low <= score.points <= criterion.max_points:
            raise ValidationFailed(f"scores.{i}.points: must be between {low:g} and {criterion.max_points:g}",
                                   code="points_out_of_range")
        level = score.level
        if level is not None and level not in {lv.descriptor for lv in criterion.levels}:
            raise ValidationFailed(f"scores.{i}.level: not a level of this criterion", code="unknown_level")
        rows.append({"criterion_id": score.criterion_id, "points": score.points, "level": level,
                     "rationale": score.rationale})
    await repo.add_overrides(session, submission_id=sub.id, teacher_id=user.id, rows=rows, now=utcnow())
    await audit.append(session, actor_id=user.id, action="score.override", target_type="submission",
                       target_id=sub.id, details={"scores": rows})
    # Keep the stored effective scores (read by exports) in step with the overrides.
    sub.scores = effective_scores(sub.ai_scores, await repo.latest_overrides(session, submission_id=sub.id),
                                  criteria)
    await session.commit()
    view = await submission_view(session, sub)
    if sub.essay_id is not None:
        await publish_submission(ctx, sub, scores_updated=True)
    return view
