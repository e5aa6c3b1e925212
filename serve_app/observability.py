"""Structured JSON logs with a request id, request metrics, and the request-size guard."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors import tracing
from actors.metrics import metric, register_all
from serve_app.errors import problem

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any extras."""

    RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
            "logger": record.name, "msg": record.getMessage(), "request_id": request_id_var.get(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in self.RESERVED and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# Query parameters whose values are credentials: socket tickets, and tokens a client might send.
_SECRET_QUERY = re.compile(r"(?i)([?&](?:ticket|token|access_token|refresh_token)=)[^&\s\"']*")
# Loggers that print request paths with their query string: uvicorn's access log and its
# "WebSocket /ws/...?ticket=..." lines (on uvicorn.error), and Serve's access log.
REDACTED_LOGGERS = ("uvicorn.access", "uvicorn.error", "ray.serve")


def redact_secrets(text: str) -> str:
    """`text` with the values of credential query parameters replaced by `…`."""
    return _SECRET_QUERY.sub(r"\1…", text)


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record's message and string arguments through `redact_secrets`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_secrets(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_secrets(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact_secrets(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install_redaction() -> None:
    """Add `RedactSecretsFilter` to `REDACTED_LOGGERS` (once each)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretsFilter) for f in logger.filters):
            logger.addFilter(RedactSecretsFilter())


def configure_logging(level: int = logging.INFO) -> None:
    install_redaction()
    root = logging.getLogger("essaycoach")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class Metrics:
    """The Gateway's handles on its catalogue metrics (actors/metrics.py). Every catalogue metric
    lives in the process's default registry, which `GET /metrics` serves: one registry per
    process, shared by the apps a test process builds (tests compare before/after values)."""

    def __init__(self) -> None:
        register_all()
        self.registry = REGISTRY
        self.requests = metric("essaycoach_http_requests_total")
        self.latency = metric("essaycoach_http_request_seconds")
        self.sockets_open = metric("essaycoach_ws_open")
        self.socket_closes = metric("essaycoach_ws_closed_total")
        self.updates = metric("essaycoach_doc_updates_total")
        self.update_bytes = metric("essaycoach_doc_update_bytes_total")
        self.ack_seconds = metric("essaycoach_ack_seconds")


class RequestContextMiddleware:
    """Assigns a request id (or keeps a caller's `X-Request-ID`), logs and measures each request,
    and refuses bodies over `max_body_bytes` with 413 before they are read into memory (file
    uploads, paths ending in `/import`, over `max_upload_bytes`)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int,
                 max_upload_bytes: int | None = None) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body_bytes
        self.max_upload = max_upload_bytes if max_upload_bytes is not None else max_body_bytes
        self.log = logging.getLogger("essaycoach.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode()[:64] or uuid.uuid4().hex
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        upload = scope["path"].endswith("/import")
        limit, code = (self.max_upload, "upload_too_large") if upload else (self.max_body, "payload_too_large")
        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                status = 413
                await _send_problem(send, 413, code, "Payload too large", f"request body over {limit} bytes", rid)
                return
            seen = 0
            too_large = False

            async def limited_receive() -> Message:
                nonlocal seen, too_large
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        too_large = True
                        raise _TooLarge()
                return message

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if too_large:
                    # The app turned our abort into its own error (FastAPI: 400); answer 413 instead.
                    if message["type"] == "http.response.start":
                        status = 413
                        await _send_problem(send, 413, code, "Payload too large",
                                            f"request body over {limit} bytes", rid)
                    return
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
                await send(message)

            try:
                await self.app(scope, limited_receive, send_with_id)
            except _TooLarge:
                status = 413
                await _send_problem(send, 413, code, "Payload too large", f"request body over {limit} bytes", rid)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(scope["method"], path).observe(elapsed)
            self.log.info("request", extra={"method": scope["method"], "path": scope["path"],
                                            "status": status, "ms": round(elapsed * 1000, 2)})
            request_id_var.reset(token)


class _TooLarge(Exception):
    pass


async def _send_problem(send: Send, status: int, code: str, title: str, detail: str, rid: str) -> None:
    body = json.dumps(problem(status, code, title, detail)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode())]})
    await send({"type": "http.response.body", "body": body})


class TracingMiddleware:
    """A server span per HTTP request (added only while tracing is on: `actors.tracing`),
    continuing a caller's `traceparent` header; named by method and route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = dict(scope.get("headers") or []).get(b"traceparent")
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.span(f"HTTP {scope['method']}", parent=parent.decode(errors="replace") if parent else None,
                          kind="SERVER", **{"http.request.method": scope["method"]}) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                path = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{scope['method']} {path}")
                span.set_attribute("http.route", path)
                span.set_attribute("http.response.status_code", status)
