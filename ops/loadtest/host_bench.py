"""The essay host alone: CPU per typed update, without Ray, sockets or the network.

`run.py` runs the whole service and its clients on one 2-core machine, where a saturated box
moves latency by half between runs. This drives one `EssayHost` in this process as its stream from
the Gateways does (`actors.host_stream`: each typed update applied in its own task, answered once
its group commit lands), with run.py's typing model and text, on a fresh SQLite
store, and reports what the host's own work costs: process CPU per update (apply, group commit,
dashboard rows, tier-1 rules, compaction) and the time from an update's arrival to its ack.
Stable to a few percent between runs, so a change to the host's hot path can be measured here
before the full benchmark; `py-spy record -p PID` on it shows where the time goes.

    .venv/bin/python -m ops.loadtest.host_bench --typists 1000 --seconds 20
    .venv/bin/python -m ops.loadtest.host_bench --shape continuous --typists 300 --seconds 30
    .venv/bin/python -m ops.loadtest.host_bench --data-key ...   # essay text sealed at rest
    .venv/bin/python -m ops.loadtest.host_bench --shape continuous --big-essays 10 --text cyrillic
    .venv/bin/python -m ops.loadtest.host_bench --shape continuous \
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/hb_scratch   # PostgreSQL: emptied first

`tier1_interval_s`: tier 1's reruns per essay while typing goes on, stretched while the host is
busy (`actors.pacing`). Both report the event loop's lag (a 5 ms sleep's lateness: p50/p99/max and a histogram), which
is where a stall of the host shows before it shows in the full benchmark's tails.

`ESSAYCOACH_*` settings from the environment apply (e.g. ESSAYCOACH_COMMIT_INTERVAL_MS).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from actors.analysis.service import build_engine
from actors.broadcast import InMemoryBus
from actors.host import EssayHost
from actors.process_tuning import TRIM_SECONDS, release_free_memory, tune_gc
from db.crypto import new_key
from db.engine import make_engine, make_sessionmaker
from db.migrate import upgrade
from db.models import User
from db.repositories import classes, essays
from ops.loadtest import corpus as corpora
from ops.loadtest.run import CLASS_SIZE, big_fill_chars, continuous_gap, pct, type_chunk, type_word, word_start
from serve_app.settings import Settings

NODE = "bench-gateway"  # the bus node of the one simulated Gateway (its sockets follow every essay)


def typing_schedule(essays_: int, seconds: float, seed: int, shape: str = "bursts", *, corpus: str = corpora.LATIN,
                    big: int = 0, fill_chars: int = 0) -> tuple[list[tuple[float, int, bytes]], dict[int, bytes]]:
    """(time, essay index, update) for every update typed in `seconds`, in time order, made
    before the clock starts, and the pastes of the first `big` essays (index -> an update
    inserting `fill_chars` characters of `corpus`, applied before the clock starts; the typing
    goes on after them). `bursts`: run.py's default model (bursts exp(mean 12 s) of an update
    (`type_chunk`) every 400-600 ms; pauses exp(mean 3 s)). `continuous`: run.py's continuous
    shape (a word every 0.5 s, 5% of gaps 3 s, never a longer pause)."""
    rng = random.Random(seed)
    events: list[tuple[float, int, bytes]] = []
    pastes: dict[int, bytes] = {}
    paste = corpora.fill(corpus, fill_chars)
    for index in range(essays_):
        doc = Doc()
        text = doc.get("content", type=Text)
        updates: list[bytes] = []
        doc.observe(lambda event, out=updates: out.append(event.update))
        if index < big and paste:
            text.insert(0, paste)
            pastes[index] = updates[-1]
        cursor = rng.randrange(len(corpus))
        t = rng.uniform(0, 1.0)
        if shape == "continuous":
            cursor = word_start(cursor, corpus)
            while t < seconds:
                cursor = type_word(doc, text, cursor, corpus)
                events.append((t, index, updates[-1]))
                t += continuous_gap(rng)
            continue
        while t < seconds:
            burst_end = t + rng.expovariate(1 / 12)
            while t < min(burst_end, seconds):
                cursor = type_chunk(doc, text, cursor, rng, corpus)
                events.append((t, index, updates[-1]))
                t += rng.uniform(0.4, 0.6)
            t += rng.expovariate(1 / 3)
    events.sort(key=lambda e: e[0])
    return events, pastes


async def make_essays(sessions: Any, n: int, per_account: int = 10, classes_: int = 30) -> list[uuid.UUID]:
    """`n` essays of `n / per_account` students, spread over `classes_` classes of one teacher."""
    async with sessions() as session:
        teacher = User(email="teacher@bench.test", name="T", role="teacher", password_hash="x")
        session.add(teacher)
        await session.flush()
        class_ids = [(await classes.create(session, name=f"c{j}", teacher_id=teacher.id, join_code=f"J{j:05d}")).id
                     for j in range(classes_)]
        ids: list[uuid.UUID] = []
        for a in range(-(-n // per_account)):
            student = User(email=f"s{a}@bench.test", name=f"S{a}", role="student", password_hash="x")
            session.add(student)
            await session.flush()
            for _ in range(min(per_account, n - len(ids))):
                essay = await essays.create(session, owner_id=student.id, title="t", assignment_id=None,
                                            class_id=class_ids[len(ids) % classes_])
                ids.append(essay.id)
        await session.commit()
    return ids


class Driver:
    """Hands updates to the host as its stream server does: each `apply_update` in its own task."""

    def __init__(self, host: EssayHost, owners: dict[uuid.UUID, uuid.UUID]) -> None:
        self.host, self.owners = host, owners
        # Times in two arrays of floats, not a tuple per ack: a tuple is a container the young
        # GC generation tracks, and the bench's own would be a third of what each collection
        # traversed (the host keeps nothing per update).
        self.arrived, self.acked = array("d"), array("d")
        self.failed = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def arrive(self, essay_id: uuid.UUID, update: bytes) -> None:
        task = asyncio.ensure_future(self._apply(time.perf_counter(), essay_id, update))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _apply(self, arrived: float, essay_id: uuid.UUID, update: bytes) -> None:
        try:
            await self.host.apply_update(essay_id, update, author_id=self.owners[essay_id], origin="o",
                                         live=True, node=NODE)
        except Exception:
            self.failed += 1
        else:
            self.arrived.append(arrived)
            self.acked.append(time.perf_counter())


LAG_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500)


class LagProbe:
    """How late a short sleep on the host's event loop wakes: every stall of the loop (a long
    callback: a commit, a compaction batch, tier 1, a collection) delays every ack behind it."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.started, self.late = array("d"), array("d")  # (as `Driver`'s times)
        self.running = True

    async def run(self) -> None:
        while self.running:
            t = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.late.append(time.perf_counter() - t - self.interval)
            self.started.append(t)

    def report(self, since: float) -> dict[str, Any]:
        late = [d for t, d in zip(self.started, self.late) if t >= since]
        histogram: dict[str, int] = {}
        low = 0
        for high in (*LAG_BUCKETS_MS, None):
            label = f"{low}-{high}" if high is not None else f">={low}"
            histogram[label] = sum(1 for d in late if low <= d * 1000 < (high if high is not None else float("inf")))
            low = high or low
        return {"probe_ms": self.interval * 1000, "samples": len(late),
                "p50_ms": round(1000 * (pct(late, 50) or 0), 2), "p99_ms": round(1000 * (pct(late, 99) or 0), 2),
                "p999_ms": round(1000 * (pct(late, 99.9) or 0), 2), "max_ms": round(1000 * max(late, default=0), 2),
                "histogram_ms": histogram}


class Pauses:
    """Garbage collections (by generation) and `malloc_trim` calls, timed: the host process's
    own pauses besides its callbacks (the Ray shell tunes GC and trims every 10 s; so does this)."""

    def __init__(self) -> None:
        self.gc: dict[int, list[float]] = {0: [], 1: [], 2: []}
        # The same collections' CPU time (this thread's: a loaded machine stretches the wall
        # time of each, not this) and the unreachable objects each freed.
        self.gc_cpu: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.gc_freed: dict[int, int] = {0: 0, 1: 0, 2: 0}
        self.trims: list[float] = []
        self._gc_started = self._gc_cpu_started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started, self._gc_cpu_started = time.perf_counter(), time.thread_time()
        else:
            self.gc[info["generation"]].append(time.perf_counter() - self._gc_started)
            self.gc_cpu[info["generation"]].append(time.thread_time() - self._gc_cpu_started)
            self.gc_freed[info["generation"]] += info["collected"]

    async def trim_periodically(self, seconds: float = TRIM_SECONDS) -> None:
        while True:
            await asyncio.sleep(seconds)
            t = time.perf_counter()
            if not release_free_memory():
                return
            self.trims.append(time.perf_counter() - t)

    def report(self) -> dict[str, Any]:
        def summary(values: list[float]) -> dict[str, Any]:
            return {"count": len(values), "max_ms": round(1000 * max(values, default=0), 2),
                    "total_ms": round(1000 * sum(values), 1)}
        def cpu(values: list[float]) -> dict[str, Any]:
            return {"cpu_max_ms": round(1000 * max(values, default=0), 2), "cpu_total_ms": round(1000 * sum(values), 1)}
        return {**{f"gc_gen{g}": {**summary(v), **cpu(self.gc_cpu[g]), "freed": self.gc_freed[g]}
                   for g, v in self.gc.items()},
                "malloc_trim": summary(self.trims)}


async def fresh_store(prefix: str = "host-bench-", *, sealed: bool = False,
                      database_url: str = "") -> tuple[Settings, Any, Any]:
    """(settings, database engine, sessions) of a migrated SQLite store in a new temp dir; with
    `sealed`, essay text and the update log are encrypted at rest under a fresh data key. With
    `database_url` (PostgreSQL) that database instead, emptied first (its `public` schema dropped)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    url = database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    if database_url:
        await empty_database(database_url)
    await asyncio.to_thread(upgrade, url)
    settings = Settings(database_url=url, var_dir=workdir, jwt_secret="bench-" + "x" * 40, dev_mode=False,
                        ai_provider="local", data_key=new_key() if sealed else "")  # type: ignore[call-arg]
    engine = make_engine(url, keyring=settings.keyring)
    return settings, engine, make_sessionmaker(engine)


async def empty_database(url: str) -> None:
    """Drop everything in the PostgreSQL database at `url` (its `public` schema), for a fresh run."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            await conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await engine.dispose()


def tier1_intervals(intervals: array[float], base: float) -> dict[str, float]:
    """Tier 1's interval while typing goes on, as sampled: mean, max and the share of samples
    stretched over `base` (the host was busy: `actors.pacing`)."""
    return {"mean": round(sum(intervals) / max(1, len(intervals)), 2), "max": round(max(intervals, default=0), 2),
            "stretched_share": round(sum(1 for i in intervals if i > base) / max(1, len(intervals)), 2)}


async def bench(typists: int, seconds: float, warmup: float, seed: int, shape: str = "bursts",
                sealed: bool = False, text: str = "latin", big_essays: int = 0,
                database_url: str = "") -> dict[str, Any]:
    settings, engine, sessions = await fresh_store(sealed=sealed, database_url=database_url)
    if shape == "continuous":  # one account per student, classes of 30
        ids = await make_essays(sessions, typists, per_account=1, classes_=-(-typists // CLASS_SIZE))
    else:
        ids = await make_essays(sessions, typists)
    fill_chars = big_fill_chars(warmup, seconds) if big_essays else 0
    schedule, pastes = typing_schedule(typists, warmup + seconds, seed, shape, corpus=corpora.corpus(text),
                                       big=big_essays, fill_chars=fill_chars)
    host = EssayHost(sessions=sessions, bus=InMemoryBus(), config=settings.host_config(),
                     analyzer=build_engine(settings.analysis_config()))
    await host.start()
    owners: dict[uuid.UUID, uuid.UUID] = {}
    for essay_id in ids:
        await host.attach(essay_id, node=NODE)  # one document socket each, on the simulated Gateway
        owners[essay_id] = host.essays[essay_id].meta.owner_id
    for index, paste in pastes.items():  # pasted before the clock starts, as run.py's --big-essays
        await host.apply_update(ids[index], paste, author_id=owners[ids[index]], origin="o", live=False, node=NODE)
    for class_id in {a.meta.class_id for a in host.essays.values()}:
        await host.watch(f"class:{class_id}", 1)  # every teacher's dashboard is open
    driver = Driver(host, owners)
    probe = LagProbe()
    probe_task = asyncio.ensure_future(probe.run())
    pauses = Pauses()
    tune_gc()  # as the host's Ray shell does
    gc.callbacks.append(pauses.on_gc)
    trim_task = asyncio.ensure_future(pauses.trim_periodically())

    start = time.perf_counter()
    measured_from = start + warmup
    cpu_at_window: float | None = None
    updates_in_window = 0
    intervals = array("d")  # tier 1's interval while typing goes on (actors.pacing), every 100 updates
    for at, index, update in schedule:
        now = time.perf_counter()
        if start + at > now:
            await asyncio.sleep(start + at - now)
        if cpu_at_window is None and time.perf_counter() >= measured_from:
            cpu_at_window, wall_at_window = time.process_time(), time.perf_counter()
        driver.arrive(ids[index], update)
        if cpu_at_window is not None:
            updates_in_window += 1
            if host.scheduler is not None and updates_in_window % 100 == 0:
                intervals.append(host.scheduler.pacing.interval)
    while driver.tasks:
        await asyncio.gather(*driver.tasks)
    probe.running = False
    await probe_task
    trim_task.cancel()
    gc.callbacks.remove(pauses.on_gc)
    assert cpu_at_window is not None
    cpu, wall = time.process_time() - cpu_at_window, time.perf_counter() - wall_at_window
    await host.stop()
    await engine.dispose()
    latencies = [acked - arrived for arrived, acked in zip(driver.arrived, driver.acked) if arrived >= measured_from]
    return {
        "typists": typists, "seconds": seconds, "updates": updates_in_window,
        "updates_per_s": round(updates_in_window / wall, 1),
        "cpu_cores": round(cpu / wall, 3),
        "cpu_ms_per_update": round(1000 * cpu / max(1, updates_in_window), 4),
        "shape": shape, "text": text, "big_essays": {"essays": len(pastes), "chars_each": fill_chars},
        "ack_ms": {"p50": round(1000 * (pct(latencies, 50) or 0), 2), "p99": round(1000 * (pct(latencies, 99) or 0), 2),
                   "p999": round(1000 * (pct(latencies, 99.9) or 0), 2), "max": round(1000 * max(latencies, default=0), 2)},
        "loop_lag": probe.report(measured_from),
        "pauses": pauses.report(),
        "tier1_interval_s": tier1_intervals(intervals, settings.feedback_local_min_interval_seconds),
        "failed": driver.failed,
        "group_commits": host.committer.batches, "rows": host.committer.rows,
        "settings": {"store": engine.dialect.name, "commit_interval_ms": settings.commit_interval_ms,
                     "sealed_at_rest": sealed,
                     "feedback_local_min_interval_seconds": settings.feedback_local_min_interval_seconds},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--typists", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shape", choices=("bursts", "continuous"), default="bursts",
                        help="typing model: run.py's bursts and pauses, or its continuous shape")
    parser.add_argument("--data-key", action="store_true",
                        help="seal essay text and the update log at rest (a fresh ESSAYCOACH_DATA_KEY)")
    parser.add_argument("--text", choices=corpora.TEXTS, default="latin",
                        help="the typed (and pasted) text, as run.py's --text")
    parser.add_argument("--big-essays", type=int, default=0, metavar="N",
                        help="the first N essays pasted to near the 200,000-character limit before the clock starts")
    parser.add_argument("--database-url", default="", metavar="URL",
                        help="a PostgreSQL database (postgresql+asyncpg://...) instead of a fresh SQLite file: "
                             "EMPTIED first (its public schema dropped), so never one that holds anything")
    args = parser.parse_args()
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    print(json.dumps(run(bench(args.typists, args.seconds, args.warmup, args.seed, args.shape, args.data_key,
                               args.text, args.big_essays, args.database_url)), indent=2))


if __name__ == "__main__":
    main()
