"""RayLive's per-host batching of apply_update calls (the Ray call itself is replaced)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from actors.routing import host_index
from serve_app.live import RayLive


class SlowHosts(RayLive):
    """RayLive whose host calls wait until released, recording every batch."""

    def __init__(self) -> None:  # no settings, no Ray: only the batching state
        self.hosts = 1
        self._batches = {}
        self._in_flight = {}
        self.calls: list[list[Any]] = []
        self.release = asyncio.Event()

    async def _call_host(self, index: int, method: str, *args: Any, **kwargs: Any) -> Any:
        assert method == "apply_many"
        (batch,) = args
        self.calls.append(batch)
        await self.release.wait()
        return [(True, a[1]) for a, _ in batch]


async def test_batches_grow_while_the_allowed_calls_are_in_flight() -> None:
    live = SlowHosts()
    eid = uuid.uuid4()
    assert host_index(eid, 1) == 0
    slots = RayLive.MAX_IN_FLIGHT
    sizes = [3, 2, 4, 1, 5, 2, 3, 1][:slots]
    waves, n = [], 0
    for size in sizes:  # each wave leaves as one call while a slot is free
        waves.append([asyncio.ensure_future(live.call(eid, "apply_update", eid, i)) for i in range(n, n + size)])
        n += size
        await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(live.call(eid, "apply_update", eid, i)) for i in range(n, n + 35)]
    await asyncio.sleep(0.01)
    assert [len(c) for c in live.calls] == sizes  # every slot taken; the other 35 wait together
    live.release.set()
    assert await asyncio.gather(*(f for wave in waves for f in wave), *rest) == list(range(n + 35))
    assert [len(c) for c in live.calls] == [*sizes, 35]


async def test_a_lone_update_leaves_at_once() -> None:
    live = SlowHosts()
    live.release.set()
    eid = uuid.uuid4()
    assert await asyncio.wait_for(live.call(eid, "apply_update", eid, 7), 1) == 7
    assert live._in_flight == {0: 0}
