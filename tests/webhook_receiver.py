"""A real HTTP webhook receiver for tests: Starlette served by uvicorn on 127.0.0.1 and a free port,
in the test's own event loop. It answers the scripted statuses first (e.g. ``[500, 500]``), then
200, and records every request's headers and raw body."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class WebhookReceiver:
    """Use ``async with WebhookReceiver() as r``; POST to ``r.url``."""

    def __init__(self, statuses: list[int] | None = None, *, host: str = "127.0.0.1",
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
        self.statuses: deque[int] = deque(statuses or [])
        self.host = host
        self.ssl = (ssl_certfile, ssl_keyfile)
        self.received: list[Received] = []
        self.arrived = asyncio.Event()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.url_for(self.host)

    def url_for(self, hostname: str) -> str:
        """The hook's URL under another name (a test resolver maps it to this receiver)."""
        scheme = "https" if self.ssl[0] else "http"
        return f"{scheme}://{hostname}:{self.port}/hooks/essaycoach"

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        status = self.statuses.popleft() if self.statuses else 200
        self.received.append(Received(request.url.path, {k.lower(): v for k, v in request.headers.items()},
                                      body, status))
        self.arrived.set()
        return Response(b"ok" if status < 300 else b"try again", status_code=status)

    async def __aenter__(self) -> WebhookReceiver:
        from tests.conftest import free_port

        self.port = free_port()
        app = Starlette(routes=[Route("/hooks/essaycoach", self._hook, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off", ssl_certfile=self.ssl[0],
                                                     ssl_keyfile=self.ssl[1]))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
            if self._task.done():
                self._task.result()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received
