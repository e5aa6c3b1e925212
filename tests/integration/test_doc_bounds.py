"""What a hostile client may write over the doc socket (issue 13, item 2): only plain text in
`content`, within the essay's character limit and update-log budget."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pycrdt import Map

from ops.loadtest.yclient import YClient
from tests.fakes import make_essay, register
from tests.integration.test_sockets import doc_url


@pytest.fixture
async def bounded(settings) -> AsyncIterator[tuple[Any, str, httpx.AsyncClient]]:
    """A server whose essays hold at most 100 characters and 4 KiB of update log."""
    from serve_app.app import create_app
    from tests.conftest import serving

    application = create_app(settings.model_copy(update={"max_essay_chars": 100, "max_essay_log_bytes": 4096}))
    async with serving(application) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        yield application, server, client


async def stored_text(client: httpx.AsyncClient, account: Any, essay_id: str) -> str:
    r = await client.get(f"/api/v1/essays/{essay_id}", headers=account.headers)
    return r.json()["text"]


@pytest.mark.parametrize("write", [
    lambda c: c.doc.get("notes", type=Map).__setitem__("x", "y" * 50),       # another root type (a Map)
    lambda c: c.text.format(0, 4, {"bold": True}),                             # formatting attributes
    lambda c: c.text.insert(0, "click", {"href": "javascript:alert(1)"}),      # insert with attributes
    lambda c: c.text.insert_embed(0, {"image": "https://example.com/x.png"}),  # an embed
], ids=["root-map", "format", "insert-with-attrs", "embed"])
async def test_an_update_that_is_not_plain_text_closes_4400_and_nothing_is_applied(
        live_client, live_server, write: Callable[[YClient], object]) -> None:
    student = await register(live_client, "student")
    essay = await make_essay(live_client, student, text="kept text")
    watcher = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    c = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    write(c)
    assert await c.wait_closed() == 4400
    assert await stored_text(live_client, student, essay["id"]) == "kept text"
    again = await YClient(await doc_url(live_client, live_server, student, essay["id"])).connect()
    assert str(again.text) == "kept text" and "notes" not in list(again.doc.keys())
    again.type(" and more")
    await again.wait_acked()
    assert await watcher.wait_text(lambda t: t == "kept text and more")  # the watcher's socket stayed open
    await again.close()
    await watcher.close()


async def test_typing_past_the_character_limit_is_denied_and_closed_4413(bounded) -> None:
    application, server, client = bounded
    student = await register(client, "student")
    essay = await make_essay(client, student, text="x" * 90)
    c = await YClient(await doc_url(client, server, student, essay["id"])).connect()
    c.type("y" * 10)  # exactly at the limit: fine
    await c.wait_acked()
    c.type("z")
    assert await c.wait_closed() == 4413
    assert c.permission_denied
    assert await stored_text(client, student, essay["id"]) == "x" * 90 + "y" * 10
    r = await client.patch(f"/api/v1/essays/{essay['id']}", json={"text": "w" * 101}, headers=student.headers)
    assert r.status_code == 413  # REST keeps its 413
    # Deleting and retyping within the limit still works.
    again = await YClient(await doc_url(client, server, student, essay["id"])).connect()
    del again.text[0:10]
    again.type("end")
    await again.wait_acked()
    assert await stored_text(client, student, essay["id"]) == "x" * 80 + "y" * 10 + "end"
    await again.close()


async def test_an_essay_over_its_update_log_budget_refuses_writes_but_stays_readable(bounded) -> None:
    application, server, client = bounded
    student = await register(client, "student")
    essay = await make_essay(client, student)
    c = await YClient(await doc_url(client, server, student, essay["id"])).connect()
    for _ in range(400):  # type and delete: the text stays short, the log grows
        c.type("abcdefghij")
        del c.text[0:10]
        try:
            await c.wait_acked()
        except ConnectionError:
            break
    assert await c.wait_closed() == 4413 and c.permission_denied
    assert "budget" in c.close_reason
    r = await client.patch(f"/api/v1/essays/{essay['id']}", json={"text": "new"}, headers=student.headers)
    assert r.status_code == 413 and r.json()["code"] == "essay_too_large"
    reader = await YClient(await doc_url(client, server, student, essay["id"])).connect()  # its step 2 changes nothing
    await reader.round_trip()  # answered after the server handled that step 2: it was not refused
    assert reader.close_code is None and not reader.permission_denied
    await reader.close()
    metrics = (await client.get("/metrics")).text
    assert "essaycoach_doc_update_bytes_total" in metrics
