"""Decaying counters (`RateBucket`) shared by every replica through the store.

`add` is one upsert whose arithmetic runs in SQL (drain since `updated_at`, floor at zero, add),
so concurrent replicas never lose an increment; the caller owns the transaction.
"""

from __future__ import annotations

from sqlalchemy import case, delete, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import RateBucket
from db.repositories import upsert


async def level(session: AsyncSession, *, key: str) -> tuple[float, float] | None:
    """(level, updated_at) as stored, or None: the caller drains it to its own `now`."""
    row = (await session.execute(
        select(RateBucket.level, RateBucket.updated_at).where(RateBucket.key == key))).first()
    return (float(row[0]), float(row[1])) if row is not None else None


async def add(session: AsyncSession, *, key: str, amount: float, drain_per_second: float, now: float) -> float:
    """Drain the bucket to `now`, add `amount`, and return the new level."""
    elapsed = case((literal(now) > RateBucket.updated_at, literal(now) - RateBucket.updated_at), else_=0.0)
    drained = RateBucket.level - literal(drain_per_second) * elapsed
    new_level = case((drained > 0, drained), else_=0.0) + amount
    stmt = upsert.insert(session, RateBucket).values(key=key, level=amount, updated_at=now,
                                     expires_at=now + amount / drain_per_second)
    stmt = stmt.on_conflict_do_update(index_elements=[RateBucket.key], set_={
        "level": new_level, "updated_at": now, "expires_at": literal(now) + new_level / drain_per_second,
    }).returning(RateBucket.level)
    return float((await session.execute(stmt)).scalar_one())


async def delete_expired(session: AsyncSession, *, now: float) -> int:
    """Forget buckets that have drained to zero."""
    result = await session.execute(delete(RateBucket).where(RateBucket.expires_at < now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_keys(session: AsyncSession, *, keys: list[str]) -> int:
    """Forget these buckets (a deleted user's)."""
    if not keys:
        return 0
    result = await session.execute(delete(RateBucket).where(RateBucket.key.in_(keys)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
