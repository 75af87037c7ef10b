"""Second baseline: a bare python-socketio relay. An ``AsyncServer`` on aiohttp with the same
Engine.IO settings as ours (``signaling.server.ENGINE_OPTIONS``: async mode, ping interval and
timeout, packet size limit; no permessage-deflate unless the client asks, the same JSON module),
and a namespace ``/assist`` whose ``candidate`` handler forwards the payload, unchanged, to the
sid named in its ``to`` field.

No validation, no authentication, no rate limit, no database, no room: what python-socketio
itself costs per relayed event, so that the relay benchmark can tell it apart from what our
namespace adds. A connecting client gets its sid in a ``welcome`` event (``peer_id``), as ours
does. Run as its own process: ``python -m bench.raw_sio_relay --port 9001``.
"""

from __future__ import annotations

from typing import Any

import socketio
from aiohttp import web

from bench.baseline import healthz, serve
from signaling.server import ENGINE_OPTIONS

NAMESPACE = "/assist"


class BareRelay(socketio.AsyncNamespace):
    """Forwards ``candidate`` to ``to``; nothing else."""

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        """Tell the client its sid, which its peer needs to address it."""
        await self.emit("welcome", {"peer_id": sid}, to=sid)

    async def on_candidate(self, sid: str, payload: dict[str, Any]) -> None:
        """Relay the event as it came to the peer it names."""
        await self.emit("candidate", payload, to=payload["to"])


def create_app() -> web.Application:
    """The bare python-socketio relay application."""
    app = web.Application()
    sio = socketio.AsyncServer(cors_allowed_origins="*", **ENGINE_OPTIONS)
    sio.register_namespace(BareRelay(NAMESPACE))
    sio.attach(app)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    """``python -m bench.raw_sio_relay --port N``."""
    serve(create_app, __doc__)


if __name__ == "__main__":
    main()
