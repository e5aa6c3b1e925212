"""The socket routes, registered once, and how the app runs them.

| path | module |
| --- | --- |
| `/ws/essays/{essay_id}/doc` (y-websocket, binary) | `serve_app.realtime.doc_socket` |
| `/ws/essays/{essay_id}/events` (JSON) | `serve_app.realtime.events_socket` |
| `/ws/classes/{class_id}/live` (JSON) | `serve_app.realtime.class_live_socket` |
| `/ws/classes/{class_id}/docs` (binary, many documents) | `serve_app.realtime.class_docs_socket` |

What they share (ticket, admission, limits, send queue, closing) is in
`serve_app.realtime.connection`; the close codes in `serve_app.realtime.protocol.CloseCode`.
"""

from __future__ import annotations

from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from serve_app.realtime.class_docs_socket import class_docs_socket
from serve_app.realtime.class_live_socket import class_live_socket
from serve_app.realtime.connection import release
from serve_app.realtime.doc_socket import doc_socket
from serve_app.realtime.events_socket import events_socket

# Plain Starlette routes, not FastAPI's: a socket lives for hours, and FastAPI's per-connection
# dependency machinery kept ~7 KiB per socket alive (tracemalloc) for nothing these handlers use.
ROUTES = [
    WebSocketRoute("/ws/essays/{essay_id}/doc", doc_socket),
    WebSocketRoute("/ws/essays/{essay_id}/events", events_socket),
    WebSocketRoute("/ws/classes/{class_id}/live", class_live_socket),
    WebSocketRoute("/ws/classes/{class_id}/docs", class_docs_socket),
]


async def serve_socket(scope: Scope, receive: Receive, send: Send) -> bool:
    """Run one of our sockets straight from the ASGI call, or return False if the path is not one.

    `serve_app.app` calls this for every websocket request, before its middleware stack and
    router: the HTTP middlewares (request ids, body limits, exception handlers, the exit stack) do
    nothing for a socket but each kept its frame alive for the socket's life, ~5 KiB per open
    socket (tracemalloc in a replica). So these routes are registered here only, not on the app's
    router. Errors are handled inside each handler (close 1011 with a log line); an unknown path
    falls through to the app, which refuses the handshake (HTTP 403).
    """
    for route in ROUTES:
        match, child = route.matches(scope)
        if match is Match.FULL:
            scope["path_params"] = child["path_params"]
            ws = WebSocket(scope, receive, send)
            try:
                await child["endpoint"](ws)
            finally:
                release(ws)
            return True
    return False
