"""The operator's configs parse and point at code that builds the app."""

from __future__ import annotations

import importlib
import os
import subprocess
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]


def test_serve_config_validates_and_its_import_path_builds_the_app() -> None:
    config = ServeDeploySchema(**yaml.safe_load((ROOT / "ops/serve.yaml").read_text()))
    app = config.applications[0]
    module, attr = app.import_path.split(":")
    builder = getattr(importlib.import_module(module), attr)
    assert builder(app.args) is not None


def test_cluster_nodes_get_the_fast_ingress_environment_once(tmp_path: Path) -> None:
    """The setup command really writes the fast path's settings into a node's profile (once),
    with HAProxy's threads following the node's cores as `essaycoach run` sets them."""
    from serve_app.cli import FAST_PATH_ENV, HAPROXY_THREADS_ENV, haproxy_threads

    cluster = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())
    command = next(c for c in cluster["setup_commands"] if "ESSAYCOACH_DEV_MODE" in c)
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    for _ in range(2):
        subprocess.run(["bash", "-c", command], env=env, check=True, capture_output=True)
    assert (tmp_path / ".profile").read_text().count("ESSAYCOACH_DEV_MODE=false") == 1
    for cpus in (1, 2, 8, 16, 64):
        shell = subprocess.run(["bash", "-c", f"nproc() {{ echo {cpus}; }}; source ~/.profile; env"],
                               env=env, check=True, capture_output=True, text=True)
        values = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
        assert {key: values.get(key) for key in FAST_PATH_ENV} == FAST_PATH_ENV
        assert values[HAPROXY_THREADS_ENV] == haproxy_threads(cpus), cpus
        assert values["ESSAYCOACH_DEV_MODE"] == "false"


def test_cluster_config_starts_head_off_the_redis_port_with_autoscaling_workers() -> None:
    cluster = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--port=6380" in head
    assert cluster["available_node_types"]["worker"]["max_workers"] > cluster["available_node_types"]["worker"]["min_workers"]
