"""Several nodes: two `permanence serve` processes on free ports sharing one PostgreSQL database
and one Redis (a redis-server of our own), as the deploy recipe runs them. Real aiortc peers and
Socket.IO clients connect to different nodes; nothing is mocked."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiohttp
import aioice.ice
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import expect
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from server.cluster import EVENTS_CHANNEL, RELAY_CHANNEL, Turns
from server.db import make_sessionmaker
from server.store.engine import make_engine
from server.store.models import Role
from signaling.messages import Chat, Pointer, decode_datachannel, encode_datachannel
from signaling.server import SOCKETIO_CHANNEL
from tests.browser import chromium_with_devices
from tests.conftest import (
    PG_UNREACHABLE,
    POSTGRES_URL,
    Account,
    Running,
    browser_session,
    create_assistance,
    login,
    make_account,
)
from tests.peers import (
    PeerSet,
    RtcPeer,
    SignalPeer,
    connect_beneficiary,
    connect_peer,
    connect_volunteer,
    login_cookie,
)
from tests.processes import ServeProcess
from tests.test_account_access import coordinator_posts
from tests.test_deploy import Nginx, needs_nginx
from tests.test_dropin import join_by_http, open_all_week, until, waiting_peer
from tests.test_faults_redis import RedisServer

pytestmark = [
    pytest.mark.webrtc,
    pytest.mark.skipif(bool(PG_UNREACHABLE), reason=PG_UNREACHABLE or ""),
]


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gather host candidates on loopback only (NOTES.md: other interfaces stall gathering)."""

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback)


@dataclass
class Cluster:
    """Two nodes, and a view of each that the peers' helpers take (as for the in-process app:
    a base URL, the shared database and the settings)."""

    a: ServeProcess
    b: ServeProcess
    views: dict[str, Running]
    redis: RedisServer

    def on(self, node: ServeProcess) -> Running:
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


@asynccontextmanager
async def running_cluster(tmp_path: Path, public_url: str | None = None) -> AsyncIterator[Cluster]:
    """Redis, a migrated PostgreSQL database, and nodes A and B serving it (behind a proxy at
    ``public_url`` if given)."""
    redis = RedisServer()
    await redis.start()
    database_url = await _create_database()
    shared = {"DATABASE_URL": database_url, "REDIS_URL": redis.url}
    if public_url:
        shared |= {"BASE_URL": public_url, "TRUST_PROXY": "true"}
    a = ServeProcess(tmp_path / "a", "a", dict(shared))
    b = ServeProcess(tmp_path / "b", "b", dict(shared))
    engine = make_engine(database_url)
    try:
        await a.migrate()
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
        yield Cluster(a, b, views, redis)
    finally:
        stopped = await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)
        await engine.dispose()
        await _drop_database(database_url)
        await redis.stop()
        for outcome in stopped:
            if isinstance(outcome, BaseException):
                raise outcome


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Two nodes on one PostgreSQL database and one Redis."""
    async with running_cluster(tmp_path) as started:
        yield started


async def _volunteer(cluster: Cluster, email: str = "camille@example.org") -> Account:
    return await make_account(cluster.on(cluster.a), email)


@dataclass
class Room:
    """An assistance opened through one node, its volunteer's socket on that node."""

    session_id: str
    volunteer: SignalPeer
    peers: PeerSet

    async def beneficiary(self, node: Running, name: str | None = None) -> SignalPeer:
        """A beneficiary joins through ``node``."""
        return self.peers.add(await connect_beneficiary(node, self.session_id, name))


@asynccontextmanager
async def assistance(cluster: Cluster, node: Running) -> AsyncIterator[Room]:
    """A volunteer logs in and opens an assistance through ``node``, and joins its room there."""
    account = await _volunteer(cluster)
    http = await browser_session()
    try:
        await login(http, node, account)
        session_id = await create_assistance(http, node)
        async with PeerSet() as peers:
            volunteer = peers.add(await connect_volunteer(node, http, session_id))
            yield Room(session_id, volunteer, peers)
    finally:
        await http.close()


async def test_a_volunteer_on_one_node_sees_the_screen_of_a_beneficiary_on_the_other(
    cluster: Cluster,
) -> None:
    a, b = cluster.on(cluster.a), cluster.on(cluster.b)
    async with assistance(cluster, a) as room:
        volunteer_signal = room.volunteer
        beneficiary_signal = await room.beneficiary(b, "Awa")
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
            chat = Chat(id="m1", text="Cliquez sur « Mon compte »")
            channel.send(encode_datachannel(chat))
            assert decode_datachannel(await beneficiary.next_message(10)) == chat
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


async def test_a_newer_beneficiary_connection_on_one_node_replaces_the_older_on_the_other(
    cluster: Cluster,
) -> None:
    a, b = cluster.on(cluster.a), cluster.on(cluster.b)
    async with assistance(cluster, a) as room:
        older = await room.beneficiary(a)
        await room.volunteer.expect("peer-joined")
        newer = await room.beneficiary(b)
        assert (await older.expect("ended"))["reason"] == "replaced"
        await older.expect_disconnected()
        assert (await room.volunteer.expect("peer-joined"))["peer_id"] == newer.peer_id


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
        cookie = login_cookie(desk, a)
        queue_a = await connect_peer(a, cookie=cookie, welcome=False, namespace="/queue")
        queue_b = await connect_peer(b, cookie=cookie, welcome=False, namespace="/queue")
        await queue_a.expect("queue")
        # A person joins the queue through node B: the push reaches node A.
        await join_by_http(b, person)
        pushed = await until(queue_a, "queue", lambda q: len(q["waiting"]) == 1)
        page = await waiting_peer(b, person)
        await page.expect("position")
        taken = await queue_a.call("take", {"entry_id": pushed["waiting"][0]["id"]})
        assert taken["ok"], taken
        await page.expect("turn")  # the page on node B rings

        # Deactivated through node A: their sockets on node B are cut too.
        deactivate = f"/benevoles/{account.user.id}/desactiver"
        assert await coordinator_posts(a, coordinator, deactivate) == 303
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
    async with assistance(cluster, b) as room:
        lost = await room.beneficiary(a)
        await room.volunteer.expect("peer-joined")
        killed_at = time.monotonic()
        await cluster.a.kill()
        # Node B's janitor retires the dead node's socket once its heartbeat expired.
        left = await room.volunteer.expect("peer-left", 30)
        assert left == {"peer_id": lost.peer_id, "role": "beneficiary", "reason": "disconnected"}
        assert time.monotonic() - killed_at < 25
        # The page reconnects (to node B now) and negotiates again (an ICE restart).
        back = await room.beneficiary(b)
        assert (await room.volunteer.expect("peer-joined"))["peer_id"] == back.peer_id
        beneficiary, helper = RtcPeer(back), RtcPeer(room.volunteer)
        try:
            beneficiary.add_beneficiary_media()
            await beneficiary.send_offer(to=room.volunteer.peer_id, restart=True)
            offer = await helper.answer_offer()
            assert offer.get("restart") is True
            await beneficiary.accept_answer()
            await helper.wait_channel_open(10)
        finally:
            await helper.close()
            await beneficiary.close()


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


async def test_after_redis_restarted_empty_the_nodes_reconnect_and_relay_resumes(
    cluster: Cluster,
) -> None:
    a, b = cluster.on(cluster.a), cluster.on(cluster.b)
    async with assistance(cluster, a) as room:
        beneficiary = await room.beneficiary(b)
        await room.volunteer.expect("peer-joined")
        await cluster.redis.stop()
        await cluster.redis.start()  # no persistence: it knows nothing any more
        # Each node writes its records again at its next heartbeat (5 s) and its
        # subscriptions reconnect; until then a relay may be refused, never lost silently.
        assert await _relayed_once_recovered(beneficiary, room.volunteer)
        assert await _relayed_once_recovered(room.volunteer, beneficiary)
        await room.volunteer.emit("end", {})
        assert (await beneficiary.expect("ended"))["reason"] == "volunteer"


async def test_what_the_nodes_send_each_other_through_redis_is_json_never_pickle(
    cluster: Cluster,
) -> None:
    """python-socketio's Redis manager (and our event bus) must not unpickle what anyone able
    to write to Redis sends: every message on both channels is JSON. A relay to another node's
    peer goes on that node's own channel as text: target, session, and the Socket.IO frame."""
    listener = aioredis.Redis.from_url(cluster.redis.url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(SOCKETIO_CHANNEL, EVENTS_CHANNEL)
    await pubsub.psubscribe(RELAY_CHANNEL + "*")
    a, b = cluster.on(cluster.a), cluster.on(cluster.b)
    candidate = {"candidate": "", "sdpMid": None, "sdpMLineIndex": None}
    try:
        async with assistance(cluster, a) as room:
            beneficiary = await room.beneficiary(b)  # emits across the nodes
            await room.volunteer.expect("peer-joined")
            await beneficiary.emit("candidate", {"to": room.volunteer.peer_id, **candidate})
            assert await room.volunteer.expect("candidate") == {
                "from": beneficiary.peer_id,
                **candidate,
            }
            await room.volunteer.emit("end", {})  # a committed event: RoomEnded
            await beneficiary.expect("ended")
        seen: dict[str, list[object]] = {SOCKETIO_CHANNEL: [], EVENTS_CHANNEL: []}
        relayed: list[str] = []
        async with asyncio.timeout(10):
            while not all(seen.values()) or not relayed:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "pmessage":
                    relayed.append(message["data"].decode())
                else:
                    seen[message["channel"].decode()].append(json.loads(message["data"]))
        to, session_id, frame = relayed[0].split("|", 2)
        assert (to, session_id) == (room.volunteer.peer_id, room.session_id)
        assert frame.startswith("2/assist,")
        event = ["candidate", {"from": beneficiary.peer_id, **candidate}]
        assert json.loads(frame.removeprefix("2/assist,")) == event
        emit = next(m for m in seen[SOCKETIO_CHANNEL] if isinstance(m, dict))
        assert emit["method"] in {"emit", "enter_room", "leave_room", "disconnect"}, emit
        events = next(m for m in seen[EVENTS_CHANNEL] if isinstance(m, dict))
        ended = ["RoomEnded", {"session_id": room.session_id, "reason": "volunteer"}]
        assert ended in events["events"]
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def _relayed_once_recovered(sender: SignalPeer, receiver: SignalPeer) -> bool:
    """Send candidates until one arrives: each node's subscriptions reconnect with their own
    backoff, and what is published before a node listens again is lost (Redis pub/sub keeps
    nothing), as a page's own retries would find."""
    candidate = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
                 "sdpMid": "0", "sdpMLineIndex": 0}  # fmt: skip
    async with asyncio.timeout(30):
        while True:
            await sender.emit("candidate", {"to": receiver.peer_id, **candidate})
            try:
                relayed = await receiver.expect("candidate", 0.5)
            except AssertionError:
                continue
            return bool(relayed == {"from": sender.peer_id, **candidate})


# -- Chromium through nginx in front of the two nodes --------------------------------------------


@needs_nginx
async def test_through_nginx_the_volunteer_sees_the_shared_screen_whichever_node_each_lands_on(
    tmp_path: Path,
) -> None:
    """The shipped nginx site (ports, paths and certificate adapted, as in test_deploy.py) in
    front of nodes A and B: two browsers go through it, their sockets land on whichever node
    the sid hash picks, and the volunteer sees the screen the beneficiary shares."""
    nginx = Nginx(tmp_path / "nginx", [])
    nginx.prefix.mkdir()
    async with running_cluster(tmp_path, public_url=nginx.base_url) as nodes:
        nginx.nodes = [nodes.a.port, nodes.b.port]
        nginx.write()
        proxy = await asyncio.create_subprocess_exec(*nginx.command())
        try:
            await _until_served(nginx.base_url + "/healthz")
            account = await _volunteer(nodes)
            await _share_and_see(nginx.base_url, account)
            # Both nodes served this session's sockets or pages: the proxy spreads them.
            counts = [await _requests_served(node) for node in (nodes.a, nodes.b)]
            assert all(counts), counts
        finally:
            proxy.terminate()
            await asyncio.wait_for(proxy.wait(), 10)


async def _until_served(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _attempt in range(200):
            try:
                async with http.get(url, ssl=False) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)  # another process: polling is the only way to know
    raise AssertionError(f"{url} never answered")


async def _requests_served(node: ServeProcess) -> int:
    """How many requests the node answered (its own /metrics, read from loopback)."""
    async with aiohttp.ClientSession() as http, http.get(node.url + "/metrics") as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.text()
    total = 0.0
    for line in body.splitlines():
        if line.startswith("permanence_http_request_duration_seconds_count{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def _share_and_see(base_url: str, account: Account) -> None:
    async with chromium_with_devices() as chrome:
        errors: list[str] = []
        vol = await chrome.page(errors=errors, ignore_https_errors=True)
        await vol.goto(base_url + "/login")
        await vol.get_by_label("Adresse e-mail").fill(account.email)
        await vol.get_by_label("Mot de passe").fill(account.password)
        await vol.get_by_role("button", name="Se connecter").click()
        await vol.wait_for_url("**/tableau")
        await vol.get_by_role("button", name="Nouvelle assistance").click()
        await expect(vol.locator("body")).to_have_attribute("data-vp-status", "waiting")
        code = (await vol.locator("#join-code").inner_text()).strip()

        ben = await chrome.page(errors=errors, ignore_https_errors=True)
        await ben.goto(base_url + "/code")
        await ben.get_by_label("Code à 8 chiffres").fill(code)
        await ben.get_by_role("button", name="Continuer").click()
        await ben.wait_for_url("**/b")
        await ben.get_by_role("button", name="Commencer").click()
        for page in (ben, vol):
            await expect(page.locator("body")).to_have_attribute(
                "data-vp-status", "connected", timeout=20_000
            )
        await ben.get_by_role("button", name="Partager mon écran").click()
        await vol.wait_for_function(
            "() => document.getElementById('remote-video').videoWidth > 0", timeout=20_000
        )
        await expect(vol.locator("#no-video")).to_be_hidden()
        assert not errors, errors
