"""Who may open a socket, decided on one Gateway replica before and after the handshake.

- **Tickets before the store**: a ticket carries its expiry and an HMAC tag
  (`serve_app.auth.check_ticket`), so a made-up, malformed or expired one is refused (HTTP 403)
  with no store access at all. A genuine ticket this replica already saw spent or refused is
  refused from memory (`DeadTickets`, until its expiry). So the store is only asked about
  tickets we issued, at most about once per replica each, and issuing is limited per user
  (`WS_TICKETS_PER_USER_PER_MINUTE`, a rate bucket shared by replicas,
  `serve_app.api.auth.ws_ticket`). No lockout per client address: behind Serve's HAProxy every
  client has the proxy's address, so one would lock every client out together.
- **Open sockets per user** (`WS_MAX_SOCKETS_PER_USER`): one more is accepted, then closed 4429.
  Per replica (with N replicas a user may hold N times as many): the count lives in the
  replica's memory, which a socket's life already ties to one replica.

Pure module: no FastAPI, Ray, database or network.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

__all__ = ["DeadTickets", "SocketAdmission", "admission_of"]


class DeadTickets:
    """Hashes of genuine tickets known spent or refused, each kept until its own expiry (after
    which `check_ticket` refuses it anyway); at most `max_size`, oldest forgotten first."""

    __slots__ = ("max_size", "_until")

    def __init__(self, max_size: int = 100_000) -> None:
        self.max_size = max_size
        self._until: dict[str, datetime] = {}

    def __contains__(self, token_hash: str) -> bool:
        return token_hash in self._until

    def add(self, token_hash: str, *, expires_at: datetime, now: datetime) -> None:
        self._until[token_hash] = expires_at
        if len(self._until) > self.max_size:
            self._until = {h: t for h, t in self._until.items() if t > now}
            while len(self._until) > self.max_size // 2:  # dicts keep insertion order: oldest first
                del self._until[next(iter(self._until))]


class SocketAdmission:
    """One replica's socket admission: dead tickets, open sockets per user, and the handshakes
    under way at once (`handshakes`: a socket's ticket, user and essay or class are store reads
    and writes on the replica's event loop, a few milliseconds of its CPU each; a burst of them,
    a client opening its 32 sockets at once or a class arriving together, ran them all in the
    same loop turns and held back every open socket's frames and acks for the burst's length.
    Beyond the limit a handshake waits its turn, at no cost, and the loop's turns stay short)."""

    __slots__ = ("max_per_user", "dead_tickets", "handshakes", "_open")

    def __init__(self, *, max_per_user: int, handshakes_at_once: int = 8) -> None:
        self.max_per_user = max_per_user
        self.dead_tickets = DeadTickets()
        self.handshakes = asyncio.Semaphore(handshakes_at_once)
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
            max_per_user=settings.ws_max_sockets_per_user, handshakes_at_once=settings.ws_handshakes_at_once)
    return admission  # type: ignore[no-any-return]
