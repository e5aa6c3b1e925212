"""One doc socket's awareness: one client id, bounded size, removed on leave (pure, no I/O)."""

from __future__ import annotations

import pytest

from serve_app.realtime.awareness import SocketAwareness, encode_awareness_entries
from serve_app.realtime.protocol import Awareness, AwarenessEntry, ProtocolError, encode_awareness, parse_message


def message(*entries: tuple[int, int, str]) -> Awareness:
    parsed = parse_message(encode_awareness(encode_awareness_entries(
        [AwarenessEntry(client_id=c, clock=k, state_json=s) for c, k, s in entries])))
    assert isinstance(parsed, Awareness)
    return parsed


def entries(payload: bytes | None) -> list[tuple[int, int, str]]:
    assert payload is not None
    parsed = parse_message(encode_awareness(payload))
    assert isinstance(parsed, Awareness)
    return [(e.client_id, e.clock, e.state_json) for e in parsed.entries]


def test_the_first_announced_id_is_the_socket_s_and_other_ids_are_dropped() -> None:
    socket = SocketAwareness(max_bytes=4096)
    assert entries(socket.accept(message((5, 1, '{"a":1}'), (6, 1, '{"b":2}')))) == [(5, 1, '{"a":1}')]
    assert socket.accept(message((6, 2, "{}"))) is None
    assert entries(socket.accept(message((6, 3, "{}"), (5, 2, '{"a":2}')))) == [(5, 2, '{"a":2}')]
    assert entries(socket.payload) == [(5, 2, '{"a":2}')]


def test_leave_removes_the_state_one_clock_later_once() -> None:
    socket = SocketAwareness(max_bytes=4096)
    assert socket.leave() is None
    socket.accept(message((5, 7, '{"a":1}')))
    assert entries(socket.leave()) == [(5, 8, "null")]
    assert socket.leave() is None


def test_a_state_the_client_removed_itself_needs_no_removal_on_leave() -> None:
    socket = SocketAwareness(max_bytes=4096)
    socket.accept(message((5, 1, '{"a":1}')))
    socket.accept(message((5, 2, "null")))
    assert socket.payload is None and socket.leave() is None


def test_an_update_over_the_byte_limit_is_a_1009() -> None:
    socket = SocketAwareness(max_bytes=64)
    with pytest.raises(ProtocolError) as refused:
        socket.accept(message((5, 1, '"' + "x" * 80 + '"')))
    assert refused.value.code == 1009 and socket.client_id is None
