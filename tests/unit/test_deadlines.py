"""The deadline function with a fixed clock: due, close, extensions, late policies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from serve_app.deadlines import deadline_status

T0 = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@dataclass
class A:
    due_at: datetime | None = T0
    close_at: datetime | None = None
    late_policy: str = "accept"


@dataclass
class X:
    due_at: datetime
    close_at: datetime | None = None


def test_no_assignment_is_on_time_and_writable() -> None:
    d = deadline_status(None, None, None, T0)
    assert (d.status, d.writable) == ("on_time", True)


def test_before_due_is_on_time() -> None:
    assert deadline_status(A(), None, None, T0 - HOUR).status == "on_time"


def test_exactly_at_due_is_on_time() -> None:
    assert deadline_status(A(), None, None, T0).status == "on_time"


def test_past_due_without_close_is_late_and_writable() -> None:
    d = deadline_status(A(), None, None, T0 + HOUR)
    assert (d.status, d.writable) == ("late", True)


def test_past_hard_close_is_closed_and_not_writable() -> None:
    d = deadline_status(A(close_at=T0 + HOUR), None, None, T0 + 2 * HOUR)
    assert (d.status, d.writable, d.close_at) == ("closed", False, T0 + HOUR)


def test_between_due_and_close_is_late() -> None:
    d = deadline_status(A(close_at=T0 + 2 * HOUR), None, None, T0 + HOUR)
    assert (d.status, d.writable) == ("late", True)


def test_reject_policy_closes_at_due() -> None:
    d = deadline_status(A(late_policy="reject"), None, None, T0 + HOUR)
    assert (d.status, d.writable, d.close_at) == ("closed", False, T0)


def test_submitted_before_due_stays_on_time_after_close() -> None:
    d = deadline_status(A(close_at=T0 + HOUR), None, T0 - HOUR, T0 + 3 * HOUR)
    assert (d.status, d.writable) == ("on_time", False)


def test_submitted_after_due_is_late() -> None:
    assert deadline_status(A(), None, T0 + HOUR, T0 + 2 * HOUR).status == "late"


def test_extension_moves_due() -> None:
    d = deadline_status(A(), X(due_at=T0 + 5 * HOUR), None, T0 + HOUR)
    assert (d.status, d.extended, d.due_at) == ("on_time", True, T0 + 5 * HOUR)


def test_extension_past_assignment_close_keeps_student_open_until_extended_due() -> None:
    d = deadline_status(A(close_at=T0 + HOUR), X(due_at=T0 + 5 * HOUR), None, T0 + 3 * HOUR)
    assert (d.status, d.writable, d.close_at) == ("on_time", True, T0 + 5 * HOUR)


def test_extension_close_overrides_assignment_close() -> None:
    ext = X(due_at=T0 + HOUR, close_at=T0 + 10 * HOUR)
    d = deadline_status(A(close_at=T0 + HOUR), ext, None, T0 + 5 * HOUR)
    assert (d.status, d.writable) == ("late", True)
    assert deadline_status(A(close_at=T0 + HOUR), ext, None, T0 + 11 * HOUR).status == "closed"


def test_extension_on_reject_policy_closes_at_extended_due() -> None:
    d = deadline_status(A(late_policy="reject"), X(due_at=T0 + 2 * HOUR), None, T0 + HOUR)
    assert (d.status, d.writable) == ("on_time", True)
    assert deadline_status(A(late_policy="reject"), X(due_at=T0 + 2 * HOUR), None, T0 + 3 * HOUR).status == "closed"


def test_no_due_but_close_is_closed_after_close() -> None:
    a = A(due_at=None, close_at=T0)
    assert deadline_status(a, None, None, T0 - HOUR).status == "on_time"
    assert deadline_status(a, None, None, T0 + HOUR).status == "closed"
