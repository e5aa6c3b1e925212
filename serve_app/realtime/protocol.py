"""y-websocket wire framing for `WS /ws/essays/{id}/doc`, plus EssayCoach's ACK message.

Pure module: no FastAPI, Ray, database or network. It turns one binary websocket frame into a
typed message (or a `ProtocolError` carrying a close code) and builds the frames the server sends.
Document semantics (is this update valid CRDT data?) live in `actors.doc`; this module only
checks framing.

Frames (all integers are lib0 varuints, "bytes" are varuint-length-prefixed byte strings):

    [0 sync][0 step1][bytes state_vector]      SyncStep1
    [0 sync][1 step2][bytes update]            SyncStep2
    [0 sync][2 update][bytes update]           SyncUpdate
    [1 awareness][bytes awareness_update]      Awareness  (payload parsed and checked too)
    [2 auth][0 permission-denied][string why]  Auth       (y-protocols/auth)
    [3 query-awareness]                        QueryAwareness
    [100 ack][n]                               Ack        (EssayCoach extension, server -> client)

The class documents socket (`WS /ws/classes/{id}/docs`) carries many documents on one
connection: every frame is `[string essay_id][one message above]`, and a client sends
`[string essay_id][101 unwatch]` to stop following a document (`split_document_frame`).

Message type numbers follow y-websocket (`messageAuth = 2`, `messageQueryAwareness = 3`).

Policy the socket handler is expected to follow (the parser only classifies):

* `SyncStep2` and `SyncUpdate` from a client count towards the ACK counter (`is_counted_for_ack`);
  `Ack(n)` then means "the first n such messages this connection sent are in the update log".
* `QueryAwareness` -> reply with `encode_awareness(...)` holding every known awareness state.
* `Auth` from a client is ignored: y-protocols only defines a server -> client
  "permission denied" message, so a client has nothing to tell us with it. Ignoring (instead of
  closing) keeps odd-but-harmless providers working. The server may send
  `encode_permission_denied(reason)` before closing a read-only socket with 4403.
* `Ack` is server -> client only; `parse_client_message` rejects it with 4415.

Close codes (`CloseCode`):

    1000 NORMAL                 clean close
    1001 GOING_AWAY             server shutting down / essay unloading; client should reconnect
    1008 POLICY_VIOLATION       rate limited or other policy breach
    1009 MESSAGE_TOO_BIG        frame larger than MAX_MESSAGE_BYTES (1 MiB), or an awareness
                                update larger than WS_AWARENESS_MAX_BYTES (4 KiB)
    1011 INTERNAL_ERROR         unexpected server failure
    1012 (not sent by us)       service restart: the Gateway replica's HTTP server is stopping
                                (the doc socket's due ack still precedes it: our protocol's
                                `shutdown`, `serve_app.fastpath.uvicorn_protocol`)
    1013 TRY_AGAIN_LATER        essay host (re)starting, the essay moving to another host (a
                                hand-over, or its host lost the essay's lease: updates not yet
                                acknowledged were not stored, the client sends them again), or
                                the socket fell too far behind (2,000 frames or
                                WS_OUTBOUND_MAX_BYTES queued); reconnect with backoff
    4400 MALFORMED_FRAME        truncated/overlong varuint, length beyond buffer, trailing bytes,
                                bad awareness payload, invalid CRDT update, or an update that
                                is not plain text in the root Y.Text `content` (another root
                                type, a map, embeds, formatting attributes): nothing applied
    4401 BAD_TICKET             ws ticket missing, expired, reused (when refusal before accept
                                is impossible)
    4403 FORBIDDEN              wrong role, or a write on a read-only (teacher) socket
    4404 UNKNOWN_ESSAY          no such essay (or not visible to the caller, or deleted)
    4413 TOO_LARGE              after a permission-denied message: the update would take the
                                essay over MAX_ESSAY_CHARS or its update log over
                                MAX_ESSAY_LOG_BYTES; nothing applied
    4429 TOO_MANY_SOCKETS       the user already holds WS_MAX_SOCKETS_PER_USER open sockets on
                                this Gateway replica (sent right after accept)
    4415 UNKNOWN_MESSAGE_TYPE   unknown top-level type or sync subtype, or a server-only message
                                sent by a client
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum

from pycrdt import (
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_update_message,
    write_message,
    write_var_uint,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_SAFE_INTEGER",
    "Ack",
    "Auth",
    "Awareness",
    "AwarenessEntry",
    "CloseCode",
    "Message",
    "MessageType",
    "ProtocolError",
    "QueryAwareness",
    "SyncStep1",
    "SyncStep2",
    "SyncType",
    "SyncUpdate",
    "UNWATCH",
    "encode_ack",
    "encode_document_name",
    "encode_awareness",
    "encode_permission_denied",
    "encode_query_awareness",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_update",
    "split_document_frame",
    "is_counted_for_ack",
    "parse_client_message",
    "parse_message",
]

MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest frame accepted on the doc socket; bigger frames close with 1009."""

MAX_SAFE_INTEGER = 2**53 - 1
"""lib0 refuses varuints above JavaScript's Number.MAX_SAFE_INTEGER; so do we."""

_MAX_VARUINT_BYTES = 8  # ceil(53 / 7): a ninth byte can only encode bits above 2**53.


class CloseCode(IntEnum):
    """Websocket close codes used by the realtime sockets (see the module docstring)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    MALFORMED_FRAME = 4400
    BAD_TICKET = 4401
    FORBIDDEN = 4403
    UNKNOWN_ESSAY = 4404
    TOO_LARGE = 4413  # the essay's character limit or its update log's byte budget (after permission-denied)
    TOO_MANY_SOCKETS = 4429
    UNKNOWN_MESSAGE_TYPE = 4415


class MessageType(IntEnum):
    """Top-level message type (first varuint of a frame)."""

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    ACK = 100


class SyncType(IntEnum):
    """Sync sub-message type (second varuint of a SYNC frame); equal to pycrdt's YSyncMessageType."""

    STEP1 = int(YSyncMessageType.SYNC_STEP1)
    STEP2 = int(YSyncMessageType.SYNC_STEP2)
    UPDATE = int(YSyncMessageType.SYNC_UPDATE)


_AUTH_PERMISSION_DENIED = 0


class ProtocolError(ValueError):
    """A frame that cannot be accepted; `code` is the websocket close code to use."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(f"{int(code)} {reason}")
        self.code = code
        self.reason = reason


# --- message types -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """Sync step 1: the sender's state vector; the receiver answers with a step 2."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """Sync step 2: every update the receiver of the step 1 was missing."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental document update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state; `state_json == "null"` means the client went away."""

    client_id: int
    clock: int
    state_json: str

    @property
    def removed(self) -> bool:
        """True when this entry removes the client's awareness state."""
        return self.state_json in ("null", "")


@dataclass(frozen=True, slots=True)
class Awareness:
    """An awareness update; `payload` is the raw y-protocols awareness update (relay it as is)."""

    payload: bytes
    entries: tuple[AwarenessEntry, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """A request for every known awareness state."""


@dataclass(frozen=True, slots=True)
class Auth:
    """A y-protocols auth message; only "permission denied" (subtype 0) exists."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ack:
    """EssayCoach ACK: the first `n` step-2/update messages of this connection are durable."""

    n: int


Message = SyncStep1 | SyncStep2 | SyncUpdate | Awareness | QueryAwareness | Auth | Ack


# --- decoding ------------------------------------------------------------------------------


class _Reader:
    """Strict lib0 reader over untrusted bytes: every failure is a ProtocolError(4400).

    Not pycrdt's public `Decoder` (pycrdt 0.14): it is meant for frames pycrdt wrote itself, so a
    truncated varuint raises IndexError, a length prefix past the end returns a shorter slice
    instead of failing, varuints have no length or 2**53 bound, and bad UTF-8 raises
    UnicodeDecodeError: none of it a close code.
    The frames we build use pycrdt's public encoders (`write_var_uint`, `write_message`,
    `create_update_message`, `create_awareness_message`), never `pycrdt._sync`.
    """

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def var_uint(self) -> int:
        value = 0
        shift = 0
        for _ in range(_MAX_VARUINT_BYTES):
            if self._pos >= len(self._data):
                raise ProtocolError(CloseCode.MALFORMED_FRAME, "truncated varuint")
            byte = self._data[self._pos]
            self._pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                if value > MAX_SAFE_INTEGER:
                    raise ProtocolError(CloseCode.MALFORMED_FRAME, "varuint out of range")
                return value
        raise ProtocolError(CloseCode.MALFORMED_FRAME, "varuint too long")

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        end = self._pos + length
        if end > len(self._data):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "length prefix beyond end of frame")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def var_string(self) -> str:
        raw = self.var_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "string is not UTF-8") from None

    def rest(self) -> bytes:
        """Everything not read yet."""
        return self._data[self._pos:]

    def expect_end(self, what: str) -> None:
        if self._pos != len(self._data):
            raise ProtocolError(CloseCode.MALFORMED_FRAME, f"trailing bytes after {what}")


def _check_state_vector(state_vector: bytes) -> None:
    reader = _Reader(state_vector)
    for _ in range(reader.var_uint()):
        reader.var_uint()  # client id
        reader.var_uint()  # clock
    reader.expect_end("state vector")


def _parse_awareness_payload(payload: bytes) -> tuple[AwarenessEntry, ...]:
    reader = _Reader(payload)
    count = reader.var_uint()
    # Each entry needs at least 3 bytes; refuse absurd counts before looping over them.
    if count * 3 > len(payload):
        raise ProtocolError(CloseCode.MALFORMED_FRAME, "awareness entry count beyond payload")
    entries = []
    for _ in range(count):
        client_id = reader.var_uint()
        clock = reader.var_uint()
        state_json = reader.var_string()
        if state_json:
            try:
                json.loads(state_json)
            except ValueError:
                raise ProtocolError(CloseCode.MALFORMED_FRAME, "awareness state is not JSON") from None
        entries.append(AwarenessEntry(client_id=client_id, clock=clock, state_json=state_json))
    reader.expect_end("awareness update")
    return tuple(entries)


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse one binary frame (either direction).

    Raises:
        ProtocolError: 1009 if the frame exceeds `max_size`; 4400 for malformed framing;
            4415 for an unknown message type or sync subtype.
    """
    if len(data) > max_size:
        raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, f"frame larger than {max_size} bytes")
    reader = _Reader(bytes(data))
    kind = reader.var_uint()
    message: Message
    if kind == MessageType.SYNC:
        sub = reader.var_uint()
        if sub == SyncType.STEP1:
            state_vector = reader.var_bytes()
            _check_state_vector(state_vector)
            message = SyncStep1(state_vector)
        elif sub == SyncType.STEP2:
            message = SyncStep2(reader.var_bytes())
        elif sub == SyncType.UPDATE:
            message = SyncUpdate(reader.var_bytes())
        else:
            raise ProtocolError(CloseCode.UNKNOWN_MESSAGE_TYPE, f"unknown sync message type {sub}")
    elif kind == MessageType.AWARENESS:
        payload = reader.var_bytes()
        message = Awareness(payload, _parse_awareness_payload(payload))
    elif kind == MessageType.AUTH:
        sub = reader.var_uint()
        if sub != _AUTH_PERMISSION_DENIED:
            raise ProtocolError(CloseCode.UNKNOWN_MESSAGE_TYPE, f"unknown auth message type {sub}")
        message = Auth(reader.var_string())
    elif kind == MessageType.QUERY_AWARENESS:
        message = QueryAwareness()
    elif kind == MessageType.ACK:
        message = Ack(reader.var_uint())
    else:
        raise ProtocolError(CloseCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type {kind}")
    reader.expect_end(type(message).__name__)
    return message


def parse_client_message(data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse a frame received from a client: like `parse_message`, but server-only ACK -> 4415."""
    message = parse_message(data, max_size=max_size)
    if isinstance(message, Ack):
        raise ProtocolError(CloseCode.UNKNOWN_MESSAGE_TYPE, "ack is a server-only message")
    return message


def is_counted_for_ack(message: Message) -> bool:
    """True for the client messages the ACK counter `n` counts (sync step 2 and update)."""
    return isinstance(message, (SyncStep2, SyncUpdate))


# --- encoding ------------------------------------------------------------------------------


UNWATCH = bytes([101])
"""Class documents socket, client -> server after the essay id: stop following this document."""


def split_document_frame(data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> tuple[str, bytes]:
    """`[string name][message]` -> (name, message) for the class documents socket.

    Raises:
        ProtocolError: 1009 over `max_size`; 4400 if the name is malformed or nothing follows it.
    """
    if len(data) > max_size:
        raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, f"frame larger than {max_size} bytes")
    reader = _Reader(bytes(data))
    name = reader.var_string()
    message = reader.rest()
    if not message:
        raise ProtocolError(CloseCode.MALFORMED_FRAME, "no message after the document name")
    return name, message


def encode_document_name(name: str) -> bytes:
    """The prefix of every frame about document `name` on the class documents socket."""
    raw = name.encode("utf-8")
    return write_var_uint(len(raw)) + raw


_SYNC_STEP1_PREFIX = write_var_uint(YMessageType.SYNC) + write_var_uint(YSyncMessageType.SYNC_STEP1)
_SYNC_STEP2_PREFIX = write_var_uint(YMessageType.SYNC) + write_var_uint(YSyncMessageType.SYNC_STEP2)


def encode_sync_step1(state_vector: bytes) -> bytes:
    """`[0][0][state_vector]`: ask the peer for what we are missing."""
    return _SYNC_STEP1_PREFIX + write_message(state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    """`[0][1][update]`: the answer to a peer's step 1."""
    return _SYNC_STEP2_PREFIX + write_message(update)


def encode_update(update: bytes) -> bytes:
    """`[0][2][update]`: an incremental update."""
    return create_update_message(update)


def encode_awareness(payload: bytes) -> bytes:
    """`[1][payload]`: an awareness update (y-protocols encoding)."""
    return create_awareness_message(payload)


def encode_query_awareness() -> bytes:
    """`[3]`: ask the peer for every awareness state it knows."""
    return write_var_uint(MessageType.QUERY_AWARENESS)


def encode_permission_denied(reason: str) -> bytes:
    """`[2][0][reason]`: y-protocols "permission denied" (y-websocket clients log it)."""
    raw = reason.encode("utf-8")
    return (
        write_var_uint(MessageType.AUTH)
        + write_var_uint(_AUTH_PERMISSION_DENIED)
        + write_var_uint(len(raw))
        + raw
    )


def encode_ack(n: int) -> bytes:
    """`[100][n]`: the first `n` step-2/update messages of this connection are durable."""
    if not 0 <= n <= MAX_SAFE_INTEGER:
        raise ValueError(f"ack count out of range: {n}")
    return write_var_uint(MessageType.ACK) + write_var_uint(n)
