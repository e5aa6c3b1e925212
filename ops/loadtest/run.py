"""EssayCoach Live load generator and benchmark (not a test).

Simulates N students typing into their essays over the y-websocket protocol (a pycrdt `YClient`
each: an update every 400-600 ms while typing, 1-4 characters of essay text, an occasional
backspace, and pauses between bursts) and M teachers watching (read-only doc sockets; every essay
is watched by one teacher socket, each teacher watches about N/M essays). It measures

* ack latency: a typed update leaving the client -> the server's `[100][n]` covering it
  (EssayCoach only: the reference servers have no ack);
* fan-out latency: a typed update leaving the student -> the watching teacher's doc containing it
  (the teacher's state vector reaching the student's clock right after that update);
* updates/s typed, acked and delivered to teachers;
* CPU seconds and RSS of the server's whole process tree (/proc; Ray workers and HAProxy are
  descendants of `essaycoach run`), the client's own CPU and event-loop lag;
* memory per open essay: (tree RSS with the essays open - RSS before) / essays, and the same at the
  end of the run minus the average text size;

against each target, started and stopped here by pid:

* `essaycoach`: `essaycoach run` (Serve's HAProxy ingress, throughput mode: the default path);
* `essaycoach-default-proxy`: `essaycoach run --default-proxy` (Serve's default proxy);
* `y-websocket`: the y-websocket@1.5.4 reference server (node; `npm ci` in ops/loadtest);
* `pycrdt-websocket`: pycrdt-websocket's WebsocketServer under uvicorn (ops/loadtest/pycrdt_server.py).

    .venv/bin/python -m ops.loadtest.run                       # the full comparison (~15 min)
    .venv/bin/python -m ops.loadtest.run --students 50 --teachers 5 --duration 15 --targets essaycoach

Writes ops/loadtest/results.json (raw, every run appended with --append) and RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ops.loadtest import corpus as corpora
from ops.loadtest import cpuprobe, procs
from ops.loadtest import hostile as attacks
from ops.loadtest.yclient import ClassDocsClient, FollowedDoc, JsonSocketClient, YClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV_BIN = Path(sys.executable).parent
TARGETS = ("essaycoach", "essaycoach-default-proxy", "essaycoach-class-docs", "essaycoach-web", "y-websocket",
           "pycrdt-websocket")
# The no-argument run: every target at 300 typists (the comparison), then the targets at 1,000.
# The default proxy is not run at 1,000: it is the slow path, and the whole plan must fit ~15 min.
# Both essaycoach paths also run at 100 typists, below saturation, to compare the paths unsaturated.
# essaycoach-class-docs is essaycoach with each teacher on one class documents socket
# (/ws/classes/{id}/docs) following their class's essays, instead of one socket per essay.
ROOM_PER_SOCKET = ("essaycoach", "essaycoach-default-proxy", "y-websocket", "pycrdt-websocket")
DEFAULT_PLAN = [("essaycoach", 100), ("essaycoach-default-proxy", 100)] + [(t, 300) for t in ROOM_PER_SOCKET] + [
    ("essaycoach", 1000), ("essaycoach-class-docs", 1000), ("y-websocket", 1000), ("pycrdt-websocket", 1000)]
COMPARE_AT = 300
ESSAYS_PER_ACCOUNT = 10

CORPUS = corpora.LATIN  # the typed text without --text (ASCII)


# --- small helpers ---------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of values, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def decode_state_vector(sv: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    pos = 0

    def varuint() -> int:
        nonlocal pos
        result, shift = 0, 0
        while True:
            byte = sv[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    for _ in range(varuint()):
        client = varuint()
        out[client] = varuint()
    return out


async def gather_bounded(limit: int, factories: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run coroutine factories with at most `limit` in flight; exceptions are returned, not raised."""
    sem = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await factory()

    return list(await asyncio.gather(*(one(f) for f in factories), return_exceptions=True))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- targets ---------------------------------------------------------------------------------

UrlFactory = Callable[[], Awaitable[str]]


@dataclass
class Layout:
    """Where each simulated student writes and who watches it."""

    student_urls: list[UrlFactory]
    teacher_urls: list[list[UrlFactory]]  # per essay: one factory per watching socket
    notes: list[str] = field(default_factory=list)
    # Teachers on class documents sockets: per teacher, its socket's URL and the essays it follows.
    class_sockets: list[tuple[UrlFactory, list[int]]] = field(default_factory=list)
    essay_ids: list[str] = field(default_factory=list)
    # --hostile: each hostile student's seat, and its class teacher's doc socket on its essay.
    hostile: list[attacks.Seat] = field(default_factory=list)
    hostile_watch_urls: list[UrlFactory] = field(default_factory=list)
    # essaycoach-web: the web app's other sockets, each student's events socket (per essay) and
    # each teacher's class live socket (per class).
    events_urls: list[UrlFactory] = field(default_factory=list)
    live_urls: list[UrlFactory] = field(default_factory=list)


class Target:
    name = ""
    has_ack = False

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = procs.free_port()
        self.stop_note = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        raise NotImplementedError

    async def layout(self, students: int, teachers: int, per_account: int = 10, hostile: int = 0) -> Layout:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            self.stop_note = procs.stop(self.proc)

    def log_tail(self) -> str:
        path = self.workdir / "server.log"
        try:
            return path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    async def wait_port(self, timeout: float, path: str = "/", ok: Callable[[int], bool] = lambda s: s < 500) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
                try:
                    r = await client.get(f"http://127.0.0.1:{self.port}{path}")
                    if ok(r.status_code):
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        raise TimeoutError(f"{self.name} did not answer on :{self.port}{path} in {timeout:.0f}s:\n{self.log_tail()}")


def clean_env() -> dict[str, str]:
    """Our environment without anything that would point a server at another cluster or mode."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("ESSAYCOACH_", "RAY_")) and k not in ("VIRTUAL_ENV",)}


class RoomTarget(Target):
    """A reference server: no auth, one room per essay, every socket may write."""

    async def layout(self, students: int, teachers: int, per_account: int = 10, hostile: int = 0) -> Layout:
        run = secrets.token_hex(3)

        def url(i: int) -> UrlFactory:
            async def make() -> str:
                return f"ws://127.0.0.1:{self.port}/essay-{run}-{i}"
            return make

        return Layout(student_urls=[url(i) for i in range(students)],
                      teacher_urls=[[url(i)] if teachers else [] for i in range(students)],
                      notes=["no auth: one room per essay; teachers are ordinary (never-writing) clients"])


class YWebsocketTarget(RoomTarget):
    name = "y-websocket"

    async def start(self) -> None:
        server = HERE / "node_modules" / "y-websocket" / "bin" / "server.js"
        if not server.exists():
            log("installing the y-websocket reference server: npm ci in ops/loadtest")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--omit=optional"], cwd=HERE, check=True)
        env = {**clean_env(), "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.proc = procs.start(["node", str(server)], env=env, cwd=HERE, log_path=self.workdir / "server.log")
        await self.wait_port(30)

    def stop(self) -> None:
        if self.proc is not None:
            self.stop_note = procs.stop(self.proc, grace=10, sig=2)


class PycrdtTarget(RoomTarget):
    name = "pycrdt-websocket"

    async def start(self) -> None:
        env = clean_env()
        self.proc = procs.start([sys.executable, "-m", "ops.loadtest.pycrdt_server", "--port", str(self.port)],
                                env=env, cwd=ROOT, log_path=self.workdir / "server.log")
        await self.wait_port(30)

    def stop(self) -> None:
        if self.proc is not None:
            self.stop_note = procs.stop(self.proc, grace=15)


class EssayCoachTarget(Target):
    name = "essaycoach"
    has_ack = True

    def __init__(self, workdir: Path, *, default_proxy: bool = False, class_docs: bool = False,
                 web_sockets: bool = False, extra_env: dict[str, str] | None = None,
                 user_caps: tuple[int, int] | None = None) -> None:
        """`user_caps`: the per-user socket and ticket caps to serve with (a --hostile run: the
        hostile clients' 4429s and ticket 429s are measured; `user_caps_for`); None lifts them.
        `web_sockets` (with `class_docs`): the web app's socket set, each student's events socket
        beside its doc socket and each teacher's class live socket beside its class documents socket."""
        super().__init__(workdir)
        self.default_proxy = default_proxy
        self.class_docs = class_docs or web_sockets
        self.web_sockets = web_sockets
        self.user_caps = user_caps
        self.extra_env = extra_env or {}
        if default_proxy:
            self.name = "essaycoach-default-proxy"
        if class_docs:
            self.name = "essaycoach-class-docs"
        if web_sockets:
            self.name = "essaycoach-web"
        self.base = f"http://127.0.0.1:{self.port}"
        self.http: httpx.AsyncClient | None = None
        self.hostile_http: list[httpx.AsyncClient] = []  # one per hostile account (`hostile_seats`)

    async def start(self) -> None:
        var_dir = self.workdir / "var"
        var_dir.mkdir()
        env = {
            **clean_env(),
            "ESSAYCOACH_VAR_DIR": str(var_dir),
            "ESSAYCOACH_HTTP_PORT": str(self.port),
            # A teacher account watches its whole class (one doc socket per essay unless the
            # class documents socket is used): lift the per-user socket and ticket caps (32 open,
            # 64 tickets/min by default) so a layout with few teachers still opens. Nothing
            # measured depends on them (unless `user_caps`: then those).
            "ESSAYCOACH_WS_MAX_SOCKETS_PER_USER": str(self.user_caps[0] if self.user_caps else 1_000_000),
            "ESSAYCOACH_WS_TICKETS_PER_USER_PER_MINUTE": str(self.user_caps[1] if self.user_caps else 1_000_000),
            # Serve's HAProxy binds its stats page to 8404 by default: a free port, so a run
            # does not fail while another Serve app runs on the machine.
            "RAY_SERVE_HAPROXY_STATS_PORT": str(procs.free_port()),
            "ESSAYCOACH_METRICS_PORT": str(procs.free_port()),  # Ray's metrics export (default HTTP_PORT + 1000)
            **self.extra_env,
        }
        # As `make run` starts it (dev mode: a generated JWT secret in the run's var/).
        cmd = [str(VENV_BIN / "essaycoach"), "run", "--dev"] + (["--default-proxy"] if self.default_proxy else [])
        self.proc = procs.start(cmd, env=env, cwd=ROOT, log_path=self.workdir / "server.log")
        await self.wait_port(240, "/readyz", ok=lambda s: s == 200)
        self.http = httpx.AsyncClient(base_url=self.base + "/api/v1", timeout=120,
                                      limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))

    def stop(self) -> None:
        super().stop()

    async def close_http(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        for client in self.hostile_http:
            await client.aclose()
        self.hostile_http = []

    async def api(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        assert self.http is not None
        headers = {"authorization": f"Bearer {token}"} if token else {}
        throttled_until = time.monotonic() + 300
        attempt = 0
        while True:
            r = await self.http.request(method, path, json=body, headers=headers)
            attempt += 1
            # 429: a throttle (logins, tickets) paces setup; wait as told, for up to 5 minutes.
            if (r.status_code == 429 and time.monotonic() < throttled_until) or (
                    r.status_code in (502, 503, 504) and attempt < 5):
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                continue
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:300]}")
            return r.json() if r.content else None

    async def account(self, email: str, name: str, role: str, password: str) -> str:
        await self.api("POST", "/auth/register", body={"email": email, "password": password, "name": name, "role": role})
        pair = await self.api("POST", "/auth/token", body={"email": email, "password": password})
        return str(pair["access_token"])

    def hostile_client(self) -> httpx.AsyncClient:
        """A hostile account's own HTTP client: its ticket bursts (`socket_cap`: 70 at once) queue on
        its own connections, neither behind nor ahead of the honest typists' (`self.http`, 32)."""
        client = httpx.AsyncClient(base_url=self.base + "/api/v1", timeout=120,
                                   limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))
        self.hostile_http.append(client)
        return client

    @staticmethod
    async def ticket_once(http: httpx.AsyncClient, token: str) -> str:
        """A ws ticket without waiting out a 429 (a hostile client's: the refusal is the result)."""
        r = await http.post("/auth/ws-ticket", headers={"authorization": f"Bearer {token}"})
        if r.status_code >= 300:
            raise attacks.TicketRefused(r.status_code, float(r.headers.get("retry-after", "1")))
        return str(r.json()["ticket"])

    async def hostile_seats(self, run: str, password: str, n: int, join_codes: list[str], assignments: list[str],
                            teacher_tokens: list[str], honest_ids: list[str]) -> tuple[list[attacks.Seat], list[UrlFactory]]:
        """`n` hostile students, each on its own account with one essay in class k % classes."""
        classes_n = len(join_codes)

        async def one(k: int) -> tuple[str, str]:
            token = await self.account(f"hostile{k}-{run}@loadtest.example", f"Hostile {k}", "student", password)
            await self.api("POST", "/classes/join", token, {"join_code": join_codes[k % classes_n]})
            body = {"title": f"Hostile essay {k}", "assignment_id": assignments[k % classes_n]}
            return token, str((await self.api("POST", "/essays", token, body))["id"])

        made = await gather_bounded(4, [lambda k=k: one(k) for k in range(n)])
        for item in made:
            if isinstance(item, BaseException):
                raise item

        def doc_url(essay_id: str) -> Callable[[str], str]:
            return lambda ticket: f"ws://127.0.0.1:{self.port}/ws/essays/{essay_id}/doc?ticket={ticket}"

        def ticket_of(token: str) -> Callable[[], Awaitable[str]]:
            http = self.hostile_client()
            return lambda: self.ticket_once(http, token)

        def watch_url(essay_id: str, token: str) -> UrlFactory:
            async def make() -> str:
                ticket = (await self.api("POST", "/auth/ws-ticket", token))["ticket"]
                return doc_url(essay_id)(ticket)
            return make

        seats = [attacks.Seat(ticket=ticket_of(token), doc_url=doc_url(essay_id),
                              trespass_url=doc_url(honest_ids[k % len(honest_ids)]))
                 for k, (token, essay_id) in enumerate(made)]
        watches = [watch_url(essay_id, teacher_tokens[k % classes_n]) for k, (_, essay_id) in enumerate(made)]
        return seats, watches

    async def layout(self, students: int, teachers: int, per_account: int = ESSAYS_PER_ACCOUNT,
                     hostile: int = 0) -> Layout:
        run = secrets.token_hex(3)
        password = "Lt-" + secrets.token_urlsafe(12)
        classes_n = max(1, teachers)
        t0 = time.monotonic()

        async def teacher(j: int) -> tuple[str, str]:
            token = await self.account(f"teacher{j}-{run}@loadtest.example", f"Teacher {j}", "teacher", password)
            cls = await self.api("POST", "/classes", token, {"name": f"Loadtest {run} #{j}"})
            asg = await self.api("POST", f"/classes/{cls['id']}/assignments", token,
                                 {"title": "The printing press", "prompt": "Did the printing press change the world?"})
            return token, cls["join_code"], asg["id"], cls["id"]  # type: ignore[return-value]

        made = await gather_bounded(4, [lambda j=j: teacher(j) for j in range(classes_n)])
        for item in made:
            if isinstance(item, BaseException):
                raise item
        teacher_tokens = [m[0] for m in made]
        join_codes = [m[1] for m in made]
        assignments = [m[2] for m in made]
        class_ids = [m[3] for m in made]

        accounts_n = math.ceil(students / per_account)

        async def student(k: int) -> str:
            token = await self.account(f"student{k}-{run}@loadtest.example", f"Student {k}", "student", password)
            essays = range(k * per_account, min(students, (k + 1) * per_account))
            for c in sorted({i % classes_n for i in essays}):
                await self.api("POST", "/classes/join", token, {"join_code": join_codes[c]})
            return token

        tokens = await gather_bounded(4, [lambda k=k: student(k) for k in range(accounts_n)])
        for item in tokens:
            if isinstance(item, BaseException):
                raise item
        t_accounts = time.monotonic() - t0

        async def essay(i: int) -> str:
            body = {"title": f"Essay {i}", "assignment_id": assignments[i % classes_n]}
            return str((await self.api("POST", "/essays", tokens[i // per_account], body))["id"])

        essay_ids = await gather_bounded(16, [lambda i=i: essay(i) for i in range(students)])
        for item in essay_ids:
            if isinstance(item, BaseException):
                raise item
        t_essays = time.monotonic() - t0 - t_accounts
        log(f"{self.name}: {classes_n} teachers/classes, {accounts_n} student accounts "
            f"({t_accounts:.1f}s), {students} essays ({t_essays:.1f}s)")

        def url(essay_id: str, token: str) -> UrlFactory:
            async def make() -> str:
                ticket = (await self.api("POST", "/auth/ws-ticket", token))["ticket"]
                return f"ws://127.0.0.1:{self.port}/ws/essays/{essay_id}/doc?ticket={ticket}"
            return make

        def class_url(j: int, socket: str = "docs") -> UrlFactory:
            async def make() -> str:
                ticket = (await self.api("POST", "/auth/ws-ticket", teacher_tokens[j]))["ticket"]
                return f"ws://127.0.0.1:{self.port}/ws/classes/{class_ids[j]}/{socket}?ticket={ticket}"
            return make

        def events_url(essay_id: str, token: str) -> UrlFactory:
            async def make() -> str:
                ticket = (await self.api("POST", "/auth/ws-ticket", token))["ticket"]
                return f"ws://127.0.0.1:{self.port}/ws/essays/{essay_id}/events?ticket={ticket}"
            return make

        per_essay = bool(teachers) and not self.class_docs
        seats, watches = await self.hostile_seats(run, password, hostile, join_codes, assignments, teacher_tokens,
                                                  essay_ids) if hostile else ([], [])
        return Layout(
            student_urls=[url(essay_ids[i], tokens[i // per_account]) for i in range(students)],
            teacher_urls=[[url(essay_ids[i], teacher_tokens[i % classes_n])] if per_essay else []
                          for i in range(students)],
            class_sockets=[(class_url(j), [i for i in range(students) if i % classes_n == j])
                           for j in range(classes_n)] if teachers and self.class_docs else [],
            essay_ids=essay_ids,
            hostile=seats,
            hostile_watch_urls=watches if teachers else [],
            events_urls=[events_url(essay_ids[i], tokens[i // per_account]) for i in range(students)]
            if self.web_sockets else [],
            live_urls=[class_url(j, "live") for j in range(classes_n)] if self.web_sockets and teachers else [],
            notes=[f"{accounts_n} student accounts with up to {per_account} essays each "
                   f"(argon2 registration is ~50 ms of server CPU per account); teacher j's class holds "
                   f"essays i with i % {classes_n} == j; one single-use ws ticket per socket; "
                   + ("each teacher follows its class's essays over one class documents socket; "
                      if self.class_docs else "")
                   + ("as in the web app, each student also has its essay's events socket open and each "
                      "teacher its class's live socket; " if self.web_sockets else "")
                   + f"account setup {t_accounts:.0f}s, essay creation {t_essays:.0f}s"],
        )


def make_target(name: str, workdir: Path, extra_env: dict[str, str],
                user_caps: tuple[int, int] | None = None) -> Target:
    if name == "essaycoach":
        return EssayCoachTarget(workdir, extra_env=extra_env, user_caps=user_caps)
    if name == "essaycoach-class-docs":
        return EssayCoachTarget(workdir, class_docs=True, extra_env=extra_env, user_caps=user_caps)
    if name == "essaycoach-web":
        return EssayCoachTarget(workdir, web_sockets=True, extra_env=extra_env, user_caps=user_caps)
    if name == "essaycoach-default-proxy":
        return EssayCoachTarget(workdir, default_proxy=True, extra_env=extra_env, user_caps=user_caps)
    if name == "y-websocket":
        return YWebsocketTarget(workdir)
    if name == "pycrdt-websocket":
        return PycrdtTarget(workdir)
    raise SystemExit(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")


# --- the simulation --------------------------------------------------------------------------


@dataclass
class Watcher:
    client: YClient | FollowedDoc | None = None
    pending: deque[tuple[int, float, bool]] = field(default_factory=deque)  # (student clock, t_sent, in window)


@dataclass
class Essay:
    index: int
    student: YClient | None = None
    watchers: list[Watcher] = field(default_factory=list)
    typed: list[tuple[int, float]] = field(default_factory=list)  # (ack counter index, t_sent) in window
    cursor: int = 0
    big: bool = False  # filled to near MAX_ESSAY_CHARS before typing (--big-essays)


def type_chunk(doc: Any, text: Any, cursor: int, rng: random.Random, corpus: str = CORPUS) -> int:
    """One update of the typing model: the next 1-4 characters (code points) of `corpus` from
    `cursor`, 5% of the time after a backspace over the last character, in one transaction of
    `doc` on its `text`. Returns the new cursor.

    pycrdt's `len(text)` and its indexes count UTF-8 bytes: a backspace deletes the last
    character's bytes (reading the text for it, O(length), only on a backspace)."""
    n = rng.choice((1, 2, 2, 3, 3, 4))
    start = cursor % len(corpus)
    chunk = (corpus + corpus)[start : start + n]
    with doc.transaction():
        if rng.random() < 0.05 and len(text) > 1:
            end = len(text)
            last = 1 if corpus.isascii() else len(str(text)[-1].encode())
            del text[end - last : end]
            text.insert(end - last, chunk)
        else:
            text.insert(len(text), chunk)
    return cursor + n


# The continuous shape (issue 13's independent generator): every student types one word every
# CONTINUOUS_INTERVAL seconds without pausing, but CONTINUOUS_GAP_SHARE of the gaps last
# CONTINUOUS_GAP seconds; one account per student, classes of CLASS_SIZE, one teacher doc socket
# per essay. A student typing like this never pauses for long, so whatever a host or Gateway
# schedules "after a pause" or "at most every N s" runs while every essay is being typed.
SHAPES = ("bursts", "continuous")
CONTINUOUS_INTERVAL = 0.5
CONTINUOUS_GAP = 3.0
CONTINUOUS_GAP_SHARE = 0.05
CLASS_SIZE = 30


def word_start(cursor: int, corpus: str = CORPUS) -> int:
    """The first position of `corpus` at or after `cursor` that starts a word."""
    doubled = corpus + corpus
    pos = cursor % len(corpus)
    if pos and not doubled[pos - 1].isspace():
        while not doubled[pos].isspace():
            pos += 1
    while doubled[pos].isspace():
        pos += 1
    return pos % len(corpus)


def type_word(doc: Any, text: Any, cursor: int, corpus: str = CORPUS) -> int:
    """One update of the continuous shape: the corpus's next word from `cursor` (a word start)
    with the spaces or line breaks after it, appended in one transaction. Returns the new cursor."""
    doubled = corpus + corpus
    start = cursor % len(corpus)
    end = start
    while not doubled[end].isspace():
        end += 1
    while doubled[end].isspace():
        end += 1
    with doc.transaction():
        text.insert(len(text), doubled[start:end])
    return end


def continuous_gap(rng: random.Random) -> float:
    """Seconds until the next word in the continuous shape."""
    return CONTINUOUS_GAP if rng.random() < CONTINUOUS_GAP_SHARE else CONTINUOUS_INTERVAL


@dataclass(frozen=True)
class Mix:
    """What a run mixes into its shape (issue 13's independent generator did all three): the
    typed text (`--text`), essays pasted to near the character limit before typing
    (`--big-essays`), and hostile students beside the honest ones (`--hostile`, EssayCoach only:
    the reference servers enforce no limits). The default mixes in nothing."""

    text: str = "latin"
    big_essays: int = 0
    hostile: int = 0
    rotation: tuple[str, ...] = attacks.ATTACKS  # the hostile clients' attacks (--attacks)

    def describe(self) -> str:
        parts = [f"typed text {self.text}"] if self.text != "latin" else []
        if self.big_essays:
            parts.append(f"{self.big_essays} essays filled to near {attacks.MAX_ESSAY_CHARS:,} characters before typing")
        if self.hostile:
            parts.append(f"{self.hostile} hostile students beside the honest typists (essaycoach targets only)"
                         + ("" if self.rotation == attacks.ATTACKS else f", attacks: {', '.join(self.rotation)}"))
        return "; ".join(parts)


def big_fill_chars(warmup: float, duration: float, limit: int = attacks.MAX_ESSAY_CHARS) -> int:
    """Characters a big essay is filled to: the limit less what its student types in the run (a
    word of at most ~20 characters every 0.5 s through warm-up, window and the 15 s grace) and a
    margin, so the honest typing never meets the limit."""
    return max(0, limit - int(40 * (warmup + duration + 15)) - 1000)


CLASS_SOCKETS = {"essaycoach-class-docs": 1, "essaycoach-web": 2}
"""Sockets a teacher holds per class on targets that watch a class as a whole (the web app's
class view: the class documents socket and the class live socket); others hold one per essay."""


def teacher_sockets_per_account(students: int, teachers: int, hostile: int, class_sockets: int = 0) -> int:
    """Sockets one teacher account opens in a layout (and tickets it asks for at once):
    `class_sockets` per teacher when it watches its class as a whole, else one per essay."""
    if not teachers:
        return 0
    if class_sockets:
        return class_sockets + math.ceil(hostile / teachers)
    return math.ceil(students / teachers) + math.ceil(hostile / teachers)


def user_caps_for(teacher_sockets: int) -> tuple[int, int]:
    """(sockets, tickets a minute) per user for a --hostile run: the server's defaults when the
    layout's teacher accounts fit under them with 4 to spare (the hostile essays' reloads), else
    raised just enough for them (tickets twice the sockets, as the defaults), so the hostile
    clients still meet caps: lifted, their socket_cap rounds would measure none."""
    sockets = max(attacks.MAX_SOCKETS_PER_USER, teacher_sockets + 4)
    return sockets, max(attacks.TICKETS_PER_USER_PER_MINUTE, 2 * sockets)


def typing_model(shape: str, burst_mean: float, pause_mean: float) -> str:
    if shape == "continuous":
        return (f"continuous: one word every {CONTINUOUS_INTERVAL * 1000:.0f} ms ({CONTINUOUS_GAP_SHARE:.0%} "
                f"of gaps {CONTINUOUS_GAP:g} s), no pauses; one account per student, classes of {CLASS_SIZE}, "
                f"one teacher doc socket per essay")
    return (f"update every 400-600 ms while typing (1-4 chars of essay text, 5% backspace+retype), "
            f"bursts exp(mean {burst_mean:g}s), pauses exp(mean {pause_mean:g}s)")


class Sim:
    """The clients of one scenario and what they measured."""

    def __init__(self, essays: int, seed: int, corpus: str = CORPUS) -> None:
        self.essays = [Essay(i) for i in range(essays)]
        self.rng = random.Random(seed)
        self.corpus = corpus
        self.window: tuple[float, float] = (math.inf, math.inf)
        self.fanout: list[float] = []
        self.fanout_big: list[float] = []  # the big essays' share of `fanout`
        self.delivered_in_window = 0
        self.typed_total = 0
        self.typing = True
        self.lag: list[float] = []

    def in_window(self, t: float) -> bool:
        return self.window[0] <= t < self.window[1]

    def on_teacher_update(self, essay: Essay, watcher: Watcher) -> Callable[[], None]:
        def handler() -> None:
            if not watcher.pending or watcher.client is None or essay.student is None:
                return
            seen = decode_state_vector(watcher.client.doc.get_state()).get(essay.student.doc.client_id, 0)
            now = time.perf_counter()
            pending = watcher.pending
            while pending and pending[0][0] <= seen:
                _, t_sent, counted = pending.popleft()
                if counted:
                    self.fanout.append(now - t_sent)
                    if essay.big:
                        self.fanout_big.append(now - t_sent)
        return handler

    def type_once(self, essay: Essay, rng: random.Random, *, word: bool = False) -> None:
        client = essay.student
        assert client is not None
        if word:
            essay.cursor = type_word(client.doc, client.text, essay.cursor, self.corpus)
        else:
            essay.cursor = type_chunk(client.doc, client.text, essay.cursor, rng, self.corpus)
        t_sent = client.send_times.get(client.sent, time.perf_counter())
        counted = self.in_window(t_sent)
        self.typed_total += 1
        if counted:
            essay.typed.append((client.sent, t_sent))
        if essay.watchers:
            clock = decode_state_vector(client.doc.get_state())[client.doc.client_id]
            for watcher in essay.watchers:
                watcher.pending.append((clock, t_sent, counted))

    async def typist(self, essay: Essay, stop_at: float, burst_mean: float, pause_mean: float,
                     shape: str = "bursts") -> None:
        rng = random.Random(self.rng.random())
        essay.cursor = rng.randrange(len(self.corpus))
        await asyncio.sleep(rng.uniform(0, 1.0))
        if shape == "continuous":
            essay.cursor = word_start(essay.cursor, self.corpus)
            while self.typing and time.perf_counter() < stop_at:
                if essay.student is None or essay.student.close_code is not None:
                    return
                self.type_once(essay, rng, word=True)
                await asyncio.sleep(continuous_gap(rng))
            return
        while self.typing and time.perf_counter() < stop_at:
            burst_end = time.perf_counter() + rng.expovariate(1 / burst_mean)
            while self.typing and time.perf_counter() < min(burst_end, stop_at):
                if essay.student is None or essay.student.close_code is not None:
                    return
                self.type_once(essay, rng)
                await asyncio.sleep(rng.uniform(0.4, 0.6))
            await asyncio.sleep(rng.expovariate(1 / pause_mean))

    async def lag_probe(self, interval: float = 0.05) -> None:
        while self.typing:
            t = time.perf_counter()
            await asyncio.sleep(interval)
            late = time.perf_counter() - t - interval
            if self.in_window(t):
                self.lag.append(late)


async def connect_all(factories: list[Callable[[], Awaitable[YClient]]], limit: int) -> tuple[list[Any], float]:
    t0 = time.perf_counter()
    results = await gather_bounded(limit, factories)
    return results, time.perf_counter() - t0


def growth_by_process(base: procs.TreeSnapshot, later: procs.TreeSnapshot, n: int) -> dict[str, float]:
    """RSS growth per essay (KiB) by process name, for names that grew or shrank >= 1 KiB."""
    names = sorted(set(later.by_comm) | set(base.by_comm))
    growth = {name: round((later.by_comm.get(name, 0) - base.by_comm.get(name, 0)) / n, 1) for name in names}
    return {name: kib for name, kib in growth.items() if abs(kib) >= 1}


async def settle_rss(pid: int, seconds: float = 3.0) -> procs.TreeSnapshot:
    await asyncio.sleep(seconds)
    return procs.snapshot(pid)


async def run_scenario(target: Target, students: int, teachers: int, *, duration: float, warmup: float,
                       burst_mean: float, pause_mean: float, connect_limit: int,
                       shape: str = "bursts", mix: Mix = Mix()) -> dict[str, Any]:
    log(f"{target.name}: preparing {students} essays, {teachers} teachers ({shape} typing)"
        + (f"; {mix.describe()}" if mix.describe() else ""))
    gc.enable()  # a previous scenario that failed in its typing window left it off
    gc.unfreeze()
    hostile_n = mix.hostile if isinstance(target, EssayCoachTarget) else 0
    layout = await target.layout(students, teachers, per_account=1 if shape == "continuous" else ESSAYS_PER_ACCOUNT,
                                 hostile=hostile_n)
    sim = Sim(students, seed=students, corpus=corpora.corpus(mix.text))
    errors: dict[str, int] = {}

    def note_error(kind: str, exc: BaseException) -> None:
        key = f"{kind}: {type(exc).__name__}: {str(exc)[:80]}"
        errors[key] = errors.get(key, 0) + 1

    await asyncio.sleep(2)
    idle0 = procs.snapshot(target.pid)
    base = await settle_rss(target.pid, 5)
    idle_cores = base.cpu_seconds_since(idle0) / (base.at - idle0.at)

    def student_factory(i: int) -> Callable[[], Awaitable[YClient]]:
        async def make() -> YClient:
            client = YClient(await layout.student_urls[i]())
            await client.connect()
            sim.essays[i].student = client
            return client
        return make

    log(f"{target.name}: connecting {students} students")
    results, t_students = await connect_all([student_factory(i) for i in range(students)], connect_limit)
    for r in results:
        if isinstance(r, BaseException):
            note_error("student connect", r)
    big_fill = await fill_big_essays(target, sim, mix.big_essays, big_fill_chars(warmup, duration), note_error)
    after_students = await settle_rss(target.pid)

    def teacher_factory(i: int, j: int) -> Callable[[], Awaitable[YClient]]:
        async def make() -> YClient:
            essay = sim.essays[i]
            watcher = essay.watchers[j]
            watcher.client = YClient(await layout.teacher_urls[i][j](), on_update=sim.on_teacher_update(essay, watcher))
            await watcher.client.connect()
            return watcher.client
        return make

    factories = []
    for essay in sim.essays:
        essay.watchers = [Watcher() for _ in layout.teacher_urls[essay.index]] if essay.student else []
        factories += [teacher_factory(essay.index, j) for j in range(len(essay.watchers))]
    class_clients: list[ClassDocsClient] = []

    def class_socket_factory(url: UrlFactory, indexes: list[int]) -> Callable[[], Awaitable[ClassDocsClient]]:
        async def make() -> ClassDocsClient:
            socket = await ClassDocsClient(await url()).connect()
            class_clients.append(socket)
            for i in indexes:
                essay = sim.essays[i]
                if essay.student is None:
                    continue
                watcher = Watcher()
                essay.watchers.append(watcher)
                watcher.client = await socket.follow(layout.essay_ids[i], on_update=sim.on_teacher_update(essay, watcher))
            return socket
        return make

    factories += [class_socket_factory(url, indexes) for url, indexes in layout.class_sockets]
    hostile_watched: dict[int, YClient] = {}  # hostile essay k -> its class teacher's doc socket

    def hostile_watch_factory(k: int) -> Callable[[], Awaitable[YClient]]:
        async def make() -> YClient:
            client = YClient(await layout.hostile_watch_urls[k]())
            await client.connect()
            hostile_watched[k] = client
            return client
        return make

    factories += [hostile_watch_factory(k) for k in range(len(layout.hostile_watch_urls))]
    # essaycoach-web: the web app's other sockets (events per student, class live per teacher).
    json_sockets: dict[str, list[JsonSocketClient]] = {"events": [], "live": []}

    def json_socket_factory(kind: str, url: UrlFactory) -> Callable[[], Awaitable[JsonSocketClient]]:
        async def make() -> JsonSocketClient:
            socket = await JsonSocketClient(await url()).connect()
            json_sockets[kind].append(socket)
            return socket
        return make

    factories += [json_socket_factory("events", url) for url in layout.events_urls]
    factories += [json_socket_factory("live", url) for url in layout.live_urls]
    log(f"{target.name}: connecting {len(factories)} teacher sockets")
    results, t_teachers = await connect_all(factories, connect_limit)
    for r in results:
        if isinstance(r, BaseException):
            note_error("teacher connect", r)
    for essay in sim.essays:  # a watcher that failed to connect measures nothing
        essay.watchers = [w for w in essay.watchers if w.client is not None and w.client.synced.is_set()]
    after_teachers = await settle_rss(target.pid)

    live = [e for e in sim.essays if e.student is not None]
    log(f"{target.name}: {len(live)} typists, {sum(len(e.watchers) for e in live)} watchers; "
        f"typing: {warmup:.0f}s warm-up + {duration:.0f}s measured")
    # The generator's own garbage collector stays out of the typing window: one process holds
    # every client, and a full collection of a plan's worth of objects stopped its loop for
    # 0.4-0.6 s at 1,000 typists (loop-lag max), inflating every target's tail alike.
    gc.collect()
    gc.freeze()
    gc.disable()
    t_start = time.perf_counter()
    sim.window = (t_start + warmup, t_start + warmup + duration)
    stop_at = sim.window[1]
    tasks = [asyncio.create_task(sim.typist(e, stop_at, burst_mean, pause_mean, shape)) for e in live]
    hostile_stats = attacks.Stats()
    # Each client's first socket_cap round inside the window, spread over it (or its first minute).
    hostile_caps = (target.user_caps if isinstance(target, EssayCoachTarget) else None) or (
        attacks.MAX_SOCKETS_PER_USER, attacks.TICKETS_PER_USER_PER_MINUTE)
    cap_spread = max(0.0, min(duration, attacks.SOCKET_CAP_EVERY) - 5.0) / max(1, len(layout.hostile))
    hostiles = [attacks.HostileClient(k, seat, hostile_stats, seed=students, attacks=mix.rotation,
                                      socket_cap_at=sim.window[0] + 1.0 + k * cap_spread,
                                      max_sockets=hostile_caps[0])
                for k, seat in enumerate(layout.hostile)]
    hostile_tasks = [asyncio.create_task(h.run(stop_at)) for h in hostiles]
    lag_task = asyncio.create_task(sim.lag_probe())
    await asyncio.sleep(max(0.0, sim.window[0] - time.perf_counter()))
    client_cpu0, snap0 = procs.self_cpu_seconds(), procs.snapshot(target.pid)
    json_seen0 = {kind: sum((s.by_type for s in sockets), Counter()) for kind, sockets in json_sockets.items()}
    busy0, load0 = procs.machine_busy(), Path("/proc/loadavg").read_text().split()[0]
    wait0 = procs.self_runqueue_wait_seconds()
    speed = cpuprobe.Probe()
    speed.start()
    await asyncio.sleep(max(0.0, sim.window[1] - time.perf_counter()))
    snap1, client_cpu1 = procs.snapshot(target.pid), procs.self_cpu_seconds()
    json_seen1 = {kind: sum((s.by_type for s in sockets), Counter()) for kind, sockets in json_sockets.items()}
    machine_speed = speed.stop()
    busy1, load1 = procs.machine_busy(), Path("/proc/loadavg").read_text().split()[0]
    client_wait = (procs.self_runqueue_wait_seconds() - wait0) / duration
    client_rss = procs.self_rss_kib()
    sim.typing = False
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lag_task.cancel()
    await stop_hostiles(hostiles, hostile_tasks)

    # Grace: let every in-flight update be acked and delivered (or give up after 15 s).
    deadline = time.perf_counter() + 15
    while time.perf_counter() < deadline:
        pending = sum(len(w.pending) for e in live for w in e.watchers)
        unacked = sum(1 for e in live if target.has_ack and e.student and e.student.acked < e.student.sent
                      and e.student.close_code is None)
        if not pending and not unacked:
            break
        await asyncio.sleep(0.25)
    end = procs.snapshot(target.pid)
    gc.enable()
    gc.unfreeze()

    ack: list[float] = []
    ack_big: list[float] = []
    unacked = 0
    typed_in_window = 0
    for e in live:
        assert e.student is not None
        typed_in_window += len(e.typed)
        if target.has_ack:
            for idx, t_sent in e.typed:
                t_ack = e.student.ack_times.get(idx)
                if t_ack is None:
                    unacked += 1
                else:
                    ack.append(t_ack - t_sent)
                    if e.big:
                        ack_big.append(t_ack - t_sent)
    undelivered = sum(1 for e in live for w in e.watchers for (_, _, counted) in w.pending if counted)

    texts = []
    mismatches = 0
    closed: dict[str, int] = {}
    for e in live:
        assert e.student is not None
        text = str(e.student.text)
        texts.append(len(text.encode()))
        for w in e.watchers:
            assert w.client is not None
            if str(w.client.text) != text:
                mismatches += 1
        for c in [e.student] + [w.client for w in e.watchers if w.client]:
            if c.close_code is not None:
                key = f"{c.close_code} {c.close_reason}".strip()
                closed[key] = closed.get(key, 0) + 1
    avg_text = sum(texts) / len(texts) if texts else 0.0

    log(f"{target.name}: closing sockets")
    hostile_watchers = list(hostile_watched.values())
    stored = await hostile_docs_as_stored(layout, hostile_watched, note_error)
    mixed = mix_result(mix, target, sim, big_fill, ack_big, hostile_stats, hostile_watchers, closed, unacked,
                       undelivered, mismatches, stored)
    web_sockets = {kind: {"open": len(sockets),
                          "closed": dict(Counter(f"{s.close_code} {s.close_reason}".strip()
                                                 for s in sockets if s.close_code is not None)),
                          "messages_per_s_by_type": {t: round(n / duration, 1)
                                                     for t, n in (json_seen1[kind] - json_seen0[kind]).most_common()}}
                   for kind, sockets in json_sockets.items() if sockets}
    clients: list[Any] = [c for e in live for c in [e.student] + [w.client for w in e.watchers]
                          if isinstance(c, YClient)] + class_clients + hostile_watchers
    clients += [s for sockets in json_sockets.values() for s in sockets]
    await gather_bounded(200, [lambda c=c: c.close() for c in clients])

    n = max(1, len(live))
    server_cpu = snap1.cpu_seconds_since(snap0)
    machine_cores = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
    client_cores = (client_cpu1 - client_cpu0) / duration
    by_comm = sorted(snap1.cpu_by_comm_since(snap0).items(), key=lambda kv: -kv[1])[:8]
    top = sorted(end.by_comm.items(), key=lambda kv: -kv[1])[:8]
    result: dict[str, Any] = {
        "target": target.name,
        "students": students,
        "teachers": teachers,
        "typists_connected": len(live),
        "watchers_connected": sum(len(e.watchers) for e in live),
        "teacher_sockets": len(class_clients) or sum(len(e.watchers) for e in live),
        "duration_s": duration,
        "warmup_s": warmup,
        "shape": shape,
        "typing_model": typing_model(shape, burst_mean, pause_mean),
        "connect_s": {"students": round(t_students, 1), "teachers": round(t_teachers, 1)},
        "updates": {
            "intended_per_s": round(len(live) / (CONTINUOUS_INTERVAL * (1 - CONTINUOUS_GAP_SHARE)
                                                 + CONTINUOUS_GAP * CONTINUOUS_GAP_SHARE), 1)
            if shape == "continuous" else round(len(live) * 2 * burst_mean / (burst_mean + pause_mean), 1),
            "typed_in_window": typed_in_window,
            "typed_per_s": round(typed_in_window / duration, 1),
            "acked_per_s": round(len(ack) / duration, 1) if target.has_ack else None,
            "delivered_to_teachers_per_s": round(len(sim.fanout) / duration, 1),
            "unacked": unacked if target.has_ack else None,
            "undelivered": undelivered,
        },
        "ack_ms": ({"p50": ms(pct(ack, 50)), "p99": ms(pct(ack, 99)), "max": ms(max(ack) if ack else None),
                    "samples": len(ack)} if target.has_ack else None),
        "fanout_ms": {"p50": ms(pct(sim.fanout, 50)), "p99": ms(pct(sim.fanout, 99)),
                      "max": ms(max(sim.fanout) if sim.fanout else None), "samples": len(sim.fanout)},
        "server": {
            "cpu_s": round(server_cpu, 1),
            "cpu_cores": round(server_cpu / duration, 2),
            "idle_cpu_cores": round(idle_cores, 2),
            "cpu_ms_per_update": round(1000 * server_cpu / typed_in_window, 3) if typed_in_window else None,
            "rss_mib": {"before": round(base.rss_kib / 1024, 1), "students_open": round(after_students.rss_kib / 1024, 1),
                        "teachers_open": round(after_teachers.rss_kib / 1024, 1),
                        "end": round(end.rss_kib / 1024, 1)},
            "processes": end.procs,
            "cpu_cores_by_process": {k: round(v / duration, 2) for k, v in by_comm},
            "rss_top_mib": {k: round(v / 1024, 1) for k, v in top},
            "process_count_by_name": {k: v for k, v in sorted(end.count_by_name.items()) if v},
        },
        "memory_per_essay_kib": {
            "open_empty": round((after_students.rss_kib - base.rss_kib) / n, 1),
            "open_watched_empty": round((after_teachers.rss_kib - base.rss_kib) / n, 1),
            "end_beyond_text": round((end.rss_kib - base.rss_kib) / n - avg_text / 1024, 1),
            "avg_text_bytes": round(avg_text),
            # Where an essay's memory sits (the essay's actor in the host vs its sockets), at each step.
            **{f"{step}_by_process": growth_by_process(base, snap, n)
               for step, snap in (("open", after_students), ("open_watched", after_teachers), ("end", end))},
        },
        "machine": {
            "busy_cores": round(machine_cores, 2),
            "other_cores": round(max(0.0, machine_cores - server_cpu / duration - client_cores), 2),
            "loadavg_1m": [load0, load1],
            "during_window": machine_speed,
        },
        "client": {
            "cpu_cores": round(client_cores, 2),
            "runqueue_wait_fraction": round(client_wait, 3),
            "rss_mib": round(client_rss / 1024, 1),
            "loop_lag_ms": {"p50": ms(pct(sim.lag, 50)), "p99": ms(pct(sim.lag, 99)),
                            "max": ms(max(sim.lag) if sim.lag else None)},
        },
        "converged": {"watchers_checked": sum(len(e.watchers) for e in live), "mismatches": mismatches},
        "closed_sockets": closed,
        **({"web_sockets": web_sockets} if web_sockets else {}),
        "errors": errors,
        "notes": layout.notes,
        **({"mix": mixed} if mixed else {}),
    }
    log(f"{target.name}@{students}: typed {result['updates']['typed_per_s']}/s, ack {result['ack_ms']}, "
        f"fan-out {result['fanout_ms']}, server {result['server']['cpu_cores']} cores, "
        f"client {result['client']['cpu_cores']} cores, mem/essay {result['memory_per_essay_kib']}")
    return result


async def fill_big_essays(target: Target, sim: Sim, n: int, chars: int,
                          note_error: Callable[[str, BaseException], None]) -> dict[str, Any] | None:
    """Pastes `chars` characters of the run's text into the first `n` connected essays (pieces
    under the 1 MiB message limit), and waits until the server has them (acked, or a round trip
    on the reference servers). These students then type on like the others."""
    if not n:
        return None
    big = [e for e in sim.essays if e.student is not None][:n]
    pieces = corpora.chunks(corpora.fill(sim.corpus, chars), 256 * 1024)
    log(f"{target.name}: filling {len(big)} essays to {chars:,} characters ({len(pieces)} updates each)")
    t0 = time.perf_counter()

    async def fill(e: Essay) -> None:
        client = e.student
        assert client is not None
        for piece in pieces:
            client.text.insert(len(client.text), piece)  # pycrdt's len and indexes: UTF-8 bytes
            await asyncio.sleep(0.05)  # pasting, not flooding: stays under the message rate
        if target.has_ack:
            await client.wait_acked(timeout=180)
        else:
            await client.round_trip(timeout=180)
        e.big = True

    for r in await asyncio.gather(*(fill(e) for e in big), return_exceptions=True):
        if isinstance(r, BaseException):
            note_error("big essay fill", r)
    return {"essays": sum(e.big for e in big), "chars_each": chars,
            "utf8_bytes_each": len(corpora.fill(sim.corpus, chars).encode()),
            "fill_s": round(time.perf_counter() - t0, 1)}


async def stop_hostiles(hostiles: list[attacks.HostileClient], tasks: list[asyncio.Task[None]]) -> None:
    """Lets each hostile client finish its round (up to 10 s), then cancels what is left."""
    for h in hostiles:
        h.stopping = True
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def hostile_docs_as_stored(layout: Layout, watched: dict[int, YClient],
                                 note_error: Callable[[str, BaseException], None]) -> dict[str, Any]:
    """Loads each hostile essay afresh (a new teacher socket: the host's stored state) and
    compares it with what the teacher's socket that watched the attacks holds: a refused update
    that reached watchers anyway shows up as a difference."""
    differing: list[dict[str, int]] = []
    checked = 0
    for k, watcher in sorted(watched.items()):
        try:
            fresh = await YClient(await layout.hostile_watch_urls[k]()).connect()
        except Exception as exc:
            note_error("hostile essay reload", exc)
            continue
        live_text, stored_text = str(watcher.text), str(fresh.text)
        checked += 1
        if live_text != stored_text:
            differing.append({"essay": k, "watched_chars": len(live_text), "stored_chars": len(stored_text)})
        await fresh.close()
    return {"checked": checked, "differing": differing}


def caps_note(caps: tuple[int, int] | None) -> str:
    """The report's words for a run's per-user socket and ticket caps."""
    if caps is None:
        return "lifted"
    which = ("the defaults" if caps == (attacks.MAX_SOCKETS_PER_USER, attacks.TICKETS_PER_USER_PER_MINUTE)
             else "raised for the layout's teachers, one doc socket per essay")
    return f"{caps[0]} sockets, {caps[1]} tickets a minute ({which})"


def mix_result(mix: Mix, target: Target, sim: Sim, big_fill: dict[str, Any] | None, ack_big: list[float],
               stats: attacks.Stats, hostile_watchers: list[YClient], closed: dict[str, int], unacked: int,
               undelivered: int, mismatches: int, stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's `mix` section: the text typed, the big essays' own latency, what the hostile
    clients got, and whether any honest update was lost or any honest socket closed."""
    if mix == Mix():
        return {}
    out: dict[str, Any] = {"text": mix.text}
    if big_fill is not None:
        out["big_essays"] = {
            **big_fill,
            "ack_ms": ({"p50": ms(pct(ack_big, 50)), "p99": ms(pct(ack_big, 99)), "samples": len(ack_big)}
                       if target.has_ack else None),
            "fanout_ms": {"p50": ms(pct(sim.fanout_big, 50)), "p99": ms(pct(sim.fanout_big, 99)),
                          "samples": len(sim.fanout_big)},
        }
    if mix.hostile:
        if not isinstance(target, EssayCoachTarget):
            out["hostile"] = {"skipped": "a reference server enforces no limits: no hostile clients against it"}
        else:
            watch_closed: dict[str, int] = {}
            extra_roots = 0
            for w in hostile_watchers:
                if w.close_code is not None:
                    key = f"{w.close_code} {w.close_reason}".strip()
                    watch_closed[key] = watch_closed.get(key, 0) + 1
                extra_roots += any(name != "content" for name in w.doc.keys())
            out["hostile"] = {
                "clients": mix.hostile,
                "user_caps": caps_note(target.user_caps),
                "attacks": stats.as_dict(),
                "teacher_watchers": {"sockets": len(hostile_watchers), "closed": watch_closed,
                                     "saw_other_roots": extra_roots,
                                     "max_text_chars": max((len(str(w.text)) for w in hostile_watchers), default=0),
                                     "vs_stored": stored or {"checked": 0, "differing": []}},
            }
    out["honest"] = {"unacked": unacked if target.has_ack else None, "undelivered": undelivered,
                     "teacher_mismatches": mismatches, "closed_sockets": closed,
                     "lost_or_closed": bool(unacked or undelivered or mismatches or closed)}
    return out


async def run_target(name: str, students: int, teachers: int, args: argparse.Namespace, workroot: Path) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-{students}-", dir=workroot))
    mix = Mix(text=args.text, big_essays=args.big_essays, hostile=args.hostile, rotation=args.attacks)
    user_caps = user_caps_for(teacher_sockets_per_account(
        students, teachers, mix.hostile, CLASS_SOCKETS.get(name, 0))) if mix.hostile else None
    target = make_target(name, workdir, dict(kv.split("=", 1) for kv in args.essaycoach_env), user_caps)
    t0 = time.monotonic()
    try:
        log(f"{name}: starting (work dir {workdir})")
        await target.start()
        log(f"{name}: up in {time.monotonic() - t0:.1f}s (pid {target.pid}, port {target.port})")
        result = await run_scenario(target, students, teachers, duration=args.duration, warmup=args.warmup,
                                    burst_mean=args.burst_mean, pause_mean=args.pause_mean, shape=args.shape,
                                    connect_limit=args.connect_limit, mix=mix)
    except Exception as exc:
        log(f"{name}@{students} FAILED: {type(exc).__name__}: {exc}")
        result = {"target": name, "students": students, "teachers": teachers,
                  "failed": f"{type(exc).__name__}: {str(exc)[:2000]}"}
    finally:
        if isinstance(target, EssayCoachTarget):
            await target.close_http()
        await asyncio.to_thread(target.stop)
        log(f"{name}: stopped ({target.stop_note})")
    result["stop"] = target.stop_note
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


# --- report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"') + f" (kernel {platform.release()})"
    except FileNotFoundError:
        pass
    versions = {}
    for pkg in ("ray", "pycrdt", "pycrdt-websocket", "websockets", "uvicorn"):
        try:
            from importlib.metadata import version
            versions[pkg] = version(pkg)
        except Exception:
            versions[pkg] = "?"
    try:
        versions["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        versions["node"] = "absent"
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kib / 1024 / 1024, 1), "os": os_name,
            "python": platform.python_version(), "versions": versions,
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "calibration_ms": cpu_calibration_ms()}


def cpu_calibration_ms() -> float:
    """How fast one core of this machine runs Python: the best of 5 runs of a fixed loop (ms).

    Machines of the same kind differ (virtual CPUs on shared hosts): on 2026-11-30 two 2-core
    machines ran the same code at 1.8 and 2.8 ms of server CPU per update. Runs compare only
    alongside this number."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        cpuprobe.fixed_loop(cpuprobe.CALIBRATION_ITERATIONS)
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value}{unit}"


def scenario_rows(results: list[dict[str, Any]]) -> list[str]:
    rows = ["| target | typists + watchers | typed upd/s (intended) | ack p50 / p99 ms | fan-out p50 / p99 ms | fan-out max ms | "
            "server CPU (cores) | server ms CPU/update | client CPU (cores) | client loop lag p99 ms | "
            "other processes' CPU (cores) | mem/open essay KiB | mem/essay at end beyond text KiB | unacked / undelivered | "
            "closed / errors |",
            "|" + "---|" * 15]
    for r in results:
        if "failed" in r:
            rows.append(f"| {r['target']} | {r['students']} | FAILED: {r['failed'].splitlines()[0][:200]} |" + " |" * 12)
            continue
        ack = r["ack_ms"] or {}
        fo = r["fanout_ms"]
        u = r["updates"]
        mem = r["memory_per_essay_kib"]
        teacher_sockets = r.get("teacher_sockets", r["watchers_connected"])
        sockets = "" if teacher_sockets == r["watchers_connected"] else f" on {teacher_sockets} sockets"
        rows.append(
            f"| {r['target']} | {r['typists_connected']} + {r['watchers_connected']}"
            f"{sockets} | {u['typed_per_s']} ({u.get('intended_per_s')}) | "
            f"{fmt(ack.get('p50'))} / {fmt(ack.get('p99'))} | {fmt(fo['p50'])} / {fmt(fo['p99'])} | {fmt(fo['max'])} | "
            f"{r['server']['cpu_cores']} | {fmt(r['server']['cpu_ms_per_update'])} | {r['client']['cpu_cores']} | "
            f"{fmt(r['client']['loop_lag_ms']['p99'])} | {r['machine']['other_cores']} | {mem['open_watched_empty']} | {mem['end_beyond_text']} | "
            f"{fmt(u['unacked'])} / {u['undelivered']} | {sum(r['closed_sockets'].values())} / "
            f"{sum(r['errors'].values())} |")
    return rows


def continuous_verdicts(results: list[dict[str, Any]]) -> list[str]:
    """Issue 13's goals for the continuous shape: at 300 typists fan-out p99 <= 1.0x y-websocket's
    in the same run and ack p99 <= 50 ms; at 1,000 fan-out p99 <= 50 ms and ack p99 <= 100 ms."""
    reference = {r["students"]: r for r in results if r["target"] == "y-websocket" and "failed" not in r}
    out = []
    for r in results:
        if "failed" in r or not r["target"].startswith("essaycoach"):
            continue
        fo, ack = r["fanout_ms"]["p99"], (r["ack_ms"] or {}).get("p99")
        if r["students"] >= 1000:
            checks = [("teacher-visible p99 <= 50 ms", fo is not None and fo <= 50, f"{fmt(fo)} ms"),
                      ("ack p99 <= 100 ms", ack is not None and ack <= 100, f"{fmt(ack)} ms")]
        else:
            ref = reference.get(r["students"], {}).get("fanout_ms", {}).get("p99")
            checks = [("teacher-visible p99 <= 1.0x y-websocket's in the same run",
                       fo is not None and ref is not None and fo <= ref,
                       f"{fmt(fo)} ms vs {fmt(ref)} ms" if ref else f"{fmt(fo)} ms (no y-websocket run)"),
                      ("ack p99 <= 50 ms", ack is not None and ack <= 50, f"{fmt(ack)} ms")]
        checks.append(("every typist connected, nothing closed", r["typists_connected"] >= r["students"]
                       and not r["errors"] and not r["closed_sockets"],
                       f"{r['typists_connected']} typists, {sum(r['errors'].values())} connect errors, "
                       f"{sum(r['closed_sockets'].values())} sockets closed"))
        out.append(f"**{r['target']} at {r['students']} typists + {r['teachers']} teachers ({r['teacher_sockets']} "
                   f"teacher sockets), continuous typing:**")
        out += [f"- {'MET' if ok else 'NOT MET'}: {name} — measured {got}" for name, ok, got in checks]
    return out


ATTACK_EXPECTED = {
    "flood": "1008 (message rate)", "oversized": "permission-denied, 4413", "huge_frame": "1009",
    "non_text": "4400, nothing applied", "awareness_spam": "open, other ids dropped", "awareness_big": "1009",
    "bogus_ticket": "HTTP 403", "spent_ticket": "HTTP 403", "trespass": "4404",
    "socket_cap": "4429 beyond the socket cap; ticket 429 beyond the bucket",
}


def mix_lines(results: list[dict[str, Any]]) -> list[str]:
    """The report's lines for `--text`/`--big-essays`/`--hostile`: per result, the honest
    typists' fate, the big essays' own latency and what each attack got."""
    out: list[str] = []
    for r in results:
        mixed = r.get("mix")
        if "failed" in r or not mixed:
            continue
        ack = r["ack_ms"] or {}
        fo = r["fanout_ms"]
        honest = mixed["honest"]
        verdict = "SOME HONEST UPDATE LOST OR SOCKET CLOSED" if honest["lost_or_closed"] else \
            "no honest update lost, no honest socket closed"
        out += [f"**{r['target']} at {r['students']} typists ({mixed['text']} text):**",
                f"- honest typists: ack p50 / p99 {fmt(ack.get('p50'))} / {fmt(ack.get('p99'))} ms "
                f"({fmt(ack.get('samples'))} samples), fan-out p50 / p99 {fmt(fo['p50'])} / {fmt(fo['p99'])} ms "
                f"({fo['samples']} samples); unacked {fmt(honest['unacked'])}, undelivered {honest['undelivered']}, "
                f"teachers' docs differing {honest['teacher_mismatches']}, sockets closed "
                f"{honest['closed_sockets'] or 0}: **{verdict}**"]
        big = mixed.get("big_essays")
        if big:
            bak = big["ack_ms"] or {}
            out.append(f"- big essays: {big['essays']} filled to {big['chars_each']:,} characters "
                       f"({big['utf8_bytes_each']:,} UTF-8 bytes) in {big['fill_s']} s; their typists' ack p50 / p99 "
                       f"{fmt(bak.get('p50'))} / {fmt(bak.get('p99'))} ms, fan-out p50 / p99 "
                       f"{fmt(big['fanout_ms']['p50'])} / {fmt(big['fanout_ms']['p99'])} ms "
                       f"({big['fanout_ms']['samples']} samples)")
        hostile = mixed.get("hostile")
        if hostile and "skipped" in hostile:
            out.append(f"- hostile clients: not run ({hostile['skipped']})")
        elif hostile:
            w = hostile["teacher_watchers"]
            vs = w.get("vs_stored", {"checked": 0, "differing": []})
            diff = "; ".join(f"essay {d['essay']}: watched {d['watched_chars']:,} characters, stored "
                             f"{d['stored_chars']:,}" for d in vs["differing"])
            out += [f"- {hostile['clients']} hostile clients (per-user socket and ticket caps: {hostile['user_caps']}); "
                    f"the class teacher's doc sockets on their essays: {w['sockets']}, closed {w['closed'] or 0}, "
                    f"saw a root other than `content` {w['saw_other_roots']}, longest text {w['max_text_chars']:,} "
                    f"characters; reloaded afresh after the run, {len(vs['differing'])} of {vs['checked']} differ from "
                    f"what the teacher watched" + (f" (**{diff}**: refused updates reached the watcher)" if diff else ""),
                    "",
                    "| attack | rounds | frames or handshakes sent | acked | refused | what the server answered | expected |",
                    "|---|---|---|---|---|---|---|"]
            for attack, got in hostile["attacks"].items():
                answers = ", ".join(f"{k} x{v}" for k, v in got["outcomes"].items())
                out.append(f"| {attack} | {got['rounds']} | {got['frames_sent']} | {fmt(got['frames_acked'])} | "
                           f"{fmt(got['frames_refused'])} | {answers} | {ATTACK_EXPECTED.get(attack, '')} |")
            out.append("")
    if any("hostile" in (r.get("mix") or {}) for r in results):
        out.append("Hostile clients run against the essaycoach targets only: the reference servers (y-websocket, "
                   "pycrdt-websocket) enforce no limits, so any client may write anything there.")
    return out


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        if ("failed" in r or not r["target"].startswith("essaycoach") or r["students"] < 1000
                or r.get("shape", "bursts") != "bursts"):
            continue
        fo, ack, mem = r["fanout_ms"]["p99"], (r["ack_ms"] or {}).get("p99"), r["memory_per_essay_kib"]
        checks = [
            ("teacher-visible p99 <= 50 ms", fo is not None and fo <= 50, f"{fmt(fo)} ms"),
            ("ack p99 <= 100 ms", ack is not None and ack <= 100, f"{fmt(ack)} ms"),
            ("memory <= 64 KiB per open essay beyond its text",
             max(mem["open_watched_empty"], mem["end_beyond_text"]) <= 64,
             f"{mem['open_watched_empty']} KiB open, {mem['end_beyond_text']} KiB at end"),
            ("1,000 typists + 30 teachers connected and typing",
             r["typists_connected"] >= r["students"] and not r["errors"], f"{r['typists_connected']} typists, "
             f"{sum(r['errors'].values())} connect errors, {sum(r['closed_sockets'].values())} sockets closed"),
        ]
        out.append(f"**{r['target']} at {r['students']} typists + {r['teachers']} teachers:**")
        out += [f"- {'MET' if ok else 'NOT MET'}: {name} — measured {got}" for name, ok, got in checks]
    return out


def ratios(results: list[dict[str, Any]], scale: int = COMPARE_AT) -> list[str]:
    at = {r["target"]: r for r in results if r.get("students") == scale and "failed" not in r}
    out = []
    for ours in ("essaycoach", "essaycoach-default-proxy"):
        if ours not in at:
            continue
        for theirs in ("y-websocket", "pycrdt-websocket"):
            if theirs not in at:
                continue
            a, b = at[ours]["fanout_ms"], at[theirs]["fanout_ms"]
            if a["p99"] and b["p99"]:
                out.append(f"| {ours} / {theirs} | {a['p99']} / {b['p99']} ms | **{a['p99'] / b['p99']:.2f}x** | "
                           f"{a['p50']} / {b['p50']} ms | {a['p50'] / b['p50']:.2f}x |")
    if out:
        out = ["| ours / theirs | fan-out p99 | ratio | fan-out p50 | ratio |", "|---|---|---|---|---|"] + out
    return out


ANALYSIS_MARK = "## Analysis"


def during_window(speed: dict[str, Any] | None) -> str:
    """The machine's speed and saturation in the measured window (`cpuprobe`), for a target's line."""
    if not speed or not speed.get("samples"):
        return ""
    return (f"; machine in the window: calibration loop {speed['cpu_ms_p50']} ms of CPU p50, {speed['cpu_ms_max']} "
            f"max ({speed['samples']} samples), a task waiting for a core {fmt(speed['cpu_wait_fraction'])} of the time")


def write_markdown(path: Path, doc: dict[str, Any]) -> None:
    keep = ""
    if path.exists():
        old = path.read_text()
        if ANALYSIS_MARK in old:
            keep = old[old.index(ANALYSIS_MARK):]
    lines = ["# EssayCoach Live — loadtest results", "",
             "Generated by `ops/loadtest/run.py` (the raw numbers are in `results.json` beside this file). "
             "A benchmark, not a test: one 2-core machine runs the server *and* the client, so every number "
             "here includes contention between them; other work on the machine adds noise (see load average). "
             "The verdict, the bottlenecks and what the numbers mean are in **Analysis** at the end "
             "(hand-written; the generator keeps that section when it rewrites this file).", ""]
    for k, run in enumerate(doc["runs"]):
        m = run["machine"]
        title = "Run" if k == 0 else f"Rerun {k}"
        lines += [f"## {title}: {run['started_at']}", "",
                  f"- machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}, {m['ram_gib']} GiB RAM, {m['os']}; "
                  f"load average at start {' '.join(m['loadavg_at_start'])}"
                  + (f"; CPU calibration {m['calibration_ms']} ms (a fixed Python loop, lower is faster)"
                     if "calibration_ms" in m else ""),
                  f"- software: Python {m['python']}, " + ", ".join(f"{k2} {v}" for k2, v in m["versions"].items()),
                  f"- command: `{run['command']}` (wall time {run['wall_s'] / 60:.1f} min)",
                  f"- typing model: {run['typing_model']}; measured window {run['duration_s']} s after "
                  f"{run['warmup_s']} s warm-up; client: one asyncio process ({run['loop']})"]
        if run.get("mix"):
            lines.append(f"- mixed in: {run['mix']['described']}")
        lines.append("")
        by_scale: dict[int, list[dict[str, Any]]] = {}
        for r in run["results"]:
            by_scale.setdefault(r["students"], []).append(r)
        for scale in sorted(by_scale):
            lines += [f"### {scale} typists", ""] + scenario_rows(by_scale[scale]) + [""]
            for r in by_scale[scale]:
                if "failed" in r:
                    continue
                cpu = ", ".join(f"{k.replace('ray::', '')} {v}" for k, v in r["server"]["cpu_cores_by_process"].items() if v >= 0.01)
                rss = r["server"]["rss_mib"]
                count = ", ".join(f"{k.replace('ray::', '')} x{v}" for k, v in r["server"].get("process_count_by_name", {}).items()
                                  if v > 1 and "ServeReplica" in k)
                lines.append(f"- {r['target']}@{scale}: server CPU by process (cores): {cpu}; tree RSS MiB before / "
                             f"students open / teachers open / end: {rss['before']} / {rss['students_open']} / "
                             f"{rss['teachers_open']} / {rss['end']}" + (f"; replicas at the end: {count}" if count else "")
                             + "".join(f"; memory per essay by process (KiB), {label}: " + ", ".join(
                                 f"{k.replace('ray::', '')} {v}" for k, v in by_proc.items())
                                 for label, key in (("students open", "open_by_process"),
                                                    ("students and teachers open", "open_watched_by_process"),
                                                    ("at the end", "end_by_process"))
                                 for by_proc in [r["memory_per_essay_kib"].get(key)] if by_proc)
                             + during_window(r['machine'].get('during_window'))
                             + "".join(f"; the web app's {kind} sockets: {w['open']} open, messages a second "
                                       + (", ".join(f"{t} {n}" for t, n in w["messages_per_s_by_type"].items()) or "none")
                                       + (f", closed {w['closed']}" if w["closed"] else "")
                                       for kind, w in r.get("web_sockets", {}).items())
                             + f"; client runqueue wait {r['client'].get('runqueue_wait_fraction')} of wall time; "
                             f"connect {r['connect_s']['students']} s + {r['connect_s']['teachers']} s"
                             + "".join(f"; {n}" for n in r.get("notes", [])))
            lines.append("")
        for scale in sorted(by_scale):
            rat = ratios(run["results"], scale)
            if rat and (scale == COMPARE_AT or run.get("shape") == "continuous"):
                lines += [f"### Fan-out p99, ours as a ratio to the reference servers at {scale} typists", ""] + rat + [""]
        fast = {r["students"]: r for r in run["results"] if r["target"] == "essaycoach" and "failed" not in r}
        slow = {r["students"]: r for r in run["results"] if r["target"] == "essaycoach-default-proxy" and "failed" not in r}
        both = sorted(set(fast) & set(slow))
        if both:
            lines += ["### Fast path (HAProxy ingress, throughput mode; the default) vs Serve's default proxy", "",
                      "| typists | path | ack p50 / p99 ms | fan-out p50 / p99 ms | server CPU cores | server ms CPU/update |",
                      "|---|---|---|---|---|---|"]
            for s in both:
                for label, r in (("HAProxy fast path", fast[s]), ("default proxy", slow[s])):
                    lines.append(f"| {s} | {label} | {r['ack_ms']['p50']} / {r['ack_ms']['p99']} | "
                                 f"{r['fanout_ms']['p50']} / {r['fanout_ms']['p99']} | {r['server']['cpu_cores']} | "
                                 f"{r['server']['cpu_ms_per_update']} |")
            lines.append("")
        ver = verdicts(run["results"])
        if ver:
            lines += ["### Targets (1,000 typists + 30 teachers)", ""] + ver + [""]
        ver = continuous_verdicts(run["results"]) if run.get("shape") == "continuous" else []
        if ver:
            lines += ["### Targets under continuous typing (issue 13)", ""] + ver + [""]
        mixed = mix_lines(run["results"])
        if mixed:
            lines += [f"### Mixed in: {run['mix']['described']}", ""] + mixed + [""]
    lines += ["### Columns", "",
              "- *ack*: typed update leaves the client -> `[100][n]` covering it arrives (durable in the update log). "
              "Reference servers have no ack: n/a.",
              "- *fan-out*: typed update leaves the student's client -> the watching teacher's doc contains it "
              "(its state vector reaches the student's clock after that update). Includes client-side queueing.",
              "- *server CPU*: utime+stime of the server's whole process tree over the measured window / window length. "
              "*client CPU*: the load generator's own process, same window; *loop lag*: how late a 50 ms sleep "
              "in the client wakes (a saturated client inflates every latency above by about this much; the client's "
              "garbage collector is off from the start of typing until the last ack is in).",
              "- *mem/open essay*: (tree RSS with every essay open and watched, before typing - RSS before any socket) / essays; "
              "*at end beyond text*: (RSS at the end - RSS before) / essays - average text bytes. VmRSS summed over the tree.",
              "- *unacked / undelivered*: measured-window updates never acked / never seen by the teacher within 15 s "
              "after typing stopped; *closed / errors*: sockets the server closed during the run / failed connects.",
              ""]
    text = "\n".join(lines)
    if keep:
        text += "\n" + keep
    path.write_text(text if text.endswith("\n") else text + "\n")


# --- main ------------------------------------------------------------------------------------


def non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {number}")
    return number


def attack_list(value: str) -> tuple[str, ...]:
    chosen = tuple(a.strip() for a in value.split(",") if a.strip())
    unknown = [a for a in chosen if a not in attacks.ATTACKS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown attack(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(attacks.ATTACKS)}")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ops.loadtest.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--students", default=None,
                   help="typists per scenario, comma separated (default: the full plan: every target at 300, "
                        "then essaycoach, y-websocket and pycrdt-websocket at 1000)")
    p.add_argument("--typists", dest="students", help="the same as --students")
    p.add_argument("--teachers", type=int, default=None,
                   help="teachers watching, one class each (default 30; with --shape continuous one per "
                        f"{CLASS_SIZE} typists)")
    p.add_argument("--shape", choices=SHAPES, default="bursts",
                   help="typing model: bursts (the default: bursts and pauses, 10 essays per student account) or "
                        "continuous (a word every 0.5 s, 5%% of gaps 3 s; one account per student, classes of "
                        f"{CLASS_SIZE}, one teacher doc socket per essay; default targets essaycoach,y-websocket "
                        "at 300 typists; added to the existing results)")
    p.add_argument("--duration", type=float, default=None,
                   help="measured seconds per scenario (default 30; 60 with --shape continuous, so the window "
                        "holds the host's periodic work: compactions every 200 updates, ~100 s of typing)")
    p.add_argument("--warmup", type=float, default=None,
                   help="typing seconds before measuring (default 5; 10 with --shape continuous)")
    p.add_argument("--targets", default=None, help=f"comma separated, from {', '.join(TARGETS)} (default: all; "
                                                 "with --shape continuous essaycoach,y-websocket)")
    p.add_argument("--text", choices=corpora.TEXTS, default="latin",
                   help="the typed text: latin (the default: the ASCII essay), cyrillic (two UTF-8 bytes a letter) "
                        "or mixed (Cyrillic, accented Latin, Greek, CJK, Arabic, combining marks, emoji and other "
                        "astral characters: code points, UTF-16 units and UTF-8 bytes differ within a word)")
    p.add_argument("--big-essays", type=non_negative, default=0, metavar="N",
                   help="fill N essays to near the 200,000-character limit (in the run's --text) before typing; "
                        "their students then type at the shape's rate like the others (default 0)")
    p.add_argument("--hostile", type=non_negative, default=0, metavar="N",
                   help="N hostile students on their own accounts beside the honest typists, each rotating through "
                        "floods, oversized and non-text updates, awareness spam, bogus/spent tickets, trespass and "
                        "socket-cap storms (essaycoach targets only; default 0)")
    p.add_argument("--attacks", type=attack_list, default=attacks.ATTACKS, metavar="A,B",
                   help=f"the hostile clients' rotation, comma separated from {', '.join(attacks.ATTACKS)} "
                        "(default: all; one alone shows what that attack costs the honest typists)")
    p.add_argument("--burst-mean", type=float, default=12, help="mean typing burst, seconds (default 12)")
    p.add_argument("--pause-mean", type=float, default=3, help="mean pause between bursts, seconds (default 3)")
    p.add_argument("--connect-limit", type=int, default=32, help="sockets opening at once (default 32)")
    p.add_argument("--essaycoach-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for essaycoach targets, e.g. ESSAYCOACH_DATABASE_URL=postgresql+asyncpg://...")
    p.add_argument("--data-key", action="store_true",
                   help="essaycoach targets seal essay text and update logs at rest (a fresh ESSAYCOACH_DATA_KEY): "
                        "the cost of encryption, against a run without it")
    p.add_argument("--json", type=Path, default=HERE / "results.json", help="raw results (default ops/loadtest/results.json)")
    p.add_argument("--markdown", type=Path, default=HERE / "RESULTS.md", help="report (default ops/loadtest/RESULTS.md)")
    p.add_argument("--append", action="store_true", help="add this run to the existing results.json (a rerun) instead of replacing it")
    p.add_argument("--no-markdown", action="store_true")
    p.add_argument("--render-only", action="store_true", help="rewrite the report from --json; run nothing")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace, argv: list[str]) -> None:
    continuous = args.shape == "continuous"
    if args.duration is None:
        args.duration = 60.0 if continuous else 30.0
    if args.warmup is None:
        args.warmup = 10.0 if continuous else 5.0
    if args.targets is None:
        args.targets = "essaycoach,y-websocket" if continuous else ",".join(TARGETS)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            raise SystemExit(f"unknown target {t!r}; choose from {', '.join(TARGETS)}")
    if args.data_key:
        from db.crypto import new_key

        args.essaycoach_env.append(f"ESSAYCOACH_DATA_KEY={new_key()}")  # not in run["command"]: only the flag is
    if continuous:
        args.append = True  # a shape of its own: added to the report, never replacing the plan's runs
    if args.students is None and continuous:
        plan = [(t, COMPARE_AT) for t in targets]
    elif args.students is None:
        plan = [(t, n) for t, n in DEFAULT_PLAN if t in targets]
    else:
        scales = [int(s) for s in str(args.students).split(",")]
        plan = [(t, n) for n in scales for t in targets]
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    run: dict[str, Any] = {
        "started_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([".venv/bin/python -m ops.loadtest.run"] + argv),
        "machine": machine(),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0] + " event loop",
        "duration_s": args.duration, "warmup_s": args.warmup,
        "shape": args.shape,
        "sealed_at_rest": bool(args.data_key),
        "typing_model": typing_model(args.shape, args.burst_mean, args.pause_mean),
        "plan": plan, "results": [],
    }
    mix = Mix(text=args.text, big_essays=args.big_essays, hostile=args.hostile, rotation=args.attacks)
    if mix != Mix():
        run["mix"] = {"text": mix.text, "big_essays": mix.big_essays, "hostile": mix.hostile,
                      "attacks": list(mix.rotation),
                      "described": mix.describe()}
    log(f"plan: {plan}")
    with tempfile.TemporaryDirectory(prefix="essaycoach-loadtest-") as workroot:
        for name, students in plan:
            if args.teachers is not None:
                teachers = min(args.teachers, students)
            else:
                teachers = math.ceil(students / CLASS_SIZE) if continuous else min(30, students)
            run["results"].append(await run_target(name, students, teachers, args, Path(workroot)))
            run["wall_s"] = round(time.monotonic() - t0, 1)
            save(args, run)
    run["wall_s"] = round(time.monotonic() - t0, 1)
    save(args, run)
    log(f"done in {run['wall_s'] / 60:.1f} min: {args.json}" + ("" if args.no_markdown else f", {args.markdown}"))


_saved_previous: list[dict[str, Any]] | None = None


def save(args: argparse.Namespace, run: dict[str, Any]) -> None:
    global _saved_previous
    if _saved_previous is None:
        _saved_previous = []
        if args.append and args.json.exists():
            _saved_previous = json.loads(args.json.read_text()).get("runs", [])
    doc = {"runs": _saved_previous + [run]}
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if not args.no_markdown:
        write_markdown(args.markdown, doc)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.render_only:
        write_markdown(args.markdown, json.loads(args.json.read_text()))
        return
    try:
        import uvloop  # already installed with uvicorn[standard]; the plain loop works too
        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(amain(args, argv))


if __name__ == "__main__":
    main()
