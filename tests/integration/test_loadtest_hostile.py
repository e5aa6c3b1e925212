"""The loadtest's hostile clients (ops/loadtest/hostile.py) against a bare websockets server on
127.0.0.1: what a round leaves behind when it is cut off."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from ops.loadtest import hostile


def _seat(port: int) -> hostile.Seat:
    async def ticket() -> str:
        return "t"

    return hostile.Seat(ticket=ticket, doc_url=lambda t: f"ws://127.0.0.1:{port}/?ticket={t}",
                        trespass_url=lambda t: f"ws://127.0.0.1:{port}/?ticket={t}")


async def test_a_socket_cap_round_cut_off_by_its_timeout_closes_the_sockets_it_opened(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A round that runs out of time mid-way (here: while its cap + 6 sockets are open) must not hold
    them into the next round, where the server would count them against the per-user cap."""
    open_now: set[ServerConnection] = set()
    most = 0

    async def hold(ws: ServerConnection) -> None:
        nonlocal most
        open_now.add(ws)
        most = max(most, len(open_now))
        try:
            await ws.wait_closed()
        finally:
            open_now.discard(ws)

    monkeypatch.setattr(hostile, "ROUND_TIMEOUT", 0.5)  # socket_cap holds its sockets 2 s: cut off
    async with websockets.serve(hold, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]

        stats = hostile.Stats()
        client = hostile.HostileClient(0, _seat(port), stats, attacks=("socket_cap",), max_sockets=12)
        await client.run(time.perf_counter() + 1.5)
        for _ in range(100):
            if not open_now:
                break
            await asyncio.sleep(0.05)
        left_open = len(open_now)  # before the server's own shutdown closes them
    assert most == 12 + hostile.SOCKET_CAP_EXTRA  # the round did open its sockets (a server cap of 12)
    assert stats.outcomes["socket_cap"]["round timed out (0.5 s)"] == 1
    assert left_open == 0


async def test_a_client_s_first_socket_cap_round_waits_for_its_time() -> None:
    """`run.py` spreads the clients' first socket_cap rounds over the measured window: started at
    once, all of them fell in the warm-up."""
    opened_at: list[float] = []

    async def hold(ws: ServerConnection) -> None:
        opened_at.append(time.perf_counter())
        await ws.wait_closed()

    async with websockets.serve(hold, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        start = time.perf_counter()
        client = hostile.HostileClient(0, _seat(port), hostile.Stats(), attacks=("socket_cap",),
                                       socket_cap_at=start + 1.5)
        await client.run(start + 2.0)
    assert opened_at and min(opened_at) >= start + 1.5
