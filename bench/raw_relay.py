"""Baseline: the smallest aiohttp WebSocket relay. Client ``a`` of a pair sends text frames, the
server forwards each one unchanged to client ``b`` of the same pair (and ``b`` → ``a``).

No protocol, no authentication, no validation, no rate limit, no database: what is left when
everything our signalling server adds is taken away. Run as its own process:
``python -m bench.raw_relay --port 9000``.
"""

from __future__ import annotations

from aiohttp import WSMsgType, web

from bench.baseline import healthz, serve

# Same cadence as Engine.IO's ping_interval in signaling/server.py, so that idle connections
# carry a keep-alive timer on both servers.
HEARTBEAT_SECONDS = 10.0
MAX_MESSAGE_BYTES = 100 * 1024
PEERS_KEY: web.AppKey[dict[tuple[str, str], web.WebSocketResponse]] = web.AppKey("peers")
OTHER_SIDE = {"a": "b", "b": "a"}


async def relay(request: web.Request) -> web.WebSocketResponse:
    """One side of a pair: forward every text frame to the other side, if it is connected."""
    pair, side = request.match_info["pair"], request.match_info["side"]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    peers = request.app[PEERS_KEY]
    peers[(pair, side)] = ws
    other = (pair, OTHER_SIDE[side])
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                target = peers.get(other)
                if target is not None and not target.closed:
                    await target.send_str(message.data)
    finally:
        if peers.get((pair, side)) is ws:
            del peers[(pair, side)]
    return ws


def create_app() -> web.Application:
    """The baseline relay application."""
    app = web.Application()
    app[PEERS_KEY] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get(r"/ws/{pair}/{side:[ab]}", relay)
    return app


def main() -> None:
    """``python -m bench.raw_relay --port N``."""
    serve(create_app, __doc__)


if __name__ == "__main__":
    main()
