"""Serve's HAProxy config as our launcher rewrites it: monitoring listeners on one host, or none."""

from __future__ import annotations

from serve_app.haproxy_launcher import patch_config

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
