"""Big essays on a shared host: analysis and anchors of a 200,000-character non-ASCII essay run
off the host's event loop, so another essay's typing keeps being acknowledged (issue 13, item 1).

Figures (ack latency, loop lag, worker process on and off) are measured by
`ops/loadtest/anchor_bench.py`; here the behaviour is asserted: the run leaves the loop (on a
worker thread, or in the rules-worker process with ESSAYCOACH_ANALYSIS_PROCESS), every update
typed meanwhile into the other essay is acknowledged, and both stored texts are exactly right.
"""

from __future__ import annotations

import asyncio
import gc

import httpx
import pytest

from ops.loadtest.yclient import YClient
from tests.fakes import make_essay, register
from tests.integration.test_sockets import doc_url

CYRILLIC = "Школа учит нас думать, а дом учит нас жить. Учитель читает книгу, ученик пишет сочинение."


def big_cyrillic_essay(chars: int = 200_000) -> str:
    """Cyrillic paragraphs, every tenth with an English sentence the rules flag (so the run makes
    feedback items and anchors deep inside non-ASCII text)."""
    paragraphs, size, n = [], 0, 0
    while size < chars:
        paragraph = " ".join([CYRILLIC] * 4) + (" I beleive teh answer." if n % 10 == 0 else "")
        paragraphs.append(paragraph)
        size += len(paragraph) + 1
        n += 1
    return "\n".join(paragraphs)[:chars]


@pytest.mark.parametrize("process", [False, True], ids=["thread", "worker-process"])
async def test_a_200k_cyrillic_essay_is_analysed_off_the_loop_while_another_essay_types(
        settings, tmp_path, process: bool) -> None:
    from serve_app.app import create_app
    from tests.conftest import make_settings, serving

    application = create_app(make_settings(settings.database_url, tmp_path, analysis_process=process,
                                           login_ip_failure_burst=100_000, submissions_per_user_per_hour=100_000))
    async with serving(application) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=60) as client:
        student = await register(client, "student")
        typist = await register(client, "student")
        other = await make_essay(client, typist, text="")
        writer = await YClient(await doc_url(client, server, typist, other["id"])).connect()
        engine = application.state.ctx.hosts.analyzer
        runs_before = engine.offloaded_runs
        jobs_before = engine.worker.jobs if process else 0
        # As a host process does once it has loaded its dictionary (actors.process_tuning.tune_gc):
        # the spelling dictionary's millions of objects out of the collector, whose full passes over
        # them would otherwise pause this loop for most of a second whatever the analysis does.
        gc.collect()
        gc.freeze()
        essay_text = big_cyrillic_essay()
        big = await make_essay(client, student, text=essay_text)  # host analyses it at the pause
        feedback: dict = {}
        typed = ""
        for i in range(400):
            writer.type(f"word{i} ")
            typed += f"word{i} "
            await writer.wait_acked()  # every update typed during the run is acknowledged
            feedback = (await client.get(f"/api/v1/essays/{big['id']}/feedback", headers=student.headers)).json()
            if feedback["analyzed"] and feedback["items"]:
                break
            await asyncio.sleep(0.05)
        assert feedback["analyzed"] and feedback["items"], "the big essay was never analysed"
        text = (await client.get(f"/api/v1/essays/{big['id']}", headers=student.headers)).json()["text"]
        assert text == essay_text
        deep = [item for item in feedback["items"] if item["start"] > 100_000]
        assert deep and all(text[i["start"]:i["end"]] == i["quote"] for i in feedback["items"])
        assert {i["quote"] for i in deep if i["kind"] == "spelling"} >= {"beleive", "teh"}
        assert engine.offloaded_runs > runs_before  # the rules ran off the loop
        if process:
            assert engine.worker.jobs > jobs_before  # ... in the rules-worker process
        await writer.close()
        assert (await client.get(f"/api/v1/essays/{other['id']}", headers=typist.headers)).json()["text"] == typed
        gc.unfreeze()
