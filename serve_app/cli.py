"""`essaycoach` command: run the service, migrate the store, create an admin, manage data keys.

`essaycoach run` supervises a driver (`serve_app.supervisor`) that starts (or joins, with
RAY_ADDRESS) a Ray cluster, migrates the store and serves the Gateway on http://127.0.0.1:8000
until SIGINT or SIGTERM, then flushes every essay host and ends the local cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serve_app.fastpath.ingress import fast_path_env
from serve_app.settings import ROOT, Settings

if TYPE_CHECKING:
    from serve_app.ports import Listener
    from serve_app.run_record import RunFiles

def _migrate(settings: Settings) -> None:
    from db.migrate import upgrade

    upgrade(settings.database_url)


def cmd_migrate(_: argparse.Namespace) -> None:
    settings = Settings()
    _migrate(settings)
    print("database is at the latest revision")


def cmd_create_admin(args: argparse.Namespace) -> None:
    from db.engine import make_engine, make_sessionmaker
    from db.repositories import users
    from serve_app.auth import check_password_policy, hash_password

    settings = Settings()
    _migrate(settings)
    password = args.password or getpass.getpass("password: ")
    check_password_policy(password, email=args.email, name=args.name)

    async def create() -> None:
        engine = make_engine(settings.database_url)
        async with make_sessionmaker(engine)() as session:
            await users.create(session, email=args.email, name=args.name, role="admin",
                               password_hash=hash_password(password))
            await session.commit()
        await engine.dispose()

    asyncio.run(create())
    print(f"admin {args.email} created")


def cmd_data_key_new(_: argparse.Namespace) -> None:
    from db.crypto import new_key

    print(new_key())


def cmd_reseal(args: argparse.Namespace) -> None:
    """Rewrite every sealed row under the current data key (db/reseal.py): after a rotation, after
    turning encryption on, or (no current key, old keys given) to write plaintext back."""
    from db.engine import make_engine
    from db.reseal import reseal

    settings = Settings()
    _migrate(settings)
    if settings.keyring is None:
        sys.exit("essaycoach reseal: set ESSAYCOACH_DATA_KEY (and ESSAYCOACH_DATA_KEYS_OLD with the previous keys)")

    async def run() -> None:
        engine = make_engine(settings.database_url, keyring=settings.keyring)
        try:
            await reseal(engine, batch=args.batch,
                         progress=lambda table, scanned, rewritten: print(
                             f"{table}: {rewritten} of {scanned} rows rewritten"))
        finally:
            await engine.dispose()

    asyncio.run(run())
    key = settings.keyring.current_id_hex
    print(f"every sealed row is now under data key {key}" if key else "every sealed row is now plaintext")


def _dev(args: argparse.Namespace) -> None:
    """`--dev`: dev mode for this process and (through the ESSAYCOACH_ environment) its replicas."""
    if getattr(args, "dev", False):
        os.environ["ESSAYCOACH_DEV_MODE"] = "true"


# How long a start after an unclean stop waits for the ended predecessor's ports.
PORT_RELEASE_SECONDS = 15.0


def cmd_run(args: argparse.Namespace) -> None:
    """The supervisor: take the var directory's run lock (cleaning up after a predecessor killed
    hard), check the ports, then run the driver (`essaycoach driver`) and clean up after it."""
    from serve_app.ports import check_free
    from serve_app.run_record import RunFiles, acquire
    from serve_app.supervisor import supervise

    settings = Settings()
    files = RunFiles(settings.var_dir)
    lock = acquire(files, wait_seconds=settings.shutdown_seconds + 5)
    try:
        env = run_env(settings, files, default_proxy=args.default_proxy)
        if env.get("RAY_ADDRESS", "local") == "local":  # on a shared cluster the ports are the cluster's
            # What a predecessor that did not stop left, `acquire` ended; its ports (Ray's metrics
            # agent's, say) can stay taken a moment after: wait for them.
            check_free(run_listeners(settings, haproxy=not args.default_proxy),
                       wait_seconds=PORT_RELEASE_SECONDS if lock.predecessor else 0.0)
        command = [sys.executable, "-m", "serve_app.cli", "driver", "--replicas", str(args.replicas)]
        status = supervise(command, env=env, files=files, lock_fd=lock.fd,
                           http=f"{settings.http_host}:{settings.http_port}",
                           shutdown_seconds=settings.shutdown_seconds)
    finally:
        os.close(lock.fd)
    sys.exit(status)


WORKER_NICENESS = ("RAY_worker_niceness", "0")
"""Ray starts its worker processes at nice 15 unless told otherwise: the Gateway replicas, Serve's
HAProxy (started by a worker) and the essay hosts then yielded a core to every nice-0 process on
the machine (Ray's own raylet and agents, PostgreSQL, a load generator), and typing waited for
them. At 0 the Gateway and HAProxy run at the machine's normal priority and the hosts at
`ESSAYCOACH_HOST_NICE` below it (actors/process_tuning.py). ray-cluster.yaml sets it per node."""


def run_env(settings: Settings, files: RunFiles, *, default_proxy: bool) -> dict[str, str]:
    """The driver's environment (Ray's processes inherit it); what the operator set wins."""
    from serve_app.ports import serve_ports_env

    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault(*WORKER_NICENESS)
    # The driver and Ray's workers run this checkout's code, whichever one the venv points at.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    local = env.get("RAY_ADDRESS", "local") == "local"
    ours = {} if default_proxy else fast_path_env()
    if local:
        ours.update(serve_ports_env(settings.http_port))
    env.update({k: v for k, v in ours.items() if k not in os.environ})
    if local and not default_proxy:
        env.update(haproxy_env(settings, files.run_dir))  # ESSAYCOACH_HAPROXY_* decide these
    return env


def haproxy_env(settings: Settings, run_dir: Path) -> dict[str, str]:
    """Serve's HAProxy through our launcher (recorded pids, stats and metrics ports from settings)."""
    from serve_app.haproxy_launcher import real_haproxy_binary, serve_env

    return serve_env(run_dir, real_binary=real_haproxy_binary(), host=settings.haproxy_monitor_host,
                     stats_port=settings.haproxy_stats_port, metrics_port=settings.haproxy_metrics_port,
                     slice_ms=settings.latency_slice_ms)


def run_listeners(settings: Settings, *, haproxy: bool) -> list[Listener]:
    """The ports `essaycoach run` listens on, with the setting that moves each."""
    from serve_app.ports import Listener, serve_ports

    # Serve's fallback proxy binds with SO_REUSEPORT: a taken port would be shared, not refused.
    fallback = int(os.environ.get("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", serve_ports(settings.http_port)[1]))
    listeners = [Listener(settings.http_host, settings.http_port, "HTTP_PORT"),
                 Listener(settings.http_host, fallback, "HTTP_PORT"),
                 # Ray's metrics agent binds every interface (loopback when the node's address is)
                 Listener("0.0.0.0", settings.metrics_export_port, "METRICS_PORT")]
    if haproxy:
        host = settings.haproxy_monitor_host
        listeners += [Listener(host, settings.haproxy_stats_port, "HAPROXY_STATS_PORT"),
                      Listener(host, settings.haproxy_metrics_port, "HAPROXY_METRICS_PORT")]
    return listeners


def cmd_driver(args: argparse.Namespace) -> None:
    """The driver `essaycoach run` supervises: starts Ray and Serve, serves until SIGTERM (or
    SIGINT, SIGHUP), flushes every essay host and ends the local Ray cluster."""
    stop = threading.Event()
    # Handlers first: a stop while Ray and Serve start (~20 s) ends the start-up at the next step.
    stop_on_signals(stop)
    settings = Settings()
    _migrate(settings)
    if stop.is_set():
        return

    import ray

    # OTEL_*: tracing (actors/tracing.py) in every process, also on a cluster joined by RAY_ADDRESS.
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(("ESSAYCOACH_", "RAY_SERVE_", "OTEL_"))}
    address = os.environ.get("RAY_ADDRESS", "local")
    # A local cluster's metrics export on a known port: every process's metrics in one scrape.
    metrics_port: dict[str, Any] = {"_metrics_export_port": settings.metrics_export_port} if address == "local" else {}
    ray.init(address=address, namespace=settings.ray_namespace,
             runtime_env={"env_vars": env_vars}, include_dashboard=False, **metrics_port)
    # ray.init installs its own SIGTERM handlers (Python's sys.exit, then its core's crash
    # handler): a SIGTERM then skipped the flush and orphaned Serve's HAProxy. Ours again.
    stop_on_signals(stop)
    failed: list[BaseException] = []

    def serve_app() -> None:
        try:
            _serve(settings, args.replicas)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            failed.append(exc)
            stop.set()

    try:
        # Serve starts in a thread: its start waits for the app (a minute on a loaded machine), and
        # a stop must not wait for that. A Ray call still in flight there fails at ray.shutdown.
        if not stop.is_set():
            threading.Thread(target=serve_app, name="serve-start", daemon=True).start()
        while not stop.wait(0.5):
            pass
        if failed:
            raise failed[0]
        print("stopping: flushing essay hosts", flush=True)
        _kill_run_after(settings.shutdown_seconds)
        shutdown_hosts(settings)
        if address != "local":
            from ray import serve

            serve.delete(settings.serve_app_name)  # a shared cluster keeps running; only our app leaves
    finally:
        ray.shutdown()  # a local cluster we started ends with us
    print("stopped", flush=True)


def _serve(settings: Settings, replicas: int) -> None:
    import ray
    from ray import serve

    from serve_app.deployments import GatewayArgs, build_app

    for attempt in range(3):
        try:
            serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
            break
        except ray.exceptions.ActorDiedError:
            # On a loaded machine Serve's controller can kill a proxy that misses its health checks
            # while starting, and start another; serve.start only waited for the first one.
            if attempt == 2:
                raise
    # One machine: every extra replica is another process on the same cores. The Gateway scales on
    # open sockets plus ongoing requests (deployments.scale_on_sockets): thousands, not hundreds.
    cores = os.cpu_count() or 2
    gateway = GatewayArgs(min_replicas=replicas, max_replicas=max(replicas, cores // 2),
                          target_ongoing_requests=2000, analyzer_max_replicas=max(1, cores // 2))
    serve.run(build_app(gateway), name=settings.serve_app_name, route_prefix="/", blocking=False)
    print(f"EssayCoach Live is serving on http://{settings.http_host}:{settings.http_port} "
          f"(API docs: /api/docs). Ctrl-C stops it.", flush=True)


def stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())


def _kill_run_after(seconds: float) -> None:
    """The driver's own deadline (its supervisor may be gone): end its session, itself last."""
    from serve_app.processes import end_session

    def expire() -> None:
        print("stopping took too long: killing what is left", flush=True)
        end_session(os.getsid(0), grace=0, exclude=frozenset({os.getpid()}))
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def shutdown_hosts(settings: Settings) -> None:
    """Flush every essay host (log, then snapshot) and end it."""
    import ray

    for i in range(settings.hosts):
        try:
            handle = ray.get_actor(f"essay-host-{i}", namespace=settings.ray_namespace)
        except ValueError:
            continue
        ray.get(handle.shutdown.remote(), timeout=60)
        ray.kill(handle, no_restart=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="essaycoach")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = argparse.ArgumentParser(add_help=False)
    dev.add_argument("--dev", action="store_true",
                     help="dev mode: generate a JWT secret into var/ and allow webhooks to private addresses")
    run = sub.add_parser("run", parents=[dev], help="serve on a local (or RAY_ADDRESS) Ray cluster")
    run.add_argument("--replicas", type=int, default=1)
    run.add_argument("--default-proxy", action="store_true", help="use Serve's default proxy, not HAProxy")
    run.set_defaults(func=cmd_run)
    driver = sub.add_parser("driver", help="(internal) what `run` supervises")
    driver.add_argument("--replicas", type=int, default=1)
    driver.set_defaults(func=cmd_driver)
    sub.add_parser("migrate", parents=[dev], help="upgrade the store to the latest schema").set_defaults(
        func=cmd_migrate)
    admin = sub.add_parser("create-admin", parents=[dev], help="create an admin account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", default="Administrator")
    admin.add_argument("--password")
    admin.set_defaults(func=cmd_create_admin)
    data_key = sub.add_parser("data-key", help="data keys for encryption at rest (README \"Privacy\")")
    data_key_sub = data_key.add_subparsers(dest="data_key_command", required=True)
    data_key_sub.add_parser("new", help="print a new random key for ESSAYCOACH_DATA_KEY").set_defaults(
        func=cmd_data_key_new)
    reseal = sub.add_parser("reseal", parents=[dev], help="rewrite stored essay text under the current data key")
    reseal.add_argument("--batch", type=int, default=500, help="rows per transaction")
    reseal.set_defaults(func=cmd_reseal)
    args = parser.parse_args(argv)
    _dev(args)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
