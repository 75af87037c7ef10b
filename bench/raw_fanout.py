"""Baseline for the queue fan-out: the barest python-socketio server that broadcasts a payload
to a room. Every client of the `/queue` namespace joins one room; ``POST /payload`` stores a JSON
payload (the bench hands it a real `queue` push of ours, so both servers send frames of the same
size); each ``POST /change`` lowers its ``total`` by one and emits it as ``queue`` to the room.

No authentication, no database, no coalescing, no per-person emits: what is left of a queue
push when everything the real server adds is taken away. Run as its own process:
``python -m bench.raw_fanout --port 9001``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import socketio
from aiohttp import web

NAMESPACE = "/queue"
ROOM = "volunteers"
PAYLOAD_KEY: web.AppKey[dict[str, Any]] = web.AppKey("payload", dict)
SIO_KEY: web.AppKey[socketio.AsyncServer] = web.AppKey("sio", socketio.AsyncServer)


class FanoutNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """Every client joins the one room."""

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        """Join the room; nothing is checked."""
        await self.enter_room(sid, ROOM)


async def set_payload(request: web.Request) -> web.Response:
    """Store the payload every later change broadcasts (with its ``total`` lowered)."""
    payload: dict[str, Any] = json.loads(await request.text())
    request.app[PAYLOAD_KEY].clear()
    request.app[PAYLOAD_KEY].update(payload)
    return web.Response(text="ok")


async def change(request: web.Request) -> web.Response:
    """One change: read the (small) form as ours does, lower the total, broadcast the payload."""
    await request.post()
    payload = request.app[PAYLOAD_KEY]
    payload["total"] = int(payload.get("total", 0)) - 1
    await request.app[SIO_KEY].emit("queue", payload, room=ROOM, namespace=NAMESPACE)
    return web.Response(text="ok")


async def healthz(request: web.Request) -> web.Response:
    """Readiness probe for the bench runner."""
    return web.Response(text="ok")


def create_app() -> web.Application:
    """The baseline broadcaster."""
    app = web.Application()
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
    sio.register_namespace(FanoutNamespace(NAMESPACE))
    sio.attach(app)
    app[SIO_KEY] = sio
    app[PAYLOAD_KEY] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/payload", set_payload)
    app.router.add_post("/change", change)
    return app


def main() -> None:
    """``python -m bench.raw_fanout --port N``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
