"""Redis stopped under traffic, then started again, with a redis-server of our own on a free port
(the shared one stays untouched): rate limits fall back to the process's memory with a WARNING
and a metric — still limiting, never a 500 — and go back to Redis once it answers again."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from sqlalchemy import update

from bench.cluster import RedisProcess
from server import cluster as cluster_module
from server import limits_fallback
from server.cluster import redis_client
from server.ratelimit import RATELIMIT_KEY, SOCKET_EVENTS_PER_PEER
from server.runtime import BOARD_KEY, CLUSTER_KEY
from server.settings import Settings, load_settings
from server.store.models import AssistanceSession
from tests.conftest import (
    Account,
    Running,
    browser_session,
    create_assistance,
    csrf_from,
    free_port,
    login,
)
from tests.peers import PeerSet, connect_beneficiary, connect_peer, connect_volunteer, login_cookie
from tests.test_dropin import open_all_week

REDIS_SERVER = shutil.which("redis-server")
METRICS_TOKEN = "metrics-test-token-" + "m" * 20
FALLBACKS = "permanence_ratelimit_storage_fallback_total"
LOCAL = "permanence_ratelimit_storage_local"


class RedisServer(RedisProcess):
    """A redis-server of our own (bench/cluster.py starts and stops it), and what it holds."""

    async def client_keys(self, pattern: str) -> list[bytes]:
        """The keys matching ``pattern``."""
        client = aioredis.Redis.from_url(self.url)
        try:
            return list(await client.keys(pattern))
        finally:
            await client.aclose()

    async def limit_keys(self) -> int:
        """How many rate-limit counters it holds."""
        client = aioredis.Redis.from_url(self.url)
        try:
            return len(await client.keys("LIMITS*"))
        finally:
            await client.aclose()


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A started redis-server, stopped after the test."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def backend() -> str:
    """Rate limits do not depend on the database: SQLite only."""
    return "sqlite"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, redis_server: RedisServer) -> Iterator[Settings]:
    """The test app's settings, with REDIS_URL on our redis-server and /metrics on."""
    port = free_port()
    yield load_settings(
        {
            "PERMANENCE_DATA_DIR": str(tmp_path / "var"),
            "PERMANENCE_DATABASE_URL": database_url,
            "PERMANENCE_SECRET_KEY": "test-secret-key-" + "x" * 32,
            "PERMANENCE_BASE_URL": f"http://127.0.0.1:{port}",
            "PERMANENCE_REDIS_URL": redis_server.url,
            "PERMANENCE_METRICS_TOKEN": METRICS_TOKEN,
            "PERMANENCE_LOG_LEVEL": "WARNING",
            "PERMANENCE_RIGHTS_WORKERS": "0",  # as the other tests (conftest `settings`)
        }
    )


async def wrong_code(http: aiohttp.ClientSession, running: Running) -> int:
    """Type a random wrong code on /code; the status of the answer."""
    async with http.get(running.url("/code")) as resp:
        token = csrf_from(await resp.text())
    code = f"{random.randrange(10**6):06d}"
    async with http.post(
        running.url("/code"), data={"csrf_token": token, "code": code}, allow_redirects=False
    ) as resp:
        return resp.status


async def until_limited(
    http: aiohttp.ClientSession, running: Running, tries: int = 40
) -> list[int]:
    """Wrong codes until the per-address limit answers 429; every status seen."""
    statuses = []
    for _ in range(tries):
        statuses.append(await wrong_code(http, running))
        if statuses[-1] == 429:
            break
    return statuses


async def metric(http: aiohttp.ClientSession, running: Running, name: str) -> float:
    """One sample of /metrics, read as Prometheus would."""
    async with http.get(
        running.url("/metrics"), headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    ) as resp:
        assert resp.status == 200
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def test_redis_stopped_rate_limits_fall_back_to_memory_and_return_to_redis(
    running: Running, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis stopped, wrong codes still get 400 then 429 (counted in memory), never a 500;
    one WARNING line and the fallback metric say so; when Redis is back, counting resumes there
    (a Redis restarted empty forgets the memory's count: the next wrong code is a 400 again)."""
    http = await browser_session()
    try:
        assert await wrong_code(http, running) == 400
        assert await redis_server.limit_keys() > 0, "the counters are not in Redis"
        switches = await metric(http, running, FALLBACKS)
        assert await metric(http, running, LOCAL) == 0

        await redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="server.limits_fallback"):
            statuses = await until_limited(http, running)
        assert statuses[-1] == 429, statuses
        assert set(statuses[:-1]) == {400}, statuses
        warnings = [r for r in caplog.records if r.name == "server.limits_fallback"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "Redis unreachable" in warnings[0].getMessage()
        assert await metric(http, running, FALLBACKS) == switches + 1
        assert await metric(http, running, LOCAL) == 1

        await redis_server.start()
        # One call tries Redis again every RETRY_SECONDS; meanwhile memory keeps limiting (429).
        # Redis restarted empty: the first wrong code counted there again is a 400.
        deadline = time.monotonic() + 2 * limits_fallback.RETRY_SECONDS + 5
        while (status := await wrong_code(http, running)) == 429:
            assert time.monotonic() < deadline, "Redis is not used again"
            await asyncio.sleep(0.5)
        assert status == 400
        assert await metric(http, running, LOCAL) == 0
        assert await redis_server.limit_keys() > 0
    finally:
        await http.close()


async def test_redis_stopped_a_node_still_serves_its_own_rooms_and_queue_pages(
    running: Running, redis_server: RedisServer, volunteer: Account
) -> None:
    """Redis is a cluster's shared live state, not the record: while it is down a node keeps
    relaying between its own peers and pushing its own queue pages, with a WARNING, and its
    records are written again once Redis is back."""
    await open_all_week(running, volunteer)
    http = await browser_session()
    try:
        await login(http, running, volunteer)
        session_id = await create_assistance(http, running)
        await redis_server.stop()
        async with PeerSet() as peers:
            helper = peers.add(await connect_volunteer(running, http, session_id))
            person = peers.add(await connect_beneficiary(running, session_id))
            await helper.expect("peer-joined")
            candidate = {"candidate": "", "sdpMid": None, "sdpMLineIndex": None}
            await person.emit("candidate", {"to": helper.peer_id, **candidate})
            assert await helper.expect("candidate") == {"from": person.peer_id, **candidate}
            # A peer on another node cannot be looked up now: "try again later", not "gone".
            await person.emit("candidate", {"to": "x" * 20, **candidate})
            error = await person.expect("error")
            assert error["code"] == "unavailable" and "indisponible" in error["message"]
            desk = peers.add(
                await connect_peer(
                    running, cookie=login_cookie(http, running), welcome=False, namespace="/queue"
                )
            )
            queue = await desk.expect("queue")
            assert [v["id"] for v in queue["volunteers"]] == [volunteer.user.id]  # its own
            await redis_server.start()
            presence = running.app[BOARD_KEY].presence
            association_id = volunteer.user.association_id
            for _ in range(100):  # the next heartbeat (5 s) writes them again
                online = [user_id for user_id, _name in await presence.volunteers(association_id)]
                if online == [volunteer.user.id] and await redis_server.client_keys("vp:sock:*"):
                    break
                await asyncio.sleep(0.2)  # state in another server: polling is the only way
            else:
                raise AssertionError("this node's records were not written to Redis again")
    finally:
        await http.close()


async def test_a_burst_of_redis_calls_past_the_pool_size_waits_instead_of_failing(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many more concurrent calls than the pool has connections (relays at 1,000/s on a busy
    node) all succeed: the cluster's client waits for a free connection, never raises
    ``MaxConnectionsError`` (redis-py's default pool did, and lost relayed candidates). A pool
    of 10 here: opening 100 connections at once could itself outlast the 2 s connect timeout
    on a loaded test machine, which is not what this test is about."""
    monkeypatch.setattr(cluster_module, "MAX_CONNECTIONS", 10)
    client = redis_client(redis_server.url)
    assert client.connection_pool.max_connections == 10
    try:
        burst = 5 * 10
        answers = await asyncio.gather(*(client.get(f"vp:sock:{i}") for i in range(burst)))
    finally:
        await client.aclose()
    assert answers == [None] * burst


async def test_records_of_sockets_whose_departure_was_never_written_are_retired(
    running: Running, volunteer: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disconnect handler that failed under load (the idle benchmark closed 5,000 sockets at
    once) left a node's records in Redis for as long as the node lived: the node's janitor now
    retires its own records of sockets gone two passes in a row, as if they had dropped."""
    monkeypatch.setattr(cluster_module, "NODE_BEAT_SECONDS", 0.2)
    cluster = running.app[CLUSTER_KEY]
    presence = running.app[BOARD_KEY].presence
    association_id = volunteer.user.association_id
    http = await browser_session()
    try:
        await login(http, running, volunteer)
        session_id = await create_assistance(http, running)
        async with PeerSet() as peers:
            helper = peers.add(await connect_volunteer(running, http, session_id))
            # A beneficiary socket that went away without its departure being written.
            async with running.sessionmaker.begin() as db:
                await db.execute(
                    update(AssistanceSession)
                    .where(AssistanceSession.id == session_id)
                    .values(beneficiary_sid="ghost-socket")
                )
            await cluster.rooms.add(session_id, "beneficiary", "ghost-socket", None)
            await presence.volunteer_joined(association_id, 999, "Fantôme", "ghost-queue-page")
            left = await helper.expect("peer-left", 10)
            assert left == {"peer_id": "ghost-socket", "role": "beneficiary",
                            "reason": "disconnected"}  # fmt: skip
            assert "ghost-socket" not in cluster.rooms.local()
            assert not await redis_server_keys(running, "vp:sock:ghost-socket")
            for _ in range(50):  # the queue's janitor runs after the rooms' one
                if not await presence.volunteers(association_id):
                    break
                await asyncio.sleep(0.1)  # a background task's effect: polling is the only way
            else:
                raise AssertionError("the ghost volunteer stayed in the queue presence")
            async with running.sessionmaker() as db:
                row = await db.get_one(AssistanceSession, session_id)
            assert row.beneficiary_sid is None
            # The live volunteer socket is never taken for a ghost.
            assert helper.peer_id in cluster.rooms.local()
    finally:
        await http.close()


async def redis_server_keys(running: Running, pattern: str) -> list[str]:
    """Keys of the app's Redis matching ``pattern``."""
    return [key async for key in running.app[CLUSTER_KEY].redis.scan_iter(pattern)]


async def test_a_sockets_own_event_limit_is_counted_in_its_node_not_in_redis(
    running: Running, redis_server: RedisServer
) -> None:
    """A socket lives on one node: its per-peer limits need no Redis round trip per event."""
    limiter = running.app[RATELIMIT_KEY]
    for _ in range(SOCKET_EVENTS_PER_PEER.item.amount):
        assert await limiter.hit(SOCKET_EVENTS_PER_PEER, "some-sid")
    assert not await limiter.hit(SOCKET_EVENTS_PER_PEER, "some-sid")  # still limited
    assert not await redis_server.client_keys("*socket-peer*")  # the shared rules do (above)
