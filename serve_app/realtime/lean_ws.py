"""uvicorn's sans-I/O websocket protocol with lighter per-connection state.

A Gateway replica holds one of these per open socket for as long as a student writes, so its size
is most of what an open essay costs. uvicorn's `WebSocketsSansIOProtocol` keeps an `asyncio.Queue`
of received messages (three deques and an `Event`, another deque) and an `asyncio.Event` for write
flow control: ~4 KiB per connection (tracemalloc in a replica, 2026-11-30), for a queue that holds
at most one message (uvicorn pauses reading until the app takes it) and one reader. `Inbox` and
`Flag` do the same jobs with a list and a future made only while someone waits. The handshake's
response (with its headers) is also dropped once it has been sent.

Used by `serve_app.deployments.configure_websockets` (the Gateway replica's uvicorn) and by the
tests' real servers. Written against uvicorn 0.54 (pinned): `test_lean_ws` checks the attributes
it replaces are still the ones uvicorn uses.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

IMPORT_PATH = "serve_app.realtime.lean_ws:LeanWebSocketProtocol"


class Inbox:
    """The received-message queue: `asyncio.Queue`'s `put_nowait`/`get`/`empty`/`qsize` for one
    reader at a time (an ASGI app reads its `receive` from one task)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Flag:
    """`asyncio.Event`'s `set`/`clear`/`is_set`/`wait`, with no waiter list until someone waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """`WebSocketsSansIOProtocol` with `Inbox` for its queue and `Flag` for its write gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag(True)  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self.response = None  # type: ignore[assignment]  # sent; only the handshake reads it
