"""Baseline for the queue fan-out: the barest python-socketio server that broadcasts a payload
to a room. Every client of the `/queue` namespace joins one room and gets the whole list
(``queue``) on connect; ``POST /payload`` stores ``{"queue": <whole list>, "delta": <one
change>}`` (the bench hands it a real `queue` push of ours and a `queue_delta` of the same shape
as ours for one person leaving, so both servers send frames of the same size); each ``POST
/change`` numbers the delta after the previous one, lowers its ``total`` by one and emits it as
``queue_delta`` to the room: the same information as our push of one change.

Waiting pages connect with ``auth={"page": true}`` and join their own room; each change also
sends every page, one emit per socket as plain python-socketio code would, its own `position`
(the fields and size of ours: its rank among the pages, lowered as people leave ahead of it).

No authentication, no database, no coalescing, no per-person emits: what is left of a queue
push when everything the real server adds is taken away. Run as its own process:
``python -m bench.raw_fanout --port 9001``.
"""

from __future__ import annotations

import json
from typing import Any

import socketio
from aiohttp import web

from bench.baseline import healthz, serve

NAMESPACE = "/queue"
ROOM = "volunteers"
PAGES_ROOM = "pages"
PAYLOAD_KEY: web.AppKey[dict[str, Any]] = web.AppKey("payload", dict)
DELTA_KEY: web.AppKey[dict[str, Any]] = web.AppKey("delta", dict)
SIO_KEY: web.AppKey[socketio.AsyncServer] = web.AppKey("sio", socketio.AsyncServer)


class FanoutNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """Every client joins the one room."""

    def __init__(self, namespace: str, app: web.Application) -> None:
        super().__init__(namespace)
        self.app = app

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        """Join the room, get the whole list if there is one; nothing is checked."""
        if isinstance(auth, dict) and auth.get("page"):
            await self.enter_room(sid, PAGES_ROOM)
            return
        await self.enter_room(sid, ROOM)
        if self.app[PAYLOAD_KEY]:
            await self.emit("queue", self.app[PAYLOAD_KEY], to=sid)

    async def on_queue_sync(self, sid: str, data: object = None) -> None:
        """A client saw a gap (none is expected here): the whole list again."""
        await self.emit("queue", self.app[PAYLOAD_KEY], to=sid)


async def set_payload(request: web.Request) -> web.Response:
    """Store the whole list and the delta every later change broadcasts (numbered, with its
    ``total`` lowered), and send the list to the clients already here."""
    body: dict[str, Any] = json.loads(await request.text())
    for key, value in ((PAYLOAD_KEY, body["queue"]), (DELTA_KEY, body["delta"])):
        request.app[key].clear()
        request.app[key].update(value)
    sio = request.app[SIO_KEY]
    await sio.emit("queue", request.app[PAYLOAD_KEY], room=ROOM, namespace=NAMESPACE)
    return web.Response(text="ok")


async def change(request: web.Request) -> web.Response:
    """One change: read the (small) form as ours does, number the delta after the list, lower
    the total, broadcast it."""
    await request.post()
    payload, delta = request.app[PAYLOAD_KEY], request.app[DELTA_KEY]
    payload["version"] = delta["base"] = int(payload["version"])
    delta["version"] = payload["version"] = delta["base"] + 1
    delta["total"] = payload["total"] = int(payload["total"]) - 1
    sio = request.app[SIO_KEY]
    await sio.emit("queue_delta", delta, room=ROOM, namespace=NAMESPACE)
    pages = [sid for sid, _eio in sio.manager.get_participants(NAMESPACE, PAGES_ROOM)]
    for rank, sid in enumerate(pages, start=1):
        position = {
            "position": rank,
            "total": delta["total"],
            "estimate_minutes": 5 * rank,
            "open": True,
            "offer_callback": False,
        }
        await sio.emit("position", position, to=sid, namespace=NAMESPACE)
    return web.Response(text="ok")


def create_app() -> web.Application:
    """The baseline broadcaster."""
    app = web.Application()
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
    sio.register_namespace(FanoutNamespace(NAMESPACE, app))
    sio.attach(app)
    app[SIO_KEY] = sio
    app[PAYLOAD_KEY] = {}
    app[DELTA_KEY] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/payload", set_payload)
    app.router.add_post("/change", change)
    return app


def main() -> None:
    """``python -m bench.raw_fanout --port N``."""
    serve(create_app, __doc__)


if __name__ == "__main__":
    main()
