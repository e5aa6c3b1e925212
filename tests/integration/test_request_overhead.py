"""What every API request costs besides its own work: no thread hop for the dependencies every
request solves, and on SQLite no connection opened per request in a burst (aiosqlite gives each
connection a thread of its own, opened with it)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio.to_thread
import httpx
import pytest
from sqlalchemy import event, text

from db.engine import make_engine
from tests.fakes import make_class, register


async def test_the_common_dependencies_run_on_the_event_loop_not_in_the_thread_pool(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """`get_context`, `require_role`'s check and `page_params` are solved on every request: as
    plain functions FastAPI ran each in anyio's thread pool (a thread hop per request)."""
    teacher = await register(client, "teacher")
    cls = await make_class(client, teacher)
    hops: list[Any] = []
    real = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", func))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    for path in ("/api/v1/me", "/api/v1/classes?limit=5", f"/api/v1/classes/{cls['id']}/assignments"):
        r = await client.get(path, headers=teacher.headers)
        assert r.status_code == 200, (path, r.text)
    r = await client.post("/api/v1/classes", json={"name": "Teacher only"}, headers=teacher.headers)
    assert r.status_code == 201, r.text
    assert hops == []


async def test_a_burst_of_requests_on_sqlite_reuses_its_connections(tmp_path: object) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/burst.sqlite3")
    opened = []
    event.listen(engine.sync_engine, "connect", lambda *_: opened.append(1))

    async def one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await asyncio.sleep(0.01)  # held together: a burst, not one after another

    try:
        for _ in range(3):
            await asyncio.gather(*(one() for _ in range(16)))
        assert len(opened) == 16  # the first burst's; the next two reuse them
    finally:
        await engine.dispose()
