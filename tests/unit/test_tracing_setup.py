"""actors/tracing.py: off unless the standard OTEL_* variables ask, nothing built when off, the
SDK's own variables honoured when on; and what tracing adds to host-stream frames and bus
messages (nothing when off)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import trace_exporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors import tracing
from actors.broadcast import doc_message, doc_message_age, doc_message_trace, split_doc_message
from actors.host_stream import decode_request, encode_request

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """No OTEL_* variable set, tracing unconfigured before and after; records each OTLP exporter made."""
    for key in [k for k in __import__("os").environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    made: list[Any] = []

    class Recorded(trace_exporter.OTLPSpanExporter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(trace_exporter, "OTLPSpanExporter", Recorded)
    tracing.shutdown()
    yield made
    tracing.shutdown()


def test_tracing_is_off_by_default_and_builds_nothing(clean: list[Any]) -> None:
    assert tracing.configure() is False
    assert tracing.enabled is False and tracing._provider is None and clean == []


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),  # naming no exporter
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, False),
])
def test_the_standard_variables_turn_it_on(env: dict[str, str], on: bool) -> None:
    assert bool(tracing.exporter_names(env)) is on


@pytest.mark.parametrize(("env", "names"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, ["otlp_proto_http"]),
    ({"OTEL_TRACES_EXPORTER": "OTLP, console"}, ["otlp_proto_http", "console"]),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ["otlp_proto_grpc"]),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, ["otlp_proto_http"]),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, ["zipkin"]),
])
def test_exporter_names_are_the_sdks_entry_point_names(env: dict[str, str], names: list[str]) -> None:
    assert tracing.exporter_names(env) == names


@pytest.mark.parametrize("env", [{"OTEL_TRACES_EXPORTER": "zipkin"},
                                 {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
                                 {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}],
                         ids=["zipkin", "grpc", "http-json"])
def test_an_exporter_that_is_not_installed_is_logged_and_tracing_stays_off(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, clean: list[Any],
        env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert tracing.configure() is False and tracing._provider is None and clean == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("no span exporter" in e and "installed: console, otlp_proto_http" in e for e in errors), errors
    assert any(e.startswith("tracing stays off") for e in errors), errors


def test_the_installed_exporters_of_a_list_are_used_and_the_others_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, clean: list[Any]) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin,otlp")
    assert tracing.configure() is True and len(clean) == 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "'zipkin'" in r.getMessage()]


def test_an_exporter_that_fails_to_start_is_logged_and_tracing_stays_off(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class Refusing(trace_exporter.OTLPSpanExporter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ValueError("OTEL_EXPORTER_OTLP_TIMEOUT: not a number")

    monkeypatch.setattr(trace_exporter, "OTLPSpanExporter", Refusing)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    assert tracing.configure() is False and tracing.enabled is False
    assert [r for r in caplog.records if r.levelname == "ERROR" and "not a number" in r.getMessage()]


def test_the_trace_context_propagator_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.trace.propagation import tracecontext

    built: list[object] = []

    class Counted(tracecontext.TraceContextTextMapPropagator):
        def __init__(self) -> None:
            super().__init__()
            built.append(self)

    monkeypatch.setattr(tracecontext, "TraceContextTextMapPropagator", Counted)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    tracing.configure(exporter=InMemorySpanExporter())
    for _ in range(3):
        with tracing.span("child", parent=TRACEPARENT):
            assert tracing.traceparent() is not None
    assert len(built) == 1


def test_on_with_an_otlp_endpoint_the_sdk_reads_the_rest_of_its_variables(
        monkeypatch: pytest.MonkeyPatch, clean: list[Any]) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert tracing.configure("essaycoach-gateway") is True and tracing.enabled
    [exporter] = clean
    assert exporter._endpoint == "http://collector:4318/v1/traces"
    provider = tracing._provider
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "gateway-eu"
    assert "0.25" in provider.sampler.get_description()
    assert tracing.configure() is True and len(clean) == 1  # once per process


def test_the_service_name_defaults_to_the_process_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    tracing.configure("essaycoach-host", exporter=InMemorySpanExporter())
    assert tracing._provider is not None
    assert tracing._provider.resource.attributes["service.name"] == "essaycoach-host"


def test_spans_continue_a_traceparent_and_record_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    memory = InMemorySpanExporter()
    tracing.configure(exporter=memory)
    with pytest.raises(KeyError), tracing.span("child", parent=TRACEPARENT, essay_id=uuid.UUID(int=1)):
        raise KeyError("boom")
    with tracing.span("root") as root:
        inner = tracing.traceparent()
    tracing.flush()
    child, outer = memory.get_finished_spans()
    assert format(child.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert format(child.parent.span_id, "016x") == TRACEPARENT.split("-")[2]
    assert child.status.status_code.name == "ERROR" and child.attributes["essay_id"] == str(uuid.UUID(int=1))
    assert outer.parent is None and inner == tracing.traceparent(root)
    assert inner is not None and inner.split("-")[2] == format(outer.context.span_id, "016x")


def test_an_update_the_sampler_drops_starts_nothing_to_carry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    memory = InMemorySpanExporter()
    tracing.configure(exporter=memory)
    assert tracing.start_sampled("doc_socket.receive") is None
    assert tracing.recording() is False and tracing.traceparent() is None
    with tracing.span("inside a sampled trace", parent=TRACEPARENT):  # sampled flag 01: the parent decides
        assert tracing.recording() is True
    recorded = tracing.start_sampled("child", parent=TRACEPARENT)
    assert recorded is not None
    recorded.end()


def test_host_stream_frames_carry_a_trace_only_when_given_one() -> None:
    essay = uuid.uuid4()
    kwargs: dict[str, Any] = {"author_id": None, "origin": "o", "live": True, "node": "n"}
    plain = encode_request(3, essay, b"\x01", **kwargs)
    assert plain == encode_request(3, essay, b"\x01", trace=None, **kwargs)
    assert decode_request(plain) == (3, essay, b"\x01", kwargs)  # no traceparent key
    traced = encode_request(3, essay, b"\x01", trace=TRACEPARENT, **kwargs)
    assert len(traced) == len(plain) + 1 + len(TRACEPARENT)
    assert decode_request(traced) == (3, essay, b"\x01", {**kwargs, "traceparent": TRACEPARENT})


def test_bus_messages_carry_a_trace_only_when_given_one() -> None:
    plain, traced = doc_message("origin", b"\x00\x01\n"), doc_message("origin", b"\x00\x01\n", TRACEPARENT)
    assert plain.split(b"\n")[0].count(b" ") == 1 and doc_message_trace(plain) is None
    for message in (plain, traced):
        assert split_doc_message(message) == ("origin", b"\x00\x01\n")
        age = doc_message_age(message)
        assert age is not None and 0 <= age < 60
    trace = doc_message_trace(traced)
    assert trace is not None and trace[0] == TRACEPARENT


class _Handle:
    """A Ray actor handle stand-in: records each remote call (method, args, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        calls = self.calls

        class _Method:
            def remote(self, *args: Any, **kwargs: Any) -> Any:
                calls.append((method, args, kwargs))

                async def answer() -> None:
                    return None

                return answer()

        return _Method()


async def test_a_gateways_ray_calls_carry_its_trace_only_when_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.hosts import RayHost

    handle = _Handle()
    host, essay = RayHost(lambda: handle, retry_for=1.0), uuid.uuid4()
    await host.read(essay)
    assert handle.calls == [("read", (essay,), {})]  # off: the plain call, as before
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    tracing.configure(exporter=InMemorySpanExporter())
    with tracing.span("request") as request:
        await host.read(essay)
    [(method, (sent, operation, *args), kwargs)] = handle.calls[1:]
    assert (method, operation, args, kwargs) == ("traced", "read", [essay], {})
    assert sent == tracing.traceparent(request)


async def test_the_host_actor_continues_the_callers_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    from actors import ray_host
    from actors.config import AnalysisConfig, BusConfig, HostConfig, HostShellConfig

    class _Host:
        async def read(self, essay_id: uuid.UUID) -> dict[str, Any]:
            return {"text": "hi", "current": tracing.traceparent()}

    monkeypatch.setattr(ray_host, "tune_gc", lambda: None)  # not in the test process
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    memory = InMemorySpanExporter()
    tracing.configure(exporter=memory)
    shell = ray_host.EssayHostShell(HostShellConfig(database_url="sqlite://", bus=BusConfig(), host=HostConfig(),
                                                    analysis=AnalysisConfig()))
    shell.host = _Host()  # type: ignore[assignment]
    answer = await shell.traced(TRACEPARENT, "read", uuid.uuid4())
    tracing.flush()
    [span] = memory.get_finished_spans()
    assert span.name == "host.read" and format(span.parent.span_id, "016x") == TRACEPARENT.split("-")[2]
    assert answer["current"].split("-")[2] == format(span.context.span_id, "016x")
    with pytest.raises(ValueError, match="not a host operation"):
        await shell.traced(TRACEPARENT, "shutdown")
