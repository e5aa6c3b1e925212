"""`essaycoach` command: run the service, migrate the store, create an admin.

`essaycoach run` starts (or joins, with RAY_ADDRESS) a Ray cluster, migrates the store and serves
the Gateway on http://127.0.0.1:8000 until interrupted, then flushes every essay host.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
import threading

from serve_app.settings import Settings

# Serve's HAProxy ingress in throughput mode measured ~10x faster per websocket message on this
# class of machine than the default proxy; all must be set before Ray starts. Throughput mode
# buffers 1,000 access-log records per replica before writing them (~2 MiB held, and a quiet
# service's log lines late by as many requests); 100 still batches the writes.
FAST_PATH_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                 "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "100"}
HAPROXY_THREADS_ENV = "RAY_SERVE_HAPROXY_NBTHREAD"


def haproxy_threads(cpus: int | None = None) -> str:
    """HAProxy threads for a machine: one per 4 cores, 1 to 4. Serve starts 4 whatever the
    machine; on 2 cores, at 1,000 typists, they took 0.17 cores where one thread took 0.12 and
    ack p99 fell with it (ops/loadtest, 2026-11-30). ray-cluster.yaml sets the same per node."""
    return str(min(4, max(1, (cpus or os.cpu_count() or 1) // 4)))


def fast_path_env() -> dict[str, str]:
    """What `essaycoach run` sets (unless already set) before Ray starts, for this machine."""
    return {**FAST_PATH_ENV, HAPROXY_THREADS_ENV: haproxy_threads()}


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


def _dev(args: argparse.Namespace) -> None:
    """`--dev`: dev mode for this process and (through the ESSAYCOACH_ environment) its replicas."""
    if getattr(args, "dev", False):
        os.environ["ESSAYCOACH_DEV_MODE"] = "true"


def cmd_run(args: argparse.Namespace) -> None:
    if not args.default_proxy:
        for key, value in fast_path_env().items():
            os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Handlers first: a Ctrl-C while Ray and Serve start (~20 s) was lost in their start-up; now it
    # stops the service cleanly as soon as it is up.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    settings = Settings()
    _migrate(settings)

    import ray
    from ray import serve

    from serve_app.deployments import GatewayArgs, build_app

    env_vars = {k: v for k, v in os.environ.items() if k.startswith(("ESSAYCOACH_", "RAY_SERVE_"))}
    address = os.environ.get("RAY_ADDRESS", "local")
    ray.init(address=address, namespace=settings.ray_namespace,
             runtime_env={"env_vars": env_vars}, include_dashboard=False)
    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    # One machine: every extra replica is another process on the same cores. The Gateway scales on
    # open sockets plus ongoing requests (deployments.scale_on_sockets): thousands, not hundreds.
    cores = os.cpu_count() or 2
    gateway = GatewayArgs(min_replicas=args.replicas, max_replicas=max(args.replicas, cores // 2),
                          target_ongoing_requests=2000, analyzer_max_replicas=max(1, cores // 2))
    serve.run(build_app(gateway), name="essaycoach", route_prefix="/", blocking=False)
    print(f"EssayCoach Live is serving on http://{settings.http_host}:{settings.http_port} "
          f"(API docs: /api/docs). Ctrl-C stops it.", flush=True)
    stop.wait()
    print("stopping: flushing essay hosts", flush=True)
    shutdown_hosts(settings)
    if address != "local":
        serve.delete("essaycoach")  # a shared cluster keeps running; only our app leaves
    ray.shutdown()  # a local cluster we started ends with us


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
    sub.add_parser("migrate", parents=[dev], help="upgrade the store to the latest schema").set_defaults(
        func=cmd_migrate)
    admin = sub.add_parser("create-admin", parents=[dev], help="create an admin account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", default="Administrator")
    admin.add_argument("--password")
    admin.set_defaults(func=cmd_create_admin)
    args = parser.parse_args(argv)
    _dev(args)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
