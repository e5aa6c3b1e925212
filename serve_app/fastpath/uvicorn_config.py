"""The Gateway replica's uvicorn websocket defaults (fast path only)."""

from __future__ import annotations

import functools
from typing import Any

from serve_app.fastpath.uvicorn_protocol import IMPORT_PATH as LEAN_PROTOCOL


def configure_websockets(*, compression: bool) -> None:
    """Choose how this process's uvicorn servers speak websocket.

    Serve starts the replica's own uvicorn server (the HAProxy fast path) after the Gateway's
    constructor and offers no setting for it, so the defaults of uvicorn's Config are changed
    here, in the replica process only (an explicit argument still wins):

    - `ws=LeanWebSocketProtocol`: uvicorn's sans-I/O binding of `websockets` (it keeps no reader,
      keepalive and closer tasks per connection as the legacy binding does: ~7 KiB less RSS per
      open socket in a bare uvicorn echo server on this machine) with lighter per-connection
      state (`serve_app.fastpath.uvicorn_protocol`: ~4 KiB less).
    - permessage-deflate refused unless `compression`: our frames are a few bytes of Yjs update
      or a short JSON row, so compression saves nothing, costs CPU on every frame and keeps
      ~45 KiB of zlib state per socket. `ESSAYCOACH_WS_COMPRESSION=true` keeps it.
    """
    import uvicorn.config

    init = uvicorn.config.Config.__init__
    original = getattr(init, "_essaycoach_original", init)

    @functools.wraps(original)
    def configured(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("ws", LEAN_PROTOCOL)
        if not compression:
            kwargs.setdefault("ws_per_message_deflate", False)
        original(self, *args, **kwargs)

    configured._essaycoach_original = original  # type: ignore[attr-defined]
    uvicorn.config.Config.__init__ = configured  # type: ignore[method-assign]
