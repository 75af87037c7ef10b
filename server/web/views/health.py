"""Liveness and readiness probes for the process supervisor and the load balancer."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import text

from server.metrics import CONTENT_TYPE, exposition
from server.runtime import ENGINE_KEY, SETTINGS_KEY
from server.tokens import constant_time_equal

routes = web.RouteTableDef()


@routes.get("/healthz", name="healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up and answering."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    """The database answers a trivial query."""
    try:
        async with request.app[ENGINE_KEY].connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        return web.json_response(
            {"status": "unavailable", "database": type(exc).__name__}, status=503
        )
    return web.json_response({"status": "ok", "database": "ok"})


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of this process, for a bearer of METRICS_TOKEN (404 without one set)."""
    token = request.app[SETTINGS_KEY].metrics_token.get_secret_value()
    if not token:
        raise web.HTTPNotFound()
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not constant_time_equal(sent, token):
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE})
