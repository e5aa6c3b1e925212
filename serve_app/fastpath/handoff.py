"""The socket hand-off: websockets served by a Gateway replica's own HTTP server, past Serve's
request path.

Under Serve's HAProxy ingress each Gateway replica runs a uvicorn server, and every request on it
goes through Serve's request handling (request metadata, request context, access log, metrics,
an ongoing-request slot) before it reaches our app. For a socket that stays open for an hour that
is ~8 KiB held per connection for its whole life (tracemalloc in a replica at 200 sockets,
2026-11-30) and a layer of calls under every frame, and it buys a socket nothing: our handlers
authenticate, rate-limit, log and count their own sockets. So the replica middleware
(`serve_app.fastpath.serve_hooks.SocketsSkipServe`) hands websocket requests to the app registered here,
when that app runs on the same event loop (Serve's throughput mode runs user code on the
server's loop; otherwise sockets keep going through Serve). The app registers only when the fast
path is on (`serve_app.fastpath`).

Two things Serve did for such a socket are done here instead:
- **Autoscaling**: Serve no longer counts these sockets as ongoing requests, so the Gateway reports
  `open` to the autoscaler itself (`Gateway.record_autoscaling_stats`) and its policy scales on
  sockets plus requests (`serve_app.deployments.scale_on_sockets`).
- **Shutdown**: a stopping replica (scale-down, redeploy) stays reachable for Serve's draining
  window (`RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`, 30 s), then stops its server, which
  closes the sockets with 1012 (service restart; clients reconnect, to another replica) while the
  essay hosts still take the handlers' detaches. Serve does not wait on these sockets as it would
  on ongoing requests; any still open when the app itself stops are closed with 1001 by the
  app's lifespan (`close_all`).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.realtime.protocol import CloseCode

GOING_AWAY: Message = {"type": "websocket.close", "code": int(CloseCode.GOING_AWAY), "reason": "server restarting"}


class SocketHandoff:
    """One app that takes the replica's sockets directly: the app, its event loop and the open
    connections' `send` callables (to close them at shutdown)."""

    __slots__ = ("app", "loop", "sends")

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.loop = app, loop
        self.sends: set[Send] = set()

    @property
    def open(self) -> int:
        return len(self.sends)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.sends.add(send)
        try:
            await self.app(scope, receive, send)
        finally:
            self.sends.discard(send)

    async def close_all(self, timeout: float = 5.0) -> None:
        """Close every open socket (1001) and wait up to `timeout` for their handlers to end.
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
        while self.sends and self.loop.time() < deadline:
            await asyncio.sleep(0.05)


async def _going_away(send: Send) -> None:
    try:
        await send(GOING_AWAY)
    except Exception:  # not accepted yet, or already gone: its handler ends on its own
        pass


_registered: list[SocketHandoff] = []


def register(app: ASGIApp) -> SocketHandoff:
    """Serve `app`'s sockets directly in this process (from its lifespan, on its loop)."""
    handoff = SocketHandoff(app, asyncio.get_running_loop())
    _registered.append(handoff)
    return handoff


def unregister(handoff: SocketHandoff) -> None:
    if handoff in _registered:
        _registered.remove(handoff)


def current() -> SocketHandoff | None:
    """The app whose sockets this process serves directly: the latest registered, if any."""
    return _registered[-1] if _registered else None


def for_this_loop() -> SocketHandoff | None:
    """`current()` if it runs on the calling event loop (else its objects cannot be used here).
    Called from a coroutine (the replica middleware), so a loop is always running."""
    handoff = current()
    return handoff if handoff is not None and handoff.loop is asyncio.get_running_loop() else None
