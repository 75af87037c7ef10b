"""Idle clients over two nodes: 10,000 connected beneficiary sockets, 5,000 on each node, on
this 2-core machine: each node's RSS before and after (``bench/idle_memory.py``'s measurement,
run on both nodes at once) and the time to connect them all.

Two nodes share one Redis and one PostgreSQL database (``bench/cluster.py``); each connection
authenticates with its join token, reads and writes the database and registers its room socket
in Redis. Baseline, in the same run: one process on the same database without Redis, with one
node's share (5,000 clients). A client that cannot connect is counted by reason, not retried:
if fewer than the target connect, the figures are for those that did and the reasons say why.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from typing import Any

import aiohttp

from bench.cluster import cluster_site
from bench.context import BenchEnv, Row
from bench.fixtures import SessionFixture
from bench.idle_memory import (
    CONNECT_CONCURRENCY,
    WARMUP_CLIENTS,
    close_idle,
    connect_idle,
    read_idle,
)
from bench.procs import ServerProcess
from bench.wsclient import Peer, Refused, client_session, connect_assist

PER_NODE = 5000
QUICK_PER_NODE = 300
NODES = 2


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """The lone process first (5,000), then both nodes at once (2 × 5,000)."""
    per_node = QUICK_PER_NODE if env.quick else PER_NODE
    failures: Counter[str] = Counter()
    async with cluster_site(env, nodes=NODES, single=True) as site, client_session() as http:
        assert site.single is not None
        started = time.perf_counter()
        sessions = await site.fixtures.new_sessions((NODES + 1) * (per_node + WARMUP_CLIENTS))
        sessions_s = time.perf_counter() - started
        share = per_node + WARMUP_CLIENTS

        def connector(server: ServerProcess, mine: list[SessionFixture]) -> Any:
            async def connect(index: int) -> Peer | None:
                try:
                    peer, _welcome = await connect_assist(
                        http, server.url, {"join_token": mine[index].join_token}
                    )
                except (OSError, TimeoutError, aiohttp.ClientError, Refused) as exc:
                    failures[f"{server.name}: {type(exc).__name__}: {str(exc)[:80]}"] += 1
                    return None
                return peer

            return connect

        lone = await connect_idle(site.single, per_node, connector(site.single, sessions[:share]))
        try:
            await read_idle(lone)
        finally:
            baseline = await close_idle(lone) if lone.readings else None
        started = time.perf_counter()
        idles = await asyncio.gather(
            *(
                connect_idle(node, per_node, connector(node, sessions[(i + 1) * share :][:share]))
                for i, node in enumerate(site.nodes)
            )
        )
        connect_all_s = time.perf_counter() - started
        try:
            await asyncio.gather(*(read_idle(idle) for idle in idles))
            site.check_alive()
        finally:
            nodes = await asyncio.gather(*(close_idle(idle) for idle in idles if idle.readings))
    if baseline is None or len(nodes) != NODES:
        raise RuntimeError(f"measurement incomplete; connection failures: {dict(failures)}")
    return _result(per_node, baseline, nodes, connect_all_s, sessions_s, failures)


def _result(
    per_node: int,
    lone: dict[str, Any],
    nodes: list[dict[str, Any]],
    connect_all_s: float,
    sessions_s: float,
    failures: Counter[str],
) -> dict[str, Any]:
    target = NODES * per_node
    connected = sum(n["clients"] for n in nodes)
    alive = sum(n["alive_at_measure"] for n in nodes)
    base = f"one process without Redis, {lone['clients']:,} clients"
    rows = [
        Row(
            f"server RSS per idle client, node {chr(ord('a') + i)} ({n['clients']:,} clients)",
            "KiB",
            n["kib_per_client"],
            lone["kib_per_client"],
            base,
            note=f"RSS {n['rss_before_kib'] / 1024:.0f} → {n['rss_after_kib'] / 1024:.0f} MiB "
            f"(lone process {lone['rss_before_kib'] / 1024:.0f} → "
            f"{lone['rss_after_kib'] / 1024:.0f} MiB)",
        )
        for i, n in enumerate(nodes)
    ]
    rows += [
        Row(
            f"time to connect {connected:,} clients over {NODES} nodes "
            f"({CONNECT_CONCURRENCY} at a time per node)",
            "s",
            connect_all_s,
            lone["connect_s"],
            base,
            note="each connection: join-token auth, a database read and write, a Redis record",
        ),
        Row(
            "connections per second, whole cluster",
            "conn/s",
            connected / connect_all_s,
            lone["connects_per_s"],
            base,
        ),
        Row(
            "clients connected and alive at the measure",
            "clients",
            alive,
            lone["alive_at_measure"],
            base,
            f"= {target:,}",
            alive == target,
            note="; ".join(f"{reason} × {n}" for reason, n in failures.items()),
        ),
    ]
    return {
        "title": f"Idle clients over two nodes (Redis): {target:,} sockets, RSS and connect time",
        "status": "ok" if alive == target else f"incomplete: {alive:,} of {target:,} connected",
        "params": {
            "nodes": NODES,
            "clients_per_node": per_node,
            "warmup_clients_per_node": WARMUP_CLIENTS,
            "connect_concurrency_per_node": CONNECT_CONCURRENCY,
            "client": "beneficiary, join_token auth, waits for welcome (bench/wsclient.py)",
            "bench_process_nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "database": "PostgreSQL (throwaway database)",
            "sessions_prepared_s": round(sessions_s, 1),
        },
        "details": [
            {"server": name, **{k: v for k, v in r.items() if k != "connects_per_s"}}
            for name, r in (
                ("lone", lone),
                *((f"node {chr(97 + i)}", n) for i, n in enumerate(nodes)),
            )
        ],
        "rows": [row.as_dict() for row in rows],
    }
