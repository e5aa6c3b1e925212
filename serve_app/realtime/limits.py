"""Who may open a socket, decided on one Gateway replica before and after the handshake.

- **Failed ticket handshakes per client address** (`WS_BAD_TICKETS_PER_IP_PER_MINUTE`): a ticket
  that is missing, malformed, unknown, expired or spent counts; beyond the limit every handshake
  from that address is refused (HTTP 403) without touching the store until the minute is over, so
  a flood of bogus tickets costs neither reads nor the store's single writer (SQLite). A ticket's
  form is checked before any store access too (`serve_app.auth.is_ticket_form`).
- **Open sockets per user** (`WS_MAX_SOCKETS_PER_USER`): one more is accepted, then closed 4429.

Both are per replica (with N replicas a user may hold N times the sockets, an address make N
times the attempts): the counts live in the replica's memory, which a socket's life already
ties to one replica. Tickets per user per minute are counted in the store, across replicas
(`serve_app.api.auth.ws_ticket`). Pure module: no FastAPI, Ray, database or network.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["SocketAdmission", "WindowCounter", "admission_of"]


class WindowCounter:
    """Events per key in fixed windows of `window` seconds; at most `max_keys` keys are kept (the
    oldest windows are forgotten first: under a flood from that many addresses the limit
    fails open rather than growing memory)."""

    __slots__ = ("limit", "window", "clock", "max_keys", "_counts")

    def __init__(self, limit: int, *, window: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.limit, self.window, self.clock, self.max_keys = limit, window, clock, max_keys
        self._counts: dict[str, tuple[float, int]] = {}

    def over(self, key: str) -> bool:
        """True when `key` already used up this window's `limit`."""
        entry = self._counts.get(key)
        return entry is not None and entry[0] > self.clock() - self.window and entry[1] >= self.limit

    def add(self, key: str) -> None:
        now = self.clock()
        start, count = self._counts.get(key, (now, 0))
        if start <= now - self.window:
            start, count = now, 0
        self._counts[key] = (start, count + 1)
        if len(self._counts) > self.max_keys:
            horizon = now - self.window
            self._counts = {k: v for k, v in self._counts.items() if v[0] > horizon}
            while len(self._counts) > self.max_keys // 2:  # dicts keep insertion order: oldest first
                del self._counts[next(iter(self._counts))]


class SocketAdmission:
    """One replica's socket admission: failed tickets per address, open sockets per user."""

    __slots__ = ("max_per_user", "bad_tickets", "_open")

    def __init__(self, *, max_per_user: int, bad_tickets_per_minute: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_per_user = max_per_user
        self.bad_tickets = WindowCounter(bad_tickets_per_minute, clock=clock)
        self._open: dict[uuid.UUID, int] = {}

    def enter(self, user_id: uuid.UUID) -> bool:
        """Count one more open socket for `user_id`; False (nothing counted) beyond the limit."""
        count = self._open.get(user_id, 0)
        if count >= self.max_per_user:
            return False
        self._open[user_id] = count + 1
        return True

    def leave(self, user_id: uuid.UUID) -> None:
        count = self._open.get(user_id, 0) - 1
        if count > 0:
            self._open[user_id] = count
        else:
            self._open.pop(user_id, None)

    def open_for(self, user_id: uuid.UUID) -> int:
        return self._open.get(user_id, 0)


def admission_of(app: Any) -> SocketAdmission:
    """The app's (this replica's) admission state, made on first use from its settings."""
    admission = getattr(app.state, "socket_admission", None)
    if admission is None:
        settings = app.state.ctx.settings
        admission = app.state.socket_admission = SocketAdmission(
            max_per_user=settings.ws_max_sockets_per_user,
            bad_tickets_per_minute=settings.ws_bad_tickets_per_ip_per_minute, clock=app.state.ctx.clock)
    return admission  # type: ignore[no-any-return]
