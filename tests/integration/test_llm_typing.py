"""The LLM tier wired through the essay hosts, against a real-HTTP fake OpenAI server:
incremental (only the edited paragraph is sent), and typing acks never wait on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from ops.loadtest.yclient import YClient
from serve_app.app import create_app
from tests.conftest import make_settings, serving
from tests.fake_llm import FakeLLMServer
from tests.fakes import make_essay, register

PARAGRAPHS = [
    "Homework is a daily part of school life for most students.",
    "Some people think teh homework builds discipline and good habits.",
    "Others say it takes time away from family, sport and rest.",
    "Research on young students shows only small benefits from homework.",
    "In conclusion, homework should be short, focused and optional for young students.",
]


@pytest.fixture
async def env(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    settle = getattr(request, "param", 1.0)
    with FakeLLMServer(flag_word="discipline") as fake:
        settings = make_settings(database_url, tmp_path, ai_provider="openai", ai_base_url=fake.base_url,
                                 ai_api_key="test-key", feedback_llm_pause_seconds=0.4,
                                 feedback_llm_settle_seconds=settle)
        async with serving(create_app(settings)) as address:
            async with httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http:
                student = await register(http, "student")
                essay = await make_essay(http, student)

                async def socket(kind: str) -> str:
                    t = (await http.post("/api/v1/auth/ws-ticket", headers=student.headers)).json()["ticket"]
                    return f"ws://{address}/ws/essays/{essay['id']}/{kind}?ticket={t}"

                yield {"fake": fake, "http": http, "student": student, "essay": essay, "socket": socket}


async def wait_for(predicate: Any, timeout: float = 10) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(loop(), timeout)


async def test_editing_one_paragraph_sends_only_that_paragraph_to_the_llm(env: dict[str, Any]) -> None:
    fake: FakeLLMServer = env["fake"]
    writer = await YClient(await env["socket"]("doc")).connect()
    writer.type("\n".join(PARAGRAPHS))
    await writer.wait_acked()
    await wait_for(lambda: len(fake.paragraphs_sent) == 5)
    events = await websockets.connect(await env["socket"]("events"))
    tokens_before = fake.prompt_tokens

    third = "\n".join(PARAGRAPHS[:2]) + "\n"
    start = len(third) + len("Others say it ")
    # A real rewrite (a light edit would keep the paragraph's review without a new call).
    writer.text[start:start + len("takes time away from family, sport and rest")] = \
        "steals the evenings that belong to friends, music and sleep"
    await writer.wait_acked()
    await wait_for(lambda: len(fake.paragraphs_sent) == 6)
    await asyncio.sleep(1.0)  # nothing else may follow
    sent = fake.paragraphs_sent
    assert len(sent) == 6
    assert sent[-1] == "Others say it steals the evenings that belong to friends, music and sleep."
    assert fake.prompt_tokens - tokens_before < tokens_before / 3

    # The fake flags "discipline": the LLM item reaches the student, anchored.
    listed = (await env["http"].get(f"/api/v1/essays/{env['essay']['id']}/feedback",
                                    headers=env["student"].headers)).json()["items"]
    llm = [i for i in listed if i["source"] == "llm"]
    assert llm and all(i["quote"] == "discipline" and i["anchor"] for i in llm)
    await events.close()
    await writer.close()


@pytest.mark.parametrize("behaviour", ["slow", "500", "reset", "invalid_json", "script", "huge", "bad_spans"])
async def test_hostile_llm_changes_feedback_never_acks(env: dict[str, Any], behaviour: str) -> None:
    fake: FakeLLMServer = env["fake"]
    fake.behaviour = behaviour
    fake.slow_seconds = 60  # "slow" hangs for longer than the test: acks must not wait for it
    writer = await YClient(await env["socket"]("doc")).connect()
    events = await websockets.connect(await env["socket"]("events"))
    writer.type("Some people think teh homework helps. I beleive it does.")
    await writer.wait_acked()
    await wait_for(lambda: len(fake.requests) >= 1)
    for word in (" More", " typing", " while", " the", " model", " misbehaves."):
        writer.type(word)
        await writer.wait_acked(timeout=10)
    feedback: list[dict[str, Any]] = []

    async def collect() -> None:
        while not any(i["quote"] == "beleive" for e in feedback for i in e["items"]):
            event = json.loads(await events.recv())
            if event["type"] == "feedback":
                feedback.append(event)

    await asyncio.wait_for(collect(), 10)  # local feedback still arrives
    for event in feedback:
        for item in event["items"]:
            assert "<" not in item["message"] and ">" not in item["message"]
    await events.close()
    await writer.close()


@pytest.mark.parametrize("env", [60.0], indirect=True)
async def test_paragraph_being_written_waits_until_the_student_moves_on(env: dict[str, Any]) -> None:
    fake: FakeLLMServer = env["fake"]
    writer = await YClient(await env["socket"]("doc")).connect()
    writer.type(PARAGRAPHS[0])
    await writer.wait_acked()
    await asyncio.sleep(1.2)  # past the LLM pause, far from the settle time
    assert fake.paragraphs_sent == []
    writer.type("\n" + PARAGRAPHS[1][:20])
    await writer.wait_acked()
    await wait_for(lambda: fake.paragraphs_sent == [PARAGRAPHS[0]])
    writer.type(PARAGRAPHS[1][20:])
    await writer.wait_acked()
    await asyncio.sleep(1.2)
    assert fake.paragraphs_sent == [PARAGRAPHS[0]]  # the second is still being written
    await writer.close()
