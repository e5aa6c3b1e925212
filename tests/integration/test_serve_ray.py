"""The real Ray Serve app over HTTP and websockets: the flow, host crash recovery, restart."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from actors.doc import EssayDoc
from db.engine import make_engine, make_sessionmaker
from db.migrate import upgrade
from db.repositories import documents
from ops.loadtest.yclient import YClient
from tests.conftest import TEST_SECRET, free_port, until_ready
from tests.fakes import join, make_assignment, make_class, make_essay, register

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
async def serve_app(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    from ray import serve

    from serve_app.deployments import GatewayArgs, build_app

    var = tmp_path_factory.mktemp("serve-var")
    url = f"sqlite+aiosqlite:///{var / 'serve.db'}"
    await asyncio.to_thread(upgrade, url)
    env = {"ESSAYCOACH_DATABASE_URL": url, "ESSAYCOACH_VAR_DIR": str(var), "ESSAYCOACH_JWT_SECRET": TEST_SECRET,
           "ESSAYCOACH_DEV_MODE": "false", "ESSAYCOACH_HOSTS": "2",
           "ESSAYCOACH_LOGIN_IP_FAILURE_BURST": "100000"}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app(GatewayArgs(min_replicas=1, max_replicas=1, env=env))
    await asyncio.to_thread(serve.run, app, name="essaycoach-test", route_prefix="/")
    yield {"base": f"127.0.0.1:{port}", "database_url": url}
    await asyncio.to_thread(serve.delete, "essaycoach-test")


@pytest.fixture
async def http(serve_app: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{serve_app['base']}", timeout=60) as c:
        await until_ready(c, seconds=60)
        yield c


async def test_flow_over_real_serve_http(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/docs")).status_code == 200
    teacher, student = await register(http, "teacher"), await register(http, "student")
    cls = await make_class(http, teacher)
    await join(http, student, cls["join_code"])
    assignment = await make_assignment(http, teacher, cls["id"])
    essay = await make_essay(http, student, assignment["id"], text="Written through Ray Serve.")
    r = await http.get(f"/api/v1/essays/{essay['id']}", headers=teacher.headers)
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "Written through Ray Serve."
    ready = (await http.get("/readyz")).json()
    assert ready["checks"] == {"store": "ok", "bus": "ok", "hosts": "ok"}


async def _host_stats(essay_id: str) -> dict[str, Any]:
    import ray

    from actors.routing import host_index

    handle = ray.get_actor(f"essay-host-{host_index(uuid.UUID(essay_id), 2)}", namespace="essaycoach")
    stats: dict[str, Any] = await handle.stats.remote()
    return stats


async def _host_pid(essay_id: str) -> int:
    return int((await _host_stats(essay_id))["pid"])


async def test_host_killed_while_typing_loses_no_acknowledged_update(
    http: httpx.AsyncClient, serve_app: dict[str, Any]
) -> None:
    student = await register(http, "student")
    essay = await make_essay(http, student)
    base = serve_app["base"]

    async def url() -> str:
        t = (await http.post("/api/v1/auth/ws-ticket", headers=student.headers)).json()["ticket"]
        return f"ws://{base}/ws/essays/{essay['id']}/doc?ticket={t}"

    client = await YClient(await url()).connect()
    acked_tokens: list[str] = []
    sent_tokens: list[str] = []
    first = await _host_stats(essay["id"])
    first_pid, worker_pid = int(first["pid"]), first["analysis_worker_pid"]
    assert worker_pid is not None  # ESSAYCOACH_ANALYSIS_PROCESS is on by default: one rules worker per host
    killed = False
    for i in range(120):  # 25 updates/s for ~5 s, with the host killed in the middle
        token = f"t{i} "
        client.type(token)
        sent_tokens.append(token)
        await asyncio.sleep(0.04)
        if i == 50:
            os.kill(first_pid, signal.SIGKILL)
            killed = True
            acked_at_kill = client.acked
        if client.close_code is not None:
            break
    assert killed
    try:
        await client.wait_acked(timeout=60)
    except (TimeoutError, ConnectionError):
        pass
    # The first counted message was our sync step 2 answer; updates are counted from 2 on.
    acked_updates = max(0, client.acked - 1)
    acked_tokens = sent_tokens[:acked_updates]
    assert client.acked > acked_at_kill + 20, "typing was not acknowledged again after the host came back"

    async def stored() -> str:
        engine = make_engine(serve_app["database_url"])
        async with make_sessionmaker(engine)() as session:
            doc = await documents.load(session, essay_id=uuid.UUID(essay["id"]))
        await engine.dispose()
        assert doc is not None
        return EssayDoc.from_state(doc.essay.doc_state, [r.data for r in doc.log]).text

    text = await stored()
    missing = [t for t in acked_tokens if t not in text]
    assert missing == [], f"acknowledged but lost: {missing}"
    assert await _host_pid(essay["id"]) != first_pid  # the host came back (max_restarts)
    assert not _running(worker_pid), "the killed host's rules worker outlived it"
    assert (await _host_stats(essay["id"]))["analysis_worker_pid"] not in (None, worker_pid)
    await client.close()


def _running(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False




async def test_sockets_refuse_compression_through_serve(http: httpx.AsyncClient, serve_app: dict[str, Any]) -> None:
    """The replica's own uvicorn (HAProxy fast path) must not negotiate permessage-deflate."""
    import websockets

    student = await register(http, "student")
    essay = await make_essay(http, student)
    ticket = (await http.post("/api/v1/auth/ws-ticket", headers=student.headers)).json()["ticket"]
    url = f"ws://{serve_app['base']}/ws/essays/{essay['id']}/events?ticket={ticket}"
    async with websockets.connect(url, compression="deflate") as ws:  # offers permessage-deflate
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        assert ws.protocol.extensions == []
        presence = await asyncio.wait_for(ws.recv(), 10)
        assert '"presence"' in presence


async def test_teacher_sockets_on_one_replica_see_typing_once(http: httpx.AsyncClient, serve_app: dict[str, Any]) -> None:
    """Typing reaches watchers on the typist's replica directly (the hub skips that replica):
    every watcher converges, and no update arrives twice."""
    teacher, student = await register(http, "teacher"), await register(http, "student")
    cls = await make_class(http, teacher)
    await join(http, student, cls["join_code"])
    assignment = await make_assignment(http, teacher, cls["id"])
    essay = await make_essay(http, student, assignment["id"])

    async def url(user: Any) -> str:
        t = (await http.post("/api/v1/auth/ws-ticket", headers=user.headers)).json()["ticket"]
        return f"ws://{serve_app['base']}/ws/essays/{essay['id']}/doc?ticket={t}"

    writer = await YClient(await url(student)).connect()
    watchers = [await YClient(await url(teacher)).connect() for _ in range(2)]
    frames_before = [w.updates_received for w in watchers]
    words = [f"w{i} " for i in range(30)]
    for word in words:
        writer.type(word)
        await asyncio.sleep(0.01)
    await writer.wait_acked()
    for w in watchers:
        await w.wait_text(lambda text: text == "".join(words))
    await asyncio.sleep(0.5)  # a duplicate from the hub would arrive by now
    for w, before in zip(watchers, frames_before):
        assert w.updates_received - before == len(words)
    for c in (writer, *watchers):
        await c.close()


async def test_http_requests_reach_our_app_past_serves_request_path(http: httpx.AsyncClient) -> None:
    """On the fast path the replica middleware hands HTTP requests to our app
    (serve_app.fastpath.handoff): Serve's request id middleware, which echoes the request's
    `X-Request-ID` too, is not entered; our `RequestContextMiddleware` answers it once."""
    r = await http.get("/healthz", headers={"x-request-id": "past-serve"})
    assert r.status_code == 200 and r.headers.get_list("x-request-id") == ["past-serve"]


async def _serve_socket_tasks(app: str = "essaycoach-test") -> dict[str, int]:
    """Serve's in-flight direct-ingress tasks in the Gateway replica (its own test hook)."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(f"SERVE_REPLICA::{app}#Gateway#")]
    assert len(names) == 1, names
    replica = ray.get_actor(names[0], namespace="serve")
    return await replica._get_inflight_direct_ingress_task_counts_for_testing.remote()


async def test_a_dropped_socket_is_cleaned_up_through_serve(http: httpx.AsyncClient, serve_app: dict[str, Any]) -> None:
    """Our sockets go past Serve's request path (serve_app.fastpath: replica_middlewares, direct):
    the handler must see the drop itself, count the socket closed and detach it from the essay's
    host."""
    import json
    import re

    import websockets

    async def open_doc_sockets() -> float:
        text = (await http.get("/metrics")).text
        found = re.search(r'^essaycoach_ws_open\{socket="doc"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    student = await register(http, "student")
    essay = await make_essay(http, student)
    before = await open_doc_sockets()
    ticket = (await http.post("/api/v1/auth/ws-ticket", headers=student.headers)).json()["ticket"]
    client = await YClient(f"ws://{serve_app['base']}/ws/essays/{essay['id']}/doc?ticket={ticket}").connect()
    client.type("dropped")
    await client.wait_acked()
    assert await open_doc_sockets() == before + 1
    # The open socket runs without Serve's per-request disconnect watcher and request task, and
    # the replica counts it for the autoscaler itself.
    assert await _serve_socket_tasks() == {"request_tasks": 0, "receive_tasks": 0}
    client.ws.transport.abort()  # no close handshake: the TCP connection just goes
    for _ in range(100):
        if await open_doc_sockets() == before:
            break
        await asyncio.sleep(0.1)
    assert await open_doc_sockets() == before
    # ... and detached from the essay's host (which counts the essay's document sockets).
    ticket = (await http.post("/api/v1/auth/ws-ticket", headers=student.headers)).json()["ticket"]
    async with websockets.connect(f"ws://{serve_app['base']}/ws/essays/{essay['id']}/events?ticket={ticket}") as ws:
        presence = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert presence["type"] == "presence" and presence["connections"] == 0


async def _gateway_socket_metric() -> list[float]:
    """The Gateway's `open_sockets` values as Serve's controller last received them."""
    from ray.serve._private.common import DeploymentID
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    metrics = await controller._get_metrics_for_deployment_for_testing.remote(
        DeploymentID(name="Gateway", app_name="essaycoach-test"))
    values: list[float] = []
    for series in metrics.get("open_sockets", []):  # one time series per running replica
        points = list(series)
        if points:
            values.append(float(getattr(points[-1], "value", points[-1])))
    return values


async def test_the_gateway_reports_its_open_sockets_to_the_autoscaler(
        http: httpx.AsyncClient, serve_app: dict[str, Any]) -> None:
    """Sockets are not ongoing requests to Serve any more: the replica reports them itself
    (`Gateway.record_autoscaling_stats`), and Serve's controller receives the count."""
    student = await register(http, "student")
    essay = await make_essay(http, student)
    clients = []
    for _ in range(3):
        ticket = (await http.post("/api/v1/auth/ws-ticket", headers=student.headers)).json()["ticket"]
        clients.append(await YClient(f"ws://{serve_app['base']}/ws/essays/{essay['id']}/doc?ticket={ticket}").connect())
    try:
        seen: list[float] = []
        for _ in range(120):  # replicas push metrics every few seconds
            seen = await _gateway_socket_metric()
            if seen and sum(seen) >= 3:
                break
            await asyncio.sleep(0.5)
        assert seen and sum(seen) >= 3, seen
    finally:
        for client in clients:
            await client.close()


async def _typed_essay(http: httpx.AsyncClient, base: str, text: str) -> tuple[Any, dict[str, Any], YClient]:
    """A new student's new essay with `text` typed and acked over a doc socket at `base`:
    (student, essay, the still open client)."""
    student = await register(http, "student")
    essay = await make_essay(http, student)
    ticket = (await http.post("/api/v1/auth/ws-ticket", headers=student.headers)).json()["ticket"]
    client = await YClient(f"ws://{base}/ws/essays/{essay['id']}/doc?ticket={ticket}").connect()
    try:
        client.type(text)
        await client.wait_acked()
    except BaseException:
        await client.close()
        raise
    return student, essay, client


def _ray_node_scrape() -> list[tuple[str, dict[str, str], float]]:
    """One scrape of this node's Ray metrics export: (name, labels, value) of each sample."""
    import re
    import urllib.request

    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = []
    for line in text.splitlines():
        found = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if found:
            samples.append((found.group(1), dict(re.findall(r'(\w+)="([^"]*)"', found.group(2))),
                            float(found.group(3))))
    return samples


async def test_one_scrape_of_the_node_has_metrics_of_a_host_actor_and_a_gateway_replica(
        http: httpx.AsyncClient, serve_app: dict[str, Any]) -> None:
    """Ray's metrics export (actors/metrics.py): the essay host's and the Gateway replica's
    catalogue metrics, each from its own worker process, in one scrape of the node's port."""
    import ray

    driver = ray._private.worker.global_worker.worker_id.hex()  # this test process records too
    _, _, client = await _typed_essay(http, serve_app["base"], "measured")
    try:
        hosts: dict[str, str] = {}
        gateways: set[str] = set()
        committed: set[str] = set()
        for _ in range(120):  # workers push to the node's agent every few seconds
            samples = await asyncio.to_thread(_ray_node_scrape)
            hosts = {labels["WorkerId"]: labels["host"] for name, labels, value in samples
                     if name == "ray_essaycoach_essays_open" and value >= 1 and labels["WorkerId"] != driver}
            # A histogram reaches Ray's export as counters (`_total` appended): its count, and
            # its buckets with `le` as prometheus-client writes it, `+Inf` holding them all.
            committed = {labels["WorkerId"] for name, labels, value in samples
                         if name == "ray_essaycoach_commit_batch_rows_count_total" and value >= 1}
            committed &= {labels["WorkerId"] for name, labels, value in samples
                          if name == "ray_essaycoach_commit_batch_rows_bucket_total" and labels["le"] == "+Inf"
                          and value >= 1}
            gateways = {labels["WorkerId"] for name, labels, value in samples
                        if name == "ray_essaycoach_doc_updates_total" and value >= 1
                        and labels["WorkerId"] != driver}
            gateways &= {labels["WorkerId"] for name, labels, value in samples
                         if name == "ray_essaycoach_ack_seconds_bucket_total" and labels["le"] == "+Inf"}
            if hosts.keys() & committed and gateways:
                break
            await asyncio.sleep(0.5)
        assert hosts.keys() & committed, (hosts, committed)  # the host that holds the essay committed it
        assert gateways and not gateways & hosts.keys(), (gateways, hosts)  # a separate Gateway process
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def plain_app(serve_app: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A second Gateway with the fast path off (`ESSAYCOACH_FAST_PATH=off`) under the same HAProxy,
    at /plain, with its own store and essay hosts (their own Ray namespace)."""
    from ray import serve

    from serve_app.deployments import GatewayArgs, build_app

    var = tmp_path_factory.mktemp("plain-var")
    url = f"sqlite+aiosqlite:///{var / 'plain.db'}"
    await asyncio.to_thread(upgrade, url)
    env = {"ESSAYCOACH_DATABASE_URL": url, "ESSAYCOACH_VAR_DIR": str(var), "ESSAYCOACH_JWT_SECRET": TEST_SECRET,
           "ESSAYCOACH_HOSTS": "1", "ESSAYCOACH_RAY_NAMESPACE": "essaycoach-plain",
           "ESSAYCOACH_SERVE_APP_NAME": "essaycoach-plain", "ESSAYCOACH_FAST_PATH": "off"}
    app = build_app(GatewayArgs(min_replicas=1, max_replicas=1, analyzer_max_replicas=1, env=env))
    await asyncio.to_thread(serve.run, app, name="essaycoach-plain", route_prefix="/plain")
    yield f"{serve_app['base']}/plain"
    await asyncio.to_thread(serve.delete, "essaycoach-plain")


async def test_with_the_fast_path_off_sockets_take_serves_request_path(plain_app: str) -> None:
    """Plain Serve: no proxy callback, so the socket is one of Serve's requests, and it still
    edits and is acked."""
    async with httpx.AsyncClient(base_url=f"http://{plain_app}", timeout=60) as http:
        assert await until_ready(http, seconds=60)
        student, essay, client = await _typed_essay(http, plain_app, "through Serve")
        try:
            assert (await _serve_socket_tasks("essaycoach-plain"))["request_tasks"] >= 1
            r = await http.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
            assert r.json()["text"] == "through Serve"
        finally:
            await client.close()


async def _deploy_hosts_app(env: dict[str, str]) -> None:
    from ray import serve

    from serve_app.deployments import GatewayArgs, build_app

    app = build_app(GatewayArgs(min_replicas=1, max_replicas=1, analyzer_max_replicas=1, env=env))
    await asyncio.to_thread(serve.run, app, name="essaycoach-hosts", route_prefix="/hosts")


async def _type_after_reconnect(http: httpx.AsyncClient, base: str, student: Any, essay_id: str, text: str) -> None:
    """Reconnect a doc socket and type `text` once it is acknowledged, trying again while the essay
    moves (1013) or the new Gateway replica is not yet answering."""
    for _ in range(60):
        ticket = (await http.post("/api/v1/auth/ws-ticket", headers=student.headers)).json()["ticket"]
        client = YClient(f"ws://{base}/ws/essays/{essay_id}/doc?ticket={ticket}")
        try:
            await client.connect()
            if text not in str(client.text):  # an earlier try's update may have landed without its ack
                client.type(text)
            await client.wait_acked(timeout=10)
            return
        except Exception:
            await asyncio.sleep(1)
        finally:
            await client.close()
    raise AssertionError(f"essay {essay_id}: never acknowledged after the host count changed")


async def test_changing_the_host_count_hands_essays_over_and_loses_nothing(
        serve_app: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    """ESSAYCOACH_HOSTS 1 -> 3 on a running app (its own store and host actors): the new Gateway
    replica routes most essays to the new hosts, which take them from essay-host-0 by hand-over;
    every acknowledged update is kept and each essay's lease is held by its new host."""
    import ray
    from sqlalchemy import select

    from actors.routing import host_index
    from db.models import EssayLease

    var = tmp_path_factory.mktemp("hosts-var")
    url = f"sqlite+aiosqlite:///{var / 'hosts.db'}"
    await asyncio.to_thread(upgrade, url)
    namespace = f"essaycoach-hosts-{uuid.uuid4().hex[:6]}"
    env = {"ESSAYCOACH_DATABASE_URL": url, "ESSAYCOACH_VAR_DIR": str(var), "ESSAYCOACH_JWT_SECRET": TEST_SECRET,
           "ESSAYCOACH_HOSTS": "1", "ESSAYCOACH_RAY_NAMESPACE": namespace,
           "ESSAYCOACH_SERVE_APP_NAME": "essaycoach-hosts", "ESSAYCOACH_LOGIN_IP_FAILURE_BURST": "100000",
           # A second app under the session's proxy, at /hosts: its sockets take Serve's request path
           # (the fast path serves the app at / only; the hand-over is the hosts' business either way).
           "ESSAYCOACH_FAST_PATH": "off"}
    base = f"{serve_app['base']}/hosts"
    await _deploy_hosts_app(env)
    try:
        async with httpx.AsyncClient(base_url=f"http://{base}", timeout=60) as http:
            assert await until_ready(http, seconds=120)
            typed: list[tuple[Any, dict[str, Any], str]] = []
            while len(typed) < 4 or sum(host_index(uuid.UUID(e["id"]), 3) != 0 for _, e, _ in typed) < 2:
                text = f"essay {len(typed)} before the change."
                student, essay, client = await _typed_essay(http, base, text)
                await client.close()
                typed.append((student, essay, text))
            await _deploy_hosts_app({**env, "ESSAYCOACH_HOSTS": "3"})  # Serve replaces the replica
            assert await until_ready(http, seconds=120)
            for student, essay, _ in typed:
                await _type_after_reconnect(http, base, student, essay["id"], " And after.")
            for student, essay, text in typed:
                r = await http.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
                assert r.json()["text"] == text + " And after.", essay["id"]
        # The old host let go of the essays that moved (hand-over), and only of those.
        old = await ray.get_actor("essay-host-0", namespace=namespace).stats.remote()
        assert old["essays"] == sum(host_index(uuid.UUID(e["id"]), 3) == 0 for _, e, _ in typed)
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                holders = dict((await session.execute(select(EssayLease.essay_id, EssayLease.holder))).all())
        finally:
            await engine.dispose()
        for _, essay, _ in typed:
            eid = uuid.UUID(essay["id"])
            assert holders[eid] == f"essay-host-{host_index(eid, 3)}"
    finally:
        from ray import serve

        await asyncio.to_thread(serve.delete, "essaycoach-hosts")
        for i in range(3):  # detached: they outlive the app
            try:
                handle = ray.get_actor(f"essay-host-{i}", namespace=namespace)
            except ValueError:
                continue
            ray.kill(handle, no_restart=True)
