"""Serve's HAProxy config as our launcher rewrites it: monitoring listeners on one host, or none."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serve_app.haproxy_launcher import PIDS_FILE, patch_config, serve_env

CONFIG = """global
    stats socket /tmp/haproxy-serve/n/admin.sock mode 666 level admin expose-fd listeners
    maxconn 4096
defaults
    mode http
    option splice-request
    option splice-response
frontend prometheus
    bind :9101
    mode http
    http-request use-service prometheus-exporter if { path /metrics }
    no log
frontend http_frontend
    bind 127.0.0.1:8000
    default_backend default_backend
backend default_backend
    http-request return status 404
listen stats
  bind *:8404
  stats enable
  stats uri /stats
  stats refresh 1s
"""
AUTO_SPLICED = CONFIG.replace("    option splice-request\n    option splice-response\n", "    option splice-auto\n")


def test_forced_splicing_becomes_splice_auto_for_our_small_frames() -> None:
    patched = patch_config(CONFIG, host="127.0.0.1", ports={"stats": 8404, "metrics": 9101})
    assert "splice-request" not in patched and "splice-response" not in patched
    assert patched.count("    option splice-auto\n") == 1
    assert patch_config(patched, host="127.0.0.1", ports={"stats": 8404, "metrics": 9101}) == patched


def test_monitoring_listeners_are_removed_when_their_ports_are_off() -> None:
    patched = patch_config(CONFIG, host="127.0.0.1", ports={"stats": 0, "metrics": 0})
    assert "listen stats" not in patched and "frontend prometheus" not in patched
    assert "8404" not in patched and "9101" not in patched
    # Everything else is kept as Serve wrote it, the admin socket included (splicing aside).
    assert patched == AUTO_SPLICED.replace(CONFIG[CONFIG.index("frontend prometheus"):CONFIG.index("frontend http_frontend")],
                                     "").replace(CONFIG[CONFIG.index("listen stats"):], "")


def test_monitoring_listeners_bind_the_configured_host_and_ports() -> None:
    patched = patch_config(CONFIG, host="127.0.0.1", ports={"stats": 18404, "metrics": 19101})
    assert "  bind 127.0.0.1:18404\n" in patched
    assert "    bind 127.0.0.1:19101\n" in patched
    assert "    bind 127.0.0.1:8000\n" in patched  # the service's own listener is Serve's
    assert patch_config(patched, host="127.0.0.1", ports={"stats": 18404, "metrics": 19101}) == patched


def test_serve_template_still_has_the_sections_we_rewrite() -> None:
    # Private Serve symbol: ray.serve._private.haproxy_templates.HAPROXY_CONFIG_TEMPLATE (ray 2.60).
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    assert "{{ config.stats_port }}" in HAPROXY_CONFIG_TEMPLATE
    assert "{{ config.metrics_port }}" in HAPROXY_CONFIG_TEMPLATE
    patched = patch_config(HAPROXY_CONFIG_TEMPLATE, host="127.0.0.1", ports={"stats": 0, "metrics": 0})
    assert "config.stats_port" not in patched and "config.metrics_port" not in patched
    assert "{{ config.frontend_port }}" in patched
    assert "option splice-request" in HAPROXY_CONFIG_TEMPLATE and "option splice-response" in HAPROXY_CONFIG_TEMPLATE
    assert "option splice-request" not in patched and "option splice-auto" in patched


def _launch(tmp_path: Path, *, slice_ms: float, program: list[str]) -> str:
    """The launcher script `serve_env` writes, run as Serve would run HAProxy, with `program`
    exec'd in HAProxy's place (no `-f`: no config to patch)."""
    env = serve_env(tmp_path, real_binary=program[0], host="127.0.0.1", stats_port=0, metrics_port=0,
                    slice_ms=slice_ms)
    done = subprocess.run([env["RAY_SERVE_HAPROXY_BINARY_PATH"], *program[1:]], capture_output=True, text=True,
                          check=True, timeout=30)
    return done.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux")
                    or tuple(map(int, os.uname().release.split(".")[:2])) < (6, 12),
                    reason="no EEVDF slice requests (Linux 6.12+)")
def test_haproxy_is_execd_with_the_configured_time_slice(tmp_path: Path) -> None:
    # `grep` in HAProxy's place reads its own (the exec'd process's) scheduler line.
    program = [shutil.which("grep") or "/bin/grep", "se.slice", "/proc/self/sched"]
    assert _launch(tmp_path, slice_ms=0.3, program=program).split()[-1] == "300000"
    default = _launch(tmp_path, slice_ms=0, program=program).split()[-1]
    assert default != "300000"  # 0: the kernel's own slice
    assert len((tmp_path / PIDS_FILE).read_text().splitlines()) == 2  # each launch still recorded


def test_essaycoach_run_hands_the_latency_slice_setting_to_the_haproxy_launcher(tmp_path: Path) -> None:
    from serve_app.cli import haproxy_env
    from serve_app.settings import Settings

    settings = Settings(jwt_secret="x" * 32, var_dir=tmp_path, latency_slice_ms=0.25)
    script = Path(haproxy_env(settings, tmp_path)["RAY_SERVE_HAPROXY_BINARY_PATH"]).read_text()
    assert " --slice-ms 0.25 " in script
