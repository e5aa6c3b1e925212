"""Rubrics: weighted criteria, each with levels (score range + descriptor)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from db.repositories import rubrics
from serve_app.api.access import assignment_for_member, rubric_for_owner, rubric_for_reader
from serve_app.api.classes import assignments_out
from serve_app.deps import CurrentUser, PageDep, SessionDep, Teacher
from serve_app.schemas import AssignmentOut, CriterionIn, PageOut, RubricIn, RubricOut, RubricPatch, dump

router = APIRouter(tags=["rubrics"])


def _criteria(items: list[CriterionIn]) -> list[dict[str, Any]]:
    """Criteria as stored: each keeps its id across edits (or gets one), levels sorted by score."""
    out = []
    for c in items:
        levels = sorted((lv.model_dump() for lv in c.levels), key=lambda lv: lv["min_score"])
        out.append({"id": c.id or uuid.uuid4().hex[:12], "name": c.name, "description": c.description,
                    "weight": c.weight, "levels": levels})
    return out


@router.post("/rubrics", status_code=201, response_model=RubricOut)
async def create_rubric(body: RubricIn, session: SessionDep, user: Teacher) -> dict[str, object]:
    rubric = await rubrics.create(session, owner_id=user.id, title=body.title, criteria=_criteria(body.criteria))
    await session.commit()
    return dump(RubricOut, rubric)


@router.get("/rubrics", response_model=PageOut[RubricOut])
async def list_rubrics(session: SessionDep, user: Teacher, page: PageDep) -> dict[str, object]:
    result = await rubrics.list_for_owner(session, owner_id=user.id, limit=page.limit, cursor=page.cursor)
    return {"items": [dump(RubricOut, r) for r in result.items], "next_cursor": result.next_cursor}


@router.get("/rubrics/{rubric_id}", response_model=RubricOut)
async def get_rubric(rubric_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, object]:
    return dump(RubricOut, await rubric_for_reader(session, user, rubric_id))


@router.patch("/rubrics/{rubric_id}", response_model=RubricOut)
async def patch_rubric(
    rubric_id: uuid.UUID, body: RubricPatch, session: SessionDep, user: CurrentUser
) -> dict[str, object]:
    rubric = await rubric_for_owner(session, user, rubric_id)
    criteria = _criteria(body.criteria) if body.criteria is not None else None
    rubric = await rubrics.update(session, rubric=rubric, title=body.title, criteria=criteria)
    await session.commit()
    return dump(RubricOut, rubric)


@router.get("/assignments/{assignment_id}", response_model=AssignmentOut, tags=["classes"])
async def get_assignment(assignment_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> dict[str, object]:
    """One assignment, with the caller's `effective_due_at` / `effective_close_at` and `extended`."""
    return (await assignments_out(session, user, [await assignment_for_member(session, user, assignment_id)]))[0]
