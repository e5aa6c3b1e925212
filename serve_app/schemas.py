"""Request and response bodies of the REST API (the shapes in DESIGN.md, plus a few extras)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator, model_validator

T = TypeVar("T")
Name = Annotated[str, Field(min_length=1, max_length=200)]
Title = Annotated[str, Field(min_length=1, max_length=300)]
# Essay text is kept verbatim: leading indentation and trailing newlines are part of the document.
EssayText = Annotated[str, StringConstraints(strip_whitespace=False)]


class Body(BaseModel):
    """Request bodies reject unknown fields so typos surface as 422 instead of being ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


# --- auth ---------------------------------------------------------------------------------


# Passwords are never altered (no stripping): what the user typed is what gets hashed and checked.
Password = Annotated[str, StringConstraints(strip_whitespace=False)]


class RegisterIn(Body):
    email: EmailStr
    password: Annotated[Password, Field(min_length=8, max_length=128)]
    name: Name
    role: Literal["student", "teacher"]


class TokenIn(Body):
    email: EmailStr
    password: Annotated[Password, Field(min_length=1, max_length=128)]


class RefreshIn(Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=4096)]


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class TicketOut(BaseModel):
    ticket: str
    expires_in: int


class WebhookSecretOut(BaseModel):
    """The key of the HMAC in `X-EssayCoach-Signature` on the caller's webhook deliveries."""

    secret: str
    created_at: datetime


class UserOut(Out):
    id: uuid.UUID
    email: str
    name: str
    role: str
    created_at: datetime


# --- classes ------------------------------------------------------------------------------


class ClassIn(Body):
    name: Name


class JoinIn(Body):
    join_code: Annotated[str, Field(min_length=4, max_length=16)]


class ClassOut(Out):
    id: uuid.UUID
    name: str
    join_code: str
    teacher_id: uuid.UUID
    created_at: datetime
    archived_at: datetime | None = None


class RosterRow(BaseModel):
    student_id: uuid.UUID
    name: str
    email: str
    essay_count: int
    last_active_at: datetime | None
    live: bool


# --- rubrics ------------------------------------------------------------------------------


class LevelIn(Body):
    min_score: Annotated[float, Field(ge=0, le=1000)]
    max_score: Annotated[float, Field(ge=0, le=1000)]
    descriptor: Annotated[str, Field(min_length=1, max_length=2000)]

    @model_validator(mode="after")
    def _range(self) -> LevelIn:
        if self.min_score > self.max_score:
            raise ValueError("min_score must not exceed max_score")
        return self


class CriterionIn(Body):
    id: str | None = Field(default=None, max_length=64)
    name: Name
    description: str | None = Field(default=None, max_length=2000)
    weight: Annotated[float, Field(gt=0, le=100)] = 1.0
    levels: Annotated[list[LevelIn], Field(min_length=1, max_length=10)]


class RubricIn(Body):
    title: Title
    criteria: Annotated[list[CriterionIn], Field(min_length=1, max_length=30)]


class RubricPatch(Body):
    title: Title | None = None
    criteria: Annotated[list[CriterionIn], Field(min_length=1, max_length=30)] | None = None


class LevelOut(BaseModel):
    min_score: float
    max_score: float
    descriptor: str


class CriterionOut(BaseModel):
    id: str
    name: str
    description: str | None = None
    weight: float
    levels: list[LevelOut]


class RubricOut(Out):
    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    criteria: list[CriterionOut]
    created_at: datetime
    updated_at: datetime


# --- assignments --------------------------------------------------------------------------


def aware(v: datetime | None) -> datetime | None:
    """Deadlines carry a timezone: a naive time would mean something else on every server."""
    if v is not None and v.tzinfo is None:
        raise ValueError("needs a timezone (e.g. 2026-12-01T17:00:00Z)")
    return v


class DueTimes(Body):
    """A `due_at` and an optional hard `close_at`: both with a timezone, the close not before the due."""

    due_at: datetime | None = None
    close_at: datetime | None = Field(None, description="Hard close: after it the student can neither write nor submit")

    @field_validator("due_at", "close_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return aware(v)

    @model_validator(mode="after")
    def _close_after_due(self) -> DueTimes:
        if self.close_at is not None and self.due_at is not None and self.close_at < self.due_at:
            raise ValueError("close_at must not be before due_at")
        return self


class AssignmentIn(DueTimes):
    title: Title
    prompt: Annotated[str, Field(max_length=20_000)] = ""
    rubric_id: uuid.UUID | None = None
    late_policy: Literal["accept", "flag", "reject"] = "accept"


class AssignmentPatch(Body):
    """Fields to change; a field sent as null clears it (`rubric_id`, `due_at`, `close_at`)."""

    title: Title | None = None
    prompt: Annotated[str, Field(max_length=20_000)] | None = None
    rubric_id: uuid.UUID | None = None
    late_policy: Literal["accept", "flag", "reject"] | None = None
    due_at: datetime | None = None
    close_at: datetime | None = None

    @field_validator("due_at", "close_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return aware(v)


class AssignmentOut(Out):
    id: uuid.UUID
    class_id: uuid.UUID
    title: str
    prompt: str
    rubric_id: uuid.UUID | None
    due_at: datetime | None
    late_policy: str
    close_at: datetime | None = None
    created_at: datetime
    effective_due_at: datetime | None = Field(
        None, description="The caller's due time: for a student, their extension's if they have one, else "
                          "`due_at`; for a teacher, `due_at`")
    effective_close_at: datetime | None = Field(
        None, description="The caller's hard close (a student's extension applied; under the `reject` policy the "
                          "due time closes too): after it the student can neither write nor submit")
    extended: bool = Field(False, description="The calling student has an extension on this assignment")


# --- essays -------------------------------------------------------------------------------


class EssayIn(Body):
    title: Title = "Untitled essay"
    assignment_id: uuid.UUID | None = None
    # Length is checked by the route so an oversized text answers 413, not 422.
    text: EssayText | None = None


class EssayPatch(Body):
    title: Title | None = None
    text: EssayText | None = None


class EssayOut(Out):
    id: uuid.UUID
    owner_id: uuid.UUID
    assignment_id: uuid.UUID | None
    class_id: uuid.UUID | None
    title: str
    text: str
    word_count: int
    seq: int
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None


class EssaySummary(Out):
    """List rows omit the text (an essay can be 200,000 characters)."""

    id: uuid.UUID
    owner_id: uuid.UUID
    assignment_id: uuid.UUID | None
    class_id: uuid.UUID | None
    title: str
    word_count: int
    seq: int
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None


def dump(model: type[BaseModel], obj: Any) -> dict[str, Any]:
    return model.model_validate(obj).model_dump(mode="json")


# --- submissions --------------------------------------------------------------------------


class SubmissionIn(Body):
    # Length is checked by the route so an oversized text answers 413, not 422.
    text: Annotated[EssayText, Field(min_length=1)]
    title: Annotated[str, Field(max_length=300)] = ""
    assignment_id: uuid.UUID | None = None
    rubric_id: uuid.UUID | None = None
    callback_url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None


class ScoreOut(BaseModel):
    """A rubric score. `final` is true only for teacher-confirmed scores; AI scores are proposals
    (`estimate` marks local heuristics). An overridden score keeps the AI's `ai_points`/`ai_level`."""

    criterion_id: str
    criterion: str
    level: str
    points: float
    max_points: float
    rationale: str
    source: Literal["local", "llm", "teacher"]
    estimate: bool
    final: bool = False
    ai_points: float | None = None
    ai_level: str | None = None
    overridden_by: uuid.UUID | None = None
    overridden_at: datetime | None = None


class SubmissionSummary(Out):
    id: uuid.UUID
    status: Literal["queued", "running", "done", "failed"]
    essay_id: uuid.UUID | None
    assignment_id: uuid.UUID | None
    rubric_id: uuid.UUID | None
    revision_n: int | None
    title: str
    late: bool
    created_at: datetime
    completed_at: datetime | None


class SubmissionFeedback(BaseModel):
    items: list[dict[str, Any]]


class SubmissionOut(SubmissionSummary):
    submission_id: uuid.UUID
    class_id: uuid.UUID | None
    started_at: datetime | None
    attempts: int
    feedback: SubmissionFeedback
    scores: list[ScoreOut]
    error: str | None
    callback_status: Literal["pending", "delivered", "failed"] | None


class ScoreOverrideIn(Body):
    criterion_id: Annotated[str, Field(min_length=1, max_length=64)]
    points: float = Field(allow_inf_nan=False)
    level: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    rationale: Annotated[str, Field(max_length=5000)] = ""


class ScoresIn(Body):
    scores: Annotated[list[ScoreOverrideIn], Field(min_length=1, max_length=100)]

    @field_validator("scores")
    @classmethod
    def _distinct(cls, v: list[ScoreOverrideIn]) -> list[ScoreOverrideIn]:
        if len({s.criterion_id for s in v}) != len(v):
            raise ValueError("each criterion_id may appear once")
        return v
