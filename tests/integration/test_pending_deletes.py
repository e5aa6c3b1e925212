"""A delete that reaches the server before the insert it deletes (issue 13, item 3): it is logged
and snapshotted, so the stored essay, a reload and a replay agree with what was live."""

from __future__ import annotations

import base64

import httpx
from pycrdt import Doc, Text

from ops.loadtest.yclient import YClient
from serve_app.realtime.protocol import encode_update
from tests.fakes import make_essay, register, secret_updates
from tests.integration.test_sockets import doc_url


async def test_a_delete_sent_before_its_insert_survives_restarts_and_replay(settings) -> None:
    from serve_app.app import create_app
    from tests.conftest import serving

    insert, delete = secret_updates()
    async with serving(create_app(settings)) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        student = await register(client, "student")
        essay = await make_essay(client, student, text="Intro. ")
        c = await YClient(await doc_url(client, server, student, essay["id"])).connect()
        await c.send_raw(encode_update(delete))  # the delete overtakes its insert
        await c.wait_acked(c.sent + 1)
        await c.close()
    # The server stops (snapshot with the delete still pending) and comes back.
    async with serving(create_app(settings)) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        c = await YClient(await doc_url(client, server, student, essay["id"])).connect()
        watcher = await YClient(await doc_url(client, server, student, essay["id"])).connect()
        await c.send_raw(encode_update(insert))
        await c.wait_acked(c.sent + 1)
        live = (await client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)).json()["text"]
        assert live == "Intro. "
        assert await watcher.wait_text(lambda t: t == "Intro. ")
        await c.close()
        await watcher.close()
    async with serving(create_app(settings)) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        stored = (await client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)).json()["text"]
        assert stored == live
        r = await client.get(f"/api/v1/essays/{essay['id']}/replay", params={"include_text": "true"},
                             headers=student.headers)
        steps = r.json()["items"]
        assert len(steps) >= 3  # the REST text, the delete, the insert
        assert steps[-1]["text"] == live
        replayed = Doc()
        for step in steps:
            replayed.apply_update(base64.b64decode(step["update"]))
        assert str(replayed.get("content", type=Text)) == live
