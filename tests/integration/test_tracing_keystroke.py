"""Tracing (actors/tracing.py) end to end, exported by OTLP/HTTP to a real receiver.

One keystroke: a student's Gateway and a teacher's Gateway (two apps on real ports, each its own
Redis bus node) and one essay host behind its host stream (real TCP) with a bus node of its own,
as under Ray. Nothing carries the trace context between them but the host-stream frame and the
Redis message, so one trace id from the student's socket to the teacher's proves both carry it.

One AI call: the Analyzer deployment's body and its client across a context boundary (a fresh
`contextvars` context, as in another process), to the fake LLM server over HTTP.

All "processes" share this test process's tracer (one service name); under Ray each process
configures its own (`tracing.configure` in each entry point).
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors import tracing
from actors.analysis.service import AnalyzerService, RemoteAnalyzer
from actors.config import AnalysisConfig
from actors.host import EssayHost, HostConfig
from actors.host_stream import HostStream, StreamServer
from actors.redis_bus import RedisBus
from db.engine import make_engine, make_sessionmaker
from ops.loadtest.yclient import YClient
from serve_app.app import create_app
from serve_app.hosts import EssayHosts
from tests.conftest import REDIS_URL, fresh_database, make_settings, serving
from tests.fake_llm import FakeLLMServer
from tests.fakes import join, make_assignment, make_class, make_essay, register
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """Tracing on in this process, exporting to a real OTLP/HTTP receiver; off again after."""
    tracing.shutdown()
    with OtlpReceiver() as r:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "essaycoach-test")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        assert tracing.configure()
        yield r
        tracing.shutdown()


class _StreamedHost:
    """What a Gateway holds of a host actor: typed updates over the host stream, the rest (Ray
    calls there, carrying no trace here) straight to the host object."""

    def __init__(self, host: EssayHost, stream: HostStream) -> None:
        self._host, self._stream = host, stream

    async def apply_update(self, essay_id: uuid.UUID, update: bytes, **kwargs: Any) -> int:
        return await self._stream.apply(essay_id, update, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)


class _StreamedHosts(EssayHosts):
    def __init__(self, host: EssayHost, server: StreamServer) -> None:
        async def resolve() -> tuple[str, int, bytes]:
            return "127.0.0.1", server.port, server.token

        self.bus = RedisBus(REDIS_URL)  # this Gateway's own bus node
        self.hosts = 1
        self.stream = HostStream(resolve)
        self._one = _StreamedHost(host, self.stream)

    def host(self, index: int) -> Any:
        return self._one

    async def stop(self) -> None:
        self.stream.close()
        await self.bus.close()


@pytest.fixture
async def one_host(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Any, EssayHost, StreamServer]]:
    async with fresh_database(database_url, tmp_path) as url:
        engine = make_engine(url)
        host = EssayHost(sessions=make_sessionmaker(engine), bus=RedisBus(REDIS_URL),
                         config=HostConfig(commit_interval=0.005))
        await host.start()
        server = StreamServer(host)
        await server.start("127.0.0.1")
        settings = make_settings(url, tmp_path / "var", login_ip_failure_burst=100_000)
        yield settings, host, server
        await server.close()
        await host.stop()
        await host.bus.close()
        await engine.dispose()


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


async def test_a_keystroke_is_one_trace_from_the_students_socket_to_the_teachers(
        receiver: OtlpReceiver, one_host: tuple[Any, EssayHost, StreamServer]) -> None:
    settings, host, server = one_host
    student_app = create_app(settings, hosts_factory=lambda *_: _StreamedHosts(host, server))
    teacher_app = create_app(settings, hosts_factory=lambda *_: _StreamedHosts(host, server))
    async with serving(student_app) as student_gw, serving(teacher_app) as teacher_gw, \
            httpx.AsyncClient(base_url=f"http://{student_gw}", timeout=30) as http:
        teacher, student = await register(http, "teacher"), await register(http, "student")
        cls = await make_class(http, teacher)
        await join(http, student, cls["join_code"])
        essay = await make_essay(http, student, (await make_assignment(http, teacher, cls["id"]))["id"])

        async def socket(gateway: str, account: Any) -> YClient:
            ticket = (await http.post("/api/v1/auth/ws-ticket", headers=account.headers)).json()["ticket"]
            return await YClient(f"ws://{gateway}/ws/essays/{essay['id']}/doc?ticket={ticket}").connect()

        reader = await socket(teacher_gw, teacher)
        writer = await socket(student_gw, student)
        writer.type("Hi")
        await writer.wait_acked()
        assert await reader.wait_text(lambda t: t == "Hi")  # through the bus: the teacher is on another Gateway
        await writer.close()
        await reader.close()
    await asyncio.to_thread(tracing.flush)
    await asyncio.to_thread(receiver.wait_for, "doc_socket.receive", "host.apply_update", "host.group_commit",
                            "bus.publish", "doc_socket.deliver")

    [typed] = [s for s in receiver.named("doc_socket.receive") if s.attributes.get("typed")]
    spans = receiver.trace(typed.trace_id)
    received, applied = typed, _one(spans, "host.apply_update")
    committed, published = _one(spans, "host.group_commit"), _one(spans, "bus.publish")
    delivered = _one(spans, "doc_socket.deliver")
    assert received.parent_id == ""  # the keystroke starts the trace
    assert applied.parent_id == received.span_id  # across the host stream (TCP)
    assert committed.parent_id == applied.span_id and published.parent_id == applied.span_id
    assert delivered.parent_id == published.span_id  # across Redis, on the teacher's Gateway
    assert received.attributes["essay_id"] == applied.attributes["essay_id"] == delivered.attributes["essay_id"] \
        == essay["id"]
    assert {s.service for s in spans} == {"essaycoach-test"}


class _OtherProcess:
    """A Serve handle stand-in: each `.remote` call runs the deployment's method in a fresh,
    empty `contextvars` context, as in another process (no trace context leaks across)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, method: str) -> Any:
        target = self.target

        class _Method:
            def remote(self, *args: Any, **kwargs: Any) -> Any:
                return asyncio.get_running_loop().create_task(getattr(target, method)(*args, **kwargs),
                                                              context=contextvars.Context())

        return _Method()


async def test_an_ai_call_is_one_trace_from_the_caller_through_the_analyzer_to_the_llm(
        receiver: OtlpReceiver) -> None:
    with FakeLLMServer(flag_word="badword") as llm:
        service = AnalyzerService(AnalysisConfig(provider="openai", base_url=llm.base_url, api_key="k", model="fake"))
        analyzer = RemoteAnalyzer(_OtherProcess(service), llm_enabled=True)
        with tracing.span("test.caller") as caller:
            caller_trace = format(caller.get_span_context().trace_id, "032x")
            result = await analyzer.analyze_changed("", "A badword here.\n\nAnother paragraph here.",
                                                    essay_id=str(uuid.uuid4()))
        assert result is not None
        seen = llm.requests
    await asyncio.to_thread(tracing.flush)
    await asyncio.to_thread(receiver.wait_for, "analyzer.call", "analyzer.analyze_changed", "llm.chat_completion")

    spans = receiver.trace(caller_trace)
    call, served = _one(spans, "analyzer.call"), _one(spans, "analyzer.analyze_changed")
    completions = [s for s in spans if s.name == "llm.chat_completion"]
    assert completions and all(c.parent_id == served.span_id for c in completions)
    assert served.parent_id == call.span_id
    assert completions[0].attributes["gen_ai.request.model"] == "fake"
    assert completions[0].attributes["gen_ai.usage.input_tokens"] > 0
    # The provider's request carries the span's context: a tracing LLM gateway continues the trace.
    assert seen and all(r.headers.get("traceparent", "").split("-")[1] == caller_trace for r in seen)
