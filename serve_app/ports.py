"""The ports a run will listen on, checked before Ray starts: a taken port is a one-line message
naming the port and the setting that moves it, not an HAProxy alert deep in Ray's logs."""

from __future__ import annotations

import socket
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


def check_free(listeners: list[Listener]) -> None:
    """Raise `PortInUse` for the first listener whose port is taken."""
    for listener in listeners:
        if listener.port and not is_free(listener.host, listener.port):
            raise PortInUse(f"essaycoach: port {listener.port} on {listener.host} is already in use; "
                            f"stop what listens there or set ESSAYCOACH_{listener.setting} to a free port")
