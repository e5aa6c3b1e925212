"""Submissions API end to end: 202 + job, runner, idempotency, authorization, teacher overrides,
essay submit with late policy, resume after a crashed runner, and signed webhooks to a real receiver.

The module runs on its own fresh database (a new SQLite file, or a new PostgreSQL database) so no
runner of another test module competes for its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from actors.analysis.engine import AnalysisEngine
from actors.analysis.local import LocalAnalyzer
from actors.config import RunnerConfig
from db.engine import make_engine
from db.migrate import upgrade
from db.models import AiUsage, Essay, Revision, Submission
from serve_app.api import submissions as submissions_api
from serve_app.app import create_app
from serve_app.deps import Context
from serve_app.jobs import SubmissionRunner
from serve_app.jobs_wiring import start_runner, stop_runner
from serve_app.settings import Settings
from serve_app.webhooks import verify
from tests.conftest import make_settings
from tests.fakes import (
    Account,
    assert_problem,
    join,
    make_class,
    make_essay,
    make_rubric,
    register,
    walk,
)
from tests.webhook_receiver import WebhookReceiver

ESSAY = (
    "Homework should be limited because students need time to rest. In this essay I argue that "
    "shorter assignments improve learning.\n\n"
    "First, rested students remember more of what they learn. Teh research on sleep is clear and "
    "it shows that memory depends on rest.\n\n"
    "In conclusion, schools should set less homework so that students learn more in class."
)


# --- environment --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database(database_url: str, tmp: Path) -> AsyncIterator[str]:
    if database_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp / f'subs-{uuid.uuid4().hex[:8]}.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    name = f"essaycoach_subs_{uuid.uuid4().hex[:8]}"
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def mounted(app: FastAPI) -> bool:
    return any(getattr(r, "path", "").startswith("/api/v1/submissions") for r in app.routes)


@contextlib.asynccontextmanager
async def running_app(settings: Settings, *, runner: bool = True) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app from its factory, with the submissions router and runner wired in if the lead's
    app.py does not do it yet; `runner=False` stops any runner the lifespan started."""
    app = create_app(settings)
    if not mounted(app):
        app.include_router(submissions_api.router, prefix="/api/v1")
    async with app.router.lifespan_context(app):
        ctx: Context = app.state.ctx
        if runner:
            await start_runner(ctx)
        else:
            await stop_runner(ctx)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
                yield app, c
        finally:
            await stop_runner(ctx)


@dataclass
class Env:
    settings: Settings
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def ctx(self) -> Context:
        return self.app.state.ctx  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
async def env(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("subs")
    async with fresh_database(database_url, tmp) as url:
        # Private callback targets are allowed here so the webhook test can use a 127.0.0.1 receiver.
        settings = make_settings(url, tmp, login_ip_failure_burst=100_000, webhook_allow_private=True,
                                 submissions_per_user_per_hour=100_000,
                                 webhook_backoff_seconds=0.01, submission_poll_seconds=0.1,
                                 submission_lease_seconds=2.0, max_essay_chars=5_000)
        async with running_app(settings) as (app, client):
            yield Env(settings, app, client)


@dataclass
class School:
    teacher: Account
    student: Account
    class_id: str
    join_code: str
    rubric: dict[str, Any]
    assignment: dict[str, Any]


async def make_assignment_with(client: httpx.AsyncClient, teacher: Account, class_id: str, **fields: Any) -> dict[str, Any]:
    body = {"title": "Should homework be banned?", "prompt": "Argue for or against.", **fields}
    r = await client.post(f"/api/v1/classes/{class_id}/assignments", json=body, headers=teacher.headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def school(client: httpx.AsyncClient, **assignment_fields: Any) -> School:
    teacher = await register(client, "teacher")
    student = await register(client, "student")
    cls = await make_class(client, teacher)
    await join(client, student, cls["join_code"])
    rubric = await make_rubric(client, teacher)
    assignment = await make_assignment_with(client, teacher, cls["id"], rubric_id=rubric["id"], **assignment_fields)
    return School(teacher, student, cls["id"], cls["join_code"], rubric, assignment)


async def submit(client: httpx.AsyncClient, who: Account, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = dict(who.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post("/api/v1/submissions", json=body, headers=headers)


async def wait_done(client: httpx.AsyncClient, who: Account, submission_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"/api/v1/submissions/{submission_id}", headers=who.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in ("done", "failed"):
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"submission still {body['status']}"
        await asyncio.sleep(0.05)


# --- POST /submissions ----------------------------------------------------------------------


async def test_post_submission_answers_202_with_location_and_submission_id(env: Env) -> None:
    user = await register(env.client)
    r = await submit(env.client, user, {"text": ESSAY, "title": "Homework"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"] == body["submission_id"]
    uuid.UUID(body["id"])
    assert r.headers["location"] == f"/api/v1/submissions/{body['id']}"
    assert body["status"] in ("queued", "running", "done")
    assert body["feedback"] == {"items": []} or body["status"] == "done"


async def test_job_is_stored_queued_before_the_202(env: Env) -> None:
    await stop_runner(env.ctx)
    try:
        user = await register(env.client)
        r = await submit(env.client, user, {"text": ESSAY})
        assert r.status_code == 202
        async with env.ctx.sessions() as session:
            row = await session.get(Submission, uuid.UUID(r.json()["id"]))
            assert row is not None and row.status == "queued" and row.text == ESSAY
    finally:
        await start_runner(env.ctx)


async def test_polling_until_done_gives_feedback_items_and_estimated_rubric_scores(env: Env) -> None:
    s = await school(env.client)
    r = await submit(env.client, s.student, {"text": ESSAY, "assignment_id": s.assignment["id"]})
    assert r.status_code == 202, r.text
    body = await wait_done(env.client, s.student, r.json()["id"])
    assert body["status"] == "done", body
    assert body["completed_at"] and body["rubric_id"] == s.rubric["id"]
    items = body["feedback"]["items"]
    assert any(i["kind"] == "spelling" and i["quote"] == "Teh" for i in items), items
    for item in items:
        assert ESSAY[item["start"]:item["end"]] == item["quote"]
        assert {"id", "kind", "source", "severity", "message", "quote", "start", "end"} <= item.keys()
    criteria = {c["id"]: c for c in s.rubric["criteria"]}
    assert {sc["criterion_id"] for sc in body["scores"]} == set(criteria)
    for sc in body["scores"]:
        assert sc["source"] == "local" and sc["estimate"] is True and sc["final"] is False
        assert 0 <= sc["points"] <= sc["max_points"]
        assert sc["ai_points"] == sc["points"]
    async with env.ctx.sessions() as session:
        usage = (await session.scalars(select(AiUsage).where(AiUsage.submission_id == uuid.UUID(body["id"])))).all()
    assert len(usage) == 1 and usage[0].provider == "local"


async def test_submission_without_rubric_has_feedback_and_no_scores(env: Env) -> None:
    user = await register(env.client)
    r = await submit(env.client, user, {"text": ESSAY})
    body = await wait_done(env.client, user, r.json()["id"])
    assert body["status"] == "done" and body["scores"] == [] and body["feedback"]["items"]


async def test_same_idempotency_key_and_body_returns_the_same_submission(env: Env) -> None:
    user = await register(env.client)
    key = uuid.uuid4().hex
    first = await submit(env.client, user, {"text": ESSAY, "title": "A"}, key)
    again = await submit(env.client, user, {"title": "A", "text": ESSAY}, key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    pages = await walk(env.client, "/api/v1/submissions", user.headers, limit=10)
    assert [s["id"] for page in pages for s in page] == [first.json()["id"]]


async def test_same_idempotency_key_with_another_body_is_409(env: Env) -> None:
    user = await register(env.client)
    key = uuid.uuid4().hex
    assert (await submit(env.client, user, {"text": ESSAY}, key)).status_code == 202
    assert_problem(await submit(env.client, user, {"text": ESSAY + " More."}, key), 409, "idempotency_conflict")


async def test_idempotency_keys_are_scoped_per_requester(env: Env) -> None:
    alice, bob = await register(env.client), await register(env.client)
    key = uuid.uuid4().hex
    a = await submit(env.client, alice, {"text": ESSAY}, key)
    b = await submit(env.client, bob, {"text": ESSAY}, key)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]
    assert (await env.client.get(f"/api/v1/submissions/{a.json()['id']}", headers=bob.headers)).status_code == 404


async def test_concurrent_retries_with_one_key_create_one_submission(env: Env) -> None:
    user = await register(env.client)
    key = uuid.uuid4().hex
    answers = await asyncio.gather(*(submit(env.client, user, {"text": ESSAY}, key) for _ in range(5)))
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["id"] for r in answers}) == 1


async def test_oversized_text_is_413(env: Env) -> None:
    user = await register(env.client)
    r = await submit(env.client, user, {"text": "a" * (env.settings.max_essay_chars + 1)})
    assert_problem(r, 413, "essay_too_large")


async def test_empty_text_is_422(env: Env) -> None:
    user = await register(env.client)
    assert_problem(await submit(env.client, user, {"text": ""}), 422, "validation_failed")


async def test_callback_url_to_loopback_is_refused_when_private_targets_are_not_allowed(env: Env) -> None:
    strict = make_settings(env.settings.database_url, env.settings.var_dir, login_ip_failure_burst=100_000)
    assert strict.webhook_private_allowed is False
    async with running_app(strict, runner=False) as (_, client):
        user = await register(client)
        for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/hook",
                    "http://10.0.0.7/hook", "http://169.254.169.254/latest"):
            assert_problem(await submit(client, user, {"text": ESSAY, "callback_url": url}), 422,
                           "invalid_callback_url")
        for url in ("ftp://example.com/hook", "not a url", "https://user:pw@example.com/hook"):
            assert_problem(await submit(client, user, {"text": ESSAY, "callback_url": url}), 422,
                           "invalid_callback_url")


async def test_rubric_the_caller_cannot_read_is_404(env: Env) -> None:
    other_teacher = await register(env.client, "teacher")
    rubric = await make_rubric(env.client, other_teacher)
    user = await register(env.client)
    assert_problem(await submit(env.client, user, {"text": ESSAY, "rubric_id": rubric["id"]}), 404, "not_found")


async def test_assignment_of_a_class_the_caller_is_not_in_is_404(env: Env) -> None:
    s = await school(env.client)
    outsider = await register(env.client)
    r = await submit(env.client, outsider, {"text": ESSAY, "assignment_id": s.assignment["id"]})
    assert_problem(r, 404, "not_found")


async def test_list_shows_only_the_callers_submissions_page_by_page(env: Env) -> None:
    user, other = await register(env.client), await register(env.client)
    ids = [(await submit(env.client, user, {"text": f"{ESSAY} {i}"})).json()["id"] for i in range(3)]
    await submit(env.client, other, {"text": ESSAY})
    pages = await walk(env.client, "/api/v1/submissions", user.headers, limit=2)
    assert [len(p) for p in pages] == [2, 1]
    assert [s["id"] for p in pages for s in p] == ids


# --- authorization and teacher overrides ----------------------------------------------------


async def _student_submission(env: Env) -> tuple[School, dict[str, Any]]:
    s = await school(env.client)
    r = await submit(env.client, s.student, {"text": ESSAY, "assignment_id": s.assignment["id"]})
    assert r.status_code == 202, r.text
    return s, await wait_done(env.client, s.student, r.json()["id"])


async def test_submission_read_and_grade_authorization_matrix(env: Env) -> None:
    s, sub = await _student_submission(env)
    classmate = await register(env.client)
    await join(env.client, classmate, s.join_code)
    other_teacher = await register(env.client, "teacher")
    path = f"/api/v1/submissions/{sub['id']}"
    criterion = s.rubric["criteria"][0]["id"]
    scores = {"scores": [{"criterion_id": criterion, "points": 1}]}
    for who, read, grade in ((s.student, 200, 403), (s.teacher, 200, 200), (classmate, 404, 404),
                             (other_teacher, 404, 404)):
        assert (await env.client.get(path, headers=who.headers)).status_code == read, who.role
        r = await env.client.put(f"{path}/scores", json=scores, headers=who.headers)
        assert r.status_code == grade, (who.role, r.text)
        if grade != 200:
            assert_problem(r, grade, "forbidden" if grade == 403 else "not_found")
    assert (await env.client.get(path)).status_code == 401


async def test_teacher_override_is_final_and_keeps_the_ai_proposal(env: Env) -> None:
    s, sub = await _student_submission(env)
    thesis, evidence = (c["id"] for c in s.rubric["criteria"])
    ai = {sc["criterion_id"]: sc for sc in sub["scores"]}
    r = await env.client.put(f"/api/v1/submissions/{sub['id']}/scores", headers=s.teacher.headers, json={
        "scores": [{"criterion_id": thesis, "points": 3, "rationale": "Clear and arguable."}]})
    assert r.status_code == 200, r.text
    got = (await env.client.get(f"/api/v1/submissions/{sub['id']}", headers=s.student.headers)).json()
    by_id = {sc["criterion_id"]: sc for sc in got["scores"]}
    t = by_id[thesis]
    assert t["points"] == 3 and t["source"] == "teacher" and t["estimate"] is False and t["final"] is True
    assert t["level"] == "Clear, arguable thesis" and t["rationale"] == "Clear and arguable."
    assert t["overridden_by"] == s.teacher.id and t["overridden_at"]
    assert t["ai_points"] == ai[thesis]["points"] and t["ai_level"] == ai[thesis]["level"]
    assert by_id[evidence]["final"] is False and by_id[evidence]["source"] == "local"
    # A second override replaces the first; the stored scores (used by exports) follow.
    await env.client.put(f"/api/v1/submissions/{sub['id']}/scores", headers=s.teacher.headers, json={
        "scores": [{"criterion_id": thesis, "points": 2, "level": "Clear, arguable thesis"}]})
    async with env.ctx.sessions() as session:
        row = await session.get(Submission, uuid.UUID(sub["id"]))
        assert row is not None
        assert {x["criterion_id"]: x["points"] for x in row.scores or []}[thesis] == 2
        assert {x["criterion_id"]: x["points"] for x in row.ai_scores or []}[thesis] == ai[thesis]["points"]


async def test_override_points_are_validated_against_the_rubric(env: Env) -> None:
    s, sub = await _student_submission(env)
    thesis = s.rubric["criteria"][0]["id"]
    path = f"/api/v1/submissions/{sub['id']}/scores"
    h = s.teacher.headers
    assert_problem(await env.client.put(path, headers=h, json={"scores": [{"criterion_id": thesis, "points": 4}]}),
                   422, "points_out_of_range")
    assert_problem(await env.client.put(path, headers=h, json={"scores": [{"criterion_id": thesis, "points": -1}]}),
                   422, "points_out_of_range")
    assert_problem(await env.client.put(path, headers=h, json={"scores": [{"criterion_id": "nope", "points": 1}]}),
                   422, "unknown_criterion")
    assert_problem(await env.client.put(path, headers=h, json={
        "scores": [{"criterion_id": thesis, "points": 1, "level": "Made up"}]}), 422, "unknown_level")
    assert_problem(await env.client.put(path, headers=h, json={"scores": []}), 422, "validation_failed")


# --- essay submit ---------------------------------------------------------------------------


async def test_submitting_an_essay_freezes_a_revision_sets_submitted_at_and_scores_it(env: Env) -> None:
    s = await school(env.client)
    essay = await make_essay(env.client, s.student, s.assignment["id"], text=ESSAY)
    r = await env.client.post(f"/api/v1/essays/{essay['id']}/submit", headers=s.student.headers)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"] == body["submission_id"] and r.headers["location"].endswith(body["id"])
    assert body["essay_id"] == essay["id"] and body["rubric_id"] == s.rubric["id"] and body["late"] is False
    async with env.ctx.sessions() as session:
        row = await session.get(Essay, uuid.UUID(essay["id"]))
        assert row is not None and row.submitted_at is not None
        revision = await session.scalar(select(Revision).where(
            Revision.essay_id == uuid.UUID(essay["id"]), Revision.n == body["revision_n"]))
        assert revision is not None and revision.reason == "submit" and revision.text == ESSAY
    done = await wait_done(env.client, s.student, body["id"])
    assert done["status"] == "done" and len(done["scores"]) == 2
    # The class's teacher reads it too.
    assert (await env.client.get(f"/api/v1/submissions/{body['id']}", headers=s.teacher.headers)).status_code == 200


async def test_only_the_owner_may_submit_an_essay(env: Env) -> None:
    s = await school(env.client)
    essay = await make_essay(env.client, s.student, s.assignment["id"], text=ESSAY)
    path = f"/api/v1/essays/{essay['id']}/submit"
    assert_problem(await env.client.post(path, headers=s.teacher.headers), 403, "forbidden")
    assert_problem(await env.client.post(path, headers=(await register(env.client)).headers), 404, "not_found")


async def test_late_policy_reject_refuses_and_flag_marks_the_submission_late(env: Env) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    s = await school(env.client, due_at=past, late_policy="reject")
    flagged = await make_assignment_with(env.client, s.teacher, s.class_id, due_at=past, late_policy="flag")
    on_time = await make_assignment_with(env.client, s.teacher, s.class_id, due_at=future, late_policy="reject")
    # Under `reject` the due time is a hard close: no new essay, no submit (tests/integration/test_classroom.py
    # covers an essay started before the close).
    r = await env.client.post("/api/v1/essays", json={"title": "Late", "assignment_id": s.assignment["id"]},
                              headers=s.student.headers)
    assert_problem(r, 409, "past_due")
    late = await make_essay(env.client, s.student, flagged["id"], text=ESSAY)
    r = await env.client.post(f"/api/v1/essays/{late['id']}/submit", headers=s.student.headers)
    assert r.status_code == 202 and r.json()["late"] is True
    fine = await make_essay(env.client, s.student, on_time["id"], text=ESSAY)
    r = await env.client.post(f"/api/v1/essays/{fine['id']}/submit", headers=s.student.headers)
    assert r.status_code == 202 and r.json()["late"] is False
    # The API path applies the same policy.
    assert_problem(await submit(env.client, s.student, {"text": ESSAY, "assignment_id": s.assignment["id"]}),
                   409, "past_due")


# --- runner: crash and restart --------------------------------------------------------------


class StuckEngine(AnalysisEngine):
    """Analysis that never finishes: the worker running it is 'crashed' by cancelling it."""

    started = asyncio.Event()

    async def analyze_changed(self, *args: Any, **kwargs: Any) -> Any:
        StuckEngine.started.set()
        await asyncio.Event().wait()


async def drain(env: Env, timeout: float = 15) -> None:
    """Wait until earlier tests' jobs are finished, then stop the module's runner."""
    deadline = time.monotonic() + timeout
    while True:
        async with env.ctx.sessions() as session:
            busy = await session.scalar(select(Submission.id).where(
                Submission.status.in_(("queued", "running")) | (Submission.callback_status == "pending")).limit(1))
        if busy is None:
            break
        assert time.monotonic() < deadline, "earlier jobs did not finish"
        await asyncio.sleep(0.05)
    await stop_runner(env.ctx)


async def test_job_of_a_crashed_runner_and_queued_jobs_resume_after_restart(env: Env) -> None:
    await drain(env)  # this test decides who runs jobs
    try:
        user = await register(env.client)
        first = (await submit(env.client, user, {"text": ESSAY})).json()["id"]
        second = (await submit(env.client, user, {"text": ESSAY + " Again."})).json()["id"]
        StuckEngine.started = asyncio.Event()
        doomed = SubmissionRunner(env.ctx.sessions, lambda: StuckEngine(LocalAnalyzer()),
                                  config=RunnerConfig(lease_seconds=0.5, poll_seconds=0.05, concurrency=1),
                                  run_local_in_thread=False)
        await doomed.start()
        await asyncio.wait_for(StuckEngine.started.wait(), 5)
        crashed = next(iter(doomed.active))
        # Crash: the loop and the job die without releasing the lease (no stop()).
        tasks = [doomed._loop_task, *doomed._active.values()]
        for task in tasks:
            assert task is not None
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with env.ctx.sessions() as session:
            row = await session.get(Submission, crashed)
            assert row is not None and row.status == "running" and row.worker_id == doomed.worker_id
        # Restart: a new app on the same store picks up both the crashed and the queued job.
        async with running_app(env.settings) as (_, client):
            for sid in (first, second):
                body = await wait_done(client, user, sid)
                assert body["status"] == "done" and body["feedback"]["items"], body
        async with env.ctx.sessions() as session:
            row = await session.get(Submission, crashed)
            assert row is not None and row.attempts == 2 and row.worker_id is None
    finally:
        await start_runner(env.ctx)


async def test_a_job_is_claimed_by_exactly_one_of_several_runners(env: Env) -> None:
    await drain(env)
    try:
        user = await register(env.client)
        ids = {(await submit(env.client, user, {"text": f"{ESSAY} {i}"})).json()["id"] for i in range(4)}
        runners = [SubmissionRunner(env.ctx.sessions, lambda: AnalysisEngine(LocalAnalyzer()),
                                    config=RunnerConfig(concurrency=4)) for _ in range(3)]
        claims = await asyncio.gather(*(r.claim() for r in runners))
        claimed = [str(i) for c in claims for i in c]
        assert len(claimed) == len(set(claimed)) and ids == set(claimed)
        for r in runners:
            await r.stop()  # hands the claimed jobs back
        async with env.ctx.sessions() as session:
            rows = [await session.get(Submission, uuid.UUID(i)) for i in ids]
            assert all(r is not None and r.status == "queued" and r.attempts == 0 for r in rows)
    finally:
        await start_runner(env.ctx)


async def test_stop_ends_the_runner_when_a_wake_up_and_the_stop_meet(env: Env) -> None:
    """Python 3.11's `asyncio.wait_for` returns the inner result when it is cancelled just after the
    inner wait finished, losing the cancellation: a runner woken (a job queued) one step before
    its app stopped kept polling for ever and `stop` never returned (seen in CI)."""
    await drain(env)
    try:
        runner = SubmissionRunner(env.ctx.sessions, lambda: AnalysisEngine(LocalAnalyzer()),
                                  config=RunnerConfig(poll_seconds=60))
        first_round = asyncio.Event()
        measure = runner.measure_queue

        async def measured() -> tuple[int, float]:
            try:
                return await measure()
            finally:
                first_round.set()  # the loop goes on to wait for a wake-up in this same step

        runner.measure_queue = measured  # type: ignore[method-assign]
        await runner.start()
        async with asyncio.timeout(10):
            await first_round.wait()
        runner.notify()
        await asyncio.sleep(0)  # the wait has its answer; the loop has not run yet
        async with asyncio.timeout(10):
            await runner.stop()
    finally:
        await start_runner(env.ctx)


# --- webhooks -------------------------------------------------------------------------------


async def test_webhook_is_signed_with_the_requesters_secret_and_retried_until_accepted(env: Env) -> None:
    async with WebhookReceiver(statuses=[500, 500]) as receiver:
        user = await register(env.client)
        other = await register(env.client)
        r = await submit(env.client, user, {"text": ESSAY, "callback_url": receiver.url}, uuid.uuid4().hex)
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        got = await receiver.wait_for(3)
    assert [g.answered for g in got] == [500, 500, 200]
    secret = (await env.client.get("/api/v1/me/webhook-secret", headers=user.headers)).json()["secret"]
    others = (await env.client.get("/api/v1/me/webhook-secret", headers=other.headers)).json()["secret"]
    key = secret.encode()
    assert secret.startswith("whsec_") and others != secret
    for g in got:
        assert not verify(others.encode(), g.headers["x-essaycoach-signature"], g.body)
        assert verify(key, g.headers["x-essaycoach-signature"], g.body)
        t, v1 = (p.split("=", 1)[1] for p in g.headers["x-essaycoach-signature"].split(","))
        assert v1 == hmac.new(key, f"{t}.".encode() + g.body, hashlib.sha256).hexdigest()
        assert g.headers["x-essaycoach-event"] == "submission.done"
        assert not verify(key, g.headers["x-essaycoach-signature"], g.body + b" ")
    assert len({g.headers["x-essaycoach-delivery"] for g in got}) == 1
    payload = json.loads(got[-1].body)
    assert payload["submission_id"] == sid and payload["status"] == "done"
    assert payload["feedback_count"] > 0
    deadline = time.monotonic() + 5
    while True:
        body = (await env.client.get(f"/api/v1/submissions/{sid}", headers=user.headers)).json()
        if body["callback_status"] == "delivered" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert body["callback_status"] == "delivered"
    async with env.ctx.sessions() as session:
        row = await session.get(Submission, uuid.UUID(sid))
        assert row is not None and row.callback_attempts == 3


async def test_webhook_that_never_succeeds_is_marked_failed_after_bounded_attempts(env: Env) -> None:
    attempts = env.settings.webhook_max_attempts
    failed_before = REGISTRY.get_sample_value("essaycoach_webhook_deliveries_total", {"outcome": "failed"}) or 0
    async with WebhookReceiver(statuses=[503] * (attempts + 5)) as receiver:
        user = await register(env.client)
        r = await submit(env.client, user, {"text": ESSAY, "callback_url": receiver.url})
        sid = r.json()["id"]
        deadline = time.monotonic() + 10
        while True:
            body = (await env.client.get(f"/api/v1/submissions/{sid}", headers=user.headers)).json()
            if body["callback_status"] == "failed":
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)
        assert len(receiver.received) == attempts
    assert body["status"] == "done"
    assert REGISTRY.get_sample_value("essaycoach_webhook_deliveries_total", {"outcome": "failed"}) == failed_before + 1


async def test_the_runner_reports_the_queue_depth_and_the_oldest_jobs_age(env: Env) -> None:
    await drain(env)  # no runner claims while we look
    try:
        measuring = SubmissionRunner(env.ctx.sessions, lambda: AnalysisEngine(LocalAnalyzer()))
        assert (await measuring.measure_queue()) == (0, 0.0)
        user = await register(env.client)
        for i in range(3):
            assert (await submit(env.client, user, {"text": f"{ESSAY} {i}"})).status_code == 202
        later = SubmissionRunner(env.ctx.sessions, lambda: AnalysisEngine(LocalAnalyzer()),
                                 clock=lambda: datetime.now(UTC) + timedelta(seconds=90))
        depth, age = await later.measure_queue()
        assert depth == 3 and 90 <= age < 200
        assert REGISTRY.get_sample_value("essaycoach_submission_queue_depth") == 3
        assert REGISTRY.get_sample_value("essaycoach_submission_queue_age_seconds") == age
    finally:
        await start_runner(env.ctx)


def test_signature_check_rejects_tampering_and_stale_timestamps() -> None:
    from serve_app.webhooks import sign

    key, body = b"k" * 32, b'{"a":1}'
    now = 1_700_000_000
    header = sign(key, now, body)
    assert verify(key, header, body, now=now + 10)
    assert not verify(key, header, b'{"a":2}', now=now)
    assert not verify(b"x" * 32, header, body, now=now)
    assert not verify(key, header, body, now=now + 3600)
    assert not verify(key, "garbage", body, now=now)
