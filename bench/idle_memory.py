"""Server memory per idle connected client: RSS of the server process before and after N idle
WebSocket clients (authenticated `/assist` beneficiaries on ours, one per session; plain
connections on the raw aiohttp relay baseline), once every client has answered a keep-alive
ping (Engine.IO ``2``/``3`` on ours, WebSocket PING/PONG from aiohttp's heartbeat on the raw
relay; both every 10 s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.context import BenchEnv, Row
from bench.fixtures import SessionFixture
from bench.procs import ServerProcess, rss_kib
from bench.wsclient import Peer, client_session, connect_assist, connect_raw

CLIENTS = 2000
QUICK_CLIENTS = 300
WARMUP_CLIENTS = 50
CONNECT_CONCURRENCY = 50
PING_TIMEOUT_S = 30.0  # one ping interval is 10 s
SETTLE_S = 1.0

# A connector may return None for a client that could not connect (counted by the caller).
Connector = Callable[[int], Awaitable[Peer | None]]


async def _connect_all(count: int, connect: Connector) -> list[Peer]:
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int) -> Peer | None:
        async with semaphore:
            return await connect(index)

    return [p for p in await asyncio.gather(*(one(i) for i in range(count))) if p is not None]


async def _close_all(peers: list[Peer]) -> None:
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY * 4)

    async def one(peer: Peer) -> None:
        async with semaphore:
            await peer.close()

    await asyncio.gather(*(one(p) for p in peers))


async def _ping_round(peers: list[Peer]) -> float:
    """Seconds until every client has answered at least one server ping since it connected."""
    started = time.perf_counter()
    async with asyncio.timeout(PING_TIMEOUT_S):
        pending = [p for p in peers if p.pings == 0]
        while pending:
            await asyncio.sleep(0.25)
            pending = [p for p in pending if p.pings == 0]
    return time.perf_counter() - started


@dataclass
class IdleClients:
    """Idle clients connected to one server, and the readings taken so far."""

    server: ServerProcess
    peers: list[Peer]
    rss_before_kib: int
    connect_s: float
    readings: dict[str, Any] = field(default_factory=dict)


async def connect_idle(server: ServerProcess, count: int, connect: Connector) -> IdleClients:
    """Warm up (connect and close WARMUP_CLIENTS), RSS before, connect ``count`` idle clients."""
    warm = await _connect_all(WARMUP_CLIENTS, lambda i: connect(count + i))
    await _close_all(warm)
    await asyncio.sleep(SETTLE_S)
    before = rss_kib(server.pid)
    started = time.perf_counter()
    peers = await _connect_all(count, connect)
    return IdleClients(server, peers, before, time.perf_counter() - started)


async def read_idle(idle: IdleClients) -> None:
    """Once every client has answered a keep-alive ping: RSS after, clients still open."""
    ping_wait_s = await _ping_round(idle.peers)
    await asyncio.sleep(SETTLE_S)
    idle.readings = {
        "rss_after_kib": rss_kib(idle.server.pid),
        "alive_at_measure": sum(1 for p in idle.peers if not p.ws.closed),
        "ping_round_s": ping_wait_s,
    }
    idle.server.check_alive()


async def close_idle(idle: IdleClients) -> dict[str, Any]:
    """Close the clients; RSS once they are gone; every reading of this server."""
    await _close_all(idle.peers)
    await asyncio.sleep(SETTLE_S)
    count, after = len(idle.peers), idle.readings["rss_after_kib"]
    return {
        "clients": count,
        "alive_at_measure": idle.readings["alive_at_measure"],
        "rss_before_kib": idle.rss_before_kib,
        "rss_after_kib": after,
        "rss_after_close_kib": rss_kib(idle.server.pid),
        "kib_per_client": (after - idle.rss_before_kib) / count,
        "connect_s": idle.connect_s,
        "connects_per_s": count / idle.connect_s,
        "ping_round_s": idle.readings["ping_round_s"],
    }


async def measure(server: ServerProcess, count: int, connect: Connector) -> dict[str, Any]:
    """Warm up, RSS before, connect ``count`` idle clients, one ping round, RSS after."""
    idle = await connect_idle(server, count, connect)
    try:
        await read_idle(idle)
    except BaseException:
        await _close_all(idle.peers)
        raise
    return await close_idle(idle)


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """The raw relay first, then ours, with the same number of clients."""
    count = QUICK_CLIENTS if env.quick else CLIENTS
    sessions: list[SessionFixture] = await env.new_sessions(count + WARMUP_CLIENTS)
    async with client_session() as http:

        async def ours(index: int) -> Peer:
            token = sessions[index].join_token
            peer, _welcome = await connect_assist(http, server_url, {"join_token": token})
            return peer

        async def raw(index: int) -> Peer:
            return await connect_raw(http, env.raw.url, f"idle{index}", "a")

        results = {
            "raw": await measure(env.raw, count, raw),
            "ours": await measure(env.server, count, ours),
        }
    o, r = results["ours"], results["raw"]
    rows = [
        Row(
            f"server RSS per idle client ({count} clients)",
            "KiB",
            o["kib_per_client"],
            r["kib_per_client"],
            "raw aiohttp WS server",
            note=f"RSS {o['rss_before_kib'] / 1024:.0f} → {o['rss_after_kib'] / 1024:.0f} MiB"
            f" (raw {r['rss_before_kib'] / 1024:.0f} → {r['rss_after_kib'] / 1024:.0f} MiB)",
        ),
        Row(
            f"time to connect {count} clients ({CONNECT_CONCURRENCY} at a time)",
            "s",
            o["connect_s"],
            r["connect_s"],
            "raw aiohttp WS server",
            note="ours: auth + DB write per connection",
        ),
    ]
    return {
        "title": "Server memory per idle connected client",
        "params": {
            "clients": count,
            "warmup_clients": WARMUP_CLIENTS,
            "connect_concurrency": CONNECT_CONCURRENCY,
            "ours_client": "beneficiary, join_token auth, waits for welcome",
        },
        "runs": results,
        "details": [
            {"server": name, **{k: v for k, v in r.items() if k != "connects_per_s"}}
            for name, r in results.items()
        ],
        "rows": [row.as_dict() for row in rows],
    }
