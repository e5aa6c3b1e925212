"""Essays over REST. Text writes become CRDT updates through the live layer, like keystrokes."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from actors.host import UpdateTooLarge
from db.models import Assignment, Essay, Rubric, User
from db.repositories import documents, essays
from db.types import utcnow
from serve_app.api.access import assignment_for_member, essay_for_owner, essay_for_reader
from serve_app.api.writability import check_writable
from serve_app.deps import ContextDep, CurrentUser, PageDep, SessionDep
from serve_app.errors import Conflict, PayloadTooLarge
from serve_app.schemas import EssayIn, EssayOut, EssayPatch, EssaySummary, PageOut, dump

router = APIRouter(tags=["essays"])


def check_text_size(text: str | None, limit: int) -> None:
    if text is not None and len(text) > limit:
        raise PayloadTooLarge(f"essay text is {len(text)} characters; the limit is {limit}",
                              code="essay_too_large")


async def set_text(ctx: ContextDep, essay_id: uuid.UUID, text: str, author_id: uuid.UUID) -> None:
    """The text as a live edit; 413 when the essay's edit history is over its byte budget."""
    try:
        await ctx.hosts.set_text(essay_id, text, author_id=author_id)
    except UpdateTooLarge as exc:  # a Ray error raised by the host is also an instance of it
        raise PayloadTooLarge(str(exc), code="essay_too_large") from None


async def essay_view(ctx: ContextDep, session: SessionDep, essay: Essay) -> dict[str, Any]:
    """The essay as stored, with text, word count and seq from its live actor when it is open, or
    when the log holds updates past the snapshot (a host died before compacting): then it loads."""
    out = dump(EssayOut, essay)
    live = await ctx.hosts.read(essay.id)
    if live is None and await documents.max_seq(session, essay_id=essay.id) > essay.log_watermark:
        live = await ctx.hosts.current(essay.id)
    if live is not None:
        out.update(text=live.text, word_count=live.word_count, seq=live.seq)
    return out


@router.post("/essays", status_code=201, response_model=EssayOut)
async def create_essay(body: EssayIn, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    check_text_size(body.text, ctx.settings.max_essay_chars)
    return await new_essay(ctx, session, user, title=body.title, assignment_id=body.assignment_id, text=body.text)


async def new_essay(ctx: ContextDep, session: SessionDep, user: User, *, title: str,
                    assignment_id: uuid.UUID | None, text: str | None) -> dict[str, Any]:
    """Create the caller's essay (for an assignment of a class they belong to) with its first text."""
    class_id = None
    if assignment_id is not None:
        class_id = (await assignment_for_member(session, user, assignment_id)).class_id
        # No new essay for an assignment past its hard close, or in an archived class.
        await check_writable(session, essay=Essay(owner_id=user.id, assignment_id=assignment_id, class_id=class_id),
                             now=utcnow())
    essay = await essays.create(session, owner_id=user.id, title=title, assignment_id=assignment_id,
                                class_id=class_id)
    await session.commit()
    if text:
        await set_text(ctx, essay.id, text, user.id)
        await session.refresh(essay)
    return await essay_view(ctx, session, essay)


@router.get("/essays", response_model=PageOut[EssaySummary])
async def list_essays(
    session: SessionDep, user: CurrentUser, page: PageDep,
    assignment_id: Annotated[uuid.UUID | None, Query()] = None,
    class_id: Annotated[uuid.UUID | None, Query()] = None,
) -> dict[str, Any]:
    result = await essays.list_visible(session, user_id=user.id, limit=page.limit, cursor=page.cursor,
                                       assignment_id=assignment_id, class_id=class_id)
    return {"items": [dump(EssaySummary, e) for e in result.items], "next_cursor": result.next_cursor}


@router.get("/essays/{essay_id}", response_model=EssayOut)
async def get_essay(essay_id: uuid.UUID, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return await essay_view(ctx, session, await essay_for_reader(session, user, essay_id))


@router.patch("/essays/{essay_id}", response_model=EssayOut)
async def patch_essay(
    essay_id: uuid.UUID, body: EssayPatch, ctx: ContextDep, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    check_text_size(body.text, ctx.settings.max_essay_chars)
    essay = await essay_for_owner(session, user, essay_id)
    await check_writable(session, essay=essay, now=utcnow())
    if body.title is not None:
        essay.title = body.title
        essay.updated_at = utcnow()
        await session.commit()
    if body.text is not None:
        await set_text(ctx, essay.id, body.text, user.id)
        await session.refresh(essay)
    return await essay_view(ctx, session, essay)


@router.get("/essays/{essay_id}/feedback")
async def get_feedback(essay_id: uuid.UUID, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Current feedback items, offsets resolved against the current text (`doc_seq`). `analyzed`
    is false while the newest typing has not been analysed yet."""
    essay = await essay_for_reader(session, user, essay_id)
    return {"essay_id": str(essay.id), **await ctx.hosts.of(essay.id).feedback(essay.id)}


@router.post("/essays/{essay_id}/feedback/refresh")
async def refresh_feedback(essay_id: uuid.UUID, ctx: ContextDep, session: SessionDep,
                           user: CurrentUser) -> dict[str, Any]:
    """Analyse the whole essay now (structure included, and the LLM when configured) instead of
    waiting for a typing pause; answers with the resulting feedback."""
    essay = await essay_for_reader(session, user, essay_id)
    return {"essay_id": str(essay.id), **await ctx.hosts.of(essay.id).analyze_now(essay.id)}


@router.post("/essays/{essay_id}/scores")
async def score_essay(essay_id: uuid.UUID, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """On-demand rubric scores for the current text against the assignment's rubric. Nothing is
    stored: a grade comes only from a submission a teacher confirms."""
    essay = await essay_for_reader(session, user, essay_id)
    rubric = None
    if essay.assignment_id is not None:
        assignment = await session.get(Assignment, essay.assignment_id)
        rubric = await session.get(Rubric, assignment.rubric_id) if assignment and assignment.rubric_id else None
    if rubric is None:
        raise Conflict("this essay's assignment has no rubric", code="no_rubric")
    rubric_data = {"id": str(rubric.id), "title": rubric.title, "criteria": rubric.criteria}
    scores = await ctx.hosts.of(essay.id).score_now(essay.id, rubric_data)
    return {"essay_id": str(essay.id), "rubric_id": str(rubric.id), "final": False, "scores": scores}


@router.delete("/essays/{essay_id}", status_code=204)
async def delete_essay(essay_id: uuid.UUID, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> Response:
    essay = await essay_for_owner(session, user, essay_id)
    # Its host first refuses the essay (no update between now and the row's removal can load it
    # again) and closes its sockets (4404); then the row goes; then the host forgets the mark.
    await ctx.hosts.drop(essay.id)
    try:
        await essays.remove(session, essay_id=essay.id)
        await session.commit()
    finally:
        await ctx.hosts.release(essay.id)
    return Response(status_code=204)
