"""The ports a run will listen on, checked before Ray starts: a taken port is a one-line message
naming the port and the setting that moves it, not an HAProxy alert deep in Ray's logs."""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass


class PortInUse(SystemExit):
    """A port the run needs is taken; the message is one line for the operator."""


@dataclass(frozen=True)
class Listener:
    """A port the run binds, and the setting that chooses it."""

    host: str
    port: int
    setting: str


def is_free(host: str, port: int) -> bool:
    """Whether `host:port` can be bound as HAProxy binds it (SO_REUSEADDR: a previous run's
    connections in TIME_WAIT do not count, a listener does)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port free now for a server a test or benchmark is about to start, picked below the
    kernel's ephemeral range (32768-60999 on Linux by default) and above Ray's worker ports
    (10002-19999): a port inside the ephemeral range can be taken by any outbound connection
    between this pick and the server's bind (seen in CI: "port ... is already in use"). The
    kernel's pick when none is found there."""
    for _ in range(50):
        port = random.randrange(20000, 32000)
        if is_free(host, port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_free(listeners: list[Listener], *, wait_seconds: float = 0.0) -> None:
    """Raise `PortInUse` for the first listener whose port is taken, after up to `wait_seconds`
    for it to be released (the processes of a predecessor that was just ended can hold a port a
    moment after they are gone from the process table)."""
    deadline = time.monotonic() + wait_seconds
    for listener in listeners:
        if not listener.port:
            continue
        while not is_free(listener.host, listener.port):
            if time.monotonic() >= deadline:
                raise PortInUse(f"essaycoach: port {listener.port} on {listener.host} is already in use; "
                                f"stop what listens there or set ESSAYCOACH_{listener.setting} to a free port")
            time.sleep(0.1)


# Serve's own ports on a node: its Gateway replicas' HTTP servers (the HAProxy fast path's
# backends, from 30000 up) and its fallback proxy (8500, bound with SO_REUSEPORT). Two instances on
# one machine with Serve's defaults shared them: the second one's HAProxy reached the first one's
# Gateway, and its writes went to the first one's database. Each run takes a block of its own.
SERVE_BLOCK_BASE = 31000
SERVE_BLOCK_SIZE = 32
SERVE_BLOCKS = 900


def serve_ports(http_port: int) -> tuple[range, int]:
    """The replica port range and the fallback proxy port of the run serving on `http_port`: a
    block of 32 ports between 31000 and 59800 chosen by `http_port % 900`, so instances on
    different HTTP ports (not 900 apart) never share one."""
    base = SERVE_BLOCK_BASE + (http_port % SERVE_BLOCKS) * SERVE_BLOCK_SIZE
    return range(base, base + SERVE_BLOCK_SIZE - 2), base + SERVE_BLOCK_SIZE - 2


def serve_ports_env(http_port: int) -> dict[str, str]:
    """Serve's environment for `serve_ports` (set before Ray starts; its actors read it)."""
    replicas, fallback = serve_ports(http_port)
    return {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(replicas.start),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(replicas.stop),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback + 1)}
