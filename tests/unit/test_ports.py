"""Serve's own ports per run: instances on different HTTP ports never share one."""

from __future__ import annotations

import socket
import threading

import pytest

from serve_app.ports import Listener, PortInUse, check_free, is_free, pick_free_port, serve_ports, serve_ports_env


def test_runs_on_different_http_ports_get_disjoint_serve_ports_outside_serves_defaults() -> None:
    seen: dict[int, int] = {}
    for http_port in range(8000, 8900):
        replicas, fallback = serve_ports(http_port)
        for port in [*replicas, fallback, fallback + 1]:
            assert port not in seen, (http_port, seen.get(port))
            assert not 30000 <= port < 31000 and port not in (8500, 9500)  # Serve's defaults
            assert port < 60000
            seen[port] = http_port
    env = serve_ports_env(8000)
    assert int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) <= int(env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"])


def _listener_closed_after(seconds: float) -> Listener:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    threading.Timer(seconds, s.close).start()
    return Listener("127.0.0.1", s.getsockname()[1], "METRICS_PORT")


def test_a_taken_port_is_refused_at_once_by_default() -> None:
    listener = _listener_closed_after(2.0)
    with pytest.raises(PortInUse, match=f"port {listener.port} on 127.0.0.1 is already in use.*ESSAYCOACH_METRICS_PORT"):
        check_free([listener])


def test_a_port_released_within_the_wait_is_taken() -> None:
    """After an unclean stop the CLI waits for the ended predecessor's ports."""
    listener = _listener_closed_after(0.5)
    check_free([listener], wait_seconds=10)
    assert is_free(listener.host, listener.port)


def test_a_port_still_taken_after_the_wait_is_refused() -> None:
    listener = _listener_closed_after(5.0)
    with pytest.raises(PortInUse):
        check_free([listener], wait_seconds=0.3)


def test_a_picked_port_is_free_and_outside_the_ephemeral_and_ray_worker_ranges() -> None:
    ports = {pick_free_port() for _ in range(20)}
    assert all(20000 <= port < 32000 for port in ports)
    assert len(ports) > 1  # picked at random: two servers started together rarely collide
    for port in ports:
        assert is_free("127.0.0.1", port)
