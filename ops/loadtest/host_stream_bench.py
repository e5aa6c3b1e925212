"""The host stream's transport: the raw length-prefixed TCP protocol (actors/host_stream.py) vs
the same requests as binary messages on a websockets connection, both ends in this process.

One connection; `UPDATES` typing-sized updates (the Yjs update of one keystroke, ~30 bytes, plus
the stream's header) with at most `IN_FLIGHT` unanswered at once, answered by a host that applies
nothing (what is measured is the transport: framing, writes, reads, wake-ups). Printed per run:
updates per second and CPU microseconds per update (both ends, this process), and the median
and range over `RUNS` runs (the machine may be shared: quote the spread).

    PYTHONPATH=$PWD python -m ops.loadtest.host_stream_bench [--runs 5] [--updates 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
import uuid
from typing import Any

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from actors.host_stream import (
    OK,
    HostStream,
    StreamServer,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

UPDATE = bytes(30)
IN_FLIGHT = 200


class NullHost:
    """Answers every update at once (seq 1): the transport is all that is left to measure."""

    async def apply_update(self, essay_id: uuid.UUID, update: bytes, **kwargs: Any) -> int:
        return 1


async def _drive(apply: Any, updates: int) -> tuple[float, float]:
    essay = uuid.uuid4()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with gate:
            await apply(essay, UPDATE)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(updates)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def raw_tcp(updates: int) -> tuple[float, float]:
    server = StreamServer(NullHost())  # type: ignore[arg-type]
    await server.start("127.0.0.1")

    async def resolve() -> tuple[str, int, bytes]:
        return "127.0.0.1", server.port, server.token

    stream = HostStream(resolve)
    await stream.apply(uuid.uuid4(), UPDATE, origin="bench")  # connected before timing

    async def apply(essay: uuid.UUID, update: bytes) -> int:
        return await stream.apply(essay, update, author_id=essay, origin="bench", node="gw-1")

    try:
        return await _drive(apply, updates)
    finally:
        stream.close()
        await server.close()


async def over_websockets(updates: int) -> tuple[float, float]:
    """The same request and answer encodings as binary websocket messages; a task per request
    on the host as the raw stream does, and a reader task resolving answers by id."""
    host = NullHost()

    async def handler(ws: Any) -> None:
        async def answer(frame: bytes) -> None:
            request_id, essay, update, kwargs = decode_request(frame)
            seq = await host.apply_update(essay, update, **kwargs)
            await ws.send(encode_response(request_id, OK, seq))

        tasks = set()
        async for frame in ws:
            task = asyncio.ensure_future(answer(frame))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=4 * 1024 * 1024) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=4 * 1024 * 1024) as ws:
            pending: dict[int, asyncio.Future[int]] = {}
            next_id = 0

            async def reader() -> None:
                async for message in ws:
                    request_id, _status, value = decode_response(message)  # type: ignore[arg-type]
                    pending.pop(request_id).set_result(int(value))

            reading = asyncio.ensure_future(reader())

            async def apply(essay: uuid.UUID, update: bytes) -> int:
                nonlocal next_id
                next_id += 1
                fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                pending[next_id] = fut
                await ws.send(encode_request(next_id, essay, update, author_id=essay, origin="bench", live=True,
                                             node="gw-1"))
                return await fut

            try:
                await apply(uuid.uuid4(), UPDATE)
                return await _drive(apply, updates)
            finally:
                reading.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--updates", type=int, default=20_000)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"raw TCP": [], "websockets": []}
    for _ in range(args.runs):  # interleaved, so a busy spell hits both alike
        results["raw TCP"].append(await raw_tcp(args.updates))
        results["websockets"].append(await over_websockets(args.updates))
    out = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}",
           "python": platform.python_version(), "websockets": websockets.__version__,
           "updates": args.updates, "in_flight": IN_FLIGHT, "runs": {}}
    for name, runs in results.items():
        rates = [args.updates / wall for wall, _ in runs]
        cpu_us = [cpu / args.updates * 1e6 for _, cpu in runs]
        out["runs"][name] = {"updates_per_s": [round(r) for r in rates], "cpu_us_per_update": [round(c, 1) for c in cpu_us]}
        print(f"{name:11s} updates/s median {statistics.median(rates):8.0f} (range {min(rates):.0f}-{max(rates):.0f}); "
              f"CPU us/update median {statistics.median(cpu_us):6.1f} (range {min(cpu_us):.1f}-{max(cpu_us):.1f})")
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
