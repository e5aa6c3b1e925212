"""LLM spend through the submissions API with the fake OpenAI-compatible server: a per-user daily
token budget counted from stored usage (so neither a new submission nor a new process starts a
fresh allowance) and a per-user submission rate limit shared by replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from db.engine import make_engine, make_sessionmaker
from db.repositories import submissions as repo
from serve_app.app import create_app
from tests.conftest import fresh_database, make_settings
from tests.fake_llm import FakeLLMServer
from tests.fakes import Account, assert_problem, make_essay, register

ESSAY = ("Homework should be limited because students need rest.\n"
         "Teh research on sleep is clear and teh results are strong.")


@pytest.fixture
async def store_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A store of this test's own: jobs these tests leave queued (a submission accepted just before
    its app stops) must not be run later by another test's app and reach that test's fake LLM."""
    async with fresh_database(database_url, tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@asynccontextmanager
async def _app(database_url: str, var: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(make_settings(database_url, var, submission_poll_seconds=0.05, **overrides))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def _llm(fake: FakeLLMServer, budget: int) -> dict[str, Any]:
    return {"ai_provider": "openai", "ai_base_url": fake.base_url, "ai_api_key": "test-key",
            "ai_model": "fake-model", "ai_token_budget_per_user_per_day": budget}


async def _submit(client: httpx.AsyncClient, who: Account, **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/submissions", json={"text": ESSAY}, headers={**who.headers, **extra})


async def _wait_done(client: httpx.AsyncClient, who: Account, sid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        body = (await client.get(f"/api/v1/submissions/{sid}", headers=who.headers)).json()
        if body["status"] in ("done", "failed"):
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def _tokens_today(database_url: str, user_id: str) -> int:
    from db.types import utcnow
    from serve_app.jobs import day_start

    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await repo.tokens_used_by_user(session, user_id=uuid.UUID(user_id), since=day_start(utcnow()))
    finally:
        await engine.dispose()


async def test_daily_token_budget_counts_stored_usage_across_submissions_and_app_instances(
    store_url: str, tmp_path: Path, llm: FakeLLMServer
) -> None:
    llm.reset()
    async with _app(store_url, tmp_path / "a", **_llm(llm, 10**6)) as first:
        user, other = await register(first), await register(first)
        r = await _submit(first, user)
        assert r.status_code == 202, r.text
        done = await _wait_done(first, user, r.json()["id"])
        assert done["status"] == "done"
    used = await _tokens_today(store_url, user.id)
    calls = len(llm.requests)
    assert used > 0 and calls > 0

    # A new process with a budget of exactly what is stored: the stored usage counts.
    async with _app(store_url, tmp_path / "b", **_llm(llm, used)) as second:
        refused = await _submit(second, user)
        problem = assert_problem(refused, 429, "token_budget_exhausted")
        assert 1 <= int(refused.headers["retry-after"]) <= 86_400, problem
        assert (await _submit(second, other)).status_code == 202  # the budget is per user

    # One token left: the submission is accepted, but its job may not call the model.
    async with _app(store_url, tmp_path / "c", **_llm(llm, used + 1)) as third:
        llm.reset()
        r = await _submit(third, user)
        assert r.status_code == 202, r.text
        body = await _wait_done(third, user, r.json()["id"])
        assert body["status"] == "done"
        assert llm.requests == []
    assert await _tokens_today(store_url, user.id) == used


async def test_submissions_per_user_are_rate_limited_across_both_routes_and_replicas(
    store_url: str, tmp_path: Path
) -> None:
    limits = {"submissions_per_user_per_hour": 3}
    async with _app(store_url, tmp_path / "a", **limits) as first, \
            _app(store_url, tmp_path / "b", **limits) as second:
        user, other = await register(first), await register(first)
        essay = await make_essay(first, user, text="A short essay about rest and homework.")
        keys = [uuid.uuid4().hex for _ in range(3)]
        accepted = [await _submit(first, user, **{"Idempotency-Key": k}) for k in keys]
        assert [r.status_code for r in accepted] == [202, 202, 202]
        limited = await _submit(first, user)
        assert_problem(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 1200  # one slot refills every 20 minutes
        assert_problem(await first.post(f"/api/v1/essays/{essay['id']}/submit", headers=user.headers), 429,
                       "rate_limited")
        assert_problem(await _submit(second, user), 429, "rate_limited")  # shared by replicas
        replay = await _submit(first, user, **{"Idempotency-Key": keys[0]})  # a retry is not a new one
        assert replay.status_code == 202 and replay.json()["id"] == accepted[0].json()["id"]
        assert (await _submit(second, other)).status_code == 202
