"""Backups taken while students type restore into a fresh database with every acknowledged update
(ops/scripts/backup.py), on the embedded SQLite store and on PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ops.loadtest.yclient import YClient
from ops.scripts import backup as backups
from serve_app.app import create_app
from tests.conftest import fresh_database, make_settings
from tests.fakes import make_essay, register


async def test_backup_under_typing_restores_every_acknowledged_update(
        live_client, live_server, settings, tmp_path) -> None:
    student = await register(live_client, "student")
    essay = await make_essay(live_client, student)
    ticket = (await live_client.post("/api/v1/auth/ws-ticket", headers=student.headers)).json()["ticket"]
    writer = await YClient(f"ws://{live_server}/ws/essays/{essay['id']}/doc?ticket={ticket}").connect()

    typed: list[tuple[int, str]] = []  # (messages sent so far, text after that message)
    stop = asyncio.Event()

    async def type_continuously() -> None:
        i = 0
        while not stop.is_set():
            writer.type(f"w{i} ")
            typed.append((writer.sent, str(writer.text)))
            i += 1
            await asyncio.sleep(0.003)

    typing = asyncio.create_task(type_continuously())
    await asyncio.sleep(0.3)  # a backlog of acked and in-flight updates exists when the backup starts
    acked = writer.acked
    acked_text = max((text for sent, text in typed if sent <= acked), key=len)
    dump = tmp_path / "essaycoach.backup"
    await asyncio.to_thread(backups.backup, settings.database_url, dump)
    await asyncio.sleep(0.2)  # typing goes on after the snapshot
    stop.set()
    await typing
    await writer.wait_acked()
    final_text = str(writer.text)
    await writer.close()
    assert len(acked_text) > 0 and len(final_text) > len(acked_text)

    async with fresh_database(settings.database_url, tmp_path, migrated=False) as restored_url:
        await asyncio.to_thread(backups.restore, restored_url, dump)
        restored_app = create_app(make_settings(restored_url, tmp_path / "var"))
        async with restored_app.router.lifespan_context(restored_app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=restored_app),
                                         base_url="http://restored") as client:
                r = await client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
    assert r.status_code == 200, r.text
    restored_text = r.json()["text"]
    # Everything acknowledged before the backup began is there, and nothing that was never typed.
    assert restored_text.startswith(acked_text)
    assert final_text.startswith(restored_text)


def test_sqlite_restore_refuses_to_overwrite_a_store_without_force(tmp_path) -> None:
    import sqlite3

    source, target = tmp_path / "backup.db", tmp_path / "live.db"
    for path, value in ((source, "from backup"), (target, "live")):
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (v TEXT)")
            db.execute("INSERT INTO t VALUES (?)", (value,))
    url = f"sqlite+aiosqlite:///{target}"
    assert backups.main(["restore", "--database-url", url, "--from", str(source)]) == 1
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT v FROM t").fetchall() == [("live",)]
    assert backups.main(["restore", "--database-url", url, "--from", str(source), "--force"]) == 0
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT v FROM t").fetchall() == [("from backup",)]


def test_a_missing_backup_or_store_is_a_one_line_error(tmp_path, capsys) -> None:
    missing = tmp_path / "nothing.db"
    assert backups.main(["backup", "--database-url", f"sqlite+aiosqlite:///{missing}",
                         "--to", str(tmp_path / "out")]) == 1
    assert "no SQLite database" in capsys.readouterr().err
    assert backups.main(["restore", "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
                         "--from", str(missing)]) == 1
    assert "no backup" in capsys.readouterr().err


@pytest.mark.parametrize("url, expected", [
    ("postgresql+asyncpg://u:p@db.internal:5432/essaycoach", "postgresql://u:p@db.internal:5432/essaycoach"),
    ("postgresql://postgres@127.0.0.1/test", "postgresql://postgres@127.0.0.1/test"),
])
def test_pg_tools_get_a_libpq_url(url: str, expected: str) -> None:
    assert backups.libpq_url(url) == expected
