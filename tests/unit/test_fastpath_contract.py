"""Contract tests for the fast path (serve_app.fastpath): every private uvicorn and Ray Serve
symbol it relies on, by name, so an upgrade that moves one fails here instead of silently going
slow (sockets back on Serve's request path) or breaking `send_now`."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import uvicorn.config
from uvicorn.protocols.websockets import websockets_sansio_impl
from websockets.exceptions import InvalidState
from websockets.frames import Frame
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol

from serve_app.fastpath import uvicorn_protocol
from serve_app.fastpath.ingress import FAST_PATH_ENV, HAPROXY_THREADS_ENV
from serve_app.fastpath.serve_hooks import CALLBACK_ENV, DISCONNECT_DISABLED, REPLICA_MIDDLEWARES_ENV, SkipServe

SANSIO = websockets_sansio_impl.WebSocketsSansIOProtocol


def _methods_mentioning(cls: type, text: str) -> set[str]:
    return {name for name, member in vars(cls).items()
            if inspect.isfunction(member) and text in inspect.getsource(member)}


# uvicorn


def test_uvicorn_config_still_takes_the_websocket_arguments_we_default() -> None:
    parameters = inspect.signature(uvicorn.config.Config.__init__).parameters
    assert {"ws", "ws_per_message_deflate"} <= set(parameters)
    assert parameters["ws"].default == "auto" and parameters["ws_per_message_deflate"].default is True


def test_uvicorn_loads_our_protocol_from_its_import_path() -> None:
    """`uvicorn_protocol.IMPORT_PATH` (what the Gateway replica's Config gets) names the moved class."""
    config = uvicorn.config.Config(lambda: None, ws=uvicorn_protocol.IMPORT_PATH)  # type: ignore[arg-type]
    config.load()
    assert config.ws_protocol_class is uvicorn_protocol.LeanWebSocketProtocol


def test_the_sansio_protocol_still_makes_the_two_objects_our_protocol_replaces() -> None:
    """`LeanWebSocketProtocol` swaps `queue` (an `asyncio.Queue`) and `writable` (an
    `asyncio.Event`) for `Inbox` and `Flag`, which offer only these methods."""
    source = inspect.getsource(SANSIO)
    assert "self.queue: asyncio.Queue[ASGIReceiveEvent] = asyncio.Queue()" in source
    assert "self.writable = asyncio.Event()" in source
    used = {m for m in ("put_nowait", "get", "empty", "qsize", "get_nowait", "join", "task_done", "full")
            if f"self.queue.{m}(" in source}
    assert used <= {"put_nowait", "get", "empty", "qsize"}, used
    used = {m for m in ("set", "clear", "wait", "is_set") if f"self.writable.{m}(" in source}
    assert used <= {"set", "clear", "wait", "is_set"}


def test_the_sansio_protocol_still_has_the_state_send_now_reads() -> None:
    """`send_now` checks `writable`, `disconnected`, `handshake_complete`, `close_sent`,
    `initial_response` and `transport.is_closing()`, writes through `conn` and the transport
    (a data frame itself while `conn`'s `state`, `extensions`, `writes`, `debug` and
    `expect_continuation_frame` say websockets would write just that),
    and `current_connection()` compares `loop`; `run_asgi`, `send` and `shutdown` are extended
    (`say_last_words` writes through `conn` the same way, checking its `state`)."""
    init = inspect.getsource(SANSIO.__init__)
    for attribute in ("loop", "handshake_complete", "close_sent", "disconnected", "initial_response", "conn",
                      "writable", "queue"):
        assert f"self.{attribute}" in init, attribute
    assert "self.transport = transport" in inspect.getsource(SANSIO.connection_made)
    assert "ServerProtocol(" in init
    for method in ("run_asgi", "send", "pause_writing", "resume_writing", "connection_made", "shutdown"):
        assert inspect.isfunction(vars(SANSIO).get(method)), method
    # `shutdown` (the server stopping) writes its 1012 close frame itself: our last words go first.
    assert "send_close(1012)" in inspect.getsource(SANSIO.shutdown)
    assert inspect.iscoroutinefunction(SANSIO.run_asgi) and inspect.iscoroutinefunction(SANSIO.send)
    for method in ("send_binary", "send_text", "data_to_send"):
        assert callable(getattr(ServerProtocol, method)), method
    # `send_now` writes a data frame itself while these say `send_binary` would add nothing to it.
    protocol_init = inspect.getsource(Protocol.__init__)
    for attribute in ("state", "extensions", "writes", "debug", "expect_continuation_frame"):
        assert f"self.{attribute}" in protocol_init, attribute
    assert isinstance(Protocol.state, property) and State.OPEN


def test_websockets_parser_still_has_what_the_whole_frame_path_reads() -> None:
    """`LeanWebSocketProtocol.one_binary_frame` reads `conn`'s `parser` (a generator chain that
    waits in `StreamReader.at_eof` at a frame boundary), `reader.buffer`, `events`,
    `current_size`, `max_message_size` and `max_fragment_size`, unmasks with
    `websockets.frames.apply_mask`, and hands the payload over as uvicorn's `handle_bytes` does
    (`curr_msg_data_type`, `frames`, `send_receive_event_to_app`)."""
    from websockets.server import ServerProtocol
    from websockets.streams import StreamReader

    protocol_init = inspect.getsource(Protocol.__init__)
    for attribute in ("parser", "reader", "events", "current_size", "max_message_size", "max_fragment_size"):
        assert f"self.{attribute}" in protocol_init, attribute
    assert "self.buffer" in inspect.getsource(StreamReader.__init__)
    assert "yield from self.reader.at_eof()" in inspect.getsource(Protocol.parse)
    assert "yield from super().parse()" in inspect.getsource(ServerProtocol.parse)
    assert "apply_mask(data, mask_bytes)" in inspect.getsource(Frame.parse)
    handle_bytes = inspect.getsource(SANSIO.handle_bytes)
    assert all(part in handle_bytes for part in ("self.curr_msg_data_type = \"bytes\"", "self.frames = [event.data]",
                                                 "self.send_receive_event_to_app()"))
    assert "self.conn.receive_data(data)" in inspect.getsource(SANSIO.data_received)
    assert issubclass(InvalidState, Exception)


def test_the_handshake_response_is_read_only_until_accept() -> None:
    """`LeanWebSocketProtocol` drops `response` once `send` has accepted: only the handshake may read it."""
    assert _methods_mentioning(SANSIO, "self.response") <= {"handle_connect", "send"}


# Ray Serve


def _serve_constants(env: dict[str, str], names: list[str]) -> dict[str, object]:
    """Serve's settings as a process with `env` reads them (they are read at import)."""
    code = ("import json, sys\nfrom ray.serve._private import constants as c\n"
            "print(json.dumps({n: getattr(c, n) for n in json.loads(sys.argv[1])}))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(names)], env={**clean, **env},
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_serve_reads_the_ingress_settings_we_set_and_throughput_mode_runs_user_code_on_the_servers_loop() -> None:
    names = [*FAST_PATH_ENV, HAPROXY_THREADS_ENV, CALLBACK_ENV, "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD",
             "RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]
    on = _serve_constants({**FAST_PATH_ENV, HAPROXY_THREADS_ENV: "1", **REPLICA_MIDDLEWARES_ENV}, names)
    assert on["RAY_SERVE_ENABLE_HA_PROXY"] is True
    assert on["RAY_SERVE_THROUGHPUT_OPTIMIZED"] is True
    assert on["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] == 100
    assert on[HAPROXY_THREADS_ENV] == 1
    assert on[CALLBACK_ENV] == REPLICA_MIDDLEWARES_ENV[CALLBACK_ENV]
    # `handoff` serves a socket on the loop that accepted it: user code must run there.
    assert on["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] is False
    assert on["RAY_SERVE_ENABLE_DIRECT_INGRESS"] is True
    assert on["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == 30


def test_serves_replica_installs_the_proxy_callback_middlewares() -> None:
    """The replica's own server takes its middlewares from `configure_http_middlewares`, which
    calls the function `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` names and checks its result."""
    from ray.serve._private import http_util, replica
    from ray.serve._private.utils import call_function_from_import_path

    assert "configure_http_middlewares(" in inspect.getsource(replica)
    assert "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH" in inspect.getsource(http_util.configure_http_middlewares)
    (middleware,) = http_util.validate_http_proxy_callback_return(
        call_function_from_import_path(REPLICA_MIDDLEWARES_ENV[CALLBACK_ENV]))
    assert middleware.cls is SkipServe


class _Replica:
    _route_prefix = "/prefix"

    async def _direct_ingress_asgi(self, scope: object, receive: object, send: object) -> None:
        pass


def test_the_replicas_server_wraps_serves_request_path_as_skip_serve_reads_it() -> None:
    """`SkipServe` sits around Serve's `RequestIdMiddleware` (`_app`), around the replica's
    `_direct_ingress_asgi`, whose `_route_prefix` it reads and routes by as Serve does: Serve's
    own `/-/healthz` and `/-/routes` (HAProxy's health check of each replica asks the first), a
    route prefix other than "/" as `root_path`, Serve's 404 outside it."""
    from ray.serve._private import haproxy, http_util, replica
    from starlette.middleware import Middleware

    app = http_util._apply_middlewares(_Replica()._direct_ingress_asgi, [Middleware(SkipServe)])
    assert isinstance(app, SkipServe) and app.route_prefix() == "/prefix"
    assert "self._app = app" in inspect.getsource(http_util.RequestIdMiddleware.__init__)
    assert "self._direct_ingress_asgi," in inspect.getsource(replica.Replica._maybe_start_direct_ingress_servers)
    serve_asgi = inspect.getsource(replica.Replica._direct_ingress_asgi)
    assert 'route = scope.get("path", "")[len(root_path) :]' in serve_asgi
    assert 'if route in ["/-/healthz", "/-/routes"]:' in serve_asgi
    assert 'if self._route_prefix and self._route_prefix != "/":' in serve_asgi
    assert 'scope["root_path"] = root_path + self._route_prefix' in serve_asgi
    assert "if not route.startswith(route_prefix):" in serve_asgi
    assert "if self._shutting_down:" in inspect.getsource(replica.Replica._dataplane_health_check)
    assert haproxy.BackendConfig.http_health_check_path == haproxy.HAProxyConfig.http_health_check_path == "/-/healthz"


def test_serve_stops_the_replicas_server_before_our_app_and_sets_no_request_timeout() -> None:
    """At a replica's stop Serve stops the server (uvicorn lets requests in flight finish) and
    awaits it before the destructor ends our app's lifespan (`Handoff.close_all`); no request
    timeout of Serve's applies by default (the hand-off has none)."""
    from ray.serve._private import replica
    from ray.serve.config import HTTPOptions

    stop = inspect.getsource(replica.Replica._perform_graceful_shutdown)
    server_stops = stop.index("self._direct_ingress_http_server.should_exit = True")
    assert server_stops < stop.index("self._direct_ingress_http_server_task,") < stop.index("await self.shutdown()")
    assert HTTPOptions().request_timeout_s is None


def test_serve_still_honours_the_disconnect_disabled_header() -> None:
    from ray.serve._private import replica
    from ray.serve._private.constants import SERVE_HTTP_REQUEST_DISCONNECT_DISABLED_HEADER
    from ray.serve._private.http_util import parse_disconnect_disabled_header

    name, value = DISCONNECT_DISABLED
    assert SERVE_HTTP_REQUEST_DISCONNECT_DISABLED_HEADER.encode() == name
    assert parse_disconnect_disabled_header({name: value}) is True
    assert parse_disconnect_disabled_header({}) is False
    assert "parse_disconnect_disabled_header(" in inspect.getsource(replica)


def test_serve_still_calls_the_autoscaling_stats_hook_and_gives_the_policy_what_it_reads() -> None:
    """Not behind the switch, but private all the same: `Gateway.record_autoscaling_stats` is
    looked up by name, and `scale_on_sockets` reads these fields of Serve's context."""
    from ray.serve._private import replica
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    assert '"record_autoscaling_stats"' in inspect.getsource(replica)
    fields = set(inspect.signature(AutoscalingContext).parameters)
    assert {"current_num_replicas", "target_num_replicas", "total_num_requests", "aggregated_metrics",
            "config"} <= fields
    assert callable(AutoscalingConfig.get_target_ongoing_requests)


def test_the_sansio_protocol_still_pauses_reading_as_our_override_expects() -> None:
    """`LeanWebSocketProtocol.send_receive_event_to_app` relies on uvicorn's pausing reading
    after queueing a message only while `read_paused` is False, and `receive` resuming it
    only while `read_paused` is True."""
    queued = inspect.getsource(SANSIO.send_receive_event_to_app)
    assert "self.queue.put_nowait(" in queued
    assert "if not self.read_paused:\n            self.read_paused = True\n            self.transport.pause_reading()" in queued
    assert "if self.read_paused and self.queue.empty():" in inspect.getsource(SANSIO.receive)
    assert "self.read_paused = False" in inspect.getsource(SANSIO.__init__)
