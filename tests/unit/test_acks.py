"""AckQueue: updates answered in any order are acked in the order they came; a failure ends the
socket's wait for its next frame."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.realtime.acks import AckBatch, AckQueue


async def answer(gate: asyncio.Future[None]) -> int:
    await gate
    return 1


async def test_acks_follow_arrival_order_whatever_order_the_host_answers_in() -> None:
    sent: list[int] = []
    acks = AckQueue(sent.append)
    loop = asyncio.get_running_loop()
    gates = [loop.create_future() for _ in range(3)]
    for gate in gates:
        acks.add(answer(gate))
    gates[2].set_result(None)
    gates[1].set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sent == [] and acks.waiting == 3  # the first is not durable: nothing may be acked
    gates[0].set_result(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert sent == [3] and acks.acked == 3 and acks.waiting == 0  # one ack covers all three


async def test_a_failed_update_interrupts_the_wait_for_the_next_frame_with_its_error() -> None:
    sent: list[int] = []
    acks = AckQueue(sent.append)
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()

    async def refused() -> int:
        await gate
        raise ValueError("refused")

    acks.add(refused())
    never: asyncio.Future[bytes] = loop.create_future()  # the client sends nothing more
    reading = asyncio.ensure_future(acks.receive(never))
    await asyncio.sleep(0)
    gate.set_result(None)
    with pytest.raises(ValueError, match="refused"):
        await reading
    assert never.cancelled() and sent == []
    with pytest.raises(ValueError):  # and the socket reads nothing further
        await acks.receive(loop.create_future())


async def test_room_waits_for_the_oldest_once_the_limit_is_reached() -> None:
    acks = AckQueue(lambda n: None, limit=2)
    loop = asyncio.get_running_loop()
    gates = [loop.create_future() for _ in range(2)]
    for gate in gates:
        acks.add(answer(gate))
    room = asyncio.ensure_future(acks.room())
    await asyncio.sleep(0)
    assert not room.done()
    gates[0].set_result(None)
    await asyncio.wait_for(room, 5)
    assert acks.waiting == 1


async def test_a_cancelled_socket_task_is_not_mistaken_for_a_failure() -> None:
    acks = AckQueue(lambda n: None)
    loop = asyncio.get_running_loop()
    acks.add(answer(loop.create_future()))
    reading = asyncio.ensure_future(acks.receive(loop.create_future()))
    await asyncio.sleep(0)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert acks.failure is None


def test_an_update_settled_by_its_answer_is_acked_there_and_then_in_order() -> None:
    """The host stream settles each update from its receive callback: the ack is written inside
    that call (no task, no loop turn), and never before every earlier update is durable."""
    sent: list[int] = []
    acks = AckQueue(sent.append)
    first, second, third = acks.sent(), acks.sent(), acks.sent()
    third.settle()
    second.settle()
    assert sent == [] and acks.waiting == 3
    first.settle()
    assert sent == [3] and acks.waiting == 0
    first.settle(ValueError("late"))  # a second answer changes nothing
    assert acks.failure is None and sent == [3]


async def test_a_failed_answer_ends_the_sockets_read_without_a_task_of_its_own() -> None:
    acks = AckQueue(lambda n: None)
    loop = asyncio.get_running_loop()
    update = acks.sent()
    never: asyncio.Future[bytes] = loop.create_future()
    others = asyncio.all_tasks()
    reading = asyncio.ensure_future(acks.receive(never))
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - others == {reading}  # the read is the socket task's own
    update.settle(ValueError("refused"))
    with pytest.raises(ValueError, match="refused"):
        await reading
    assert never.cancelled()


async def test_a_socket_task_cancelled_as_its_update_fails_still_ends_cancelled() -> None:
    acks = AckQueue(lambda n: None)
    update = acks.sent()
    reading = asyncio.ensure_future(acks.receive(asyncio.get_running_loop().create_future()))
    await asyncio.sleep(0)
    update.settle(ValueError("refused"))  # we cancel the read for the failure...
    reading.cancel()  # ...and the server cancels the socket's task too
    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_room_opens_when_an_answer_settles_the_oldest() -> None:
    acks = AckQueue(lambda n: None, limit=2)
    oldest, _ = acks.sent(), acks.sent()
    room = asyncio.ensure_future(acks.room())
    await asyncio.sleep(0)
    assert not room.done()
    oldest.settle()
    await asyncio.wait_for(room, 5)
    assert acks.waiting == 1


async def test_acks_released_in_one_loop_turn_go_out_at_its_end_as_one_frame_per_socket() -> None:
    """n is cumulative: the three updates one group commit made durable need one ack frame."""
    written: list[tuple[str, int]] = []
    batch = AckBatch(lambda count, size, seconds: None)
    first = AckQueue(lambda n: written.append(("first", n)), batch=batch)
    second = AckQueue(lambda n: written.append(("second", n)), batch=batch)
    entries = [first.sent() for _ in range(3)]
    other = second.sent()
    for entry in entries:
        entry.settle()
    other.settle()
    assert written == [] and first.acked == 3 and first.waiting == 0  # counted now, written at the turn's end
    await asyncio.sleep(0)
    assert written == [("first", 3), ("second", 1)]
    later = first.sent()
    later.settle()
    await asyncio.sleep(0)
    assert written[-1] == ("first", 4)


async def test_a_turns_acked_updates_are_recorded_once_and_before_their_acks_are_written() -> None:
    """A client that has read its ack finds the update counted."""
    events: list[object] = []
    batch = AckBatch(lambda count, size, seconds: events.append((count, size, seconds)))
    acks = AckQueue(lambda n: events.append(n), batch=batch)
    for size, seconds in ((10, 0.5), (20, 0.25)):
        entry = acks.sent()
        batch.count(size, seconds)
        entry.settle()
    await asyncio.sleep(0)
    assert events == [(2, 30, [0.5, 0.25]), 2]


async def test_a_failure_writes_the_ack_of_what_was_durable_before_it_at_once() -> None:
    """The socket closes for the failure: the updates durable before it are acked first, not
    after the close."""
    written: list[int] = []
    acks = AckQueue(written.append, batch=AckBatch(lambda count, size, seconds: None))
    durable, refused = acks.sent(), acks.sent()
    durable.settle()
    refused.settle(ValueError("refused"))
    assert written == [1] and isinstance(acks.failure, ValueError)
    await asyncio.sleep(0)
    assert written == [1]


async def test_one_sockets_failed_ack_write_does_not_stop_the_others_acks() -> None:
    """A turn's acks are written together: one socket's write raising is logged, and the other
    sockets get theirs this turn and every turn after."""
    written: list[tuple[str, int]] = []
    batch = AckBatch(lambda count, size, seconds: None)

    def broken(n: int) -> None:
        raise RuntimeError("the socket's queue is gone")

    failing = AckQueue(broken, batch=batch)
    healthy = AckQueue(lambda n: written.append(("healthy", n)), batch=batch)
    for _ in range(3):
        failing.sent().settle()
        healthy.sent().settle()
        await asyncio.sleep(0)
    assert written == [("healthy", 1), ("healthy", 2), ("healthy", 3)]


async def test_an_ack_due_this_turn_is_written_at_once_when_the_socket_closes() -> None:
    """The socket closing for another reason (a rate limit, a deleted essay) writes the ack of
    what is durable before its close frame, not at the turn's end when its queue has stopped."""
    written: list[int] = []
    acks = AckQueue(written.append, batch=AckBatch(lambda count, size, seconds: None))
    acks.sent().settle()
    acks.sent().settle()
    assert written == []
    acks.write_due()
    assert written == [2]
    await asyncio.sleep(0)
    assert written == [2]  # not again at the turn's end
    acks.write_due()
    assert written == [2]
