"""`ESSAYCOACH_FAST_PATH` (serve_app.fastpath): off, the Gateway is plain Serve: no uvicorn patch,
no proxy callback, Serve's default proxy under `essaycoach run`. On is the default."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvicorn.config

from serve_app import fastpath
from serve_app.deployments import GatewayArgs, build_app
from serve_app.fastpath.ingress import FAST_PATH_ENV, fast_path_env
from serve_app.fastpath.serve_hooks import CALLBACK_ENV, REPLICA_MIDDLEWARES_ENV
from serve_app.fastpath.uvicorn_protocol import IMPORT_PATH as LEAN_PROTOCOL
from tests.conftest import TEST_SECRET


@pytest.fixture(autouse=True)
def restore_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uvicorn.config.Config, "__init__", uvicorn.config.Config.__init__)
    monkeypatch.delenv(fastpath.SWITCH_ENV, raising=False)


def gateway_env(args: GatewayArgs) -> dict[str, str]:
    return dict(build_app(args)._bound_deployment.ray_actor_options["runtime_env"]["env_vars"])


def test_the_switch_is_on_unless_turned_off() -> None:
    from serve_app.settings import Settings

    assert fastpath.enabled({}) is True
    assert [fastpath.enabled({"ESSAYCOACH_FAST_PATH": v}) for v in ("off", "false", "0", "on", "true")] == [
        False, False, False, True, True]
    assert Settings(jwt_secret=TEST_SECRET).fast_path is True
    assert Settings(jwt_secret=TEST_SECRET, fast_path="off").fast_path is False  # type: ignore[arg-type]


def test_switched_off_the_gateway_gets_no_proxy_callback_and_its_replicas_are_told() -> None:
    assert gateway_env(GatewayArgs(env={"ESSAYCOACH_FAST_PATH": "off", "ESSAYCOACH_HOSTS": "3"})) == {
        "ESSAYCOACH_FAST_PATH": "off", "ESSAYCOACH_HOSTS": "3"}
    assert gateway_env(GatewayArgs(fast_path=False)) == {"ESSAYCOACH_FAST_PATH": "off"}
    on = gateway_env(GatewayArgs())
    assert on == {**REPLICA_MIDDLEWARES_ENV, "ESSAYCOACH_FAST_PATH": "on"}


def test_switched_off_in_the_builders_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESSAYCOACH_FAST_PATH", "off")
    env = gateway_env(GatewayArgs())
    assert CALLBACK_ENV not in env and env["ESSAYCOACH_FAST_PATH"] == "off"
    # The args' own value wins over the environment's.
    assert gateway_env(GatewayArgs(env={"ESSAYCOACH_FAST_PATH": "on"}))[CALLBACK_ENV]


def test_switched_off_a_replica_leaves_uvicorn_alone() -> None:
    fastpath.setup_replica(on=False, compression=False)
    config = uvicorn.config.Config(lambda: None)  # type: ignore[arg-type]
    assert config.ws == "auto" and config.ws_per_message_deflate is True
    fastpath.setup_replica(on=True, compression=False)
    config = uvicorn.config.Config(lambda: None)  # type: ignore[arg-type]
    assert config.ws == LEAN_PROTOCOL and config.ws_per_message_deflate is False


def test_switched_off_essaycoach_run_starts_serves_default_proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from serve_app.cli import run_env
    from serve_app.run_record import RunFiles
    from serve_app.settings import Settings

    for name in FAST_PATH_ENV:
        monkeypatch.delenv(name, raising=False)  # a Ray test in this process may have set them
    settings = Settings(jwt_secret=TEST_SECRET, var_dir=tmp_path)
    assert FAST_PATH_ENV.items() <= run_env(settings, RunFiles(tmp_path), default_proxy=False).items()
    monkeypatch.setenv("ESSAYCOACH_FAST_PATH", "off")
    assert fast_path_env() == {}
    env = run_env(settings, RunFiles(tmp_path), default_proxy=False)
    assert not any(name in env for name in FAST_PATH_ENV)
    assert env["ESSAYCOACH_FAST_PATH"] == "off"  # the driver passes ESSAYCOACH_* on to the replicas


def test_essaycoach_run_starts_rays_workers_at_normal_priority(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ray's default (nice 15) put the Gateway and HAProxy behind every nice-0 process; an
    operator's own value wins."""
    from serve_app.cli import run_env
    from serve_app.run_record import RunFiles
    from serve_app.settings import Settings

    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    settings = Settings(jwt_secret=TEST_SECRET, var_dir=tmp_path)
    assert run_env(settings, RunFiles(tmp_path), default_proxy=False)["RAY_worker_niceness"] == "0"
    assert run_env(settings, RunFiles(tmp_path), default_proxy=True)["RAY_worker_niceness"] == "0"
    monkeypatch.setenv("RAY_worker_niceness", "5")
    assert run_env(settings, RunFiles(tmp_path), default_proxy=False)["RAY_worker_niceness"] == "5"
