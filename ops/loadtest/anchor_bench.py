"""Big non-ASCII essays on a shared host: what analysing one costs the other essays' acks.

One `EssayHost` in this process on a fresh SQLite store (as `host_bench.py`): essay B is typed
(one small update every 50 ms, each awaited like the stream's ack); meanwhile essay A gets a
Cyrillic text of `--chars` characters over REST's path (`set_text`), the host analyses it at
the pause, and its feedback (anchors resolved) is read until it is there. Reports B's ack
latency (from when each update was due) and the event loop's worst lag during that time, the time to A's feedback, and the
anchor view's build time alone (`resolve_anchor` on a fresh text version).

`--process off on` runs each size with the rules on a worker thread of the host process (off)
and in the host's rules-worker process (on, ESSAYCOACH_ANALYSIS_PROCESS), `--runs` times each,
alternating, and reports the worker's RSS and the load average around each run (the box is shared).

A/B against an older checkout: copy this file and `host_bench.py` into its ops/loadtest (the
script only uses actors/ APIs both have) and run it there as well:

    .venv/bin/python -m ops.loadtest.anchor_bench --chars 10000 40000 200000
    .venv/bin/python -m ops.loadtest.anchor_bench --chars 200000 --process off on --runs 5 --rounds 5

Results: ops/loadtest/ANCHOR_RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from pycrdt import Doc, Text

from actors.analysis.service import build_engine
from actors.analysis.worker import RulesWorker
from actors.broadcast import InMemoryBus
from actors.doc import EssayDoc, encode_anchor, resolve_anchor, text_to_update
from actors.feedback import settled_text
from actors.host import EssayHost
from actors.process_tuning import tune_gc
from ops.loadtest.host_bench import fresh_store, make_essays
from ops.loadtest.run import pct

CYRILLIC = "Школа учит нас думать, а дом учит нас жить. Учитель читает книгу, ученик пишет сочинение."


def cyrillic_essay(chars: int) -> str:
    """Cyrillic paragraphs, every tenth with an English sentence the rules flag."""
    paragraphs, size, n = [], 0, 0
    while size < chars:
        paragraphs.append(" ".join([CYRILLIC] * 4) + (" I beleive teh answer." if n % 10 == 0 else ""))
        size += len(paragraphs[-1]) + 1
        n += 1
    return "\n".join(paragraphs)[:chars]


def view_build_seconds(text: str) -> float:
    essay = EssayDoc()
    essay.apply_update(text_to_update(text))
    anchor = encode_anchor(essay, 0, 1)
    essay.apply_update(text_to_update("x"))  # a new text version: the next call rebuilds the view
    start = time.perf_counter()
    resolve_anchor(essay, anchor)
    return time.perf_counter() - start


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return round(kib / 1024, 1)


async def run_one(chars: int, timeout: float, process: bool = False, rounds: int = 1) -> dict[str, Any]:
    settings, engine, sessions = await fresh_store("anchor-bench-")
    big, typed = await make_essays(sessions, 2, per_account=2, classes_=1)
    worker = RulesWorker() if process else None
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), config=settings.host_config(),
                     analyzer=build_engine(settings.analysis_config(), worker=worker))
    await host.start()
    tune_gc()  # as the host's Ray shell does once the dictionary is loaded
    if worker is not None:
        await worker.call("pid")  # warm: its dictionary loaded, as in a host that has been up a while
    load_before = os.getloadavg()[0]
    owner = (await host.open(typed)).meta.owner_id
    doc = Doc()
    content = doc.get("content", type=Text)
    acks: list[float] = []
    lag = [0.0]
    done = asyncio.Event()

    async def typist() -> None:
        # An update is due every 50 ms; its latency counts from when it was due (a socket's frame
        # that arrives while the loop is blocked waits as long), to its durable ack.
        i, first = 0, time.perf_counter()
        while not done.is_set():
            due = first + 0.05 * i
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            before = doc.get_state()
            content.insert(len(content), f"w{i} ")
            i += 1
            await host.apply_update(typed, doc.get_update(before), author_id=owner, origin="b", live=True)
            acks.append(time.perf_counter() - due)

    async def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            lag[0] = max(lag[0], time.perf_counter() - start - 0.01)

    tasks = [asyncio.create_task(typist()), asyncio.create_task(probe())]
    await asyncio.sleep(0.5)
    feedback_after: list[float] = []
    for n in range(rounds):
        # Each round a new text (every paragraph changed): the whole essay is analysed again.
        text = cyrillic_essay(chars).replace("Школа", f"Школа {n}")[:chars] if n else cyrillic_essay(chars)
        started = time.perf_counter()
        await host.set_text(big, text, author_id=owner)
        live = host.essays[big]
        while time.perf_counter() - started < timeout:
            # A cheap look (no anchor resolving on a 200k-character text every 0.1 s, which no
            # client does): the run is done once the essay's items describe this text.
            if live.analyzed_text == settled_text(text) and live.items:
                feedback_after.append(time.perf_counter() - started)
                break
            await asyncio.sleep(0.02)
    done.set()
    await asyncio.gather(*tasks)
    current = await host.feedback(big)  # once, after the runs: the items resolve in the final text
    assert current["analyzed"] and current["items"], "the big essay's feedback is missing"
    await host.stop()
    worker_rss = rss_mib(worker.pid) if worker is not None else None
    if worker is not None:
        worker.close()
    await engine.dispose()
    return {
        "chars": chars, "process": process, "worker_rss_mib": worker_rss,
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)], "rounds": rounds,
        "feedback_after_s": [round(f, 2) for f in feedback_after] if len(feedback_after) == rounds else f"> {timeout}",
        "other_essay_ack_ms": {"n": len(acks), "p50": round(1000 * (pct(acks, 50) or 0), 1),
                               "p99": round(1000 * (pct(acks, 99) or 0), 1), "max": round(1000 * max(acks), 1)},
        "loop_lag_max_ms": round(1000 * lag[0], 1),
        "anchor_view_build_ms": round(1000 * view_build_seconds(cyrillic_essay(chars)), 1),
    }


async def bench(sizes: list[int], timeout: float, modes: list[bool] | None = None, runs: int = 1,
                rounds: int = 1) -> list[dict[str, Any]]:
    return [await run_one(chars, timeout, process, rounds) for chars in sizes for _ in range(runs)
            for process in (modes or [False])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, nargs="+", default=[10_000, 40_000, 200_000])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the big essay's feedback")
    parser.add_argument("--process", choices=["off", "on"], nargs="+", default=["off"],
                        help="rules on a worker thread (off) or in the rules-worker process (on)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each size and mode, alternating")
    parser.add_argument("--rounds", type=int, default=1, help="new texts given to A per run, each analysed whole")
    args = parser.parse_args()
    modes = [mode == "on" for mode in args.process]
    print(json.dumps(asyncio.run(bench(args.chars, args.timeout, modes, args.runs, args.rounds)), indent=2))


if __name__ == "__main__":
    main()
