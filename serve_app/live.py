"""How the Gateway reaches the essay hosts: in-process (tests, one process) or Ray actors (Serve).

Both expose the same `LiveEssays` interface; the Gateway never knows which one it has.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol


from actors.analysis.service import build_engine
from actors.broadcast import Bus, make_bus
from actors.config import HostConfig
from actors.host import EssayHost
from actors.host_stream import HostStream
from actors.routing import host_index
from serve_app.settings import Settings

if TYPE_CHECKING:
    from serve_app.deps import Context

Probe = Callable[[], Awaitable[None]]


class LiveEssays(Protocol):
    """The Gateway's view of essay hosts and the bus."""

    bus: Bus

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def call(self, essay_id: uuid.UUID, method: str, *args: Any, **kwargs: Any) -> Any: ...

    async def call_all(self, method: str, *args: Any) -> list[Any]: ...

    async def set_text(self, essay_id: uuid.UUID, text: str, *, author_id: uuid.UUID) -> int: ...

    async def read(self, essay_id: uuid.UUID) -> Any: ...

    async def current(self, essay_id: uuid.UUID) -> Any: ...

    async def drop(self, essay_id: uuid.UUID) -> None: ...

    async def release(self, essay_id: uuid.UUID) -> None: ...

    async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]: ...

    def readiness_probes(self) -> list[tuple[str, Probe]]: ...


class LiveView:
    def __init__(self, data: dict[str, Any]) -> None:
        self.text: str = data["text"]
        self.word_count: int = data["word_count"]
        self.seq: int = data["seq"]


class HostRouter:
    """Routes essay calls to hosts by `host_index`; subclasses say how a host is reached."""

    bus: Bus
    hosts: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def call(self, essay_id: uuid.UUID, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def set_text(self, essay_id: uuid.UUID, text: str, *, author_id: uuid.UUID) -> int:
        return int(await self.call(essay_id, "set_text", essay_id, text, author_id=author_id))

    async def read(self, essay_id: uuid.UUID) -> LiveView | None:
        data = await self.call(essay_id, "read", essay_id)
        return LiveView(data) if data is not None else None

    async def current(self, essay_id: uuid.UUID) -> LiveView:
        """Load the essay on its host if needed and read it."""
        return LiveView(await self.call(essay_id, "current", essay_id))

    async def drop(self, essay_id: uuid.UUID) -> None:
        await self.call(essay_id, "drop", essay_id)

    async def release(self, essay_id: uuid.UUID) -> None:
        await self.call(essay_id, "release", essay_id)

    async def call_all(self, method: str, *args: Any) -> list[Any]:
        raise NotImplementedError

    async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]:
        return set().union(*await self.call_all("live_students", class_id))

    def readiness_probes(self) -> list[tuple[str, Probe]]:
        return [("bus", self.bus.ping)]


class InProcessLive(HostRouter):
    """Hosts as plain objects in this process, sharing the Gateway's store and an in-memory bus."""

    def __init__(self, settings: Settings, ctx: "Context", *, bus: Bus | None = None,
                 config: HostConfig | None = None) -> None:
        self.bus = bus or make_bus(settings.bus_config(), cluster=False)
        self.ctx = ctx
        self.hosts = settings.hosts
        cfg = config or settings.host_config()
        analysis = settings.analysis_config()
        self.analyzer = build_engine(analysis)
        # As under Ray: tier 1 on a local-rules engine of its own, the LLM tier on the full one.
        local = build_engine(analysis.local_only()) if self.analyzer.llm_enabled else None
        # The engine's keyword arguments are explicit where host.Analyzer says **kwargs (issue 15's
        # typed host interface replaces that protocol).
        self.host_objects = [EssayHost(sessions=ctx.sessions, bus=self.bus, config=cfg,
                                       analyzer=self.analyzer,  # type: ignore[arg-type]
                                       local_analyzer=local)  # type: ignore[arg-type]
                             for _ in range(settings.hosts)]

    async def start(self) -> None:
        for host in self.host_objects:
            await host.start()

    async def stop(self) -> None:
        for host in self.host_objects:
            await host.stop()
        await self.bus.close()

    def host_for(self, essay_id: uuid.UUID) -> EssayHost:
        return self.host_objects[host_index(essay_id, self.hosts)]

    async def call(self, essay_id: uuid.UUID, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.host_for(essay_id), method)(*args, **kwargs)

    async def call_all(self, method: str, *args: Any) -> list[Any]:
        return [await getattr(h, method)(*args) for h in self.host_objects]


# Not idempotent: a call that failed as "unavailable" may have run, and running it twice would
# number an event twice or miscount the sockets a host publishes for (the socket fails instead and
# its client reconnects).
NOT_RETRIED = frozenset({"publish_event", "revision", "attach", "detach", "watch"})


class RayLive(HostRouter):
    """Hosts as named, detached Ray actors shared by every Gateway replica (one writer per essay).

    Typed updates (`apply_update`) travel on one stream per host (`actors.host_stream`), not as
    Ray calls; everything else is a Ray call.
    """

    RETRY_FOR_SECONDS = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hosts = settings.hosts
        self.namespace = settings.ray_namespace
        self.bus = make_bus(settings.bus_config(), cluster=True)
        self._handles: dict[int, Any] = {}
        self._streams: dict[int, HostStream] = {}

    def handle(self, index: int) -> Any:
        import ray

        from actors.ray_host import EssayHostShell

        if index not in self._handles:
            self._handles[index] = ray.remote(EssayHostShell).options(  # type: ignore[attr-defined]
                name=f"essay-host-{index}", namespace=self.namespace, get_if_exists=True,
                lifetime="detached", max_restarts=-1, max_concurrency=100_000, num_cpus=0,
                resources=self.settings.host_resources, scheduling_strategy="SPREAD",
                # Thousands of calls a second: Ray's per-task events grew the GCS ~29 KiB per
                # open essay over a benchmark run and are no use for this actor's calls.
                enable_task_events=False,
            ).remote(self.settings.host_shell_config())
        return self._handles[index]

    async def _call_host(self, index: int, method: str, *args: Any, **kwargs: Any) -> Any:
        # Reads and Yjs updates are safe to repeat (applying an update twice is a no-op); events
        # and revisions are not.
        return await self._retrying(lambda: self.handle(index).call.remote(method, *args, **kwargs),
                                    retry=method not in NOT_RETRIED)

    def stream(self, index: int) -> HostStream:
        """The stream to host `index` for typed updates (connects on first use)."""
        stream = self._streams.get(index)
        if stream is None:
            async def resolve() -> tuple[str, int, bytes]:
                return await self._retrying(lambda: self.handle(index).stream_address.remote())

            stream = self._streams[index] = HostStream(resolve, retry_for=self.RETRY_FOR_SECONDS)
        return stream

    async def _retrying(self, call: Callable[[], Awaitable[Any]], *, retry: bool = True) -> Any:
        """`call()`, again while the host restarts (max_restarts), for up to `RETRY_FOR_SECONDS`."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError

        delay, waited = 0.05, 0.0
        while True:
            try:
                return await call()
            except (ActorDiedError, ActorUnavailableError):
                if not retry or waited >= self.RETRY_FOR_SECONDS:
                    raise
                await asyncio.sleep(delay)
                waited += delay
                delay = min(1.0, delay * 2)

    async def call(self, essay_id: uuid.UUID, method: str, *args: Any, **kwargs: Any) -> Any:
        index = host_index(essay_id, self.hosts)
        if method == "apply_update":
            return await self.stream(index).apply(*args, **kwargs)
        return await self._call_host(index, method, *args, **kwargs)

    async def call_all(self, method: str, *args: Any) -> list[Any]:
        return list(await asyncio.gather(*(self._call_host(i, method, *args) for i in range(self.hosts))))

    async def stop(self) -> None:
        for stream in self._streams.values():
            stream.close()  # a late update fails (StreamError) instead of connecting again
        await self.bus.close()

    def readiness_probes(self) -> list[tuple[str, Probe]]:
        async def hosts() -> None:
                await asyncio.gather(*(self.handle(i).stats.remote() for i in range(self.hosts)))

        return [("bus", self.bus.ping), ("hosts", hosts)]


def make_live(settings: Settings, ctx: "Context") -> LiveEssays:
    """Ray actors inside a Serve replica; in-process hosts anywhere else (tests, scripts), even
    when the process happens to be connected to a Ray cluster."""
    from ray import serve

    try:
        serve.get_replica_context()
    except Exception:  # RayServeException outside a replica
        return InProcessLive(settings, ctx)
    return RayLive(settings)
