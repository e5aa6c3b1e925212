"""The Gateway replica's uvicorn websocket defaults (serve_app.fastpath.uvicorn_config), and the
replica environment that installs our hooks in Serve (serve_app.fastpath.serve_hooks)."""

import pytest
import uvicorn.config

from serve_app.fastpath.uvicorn_config import configure_websockets
from serve_app.fastpath.uvicorn_protocol import IMPORT_PATH as LEAN_PROTOCOL


@pytest.fixture(autouse=True)
def restore_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uvicorn.config.Config, "__init__", uvicorn.config.Config.__init__)


def make_config(**kwargs: object) -> uvicorn.config.Config:
    return uvicorn.config.Config(lambda: None, **kwargs)  # type: ignore[arg-type]


def test_defaults_become_the_lean_sansio_protocol_without_compression() -> None:
    assert make_config().ws == "auto" and make_config().ws_per_message_deflate is True
    configure_websockets(compression=False)
    config = make_config()
    assert config.ws == LEAN_PROTOCOL
    assert config.ws_per_message_deflate is False


def test_compression_setting_keeps_deflate() -> None:
    configure_websockets(compression=True)
    config = make_config()
    assert config.ws == LEAN_PROTOCOL
    assert config.ws_per_message_deflate is True


def test_explicit_arguments_win_and_reconfiguring_does_not_stack() -> None:
    configure_websockets(compression=True)
    configure_websockets(compression=False)
    assert make_config().ws_per_message_deflate is False
    assert make_config(ws="wsproto", ws_per_message_deflate=True).ws == "wsproto"
    assert make_config(ws_per_message_deflate=True).ws_per_message_deflate is True


def test_replica_hook_passes_serves_validation_and_is_in_the_gateway_env() -> None:
    from ray.serve._private.http_util import validate_http_proxy_callback_return
    from ray.serve._private.utils import call_function_from_import_path

    from serve_app.deployments import GatewayArgs, build_app
    from serve_app.fastpath.serve_hooks import REPLICA_MIDDLEWARES_ENV, SkipServe

    (path,) = REPLICA_MIDDLEWARES_ENV.values()
    (middleware,) = validate_http_proxy_callback_return(call_function_from_import_path(path))
    assert middleware.cls is SkipServe
    gateway = build_app(GatewayArgs(env={"ESSAYCOACH_HOSTS": "3"}))._bound_deployment
    env = gateway.ray_actor_options["runtime_env"]["env_vars"]
    assert env == {**REPLICA_MIDDLEWARES_ENV, "ESSAYCOACH_HOSTS": "3", "ESSAYCOACH_FAST_PATH": "on"}
