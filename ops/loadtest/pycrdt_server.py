"""Reference server for the loadtest: pycrdt-websocket's WebsocketServer behind uvicorn.

One room per websocket path (`ws://host:port/<room>`), in memory, no auth, no persistence: the
plain y-websocket protocol as pycrdt-websocket ships it. Run:

    .venv/bin/python -m ops.loadtest.pycrdt_server --port 1235

SIGINT/SIGTERM stop it (uvicorn's handlers).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer


async def main(host: str, port: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    websocket_server = WebsocketServer(auto_clean_rooms=True, log=logging.getLogger("pycrdt-ws"))
    rooms = ASGIServer(websocket_server)

    async def app(scope, receive, send):  # websockets go to the rooms; plain HTTP gets "okay"
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"okay"})
            return
        await rooms(scope, receive, send)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    async with websocket_server:
        print(f"pycrdt-websocket serving on ws://{host}:{port}/<room>", flush=True)
        await server.serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1235)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
