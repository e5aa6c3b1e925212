"""A y-websocket client over pycrdt: the loadtest's simulated student/teacher and the tests' peer.

Speaks the standard protocol (sync step 1/2, update) and understands EssayCoach's ACK
(`[100][n]`): `acked` is how many of this connection's updates the server says are durable.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Self

import websockets
from pycrdt import (
    Doc,
    Text,
    TransactionEvent,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    write_var_uint,
)

ACK = 100


class _Socket:
    """A client websocket with a reader task: `connect` opens it and runs the subclass's `_read`."""

    ws: websockets.ClientConnection | None
    _reader: asyncio.Task[None] | None
    close_code: int | None

    def __init__(self, url: str, connect_options: dict[str, Any] | None) -> None:
        self.url = url
        self.connect_options = connect_options or {}
        self.ws = None
        self.close_code = None
        self.close_reason = ""
        self._reader = None

    async def connect(self) -> Self:
        """Connect and start `_read` (a subclass's) as the reader task."""
        options: dict[str, Any] = {"max_size": None, "open_timeout": 20, **self.connect_options}
        self.ws = await websockets.connect(self.url, **options)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        raise NotImplementedError

    async def wait_closed(self, timeout: float = 10) -> int | None:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (TimeoutError, Exception):
                self._reader.cancel()


class YClient(_Socket):
    """One socket, one local Y.Doc whose root text `content` mirrors the essay."""

    def __init__(self, url: str, *, on_text: Callable[[str], None] | None = None,
                 on_update: Callable[[], None] | None = None,
                 connect_options: dict[str, Any] | None = None) -> None:
        """`on_text(text)` runs after every remote change with the whole text (handy in tests);
        `on_update()` runs after every remote change without building the text (cheap: the
        loadtest's teachers use it); `connect_options` go to `websockets.connect`."""
        super().__init__(url, connect_options)
        self.on_update = on_update
        self.doc = Doc()
        self.text = self.doc.get("content", type=Text)
        self.sent = 0
        self.acked = 0
        self.updates_received = 0  # update frames (not sync steps) from the server
        self.frames_received = 0
        self.ack_times: dict[int, float] = {}
        self.send_times: dict[int, float] = {}
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()
        self.on_text = on_text
        self.permission_denied = False
        self._remote = False
        self._ack_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.doc.observe(self._on_local)

    def _on_local(self, event: TransactionEvent) -> None:
        if self._remote or self.ws is None:
            return
        self.sent += 1
        self.send_times[self.sent] = time.perf_counter()
        asyncio.ensure_future(self.ws.send(create_update_message(event.update)))

    async def connect(self, *, wait_synced: bool = True) -> Self:
        await super().connect()
        assert self.ws is not None
        await self.ws.send(create_sync_message(self.doc))
        if wait_synced:
            await asyncio.wait_for(self.synced.wait(), 20)
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                self.frames_received += 1
                if not isinstance(frame, bytes) or not frame:
                    continue
                if frame[0] == ACK:
                    n = _read_varuint(frame, 1)
                    now = time.perf_counter()
                    for i in range(self.acked + 1, n + 1):
                        self.ack_times[i] = now
                    self.acked = max(self.acked, n)
                    for want, fut in list(self._ack_waiters):
                        if self.acked >= want and not fut.done():
                            fut.set_result(None)
                    continue
                if frame[0] == 2:  # auth: permission denied
                    self.permission_denied = True
                    continue
                if frame[0] != 0:
                    continue
                self._remote = True
                try:
                    reply = handle_sync_message(frame[1:], self.doc)
                finally:
                    self._remote = False
                _after_sync(self, frame[1])
                if frame[1] in (1, 2) and self.on_text:
                    self.on_text(str(self.text))
                if reply is not None:
                    # Our step 2 answer counts towards the server's ack counter like any update.
                    self.sent += 1
                    self.send_times[self.sent] = time.perf_counter()
                    await self.ws.send(reply)
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.ws.close_code is not None:
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason or ""
            for _, fut in self._ack_waiters:
                if not fut.done():
                    fut.set_exception(ConnectionError(f"closed {self.close_code}"))

    async def round_trip(self, timeout: float = 10) -> None:
        """Send a sync step 1 and wait for the server's step 2: the socket is open and the server
        has handled every frame sent before (it reads one socket's frames in order). Raises
        ConnectionError if the socket closes first."""
        assert self.ws is not None and self._reader is not None
        self.synced.clear()
        await self.ws.send(create_sync_message(self.doc))
        synced = asyncio.ensure_future(self.synced.wait())
        try:
            await asyncio.wait({synced, self._reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
        if not self.synced.is_set():
            raise ConnectionError(f"no answer to sync step 1 (closed {self.close_code})")

    def insert(self, index: int, chunk: str) -> None:
        self.text.insert(index, chunk)

    def type(self, chunk: str) -> None:
        self.text.insert(len(self.text), chunk)

    async def wait_acked(self, n: int | None = None, timeout: float = 20) -> None:
        want = self.sent if n is None else n
        if self.acked >= want:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ack_waiters.append((want, fut))
        await asyncio.wait_for(fut, timeout)

    async def wait_text(self, predicate: Callable[[str], bool], timeout: float = 20) -> str:
        return await _wait_text(self.text, self.changed, predicate, timeout)

    async def send_raw(self, frame: bytes | str) -> None:
        assert self.ws is not None
        await self.ws.send(frame)



def _after_sync(peer: Any, subtype: int) -> None:
    """Bookkeeping once a sync message (step 1, step 2 or update) was applied to `peer.doc`."""
    if subtype == 1:
        peer.synced.set()
    if subtype == 2:
        peer.updates_received += 1
    if subtype in (1, 2):
        peer.changed.set()
        if peer.on_update:
            peer.on_update()


async def _wait_text(text: Text, changed: asyncio.Event, predicate: Callable[[str], bool], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not predicate(str(text)):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"text never matched; last: {str(text)[:200]!r}")
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), min(remaining, 0.5))
        except TimeoutError:
            pass
    return str(text)


class FollowedDoc:
    """One document a `ClassDocsClient` follows (read-only): its own Y.Doc, like a YClient's."""

    def __init__(self, socket: ClassDocsClient, on_update: Callable[[], None] | None = None) -> None:
        self.socket = socket
        self.doc = Doc()
        self.text = self.doc.get("content", type=Text)
        self.on_update = on_update
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()
        self.denied = asyncio.Event()  # the server refused it ([auth permission-denied])
        self.updates_received = 0

    async def wait_text(self, predicate: Callable[[str], bool], timeout: float = 20) -> str:
        return await _wait_text(self.text, self.changed, predicate, timeout)

    @property
    def close_code(self) -> int | None:
        return self.socket.close_code

    @property
    def close_reason(self) -> str:
        return self.socket.close_reason


class ClassDocsClient(_Socket):
    """One socket following many documents: `/ws/classes/{id}/docs`, where every frame is
    `[string essay_id][y-websocket message]` (`[id][101]` stops following one)."""

    def __init__(self, url: str, *, connect_options: dict[str, Any] | None = None) -> None:
        super().__init__(url, connect_options)
        self.docs: dict[str, FollowedDoc] = {}
        self.frames_by_name: Counter[str] = Counter()  # every frame received, followed or not

    async def follow(self, essay_id: str, *, on_update: Callable[[], None] | None = None,
                     wait_synced: bool = True) -> FollowedDoc:
        assert self.ws is not None
        followed = self.docs[essay_id] = FollowedDoc(self, on_update)
        await self.ws.send(_name(essay_id) + create_sync_message(followed.doc))
        if wait_synced:
            await asyncio.wait_for(self.synced_or_denied(followed), 20)
        return followed

    @staticmethod
    async def synced_or_denied(followed: FollowedDoc) -> None:
        waits = [asyncio.ensure_future(followed.synced.wait()), asyncio.ensure_future(followed.denied.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def unfollow(self, essay_id: str) -> None:
        assert self.ws is not None
        self.docs.pop(essay_id, None)
        await self.ws.send(_name(essay_id) + bytes([UNWATCH]))

    async def send_raw(self, frame: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(frame)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                if not isinstance(frame, bytes) or not frame:
                    continue
                length = _read_varuint(frame, 0)
                start = len(write_var_uint(length))
                essay_id, message = frame[start:start + length].decode(), frame[start + length:]
                self.frames_by_name[essay_id] += 1
                followed = self.docs.get(essay_id)
                if followed is None or not message:
                    continue
                if message[0] == 2:
                    followed.denied.set()
                    continue
                if message[0] != 0:
                    continue
                reply = handle_sync_message(message[1:], followed.doc)
                _after_sync(followed, message[1])
                if reply is not None:
                    await self.ws.send(_name(essay_id) + reply)  # nothing new: the server ignores it
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason or ""



class JsonSocketClient(_Socket):
    """A socket of JSON text messages (`/ws/essays/{id}/events`, `/ws/classes/{id}/live`), as the
    web app keeps one open beside each doc socket: counts what arrives by its `type`."""

    def __init__(self, url: str, *, connect_options: dict[str, Any] | None = None) -> None:
        super().__init__(url, connect_options)
        self.by_type: Counter[str] = Counter()
        self.bytes_received = 0

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                self.bytes_received += len(frame)
                try:
                    kind = json.loads(frame).get("type", "?")
                except (ValueError, AttributeError):
                    kind = "not json"
                self.by_type[str(kind)] += 1
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason or ""


UNWATCH = 101


def _name(essay_id: str) -> bytes:
    raw = essay_id.encode()
    return write_var_uint(len(raw)) + raw


def _read_varuint(data: bytes, pos: int) -> int:
    result, shift = 0, 0
    while True:
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return result
        shift += 7


