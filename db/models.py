"""The store's tables. One module: the schema is small enough to read in one sitting.

Every foreign key and every lookup path has an index. JSON columns hold value objects that are
always read and written whole (rubric criteria, feedback sets, scores). Essay text and its
update log are `SealedText` / `SealedBytes`: encrypted at rest when a data key is set (db/crypto.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.types import SealedBytes, SealedText, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger autoincrement is only honoured by PostgreSQL; SQLite needs plain INTEGER for ROWID.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Added by 0006: set while an admin has suspended the account (its tokens and sockets stop).
    suspended_at: Mapped[datetime | None]


class RefreshToken(Base):
    """One issued refresh token. Rotation spends it; a family is every token from one login."""

    __tablename__ = "refresh_tokens"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    family_expires_at: Mapped[datetime]
    spent_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class WsTicket(Base):
    """Single-use socket ticket; stored so that any Gateway replica can spend it exactly once."""

    __tablename__ = "ws_tickets"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class Class(Base):
    __tablename__ = "classes"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(200))
    join_code: Mapped[str] = mapped_column(String(16), unique=True)
    teacher_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Added by 0006: an archived class is read-only, takes no joins and is hidden from default lists.
    archived_at: Mapped[datetime | None]


class ClassTeacher(Base):
    """A co-teacher: the same rights on the class as its owner (`Class.teacher_id`)."""

    __tablename__ = "class_teachers"
    class_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("classes.id", ondelete="CASCADE"), primary_key=True
    )
    teacher_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Enrollment(Base):
    __tablename__ = "enrollments"
    class_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("classes.id", ondelete="CASCADE"), primary_key=True
    )
    student_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)


class Rubric(Base):
    __tablename__ = "rubrics"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    criteria: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Assignment(Base):
    __tablename__ = "assignments"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    class_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    rubric_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("rubrics.id", ondelete="SET NULL"), index=True
    )
    due_at: Mapped[datetime | None]
    late_policy: Mapped[str] = mapped_column(String(16), default="accept")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Added by 0006: the hard close; after it (or its extension) the student can neither write nor submit.
    close_at: Mapped[datetime | None]


class Extension(Base):
    """A teacher's per-student extension of an assignment's due date (and optionally its hard close)."""

    __tablename__ = "assignment_extensions"
    assignment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("assignments.id", ondelete="CASCADE"), primary_key=True
    )
    student_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    due_at: Mapped[datetime]
    close_at: Mapped[datetime | None]
    granted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Essay(Base):
    """An essay's current state: the latest snapshot plus the log rows above `log_watermark`."""

    __tablename__ = "essays"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    assignment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("assignments.id", ondelete="SET NULL"), index=True
    )
    class_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("classes.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(SealedText, default="")
    word_count: Mapped[int] = mapped_column(Integer, default=0)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    doc_state: Mapped[bytes | None] = mapped_column(SealedBytes)
    log_watermark: Mapped[int] = mapped_column(BigInteger, default=0)
    typing_seconds: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_essays_owner_created", "owner_id", "created_at", "id"),)


class EssayUpdate(Base):
    """The durable update log: one row per acknowledged Yjs update, `seq` dense per essay."""

    __tablename__ = "essay_updates"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    essay_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("essays.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(SealedBytes)
    author_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    inserted_chars: Mapped[int] = mapped_column(Integer, default=0)
    deleted_chars: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("essay_id", "seq", name="uq_essay_updates_essay_seq"),)


class Revision(Base):
    __tablename__ = "revisions"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    essay_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("essays.id", ondelete="CASCADE"))
    n: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(SealedText)
    word_count: Mapped[int] = mapped_column(Integer)
    doc_state: Mapped[bytes] = mapped_column(SealedBytes)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("essay_id", "n", name="uq_revisions_essay_n"),)


class FeedbackItem(Base):
    __tablename__ = "feedback_items"
    essay_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("essays.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    suggestion: Mapped[str | None] = mapped_column(Text)
    quote: Mapped[str] = mapped_column(SealedText)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    anchor: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    essay_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("essays.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    body: Mapped[str] = mapped_column(Text)
    quote: Mapped[str] = mapped_column(SealedText, default="")
    start: Mapped[int] = mapped_column(Integer, default=0)
    end: Mapped[int] = mapped_column(Integer, default=0)
    anchor: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Submission(Base):
    """A finished essay queued for full analysis; stored before the 202 so restarts resume it."""

    __tablename__ = "submissions"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    requester_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    essay_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("essays.id", ondelete="SET NULL"), index=True
    )
    assignment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("assignments.id", ondelete="SET NULL"), index=True
    )
    rubric_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("rubrics.id", ondelete="SET NULL"), index=True
    )
    revision_n: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(300), default="")
    text: Mapped[str] = mapped_column(SealedText)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_status: Mapped[str | None] = mapped_column(String(16))
    feedback: Mapped[dict[str, Any] | None]
    scores: Mapped[list[Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # Added by 0002: the class whose teacher may read and grade it (from the essay or assignment),
    # the late flag, the AI's own scores (kept beside teacher overrides), and the job lease.
    class_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("classes.id", ondelete="SET NULL"), index=True
    )
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    ai_scores: Mapped[list[Any] | None]
    lease_until: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(64))
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        UniqueConstraint("requester_id", "idempotency_key", name="uq_submissions_requester_key"),
        Index("ix_submissions_requester_created", "requester_id", "created_at", "id"),
    )


class ScoreOverride(Base):
    __tablename__ = "score_overrides"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    submission_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    criterion_id: Mapped[str] = mapped_column(String(64))
    level: Mapped[str | None] = mapped_column(Text)
    points: Mapped[float]
    rationale: Mapped[str] = mapped_column(Text, default="")
    teacher_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AiUsage(Base):
    __tablename__ = "ai_usage"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    essay_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("essays.id", ondelete="SET NULL"), index=True
    )
    class_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("classes.id", ondelete="SET NULL"), index=True
    )
    submission_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("submissions.id", ondelete="SET NULL"), index=True
    )
    # Added by 0005: whose budget the tokens count against (the requester, or the essay's owner).
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CoachTurn(Base):
    """One exchange of the coach chat on an essay (migration 0007): the student's question, what it
    was about (a feedback item as it read then, the rubric, or the essay) and the answer shown.
    The essay's owner asks; its class's teachers read. `flags` name output checks that changed the
    answer (e.g. `withheld_prose`)."""

    __tablename__ = "coach_turns"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    essay_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("essays.id", ondelete="CASCADE"))
    student_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    about: Mapped[str] = mapped_column(String(16))
    item_id: Mapped[str | None] = mapped_column(String(64))
    item_kind: Mapped[str | None] = mapped_column(String(16))
    item_message: Mapped[str | None] = mapped_column(Text)
    quote: Mapped[str | None] = mapped_column(Text)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    flags: Mapped[list[Any]] = mapped_column(default=list)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EssayLease(Base):
    """Which essay host may write an essay (migration 0008; `db.repositories.leases`).

    `holder` is the host's name (its Ray actor's), `instance` the process that took the lease;
    `token` grows by one at every acquisition (a fencing token: a write carries the token its
    host loaded the essay with and lands only while it is still the row's). Free once
    `expires_at` has passed; released leases keep their row (and token) with `expires_at` in the past.
    """

    __tablename__ = "essay_leases"
    essay_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("essays.id", ondelete="CASCADE"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    instance: Mapped[str] = mapped_column(String(64))
    token: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column()


class AuditEvent(Base):
    """Append-only: who did what to what, when. No foreign keys, so deleting a user keeps its history;
    on PostgreSQL a trigger refuses UPDATE and DELETE (migration 0006)."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WebhookSecret(Base):
    """A user's webhook signing secret (HMAC needs the key itself, so it is stored as is)."""

    __tablename__ = "webhook_secrets"
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RateBucket(Base):
    """A decaying counter shared by every replica (login failures, submissions): ``level`` drains
    at a fixed rate from ``updated_at``; times are Unix seconds so the arithmetic stays in SQL.
    ``expires_at`` is when the level has drained to zero; rows past it are deleted."""

    __tablename__ = "rate_buckets"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    level: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


Index("ix_ai_usage_user_created", AiUsage.user_id, AiUsage.created_at)
Index("ix_coach_turns_essay_created", CoachTurn.essay_id, CoachTurn.created_at)
Index("ix_essay_updates_essay_seq_created", EssayUpdate.essay_id, EssayUpdate.created_at)
Index("ix_revisions_essay", Revision.essay_id)
Index("ix_classes_teacher_created", Class.teacher_id, Class.created_at)
Index("ix_assignments_class_created", Assignment.class_id, Assignment.created_at)
