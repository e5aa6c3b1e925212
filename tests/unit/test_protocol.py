"""Unit tests for serve_app.realtime.protocol (y-websocket framing, no I/O)."""

from __future__ import annotations

import json
import random

import pytest
from pycrdt import (
    Awareness as YAwareness,
)
from pycrdt import (
    Doc,
    Text,
    TransactionEvent,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    write_var_uint,
)

from actors.doc import EssayDoc
from serve_app.realtime.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_SAFE_INTEGER,
    Ack,
    Auth,
    Awareness,
    CloseCode,
    MessageType,
    ProtocolError,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncType,
    SyncUpdate,
    encode_ack,
    encode_awareness,
    encode_permission_denied,
    encode_query_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
    is_counted_for_ack,
    parse_client_message,
    parse_message,
)


def _awareness_payload(*entries: tuple[int, int, str]) -> bytes:
    out = write_var_uint(len(entries))
    for client_id, clock, state in entries:
        raw = state.encode()
        out += write_var_uint(client_id) + write_var_uint(clock) + write_var_uint(len(raw)) + raw
    return out


def _client_doc(text: str = "") -> tuple[Doc, Text]:
    doc = Doc()
    content = doc.get("content", type=Text)
    if text:
        content += text
    return doc, content


# --- round trips ---------------------------------------------------------------------------


def test_message_type_numbers_match_y_websocket_and_pycrdt() -> None:
    assert MessageType.SYNC == YMessageType.SYNC
    assert MessageType.AWARENESS == YMessageType.AWARENESS
    assert (MessageType.AUTH, MessageType.QUERY_AWARENESS, MessageType.ACK) == (2, 3, 100)
    assert SyncType.STEP1 == YSyncMessageType.SYNC_STEP1
    assert SyncType.STEP2 == YSyncMessageType.SYNC_STEP2
    assert SyncType.UPDATE == YSyncMessageType.SYNC_UPDATE


def test_sync_step1_round_trips_a_real_state_vector() -> None:
    doc, _ = _client_doc("hello")
    frame = encode_sync_step1(doc.get_state())
    assert frame[:2] == b"\x00\x00"
    assert parse_message(frame) == SyncStep1(doc.get_state())


def test_sync_step2_and_update_round_trip_their_payload() -> None:
    doc, _ = _client_doc("hello")
    update = doc.get_update()
    assert parse_message(encode_sync_step2(update)) == SyncStep2(update)
    assert parse_message(encode_update(update)) == SyncUpdate(update)


def test_our_sync_frames_are_the_ones_pycrdts_public_sync_functions_make_and_answer() -> None:
    server, _ = _client_doc("hello")
    client, _ = _client_doc()
    step1 = encode_sync_step1(client.get_state())
    assert step1 == create_sync_message(client)
    assert handle_sync_message(step1[1:], server) == encode_sync_step2(server.get_update(client.get_state()))


def test_the_protocol_module_uses_only_pycrdts_public_api() -> None:
    import ast

    import serve_app.realtime.protocol as protocol

    tree = ast.parse(open(protocol.__file__).read())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "pycrdt" in imported and not any(name.startswith("pycrdt.") for name in imported if name)


def test_empty_payloads_round_trip() -> None:
    assert parse_message(encode_update(b"")) == SyncUpdate(b"")
    assert parse_message(encode_sync_step1(b"\x00")) == SyncStep1(b"\x00")


def test_awareness_round_trips_and_exposes_entries() -> None:
    payload = _awareness_payload((7, 3, '{"user":{"name":"Ana"}}'), (9, 4, "null"))
    message = parse_message(encode_awareness(payload))
    assert isinstance(message, Awareness)
    assert message.payload == payload
    assert [(e.client_id, e.clock, e.removed) for e in message.entries] == [
        (7, 3, False),
        (9, 4, True),
    ]
    assert json.loads(message.entries[0].state_json) == {"user": {"name": "Ana"}}


def test_awareness_from_pycrdt_awareness_is_accepted() -> None:
    doc = Doc()
    awareness = YAwareness(doc)
    awareness.set_local_state({"user": {"name": "Bo", "color": "#f00"}})
    payload = awareness.encode_awareness_update([doc.client_id])
    message = parse_message(encode_awareness(payload))
    assert isinstance(message, Awareness)
    assert message.entries[0].client_id == doc.client_id


def test_query_awareness_round_trips() -> None:
    assert encode_query_awareness() == b"\x03"
    assert parse_message(encode_query_awareness()) == QueryAwareness()


def test_permission_denied_round_trips_as_auth_message() -> None:
    assert parse_message(encode_permission_denied("read-only: teacher view")) == Auth(
        "read-only: teacher view"
    )


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**31, MAX_SAFE_INTEGER])
def test_ack_round_trips(n: int) -> None:
    frame = encode_ack(n)
    assert frame[0] == 100
    assert parse_message(frame) == Ack(n)


@pytest.mark.parametrize("n", [-1, MAX_SAFE_INTEGER + 1])
def test_encode_ack_rejects_out_of_range_counts(n: int) -> None:
    with pytest.raises(ValueError):
        encode_ack(n)


def test_only_step2_and_update_count_towards_ack() -> None:
    assert is_counted_for_ack(SyncStep2(b"\x00\x00"))
    assert is_counted_for_ack(SyncUpdate(b"\x00\x00"))
    for message in (SyncStep1(b"\x00"), Awareness(b"\x00"), QueryAwareness(), Auth(""), Ack(1)):
        assert not is_counted_for_ack(message)


# --- malformed input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(b"", CloseCode.MALFORMED_FRAME, id="empty-frame"),
        pytest.param(b"\x80", CloseCode.MALFORMED_FRAME, id="truncated-type-varuint"),
        pytest.param(b"\x00", CloseCode.MALFORMED_FRAME, id="sync-without-subtype"),
        pytest.param(b"\x00\x02", CloseCode.MALFORMED_FRAME, id="update-without-length"),
        pytest.param(b"\x00\x02\x85", CloseCode.MALFORMED_FRAME, id="truncated-length-varuint"),
        pytest.param(b"\x00\x02\x05abc", CloseCode.MALFORMED_FRAME, id="length-beyond-buffer"),
        pytest.param(b"\x00\x02\x02\x00\x00\x00", CloseCode.MALFORMED_FRAME, id="trailing-byte"),
        pytest.param(b"\x00\x02" + b"\xff" * 9 + b"\x01", CloseCode.MALFORMED_FRAME, id="varuint-too-long"),
        pytest.param(b"\x00\x02" + b"\xff" * 7 + b"\x7f", CloseCode.MALFORMED_FRAME, id="varuint-over-2^53"),
        pytest.param(b"\x64", CloseCode.MALFORMED_FRAME, id="ack-without-count"),
        pytest.param(b"\x64\x01\x01", CloseCode.MALFORMED_FRAME, id="ack-trailing-byte"),
        pytest.param(b"\x03\x00", CloseCode.MALFORMED_FRAME, id="query-awareness-trailing-byte"),
        pytest.param(b"\x00\x00\x02\x01\x05", CloseCode.MALFORMED_FRAME, id="step1-truncated-state-vector"),
        pytest.param(b"\x00\x00\x02\x00\x07", CloseCode.MALFORMED_FRAME, id="step1-state-vector-trailing"),
        pytest.param(b"\x01\x01\x05", CloseCode.MALFORMED_FRAME, id="awareness-truncated-payload"),
        pytest.param(b"\x01\x04\x05\x01\x01\x00", CloseCode.MALFORMED_FRAME, id="awareness-count-beyond-payload"),
        pytest.param(
            encode_awareness(_awareness_payload((1, 1, "{not json"))),
            CloseCode.MALFORMED_FRAME,
            id="awareness-state-not-json",
        ),
        pytest.param(
            b"\x01\x05\x01\x01\x01\x01\xff", CloseCode.MALFORMED_FRAME, id="awareness-state-not-utf8"
        ),
        pytest.param(b"\x02\x00\x03ab", CloseCode.MALFORMED_FRAME, id="auth-truncated-reason"),
        pytest.param(b"\x05\x00", CloseCode.UNKNOWN_MESSAGE_TYPE, id="unknown-type"),
        pytest.param(b"\xc8\x01", CloseCode.UNKNOWN_MESSAGE_TYPE, id="unknown-two-byte-type-200"),
        pytest.param(b"\x00\x03\x00", CloseCode.UNKNOWN_MESSAGE_TYPE, id="unknown-sync-subtype"),
        pytest.param(b"\x02\x01\x00", CloseCode.UNKNOWN_MESSAGE_TYPE, id="unknown-auth-subtype"),
    ],
)
def test_malformed_frames_raise_protocol_error_with_close_code(frame: bytes, code: CloseCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(frame)
    assert caught.value.code == code
    assert caught.value.reason


def test_varuint_of_exactly_max_safe_integer_is_accepted() -> None:
    assert parse_message(b"\x64" + write_var_uint(MAX_SAFE_INTEGER)) == Ack(MAX_SAFE_INTEGER)


def test_frame_over_size_limit_is_rejected_as_too_big() -> None:
    frame = encode_update(b"\x00" * MAX_MESSAGE_BYTES)
    with pytest.raises(ProtocolError) as caught:
        parse_message(frame)
    assert caught.value.code == CloseCode.MESSAGE_TOO_BIG == 1009


def test_client_may_not_send_server_only_ack() -> None:
    assert parse_message(encode_ack(3)) == Ack(3)
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(encode_ack(3))
    assert caught.value.code == CloseCode.UNKNOWN_MESSAGE_TYPE


def test_close_codes_are_the_documented_values() -> None:
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "POLICY_VIOLATION": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "TRY_AGAIN_LATER": 1013,
        "MALFORMED_FRAME": 4400,
        "BAD_TICKET": 4401,
        "FORBIDDEN": 4403,
        "UNKNOWN_ESSAY": 4404,
        "TOO_LARGE": 4413,
        "UNKNOWN_MESSAGE_TYPE": 4415,
        "TOO_MANY_SOCKETS": 4429,
    }


def test_random_bytes_only_ever_raise_protocol_error() -> None:
    rng = random.Random(20240531)
    parsed = 0
    for _ in range(2000):
        frame = rng.randbytes(rng.randint(0, 64))
        try:
            parse_client_message(frame)
            parsed += 1
        except ProtocolError as exc:
            assert exc.code in CloseCode
    assert parsed < 2000


def test_mutated_valid_frames_only_ever_raise_protocol_error() -> None:
    rng = random.Random(7)
    doc, content = _client_doc("The quick brown fox")
    seeds = [
        encode_sync_step1(doc.get_state()),
        encode_sync_step2(doc.get_update()),
        encode_update(doc.get_update()),
        encode_awareness(_awareness_payload((1, 2, '{"a":1}'))),
        encode_ack(1000),
        encode_permission_denied("no"),
    ]
    for _ in range(2000):
        frame = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            choice = rng.random()
            if choice < 0.5 and frame:
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            elif choice < 0.75 and frame:
                del frame[rng.randrange(len(frame))]
            else:
                frame.insert(rng.randrange(len(frame) + 1), rng.randrange(256))
        try:
            parse_message(bytes(frame))
        except ProtocolError:
            pass


# --- interop with pycrdt's own sync helpers --------------------------------------------------


def test_pycrdt_client_sync_handshake_and_updates_converge_with_server() -> None:
    server = EssayDoc()
    server_seed, _ = _client_doc("Server text. ")
    server.apply_update(server_seed.get_update())
    client, client_text = _client_doc("Offline draft.")

    # Client -> server: step 1 built by pycrdt; we answer with our step 2.
    step1 = parse_client_message(create_sync_message(client))
    assert isinstance(step1, SyncStep1)
    reply = encode_sync_step2(server.diff(step1.state_vector))
    assert handle_sync_message(reply[1:], client) is None

    # Server -> client: our step 1; pycrdt's step 2 reply is parsed and applied by us.
    client_reply = handle_sync_message(encode_sync_step1(server.state_vector())[1:], client)
    assert client_reply is not None
    step2 = parse_client_message(client_reply)
    assert isinstance(step2, SyncStep2) and is_counted_for_ack(step2)
    server.apply_update(step2.update)
    assert server.text == str(client_text)

    # Live typing: pycrdt update frames are accepted and applied.
    frames: list[bytes] = []

    def on_change(event: TransactionEvent) -> None:
        frames.append(create_update_message(event.update))

    subscription = client.observe(on_change)
    client_text.insert(0, ">> ")
    del client_text[len(client_text) - 1 :]
    client.unobserve(subscription)
    assert len(frames) == 2
    for frame in frames:
        message = parse_client_message(frame)
        assert isinstance(message, SyncUpdate)
        server.apply_update(message.update)
    assert server.text == str(client_text)

    # A server-side update reaches the client through our update frame.
    before = server.state_vector()
    server.apply_update(_edit_of(server, " (reviewed)"))
    handle_sync_message(encode_update(server.diff(before))[1:], client)
    assert str(client_text) == server.text


def _edit_of(server: EssayDoc, suffix: str) -> bytes:
    replica = Doc()
    replica.apply_update(server.full_state())
    text = replica.get("content", type=Text)
    before = replica.get_state()
    text += suffix
    return replica.get_update(before)


def test_document_frames_split_into_name_and_message_and_round_trip() -> None:
    from serve_app.realtime.protocol import encode_document_name, split_document_frame

    name = "5f0c2a9e-2f6b-4a51-9a57-0d1e6b0f1c11"
    frame = encode_document_name(name) + encode_sync_step1(b"\x00")
    assert split_document_frame(frame) == (name, encode_sync_step1(b"\x00"))
    long = "é" * 100  # a multi-byte varuint length
    assert split_document_frame(encode_document_name(long) + b"\x65") == (long, b"\x65")


@pytest.mark.parametrize("frame, code", [
    (b"", 4400), (b"\x05ab", 4400), (b"\x01x", 4400), (b"\x02\xff\xfe\x00", 4400),
])
def test_bad_document_frames_are_refused(frame: bytes, code: int) -> None:
    from serve_app.realtime.protocol import split_document_frame

    with pytest.raises(ProtocolError) as caught:
        split_document_frame(frame)
    assert caught.value.code == code


def test_oversized_document_frame_is_1009() -> None:
    from serve_app.realtime.protocol import split_document_frame

    with pytest.raises(ProtocolError) as caught:
        split_document_frame(b"\x01x" + b"\x00" * 100, max_size=50)
    assert caught.value.code == 1009
