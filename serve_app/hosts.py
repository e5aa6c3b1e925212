"""How the Gateway reaches the essay hosts: `EssayHosts.of(essay_id)` is the essay's host as an
`actors.host_api.HostAPI`, in this process (`InProcessHosts`: tests, scripts, one process) or a
Ray actor (`RayHosts`: inside Serve). The Gateway never knows which one it has.

Under Ray each `RayHost` turns a typed method into the host actor's remote method of the same
name and signature (`actors.ray_host.EssayHostShell`); a call that meets a restarting host
(`ActorDiedError`, `ActorUnavailableError`) is sent again for up to `RETRY_FOR_SECONDS` when the
method is declared `@retry_safe` in `HostAPI`, and fails at once when it is `@not_retried`.
Yjs updates (`apply_update`) travel on one stream per host (`actors.host_stream`), not as Ray calls.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from actors import retry, tracing
from actors.analysis.service import build_engine, rules_worker
from actors.broadcast import Bus, make_bus
from actors.config import HostConfig
from actors.host import EssayHost
from actors.host_api import HostAPI, HostUnavailable, retry_safe_of
from actors.host_stream import Answer, HostStream, Room, StreamServer
from actors.routing import host_index
from serve_app.settings import Settings

if TYPE_CHECKING:
    from serve_app.deps import Context

Probe = Callable[[], Awaitable[None]]
P = ParamSpec("P")
R = TypeVar("R")


_applying: set[asyncio.Future[int]] = set()
"""`EssayHosts.submit_update`'s tasks, referenced until done."""


class LiveView:
    """A loaded essay's text, word count and seq (`HostAPI.read` / `current`)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.text: str = data["text"]
        self.word_count: int = data["word_count"]
        self.seq: int = data["seq"]


class EssayHosts(ABC):
    """The Gateway's view of the essay hosts and the bus: `of(essay_id)` routes by `host_index`,
    `every()` is each host once (class-wide questions); the rest are conveniences over those."""

    bus: Bus
    hosts: int

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @abstractmethod
    def host(self, index: int) -> HostAPI:
        """Host number `index` (0 <= index < hosts)."""

    def of(self, essay_id: uuid.UUID) -> HostAPI:
        """The one host of this essay (its only writer)."""
        return self.host(host_index(essay_id, self.hosts))

    def every(self) -> list[HostAPI]:
        return [self.host(i) for i in range(self.hosts)]

    def submit_update(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None, origin: str,
                      live: bool, node: str | None, answer: Answer) -> None:
        """`apply_update` on the essay's host with its outcome told to `answer` (`(seq, None,
        room)` once committed, `(None, error, None)`), never from inside this call. Here a task awaits it;
        `RayHosts` writes it to the host's stream and is told from the stream's receive callback,
        with no task or coroutine per update."""
        applying = asyncio.ensure_future(self.of(essay_id).apply_update(
            essay_id, update, author_id=author_id, origin=origin, live=live, node=node))
        _applying.add(applying)

        def done(task: asyncio.Future[int]) -> None:
            _applying.discard(task)
            if task.cancelled():
                answer(None, asyncio.CancelledError("update cancelled"), None)
            elif task.exception() is not None:
                answer(None, task.exception(), None)
            else:
                answer(task.result(), None, self.room(essay_id))

        applying.add_done_callback(done)

    def room(self, essay_id: uuid.UUID) -> Room | None:
        """`EssayHost.room` where the host is in this process without a stream; else None
        (unknown: the doc socket then hands typing over only after its ack)."""
        return None

    async def set_text(self, essay_id: uuid.UUID, text: str, *, author_id: uuid.UUID | None) -> int:
        return await self.of(essay_id).set_text(essay_id, text, author_id=author_id)

    async def read(self, essay_id: uuid.UUID) -> LiveView | None:
        data = await self.of(essay_id).read(essay_id)
        return LiveView(data) if data is not None else None

    async def current(self, essay_id: uuid.UUID) -> LiveView:
        """Load the essay on its host if needed and read it."""
        return LiveView(await self.of(essay_id).current(essay_id))

    async def drop(self, essay_id: uuid.UUID) -> None:
        await self.of(essay_id).drop(essay_id)

    async def release(self, essay_id: uuid.UUID) -> None:
        await self.of(essay_id).release(essay_id)

    async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]:
        """Students of the class with an open document socket, on any host."""
        return set().union(*await asyncio.gather(*(h.live_students(class_id) for h in self.every())))

    async def student_rows(self, class_id: uuid.UUID) -> list[dict[str, Any]]:
        """Dashboard rows of the class's loaded essays, from every host."""
        rows = await asyncio.gather(*(h.student_rows(class_id) for h in self.every()))
        return [row for host_rows in rows for row in host_rows]

    async def watch_class(self, class_id: uuid.UUID, delta: int) -> None:
        """A dashboard of the class opened (+1) or closed (-1): every host publishes its rows."""
        await asyncio.gather(*(h.watch(f"class:{class_id}", delta) for h in self.every()))

    def readiness_probes(self) -> list[tuple[str, Probe]]:
        return [("bus", self.bus.ping)]


class InProcessHosts(EssayHosts):
    """Hosts as plain `EssayHost` objects in this process, sharing the Gateway's store and an
    in-memory bus.

    Their leases are held under `{name}-{index}`. Two apps on one store whose hosts share names
    act as one set of hosts restarted by turns: the one that loads an essay takes its lease at
    once, as a restarted host takes its earlier process's, and the other's next write of it is
    refused (sockets 1013). Tests use that to stand for two Gateway replicas over the same hosts.
    Hosts named apart stand apart: loading an essay the other holds gets `EssayMoved` (their
    hand-over cannot reach across apps) and the holder keeps it."""

    def __init__(self, settings: Settings, ctx: Context, *, bus: Bus | None = None,
                 config: HostConfig | None = None, streams: bool = False, name: str = "essay-host") -> None:
        """`streams`: typed updates (`submit_update`) reach the hosts over a host stream on
        127.0.0.1, as under Ray (tests of the Gateway's stream path); else by a direct call."""
        self.bus = bus or make_bus(settings.bus_config(), cluster=False)
        self.ctx = ctx
        self.hosts = settings.hosts
        cfg = config or settings.host_config()
        analysis = settings.analysis_config()
        # One rules worker for this process's hosts, as one per host process under Ray.
        self.worker = rules_worker(analysis)
        self.analyzer = build_engine(analysis, worker=self.worker)
        # As under Ray: tier 1 on a local-rules engine of its own, the LLM tier on the full one.
        local = build_engine(analysis.local_only(), worker=self.worker) if self.analyzer.llm_enabled else None
        # The engine's keyword arguments are explicit where host.Analyzer says **kwargs.
        self.host_objects = [EssayHost(sessions=ctx.sessions, bus=self.bus, config=cfg,
                                       analyzer=self.analyzer,  # type: ignore[arg-type]
                                       local_analyzer=local,  # type: ignore[arg-type]
                                       name=f"{name}-{index}", hand_over=self._hand_over)
                             for index in range(settings.hosts)]
        self._servers: list[StreamServer] = []
        self._streams: list[HostStream] | None = [] if streams else None

    async def _hand_over(self, name: str, essay_id: uuid.UUID) -> None:
        """`hand_over` on this process's host called `name` (LookupError: none; its lease runs out)."""
        for host in self.host_objects:
            if host.leases.holder.name == name:
                await host.hand_over(essay_id)
                return
        raise LookupError(f"no essay host {name} in this process")

    async def start(self) -> None:
        for host in self.host_objects:
            await host.start()
        if self._streams is not None:
            for host in self.host_objects:
                server = StreamServer(host)
                await server.start("127.0.0.1")
                self._servers.append(server)
                self._streams.append(HostStream(functools.partial(_local_address, server)))

    async def stop(self) -> None:
        for stream in self._streams or ():
            stream.close()
        for server in self._servers:
            await server.close()
        for host in self.host_objects:
            await host.stop()
        if self.worker is not None:
            self.worker.close()
        await self.bus.close()

    def host(self, index: int) -> HostAPI:
        return self.host_objects[index]

    def submit_update(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None, origin: str,
                      live: bool, node: str | None, answer: Answer) -> None:
        if not self._streams:
            super().submit_update(essay_id, update, author_id=author_id, origin=origin, live=live, node=node,
                                  answer=answer)
            return
        self._streams[host_index(essay_id, self.hosts)].submit(
            essay_id, update, author_id=author_id, origin=origin, live=live, node=node, answer=answer)

    def room(self, essay_id: uuid.UUID) -> Room | None:
        return self.host_for(essay_id).room(essay_id)

    def host_for(self, essay_id: uuid.UUID) -> EssayHost:
        """The essay's host object itself (tests look inside it)."""
        return self.host_objects[host_index(essay_id, self.hosts)]


async def _local_address(server: StreamServer) -> tuple[str, int, bytes]:
    return "127.0.0.1", server.port, server.token


class RayHost(HostAPI):
    """A Gateway's client of essay host actor `essay-host-{index}` (created on first use)."""

    def __init__(self, make_handle: Callable[[], Any], *, retry_for: float) -> None:
        self._make_handle = make_handle
        self._handle: Any = None  # a Ray actor handle: its `.remote` methods are invisible to mypy
        self._stream: HostStream | None = None
        self.retry_for = retry_for

    def handle(self) -> Any:
        if self._handle is None:
            self._handle = self._make_handle()
        return self._handle

    def stream(self) -> HostStream:
        """The stream to this host for typed updates (connects on first use)."""
        if self._stream is None:
            async def resolve() -> tuple[str, int, bytes]:
                address: tuple[str, int, bytes] = await self._retrying(lambda: self.handle().stream_address.remote())
                return address

            self._stream = HostStream(resolve, retry_for=self.retry_for)
        return self._stream

    async def _retrying(self, call: Callable[[], Awaitable[R]]) -> R:
        """`call()`, again while the host restarts (max_restarts), for up to `retry_for` seconds:
        0.05 s, doubling, at most 1 s apart (`actors.retry`)."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError

        policy = retry.policy(first=0.05, cap=1.0, give_up_after=self.retry_for,
                              retry_on=(ActorDiedError, ActorUnavailableError))
        try:
            async for attempt in policy:
                with attempt:
                    return await call()
        except (ActorDiedError, ActorUnavailableError) as exc:
            raise HostUnavailable(f"essay host unavailable: {exc}") from exc
        raise AssertionError("unreachable: the policy re-raises")  # pragma: no cover

    async def _call(self, method: Callable[Concatenate[HostAPI, P], Awaitable[R]],
                    *args: P.args, **kwargs: P.kwargs) -> R:
        """The host actor's remote method of the same name, retried when `method` is retry-safe."""
        def remote() -> Awaitable[R]:
            if tracing.enabled:  # the host's span continues this trace (`EssayHostShell.traced`)
                return self.handle().traced.remote(  # type: ignore[no-any-return]
                    tracing.traceparent(), method.__name__, *args, **kwargs)
            return getattr(self.handle(), method.__name__).remote(*args, **kwargs)  # type: ignore[no-any-return]

        if retry_safe_of(method):
            return await self._retrying(remote)
        from ray.exceptions import ActorDiedError, ActorUnavailableError

        try:
            return await remote()
        except (ActorDiedError, ActorUnavailableError) as exc:  # it may have run: not repeated
            raise HostUnavailable(f"essay host unavailable: {exc}") from exc

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.close()  # a late update fails (StreamError) instead of connecting again

    # --- HostAPI ------------------------------------------------------------------------------

    async def apply_update(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None,
                           origin: str, live: bool = True, node: str | None = None) -> int:
        """Over the host stream (it resends unanswered updates after a break, for `retry_for`)."""
        return await self.stream().apply(essay_id, update, author_id=author_id, origin=origin, live=live, node=node)

    async def would_change(self, essay_id: uuid.UUID, update: bytes) -> bool:
        return await self._call(HostAPI.would_change, essay_id, update)

    async def set_text(self, essay_id: uuid.UUID, text: str, *, author_id: uuid.UUID | None) -> int:
        return await self._call(HostAPI.set_text, essay_id, text, author_id=author_id)

    async def sync(self, essay_id: uuid.UUID, state_vector: bytes) -> tuple[bytes, bytes]:
        return await self._call(HostAPI.sync, essay_id, state_vector)

    async def read(self, essay_id: uuid.UUID) -> dict[str, Any] | None:
        return await self._call(HostAPI.read, essay_id)

    async def current(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await self._call(HostAPI.current, essay_id)

    async def feedback(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await self._call(HostAPI.feedback, essay_id)

    async def analyze_now(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await self._call(HostAPI.analyze_now, essay_id)

    async def score_now(self, essay_id: uuid.UUID, rubric: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._call(HostAPI.score_now, essay_id, rubric)

    async def anchor_for(self, essay_id: uuid.UUID, start: int, end: int) -> dict[str, Any]:
        return await self._call(HostAPI.anchor_for, essay_id, start, end)

    async def resolve(self, essay_id: uuid.UUID, anchors: list[str | None]) -> list[tuple[int, int] | None]:
        return await self._call(HostAPI.resolve, essay_id, anchors)

    async def event_state(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await self._call(HostAPI.event_state, essay_id)

    async def events_after(self, essay_id: uuid.UUID, last_seq: int, epoch: str | None) -> list[str] | None:
        return await self._call(HostAPI.events_after, essay_id, last_seq, epoch)

    async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]:
        return await self._call(HostAPI.live_students, class_id)

    async def student_rows(self, class_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self._call(HostAPI.student_rows, class_id)

    async def drop(self, essay_id: uuid.UUID) -> None:
        await self._call(HostAPI.drop, essay_id)

    async def release(self, essay_id: uuid.UUID) -> None:
        await self._call(HostAPI.release, essay_id)

    async def hand_over(self, essay_id: uuid.UUID) -> None:
        await self._call(HostAPI.hand_over, essay_id)

    async def attach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        await self._call(HostAPI.attach, essay_id, node)

    async def detach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        await self._call(HostAPI.detach, essay_id, node)

    async def watch(self, channel: str, delta: int) -> None:
        await self._call(HostAPI.watch, channel, delta)

    async def publish_event(self, essay_id: uuid.UUID, type_: str, **payload: Any) -> None:
        await self._call(HostAPI.publish_event, essay_id, type_, **payload)

    async def revision(self, essay_id: uuid.UUID, *, reason: str) -> int:
        return await self._call(HostAPI.revision, essay_id, reason=reason)


class RayHosts(EssayHosts):
    """Hosts as named, detached Ray actors shared by every Gateway replica (one writer per essay)."""

    RETRY_FOR_SECONDS = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hosts = settings.hosts
        self.namespace = settings.ray_namespace
        self.bus = make_bus(settings.bus_config(), cluster=True)
        self._hosts = [RayHost(functools.partial(self._make_handle, i), retry_for=self.RETRY_FOR_SECONDS)
                       for i in range(self.hosts)]

    def _make_handle(self, index: int) -> Any:
        import ray

        from actors.ray_host import EssayHostShell

        return ray.remote(EssayHostShell).options(
            name=f"essay-host-{index}", namespace=self.namespace, get_if_exists=True,
            lifetime="detached", max_restarts=-1, max_concurrency=100_000, num_cpus=0,
            resources=self.settings.host_resources, scheduling_strategy="SPREAD",
            # Thousands of calls a second: Ray's per-task events grew the GCS ~29 KiB per
            # open essay over a benchmark run and are no use for this actor's calls.
            enable_task_events=False,
        ).remote(self.settings.host_shell_config())

    def host(self, index: int) -> RayHost:
        return self._hosts[index]

    def submit_update(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None, origin: str,
                      live: bool, node: str | None, answer: Answer) -> None:
        self._hosts[host_index(essay_id, self.hosts)].stream().submit(
            essay_id, update, author_id=author_id, origin=origin, live=live, node=node, answer=answer)

    async def stop(self) -> None:
        for host in self._hosts:
            await host.close()
        await self.bus.close()

    def readiness_probes(self) -> list[tuple[str, Probe]]:
        async def hosts() -> None:
            await asyncio.gather(*(host.handle().stats.remote() for host in self._hosts))

        return [("bus", self.bus.ping), ("hosts", hosts)]


def make_hosts(settings: Settings, ctx: Context) -> EssayHosts:
    """Ray actors inside a Serve replica; in-process hosts anywhere else (tests, scripts), even
    when the process happens to be connected to a Ray cluster."""
    from ray import serve

    try:
        serve.get_replica_context()
    except Exception:  # RayServeException outside a replica
        return InProcessHosts(settings, ctx)
    return RayHosts(settings)
