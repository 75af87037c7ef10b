"""Attach the Socket.IO server to the aiohttp application, subscribe its namespaces to the
committed events, and shut it down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import socketio
from aiohttp import web

from server import assist
from server.dropin import places
from server.runtime import CLUSTER_KEY, DISPATCHER_KEY, SESSIONMAKER_KEY, SETTINGS_KEY
from server.settings import Settings
from server.store.models import utcnow
from signaling import ice
from signaling.assist import NAMESPACE as ASSIST
from signaling.assist import AssistNamespace
from signaling.dropin import QUEUE_HUB_KEY, QueueHub, QueueNamespace

log = logging.getLogger(__name__)
MAX_PACKET_BYTES = 100 * 1024  # an SDP is at most 64 KB; anything bigger is refused by engine.io
SIO_KEY = web.AppKey("sio", socketio.AsyncServer)
SOCKETIO_CHANNEL = "vp:socketio"
CLOSE_TIMEOUT_SECONDS = 5.0
# Engine.IO settings of every Socket.IO server we run; the bare python-socketio relay of the
# benchmarks (bench/raw_sio_relay.py) uses the very same, so that it differs from ours only by
# what our namespaces do.
ENGINE_OPTIONS: dict[str, Any] = {
    "async_mode": "aiohttp",
    "max_http_buffer_size": MAX_PACKET_BYTES,
    "ping_interval": 10,
    "ping_timeout": 10,
    "logger": False,
    "engineio_logger": False,
}


def origin_checker(settings: Settings) -> Any:
    """Browsers may connect from BASE_URL's origin or from the host they loaded the page from."""

    def allowed(origin: str, environ: dict[str, Any]) -> bool:
        if origin == settings.origin:
            return True
        host = environ.get("HTTP_HOST", "")
        parts = urlsplit(origin)
        return bool(host) and parts.netloc == host and parts.scheme in ("http", "https")

    return allowed


def create_sio(app: web.Application) -> socketio.AsyncServer:
    """The Socket.IO server with the `/assist` and `/queue` namespaces, at /socket.io/, and the
    ICE servers endpoint of the rooms."""
    settings = app[SETTINGS_KEY]
    # Several nodes: emits, rooms and disconnections reach the sockets of every node through
    # Redis (python-socketio's manager; it serialises with JSON, never pickle).
    manager = (
        socketio.AsyncRedisManager(settings.redis_url, channel=SOCKETIO_CHANNEL)
        if settings.redis_url
        else None
    )
    sio = socketio.AsyncServer(
        client_manager=manager,
        cors_allowed_origins=origin_checker(settings),
        **ENGINE_OPTIONS,
    )
    sio.register_namespace(AssistNamespace(app))
    sio.register_namespace(QueueNamespace(app))
    app[QUEUE_HUB_KEY] = QueueHub(app, sio)
    sio.attach(app)
    ice.add_routes(app)
    app[SIO_KEY] = sio
    app.on_shutdown.append(close_connections)
    return sio


async def close_connections(app: web.Application) -> None:
    """on_shutdown (SIGTERM): close every Socket.IO connection first. aiohttp's graceful stop
    waits up to 60 s for running handlers, and an open WebSocket is one until it closes; closed
    by us, each page sees its transport drop and reconnects by itself (to this server started
    again, or to another node), and the rooms' presence is written while the database is still
    there."""
    engine = app[SIO_KEY].eio
    sockets = list(engine.sockets.values())
    if not sockets:
        return
    log.info("shutting down: closing %d Socket.IO connection(s)", len(sockets))
    # What engine.io's disconnect() of all does, bounded: the namespaces' on_disconnect run, a
    # CLOSE packet is queued, and each close waits until its socket's writer has sent it. A
    # socket whose transport is already gone has no writer left to drain its queue: unbounded,
    # the node never stopped (seen in the cluster tests after a Redis restart, one stop in three).
    closes = [
        asyncio.create_task(socket.close(reason=engine.reason.SERVER_DISCONNECT))
        for socket in sockets
    ]
    _done, pending = await asyncio.wait(closes, timeout=CLOSE_TIMEOUT_SECONDS)
    if pending:
        log.warning(
            "shutting down: %d Socket.IO connection(s) not closed after %s s, going on",
            len(pending),
            CLOSE_TIMEOUT_SECONDS,
        )
    for socket in sockets:
        engine.sockets.pop(socket.sid, None)
    # Browsers' engine.io ignores the CLOSE packet and engine.io's writer only closes the
    # WebSocket on the end-of-queue marker (what its reader queues when the client goes): queue
    # it, or each WebSocket stays open until the ping timeout.
    for socket in sockets:
        socket.queue.put_nowait(None)


async def socketio_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: alone, forget the presence a previous run left (nobody is connected yet);
    in a cluster, clear nothing (the other nodes' sockets are live) and let the janitors
    retire what dead nodes left. Act on committed events, run the queue sweep; disconnect
    every client before the web server stops."""
    cluster = app.get(CLUSTER_KEY)
    if cluster is None:
        async with app[SESSIONMAKER_KEY].begin() as db:
            await assist.forget_presence(db)
            await places.forget_presence(db, utcnow())
    sio = app[SIO_KEY]
    rooms = sio.namespace_handlers[ASSIST]
    assert isinstance(rooms, AssistNamespace)
    hub = app[QUEUE_HUB_KEY]
    dispatcher = app[DISPATCHER_KEY]
    rooms.subscribe(dispatcher)
    hub.subscribe(dispatcher)
    hub.start()
    sweep = asyncio.get_running_loop().create_task(rooms.sweep_logins(), name="login-sweep")
    if cluster is not None:
        cluster.relay.on_message(rooms.deliver, rooms.relay_lost)
        cluster.node.on_beat(rooms.retire_orphans)
        cluster.node.on_beat(hub.retire_orphans)
    try:
        yield
    finally:
        sweep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweep
        hub.unsubscribe(dispatcher)
        rooms.unsubscribe(dispatcher)
        await hub.stop()
        await sio.shutdown()
