"""Awareness (cursor presence) on one doc socket, bounded: one client id, a small state, cleared on close.

y-protocols awareness lets any peer announce states for any client ids, and the y-websocket
provider echoes the states it heard from others back to the server. Relaying that as is let one
socket fill every watcher (teachers included) with entries for ids it made up. So a socket speaks
for one awareness client id, the first one it announces; entries for other ids (echoes included)
are dropped without closing, since well-behaved providers send them. An awareness payload over
`max_bytes` closes the socket with 1009. When the socket ends, its entry is removed for everyone
(a null state one clock later), as y-websocket's server does for a closed connection.

Teachers on their read-only doc socket publish awareness too, under the same bounds: a student
seeing that the teacher is looking (and where) is the point of cursor presence; awareness never
changes the document.

Pure module: no FastAPI, Ray, database or network.
"""

from __future__ import annotations

from pycrdt import write_var_uint

from serve_app.realtime.protocol import Awareness, AwarenessEntry, CloseCode, ProtocolError

__all__ = ["SocketAwareness", "encode_awareness_entries"]


def encode_awareness_entries(entries: list[AwarenessEntry]) -> bytes:
    """A y-protocols awareness update payload: `[count]([client id][clock][string state])*`."""
    out = [write_var_uint(len(entries))]
    for entry in entries:
        state = (entry.state_json or "null").encode("utf-8")
        out += [write_var_uint(entry.client_id), write_var_uint(entry.clock), write_var_uint(len(state)), state]
    return b"".join(out)


class SocketAwareness:
    """The awareness one doc socket speaks for: `accept` filters what it sends, `leave` ends it."""

    __slots__ = ("max_bytes", "client_id", "clock", "payload")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.client_id: int | None = None
        self.clock = 0
        self.payload: bytes | None = None
        """The socket's latest own state as a payload (answers query-awareness), None if none or removed."""

    def accept(self, message: Awareness) -> bytes | None:
        """The payload to relay for `message`, or None when it holds nothing of this socket's id.

        Raises:
            ProtocolError: 1009 when the payload is larger than `max_bytes`.
        """
        if len(message.payload) > self.max_bytes:
            raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, f"awareness update larger than {self.max_bytes} bytes")
        if not message.entries:
            return None
        if self.client_id is None:
            self.client_id = message.entries[0].client_id
        own = [entry for entry in message.entries if entry.client_id == self.client_id]
        if not own:
            return None
        entry = own[-1]
        payload = message.payload if len(message.entries) == 1 else encode_awareness_entries([entry])
        self.clock = max(self.clock, entry.clock)
        self.payload = None if entry.removed else payload
        return payload

    def leave(self) -> bytes | None:
        """The payload removing this socket's state for everyone, or None if it has none."""
        if self.client_id is None or self.payload is None:
            return None
        self.payload = None
        return encode_awareness_entries([AwarenessEntry(client_id=self.client_id, clock=self.clock + 1,
                                                        state_json="null")])
