"""Decaying buckets shared by every replica, and the login throttle built on them.

A bucket's level rises by one per counted event and drains at a constant rate; an event is
refused while one more would overflow the bucket's burst. Unlike a lockout timer reset by each
failure, a drain cannot be re-armed by a trickle: one wrong password every 15 minutes against a
bucket draining one per minute leaves it empty. State lives in Redis when `REDIS_URL` is set,
else in the store's `rate_buckets` table, so every Gateway replica sees the same counts; buckets
expire (Redis TTL, `delete_expired` in the store) once drained.

Login throttling counts FAILURES only, per account and per client address (successful logins
never count, so 300 students behind one school address all log in). Checking and counting are two
steps, so concurrent failures may overshoot a burst by the number in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.repositories import rate_buckets

log = logging.getLogger("essaycoach.ratelimit")


@dataclass(frozen=True)
class BucketPolicy:
    """`burst` events at once, then one more every `1 / drain_per_second` seconds."""

    burst: float
    drain_per_second: float

    @classmethod
    def every(cls, *, burst: float, seconds: float) -> BucketPolicy:
        return cls(burst=burst, drain_per_second=1.0 / seconds)


def drained(level: float, updated_at: float, now: float, drain_per_second: float) -> float:
    """The level at `now` of a bucket that stood at `level` at `updated_at` (never below zero)."""
    return max(0.0, level - drain_per_second * max(0.0, now - updated_at))


def wait_seconds(level: float, policy: BucketPolicy) -> int:
    """Whole seconds until one more event fits (0: it fits now)."""
    over = level + 1 - policy.burst
    return 0 if over <= 0 else max(1, math.ceil(over / policy.drain_per_second))


class BucketStore(Protocol):
    """Where bucket levels live; `level` drains to `now`, `add` drains then adds atomically."""

    async def level(self, key: str, *, policy: BucketPolicy, now: float) -> float: ...

    async def forget(self, keys: list[str]) -> None:
        """Delete these buckets (a deleted user's)."""
        ...

    async def add(self, key: str, *, policy: BucketPolicy, now: float, amount: float = 1.0) -> float: ...

    async def evict(self, *, now: float) -> int: ...

    async def aclose(self) -> None: ...


class SqlBucketStore:
    """Buckets in the store's `rate_buckets` table (the embedded default)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def level(self, key: str, *, policy: BucketPolicy, now: float) -> float:
        async with self.sessions() as session:
            row = await rate_buckets.level(session, key=key)
        return drained(row[0], row[1], now, policy.drain_per_second) if row else 0.0

    async def add(self, key: str, *, policy: BucketPolicy, now: float, amount: float = 1.0) -> float:
        async with self.sessions() as session:
            new_level = await rate_buckets.add(session, key=key, amount=amount,
                                               drain_per_second=policy.drain_per_second, now=now)
            await session.commit()
        return new_level

    async def forget(self, keys: list[str]) -> None:
        async with self.sessions() as session:
            await rate_buckets.delete_keys(session, keys=keys)
            await session.commit()

    async def evict(self, *, now: float) -> int:
        async with self.sessions() as session:
            removed = await rate_buckets.delete_expired(session, now=now)
            await session.commit()
        return removed

    async def aclose(self) -> None:
        return None


# KEYS[1] bucket; ARGV now, drain per second, amount. The level and its time live in one hash
# that expires once drained, so Redis evicts idle buckets itself.
_ADD_LUA = """
local now = tonumber(ARGV[1]); local rate = tonumber(ARGV[2]); local amount = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'l', 't')
local level = tonumber(state[1]) or 0
local since = tonumber(state[2]) or now
local elapsed = now - since
if elapsed < 0 then elapsed = 0 end
level = level - rate * elapsed
if level < 0 then level = 0 end
level = level + amount
redis.call('HSET', KEYS[1], 'l', tostring(level), 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(level / rate * 1000) + 1000)
return tostring(level)
"""


class RedisBucketStore:
    """Buckets in Redis (when `REDIS_URL` is set): one hash per bucket with a TTL."""

    def __init__(self, url: str, *, prefix: str = "essaycoach:bucket:") -> None:
        import redis.asyncio as aioredis

        self.client: Any = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.prefix = prefix
        self._add = self.client.register_script(_ADD_LUA)

    async def level(self, key: str, *, policy: BucketPolicy, now: float) -> float:
        level, since = await self.client.hmget(self.prefix + key, "l", "t")
        if level is None or since is None:
            return 0.0
        return drained(float(level), float(since), now, policy.drain_per_second)

    async def add(self, key: str, *, policy: BucketPolicy, now: float, amount: float = 1.0) -> float:
        return float(await self._add(keys=[self.prefix + key], args=[now, policy.drain_per_second, amount]))

    async def forget(self, keys: list[str]) -> None:
        if keys:
            await self.client.delete(*(self.prefix + k for k in keys))

    async def evict(self, *, now: float) -> int:
        return 0  # keys expire by TTL

    async def aclose(self) -> None:
        await self.client.aclose()


class MemoryBucketStore:
    """Buckets in this process's memory, for a limit checked on every socket open: with the SQL
    store that was three more connections and two more writes per ticket, contending with the
    essay hosts' commits for SQLite's one writer (measured: 300 students opening sockets at once
    exhausted the connection pool, 276 of 600 connects failed). Each replica counts on its own;
    drained buckets are swept every `sweep_every` adds."""

    def __init__(self, *, sweep_every: int = 1000) -> None:
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key -> level, updated_at, drain/s
        self._adds, self.sweep_every = 0, sweep_every

    async def level(self, key: str, *, policy: BucketPolicy, now: float) -> float:
        level, at, _ = self._buckets.get(key, (0.0, now, policy.drain_per_second))
        return drained(level, at, now, policy.drain_per_second)

    async def add(self, key: str, *, policy: BucketPolicy, now: float, amount: float = 1.0) -> float:
        level = await self.level(key, policy=policy, now=now) + amount
        self._buckets[key] = (level, now, policy.drain_per_second)
        self._adds += 1
        if self._adds % self.sweep_every == 0:
            await self.evict(now=now)
        return level

    async def forget(self, keys: list[str]) -> None:
        for key in keys:
            self._buckets.pop(key, None)

    async def evict(self, *, now: float) -> int:
        gone = [key for key, (level, at, drain) in self._buckets.items() if drained(level, at, now, drain) == 0]
        for key in gone:
            del self._buckets[key]
        return len(gone)

    async def aclose(self) -> None:
        self._buckets.clear()


def make_bucket_store(redis_url: str | None, sessions: async_sessionmaker[AsyncSession]) -> BucketStore:
    return RedisBucketStore(redis_url) if redis_url else SqlBucketStore(sessions)


async def evict_periodically(store: BucketStore, *, every: float = 300.0,
                             clock: Callable[[], float] = time.time) -> None:
    """Delete drained buckets every `every` seconds (a no-op on Redis); run as a task."""
    while True:
        await asyncio.sleep(every)
        try:
            removed = await store.evict(now=clock())
        except Exception:  # the store may be restarting: the next round catches up
            log.warning("could not evict drained rate buckets", exc_info=True)
            continue
        if removed:
            log.debug("evicted %d drained rate buckets", removed)


class RateLimit:
    """One bucket per key under `prefix` (e.g. submissions per user): `wait` before, `hit` after."""

    def __init__(self, store: BucketStore, *, prefix: str, policy: BucketPolicy,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.prefix = prefix
        self.policy = policy
        self.clock = clock

    def key_for(self, key: str) -> str:
        """The bucket's name in the store (what `BucketStore.forget` takes)."""
        # Keys come from clients (an email may be 320 characters): long ones are hashed so every
        # key fits the store's column (rate_buckets.key, 200) and a Redis key stays small.
        if len(key) > 64:
            key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        return self.prefix + key

    async def wait(self, key: str) -> int:
        """Seconds before one more event for `key` fits (0: now)."""
        return wait_seconds(await self.store.level(self.key_for(key), policy=self.policy, now=self.clock()),
                            self.policy)

    async def hit(self, key: str) -> None:
        await self.store.add(self.key_for(key), policy=self.policy, now=self.clock())

    async def spend(self, key: str) -> int:
        """One event for `key` if it fits now (0), else the seconds to wait (nothing counted)."""
        wait = await self.wait(key)
        if not wait:
            await self.hit(key)
        return wait


def hourly(store: BucketStore, *, prefix: str, per_hour: int) -> RateLimit:
    """`per_hour` events per key at once, refilled evenly over the hour (exports, imports)."""
    return RateLimit(store, prefix=prefix, policy=BucketPolicy.every(burst=per_hour, seconds=3600 / per_hour))


class LoginThrottle:
    """Failure buckets per account and per client address; `clock` is wall time (shared state)."""

    def __init__(self, store: BucketStore, *, per_account: BucketPolicy, per_ip: BucketPolicy,
                 clock: Callable[[], float] = time.time) -> None:
        self.accounts = RateLimit(store, prefix="login:account:", policy=per_account, clock=clock)
        self.ips = RateLimit(store, prefix="login:ip:", policy=per_ip, clock=clock)

    async def wait(self, *, ip: str, account: str) -> int:
        """Seconds before a login for `account` from `ip` may be tried (0: now). Counts nothing."""
        return max(await asyncio.gather(self.ips.wait(ip), self.accounts.wait(account)))

    async def failed(self, *, ip: str, account: str) -> None:
        await self.ips.hit(ip)
        await self.accounts.hit(account)
