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
    from serve_app.fastpath.ingress import FAST_PATH_ENV, HAPROXY_THREADS_ENV, haproxy_threads

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
        assert values["RAY_worker_niceness"] == "0"  # Gateways and HAProxy at normal priority (serve_app/cli.py)


def test_cluster_config_starts_head_off_the_redis_port_with_autoscaling_workers() -> None:
    cluster = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--port=6380" in head
    assert cluster["available_node_types"]["worker"]["max_workers"] > cluster["available_node_types"]["worker"]["min_workers"]


def _deployments(app: object) -> dict[str, dict]:
    return {d.name: d.model_dump(exclude_unset=True) for d in app.deployments}  # type: ignore[attr-defined]


def test_serve_config_autoscales_both_deployments_and_its_policy_resolves() -> None:
    from actors.analysis.service import ANALYZER_DEPLOYMENT
    from serve_app.deployments import scale_on_sockets

    app = ServeDeploySchema(**yaml.safe_load((ROOT / "ops/serve.yaml").read_text())).applications[0]
    deployments = _deployments(app)
    assert set(deployments) == {"Gateway", ANALYZER_DEPLOYMENT}
    for name, deployment in deployments.items():
        scaling = deployment["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] < scaling["max_replicas"], name
        assert scaling["target_ongoing_requests"] > 0, name
        assert scaling["upscale_delay_s"] < scaling["downscale_delay_s"], name
    module, attr = deployments["Gateway"]["autoscaling_config"]["policy"]["policy_function"].split(":")
    assert getattr(importlib.import_module(module), attr) is scale_on_sockets


def _k8s(name: str) -> dict:
    return yaml.safe_load((ROOT / "ops/k8s" / name).read_text())


def test_rayservice_runs_the_serve_config_on_an_autoscaling_cluster() -> None:
    import ray

    service = _k8s("rayservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    embedded = ServeDeploySchema(**yaml.safe_load(service["spec"]["serveConfigV2"]))
    ours = ServeDeploySchema(**yaml.safe_load((ROOT / "ops/serve.yaml").read_text()))
    assert embedded.model_dump(exclude_unset=True) == ours.model_dump(exclude_unset=True)

    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    (workers,) = cluster["workerGroupSpecs"]
    assert 1 <= workers["minReplicas"] <= workers["replicas"] < workers["maxReplicas"]
    dockerfile = (ROOT / "ops/k8s/Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311" in dockerfile


def test_every_rayservice_container_takes_secrets_from_the_secret_and_probes_readyz() -> None:
    from serve_app.fastpath.ingress import FAST_PATH_ENV

    service, secret = _k8s("rayservice.yaml"), _k8s("secrets.example.yaml")
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"],
            *(group["template"]["spec"] for group in cluster["workerGroupSpecs"])]
    containers = [c for pod in pods for c in pod["containers"]]
    migrate = cluster["headGroupSpec"]["template"]["spec"]["initContainers"]
    assert [c["command"] for c in migrate] == [["essaycoach", "migrate"]]
    images = {c["image"] for c in [*containers, *migrate]}
    assert len(images) == 1
    for container in [*containers, *migrate]:
        env = {e["name"]: e for e in container["env"]}
        for variable, key in (("ESSAYCOACH_DATABASE_URL", "database-url"), ("ESSAYCOACH_REDIS_URL", "redis-url"),
                              ("ESSAYCOACH_JWT_SECRET", "jwt-secret")):
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], key)
            assert key in secret["stringData"]
        assert "value" not in env["ESSAYCOACH_JWT_SECRET"]
        assert env["ESSAYCOACH_DEV_MODE"]["value"] == "false"
        assert {k: env[k]["value"] for k in FAST_PATH_ENV} == FAST_PATH_ENV
    for container in containers:
        probe = container["readinessProbe"]["httpGet"]
        assert (probe["path"], probe["port"]) == ("/readyz", 8000)
