"""`GET /metrics` of the app (in-process, no Ray): the whole catalogue, and what requests record."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import websockets

from actors.metrics import CATALOGUE
from tests.conftest import unique_email


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text scrape (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_lists_every_catalogue_metric_with_its_type(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", r.text, re.M))
    assert {s.name: types.get(s.name) for s in CATALOGUE} == {s.name: s.kind for s in CATALOGUE}
    assert len(re.findall(r"^# TYPE essaycoach_http_requests_total ", r.text, re.M)) == 1  # one registry, once


async def test_failed_logins_count_as_auth_failures_then_as_rate_limited(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    email = unique_email("metrics")
    statuses = []
    for _ in range(8):  # LOGIN_ACCOUNT_FAILURE_BURST (5) failures, then the account is throttled
        r = await client.post("/api/v1/auth/token", json={"email": email, "password": "not-the-password-1"})
        statuses.append(r.status_code)
    after = (await client.get("/metrics")).text
    assert statuses.count(401) == 5 and statuses.count(429) == 3, statuses
    auth = ("essaycoach_auth_failures_total", {"code": "invalid_credentials"})
    limited = ("essaycoach_rate_limited_total", {"route": "/auth/token", "code": "rate_limited"})
    assert sample(after, auth[0], **auth[1]) == sample(before, auth[0], **auth[1]) + 5
    assert sample(after, limited[0], **limited[1]) == sample(before, limited[0], **limited[1]) + 3


async def test_a_bad_bearer_token_counts_as_an_auth_failure(client: httpx.AsyncClient) -> None:
    async def bad_token() -> str:
        r = await client.get("/api/v1/me", headers={"authorization": "Bearer not-a-token"})
        assert r.status_code == 401
        return str(r.json()["code"])

    code = await bad_token()
    before = sample((await client.get("/metrics")).text, "essaycoach_auth_failures_total", code=code)
    assert before >= 1
    assert await bad_token() == code
    after = sample((await client.get("/metrics")).text, "essaycoach_auth_failures_total", code=code)
    assert after == before + 1


async def test_a_refused_socket_ticket_counts_as_an_auth_failure(live_client: httpx.AsyncClient,
                                                                  live_server: str) -> None:
    def refused() -> float:
        return sample(text, "essaycoach_auth_failures_total", code="bad_ticket")

    text = (await live_client.get("/metrics")).text
    before = refused()
    with pytest.raises(websockets.InvalidStatus) as answer:
        async with websockets.connect(f"ws://{live_server}/ws/essays/{uuid.uuid4()}/doc?ticket=made-up"):
            pass
    assert answer.value.response.status_code == 403
    text = (await live_client.get("/metrics")).text
    assert refused() == before + 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_promtool_accepts_the_scrape_configs_and_the_alerts_fire_as_their_tests_say() -> None:
    ops = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
    for command in (["check", "config", "prometheus.yml"], ["check", "config", "prometheus-cluster.yml"],
                    ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(["promtool", *command], cwd=ops, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


async def test_a_coach_completion_counts_as_an_ai_call_with_its_tokens_by_provider() -> None:
    """The coach chat asks through `OpenAIProvider.complete_json`: counted like feedback calls."""
    from prometheus_client import REGISTRY

    from actors.analysis.llm import OpenAIProvider
    from tests.fake_llm import FakeLLMServer

    def values() -> list[float]:
        labels = {"provider": "openai:fake-model"}
        return [REGISTRY.get_sample_value(name, {**labels, **extra}) or 0.0 for name, extra in (
            ("essaycoach_ai_calls_total", {}), ("essaycoach_ai_tokens_total", {"kind": "prompt"}),
            ("essaycoach_ai_tokens_total", {"kind": "completion"}))]

    with FakeLLMServer() as fake:
        provider = OpenAIProvider(base_url=fake.base_url, api_key="test-key", model="fake-model")
        try:
            calls, prompt, completion = values()
            content, usage = await provider.complete_json([
                {"role": "system", "content": "You are a writing coach."},
                {"role": "user", "content": "<question>\nWhy?\n</question>"}])
        finally:
            await provider.aclose()
    assert "answer" in content and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert values() == [calls + 1, prompt + usage.prompt_tokens, completion + usage.completion_tokens]
