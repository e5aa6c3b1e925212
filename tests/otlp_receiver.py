"""A real OTLP/HTTP trace receiver for tests (what Jaeger or a Collector is on port 4318): POST
`/v1/traces` with an `ExportTraceServiceRequest` in protobuf, answered 200, every span kept.

Also the loadtest's receiver with tracing on (ops/loadtest/RESULTS.md, "Tracing cost"):
`python -m tests.otlp_receiver --port 14318 --summary spans.json` counts spans by service and name
and writes them at SIGINT/SIGTERM.

It serves from a thread of its own: the SDK exports from its batch thread, and a flush called on
the test's event loop must not wait on a server that needs that same loop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    service: str
    kind: int
    attributes: dict[str, Any]


def _value(value: Any) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


class OtlpReceiver:
    """Use `with OtlpReceiver() as r`; point `OTEL_EXPORTER_OTLP_ENDPOINT` at `r.url`."""

    def __init__(self, port: int = 0) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests: list[dict[str, str]] = []  # headers of each export request
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._keep(request, dict(self.headers))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _keep(self, request: ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            service = next((_value(a.value) for a in resource_spans.resource.attributes if a.key == "service.name"), "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), service,
                        span.kind, {a.key: _value(a.value) for a in span.attributes}))
        with self._lock:
            self.requests.append(headers)
            self.spans.extend(spans)

    def named(self, name: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, *names: str, timeout: float = 20) -> None:
        """Until a span of each name arrived (blocking: call it off the event loop or after a flush)."""
        deadline = time.monotonic() + timeout
        while not all(self.named(n) for n in names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"spans not received: {[n for n in names if not self.named(n)]}")
            time.sleep(0.02)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def main() -> None:
    import argparse
    import json
    import signal
    from collections import Counter

    parser = argparse.ArgumentParser(description="An OTLP/HTTP trace receiver that counts what it gets.")
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--summary", required=True, help="JSON file written on SIGINT/SIGTERM")
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with OtlpReceiver(args.port) as receiver:
        print(f"receiving on {receiver.url}", flush=True)
        stop.wait()
        with receiver._lock:
            counts = Counter(f"{s.service} {s.name}" for s in receiver.spans)
            summary = {"export_requests": len(receiver.requests), "spans": len(receiver.spans),
                       "traces": len({s.trace_id for s in receiver.spans}), "by_service_and_name": dict(counts)}
    with open(args.summary, "w") as out:
        json.dump(summary, out, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
