"""Every object shared through the application, under one typed ``web.AppKey`` each."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

if TYPE_CHECKING:
    import socketio

    from server.notify.worker import Worker
    from server.ratelimit import RateLimiter
    from server.settings import Settings
    from signaling.dropin import QueueHub

SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings")
ENGINE_KEY: web.AppKey[AsyncEngine] = web.AppKey("engine")
SESSIONMAKER_KEY: web.AppKey[async_sessionmaker[AsyncSession]] = web.AppKey("sessionmaker")
SIO_KEY: web.AppKey[socketio.AsyncServer] = web.AppKey("sio")
RATELIMIT_KEY: web.AppKey[RateLimiter] = web.AppKey("ratelimit")
WORKER_KEY: web.AppKey[Worker] = web.AppKey("worker")
QUEUE_HUB_KEY: web.AppKey[QueueHub] = web.AppKey("queue_hub")
