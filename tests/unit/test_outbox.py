"""The bus outbox: bounded in messages and bytes; channels that lost a message get RESYNC."""

from __future__ import annotations

import asyncio

from actors.broadcast import RESYNC, Outbox, Published


class Backend:
    """Records what the outbox ships; `down` makes a batch fail, `gate` holds the sender."""

    def __init__(self) -> None:
        self.sent: list[Published] = []
        self.down = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, batch: list[Published]) -> bool:
        await self.gate.wait()
        if self.down:
            return False
        self.sent.extend(batch)
        return True


def record_waits(monkeypatch) -> list[float]:
    """The outbox's non-zero sleeps, recorded and not slept (so pacing is seen without waiting)."""
    import actors.broadcast as broadcast

    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay: float) -> None:
        if delay:  # not settle()'s own
            waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(broadcast.asyncio, "sleep", recorded_sleep)
    return waits


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_beyond_its_bytes_the_oldest_are_dropped_and_their_channel_resyncs_to_every_node() -> None:
    backend = Backend()
    outbox = Outbox(backend.send, name="test", max_bytes=1000)
    outbox.put(("essay:a:doc", b"a" * 600, "node-1"))  # queued synchronously: the sender has not run
    outbox.put(("essay:b", b"b" * 300, None))
    outbox.put(("essay:b", b"c" * 300, None))
    await settle()
    assert backend.sent == [("essay:b", b"b" * 300, None), ("essay:b", b"c" * 300, None),
                            ("essay:a:doc", RESYNC, None)]
    outbox.close()


async def test_a_batch_the_backend_lost_makes_its_channels_resync() -> None:
    backend = Backend()
    outbox = Outbox(backend.send, name="test")
    backend.down = True
    outbox.put(("class:c", b"row", None))
    await settle()
    backend.down = False
    outbox.put(("class:c", b"next row", None))
    await settle()
    assert backend.sent == [("class:c", b"next row", None), ("class:c", RESYNC, None)]
    outbox.close()


async def test_paced_sends_leave_at_most_one_per_interval_and_the_first_at_once(monkeypatch) -> None:
    """`min_interval`: the first publish on a quiet bus goes at once; what queues while a send
    was recent waits out the interval and goes in one batch, in order."""
    waits = record_waits(monkeypatch)
    backend = Backend()
    calls: list[list[Published]] = []

    async def send(batch: list[Published]) -> bool:
        calls.append(list(batch))
        return await backend.send(batch)

    outbox = Outbox(send, name="test", min_interval=0.5)
    outbox.put(("class:c", b"1", None))
    await settle()
    assert calls == [[("class:c", b"1", None)]] and waits == []  # quiet: at once
    for n in (b"2", b"3", b"4"):
        outbox.put(("class:c", n, None))
    await settle()
    assert len(waits) == 1 and 0 < waits[0] <= 0.5  # recent send: waits out the interval
    assert calls[1:] == [[("class:c", b"2", None), ("class:c", b"3", None), ("class:c", b"4", None)]]
    outbox.close()


async def test_unpaced_outbox_never_waits(monkeypatch) -> None:
    waits = record_waits(monkeypatch)
    backend = Backend()
    outbox = Outbox(backend.send, name="test")
    for n in (b"1", b"2"):
        outbox.put(("class:c", n, None))
        await settle()
    assert waits == [] and len(backend.sent) == 2
    outbox.close()


async def test_a_full_batch_goes_without_waiting_out_the_interval(monkeypatch) -> None:
    """Pacing must not cap throughput: with a full batch waiting the outbox sends at once."""
    waits = record_waits(monkeypatch)
    backend = Backend()
    outbox = Outbox(backend.send, name="test", min_interval=0.5, batch=2)
    for n in range(5):  # queued before the sender runs: batches of 2, 2, then 1
        outbox.put(("class:c", str(n).encode(), None))
    await settle()
    assert [m for _, m, _ in backend.sent] == [b"0", b"1", b"2", b"3", b"4"]
    assert len(waits) == 1  # only before the last, partial batch
    outbox.close()
