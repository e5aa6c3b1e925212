"""A user's data: download all of it, and (admins) delete a student with everything of theirs.

- `GET /me/export`: one JSON document (an attachment) with the caller's account, class
  memberships and extensions, essays (current text, revisions with their text, stored feedback,
  comments on them, the coach chat), submissions (text, feedback, effective scores) and AI usage. Nothing of
  other students, no password hash, refresh tokens, socket tickets or webhook secret. At most
  `EXPORTS_PER_USER_PER_HOUR` (429 beyond): an export reads every row of the user's.
- `DELETE /admin/users/{id}` (admin): the student is suspended first (tokens and sockets stop, so
  nothing new arrives mid-deletion), their essays are dropped from the live hosts (refused from
  then on, their sockets close 4404), then every row of theirs is deleted in one transaction
  with an audit event `user.delete` (who deleted whom and row counts, no content); afterwards
  their remaining sockets close 4401, teachers' live class views drop their row, and their
  rate-limit buckets are forgotten. Only students: a teacher's classes hold other students' work
  (409 `not_a_student`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from db.models import User
from db.repositories import audit, users
from db.repositories import feedback as feedback_repo
from db.repositories import privacy as repo
from db.types import utcnow
from serve_app.api.admin import target_user
from serve_app.api.essays import essay_view
from serve_app.api.roster import student_removed
from serve_app.api.submissions import submission_view
from serve_app.api.uploads import import_limit
from serve_app.deps import ContextDep, CurrentUser, SessionDep, require_role
from serve_app.errors import Conflict, RateLimited
from serve_app.ratelimit import RateLimit, hourly
from serve_app.realtime.control import close_sockets
from serve_app.realtime.protocol import CloseCode
from serve_app.schemas import Out

router = APIRouter(tags=["privacy"])

EXPORT_FORMAT = "essaycoach-export/1"


class ExportOut(Out):
    """The shape of `GET /me/export` (each list holds objects as the matching routes return them)."""

    format: str
    exported_at: datetime
    account: dict[str, Any]
    classes: list[dict[str, Any]]
    extensions: list[dict[str, Any]]
    essays: list[dict[str, Any]]
    submissions: list[dict[str, Any]]
    ai_usage: list[dict[str, Any]]


class DeletedOut(Out):
    user_id: uuid.UUID
    deleted: dict[str, int]


def _export_limit(ctx: ContextDep) -> RateLimit | None:
    if ctx.buckets is None:
        return None
    return hourly(ctx.buckets, prefix="export:user:", per_hour=ctx.settings.exports_per_user_per_hour)


@router.get("/me/export", response_model=ExportOut, responses={
    200: {"description": "all of the caller's data, as an attachment"},
    429: {"description": "too many exports this hour (problem+json, `rate_limited`)"}})
async def export_my_data(ctx: ContextDep, session: SessionDep, user: CurrentUser) -> JSONResponse:
    limit = _export_limit(ctx)
    wait = await limit.spend(str(user.id)) if limit is not None else 0
    if wait:
        raise RateLimited("too many exports; try again later", retry_after=wait)
    found = await repo.footprint(session, user_id=user.id)
    now = utcnow()
    body = ExportOut(
        format=EXPORT_FORMAT, exported_at=now,
        account={"id": str(user.id), "email": user.email, "name": user.name, "role": user.role,
                 "created_at": user.created_at.isoformat()},
        classes=[{"id": str(c.id), "name": c.name, "teacher_name": t.name, "joined_at": e.joined_at.isoformat(),
                  "archived": c.archived_at is not None}
                 for c, e, t in await repo.memberships(session, user_id=user.id)],
        extensions=[{"assignment_id": str(x.assignment_id), "due_at": x.due_at.isoformat(),
                     "close_at": x.close_at.isoformat() if x.close_at else None}
                    for x in await repo.extensions(session, user_id=user.id)],
        essays=[await _essay(ctx, session, essay) for essay in await repo.essays(session, user_id=user.id)],
        submissions=[{**await submission_view(session, sub), "text": sub.text}
                     for sub in await repo.submissions(session, user_id=user.id, found=found)],
        ai_usage=[{"created_at": u.created_at.isoformat(), "provider": u.provider, "model": u.model,
                   "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                   "essay_id": str(u.essay_id) if u.essay_id else None,
                   "submission_id": str(u.submission_id) if u.submission_id else None}
                  for u in await repo.ai_usage(session, user_id=user.id, found=found)],
    )
    filename = f"essaycoach-export-{now.strftime('%Y%m%d')}.json"
    return JSONResponse(body.model_dump(mode="json"),
                        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                 "Cache-Control": "no-store"})


async def _essay(ctx: ContextDep, session: SessionDep, essay: Any) -> dict[str, Any]:
    out = await essay_view(ctx, session, essay)
    out["typing_seconds"] = essay.typing_seconds
    out["revisions"] = [{"n": r.n, "seq": r.seq, "reason": r.reason, "text": r.text, "word_count": r.word_count,
                         "created_at": r.created_at.isoformat()}
                        for r in await repo.revisions(session, essay_id=essay.id)]
    out["feedback"] = await feedback_repo.load(session, essay_id=essay.id)
    out["comments"] = [{"id": str(c.id), "author_name": a.name, "body": c.body, "quote": c.quote,
                        "start": c.start, "end": c.end, "created_at": c.created_at.isoformat()}
                       for c, a in await repo.comments(session, essay_id=essay.id)]
    out["coach"] = [{"about": t.about, "item_kind": t.item_kind, "item_message": t.item_message, "quote": t.quote,
                     "question": t.question, "answer": t.answer, "source": t.source,
                     "created_at": t.created_at.isoformat()}
                    for t in await repo.coach_turns(session, essay_id=essay.id)]
    return out


Admin = Annotated[User, Depends(require_role("admin"))]


@router.delete("/admin/users/{user_id}", response_model=DeletedOut, responses={
    404: {"description": "no such user"}, 409: {"description": "`self_action` or `not_a_student`"}})
async def delete_student(user_id: uuid.UUID, ctx: ContextDep, session: SessionDep, admin: Admin) -> dict[str, Any]:
    user = await target_user(session, admin, user_id, "delete")
    if user.role != "student":
        raise Conflict(f"only students can be deleted; this account is a {user.role}", code="not_a_student")
    email = user.email
    # Suspended first, committed: their requests answer 401 and their sockets close while the rest runs.
    if user.suspended_at is None:
        user.suspended_at = utcnow()
    await users.revoke_all_refresh(session, user_id=user.id, now=utcnow())
    await session.commit()
    await close_sockets(ctx.hosts.bus, user_id=user_id, code=CloseCode.BAD_TICKET, reason="account deleted")
    found = await repo.footprint(session, user_id=user_id)
    class_ids = {cls.id for cls, _e, _t in await repo.memberships(session, user_id=user_id)}
    for essay_id in found.essay_ids:
        # Refused by its host from now on (no update can load it again) and its sockets close 4404.
        await ctx.hosts.drop(essay_id)
    try:
        deleted = await repo.delete_user(session, user_id=user_id, found=found)
        await audit.append(session, actor_id=admin.id, action="user.delete", target_type="user", target_id=user_id,
                           details={"role": "student", "rows": deleted})
        await session.commit()
    finally:
        for essay_id in found.essay_ids:
            await ctx.hosts.release(essay_id)
    await close_sockets(ctx.hosts.bus, user_id=user_id, essay_ids=found.essay_ids, code=CloseCode.UNKNOWN_ESSAY,
                        reason="the essay was deleted")
    for class_id in class_ids:  # open live views drop the student's row
        await ctx.hosts.bus.publish(f"class:{class_id}", student_removed(class_id, user_id))
    if ctx.buckets is not None:
        limits = [ctx.throttle.accounts.key_for(email.lower())]
        per_user = (_export_limit(ctx), import_limit(ctx), ctx.submissions_limit, ctx.tickets_limit,
                    ctx.coach_limit)
        limits += [lim.key_for(str(user_id)) for lim in per_user if lim]
        await ctx.buckets.forget(limits)
    return {"user_id": user_id, "deleted": deleted}
