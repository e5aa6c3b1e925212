"""Serve's own ports per run: instances on different HTTP ports never share one."""

from __future__ import annotations

from serve_app.ports import serve_ports, serve_ports_env


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
