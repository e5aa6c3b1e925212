"""The fast path: everything of ours that reaches into Ray Serve's or uvicorn's internals to make
an open socket and an HTTP request cheap, in one place and behind one switch.

The switch is `Settings.fast_path` (`ESSAYCOACH_FAST_PATH`, on by default; `off`, `false` or `0`
turns it off). `build_app` reads it where the app is built and writes its value into the Gateway
replicas' environment, so builder and replicas always agree. Off means plain Serve:

- no uvicorn patch and no `uvicorn_protocol`: a replica's own HTTP server (Serve's HAProxy ingress) speaks
  websocket with uvicorn's defaults (so it also negotiates permessage-deflate, whatever
  `WS_COMPRESSION` says), and frames go out through Starlette's `send`;
- no direct hand-off and no proxy callback: sockets and HTTP requests take Serve's request path
  (and count as Serve's ongoing requests, which the Gateway's autoscaling policy then sees; the
  replica reports 0 directly served sockets and requests), with Serve's per-request access log
  and `ray_serve_*` request metrics;
- `essaycoach run` starts Serve's default proxy (as `--default-proxy` does) unless the operator
  sets `RAY_SERVE_ENABLE_HA_PROXY=1` by hand: HAProxy, throughput mode and its thread count are
  Serve settings read from `ray.serve._private.constants`, as private as the rest. On a cluster
  (ray-cluster.yaml, ops/k8s) the nodes' environment sets HAProxy; remove those lines too for a
  Serve with nothing of ours.

What the fast path relies on, each named by `tests/unit/test_fastpath_contract.py` so an upgrade
that moves one fails there:

uvicorn (pinned 0.54)
- `uvicorn.config.Config.__init__` is wrapped in each Gateway replica (`uvicorn_config`) to
  default its `ws` and `ws_per_message_deflate` arguments: Serve builds the replica's server
  `Config` itself and offers no setting for either.
- `uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol` is subclassed
  (`uvicorn_protocol`): its `queue` and `writable` attributes are replaced, `run_asgi`, `send` and
  `shutdown` extended (a socket's last words before any close frame, the server's 1012
  included), and `send_now` reads `writable`, `disconnected`, `handshake_complete`, `close_sent`,
  `initial_response`, `transport`, `conn` (websockets' `ServerProtocol`: `send_binary`,
  `send_text`, `data_to_send`) and `loop`, and drops `response` after the handshake.
- websockets (pinned 17): `send_now` writes a data frame's header itself while `conn`'s `state`,
  `extensions`, `writes`, `debug` and `expect_continuation_frame` say websockets would write just
  that; `data_received` (`one_binary_frame`) unmasks whole binary frames itself while `conn`'s
  `parser` waits in `StreamReader.at_eof` (a frame boundary) with `reader.buffer` and `events`
  empty, `current_size` None, within `max_message_size` / `max_fragment_size`, and hands it
  over as uvicorn's `handle_bytes` does (`curr_msg_data_type`, `frames`).

Ray Serve (pinned 2.60)
- `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` (`serve_hooks.REPLICA_MIDDLEWARES_ENV`), read by
  `ray.serve._private.http_util.configure_http_middlewares` in the replica (and the proxy: which
  is why it is set only in the Gateway's runtime env), its return value checked by
  `validate_http_proxy_callback_return`: how `SkipServe` gets in front of Serve's request
  handling on the replica's own server. `http_util._apply_middlewares` wraps the replica's
  `Replica._direct_ingress_asgi` in its `RequestIdMiddleware` (kept as `_app`) before ours:
  `SkipServe` reads the replica's `_route_prefix` through them, and sets `root_path` from it as
  `_direct_ingress_asgi` does.
- Serve's own routes on the replica's server, which stay Serve's: `/-/healthz` and `/-/routes`
  (answered by `_direct_ingress_asgi` from `_dataplane_health_check`: 503 "DRAINING" once the
  replica stops); HAProxy's health check of each replica asks `/-/healthz`
  (`http_health_check_path` of `haproxy.BackendConfig` and
  `HAProxyConfig`, its `option httpchk`).
- What Serve's request path did for an HTTP request and the hand-off replaces or drops
  (`handoff` says how): its ongoing-request count (autoscaling, draining), request id middleware,
  access log, per-request `ray_serve_*` metrics (gone for the Gateway's HTTP requests: our
  `essaycoach_http_*` metrics, our request log and HAProxy's metrics remain), the exception it
  logged and swallowed, the disconnect watcher, the request timeout (`HTTPOptions.request_timeout_s`,
  unset), `max_ongoing_requests` / `max_queued_requests`. At a replica's stop Serve's
  `_perform_graceful_shutdown` stops the server (`should_exit`) and awaits its task (uvicorn lets
  requests in flight finish) before the user callable's destructor ends our app's lifespan,
  where `handoff.Handoff.close_all` waits for any still in flight.
- the `x-request-disconnect-disabled: ?1` request header
  (`ray.serve._private.constants.SERVE_HTTP_REQUEST_DISCONNECT_DISABLED_HEADER`, parsed by
  `http_util.parse_disconnect_disabled_header`): sockets that still go through Serve skip its
  disconnect watcher.
- throughput mode (`RAY_SERVE_THROUGHPUT_OPTIMIZED`) running user code on the server's event
  loop (`RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD` off): what lets `handoff` serve a socket or
  a request on the loop that accepted it; elsewhere both go through Serve.
- the HAProxy ingress and its settings (`ingress.FAST_PATH_ENV`: `RAY_SERVE_ENABLE_HA_PROXY`,
  `RAY_SERVE_THROUGHPUT_OPTIMIZED`, `RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE`,
  `RAY_SERVE_HAPROXY_NBTHREAD`), and the draining window `handoff` relies on at shutdown
  (`RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`).

Not behind the switch (they hold whichever ingress runs): the Gateway's `record_autoscaling_stats`
hook (sockets and HTTP requests served directly; 0 and 0 off) and `scale_on_sockets` policy
(serve_app/deployments.py), and Serve's HAProxy launcher and
port block (serve_app/haproxy_launcher.py, serve_app/ports.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SWITCH_ENV = "ESSAYCOACH_FAST_PATH"


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """The switch as `Settings.fast_path` reads it from `environ` (default: this process's
    environment), without the rest of the settings: the process building the app may lack the
    replicas' secrets."""
    from pydantic import TypeAdapter

    from serve_app.settings import Settings

    value = (os.environ if environ is None else environ).get(SWITCH_ENV)
    if value is None:
        return bool(Settings.model_fields["fast_path"].default)
    return TypeAdapter(bool).validate_python(value)


def replica_env(*, on: bool) -> dict[str, str]:
    """The Gateway replicas' environment for the switch: its value (so a replica decides as the
    builder did) and, when on, Serve's proxy callback that installs our replica middleware."""
    from serve_app.fastpath.serve_hooks import REPLICA_MIDDLEWARES_ENV

    return {SWITCH_ENV: "on" if on else "off", **(REPLICA_MIDDLEWARES_ENV if on else {})}


def setup_replica(*, on: bool, compression: bool) -> None:
    """A Gateway replica's part at start, before Serve starts its HTTP server: uvicorn's
    websocket defaults when the switch is on; nothing when off."""
    if on:
        from serve_app.fastpath.uvicorn_config import configure_websockets

        configure_websockets(compression=compression)
