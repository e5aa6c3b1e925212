"""The in-memory bucket store (serve_app.ratelimit.MemoryBucketStore): the socket ticket limit
without Redis, so a socket open writes nothing to the SQL store."""

from __future__ import annotations

from serve_app.ratelimit import BucketPolicy, MemoryBucketStore, RateLimit


async def test_a_bucket_fills_drains_and_is_swept_once_empty() -> None:
    store = MemoryBucketStore(sweep_every=3)
    policy = BucketPolicy.every(burst=2, seconds=10)  # 2 at once, then one per 10 s
    assert await store.add("a", policy=policy, now=100.0) == 1.0
    assert await store.add("a", policy=policy, now=100.0) == 2.0
    assert await store.level("a", policy=policy, now=105.0) == 1.5
    assert await store.level("b", policy=policy, now=105.0) == 0.0
    assert await store.evict(now=110.0) == 0  # "a" still holds 1.0
    await store.add("b", policy=policy, now=110.0)  # the third add sweeps: nothing is empty yet
    assert await store.evict(now=200.0) == 2  # both drained
    assert await store.level("a", policy=policy, now=200.0) == 0.0


async def test_a_rate_limit_on_memory_refuses_past_the_burst_and_forgets() -> None:
    now = [0.0]
    limit = RateLimit(MemoryBucketStore(), prefix="ws-ticket:user:", policy=BucketPolicy.every(burst=3, seconds=20),
                      clock=lambda: now[0])
    for _ in range(3):
        assert await limit.wait("u1") == 0
        await limit.hit("u1")
    assert await limit.wait("u1") == 20  # one more fits once a third of the minute passed
    assert await limit.wait("u2") == 0  # per key
    now[0] = 20.0
    assert await limit.wait("u1") == 0
    await limit.store.forget([limit.key_for("u1")])
    await limit.hit("u1")
    assert await limit.store.level(limit.key_for("u1"), policy=limit.policy, now=20.0) == 1.0
