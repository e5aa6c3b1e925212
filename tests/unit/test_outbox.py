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
