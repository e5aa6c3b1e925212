"""OpenTelemetry tracing of one keystroke and one AI call across processes; off unless asked for.

On only when the standard variables ask for it (`exporter_names`): `OTEL_TRACES_EXPORTER` naming
exporters, or else `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set (`otlp`),
and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`. Each name is loaded as the
SDK's own configurator loads it: the `opentelemetry_traces_exporter` entry point of that name,
`otlp` being `otlp_proto_http` or `otlp_proto_grpc` by `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`
(HTTP/protobuf when unset, the specification's default; Jaeger, Tempo and the Collector take it
on port 4318). This install provides `otlp_proto_http` and `console`; a name no installed package
provides is logged as an error and left out (tracing stays off when none is left). The SDK reads
the rest itself: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` (+ `_ARG`),
`OTEL_EXPORTER_OTLP_*` (endpoint, headers, timeout, compression), `OTEL_BSP_*` (batching).

Each process configures itself once at its entry point (`configure`: a Gateway replica's app
lifespan, an essay host actor, an Analyzer replica), never at import: Ray pickles the Serve
ingress class by value and every worker imports our modules.

Costing nothing when off: the hot path tests the module attribute `enabled` (one attribute
load) and does nothing else: no span objects, no context read or carried, frames and bus messages
exactly as without tracing. The SDK is imported only when tracing is turned on.

The trace context crosses process boundaries as a W3C `traceparent` string: in host-stream
frames (`actors.host_stream`, a flag bit), in bus document messages (`actors.broadcast.doc_message`),
and as the first argument of a `traced` Ray call (`EssayHostShell.traced`, `AnalyzerService.traced`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

T = TypeVar("T")
log = logging.getLogger("essaycoach.tracing")

enabled = False
"""True once `configure` turned tracing on in this process: the one check on the hot path."""

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_propagator: TraceContextTextMapPropagator | None = None
_configured = False
# Where exporter packages register their span exporters by name (the SDK's configurator reads it too).
ENTRY_POINTS = "opentelemetry_traces_exporter"
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the OTEL_* variables in `environ` ask for, as entry-point names
    (none: tracing off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if not names and (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = ["otlp"]
    if names == ["none"]:
        return []
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    # An unknown protocol keeps a name that no package provides, so `configure` reports it.
    return [_OTLP_BY_PROTOCOL.get(protocol, f"otlp ({protocol})") if n == "otlp" else n for n in names]


def _load_exporters(names: list[str]) -> list[SpanExporter]:
    """An exporter for each name an installed package provides; the others logged as errors."""
    from importlib.metadata import entry_points

    from opentelemetry.sdk.trace.export import SpanExporter

    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}
    exporters: list[SpanExporter] = []
    for name in names:
        found = installed.get(name)
        try:  # a broken install or a bad OTEL_* value: said as plainly as a missing exporter, never fatal
            made = found.load() if found is not None else None
            exporter = made() if isinstance(made, type) and issubclass(made, SpanExporter) else None
        except Exception as exc:
            log.error("tracing: span exporter %r failed to load or start: %r", name, exc)
            continue
        if exporter is not None:
            exporters.append(exporter)
        else:
            log.error("tracing: no span exporter %r is installed (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_PROTOCOL);"
                      " installed: %s", name, ", ".join(sorted(installed)) or "none")
    return exporters


def configure(service: str = "essaycoach", *, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on in this process if its environment asks for it (`exporter_names`) and
    one of those exporters is installed; once per process (later calls return the first
    answer). `service`: the service name when `OTEL_SERVICE_NAME` gives none
    (`essaycoach-gateway`, `-host`, `-analyzer`). `exporter`: instead of the exporters the
    variables name (tests). Returns `enabled`."""
    global enabled, _tracer, _provider, _propagator, _configured
    if _configured:
        return enabled
    env = os.environ
    _configured = True
    names = exporter_names(env)
    if not names:
        return False
    exporters = [exporter] if exporter is not None else _load_exporters(names)
    if not exporters:
        log.error("tracing stays off: none of the span exporters asked for is installed (%s)", ", ".join(names))
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    attributes = {"service.name": env.get("OTEL_SERVICE_NAME") or service}
    # The SDK reads the sampler, batching and OTLP settings from os.environ itself.
    provider = TracerProvider(resource=Resource.create(attributes))
    for one in exporters:
        provider.add_span_processor(BatchSpanProcessor(one))
    _provider, _tracer, _propagator = provider, provider.get_tracer("essaycoach"), TraceContextTextMapPropagator()
    enabled = True
    return True


def flush(timeout_ms: int = 5000) -> None:
    """Send the spans still batched (a process stopping)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def shutdown() -> None:
    """Flush, stop exporting and turn tracing off; `configure` may run again (tests)."""
    global enabled, _tracer, _provider, _propagator, _configured
    if _provider is not None:
        _provider.shutdown()
    enabled, _tracer, _provider, _propagator, _configured = False, None, None, None, False


# --- spans (call only when `enabled`) ----------------------------------------------------------

def _kind(name: str) -> Any:
    from opentelemetry.trace import SpanKind

    return getattr(SpanKind, name)


def _context(traceparent: str | None) -> Any:
    """The context a `traceparent` string carries (None: the current one)."""
    if traceparent is None:
        return None
    assert _propagator is not None, "tracing is off"
    return _propagator.extract({"traceparent": traceparent})


def traceparent(of: Span | None = None) -> str | None:
    """The context of span `of` (default: the current span) as a W3C `traceparent`; None
    without a valid span."""
    from opentelemetry.trace import set_span_in_context

    assert _propagator is not None, "tracing is off"
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=None if of is None else set_span_in_context(of))
    return carrier.get("traceparent")


def start(name: str, *, parent: str | None = None, kind: str = "INTERNAL", start_ns: int | None = None,
          **attributes: Any) -> Span:
    """A started span, not made current (end it yourself, or `ending`); child of `parent` (a
    traceparent) or else of the current span."""
    assert _tracer is not None, "tracing is off"
    return _tracer.start_span(name, context=_context(parent), kind=_kind(kind), start_time=start_ns,
                              attributes={k: _value(v) for k, v in attributes.items()})


def start_sampled(name: str, **attributes: Any) -> Span | None:
    """`start`, or None when the sampler drops the span: the caller then carries no context on,
    and what follows costs as with tracing off (a root span's decision, e.g. one update in a
    hundred with `OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.01`)."""
    started = start(name, **attributes)
    return started if started.is_recording() else None


def recording() -> bool:
    """Whether the current span is being recorded (work on behalf of a sampled trace)."""
    from opentelemetry.trace import get_current_span

    return get_current_span().is_recording()


@contextlib.contextmanager
def span(name: str, *, parent: str | None = None, kind: str = "INTERNAL", **attributes: Any) -> Iterator[Span]:
    """A span, current while the block runs; an exception out of the block is recorded on it."""
    from opentelemetry.trace import use_span

    with use_span(start(name, parent=parent, kind=kind, **attributes), end_on_exit=True) as current:
        yield current


async def ending(current: Span, work: Awaitable[T]) -> T:
    """`await work` with `current` as the current span, ending it after (exceptions recorded)."""
    from opentelemetry.trace import use_span

    with use_span(current, end_on_exit=True):
        return await work


async def within(name: str, work: Awaitable[T], *, parent: str | None = None, kind: str = "INTERNAL",
                 **attributes: Any) -> T:
    """`await work` inside a new span `name`."""
    with span(name, parent=parent, kind=kind, **attributes):
        return await work


def delivered(name: str, message_trace: str, sent_us: int | None, **attributes: Any) -> None:
    """A span for a message handed on: from `sent_us` (wall-clock microseconds when the message
    was built; another node's clock) to now, child of the message's `traceparent`."""
    now = time.time_ns()
    start_ns = min(now, sent_us * 1000) if sent_us is not None else now
    start(name, parent=message_trace, kind="CONSUMER", start_ns=start_ns, **attributes).end(now)


def _value(value: Any) -> Any:
    return value if isinstance(value, (str, bool, int, float)) else str(value)
