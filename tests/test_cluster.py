"""Several nodes: two `permanence serve` processes on free ports sharing one PostgreSQL database
and one Redis (a redis-server of our own), as the deploy recipe runs them. Real aiortc peers and
Socket.IO clients connect to different nodes; nothing is mocked."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp
import aioice.ice
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from server.cluster import Turns
from server.db import make_sessionmaker
from server.settings import Settings, load_settings
from server.store.engine import make_engine
from server.store.models import Role
from signaling.messages import Pointer, decode_datachannel, encode_datachannel
from tests.conftest import (
    PG_UNREACHABLE,
    POSTGRES_URL,
    Account,
    Running,
    browser_session,
    create_assistance,
    csrf_from,
    free_port,
    login,
    make_account,
)
from tests.peers import (
    PeerSet,
    RtcPeer,
    connect_beneficiary,
    connect_peer,
    connect_volunteer,
    login_cookie,
)
from tests.test_dropin import join_by_http, open_all_week, until, waiting_peer
from tests.test_faults_redis import RedisServer

pytestmark = [
    pytest.mark.webrtc,
    pytest.mark.skipif(bool(PG_UNREACHABLE), reason=PG_UNREACHABLE or ""),
]

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "PERMANENCE_"
READY_TIMEOUT_S = 30.0
SECRET = "cluster-test-secret-" + "c" * 32


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gather host candidates on loopback only (NOTES.md: other interfaces stall gathering)."""

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback)


@dataclass
class Node:
    """One `permanence serve` process of the cluster."""

    name: str
    data_dir: Path
    database_url: str
    redis_url: str
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
        env.update(
            {
                f"{PREFIX}DATA_DIR": str(self.data_dir),
                f"{PREFIX}BASE_URL": self.url,
                f"{PREFIX}SECRET_KEY": SECRET,
                f"{PREFIX}DATABASE_URL": self.database_url,
                f"{PREFIX}REDIS_URL": self.redis_url,
                f"{PREFIX}LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    @property
    def log(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    async def start(self) -> None:
        """Start `serve` and wait until /healthz answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "server.cli", "serve", "--port", str(self.port)),
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.process.returncode is None, self.log.read_text()
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"not ready: {self.log.read_text()}"
                await asyncio.sleep(0.1)  # another process: polling is the only way to know

    async def kill(self) -> None:
        """SIGKILL: no clean-up at all, as when a machine dies."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await self.process.wait()


@dataclass
class Cluster:
    """Two nodes, and a view of each that the peers' helpers take (as for the in-process app:
    a base URL, the shared database and the settings)."""

    a: Node
    b: Node
    views: dict[str, Running]

    def on(self, node: Node) -> Running:
        return self.views[node.name]


async def _create_database() -> str:
    name = f"vp_cluster_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_async_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


async def _drop_database(url: str) -> None:
    name = make_url(url).database
    admin = create_async_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Redis, a migrated PostgreSQL database, and nodes A and B serving it."""
    redis = RedisServer()
    await redis.start()
    database_url = await _create_database()
    a = Node("a", tmp_path / "a", database_url, redis.url)
    b = Node("b", tmp_path / "b", database_url, redis.url)
    engine = make_engine(database_url)
    try:
        migrate = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "server.cli", "migrate"),
            cwd=ROOT,
            env=a.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _out, errors = await asyncio.wait_for(migrate.communicate(), 120)
        assert migrate.returncode == 0, errors.decode()
        await asyncio.gather(a.start(), b.start())
        views = {}
        for node in (a, b):
            settings = node.settings
            views[node.name] = Running(
                app=cast(web.Application, None),  # in another process
                server=cast(TestServer, None),
                base_url=node.url,
                sessionmaker=make_sessionmaker(engine, settings),
                settings=settings,
            )
        yield Cluster(a, b, views)
    finally:
        await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)
        await engine.dispose()
        await _drop_database(database_url)
        await redis.stop()


async def _volunteer(cluster: Cluster, email: str = "camille@example.org") -> Account:
    return await make_account(cluster.on(cluster.a), email)


async def test_a_volunteer_on_one_node_sees_the_screen_of_a_beneficiary_on_the_other(
    cluster: Cluster,
) -> None:
    a, b = cluster.on(cluster.a), cluster.on(cluster.b)
    account = await _volunteer(cluster)
    http = await browser_session()
    try:
        await login(http, a, account)
        session_id = await create_assistance(http, a)
        async with PeerSet() as peers:
            volunteer_signal = peers.add(await connect_volunteer(a, http, session_id))
            beneficiary_signal = peers.add(await connect_beneficiary(b, session_id, "Awa"))
            joined = await volunteer_signal.expect("peer-joined")
            assert joined == {"peer_id": beneficiary_signal.peer_id, "role": "beneficiary",
                              "name": "Awa"}  # fmt: skip
            beneficiary, volunteer = RtcPeer(beneficiary_signal), RtcPeer(volunteer_signal)
            try:
                beneficiary.add_beneficiary_media()
                await beneficiary.send_offer(to=volunteer_signal.peer_id)
                offer = await volunteer.answer_offer()  # relayed from B to A
                assert offer["from"] == beneficiary_signal.peer_id
                answer = await beneficiary.accept_answer()  # from A to B
                assert answer["from"] == volunteer_signal.peer_id
                await beneficiary_signal.emit("state", {"state": "sharing", "media": "screen"})
                assert (await volunteer_signal.expect("state"))["media"] == "screen"
                # Chat and pointer go peer to peer over the data channel.
                channel = await volunteer.wait_channel_open(10)
                pointer = Pointer(x=0.5, y=0.25, kind="click")
                channel.send(encode_datachannel(pointer))
                assert decode_datachannel(await beneficiary.next_message(10)) == pointer
            finally:
                await volunteer.close()
                await beneficiary.close()
            # A peer of another session, or no peer at all, is refused across nodes too.
            end = {"candidate": "", "sdpMid": None, "sdpMLineIndex": None}
            await beneficiary_signal.emit("candidate", {"to": "x" * 20, **end})
            assert (await beneficiary_signal.expect("error"))["code"] == "not_in_room"
            # The end, sent to node A, reaches the beneficiary on node B.
            await volunteer_signal.emit("end", {})
            assert (await beneficiary_signal.expect("ended"))["reason"] == "volunteer"
            assert (await volunteer_signal.expect("ended"))["reason"] == "volunteer"
    finally:
        await http.close()


async def test_a_newer_beneficiary_connection_on_one_node_replaces_the_older_on_the_other(
    cluster: Cluster,
) -> None:
    a, b = cluster.on(cluster.a), cluster.on(cluster.b)
    account = await _volunteer(cluster)
    http = await browser_session()
    try:
        await login(http, a, account)
        session_id = await create_assistance(http, a)
        async with PeerSet() as peers:
            volunteer = peers.add(await connect_volunteer(a, http, session_id))
            older = peers.add(await connect_beneficiary(a, session_id))
            await volunteer.expect("peer-joined")
            newer = peers.add(await connect_beneficiary(b, session_id))
            assert (await older.expect("ended"))["reason"] == "replaced"
            await older.expect_disconnected()
            joined = await volunteer.expect("peer-joined")
            assert joined["peer_id"] == newer.peer_id
    finally:
        await http.close()


async def test_the_queue_across_nodes_and_a_revoked_volunteer_leaves_every_node(
    cluster: Cluster,
) -> None:
    a, b = cluster.on(cluster.a), cluster.on(cluster.b)
    account = await _volunteer(cluster)
    coordinator = await make_account(a, "nadia@example.org", Role.COORDINATOR)
    await open_all_week(a, account)
    desk = await browser_session()
    person = await browser_session()
    try:
        await login(desk, a, account)
        # The volunteer's queue page on node A, a second tab of theirs on node B.
        queue_a = await connect_peer(
            a, cookie=login_cookie(desk, a), welcome=False, namespace="/queue"
        )
        queue_b = await connect_peer(
            b, cookie=login_cookie(desk, a), welcome=False, namespace="/queue"
        )
        await queue_a.expect("queue")
        # A person joins the queue through node B: the push reaches node A.
        await join_by_http(b, person)
        pushed = await until(queue_a, "queue", lambda q: len(q["waiting"]) == 1)
        entry_id = pushed["waiting"][0]["id"]
        page = await waiting_peer(b, person)
        await page.expect("position")
        taken = await queue_a.call("take", {"entry_id": entry_id})
        assert taken["ok"], taken
        await page.expect("turn")  # the page on node B rings

        # Deactivated through node A: their sockets on node B are cut too.
        status = await _coordinator_posts(
            a, coordinator, f"/benevoles/{account.user.id}/desactiver"
        )
        assert status == 303
        assert (await queue_b.expect("revoked"))["reason"] == "deactivated"
        await queue_b.expect_disconnected()
        await queue_a.expect_disconnected()
        await page.close()
    finally:
        await desk.close()
        await person.close()


async def test_a_killed_node_leaves_no_ghost_and_its_peer_resumes_on_the_other(
    cluster: Cluster,
) -> None:
    a, b = cluster.on(cluster.a), cluster.on(cluster.b)
    account = await _volunteer(cluster)
    http = await browser_session()
    try:
        await login(http, b, account)
        session_id = await create_assistance(http, b)
        async with PeerSet() as peers:
            volunteer = peers.add(await connect_volunteer(b, http, session_id))
            lost = peers.add(await connect_beneficiary(a, session_id))
            await volunteer.expect("peer-joined")
            killed_at = time.monotonic()
            await cluster.a.kill()
            # Node B's janitor retires the dead node's socket once its heartbeat expired.
            left = await volunteer.expect("peer-left", 30)
            assert left == {"peer_id": lost.peer_id, "role": "beneficiary",
                            "reason": "disconnected"}  # fmt: skip
            assert time.monotonic() - killed_at < 25
            # The page reconnects (to node B now) and negotiates again (an ICE restart).
            back = peers.add(await connect_beneficiary(b, session_id))
            assert (await volunteer.expect("peer-joined"))["peer_id"] == back.peer_id
            beneficiary, helper = RtcPeer(back), RtcPeer(volunteer)
            try:
                beneficiary.add_beneficiary_media()
                await beneficiary.send_offer(to=volunteer.peer_id, restart=True)
                offer = await helper.answer_offer()
                assert offer.get("restart") is True
                await beneficiary.accept_answer()
                await helper.wait_channel_open(10)
            finally:
                await helper.close()
                await beneficiary.close()
    finally:
        await http.close()


# -- helpers ----------------------------------------------------------------------------------


async def _coordinator_posts(running: Running, coordinator: Account, path: str) -> int:
    http = await browser_session()
    try:
        await login(http, running, coordinator)
        async with http.get(running.url("/benevoles")) as resp:
            token = csrf_from(await resp.text())
        async with http.post(
            running.url(path), data={"csrf_token": token}, allow_redirects=False
        ) as resp:
            return resp.status
    finally:
        await http.close()


async def test_a_daily_chore_is_done_by_one_node_of_the_cluster() -> None:
    redis = RedisServer()
    await redis.start()
    nodes = [Turns(redis.url) for _ in range(3)]
    try:
        turns = [await node.mine("retention", 86400) for node in nodes]
        assert sorted(turns) == [False, False, True]
        assert not any([await node.mine("retention", 86400) for node in nodes])  # same day
        assert [await node.mine("housekeeping", 60) for node in nodes].count(True) == 1
        # Redis gone: every node does the chore rather than none (they are idempotent).
        await redis.stop()
        assert all([await node.mine("retention", 86400) for node in nodes])
    finally:
        for node in nodes:
            await node.close()
        await redis.stop()
    assert await Turns("").mine("retention", 86400)  # one process: always its turn
