"""actors.host_stream: typed updates from a Gateway to an essay host over real TCP, against the
real store: acks after the commit, errors mapped back, the token, and a break mid-flight."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from actors.broadcast import InMemoryBus
from actors.host import EssayHost, EssayNotFound, HostConfig, UpdateRejected
from actors.host_stream import (
    OK,
    REJECTED,
    FramedProtocol,
    HostStream,
    StreamError,
    StreamServer,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from tests.integration.test_host import new_essay, sessions, stored_text, typed_updates  # noqa: F401

WORDS = [f"w{i} " for i in range(30)]


def test_frames_round_trip() -> None:
    essay, author = uuid.uuid4(), uuid.uuid4()
    for kwargs in ({"author_id": author, "origin": "o" * 32, "live": True, "node": "n1"},
                   {"author_id": None, "origin": "", "live": False, "node": None}):
        request_id, eid, update, decoded = decode_request(encode_request(7, essay, b"\x01\x02", **kwargs))
        assert (request_id, eid, update, decoded) == (7, essay, b"\x01\x02", kwargs)
    assert decode_response(encode_response(9, OK, 2**40)) == (9, OK, 2**40, None)  # a host that cannot tell its room
    assert decode_response(encode_response(9, OK, 7, (199_990, 2**33))) == (9, OK, 7, (199_990, 2**33))
    assert decode_response(encode_response(9, REJECTED, "bad")) == (9, REJECTED, "bad", None)
    with pytest.raises(ValueError):
        decode_request(b"\x00" * 10)


@pytest.fixture
async def host(sessions: object) -> AsyncIterator[EssayHost]:  # noqa: F811
    h = EssayHost(sessions=sessions, bus=InMemoryBus(), config=HostConfig(commit_interval=0.02))  # type: ignore[arg-type]
    await h.start()
    yield h
    await h.stop()


async def serve(host: EssayHost) -> StreamServer:
    server = StreamServer(host)
    await server.start("127.0.0.1")
    return server


def resolver(server: StreamServer) -> tuple[list[StreamServer], object]:
    current = [server]

    async def resolve() -> tuple[str, int, bytes]:
        return "127.0.0.1", current[0].port, current[0].token

    return current, resolve


async def test_updates_are_acked_once_stored_and_errors_come_back_as_theirs(host: EssayHost, sessions: object) -> None:  # noqa: F811
    essay_id = await new_essay(sessions)
    server = await serve(host)
    _, resolve = resolver(server)
    stream = HostStream(resolve)  # type: ignore[arg-type]
    typed = ""
    for word, update in zip(WORDS[:10], typed_updates(WORDS[:10])):
        seq = await stream.apply(essay_id, update, author_id=None, origin="o")
        typed += word
        assert await stored_text(sessions, essay_id) == typed  # the ack came after the commit
    assert seq == 10
    together = await asyncio.gather(*(stream.apply(essay_id, u, origin="o")
                                      for u in typed_updates(WORDS)[10:]))  # many in flight at once
    assert sorted(together) == list(range(11, 31))
    with pytest.raises(UpdateRejected):
        await stream.apply(essay_id, b"\xff\xfe garbage", origin="o")
    with pytest.raises(EssayNotFound):
        await stream.apply(uuid.uuid4(), typed_updates(["x"])[0], origin="o")
    assert await stream.apply(essay_id, typed_updates(["x"])[0], origin="o") > 0  # the stream goes on
    assert stream.connects == 1
    stream.close()
    await server.close()


class Raw(FramedProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []
        self.closed = asyncio.get_event_loop().create_future()

    def frame_received(self, frame: bytes) -> None:
        self.frames.append(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)


async def test_submitted_updates_are_answered_from_the_streams_receive_callback(host: EssayHost, sessions: object) -> None:  # noqa: F811
    """`submit` (the doc socket's path): each answer is told once, after the commit, from the
    callback that read it (no task); one answer that raises breaks neither the stream nor the
    answers after it; a closed stream tells its refusal later, never inside `submit`."""
    essay_id = await new_essay(sessions)
    server = await serve(host)
    _, resolve = resolver(server)
    stream = HostStream(resolve)  # type: ignore[arg-type]
    told: list[tuple[int | None, str | None, str]] = []
    rooms: list[tuple[int, int] | None] = []
    inside = False

    def answer(seq: int | None, error: BaseException | None, room: tuple[int, int] | None) -> None:
        rooms.append(room)
        told.append((seq, type(error).__name__ if error else None, "")
                    if not inside else (seq, "told inside submit", ""))
        if len(told) == 1:
            raise RuntimeError("this socket's bookkeeping failed")

    for update in typed_updates(WORDS[:5]):
        inside = True
        stream.submit(essay_id, update, origin="o", answer=answer)
        inside = False
    while len(told) < 5:
        await asyncio.sleep(0.01)
    assert told == [(seq, None, "") for seq in range(1, 6)]  # each once, in order, after its commit
    assert await stored_text(sessions, essay_id) == "".join(WORDS[:5])
    # Each ack tells what the essay can still take: characters under the limit, log bytes under its budget.
    chars_left = [room[0] for room in rooms if room is not None]
    assert len(chars_left) == 5 and chars_left == sorted(chars_left, reverse=True)
    assert rooms[-1] == host.room(essay_id)
    assert rooms[-1][0] == host.config.max_essay_chars - len("".join(WORDS[:5]))  # type: ignore[index]
    stream.submit(essay_id, b"\x01\x02", origin="o", answer=answer)  # not an update: refused by the host
    while len(told) < 6:
        await asyncio.sleep(0.01)
    assert told[5] == (None, "UpdateRejected", "")
    stream.close()
    inside = True
    stream.submit(essay_id, typed_updates(["late"])[0], origin="o", answer=answer)
    inside = False
    assert len(told) == 6
    await asyncio.sleep(0)
    assert told[6] == (None, "StreamError", "")
    await server.close()


async def test_a_connection_without_the_token_is_closed_and_changes_nothing(host: EssayHost, sessions: object) -> None:  # noqa: F811
    essay_id = await new_essay(sessions)
    server = await serve(host)
    _, raw = await asyncio.get_running_loop().create_connection(Raw, "127.0.0.1", server.port)
    assert isinstance(raw, Raw)
    raw.send(b"x" * 32)  # a wrong token
    raw.send(encode_request(1, essay_id, typed_updates(["sneaky"])[0], author_id=None, origin="o", live=True, node=None))
    await asyncio.wait_for(raw.closed, 5)
    assert raw.frames == [] and await stored_text(sessions, essay_id) == ""
    await server.close()


class Stuck:
    """A host that takes updates and never answers (it is about to die)."""

    def __init__(self) -> None:
        self.received = 0

    async def apply_update(self, *args: object, **kwargs: object) -> int:
        self.received += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_updates_in_flight_when_the_stream_breaks_are_answered_by_the_next_host(host: EssayHost, sessions: object) -> None:  # noqa: F811
    """The first host takes the updates and dies without answering; the restarted one (a new
    server, port and token) gets every unanswered update again and acks each once stored."""
    essay_id = await new_essay(sessions)
    stuck = Stuck()
    first = StreamServer(stuck)  # type: ignore[arg-type]
    await first.start("127.0.0.1")
    current, resolve = resolver(first)
    stream = HostStream(resolve)  # type: ignore[arg-type]
    in_flight = [asyncio.ensure_future(stream.apply(essay_id, u, origin="o")) for u in typed_updates(WORDS)]
    for _ in range(100):
        if stuck.received == len(WORDS):
            break
        await asyncio.sleep(0.01)
    assert stuck.received == len(WORDS) and not any(f.done() for f in in_flight)
    current[0] = await serve(host)
    await first.close()  # drops its connections: the Gateway side sees the break
    seqs = await asyncio.wait_for(asyncio.gather(*in_flight), 10)
    assert sorted(seqs) == list(range(1, len(WORDS) + 1)) and stream.connects == 2
    assert await stored_text(sessions, essay_id) == "".join(WORDS)
    stream.close()
    with pytest.raises(StreamError):  # a closed stream (the Gateway stopping) refuses more
        await stream.apply(essay_id, typed_updates(["late"])[0], origin="o")
    await current[0].close()


async def test_an_update_no_host_ever_answers_fails_once_its_retry_window_is_over() -> None:
    """Each host it reaches dies (or drops the connection) before answering: after `retry_for`
    it is failed instead of being sent again forever."""
    stuck = Stuck()
    servers: list[StreamServer] = []

    async def resolve() -> tuple[str, int, bytes]:
        if servers:
            await servers[-1].close()
        server = StreamServer(stuck)  # type: ignore[arg-type]
        await server.start("127.0.0.1")
        servers.append(server)
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, lambda: asyncio.ensure_future(server.close()))  # it dies soon after
        return "127.0.0.1", server.port, server.token

    stream = HostStream(resolve, retry_for=0.5)
    with pytest.raises(StreamError):
        await asyncio.wait_for(stream.apply(uuid.uuid4(), b"\x00\x00", origin="o"), 10)
    assert stream.connects >= 2 and stuck.received >= 2
    stream.close()
    for server in servers:
        await server.close()


async def test_the_host_reads_only_a_token_sized_first_frame_and_waits_for_it_briefly(
        host: EssayHost, monkeypatch: pytest.MonkeyPatch) -> None:
    import actors.host_stream as hs

    monkeypatch.setattr(hs, "TOKEN_WAIT_SECONDS", 0.2)
    server = await serve(host)
    loop = asyncio.get_running_loop()
    _, big = await loop.create_connection(Raw, "127.0.0.1", server.port)
    assert isinstance(big, Raw) and big.transport is not None
    big.transport.write((4 * 1024 * 1024).to_bytes(4, "big"))  # a 4 MiB "token" would be buffered
    await asyncio.wait_for(big.closed, 5)
    _, silent = await loop.create_connection(Raw, "127.0.0.1", server.port)
    assert isinstance(silent, Raw)
    await asyncio.wait_for(silent.closed, 5)  # sends nothing: closed after the wait
    assert not server.connections
    await server.close()


def test_frames_split_across_reads_and_many_in_one_read_are_all_delivered() -> None:
    class Collect(FramedProtocol):
        def __init__(self) -> None:
            super().__init__()
            self.frames: list[bytes] = []

        def frame_received(self, frame: bytes) -> None:
            self.frames.append(frame)

    frames = [b"", b"a", b"hello" * 100, bytes(range(256))]
    wire = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    for step in (1, 3, 7, len(wire)):
        protocol = Collect()
        protocol.transport = object()  # type: ignore[assignment]  # open; nothing is written here
        for k in range(0, len(wire), step):
            protocol.data_received(wire[k:k + step])
        assert protocol.frames == frames, step


class WriteRecorder:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, **_: int) -> None:
        pass


async def test_a_gateways_updates_of_a_few_loop_turns_leave_in_one_write() -> None:
    """Typists' updates reach a replica one per loop turn: the Gateway's side of the stream
    gathers them for `GATEWAY_FLUSH_SECONDS` into one write (one wake-up and read of the host)."""
    from actors.host_stream import GATEWAY_FLUSH_SECONDS, _GatewaySide

    transport = WriteRecorder()
    side = _GatewaySide(None)  # type: ignore[arg-type]  # no stream: only its writes are looked at
    side.connection_made(transport)  # type: ignore[arg-type]
    assert side.flush_delay == GATEWAY_FLUSH_SECONDS > 0
    for frame in (b"one", b"two", b"three"):
        side.send(frame)
        await asyncio.sleep(0)  # each in a loop turn of its own
    assert transport.writes == []
    await asyncio.sleep(GATEWAY_FLUSH_SECONDS * 5)
    assert transport.writes == [b"".join(len(f).to_bytes(4, "big") + f for f in (b"one", b"two", b"three"))]


async def test_an_unreachable_host_fails_the_updates_after_the_retry_window() -> None:
    async def resolve() -> tuple[str, int, bytes]:
        raise ConnectionRefusedError("no host")

    stream = HostStream(resolve, retry_for=0.3)
    with pytest.raises(StreamError):
        await asyncio.wait_for(stream.apply(uuid.uuid4(), b"\x00\x00", origin="o"), 5)


async def test_an_update_over_the_essays_limits_comes_back_as_too_large(sessions: object) -> None:  # noqa: F811
    from actors.host import UpdateTooLarge

    host = EssayHost(sessions=sessions, bus=InMemoryBus(), config=HostConfig(commit_interval=0.02, max_essay_chars=5))  # type: ignore[arg-type]
    await host.start()
    server = await serve(host)
    _, resolve = resolver(server)
    stream = HostStream(resolve)  # type: ignore[arg-type]
    essay_id = await new_essay(sessions)
    with pytest.raises(UpdateTooLarge):
        await stream.apply(essay_id, typed_updates(["too long"])[0], origin="o")
    assert await stream.apply(essay_id, typed_updates(["ok"])[0], origin="o") == 1  # the stream goes on
    stream.close()
    await server.close()
    await host.stop()


async def test_gateway_writes_wait_while_the_host_does_not_read() -> None:
    """Write backpressure: a host that stops reading makes `apply` wait once the connection's
    buffer passes the high-water mark, instead of queueing every frame in memory; the waiting
    updates go out and are answered once the host reads again."""
    import socket

    import actors.host_stream as hs

    token = hs.new_token()
    reading = asyncio.Event()
    answered: list[int] = []

    async def host_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(4 + hs.TOKEN_BYTES) == hs.TOKEN_BYTES.to_bytes(4, "big") + token
        await reading.wait()  # the host reads nothing more until told: TCP buffers fill up
        while True:
            size = int.from_bytes(await reader.readexactly(4), "big")
            request_id, _, _, _ = decode_request(await reader.readexactly(size))
            answered.append(request_id)
            answer = encode_response(request_id, OK, request_id)
            writer.write(len(answer).to_bytes(4, "big") + answer)

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # small kernel buffers: fills sooner
    listener.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(host_side, sock=listener)
    port = listener.getsockname()[1]

    async def resolve() -> tuple[str, int, bytes]:
        return "127.0.0.1", port, token

    stream = HostStream(resolve, retry_for=60)
    update = bytes(256 * 1024)
    count = 96  # 24 MiB: more than the kernel's socket buffers and the high-water mark together
    first = asyncio.ensure_future(stream.apply(uuid.uuid4(), update, origin="o"))
    while stream._protocol is None:  # connected, token sent
        await asyncio.sleep(0.01)
    protocol = stream._protocol
    applies = [first] + [asyncio.ensure_future(stream.apply(uuid.uuid4(), update, origin="o")) for _ in range(count - 1)]
    await asyncio.wait_for(_until(lambda: protocol.paused), 30)
    # Paused: the transport holds about the high-water mark (plus one coalesced write), no more;
    # the rest of the updates wait in their callers instead.
    assert protocol.transport is not None
    assert protocol.transport.get_write_buffer_size() <= hs.WRITE_HIGH_WATER + hs.COALESCE_BYTES + len(update) + 64
    assert stream.waited_writable > 0
    assert not any(a.done() for a in applies)

    reading.set()
    seqs = await asyncio.wait_for(asyncio.gather(*applies), 60)
    assert len(seqs) == count and len(set(answered)) == count
    stream.close()
    server.close()


async def _until(condition: object) -> None:
    while not condition():  # type: ignore[operator]
        await asyncio.sleep(0.01)


async def test_the_host_stops_reading_a_connection_whose_updates_pile_up() -> None:
    """Read backpressure: past MAX_IN_FLIGHT_BYTES of updates being applied on one connection the
    host stops reading it (TCP then holds the Gateway's writes), and reads again as they finish."""
    import actors.host_stream as hs

    release = asyncio.Event()

    class SlowHost:
        applying = 0
        most = 0

        async def apply_update(self, essay_id: uuid.UUID, update: bytes, **kwargs: object) -> int:
            SlowHost.applying += 1
            SlowHost.most = max(SlowHost.most, SlowHost.applying)
            await release.wait()
            SlowHost.applying -= 1
            return 1

        def room(self, essay_id: uuid.UUID) -> None:
            return None  # not told: the answers carry only the seq

    server = StreamServer(SlowHost())  # type: ignore[arg-type]
    await server.start("127.0.0.1")

    async def resolve() -> tuple[str, int, bytes]:
        return "127.0.0.1", server.port, server.token

    stream = HostStream(resolve, retry_for=60)
    update = bytes(512 * 1024)
    per_connection = hs.MAX_IN_FLIGHT_BYTES // len(update)
    applies = [asyncio.ensure_future(stream.apply(uuid.uuid4(), update, origin="o")) for _ in range(3 * per_connection)]
    await asyncio.wait_for(_until(lambda: server.connections and not next(iter(server.connections)).reading), 30)
    host_side = next(iter(server.connections))
    assert host_side.in_flight_bytes <= hs.MAX_IN_FLIGHT_BYTES + 256 * 1024 + len(update)  # one read's worth over
    assert SlowHost.applying < 3 * per_connection

    release.set()
    assert await asyncio.wait_for(asyncio.gather(*applies), 60) == [1] * (3 * per_connection)
    assert host_side.reading and host_side.in_flight_bytes == 0
    assert SlowHost.most < 3 * per_connection  # never all of them at once
    stream.close()
    await server.close()


async def test_a_full_buffer_written_at_once_takes_its_pending_timed_write_with_it() -> None:
    """Frames reaching `COALESCE_BYTES` leave at once: the timed write scheduled for the first of
    them is cancelled, so the next frames wait their own `flush_delay` (not a stale timer's)."""
    from actors.host_stream import COALESCE_BYTES, _GatewaySide

    transport = WriteRecorder()
    side = _GatewaySide(None)  # type: ignore[arg-type]
    side.connection_made(transport)  # type: ignore[arg-type]
    side.send(b"first")
    timer = side._flushing
    assert timer is not None and not timer.cancelled()
    side.send(b"x" * COALESCE_BYTES)
    assert len(transport.writes) == 1 and timer.cancelled() and side._flushing is None
    side.send(b"next")
    assert side._flushing is not None and side._flushing is not timer
