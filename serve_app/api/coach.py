"""The coach chat on an essay: its owner asks about a feedback item, the rubric or the essay; the
answers are stored per essay and read by the owner and the class's teachers (read-only).

- `POST /essays/{id}/coach` (the essay's owner; a teacher 403, anyone else 404):
  `{question, about?: item|rubric|essay, item_id?}` -> 201 the stored turn. The answer is grounded in
  the essay's current text and current feedback (read from its host) and, for `rubric`, the
  assignment's rubric. An `item_id` no longer in the current feedback is 409 `feedback_item_gone`;
  `rubric` without one 409 `no_rubric`.
- Limits: `COACH_QUESTIONS_PER_USER_PER_HOUR` per student (429 `rate_limited` + `Retry-After`,
  shared by replicas); with an LLM, the answer's estimated tokens must fit the student's remaining
  `AI_TOKEN_BUDGET_PER_USER_PER_DAY` (429 `token_budget_exhausted`, `Retry-After` until UTC
  midnight), and what it really cost is stored as AI usage against the student, the essay and its
  class. The LLM failing (timeout, errors after retries, breaker open) is 503 `coach_unavailable`;
  nothing is stored then.
- `GET /essays/{id}/coach`: the essay's turns, oldest first, paginated (its owner and its class's
  teachers; a classmate or another student 404).

Where the call runs: in the Gateway replica that took the request, as one awaited httpx request
(`actors.analysis.coach.Coach`): the replica's event loop keeps serving sockets and requests while
it waits, and the CPU work around it (a prompt from at most 12,000 characters, checks over at most
1,200) is small. The read transaction ends before the call, so no database connection waits on the
model. The coach has its own LLM client (breaker, at most 8 calls in flight per replica), apart
from the essay hosts' feedback path, so a chatty class never delays live feedback and typing never
waits on the coach.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from actors.analysis.coach import Coach, CoachAnswer, CoachRequest
from actors.analysis.provider import ProviderError
from actors.analysis.rubric import Criterion, parse_rubric
from db.models import CoachTurn, Essay
from db.repositories import assignments, feedback, rubrics
from db.repositories import coach as repo
from serve_app.api.access import essay_for_owner, essay_for_reader
from serve_app.api.submissions import check_token_budget
from serve_app.deps import Context, ContextDep, CurrentUser, PageDep, SessionDep
from serve_app.errors import Conflict, NotFound, RateLimited, Unavailable
from serve_app.jobs import rubric_document
from serve_app.schemas import Body, PageOut

router = APIRouter(tags=["coach"])
log = logging.getLogger("essaycoach.coach")


class CoachQuestionIn(Body):
    question: Annotated[str, Field(min_length=1, max_length=1000, description="What the student asks")]
    about: Literal["item", "rubric", "essay"] | None = Field(
        default=None, description="What the question is about; default `item` with an item_id, else `essay`")
    item_id: Annotated[str | None, Field(max_length=64, description="A current feedback item's id")] = None

    @model_validator(mode="after")
    def _about(self) -> CoachQuestionIn:
        if self.about is None:
            self.about = "item" if self.item_id else "essay"
        if self.about == "item" and not self.item_id:
            raise ValueError("item_id is required when asking about a feedback item")
        if self.about != "item" and self.item_id:
            raise ValueError("item_id goes with about=item only")
        return self


class CoachTurnOut(BaseModel):
    id: uuid.UUID
    essay_id: uuid.UUID
    student_id: uuid.UUID
    about: Literal["item", "rubric", "essay"]
    item_id: str | None = Field(description="the feedback item asked about, as it was then")
    item_kind: str | None
    item_message: str | None
    quote: str | None
    question: str
    answer: str = Field(description="plain text: show it as text, never as HTML")
    source: Literal["local", "llm"]
    flags: list[str] = Field(description="checks that changed the answer: withheld_prose, trimmed_prose, "
                                         "trimmed_length, invalid_output")
    tokens: int
    created_at: datetime


class Problem(BaseModel):
    """An error answer (`application/problem+json`)."""

    type: str
    title: str
    status: int
    detail: str
    code: str


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {"application/problem+json": {}}}


ASK_PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: _problem("`forbidden`: a teacher of the class reads the chat but does not ask"),
    404: _problem("`not_found`: no such essay, or one the caller may not see"),
    409: _problem("`feedback_item_gone`: the item is no longer in the current feedback; "
                  "`no_rubric`: the essay's assignment has no rubric"),
    422: _problem("`validation_failed`: a blank or over-long question, `about=item` without `item_id`"),
    429: _problem("`rate_limited`: too many questions this hour; `token_budget_exhausted`: today's AI "
                  "tokens are spent (both with `Retry-After`)"),
    503: _problem("`coach_unavailable`: the AI endpoint failed; nothing was stored (`Retry-After`)"),
}


def turn_out(turn: CoachTurn) -> dict[str, Any]:
    return CoachTurnOut(
        id=turn.id, essay_id=turn.essay_id, student_id=turn.student_id, about=turn.about,  # type: ignore[arg-type]
        item_id=turn.item_id, item_kind=turn.item_kind, item_message=turn.item_message, quote=turn.quote,
        question=turn.question, answer=turn.answer, source=turn.source,  # type: ignore[arg-type]
        flags=list(turn.flags or []), tokens=turn.prompt_tokens + turn.completion_tokens,
        created_at=turn.created_at,
    ).model_dump(mode="json")


@router.get("/essays/{essay_id}/coach", response_model=PageOut[CoachTurnOut], responses={404: ASK_PROBLEMS[404]})
async def list_turns(essay_id: uuid.UUID, session: SessionDep, user: CurrentUser, page: PageDep) -> dict[str, Any]:
    """The essay's coach chat, oldest first (its owner and its class's teachers)."""
    essay = await essay_for_reader(session, user, essay_id)
    result = await repo.list_for_essay(session, essay_id=essay.id, limit=page.limit, cursor=page.cursor)
    return {"items": [turn_out(t) for t in result.items], "next_cursor": result.next_cursor}


async def _criteria(session: AsyncSession, essay: Essay) -> list[Criterion]:
    assignment = await assignments.get(session, assignment_id=essay.assignment_id) if essay.assignment_id else None
    rubric = await rubrics.get(session, rubric_id=assignment.rubric_id) if assignment and assignment.rubric_id else None
    return parse_rubric(rubric_document(rubric)) if rubric is not None else []


async def _check_rate(ctx: Context, user_id: uuid.UUID) -> None:
    if ctx.coach_limit is None:
        return
    wait = await ctx.coach_limit.wait(str(user_id))
    if wait:
        raise RateLimited("too many coach questions; try again later", retry_after=wait)


@router.post("/essays/{essay_id}/coach", status_code=201, response_model=CoachTurnOut, responses=ASK_PROBLEMS)
async def ask_coach(
    essay_id: uuid.UUID, body: CoachQuestionIn, ctx: ContextDep, session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    """Ask the coach about a feedback item, the rubric or the essay (the essay's owner only)."""
    essay = await essay_for_owner(session, user, essay_id)
    essay_id, class_id, student_id = essay.id, essay.class_id, user.id  # read now: the commit below expires them
    await _check_rate(ctx, student_id)
    about = body.about or "essay"
    current = await ctx.hosts.of(essay_id).feedback(essay_id)
    items: list[dict[str, Any]] = current["items"]
    item = None
    if about == "item":
        item = next((i for i in items if i["id"] == body.item_id), None)
        if item is None:
            raise Conflict("that feedback item is no longer current; pick one from the current feedback",
                           code="feedback_item_gone")
    criteria = await _criteria(session, essay) if about == "rubric" else []
    if about == "rubric" and not criteria:
        raise Conflict("this essay's assignment has no rubric", code="no_rubric")
    text = (await ctx.hosts.current(essay_id)).text
    request = CoachRequest(
        question=body.question, about=about, essay_text=text, items=items, item=item, criteria=criteria,
        assignment_prompt=await feedback.assignment_prompt(session, essay=essay),
        history=[(t.question, t.answer) for t in await repo.recent(session, essay_id=essay_id, limit=3)])
    coach: Coach = ctx.coach
    if coach.llm_enabled:
        await check_token_budget(ctx, session, user, needed=coach.estimate_tokens(request))
    await session.commit()  # end the read before the model call: no connection waits on it
    if ctx.coach_limit is not None:
        # Counted once the question is valid and before the answer: a question in flight holds its
        # place, so parallel ones cannot overrun the bucket by more than their number.
        await ctx.coach_limit.hit(str(student_id))
    try:
        answer = await coach.answer(request)
    except ProviderError as exc:
        log.warning("coach answer failed", extra={"essay_id": str(essay_id), "code": exc.code})
        raise Unavailable("the coach cannot answer right now; try again in a minute", code="coach_unavailable",
                          headers={"Retry-After": "30"}) from None
    if answer.flags:
        log.info("coach answer changed by checks", extra={"essay_id": str(essay_id), "flags": list(answer.flags)})
    try:
        turn = await _store(ctx, session, answer, request, essay_id=essay_id, class_id=class_id,
                            student_id=student_id, item=item)
    except IntegrityError:  # the essay was deleted while the coach answered
        await session.rollback()
        raise NotFound("no such essay") from None
    return turn_out(turn)


async def _store(ctx: Context, session: AsyncSession, answer: CoachAnswer, request: CoachRequest, *,
                 essay_id: uuid.UUID, class_id: uuid.UUID | None, student_id: uuid.UUID,
                 item: dict[str, Any] | None) -> CoachTurn:
    """The turn and its AI usage, in one transaction."""
    coach: Coach = ctx.coach
    usage = answer.usage
    turn = await repo.add(session, essay_id=essay_id, student_id=student_id, about=request.about,
                          question=request.question, answer=answer.text, source=answer.source,
                          flags=list(answer.flags), prompt_tokens=usage.prompt_tokens,
                          completion_tokens=usage.completion_tokens, item=item)
    if usage.total_tokens:
        await feedback.record_usage(session, essay_id=essay_id, class_id=class_id, provider=coach.name,
                                    model=coach.model.model if coach.model is not None else "local",
                                    prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                    user_id=student_id)
    await session.commit()
    return turn
