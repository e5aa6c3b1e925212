"""A writing doc socket keeps reading while its earlier updates wait for their commit, and acks
them in order (serve_app.realtime.acks), over real websockets with in-process hosts, reached
directly or over the host stream as under Ray (`streams`: the ack then comes from the stream's
receive callback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from pycrdt import create_sync_message

from actors.host import UpdateRejected
from ops.loadtest.yclient import YClient
from tests.fakes import class_essay

Apply = Callable[..., Awaitable[int]]


@pytest.fixture(params=[False, True], ids=["direct", "stream"])
def streams(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@contextlib.asynccontextmanager
async def classroom(settings: Any, streams: bool = False) -> AsyncIterator[dict[str, Any]]:
    from serve_app.app import create_app
    from serve_app.hosts import InProcessHosts
    from tests.conftest import serving

    application = create_app(settings, hosts_factory=lambda s, ctx: InProcessHosts(s, ctx, streams=streams))
    async with serving(application) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        teacher, student, essay = await class_essay(client)

        async def url(account: Any) -> str:
            r = await client.post("/api/v1/auth/ws-ticket", headers=account.headers)
            return f"ws://{server}/ws/essays/{essay['id']}/doc?ticket={r.json()['ticket']}"

        yield {"hosts": application.state.ctx.hosts.host_objects, "client": client, "essay": essay,
               "student": student, "teacher": teacher, "url": url}


@contextlib.contextmanager
def host_applies(hosts: list[Any], make: Callable[[Apply], Apply], *gates: asyncio.Event) -> Any:
    """Every host's `apply_update` replaced by `make(original)` for the block; `gates` are opened
    when it ends (however it ends), so no held update outlives the test."""
    for host in hosts:
        host.apply_update = make(host.apply_update)
    try:
        yield
    finally:
        for gate in gates:
            gate.set()
        for host in hosts:
            del host.apply_update


def refusing_once(refuse: asyncio.Event) -> Callable[[Apply], Apply]:
    """For `host_applies`: every update is refused by the host once `refuse` is set."""
    def refusing(apply: Apply) -> Apply:
        async def refuse_later(*args: Any, **kwargs: Any) -> int:
            await refuse.wait()
            raise UpdateRejected("refused by the host")
        return refuse_later
    return refusing


async def sync_round_trip(client: YClient) -> None:
    """A sync step 1 and its answer: every frame the server queued for `client` before it is in."""
    client.synced.clear()
    await client.send_raw(create_sync_message(client.doc))
    await asyncio.wait_for(client.synced.wait(), 10)


async def test_teacher_sees_later_typing_while_an_earlier_update_awaits_its_commit(settings, streams) -> None:
    async with classroom(settings, streams) as room:
        writer = await YClient(await room["url"](room["student"])).connect()
        teacher = await YClient(await room["url"](room["teacher"])).connect()
        await writer.wait_acked()  # its sync step 2 counts too
        before = writer.acked
        commits = asyncio.Event()

        def held(apply: Apply) -> Apply:
            async def apply_when_allowed(*args: Any, **kwargs: Any) -> int:
                await commits.wait()
                return await apply(*args, **kwargs)
            return apply_when_allowed

        with host_applies(room["hosts"], held, commits):
            writer.type("one ")
            writer.type("two")
            # Neither update is durable, yet the second reached the teacher: the socket read it.
            assert await teacher.wait_text(lambda t: t == "one two", timeout=10)
            await sync_round_trip(writer)
            assert writer.acked == before
            commits.set()
            await writer.wait_acked(before + 2)
        r = await room["client"].get(f"/api/v1/essays/{room['essay']['id']}", headers=room["student"].headers)
        assert r.json()["text"] == "one two"
        await writer.close()
        await teacher.close()


async def test_an_ack_never_covers_an_earlier_update_that_is_not_durable(settings, streams) -> None:
    async with classroom(settings, streams) as room:
        writer = await YClient(await room["url"](room["student"])).connect()
        await writer.wait_acked()
        before = writer.acked
        first_may_commit, second_done = asyncio.Event(), asyncio.Event()
        calls = 0

        def first_held(apply: Apply) -> Apply:
            async def apply_in_order(*args: Any, **kwargs: Any) -> int:
                nonlocal calls
                calls += 1
                if calls == 1:
                    await first_may_commit.wait()
                    return await apply(*args, **kwargs)
                seq = await apply(*args, **kwargs)
                second_done.set()
                return seq
            return apply_in_order

        with host_applies(room["hosts"], first_held, first_may_commit):
            writer.type("first ")
            writer.type("second")
            await asyncio.wait_for(second_done.wait(), 10)  # durable, behind one that is not
            await sync_round_trip(writer)
            assert writer.acked == before
            first_may_commit.set()
            await writer.wait_acked(before + 2)
            assert writer.acked == before + 2
        await writer.close()


async def test_a_refused_update_closes_the_socket_while_it_waits_for_more(settings, streams) -> None:
    async with classroom(settings, streams) as room:
        writer = await YClient(await room["url"](room["student"])).connect()
        writer.type("fine")
        await writer.wait_acked()
        before = writer.acked
        refuse = asyncio.Event()

        with host_applies(room["hosts"], refusing_once(refuse), refuse):
            writer.type(" refused")
            await sync_round_trip(writer)  # the socket is reading again, the update still out
            refuse.set()
            assert await writer.wait_closed() == 4400
        assert writer.acked == before


async def test_typing_reaches_the_teacher_and_host_from_the_receive_callback_once_and_is_stored(
        settings, streams, monkeypatch) -> None:
    from serve_app.realtime.receipt import ReceiptFanout

    handled: list[bool] = []
    on_message = ReceiptFanout.on_message

    def spied(self: ReceiptFanout, message: Any, received_at: float) -> Any:
        passed_on = on_message(self, message, received_at)
        handled.append(passed_on is None)
        return passed_on

    monkeypatch.setattr(ReceiptFanout, "on_message", spied)
    async with classroom(settings, streams) as room:
        writer = await YClient(await room["url"](room["student"])).connect()
        teacher = await YClient(await room["url"](room["teacher"])).connect()
        await writer.wait_acked()
        await sync_round_trip(teacher)
        await sync_round_trip(writer)  # a step 1: the hook passes it on to the task
        assert handled[-1:] == [False]
        handled.clear()
        frames = teacher.updates_received
        for word in ("one ", "two ", "three"):
            writer.type(word)
            await writer.wait_acked()
        assert await teacher.wait_text(lambda t: t == "one two three", timeout=10)
        assert handled == [True, True, True]  # each handled in the callback, the task never woken for it
        assert teacher.updates_received - frames == 3  # and sent to the teacher once
        r = await room["client"].get(f"/api/v1/essays/{room['essay']['id']}", headers=room["student"].headers)
        assert r.json()["text"] == "one two three"
        await writer.close()
        await teacher.close()


async def test_typing_sent_back_to_back_reaches_the_teacher_in_order(settings, streams) -> None:
    """Updates sent without waiting mix both paths (on receipt while the socket is idle, else from
    its task): the teacher must get them in the order typed. Yjs would converge from any order, so
    the check is what the teacher's text was after each frame: a frame ahead of its predecessor
    stays pending and the text would not grow by its word."""
    words = [f"w{i} " for i in range(12)]
    async with classroom(settings, streams) as room:
        writer = await YClient(await room["url"](room["student"])).connect()
        seen: list[str] = []
        teacher = YClient(await room["url"](room["teacher"]), on_update=lambda: seen.append(str(teacher.text)))
        await teacher.connect()
        await writer.wait_acked()
        await sync_round_trip(teacher)
        seen.clear()
        for word in words:
            writer.type(word)
        assert await teacher.wait_text(lambda t: t == "".join(words), timeout=10)
        assert seen == ["".join(words[:i + 1]) for i in range(len(words))]
        await writer.wait_acked()
        await writer.close()
        await teacher.close()


async def test_a_refused_update_closes_the_socket_when_the_client_sends_nothing_more(settings, streams) -> None:
    """The update went to the host from the receive callback while the socket's task waited for
    a frame with nothing at the host: its refusal still ends that wait and closes the socket."""
    async with classroom(settings, streams) as room:
        writer = await YClient(await room["url"](room["student"])).connect()
        writer.type("fine")
        await writer.wait_acked()
        await sync_round_trip(writer)  # the task now waits for a frame, nothing at the host
        refuse = asyncio.Event()

        with host_applies(room["hosts"], refusing_once(refuse), refuse):
            writer.type(" refused")
            await asyncio.sleep(0.2)
            refuse.set()
            assert await writer.wait_closed() == 4400


async def test_an_update_the_host_refuses_as_too_large_never_reaches_the_watchers(settings, streams) -> None:
    """Typing reaches the teachers on receipt only while the essay surely has room for it: one
    over the character limit is refused (4413) and no watcher ever sees it; what fits still
    reaches them before its commit."""
    limited = settings.model_copy(update={"max_essay_chars": 60})
    async with classroom(limited, streams) as room:
        writer = await YClient(await room["url"](room["student"])).connect()
        teacher = await YClient(await room["url"](room["teacher"])).connect()
        await writer.wait_acked()  # its sync step 2's ack tells the essay's room
        writer.type("Привет, 🙂 мир. ")
        await writer.wait_acked(writer.acked + 1)
        await teacher.wait_text(lambda text: text == "Привет, 🙂 мир. ")
        writer.type("x" * 60)  # over the limit: the host refuses it
        assert await writer.wait_closed() == 4413
        await sync_round_trip(teacher)
        assert str(teacher.text) == "Привет, 🙂 мир. "  # the refused text never reached the teacher
        stored = (await room["client"].get(f"/api/v1/essays/{room['essay']['id']}",
                                           headers=room["student"].headers)).json()
        assert stored["text"] == str(teacher.text)
