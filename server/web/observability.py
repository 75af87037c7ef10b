"""What operators see of a running node: a request id on every request and log line, the HTTP
latency per route name, the event loop's lag, and the gauges read at scrape time (sockets and
rooms per namespace, the database pool, the queue and the outbox).

The Socket.IO server is handed in by the application factory as a plain object (its engine's
``sockets`` and its manager's ``rooms``), so this module imports no transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from server.logs import REQUEST_ID
from server.metrics import (
    HTTP_SECONDS,
    LOOP_LAG,
    LOOP_LAG_BUSY,
    LOOP_LAG_LAST,
    SCRAPE_ERRORS,
    Snapshot,
    database_state,
    exposition,
)
from server.readiness import node_name
from server.runtime import ENGINE_KEY, SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import utcnow
from server.web.accesslog import REQUEST_ID_KEY, route_name
from server.web.request import Handler

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
# A proxy's id is kept if it looks like one (UUIDs, nginx's $request_id, hex, base64url):
# nothing a client could use to smuggle text into the logs.
WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
# A timer due every 10 ms: a stall of the loop longer than that always delays one, so the lag's
# distribution is seen over time (p99 over a 20-second window rests on ~2,000 samples), for
# ~20 µs of CPU per sample (0.2 % of a core).
LOOP_SAMPLE_SECONDS = 0.01
SCRAPE_DATABASE_TIMEOUT_SECONDS = 2.0


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: give the request its id (the proxy's if well formed, else a new one), echo it
    in the response, and time the answer under the route's name."""
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = sent if WELL_FORMED_ID.fullmatch(sent) else secrets.token_hex(8)
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    timed = request.headers.get("Upgrade", "").lower() != "websocket"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        REQUEST_ID.reset(token)
        if timed:
            HTTP_SECONDS.labels(route_name(request)).observe(time.perf_counter() - started)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


async def loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: sample the event loop's lag (how late a due timer runs) every
    LOOP_SAMPLE_SECONDS for the life of the app."""

    async def sample() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LOOP_SAMPLE_SECONDS
            ran_before = time.thread_time()
            await asyncio.sleep(LOOP_SAMPLE_SECONDS)
            lag = max(0.0, loop.time() - due)
            LOOP_LAG.observe(lag)
            LOOP_LAG_LAST.set(lag)
            # On a machine shared with other work, a late timer may only mean no CPU was free:
            # the loop's own share of the lag is at most the CPU its thread used meanwhile.
            LOOP_LAG_BUSY.observe(min(lag, time.thread_time() - ran_before))

    task = asyncio.create_task(sample(), name="loop-lag")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def socket_counts(sio: Any) -> tuple[dict[str, int], dict[str, int], int]:
    """(sockets per namespace, rooms per namespace, Engine.IO connections) of this node, from
    python-socketio's manager (``rooms[namespace][room][sid]``; room None holds every socket of
    the namespace, and each socket also sits in a room named after its sid)."""
    sockets: dict[str, int] = {}
    rooms: dict[str, int] = {}
    for namespace, by_room in list(sio.manager.rooms.items()):
        members = by_room.get(None) or {}
        sockets[namespace] = len(members)
        rooms[namespace] = sum(
            1
            for room, sids in list(by_room.items())
            if room is not None and room not in members and sids
        )
    for namespace in sio.namespace_handlers:
        sockets.setdefault(namespace, 0)
        rooms.setdefault(namespace, 0)
    return sockets, rooms, len(sio.eio.sockets)


def pool_usage(engine: AsyncEngine) -> tuple[int | None, int | None]:
    """(connections checked out, pool size), or None where the pool does not count them."""
    pool = engine.pool
    checked_out = getattr(pool, "checkedout", None)
    size = getattr(pool, "size", None)
    return (
        int(checked_out()) if callable(checked_out) else None,
        int(size()) if callable(size) else None,
    )


@dataclass
class Scrape:
    """Builds the /metrics body of this node: counters, and gauges read now."""

    app: web.Application
    sockets: Callable[[], tuple[Mapping[str, int], Mapping[str, int], int]] | None = None
    database_timeout: float = SCRAPE_DATABASE_TIMEOUT_SECONDS

    async def exposition(self) -> bytes:
        """The text exposition; the database part is left out (and counted) if it cannot be
        read within ``database_timeout`` seconds."""
        app = self.app
        sockets: Mapping[str, int] = {}
        rooms: Mapping[str, int] = {}
        connections = None
        if self.sockets is not None:
            sockets, rooms, connections = self.sockets()
        checked_out, size = pool_usage(app[ENGINE_KEY])
        database = None
        try:
            async with asyncio.timeout(self.database_timeout):
                async with app[SESSIONMAKER_KEY]() as db:
                    database = await database_state(db, utcnow())
        except Exception as exc:  # an outage, a timeout: /metrics still answers
            SCRAPE_ERRORS.labels("database").inc()
            log.debug("metrics: database gauges left out (%s)", type(exc).__name__)
        return exposition(
            Snapshot(
                node=app[NODE_KEY].name,
                sockets=sockets,
                rooms=rooms,
                engineio_connections=connections,
                pool_checked_out=checked_out,
                pool_size=size,
                database=database,
            )
        )


SCRAPE_KEY = web.AppKey("metrics_scrape", Scrape)


@dataclass(frozen=True)
class Node:
    """This process: its name in metrics and heartbeats, and when its app was built."""

    name: str
    started_at: datetime


NODE_KEY = web.AppKey("node", Node)


def setup_observability(app: web.Application, sio: Any) -> None:
    """Wire the scrape (with this node's Socket.IO server) and the loop-lag sampler."""
    app[NODE_KEY] = Node(node_name(app[SETTINGS_KEY]), utcnow())
    app[SCRAPE_KEY] = Scrape(app, lambda: socket_counts(sio))
    app.cleanup_ctx.append(loop_lag_ctx)
