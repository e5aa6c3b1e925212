"""Ray shells: the named EssayHost actor and the in-Ray bus hub (the embedded default bus).

Only this module imports Ray in actors/. Each shell builds its collaborators in the actor process
from a plain `actors.config.HostShellConfig` its creator (serve_app.hosts) filled from the settings;
nothing here imports serve_app.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from actors import metrics, tracing
from actors.broadcast import QUEUE_MAX_BYTES, RESYNC, Handler, LocalFanout, Outbox, Published, make_bus, new_node_id
from actors.config import HostShellConfig
from actors.host import EssayHost
from actors.host_api import HostAPI, operations
from actors.host_stream import StreamServer
from actors.metrics import metric
from actors.process_tuning import lower_priority, release_free_memory_periodically, tune_gc

HUB_NAME = "essaycoach-bus-hub-v3"  # versioned: the hub is detached and outlives deploys; v2 added skip, v3 channel ops
SUBSCRIBER_TTL = 60.0


class _Subscriber:
    """A replica's registration at the hub: its channels and its queue of undelivered messages.

    Channel changes arrive as numbered operations (`version`, one counter per replica). Ray runs
    calls to an async actor in no guaranteed order, so each channel remembers the version of its
    latest add or remove (`versions`; removed channels stay as tombstones) and an older
    operation for it is ignored.
    """

    __slots__ = ("channels", "versions", "queue", "queued_bytes", "lost", "event")

    TOMBSTONES = 10_000

    def __init__(self) -> None:
        self.channels: set[str] = set()
        self.versions: dict[str, int] = {}
        self.queue: deque[tuple[str, bytes]] = deque()
        self.queued_bytes = 0
        self.lost: dict[str, None] = {}  # channels that dropped a message: RESYNC at the next poll
        self.event = asyncio.Event()

    def update(self, version: int, add: list[str], remove: list[str]) -> None:
        for channel in add:
            if version > self.versions.get(channel, 0):
                self.versions[channel] = version
                self.channels.add(channel)
        for channel in remove:
            if version > self.versions.get(channel, 0):
                self.versions[channel] = version
                self.channels.discard(channel)
        if len(self.versions) - len(self.channels) > self.TOMBSTONES:
            # Tombstones far older than the newest operation cannot meet a reordered operation.
            horizon = version - self.TOMBSTONES // 2
            self.versions = {c: v for c, v in self.versions.items() if c in self.channels or v > horizon}


class BusHub:
    """A tiny pub/sub broker in a Ray actor: publishers push, each subscriber long-polls a queue.

    A subscriber's queue holds at most `max_queue` messages and `max_bytes`; beyond, the oldest
    are dropped (a stalled replica loses messages, not the hub's memory) and its next poll ends
    with `RESYNC` for each channel that lost one."""

    def __init__(self, max_queue: int = 10_000, max_bytes: int = QUEUE_MAX_BYTES) -> None:
        self._subs: dict[str, _Subscriber] = {}
        self._last_poll: dict[str, float] = {}
        self._max_queue = max_queue
        self._max_bytes = max_bytes

    async def publish_many(self, messages: list[tuple[str, bytes, str | None]]) -> None:
        for channel, message, skip in messages:
            await self.publish(channel, message, skip)

    async def publish(self, channel: str, message: bytes, skip: str | None = None) -> None:
        """Queue for every subscriber of `channel` but `skip` (which delivered it itself)."""
        now = time.monotonic()
        for gone in [sub for sub, seen in self._last_poll.items() if now - seen > SUBSCRIBER_TTL]:
            self._subs.pop(gone, None)  # its replica died without saying goodbye
            self._last_poll.pop(gone, None)
        for name, sub in self._subs.items():
            if channel in sub.channels and name != skip:
                sub.queue.append((channel, message))
                sub.queued_bytes += len(message)
                while len(sub.queue) > self._max_queue or sub.queued_bytes > self._max_bytes:
                    dropped, old = sub.queue.popleft()
                    sub.queued_bytes -= len(old)
                    sub.lost[dropped] = None
                sub.event.set()

    async def update_channels(self, subscriber: str, version: int, add: list[str], remove: list[str]) -> None:
        """Operation `version` of `subscriber`: subscribe to `add`, unsubscribe from `remove`."""
        self._subs.setdefault(subscriber, _Subscriber()).update(version, add, remove)

    async def set_channels(self, subscriber: str, version: int, channels: list[str]) -> None:
        """`subscriber` (re-registering after the hub restarted) holds exactly `channels`."""
        sub = self._subs.setdefault(subscriber, _Subscriber())
        wanted = set(channels)
        sub.update(version, list(wanted), [c for c in sub.channels if c not in wanted])

    async def poll(self, subscriber: str, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        self._last_poll[subscriber] = time.monotonic() + timeout  # counts as seen until the poll ends
        sub = self._subs.setdefault(subscriber, _Subscriber())
        if not sub.queue and not sub.lost:
            sub.event.clear()
            try:  # not `wait_for`: on Python 3.11 it can drop a cancellation that meets the wake-up
                async with asyncio.timeout(timeout):
                    await sub.event.wait()
            except TimeoutError:
                return []
        out = list(sub.queue)
        out += [(channel, RESYNC) for channel in sub.lost]
        sub.queue.clear()
        sub.queued_bytes = 0
        sub.lost = {}
        return out

    async def drop(self, subscriber: str) -> None:
        self._subs.pop(subscriber, None)
        self._last_poll.pop(subscriber, None)


class HubBus:
    """The `Bus` over a BusHub actor: one long-poll loop per process feeds local handlers."""

    def __init__(self, namespace: str, *, max_bytes: int = QUEUE_MAX_BYTES) -> None:
        # The first process to make the (detached) hub sets its byte bound for its life.
        # Any: a Ray actor handle's methods (`.remote`) are not visible to a type checker.
        self.hub: Any = ray.remote(BusHub).options(
            name=HUB_NAME, namespace=namespace, get_if_exists=True, lifetime="detached",
            max_restarts=-1, max_concurrency=10_000, num_cpus=0, enable_task_events=False,
        ).remote(max_bytes=max_bytes)
        self.fanout = LocalFanout()
        self.node = self.subscriber = new_node_id()
        self._version = 0
        self._task: asyncio.Task[None] | None = None
        self._outbox = Outbox(self._send, name="hub-bus-sender", max_bytes=max_bytes)

    async def publish(self, channel: str, message: bytes, *, skip_node: str | None = None) -> None:
        """Queue and return: one sender ships batches to the hub, in order, off the ack path."""
        self._outbox.put((channel, message, skip_node))

    async def _send(self, batch: list[Published]) -> bool:
        try:
            await self.hub.publish_many.remote(batch)
        except Exception:  # the hub is restarting: these are lost, subscribers resync
            await asyncio.sleep(0.2)
            return False
        return True

    def deliver_local(self, channel: str, message: bytes) -> None:
        self.fanout.deliver(channel, message)

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    async def subscribe(self, channel: str, handler: Handler) -> Callable[[], None]:
        # One channel per call, numbered (the hub ignores an operation older than the channel's
        # latest): sending the whole list each time cost O(channels) per socket opened.
        if self.fanout.add(channel, handler):
            await self.hub.update_channels.remote(self.subscriber, self._next_version(), [channel], [])
        if self._task is None:
            self._task = asyncio.create_task(self._poll_loop())

        def unsubscribe() -> None:
            if self.fanout.remove(channel, handler):
                asyncio.ensure_future(
                    self.hub.update_channels.remote(self.subscriber, self._next_version(), [], [channel]))

        return unsubscribe

    async def _poll_loop(self) -> None:
        while True:
            try:
                batch = await self.hub.poll.remote(self.subscriber)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)  # hub restarting: re-register our channels and go on
                try:
                    await self.hub.set_channels.remote(self.subscriber, self._next_version(), self.fanout.channels())
                except Exception:
                    continue
                for channel in self.fanout.channels():
                    self.fanout.deliver(channel, RESYNC)
                continue
            for channel, message in batch:
                self.fanout.deliver(channel, message)

    async def ping(self) -> None:
        """Readiness: one round trip to the hub (an empty channel operation)."""
        await self.hub.update_channels.remote(self.subscriber, self._next_version(), [], [])

    async def close(self) -> None:
        self._outbox.close()
        if self._task:
            self._task.cancel()
        try:
            await self.hub.drop.remote(self.subscriber)
        except Exception:
            pass


def node_address() -> str:
    """This Ray node's IP address."""
    address: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]  # unannotated in Ray
    return address


class EssayHostShell:
    """The Ray actor body: builds store, bus and EssayHost in the actor's own process, and
    answers `actors.host_api.HostAPI` as typed remote methods (Gateways call them through
    `serve_app.hosts.RayHost`)."""

    def __init__(self, config: HostShellConfig) -> None:
        self.config = config
        self.host: EssayHost | None = None
        self.stream: StreamServer | None = None
        self._trim: asyncio.Task[None] | None = None
        self._worker: Any = None  # the host process's rules worker (actors/analysis/worker.py)
        tune_gc()
        tracing.configure("essaycoach-host")  # in the actor's process, from its OTEL_* environment
        self._starting = asyncio.Lock()

    async def _host(self) -> EssayHost:
        if self.host is None:
            async with self._starting:
                if self.host is None:
                    from actors.analysis.service import rules_worker
                    from db.engine import make_engine, make_sessionmaker

                    # On this (the loop's) thread, before the store's thread and the rules worker start.
                    lower_priority(self.config.nice)
                    # On PostgreSQL the host's writes have pools of their own (db.engine's
                    # log_engine_for: 1 + 1, store_engine_for: 2 + 2); this one serves its reads
                    # (loading essays), so 5 + 10 keeps a host at <= 21 connections.
                    sqlite = self.config.database_url.startswith("sqlite")
                    pools = {} if sqlite else {"pool_size": 5, "max_overflow": 10}
                    engine = make_engine(self.config.database_url, keyring=self.config.keyring(), **pools)
                    name = ray.get_runtime_context().get_actor_name() or "essay-host"
                    self._worker = rules_worker(self.config.analysis)  # killed in shutdown; dies with us
                    host = EssayHost(sessions=make_sessionmaker(engine), bus=make_bus(self.config.bus, cluster=True),
                                     config=self.config.host, name=name, hand_over=self._ask_to_hand_over,
                                     analyzer=self._analyzer(), local_analyzer=self._local_analyzer())
                    # A restarted actor never saw the attaches of sockets opened before the crash.
                    with warnings.catch_warnings():  # Ray's own property uses its deprecated actor_id
                        warnings.simplefilter("ignore", DeprecationWarning)
                        host.knows_every_socket = not ray.get_runtime_context().was_current_actor_reconstructed
                    if not host.knows_every_socket:  # Ray restarted this host after a crash
                        metric("essaycoach_host_restarts_total").labels(name).inc()
                    await host.start()
                    # Again, now that start() loaded the spelling dictionary (~57 MiB of objects):
                    # frozen, full collections no longer walk it (unfrozen they paused the loop ~0.9 s).
                    tune_gc()
                    # The typing path (actors.host_stream): Gateways connect here, not via Ray calls.
                    stream = StreamServer(host)
                    await stream.start(node_address())
                    self.host, self.stream = host, stream
                    self._trim = asyncio.create_task(release_free_memory_periodically())
        return self.host

    async def _ask_to_hand_over(self, name: str, essay_id: uuid.UUID) -> None:
        """`EssayHost.hand_over` on the host actor `name` (the holder of an essay's lease), in the
        namespace the Gateways name the hosts in; ValueError when no such actor runs: its lease
        runs out instead."""
        namespace = self.config.bus.ray_namespace  # Settings.ray_namespace, as serve_app.hosts.RayHosts
        peer = await asyncio.to_thread(ray.get_actor, name, namespace=namespace)  # a GCS round trip
        await peer.hand_over.remote(essay_id)

    def _local_analyzer(self) -> Any:
        from actors.analysis.service import build_engine

        return build_engine(self.config.analysis.local_only(), worker=self._worker)

    def _analyzer(self) -> Any:
        """The Analyzer deployment of our Serve app; an in-process engine when there is none."""
        from actors.analysis.service import ANALYZER_DEPLOYMENT, RemoteAnalyzer, build_engine

        try:
            from ray import serve

            handle = serve.get_deployment_handle(ANALYZER_DEPLOYMENT, app_name=self.config.serve_app_name)
        except Exception:
            return build_engine(self.config.analysis, worker=self._worker)
        return RemoteAnalyzer(handle, llm_enabled=self.config.analysis.provider != "local")

    # --- `actors.host_api.HostAPI`: each remote method runs the host's own ---------------------
    # (apply_update too, though Gateways send updates over the host stream: tests and tools may call it)

    async def apply_update(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None,
                           origin: str, live: bool = True, node: str | None = None) -> int:
        return await (await self._host()).apply_update(essay_id, update, author_id=author_id, origin=origin,
                                                       live=live, node=node)

    async def would_change(self, essay_id: uuid.UUID, update: bytes) -> bool:
        return await (await self._host()).would_change(essay_id, update)

    async def set_text(self, essay_id: uuid.UUID, text: str, *, author_id: uuid.UUID | None) -> int:
        return await (await self._host()).set_text(essay_id, text, author_id=author_id)

    async def sync(self, essay_id: uuid.UUID, state_vector: bytes) -> tuple[bytes, bytes]:
        return await (await self._host()).sync(essay_id, state_vector)

    async def read(self, essay_id: uuid.UUID) -> dict[str, Any] | None:
        return await (await self._host()).read(essay_id)

    async def current(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await (await self._host()).current(essay_id)

    async def feedback(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await (await self._host()).feedback(essay_id)

    async def analyze_now(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await (await self._host()).analyze_now(essay_id)

    async def score_now(self, essay_id: uuid.UUID, rubric: dict[str, Any]) -> list[dict[str, Any]]:
        return await (await self._host()).score_now(essay_id, rubric)

    async def anchor_for(self, essay_id: uuid.UUID, start: int, end: int) -> dict[str, Any]:
        return await (await self._host()).anchor_for(essay_id, start, end)

    async def resolve(self, essay_id: uuid.UUID, anchors: list[str | None]) -> list[tuple[int, int] | None]:
        return await (await self._host()).resolve(essay_id, anchors)

    async def event_state(self, essay_id: uuid.UUID) -> dict[str, Any]:
        return await (await self._host()).event_state(essay_id)

    async def events_after(self, essay_id: uuid.UUID, last_seq: int, epoch: str | None) -> list[str] | None:
        return await (await self._host()).events_after(essay_id, last_seq, epoch)

    async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]:
        return await (await self._host()).live_students(class_id)

    async def student_rows(self, class_id: uuid.UUID) -> list[dict[str, Any]]:
        return await (await self._host()).student_rows(class_id)

    async def drop(self, essay_id: uuid.UUID) -> None:
        await (await self._host()).drop(essay_id)

    async def release(self, essay_id: uuid.UUID) -> None:
        await (await self._host()).release(essay_id)

    async def hand_over(self, essay_id: uuid.UUID) -> None:
        await (await self._host()).hand_over(essay_id)

    async def attach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        await (await self._host()).attach(essay_id, node)

    async def detach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        await (await self._host()).detach(essay_id, node)

    async def watch(self, channel: str, delta: int) -> None:
        await (await self._host()).watch(channel, delta)

    async def publish_event(self, essay_id: uuid.UUID, type_: str, **payload: Any) -> None:
        await (await self._host()).publish_event(essay_id, type_, **payload)

    async def revision(self, essay_id: uuid.UUID, *, reason: str) -> int:
        return await (await self._host()).revision(essay_id, reason=reason)

    # --- shell-only ---------------------------------------------------------------------------

    async def stream_address(self) -> tuple[str, int, bytes]:
        """Where Gateways send typed updates (`actors.host_stream`): address, port and token."""
        await self._host()
        assert self.stream is not None
        return node_address(), self.stream.port, self.stream.token

    async def traced(self, traceparent: str | None, operation: str, *args: Any, **kwargs: Any) -> Any:
        """`HostAPI` method `operation` as a child span of the calling Gateway's trace: where a
        Gateway with tracing on sends its Ray calls (`serve_app.hosts.RayHost`)."""
        if operation not in operations():
            raise ValueError(f"not a host operation: {operation!r}")
        call = getattr(self, operation)(*args, **kwargs)
        if not tracing.enabled:
            return await call
        return await tracing.within(f"host.{operation}", call, parent=traceparent, kind="SERVER")

    async def stats(self) -> dict[str, Any]:
        host = await self._host()
        return {"essays": len(host.essays), "rows": host.committer.rows, "batches": host.committer.batches,
                "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "analysis_worker_pid": self._worker.pid if self._worker is not None else None}

    async def shutdown(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
        if self.stream is not None:
            await self.stream.close()
        if self.host is not None:
            await self.host.stop()
        if self._worker is not None:
            self._worker.close()
        metrics.flush()  # last: the host's final commits, compactions and lease releases count too
        tracing.flush()


def _implements(shell: EssayHostShell, host: EssayHost) -> tuple[HostAPI, HostAPI]:
    """For the type checker: both are `HostAPI`s (mypy checks every method's signature here)."""
    return shell, host
