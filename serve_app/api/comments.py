"""Teacher comments anchored to a text range; delivered live on the essay's events socket."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select

from db.models import Comment
from serve_app.api.access import essay_for_reader, teaches_class_id
from serve_app.deps import ContextDep, CurrentUser, SessionDep
from serve_app.errors import Forbidden, ValidationFailed
from serve_app.schemas import Body

router = APIRouter(tags=["comments"])


class CommentIn(Body):
    body: Annotated[str, Field(min_length=1, max_length=5000)]
    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _order(self) -> CommentIn:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        return self


class CommentOut(BaseModel):
    id: uuid.UUID
    essay_id: uuid.UUID
    author_id: uuid.UUID
    body: str
    quote: str
    start: int | None = Field(description="current offset; null when the commented text was deleted")
    end: int | None
    anchor: str | None
    created_at: datetime
    kind: str = "comment"
    source: str = "teacher"


def comment_out(c: Comment, span: tuple[int, int] | None) -> dict[str, Any]:
    return CommentOut(id=c.id, essay_id=c.essay_id, author_id=c.author_id, body=c.body, quote=c.quote,
                      start=span[0] if span else None, end=span[1] if span else None, anchor=c.anchor,
                      created_at=c.created_at).model_dump(mode="json")


@router.post("/essays/{essay_id}/comments", status_code=201, response_model=CommentOut)
async def add_comment(
    essay_id: uuid.UUID, body: CommentIn, ctx: ContextDep, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    essay = await essay_for_reader(session, user, essay_id)
    if not await teaches_class_id(session, user, essay.class_id):
        raise Forbidden("only the class's teacher may comment")
    try:
        anchored = await ctx.hosts.of(essay.id).anchor_for(essay.id, body.start, body.end)
    except ValueError as exc:
        raise ValidationFailed(str(exc), code="range_outside_text") from None
    comment = Comment(essay_id=essay.id, author_id=user.id, body=body.body, quote=anchored["quote"],
                      start=body.start, end=body.end, anchor=anchored["anchor"])
    session.add(comment)
    await session.commit()
    out = comment_out(comment, (body.start, body.end))
    # Publish after commit, so a comment seen live is a comment that exists.
    await ctx.hosts.of(essay.id).publish_event(essay.id, "comment", comment=out)
    return out


@router.get("/essays/{essay_id}/comments")
async def list_comments(
    essay_id: uuid.UUID, ctx: ContextDep, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    """Every comment with offsets resolved against the current text (not paginated: comments on
    one essay are few, and a reader needs all of them to draw the overlay)."""
    essay = await essay_for_reader(session, user, essay_id)
    comments = list((await session.scalars(
        select(Comment).where(Comment.essay_id == essay.id).order_by(Comment.created_at, Comment.id))).all())
    spans = await ctx.hosts.of(essay.id).resolve(essay.id, [c.anchor for c in comments]) if comments else []
    return {"items": [comment_out(c, s) for c, s in zip(comments, spans)],
            "next_cursor": None}
