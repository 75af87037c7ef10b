"""Liveness and readiness probes for the process supervisor and the load balancer, and the
Prometheus metrics of this node."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from aiohttp import web
from sqlalchemy import text

from server import readiness
from server.metrics import CONTENT_TYPE
from server.runtime import RIGHTS_KEY, SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import utcnow
from server.tokens import constant_time_equal
from server.web.observability import NODE_KEY, SCRAPE_KEY

routes = web.RouteTableDef()

READY_DATABASE_TIMEOUT_SECONDS = 2.0
# Headers a reverse proxy adds: a request that carries one came through it, from anywhere.
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


@routes.get("/healthz", name="healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up and answering."""
    return web.json_response({"status": "ok"})


async def _database(request: web.Request) -> tuple[str | None, Any]:
    """(problem, newest worker beat): one connection, bounded in time."""
    try:
        async with asyncio.timeout(READY_DATABASE_TIMEOUT_SECONDS):
            async with request.app[SESSIONMAKER_KEY]() as db:
                await db.execute(text("SELECT 1"))
                return None, await readiness.newest_beat(db)
    except Exception as exc:  # any driver error or a timeout means "not ready"
        return f"database: {type(exc).__name__}", None


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers, Redis answers (if REDIS_URL is set) and a notification
    worker beat recently; 503 naming each problem otherwise. Settings that work but should not
    reach production are listed under ``warnings`` without failing."""
    settings = request.app[SETTINGS_KEY]
    node = request.app[NODE_KEY]
    database, newest = await _database(request)
    redis = await readiness.redis_problem(settings.redis_url)
    worker = None
    if database is None:
        worker = readiness.worker_problem(newest, utcnow(), settings, node.started_at)
    problems = [problem for problem in (database, redis, worker) if problem]
    body = {
        "status": "unavailable" if problems else "ok",
        "database": database or "ok",
        "redis": (redis or "ok") if settings.redis_url else "not configured",
        "worker": worker or ("ok" if database is None else "unknown"),
        "problems": problems,
        "warnings": settings.notification_backend_problems(),
        "node": node.name,
        # The rights check's pool: "warming" for a few seconds after start; never a reason to
        # take the node out of the balancer (everything else works without it).
        "rights": _rights_state(request),
    }
    return web.json_response(body, status=503 if problems else 200)


def _rights_state(request: web.Request) -> str:
    engine = request.app.get(RIGHTS_KEY)
    if engine is None:
        return "off"
    return "ok" if engine.ready else "warming"


def _local_scraper(request: web.Request) -> bool:
    """A direct connection from this machine (not through a proxy, which adds its headers)."""
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of this node: for a bearer of METRICS_TOKEN when one is set; without
    one, for a scraper on this machine only (404 to anyone else)."""
    token = request.app[SETTINGS_KEY].metrics_token.get_secret_value()
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not constant_time_equal(sent, token):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
    elif not _local_scraper(request):
        raise web.HTTPNotFound()
    body = await request.app[SCRAPE_KEY].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
