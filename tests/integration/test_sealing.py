"""Encryption at rest (db/crypto.py, README "Privacy"): what a store written with
ESSAYCOACH_DATA_KEY holds, mixed mode with rows from before the key, and key rotation with
`essaycoach reseal`. On SQLite and PostgreSQL, through the real app and its in-process hosts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, type_coerce

from db.crypto import Keyring, key_id, new_key, parse_key, sealed_key_id
from db.engine import make_engine
from db.reseal import reseal, sealed_columns
from serve_app.app import create_app
from tests.conftest import fresh_database, make_settings
from tests.fakes import Account, make_essay, register


@asynccontextmanager
async def api(url: str, var: Path, *, key: str = "", old: str = "") -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(url, var, data_key=key, data_keys_old=old))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test") as client:
            yield client


async def stored_values(url: str) -> list[tuple[str, str, Any]]:
    """Every non-null value of every sealed column, as stored: (table, column, raw value)."""
    engine = make_engine(url)  # no keyring: and raw columns anyway
    out = []
    try:
        async with engine.connect() as conn:
            for table, cols in sealed_columns():
                for col in cols:
                    raw = type_coerce(col, col.type.impl_instance)  # type: ignore[attr-defined]
                    for (value,) in (await conn.execute(select(raw).where(col.is_not(None)))).all():
                        out.append((table.name, col.name, value))
    finally:
        await engine.dispose()
    return out


def mentions(value: Any, word: str) -> bool:
    return word.encode() in value if isinstance(value, bytes) else word in value


async def texts(client: httpx.AsyncClient, student: Account, essay_id: str) -> tuple[str, list[str], str]:
    """The essay's text, its revisions' texts, and a submission's text where there is one."""
    essay = (await client.get(f"/api/v1/essays/{essay_id}", headers=student.headers)).json()
    revs = (await client.get(f"/api/v1/essays/{essay_id}/revisions", headers=student.headers)).json()["items"]
    rev_texts = [(await client.get(f"/api/v1/essays/{essay_id}/revisions/{r['n']}",
                                   headers=student.headers)).json()["text"] for r in revs]
    return essay["text"], rev_texts, essay["title"]


async def test_sealed_store_holds_no_essay_text_reads_old_plaintext_and_survives_rotation(
        database_url: str, tmp_path: Path) -> None:
    key_a, key_b = new_key(), new_key()
    id_a, id_b = (key_id(parse_key(k, variable="k")) for k in (key_a, key_b))
    async with fresh_database(database_url, tmp_path) as url:
        async with api(url, tmp_path) as client:  # before the key: plaintext
            student = await register(client)
            old = await make_essay(client, student, text="Written before the key: Quokkaplain paragraph.")
            r = await client.post(f"/api/v1/essays/{old['id']}/submit", headers=student.headers)
            assert r.status_code == 202, r.text
        assert any(mentions(v, "Quokkaplain") for _t, _c, v in await stored_values(url))

        async with api(url, tmp_path, key=key_a) as client:  # key A: new rows sealed, old ones read
            student.access_token = (await client.post("/api/v1/auth/token", json={
                "email": student.email, "password": "violet-Harbor-93!"})).json()["access_token"]
            new = await make_essay(client, student, text="Sealed from the start: Wombatsecret paragraph.")
            r = await client.post(f"/api/v1/essays/{new['id']}/submit", headers=student.headers)
            assert r.status_code == 202, r.text
            before = {e: await texts(client, student, e) for e in (old["id"], new["id"])}
        assert before[old["id"]][0] == "Written before the key: Quokkaplain paragraph."
        assert before[new["id"]][0] == "Sealed from the start: Wombatsecret paragraph."
        assert before[new["id"]][1] and all("Wombatsecret" in t for t in before[new["id"]][1])
        stored = await stored_values(url)
        assert not any(mentions(v, "Wombatsecret") for _t, _c, v in stored), "plaintext of a sealed essay at rest"
        sealed_tables = {t for t, _c, v in stored if sealed_key_id(v) == id_a}
        assert {"essays", "essay_updates", "revisions", "submissions"} <= sealed_tables
        assert any(mentions(v, "Quokkaplain") for _t, _c, v in stored), "mixed mode: old rows stay as written"

        # Rotation: B is current, A is old; reseal rewrites every row (plaintext ones too) under B.
        engine = make_engine(url, keyring=Keyring.parse(key_b, key_a))
        try:
            report = await reseal(engine, batch=2)  # small batches: the walk crosses pages
            again = await reseal(engine, batch=2)
        finally:
            await engine.dispose()
        assert report.rewritten["essay_updates"] >= 2 and report.rewritten["essays"] == 2
        assert sum(again.rewritten.values()) == 0, "a second run finds nothing to do"
        stored = await stored_values(url)
        assert stored and all(sealed_key_id(v) == id_b for _t, _c, v in stored), \
            {(t, c) for t, c, v in stored if sealed_key_id(v) != id_b}

        async with api(url, tmp_path, key=key_b) as client:  # A is no longer needed
            student.access_token = (await client.post("/api/v1/auth/token", json={
                "email": student.email, "password": "violet-Harbor-93!"})).json()["access_token"]
            after = {e: await texts(client, student, e) for e in (old["id"], new["id"])}
        assert after == before

        async with api(url, tmp_path) as client:  # no key at all: an error, never ciphertext as text
            student.access_token = (await client.post("/api/v1/auth/token", json={
                "email": student.email, "password": "violet-Harbor-93!"})).json()["access_token"]
            r = await client.get(f"/api/v1/essays/{new['id']}/revisions/1", headers=student.headers)
            assert r.status_code == 500 and "EC1" not in r.text


async def test_reseal_without_a_current_key_writes_plaintext_back(database_url: str, tmp_path: Path) -> None:
    key = new_key()
    async with fresh_database(database_url, tmp_path) as url:
        async with api(url, tmp_path, key=key) as client:
            student = await register(client)
            essay = await make_essay(client, student, text="Numbatsecret text.")
        assert all(sealed_key_id(v) is not None for _t, _c, v in await stored_values(url))
        engine = make_engine(url, keyring=Keyring.parse("", key))
        try:
            await reseal(engine)
        finally:
            await engine.dispose()
        stored = await stored_values(url)
        assert all(sealed_key_id(v) is None for _t, _c, v in stored)
        async with api(url, tmp_path) as client:
            student.access_token = (await client.post("/api/v1/auth/token", json={
                "email": student.email, "password": "violet-Harbor-93!"})).json()["access_token"]
            r = await client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
            assert r.json()["text"] == "Numbatsecret text."


async def test_the_reseal_command_rotates_and_refuses_to_run_without_keys(
        database_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    from serve_app.cli import main

    key_a = new_key()
    async with fresh_database(database_url, tmp_path) as url:
        async with api(url, tmp_path, key=key_a) as client:
            student = await register(client)
            await make_essay(client, student, text="Bilbysecret text.")
        for name, value in {"DATABASE_URL": url, "VAR_DIR": str(tmp_path), "JWT_SECRET": "s" * 40}.items():
            monkeypatch.setenv(f"ESSAYCOACH_{name}", value)
        monkeypatch.delenv("ESSAYCOACH_DATA_KEY", raising=False)
        monkeypatch.delenv("ESSAYCOACH_DATA_KEYS_OLD", raising=False)
        with pytest.raises(SystemExit, match="set ESSAYCOACH_DATA_KEY"):
            await asyncio.to_thread(main, ["reseal"])
        await asyncio.to_thread(main, ["data-key", "new"])
        key_b = capsys.readouterr().out.strip()
        monkeypatch.setenv("ESSAYCOACH_DATA_KEY", key_b)
        monkeypatch.setenv("ESSAYCOACH_DATA_KEYS_OLD", key_a)
        await asyncio.to_thread(main, ["reseal", "--batch", "3"])
        out = capsys.readouterr().out
        id_b = key_id(parse_key(key_b, variable="k"))
        assert f"every sealed row is now under data key {id_b.hex()}" in out and "essays: 1 of 1 rows rewritten" in out
        assert all(sealed_key_id(v) == id_b for _t, _c, v in await stored_values(url))
