"""What /readyz checks beyond "the process answers": the worker's heartbeat in the database (so
that any node sees it, with or without Redis), Redis when configured, and settings that work
but should not reach production.

The notification worker (``server/worker.py``, inside ``serve`` or alone) calls ``beat`` at each
round of its loop; the row of its node is written at most every ``BEAT_EVERY``. A worker whose
newest beat is older than ``stale_after`` is taken for stopped or stuck.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.settings import Settings
from server.store.engine import begin_write
from server.store.models import WorkerHeartbeat

log = logging.getLogger(__name__)

BEAT_EVERY = timedelta(seconds=15)
# A round may send a batch of 10 slow messages; a worker only starts a send with half of its
# 5-minute lease left (server/worker.py), so a live worker goes round within about 6 minutes.
STALE_AFTER = timedelta(minutes=6)
REDIS_TIMEOUT_SECONDS = 0.5


def node_name(settings: Settings | None) -> str:
    """This process's name: NODE_NAME, or the host name."""
    name = settings.node_name if settings is not None else ""
    return (name or socket.gethostname() or "node")[:100]


def stale_after(settings: Settings) -> timedelta:
    """How old the newest beat may be before the worker is taken for stopped."""
    return max(STALE_AFTER, 3 * timedelta(seconds=settings.outbox_poll_seconds) + BEAT_EVERY)


async def record_beat(db: AsyncSession, node: str, now: datetime) -> bool:
    """Write this node's beat unless it was written less than BEAT_EVERY ago; whether it wrote.
    A read first: most rounds write nothing (no write lock taken on SQLite)."""
    last = await db.get(WorkerHeartbeat, node)
    if last is not None and now - last.beat_at < BEAT_EVERY:
        return False
    await begin_write(db)
    last = await db.get(WorkerHeartbeat, node, populate_existing=True)
    if last is None:
        db.add(WorkerHeartbeat(node=node, beat_at=now, started_at=now))
    else:
        last.beat_at = now
    return True


async def beat(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings | None, now: datetime
) -> None:
    """The worker's heartbeat, called at each round of its loop: never raises (a database
    outage is the loop's business, already logged there)."""
    try:
        async with sessionmaker.begin() as db:
            await record_beat(db, node_name(settings), now)
    except Exception as exc:
        log.debug("worker heartbeat not written: %s", type(exc).__name__)


async def newest_beat(db: AsyncSession) -> datetime | None:
    """The newest beat of any node's worker, None if no worker ever ran here."""
    newest: datetime | None = await db.scalar(select(func.max(WorkerHeartbeat.beat_at)))
    return newest


def worker_problem(
    newest: datetime | None, now: datetime, settings: Settings, started_at: datetime
) -> str | None:
    """None if a worker beat recently (or this node started too recently to tell: its own
    worker's first round may still be running), else what /readyz says."""
    limit = stale_after(settings)
    if newest is not None and now - newest <= limit:
        return None
    if now - started_at <= limit:
        return None
    if newest is None:
        return "no notification worker has ever run against this database"
    return f"no notification worker heartbeat for {int((now - newest).total_seconds())} s"


async def redis_problem(redis_url: str) -> str | None:
    """None if REDIS_URL is empty or Redis answers PING within REDIS_TIMEOUT_SECONDS, else
    why not."""
    if not redis_url:
        return None
    from redis.asyncio import Redis

    timeout = REDIS_TIMEOUT_SECONDS
    client = Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        async with asyncio.timeout(timeout * 2):
            await client.ping()
    except Exception as exc:
        return f"redis: {type(exc).__name__}"
    finally:
        await client.aclose()
    return None
