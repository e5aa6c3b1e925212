"""serve_app.realtime.room: a typed update goes to the watchers on receipt only while the essay
surely has room for it, in order, and the room is forgotten with the essay's last writer."""

from __future__ import annotations

import uuid

from serve_app.realtime.room import EssayRoom, essay_rooms, join, leave


def test_unknown_room_waits_for_an_ack_then_fits_count_what_is_still_unanswered() -> None:
    room = EssayRoom()
    assert not room.fits(1, 10)  # no ack yet: the first update waits for its own
    room.tell((100, 1_000))
    assert room.fits(100, 1_000) and not room.fits(101, 10) and not room.fits(1, 1_001)
    room.handed_over(60, 600)
    assert room.fits(40, 400) and not room.fits(41, 10) and not room.fits(1, 401)
    room.answered(60, 600, (40, 400), handed_over=True)  # the host's room now includes it
    assert room.pending_chars == 0 and room.fits(40, 400) and not room.fits(41, 1)


def test_while_one_update_waits_for_its_ack_the_later_ones_wait_too() -> None:
    room = EssayRoom()
    room.tell((10, 1_000))
    room.deferred += 1  # too large to hand over now
    assert not room.fits(1, 1)  # fits alone, but the watchers must get the earlier one first
    room.answered(50, 100, None, handed_over=False)  # refused: never handed over
    assert room.deferred == 0 and room.fits(10, 100)


def test_the_room_is_shared_by_the_essays_writers_and_forgotten_with_the_last() -> None:
    class App:
        class state:  # noqa: N801 - the shape of Starlette's app.state
            pass

    rooms = essay_rooms(App)
    eid = uuid.uuid4()
    first, second = join(rooms, eid), join(rooms, eid)
    assert first is second and rooms[eid].writers == 2
    leave(rooms, eid, first)
    assert eid in rooms
    leave(rooms, eid, second)
    assert eid not in rooms and essay_rooms(App) is rooms
