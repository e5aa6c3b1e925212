"""Serve's ingress for `essaycoach run` on the fast path: HAProxy in throughput mode.

Serve's HAProxy ingress in throughput mode measured ~10x faster per websocket message on this
class of machine than the default proxy; all must be set before Ray starts. Throughput mode
buffers 1,000 access-log records per replica before writing them (~2 MiB held, and a quiet
service's log lines late by as many requests); 100 still batches the writes.
"""

from __future__ import annotations

import os

FAST_PATH_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                 "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "100"}
HAPROXY_THREADS_ENV = "RAY_SERVE_HAPROXY_NBTHREAD"


def haproxy_threads(cpus: int | None = None) -> str:
    """HAProxy threads for a machine: one per 4 cores, 1 to 4. Serve starts 4 whatever the
    machine; on 2 cores, at 1,000 typists, they took 0.17 cores where one thread took 0.12 and
    ack p99 fell with it (ops/loadtest, 2026-11-30). ray-cluster.yaml sets the same per node."""
    return str(min(4, max(1, (cpus or os.cpu_count() or 1) // 4)))


def fast_path_env(enabled: bool | None = None) -> dict[str, str]:
    """What `essaycoach run` sets (unless already set) before Ray starts, for this machine: nothing
    when the fast path is off (`enabled`, default: `ESSAYCOACH_FAST_PATH` in the environment),
    so Serve starts its default proxy."""
    from serve_app import fastpath

    if not (fastpath.enabled() if enabled is None else enabled):
        return {}
    return {**FAST_PATH_ENV, HAPROXY_THREADS_ENV: haproxy_threads()}
