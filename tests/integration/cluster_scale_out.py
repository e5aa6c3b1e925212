"""The scale-out scenario behind tests/integration/test_scale_out.py, in a process of its own (a
process joins one Ray cluster, and the test session already has one).

A head and two worker nodes on loopback (`ray.cluster_utils.Cluster`), the Serve app on
PostgreSQL + Redis as a cluster runs it: Gateway replicas on the head (resource "gateway"), four
essay hosts spread over the workers (resource "essay_host", `ESSAYCOACH_HOST_RESOURCES`).
Students type into their essays while one worker node is removed; then every socket closes and
the Gateway scales back down. What happened is written as JSON to `--out`; the test asserts.

`python -m tests.integration.cluster_scale_out --database-url postgresql+asyncpg://... --redis-url
redis://.../7 --out obs.json` runs it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

HOSTS = 4
STUDENTS = 8
NAMESPACE = "essaycoach"  # Settings.ray_namespace: where the Gateway names the host actors
APP = "essaycoach-scale"


def _environment(run_dir: Path) -> None:
    """What the test session's Ray fixture sets, before any node starts (nodes inherit it)."""
    from serve_app.fastpath.ingress import fast_path_env
    from serve_app.haproxy_launcher import real_haproxy_binary, serve_env
    from serve_app.ports import serve_ports_env
    from tests.conftest import free_port

    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.update(fast_path_env())
    os.environ.update(serve_env(run_dir, real_binary=real_haproxy_binary(), host="127.0.0.1",
                                stats_port=0, metrics_port=0))
    os.environ.update(serve_ports_env(free_port()))


async def _host_nodes() -> dict[int, str]:
    import ray

    out: dict[int, str] = {}
    for i in range(HOSTS):
        try:
            handle = ray.get_actor(f"essay-host-{i}", namespace=NAMESPACE)
        except ValueError:  # not created yet: no essay routed to it so far
            continue
        out[i] = str((await asyncio.wait_for(handle.stats.remote(), 60))["node_id"])
    return out


def _gateway_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or "Gateway" not in app.deployments:
        return 0
    return int(app.deployments["Gateway"].replica_states.get("RUNNING", 0))


class Typist:
    """One student typing a token every 50 ms into their essay's doc socket, through anything:
    after a close it reconnects with a fresh ticket as y-websocket does, its document carrying
    what was typed but not yet acknowledged (sync step 2 sends it again)."""

    def __init__(self, http: httpx.AsyncClient, base: str, essay_id: str, headers: dict[str, str]) -> None:
        self.http, self.base, self.essay_id, self.headers = http, base, essay_id, headers
        self.client: Any = None
        self.on_connection: list[str] = []  # typed on the current connection, in order
        self.acked: list[str] = []  # acknowledged on earlier connections
        self.closes: list[int | None] = []
        self.task: asyncio.Task[None] | None = None
        self.stop = asyncio.Event()

    async def connect(self) -> None:
        from ops.loadtest.yclient import YClient

        ticket = (await self.http.post("/api/v1/auth/ws-ticket", headers=self.headers)).json()["ticket"]
        client = YClient(f"ws://{self.base}/ws/essays/{self.essay_id}/doc?ticket={ticket}")
        if self.client is not None:
            self.acked += self._acked_here()
            client.doc.apply_update(self.client.doc.get_update())  # not sent: not connected yet
        self.client, self.on_connection = client, []
        await client.connect()

    def _acked_here(self) -> list[str]:
        # The first message a connection counts is the client's sync step 2 answer.
        return self.on_connection[:max(0, self.client.acked - 1)]

    def start(self) -> None:
        self.task = asyncio.create_task(self._type())

    async def _type(self) -> None:
        i = 0
        while not self.stop.is_set():
            if self.client.close_code is not None:
                self.closes.append(self.client.close_code)
                await asyncio.sleep(0.5)
                try:
                    await self.connect()
                except Exception:  # the Gateway is still waiting for the host: try again
                    continue
            token = f"w{i} "
            self.client.type(token)
            self.on_connection.append(token)
            i += 1
            await asyncio.sleep(0.05)

    def acked_tokens(self) -> list[str]:
        return self.acked + self._acked_here()


async def scenario(database_url: str, redis_url: str, work: Path) -> dict[str, Any]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from db.migrate import upgrade
    from serve_app.deployments import GatewayArgs, build_app
    from tests.conftest import TEST_SECRET, free_port, until_ready
    from tests.fakes import join, make_assignment, make_class, make_essay, register, stored_text

    await asyncio.to_thread(upgrade, database_url)
    cluster = Cluster(initialize_head=True, head_node_args={
        "gcs_server_port": free_port(), "num_cpus": 2, "resources": {"gateway": 10}, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, resources={"essay_host": 10}) for _ in range(2)]
    obs: dict[str, Any] = {"workers": [w.node_id for w in workers], "head": cluster.head_node.node_id}
    ray.init(address=cluster.address, namespace=f"scale-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    try:
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        env = {"ESSAYCOACH_DATABASE_URL": database_url, "ESSAYCOACH_REDIS_URL": redis_url,
               "ESSAYCOACH_VAR_DIR": str(work / "var"), "ESSAYCOACH_JWT_SECRET": TEST_SECRET,
               "ESSAYCOACH_DEV_MODE": "false", "ESSAYCOACH_HOSTS": str(HOSTS),
               "ESSAYCOACH_HOST_RESOURCES": json.dumps({"essay_host": 1}),
               "ESSAYCOACH_LOGIN_IP_FAILURE_BURST": "100000"}
        app = build_app(GatewayArgs(
            min_replicas=1, max_replicas=2, target_ongoing_requests=4, resources={"gateway": 1}, env=env,
            autoscaling={"upscale_delay_s": 1, "downscale_delay_s": 3, "metrics_interval_s": 0.5,
                         "look_back_period_s": 2}))
        await asyncio.to_thread(serve.run, app, name=APP, route_prefix="/")
        base = f"127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=f"http://{base}", timeout=60) as http:
            assert await until_ready(http, seconds=120), "the app never became ready"
            obs["replicas_idle"] = _gateway_replicas()
            teacher = await register(http, "teacher")
            cls = await make_class(http, teacher)
            assignment = await make_assignment(http, teacher, cls["id"])
            typists: dict[str, Typist] = {}
            for _ in range(STUDENTS):
                student = await register(http, "student")
                await join(http, student, cls["join_code"])
                essay = await make_essay(http, student, assignment["id"])
                typists[essay["id"]] = Typist(http, base, essay["id"], student.headers)
            for typist in typists.values():
                await typist.connect()
                typist.start()
            await asyncio.sleep(3)

            from actors.routing import host_index

            before = await _host_nodes()
            obs["hosts_before"] = {str(i): n for i, n in before.items()}
            obs["essay_hosts"] = {eid: host_index(uuid.UUID(eid), HOSTS) for eid in typists}
            # Remove the worker holding the most essays while everyone types.
            load = {w.node_id: sum(before.get(h) == w.node_id for h in obs["essay_hosts"].values())
                    for w in workers}
            victim = max(workers, key=lambda w: load[w.node_id])
            obs["removed"] = victim.node_id
            acked_at_removal = {eid: len(t.acked_tokens()) for eid, t in typists.items()}
            await asyncio.to_thread(cluster.remove_node, victim, False)
            removed_at = time.monotonic()
            # Keep typing until every essay was acknowledged again well past the removal.
            while time.monotonic() - removed_at < 120:
                if all(len(t.acked_tokens()) > acked_at_removal[eid] + 20 for eid, t in typists.items()):
                    break
                await asyncio.sleep(0.5)
            obs["recovered_after_s"] = round(time.monotonic() - removed_at, 1)
            # Eight open sockets against a target of four per replica: a second Gateway replica.
            deadline = time.monotonic() + 60
            while _gateway_replicas() < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            obs["replicas_typing"] = _gateway_replicas()
            for typist in typists.values():
                typist.stop.set()
            obs["unsettled"] = []
            for eid, typist in typists.items():
                assert typist.task is not None
                await typist.task
                # Until everything typed is acknowledged: a socket closed meanwhile (1013: the host
                # was not back within the Gateway's window) reconnects, sync step 2 resending.
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if typist.client.close_code is not None:
                            await typist.connect()
                        await typist.client.wait_acked(timeout=30)
                        break
                    except (ConnectionError, TimeoutError, OSError):
                        if time.monotonic() > deadline:
                            obs["unsettled"].append(eid)
                            break
                        await asyncio.sleep(1)
            obs["acked_again"] = {eid: len(t.acked_tokens()) - acked_at_removal[eid] for eid, t in typists.items()}
            obs["closes"] = {eid: t.closes for eid, t in typists.items() if t.closes}
            obs["lost"], obs["differs"] = {}, []
            for eid, typist in typists.items():
                text = await stored_text(database_url, eid)
                missing = [tok for tok in typist.acked_tokens() if tok not in text]
                if missing:
                    obs["lost"][eid] = missing[:10]
                if text != str(typist.client.text):
                    mine = str(typist.client.text)
                    at = next((i for i, (a, b) in enumerate(zip(text, mine)) if a != b), min(len(text), len(mine)))
                    obs["differs"].append({"essay": eid, "stored": len(text), "writer": len(mine), "from": at,
                                           "stored_tail": text[at:at + 80], "writer_tail": mine[at:at + 80],
                                           "closes": typist.closes})
            after = await _host_nodes()
            obs["hosts_after"] = {str(i): n for i, n in after.items()}
            for typist in typists.values():
                await typist.client.close()
            # Every socket closed: the Gateway goes back to its minimum.
            deadline = time.monotonic() + 90
            while _gateway_replicas() > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            obs["replicas_after"] = _gateway_replicas()
        return obs
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from serve_app.haproxy_launcher import end_recorded

    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        work = Path(tmp)
        run_dir = work / "haproxy"
        run_dir.mkdir()
        _environment(run_dir)
        try:
            obs = asyncio.run(scenario(args.database_url, args.redis_url, work))
        finally:
            end_recorded(run_dir)
    args.out.write_text(json.dumps(obs, indent=2))


if __name__ == "__main__":
    main()
