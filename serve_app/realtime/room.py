"""Whether a typed update may reach this replica's watching sockets before its host applies it.

Typing is handed to the teachers' sockets on receipt (`serve_app.realtime.receipt`), before the
host has seen it. The host may still refuse a valid update as too large: the essay's character
limit (`max_essay_chars`, close 4413) or its update-log budget (`max_log_bytes`). A refused
update that the watchers already have stays in their documents (a CRDT cannot take it back), so
a teacher would see text that was never stored. So an update goes to the watchers on receipt only
while it surely fits: each of the host's acks tells what the essay can still take
(`EssayHost.room`, carried on the host stream), and this replica counts what its sockets sent
since that is not yet acked. Otherwise the update reaches the watchers once its ack says it was
stored, as do the essay's later updates until then (the watchers get them in order); an update
refused is never handed over.

Until its first ack on this replica an essay's room is unknown, so its first update waits for its
ack. The room is per replica: a writer of the same essay on another replica (a second tab routed
elsewhere) is not counted until its update shows in a later ack.
"""

from __future__ import annotations

import uuid
from typing import Any

from actors.host_stream import Room


class EssayRoom:
    """One essay's room as this replica knows it, shared by its writing sockets here."""

    __slots__ = ("chars", "log_bytes", "pending_chars", "pending_bytes", "deferred", "writers")

    def __init__(self) -> None:
        self.chars: int | None = None  # unknown until an ack tells
        self.log_bytes = 0
        self.pending_chars = 0  # handed over on receipt, not yet answered
        self.pending_bytes = 0
        self.deferred = 0  # waiting for their ack before the watchers get them
        self.writers = 0

    def fits(self, inserted_chars: int, size: int) -> bool:
        """May an update inserting `inserted_chars` characters, `size` bytes, go to the watchers
        now? Not while an earlier one waits for its ack (order), nor beyond the known room."""
        return (self.deferred == 0 and self.chars is not None
                and self.pending_chars + inserted_chars <= self.chars
                and self.pending_bytes + size <= self.log_bytes)

    def handed_over(self, inserted_chars: int, size: int) -> None:
        self.pending_chars += inserted_chars
        self.pending_bytes += size

    def answered(self, inserted_chars: int, size: int, room: Room | None, *, handed_over: bool) -> None:
        """An update's answer: no longer pending (or deferred); the host's room after it, if told."""
        if handed_over:
            self.pending_chars -= inserted_chars
            self.pending_bytes -= size
        else:
            self.deferred -= 1
        self.tell(room)

    def tell(self, room: Room | None) -> None:
        """The host's room after an acked update (None: not told)."""
        if room is not None:
            self.chars, self.log_bytes = room


def essay_rooms(app: Any) -> dict[uuid.UUID, EssayRoom]:
    """This replica's rooms of the essays its sockets write to."""
    registry = getattr(app.state, "essay_rooms", None)
    if registry is None:
        registry = app.state.essay_rooms = {}
    return registry


def join(rooms: dict[uuid.UUID, EssayRoom], eid: uuid.UUID) -> EssayRoom:
    """A writing socket opens on `eid`: its room, shared with the essay's other writers here."""
    room = rooms.get(eid)
    if room is None:
        room = rooms[eid] = EssayRoom()
    room.writers += 1
    return room


def leave(rooms: dict[uuid.UUID, EssayRoom], eid: uuid.UUID, room: EssayRoom) -> None:
    """The writing socket closed; the essay's room is forgotten with its last writer here."""
    room.writers -= 1
    if room.writers <= 0 and rooms.get(eid) is room:
        del rooms[eid]
