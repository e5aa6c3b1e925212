"""Login throttling through POST /auth/token: failures only, per account and per client address,
the address taken from X-Forwarded-For only behind trusted proxies, state shared by replicas
(store or Redis) and a decaying bucket that a trickle of failures cannot keep armed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from db.engine import make_engine, make_sessionmaker
from db.repositories import rate_buckets, users
from serve_app.app import create_app
from serve_app.ratelimit import BucketPolicy, LoginThrottle, RedisBucketStore, SqlBucketStore
from tests.conftest import REDIS_URL, make_settings
from tests.fakes import PASSWORD, assert_problem, login

# Verifying costs what the stored hash's parameters say: a cheap hash lets 300 logins run quickly.
CHEAP_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)

ClientFor = Callable[..., httpx.AsyncClient]


async def _accounts(database_url: str, n: int) -> list[str]:
    """`n` students created straight in the store (all with PASSWORD)."""
    engine = make_engine(database_url)
    emails = [f"s{i}-{uuid.uuid4().hex[:10]}@example.com" for i in range(n)]
    async with make_sessionmaker(engine)() as session:
        for email in emails:
            await users.create(session, email=email, name="Student", role="student", password_hash=CHEAP_HASH)
        await session.commit()
    await engine.dispose()
    return emails


@asynccontextmanager
async def _app(database_url: str, var: Path, **overrides: Any) -> AsyncIterator[ClientFor]:
    """An app of its own; yields `client(peer)` making clients that connect from `peer`."""
    application = create_app(make_settings(database_url, var, **overrides))
    opened: list[httpx.AsyncClient] = []

    def client(peer: str = "203.0.113.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=application, client=(peer, 40000))  # type: ignore[arg-type]
        c = httpx.AsyncClient(transport=transport, base_url="http://test")
        opened.append(c)
        return c

    async with application.router.lifespan_context(application):
        try:
            yield client
        finally:
            await asyncio.gather(*(c.aclose() for c in opened))


async def test_three_hundred_students_behind_one_school_address_all_log_in(database_url: str,
                                                                          tmp_path: Path) -> None:
    emails = await _accounts(database_url, 300)
    async with _app(database_url, tmp_path) as client_for:
        school = client_for("198.51.100.20")
        for i, email in enumerate(emails):
            if i % 10 == 0:  # one in ten mistypes first: 30 failures from the address
                assert_problem(await login(school, email, "wrong-password-77"), 401, "invalid_credentials")
            r = await login(school, email)
            assert r.status_code == 200, (i, r.text)


async def test_a_burst_of_failures_locks_that_account_not_others_from_the_same_address(
    database_url: str, tmp_path: Path
) -> None:
    victim, classmate = await _accounts(database_url, 2)
    async with _app(database_url, tmp_path) as client_for:
        school = client_for("198.51.100.21")
        for _ in range(5):
            assert_problem(await login(school, victim, "wrong-password-77"), 401, "invalid_credentials")
        locked = await login(school, victim)  # even the right password waits
        assert_problem(locked, 429, "rate_limited")
        assert 1 <= int(locked.headers["retry-after"]) <= 60
        assert_problem(await login(client_for("192.0.2.50"), victim), 429, "rate_limited")  # per account
        assert (await login(school, classmate)).status_code == 200


async def test_failures_from_one_address_across_accounts_are_limited(database_url: str, tmp_path: Path) -> None:
    (student,) = await _accounts(database_url, 1)
    async with _app(database_url, tmp_path, login_ip_failure_burst=3) as client_for:
        sprayer = client_for("198.51.100.22")
        for _ in range(3):
            assert_problem(await login(sprayer, f"x-{uuid.uuid4().hex}@example.com", "Spring2026!"), 401,
                           "invalid_credentials")
        blocked = await login(sprayer, student)
        assert_problem(blocked, 429, "rate_limited")
        assert 1 <= int(blocked.headers["retry-after"]) <= 6
        assert (await login(client_for("198.51.100.23"), student)).status_code == 200


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(database_url: str, tmp_path: Path) -> None:
    (student,) = await _accounts(database_url, 1)
    async with _app(database_url, tmp_path, login_ip_failure_burst=2, trusted_proxies="10.0.0.1/32") as client_for:
        attacker = client_for("198.51.100.24")
        for i in range(2):
            r = await attacker.post("/api/v1/auth/token", json={"email": f"x{i}@example.com", "password": "nope-nope"},
                                    headers={"X-Forwarded-For": f"192.0.2.{i + 1}"})
            assert_problem(r, 401, "invalid_credentials")
        r = await attacker.post("/api/v1/auth/token", json={"email": student, "password": PASSWORD},
                                headers={"X-Forwarded-For": "192.0.2.99"})
        assert_problem(r, 429, "rate_limited")  # every attempt counted against the real peer


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(database_url: str, tmp_path: Path) -> None:
    (student,) = await _accounts(database_url, 1)
    async with _app(database_url, tmp_path, login_ip_failure_burst=2,
                    trusted_proxies="10.0.0.0/24, 127.0.0.1") as client_for:
        proxy = client_for("10.0.0.1")

        async def attempt(forwarded: str, email: str, password: str = "nope-nope") -> httpx.Response:
            return await proxy.post("/api/v1/auth/token", json={"email": email, "password": password},
                                    headers={"X-Forwarded-For": forwarded})

        # The client prepends a fake address; the proxies (10.0.0.x) appended the real one.
        for i in range(2):
            assert_problem(await attempt(f"6.6.6.{i}, 192.0.2.1, 10.0.0.7", f"y{i}@example.com"), 401,
                           "invalid_credentials")
        assert_problem(await attempt("7.7.7.7, 192.0.2.1", student, PASSWORD), 429, "rate_limited")
        # Another client behind the same proxy is its own address.
        assert (await attempt("192.0.2.2", student, PASSWORD)).status_code == 200


@pytest.mark.parametrize("store", ["store", "redis"])
async def test_throttle_state_is_shared_between_replicas(database_url: str, tmp_path: Path, store: str) -> None:
    victim, other = await _accounts(database_url, 2)
    extra: dict[str, Any] = {"redis_url": REDIS_URL} if store == "redis" else {}
    async with _app(database_url, tmp_path / "a", **extra) as replica_a, \
            _app(database_url, tmp_path / "b", **extra) as replica_b:
        for _ in range(5):
            assert_problem(await login(replica_a("198.51.100.30"), victim, "wrong-password-77"), 401,
                           "invalid_credentials")
        assert_problem(await login(replica_b("198.51.100.31"), victim), 429, "rate_limited")
        assert (await login(replica_b("198.51.100.30"), other)).status_code == 200


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_one_wrong_password_every_fifteen_minutes_never_keeps_an_account_locked(database_url: str) -> None:
    engine = make_engine(database_url)
    clock = FakeClock()
    throttle = LoginThrottle(SqlBucketStore(make_sessionmaker(engine)), clock=clock,
                             per_account=BucketPolicy.every(burst=5, seconds=60),
                             per_ip=BucketPolicy.every(burst=100, seconds=6))
    account = f"victim-{uuid.uuid4().hex}@example.com"
    try:
        for _ in range(5):
            await throttle.failed(ip="192.0.2.1", account=account)
        assert await throttle.wait(ip="192.0.2.9", account=account) == 60
        for _ in range(100):  # a day of one failure per 15 minutes
            clock.now += 15 * 60
            assert await throttle.wait(ip="192.0.2.9", account=account) == 0
            await throttle.failed(ip="192.0.2.1", account=account)
    finally:
        await engine.dispose()


async def test_drained_buckets_are_evicted_from_the_store(database_url: str) -> None:
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    store = SqlBucketStore(sessions)
    policy = BucketPolicy.every(burst=5, seconds=60)
    key = f"login:account:evict-{uuid.uuid4().hex}"
    try:
        await store.add(key, policy=policy, now=1000.0, amount=2)
        await store.evict(now=1000.0 + 119)  # two failures drain in 120 s: ours stays
        async with sessions() as session:
            assert await rate_buckets.level(session, key=key) is not None
        await store.evict(now=1000.0 + 121)
        async with sessions() as session:
            assert await rate_buckets.level(session, key=key) is None
    finally:
        await engine.dispose()


async def test_redis_buckets_expire_once_drained() -> None:
    store = RedisBucketStore(REDIS_URL)
    key = f"login:account:ttl-{uuid.uuid4().hex}"
    try:
        import time

        level = await store.add(key, policy=BucketPolicy.every(burst=5, seconds=2), now=time.time(), amount=1)
        assert level == 1.0
        ttl_ms = await store.client.pttl(store.prefix + key)
        assert 0 < ttl_ms <= 3000  # drained after 2 s (+1 s margin), then Redis forgets it
    finally:
        await store.aclose()


async def test_failed_logins_with_a_maximum_length_email_are_throttled_not_500(database_url: str,
                                                                               tmp_path: Path) -> None:
    """An email near the 254-character maximum is longer than the bucket store's key column:
    keys are hashed, so the failures still count and never become a 500."""
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 50 + ".com"
    assert len(email) == 247
    async with _app(database_url, tmp_path) as client_for:
        client = client_for("198.51.100.77")
        for _ in range(5):
            assert_problem(await login(client, email, "wrong-password-77"), 401, "invalid_credentials")
        assert_problem(await login(client, email, "wrong-password-77"), 429, "rate_limited")
