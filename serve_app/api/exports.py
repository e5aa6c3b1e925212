"""Class export (CSV or JSON): one row per essay with its student, scores and feedback counts."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import func, select

from db.models import Essay, FeedbackItem, Submission, User
from db.types import utcnow
from serve_app.api.access import class_for_teacher
from serve_app.api.writability import deadline_fields, essay_deadlines
from serve_app.deps import CurrentUser, SessionDep

router = APIRouter(tags=["classes"])

CSV_FIELDS = ["essay_id", "student_id", "student_name", "student_email", "assignment_id", "title",
              "word_count", "created_at", "updated_at", "submitted_at", "total_points", "max_points",
              "feedback_spelling", "feedback_grammar", "feedback_style", "feedback_structure",
              "feedback_total", "deadline_status", "due_at", "close_at", "extended"]


def _formula_safe(value: Any) -> Any:
    """Spreadsheets execute cells starting with = + - @; prefix them so a title cannot run code."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


async def export_rows(session: Any, class_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = (await session.execute(
        select(Essay, User).join(User, User.id == Essay.owner_id)
        .where(Essay.class_id == class_id).order_by(User.name, Essay.created_at, Essay.id)
    )).all()
    essay_ids = [e.id for e, _ in rows]
    deadlines = await essay_deadlines(session, essays=[e for e, _ in rows], now=utcnow())
    counts: dict[uuid.UUID, dict[str, int]] = {}
    if essay_ids:
        for essay_id, kind, n in (await session.execute(
            select(FeedbackItem.essay_id, FeedbackItem.kind, func.count())
            .where(FeedbackItem.essay_id.in_(essay_ids)).group_by(FeedbackItem.essay_id, FeedbackItem.kind)
        )).all():
            counts.setdefault(essay_id, {})[kind] = n
    latest: dict[uuid.UUID, Submission] = {}
    if essay_ids:
        for sub in (await session.scalars(
            select(Submission).where(Submission.essay_id.in_(essay_ids)).order_by(Submission.created_at)
        )).all():
            latest[sub.essay_id] = sub  # type: ignore[index]
    out = []
    for essay, user in rows:
        c = counts.get(essay.id, {})
        sub = latest.get(essay.id)
        scores = (sub.scores or []) if sub else []
        out.append({
            "essay_id": str(essay.id), "student_id": str(user.id), "student_name": user.name,
            "student_email": user.email,
            "assignment_id": str(essay.assignment_id) if essay.assignment_id else None,
            "title": essay.title, "word_count": essay.word_count, "text": essay.text,
            "created_at": essay.created_at.isoformat(), "updated_at": essay.updated_at.isoformat(),
            "submitted_at": essay.submitted_at.isoformat() if essay.submitted_at else None,
            "scores": scores,
            "total_points": sum(float(s.get("points", 0)) for s in scores) if scores else None,
            "max_points": sum(float(s.get("max_points", 0)) for s in scores) if scores else None,
            "feedback_counts": c,
            "feedback_spelling": c.get("spelling", 0), "feedback_grammar": c.get("grammar", 0),
            "feedback_style": c.get("style", 0), "feedback_structure": c.get("structure", 0),
            "feedback_total": sum(c.values()),
            **deadline_fields(deadlines.get(essay.id) if essay.assignment_id else None),
        })
    return out


@router.get("/classes/{class_id}/export")
async def export_class(
    class_id: uuid.UUID, session: SessionDep, user: CurrentUser,
    format: Annotated[Literal["csv", "json"], Query()] = "json",
) -> Response:
    cls = await class_for_teacher(session, user, class_id)
    rows = await export_rows(session, class_id)
    filename = f"class-{cls.id}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "json":
        body = {"class": {"id": str(cls.id), "name": cls.name}, "essays": rows}
        return Response(json.dumps(body), media_type="application/json", headers=headers)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _formula_safe(row[k]) for k in CSV_FIELDS})
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
