"""The operator's configs parse and point at code that builds the app."""

from __future__ import annotations

import importlib
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


def test_cluster_config_starts_head_off_the_redis_port_with_the_fast_ingress() -> None:
    cluster = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--port=6380" in head
    setup = " ".join(cluster["setup_commands"])
    from serve_app.cli import FAST_PATH_ENV

    assert all(f"{key}={value}" in setup for key, value in FAST_PATH_ENV.items())
    assert cluster["available_node_types"]["worker"]["max_workers"] > cluster["available_node_types"]["worker"]["min_workers"]
