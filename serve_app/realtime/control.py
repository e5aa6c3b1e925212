"""Closing open sockets from a REST action, on every Gateway replica.

A roster removal, a class archive or a suspension must end sockets wherever they are held. Each
replica subscribes once (at startup) to `CONTROL_CHANNEL` on the bus its sockets already use, and
keeps a weak index of its open sockets by user, essay and class. `close_sockets` publishes one JSON
message `{user_id?, essay_ids?, class_id?, of_user?, code, reason}`; every replica closes the
sockets that match any of the given keys, only those of `of_user` when it is given (a co-teacher
removed from a class loses their sockets on it; the other teachers keep theirs).
Pub/sub is at-most-once: a replica that misses one keeps those sockets until they reconnect, when
the ordinary access checks refuse them (the REST change is already committed), so the message is
a promptness measure, never the only guard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from actors.broadcast import RESYNC

log = logging.getLogger("essaycoach.ws.control")

CONTROL_CHANNEL = "control:sockets"


@dataclass(frozen=True, slots=True)
class SocketKeys:
    user_id: uuid.UUID
    essay_id: uuid.UUID | None
    class_id: uuid.UUID | None


class SocketIndex:
    """This replica's open sockets and what they are about. Weak keys: a finished socket drops out
    by itself, so handlers need no unregister path."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakKeyDictionary[WebSocket, SocketKeys] = weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Task[None]] = set()

    def track(self, ws: WebSocket, keys: SocketKeys) -> None:
        self._sockets[ws] = keys

    def matching(self, *, user_id: uuid.UUID | None, essay_ids: set[uuid.UUID],
                 class_id: uuid.UUID | None, of_user: uuid.UUID | None = None) -> list[WebSocket]:
        return [ws for ws, keys in list(self._sockets.items())
                if (of_user is None or keys.user_id == of_user)
                and ((user_id is not None and keys.user_id == user_id)
                or (keys.essay_id is not None and keys.essay_id in essay_ids)
                     or (class_id is not None and keys.class_id == class_id))]

    def on_message(self, _channel: str, message: bytes) -> None:
        if message == RESYNC:
            return  # nothing to catch up on: a missed close is caught by the next access check
        try:
            data = json.loads(message)
            user_id = uuid.UUID(data["user_id"]) if data.get("user_id") else None
            class_id = uuid.UUID(data["class_id"]) if data.get("class_id") else None
            of_user = uuid.UUID(data["of_user"]) if data.get("of_user") else None
            essay_ids = {uuid.UUID(e) for e in data.get("essay_ids", [])}
            code, reason = int(data["code"]), str(data["reason"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed socket control message")
            return
        for ws in self.matching(user_id=user_id, essay_ids=essay_ids, class_id=class_id, of_user=of_user):
            self._sockets.pop(ws, None)
            task = asyncio.ensure_future(_close(ws, code, reason))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason[:120])
    except (RuntimeError, WebSocketDisconnect):
        pass  # already closed by its own handler or the peer


def index_of(app: Any) -> SocketIndex:
    index = getattr(app.state, "socket_index", None)
    if index is None:
        index = app.state.socket_index = SocketIndex()
    return index


def track(ws: WebSocket, *, user_id: uuid.UUID, essay_id: uuid.UUID | None = None,
          class_id: uuid.UUID | None = None) -> None:
    """Make an accepted socket closable by `close_sockets` (by its user, essay or class)."""
    index_of(ws.app).track(ws, SocketKeys(user_id, essay_id, class_id))


async def install(app: Any, bus: Any) -> Callable[[], None]:
    """Subscribe this replica to control messages (at startup); returns the unsubscribe."""
    return await bus.subscribe(CONTROL_CHANNEL, index_of(app).on_message)  # type: ignore[no-any-return]


async def close_sockets(bus: Any, *, code: int, reason: str, user_id: uuid.UUID | None = None,
                        essay_ids: Iterable[uuid.UUID] = (), class_id: uuid.UUID | None = None,
                        of_user: uuid.UUID | None = None) -> None:
    """Close, on every replica, the sockets of `user_id`, on any of `essay_ids`, or on `class_id`'s
    class sockets; with `of_user`, only that user's among them. Call after the change that
    motivates it is committed."""
    message = json.dumps({"user_id": str(user_id) if user_id else None,
                          "essay_ids": [str(e) for e in essay_ids],
                          "class_id": str(class_id) if class_id else None,
                          "of_user": str(of_user) if of_user else None,
                          "code": int(code), "reason": reason}).encode()
    bus.deliver_local(CONTROL_CHANNEL, message)  # this replica now, the others through the bus
    await bus.publish(CONTROL_CHANNEL, message, skip_node=bus.node)
