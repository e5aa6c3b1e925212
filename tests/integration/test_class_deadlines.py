"""The live class view's deadline fields (`serve_app.realtime.class_deadlines`): read for the whole
class at once, deadline columns only, at most once per TTL on a replica."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import event

from serve_app.realtime.class_deadlines import ClassDeadlines
from tests.fakes import join, make_assignment, make_class, make_essay, register


async def _class_of(client: httpx.AsyncClient, students: int) -> tuple[str, list[str], str]:
    teacher = await register(client, "teacher")
    cls = await make_class(client, teacher)
    assignment = await make_assignment(client, teacher, cls["id"])
    essays = []
    for _ in range(students):
        student = await register(client, "student")
        await join(client, student, cls["join_code"])
        essays.append((await make_essay(client, student, assignment["id"], text="Some text. "))["id"])
    return cls["id"], essays, assignment["id"]


class _Statements:
    """The SQL statements run on `engine` while listening."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.seen = engine.sync_engine, []

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement)

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self.seen

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


async def test_rows_of_a_whole_class_cost_one_read_of_deadline_columns_per_ttl(client, app) -> None:
    ctx = app.state.ctx
    class_id, essay_ids, _ = await _class_of(client, 3)
    clock = [1000.0]
    deadlines = ClassDeadlines(ctx, uuid.UUID(class_id), clock=lambda: clock[0])
    with _Statements(ctx.engine) as seen:
        fields = [await deadlines.fields(uuid.UUID(eid)) for eid in essay_ids]
        first = list(seen)
        clock[0] += 10  # within the TTL: no read
        again = [await deadlines.fields(uuid.UUID(eid)) for eid in essay_ids]
        assert len(seen) == len(first)
        clock[0] += 60  # past it: one read again, for all
        await deadlines.fields(uuid.UUID(essay_ids[1]))
        assert len(seen) == 2 * len(first)
    assert fields == again and all(f["deadline_status"] is not None for f in fields)
    essay_reads = [s for s in first if "FROM essays" in s]
    assert len(essay_reads) == 1  # the class at once, not essay by essay
    assert "doc_state" not in essay_reads[0] and "essays.text" not in essay_reads[0]


async def test_an_essay_outside_the_class_gets_no_deadline(client, app) -> None:
    ctx = app.state.ctx
    class_id, _, _ = await _class_of(client, 1)
    outsider = await register(client, "student")
    elsewhere = await make_essay(client, outsider, text="Elsewhere. ")
    deadlines = ClassDeadlines(ctx, uuid.UUID(class_id))
    fields = await deadlines.fields(uuid.UUID(elsewhere["id"]))
    assert fields["deadline_status"] is None and fields["extended"] is False
