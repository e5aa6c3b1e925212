"""The hand-off: websockets and HTTP requests served by a Gateway replica's own HTTP server, past
Serve's request path.

Under Serve's HAProxy ingress each Gateway replica runs a uvicorn server, and every request on it
goes through Serve's request handling (request metadata, request context, access log, metrics,
an ongoing-request slot) before it reaches our app. For a socket that stays open for an hour that
is ~8 KiB held per connection for its whole life (tracemalloc in a replica at 200 sockets,
2026-11-30) and a layer of calls under every frame; for an HTTP request it is CPU: measured
quietly on 2026-12-07 (alternated x3, 2,000 requests each), `GET /me` cost the Gateway 2.14 ms
of CPU through Serve and 1.85 ms past it, a ticket 2.24 and 1.84 ms (an earlier ~6.6 ms reading
was a loaded machine, before the request dependencies became async). It buys either nothing our app lacks: our
handlers authenticate, rate-limit, log, measure and count their own requests and sockets. So the
replica middleware (`serve_app.fastpath.serve_hooks.SkipServe`) hands websocket and HTTP requests
to the app registered here, when that app runs on the same event loop (Serve's throughput mode
runs user code on the server's loop; otherwise everything keeps going through Serve), except
Serve's own routes (`/-/healthz`, which HAProxy's health check asks, and `/-/routes`). The app
registers only when the fast path is on (`serve_app.fastpath`).

What Serve did for these requests and sockets is done here instead, or is not needed:
- **Autoscaling**: Serve no longer counts them as ongoing requests, so the Gateway reports its open
  sockets and its HTTP requests in flight to the autoscaler itself (`Gateway.record_autoscaling_stats`,
  sampled when Serve samples its own count) and its policy adds them to Serve's
  (`serve_app.deployments.scale_on_sockets`).
- **Shutdown**: a stopping replica (scale-down, redeploy) stays reachable for Serve's draining
  window (`RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`, 30 s; HAProxy's health check sees
  503 and stops sending it new requests), then stops its server: uvicorn stops accepting, lets
  each HTTP request in flight finish (closing its connection after the response), and closes
  the sockets with 1012 (service restart; clients reconnect, to another replica) while the
  essay hosts still take the handlers' detaches. Serve's own wait for ongoing requests does not
  see ours; our app's lifespan does: before it closes anything it closes the sockets still open
  with 1001 and waits for them and for the requests still in flight (`Handoff.close_all`).
  Past the controller's deadline (`graceful_shutdown_timeout_s`, at least the draining window)
  the replica is killed, as it was with Serve's requests.
- **Request ids, logs and metrics**: Serve's request id middleware, its access log and its
  per-request metrics (`ray_serve_*` for the replica: requests, latency, errors, ongoing) no
  longer see these requests; our `RequestContextMiddleware` (serve_app.observability) keeps a
  caller's `X-Request-ID` or makes one, logs each request and counts it in
  `essaycoach_http_requests_total` / `essaycoach_http_request_seconds`; HAProxy's own request
  metrics and log still see every request.
- **Errors**: our app answers a handler's error with 500 problem+json and logs it (`serve_app.errors`);
  Starlette then raises it again, for the server to log. Serve swallowed it there; so do we, or
  uvicorn would close the connection (HAProxy's, kept alive for the next requests) after the
  answer.
- **Not relied on**: Serve's request timeout (`request_timeout_s`, unset: none), its per-request
  disconnect watcher (a request whose client went runs to its end; our handlers are short and
  Starlette's streaming responses watch for the disconnect themselves), `max_ongoing_requests`
  and `max_queued_requests` (they bound only requests still on Serve's path; HAProxy's `maxconn`
  bounds connections), and request size (Serve checks none; our `RequestContextMiddleware`
  refuses bodies over `max_body_bytes`).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.realtime.protocol import CloseCode

GOING_AWAY: Message = {"type": "websocket.close", "code": int(CloseCode.GOING_AWAY), "reason": "server restarting"}
log = logging.getLogger("essaycoach.fastpath")


class Handoff:
    """One app that takes the replica's sockets and HTTP requests directly: the app, its event
    loop, the open sockets' `send` callables (to close them at shutdown) and the count of HTTP
    requests in flight."""

    __slots__ = ("app", "loop", "sends", "requests")

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.loop = app, loop
        self.sends: set[Send] = set()
        self.requests = 0

    @property
    def open(self) -> int:
        return len(self.sends)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket, until it closes."""
        self.sends.add(send)
        try:
            await self.app(scope, receive, send)
        finally:
            self.sends.discard(send)

    async def serve_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP request, counted in flight until our app is done with it."""
        self.requests += 1
        try:
            await self.app(scope, receive, send)
        except Exception:
            # Answered (500 problem+json) and logged by our app's handler (`serve_app.errors`);
            # uvicorn would close the connection for it (module doc: Errors).
            log.debug("request failed after our app answered it", exc_info=True)
        finally:
            self.requests -= 1

    async def close_all(self, timeout: float = 5.0) -> None:
        """Close every open socket (1001) and wait up to `timeout` for their handlers and for the
        HTTP requests in flight to end.
        The close frames go out side by side within that `timeout`: one waits for its peer's
        flow control, so a peer that reads nothing would otherwise hold back every later close
        and the shutdown. Before each close frame our protocol writes the socket's last words
        (the doc socket's due ack: `serve_app.realtime.connection`), without waiting."""
        deadline = self.loop.time() + timeout
        closing = [asyncio.ensure_future(_going_away(send)) for send in list(self.sends)]
        if closing:
            _, stuck = await asyncio.wait(closing, timeout=timeout)
            for task in stuck:
                task.cancel()
        while (self.sends or self.requests) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)


async def _going_away(send: Send) -> None:
    try:
        await send(GOING_AWAY)
    except Exception:  # not accepted yet, or already gone: its handler ends on its own
        pass


_registered: list[Handoff] = []


def register(app: ASGIApp) -> Handoff:
    """Serve `app`'s sockets and HTTP requests directly in this process (from its lifespan, on its loop)."""
    handoff = Handoff(app, asyncio.get_running_loop())
    _registered.append(handoff)
    return handoff


def unregister(handoff: Handoff) -> None:
    if handoff in _registered:
        _registered.remove(handoff)


def current() -> Handoff | None:
    """The app this process serves directly: the latest registered, if any."""
    return _registered[-1] if _registered else None


def for_this_loop() -> Handoff | None:
    """`current()` if it runs on the calling event loop (else its objects cannot be used here).
    Called from a coroutine (the replica middleware), so a loop is always running."""
    handoff = current()
    return handoff if handoff is not None and handoff.loop is asyncio.get_running_loop() else None
