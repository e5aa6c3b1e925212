"""Errors with a stable code, an HTTP status and a websocket close code; one handler maps them.

Every error body is ``application/problem+json``: ``{type, title, status, detail, code}`` (plus
``errors`` for validation failures). ``type`` is a stable URI under ``/problems/`` per code.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from actors.metrics import metric
from db.repositories.pagination import BadCursor

log = logging.getLogger("essaycoach.errors")

PROBLEM = "application/problem+json"


class AppError(Exception):
    """Base of every expected failure. Subclasses fix `code`, `status` and `title`."""

    code = "error"
    status = 400
    title = "Bad request"

    def __init__(self, detail: str = "", *, code: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code is not None:  # a more specific stable code than the class's (e.g. "email_taken")
            self.code = code
        self.headers = headers or {}
        self.extra = extra


class BadRequest(AppError):
    code, status, title = "bad_request", 400, "Bad request"


class ValidationFailed(AppError):
    code, status, title = "validation_failed", 422, "The request body is invalid"


class Unauthorized(AppError):
    code, status, title = "unauthorized", 401, "Authentication required"

    def __init__(self, detail: str = "", **extra: Any):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extra)


class InvalidCredentials(Unauthorized):
    code, title = "invalid_credentials", "Email or password is wrong"


class InvalidToken(Unauthorized):
    code, title = "invalid_token", "The token is invalid or expired"


class Forbidden(AppError):
    code, status, title = "forbidden", 403, "Not allowed"


class NotFound(AppError):
    code, status, title = "not_found", 404, "Not found"


class Conflict(AppError):
    code, status, title = "conflict", 409, "Conflict"


class PayloadTooLarge(AppError):
    code, status, title = "payload_too_large", 413, "Payload too large"


class RateLimited(AppError):
    code, status, title = "rate_limited", 429, "Too many requests"

    def __init__(self, detail: str = "", *, retry_after: int, **extra: Any):
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))}, **extra)


class Unavailable(AppError):
    code, status, title = "unavailable", 503, "Service unavailable"


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail,
            "code": code, **extra}


def problem_response(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = jsonable_encoder(problem(status, code, title, detail, **extra))
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("rate_limited", "Too many requests"),
}


def install_handlers(app: FastAPI) -> None:
    """Map AppError, validation errors and framework HTTP errors to problem+json."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        if isinstance(exc, Unauthorized):
            metric("essaycoach_auth_failures_total").labels(exc.code).inc()
        elif isinstance(exc, RateLimited):
            route = getattr(request.scope.get("route"), "path", "unmatched")
            metric("essaycoach_rate_limited_total").labels(route, exc.code).inc()
        return problem_response(exc.status, exc.code, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        detail = f"{where}: {first['msg']}"
        return problem_response(422, "validation_failed", "The request body is invalid", detail,
                                errors=errors)

    @app.exception_handler(BadCursor)
    async def _bad_cursor(request: Request, exc: BadCursor) -> JSONResponse:
        return problem_response(422, "invalid_cursor", "The cursor is invalid",
                                "cursor: pass the next_cursor of a previous page unchanged")

    from actors.host import EssayNotFound
    from actors.host_api import EssayMoved, HostUnavailable

    @app.exception_handler(HostUnavailable)
    async def _host_unavailable(request: Request, exc: HostUnavailable) -> JSONResponse:
        return problem_response(503, "essay_host_unavailable", "The essay's host is restarting",
                                "try again in a few seconds; nothing saved was lost", {"Retry-After": "5"})

    @app.exception_handler(EssayMoved)
    async def _essay_moving(request: Request, exc: EssayMoved) -> JSONResponse:
        # Another host holds the essay's lease (ESSAYCOACH_HOSTS changed, or a host hands over).
        return problem_response(503, "essay_moving", "The essay is moving to another host",
                                "try again in a second; nothing saved was lost", {"Retry-After": "1"})

    @app.exception_handler(EssayNotFound)
    async def _essay_gone(request: Request, exc: EssayNotFound) -> JSONResponse:
        return problem_response(404, "not_found", "Not found", "no such essay")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with the request's context (request id via the JSON formatter), then a plain 500.
        log.error("unhandled error", exc_info=exc,
                  extra={"method": request.method, "path": request.url.path})
        return problem_response(500, "internal_error", "Internal server error",
                                "something went wrong on our side; it has been logged")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        return problem_response(exc.status_code, code, title, str(exc.detail or title),
                                getattr(exc, "headers", None))
