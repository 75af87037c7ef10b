"""Signalling relay across nodes: beneficiary → node → Redis → other node → volunteer, against
both peers on the same node, at 200 and 1,000 candidate events/s aggregate over many pairs.

Two nodes share one Redis and one PostgreSQL database (``bench/cluster.py``). Three groups of
pairs, each connected once, measured in interleaved segments by ``bench/relay_latency.py``'s
machinery (open-loop sender, ``perf_counter_ns`` stamps in the frame, ``CpuMeter``):

- **cross-node**: the volunteer on one node, the beneficiary on the other (half the pairs each
  way), so every candidate goes through Redis, on the target node's own relay channel
  (``server/cluster.py`` ``RelayChannel``);
- **same node** (the baseline): both peers on one node (half the pairs on each node), the
  nodes still running with Redis (rate-limit counters, presence), the relay itself local;
- **one process, no Redis** (a second reference): a third server on the same database without
  ``PERMANENCE_REDIS_URL``, i.e. the single-process deployment.

CPU per message is the sum of both nodes' CPU (Redis's is reported apart, in the details).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.cluster import cluster_site
from bench.context import BenchEnv, Row
from bench.relay_latency import (
    CONNECT_CONCURRENCY,
    DETAIL_KEYS,
    RATE_LIMIT_BUDGET,
    WARMUP_RATE,
    WARMUP_S,
    Pair,
    bounded,
    close_pairs,
    connect_pair,
    measure_groups,
)
from bench.wsclient import client_session

# Aggregate candidate events per second: 1,000 is the target rate; at 200 neither placement
# saturates this 2-core machine, so the ratio shows Redis's own cost.
RATES = (200, 1000)
TARGET_RATE = 1000
PAIRS = 120  # per group: 8.3 msg/s per beneficiary at 1,000 msg/s
DURATION_S = 10.0  # per group, in relay_latency.SEGMENTS interleaved segments
QUICK_DURATION_S = 3.0
TARGET_RATIO = 2.0  # cross-node p99 at most twice the same-node p99
CROSS, SAME, SINGLE = "cross-node", "same node", "one process, no Redis"


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Two nodes and a lone process on one database; three groups of pairs; one rate."""
    duration = QUICK_DURATION_S if env.quick else DURATION_S
    per_peer = (WARMUP_RATE * WARMUP_S + sum(RATES) * duration) / PAIRS
    if per_peer > RATE_LIMIT_BUDGET:
        raise ValueError(f"{per_peer:.0f} events per peer would hit the server's rate limit")
    async with cluster_site(env, nodes=2, single=True) as site, client_session() as http:
        a, b = (node.url for node in site.nodes)
        assert site.single is not None
        cookie = site.fixtures.volunteer_cookie
        lone = site.single.url
        # (volunteer's node, beneficiary's node) of pair i, alternating so both nodes work alike.
        placements: dict[str, Callable[[int], tuple[str, str]]] = {
            CROSS: lambda i: (a, b) if i % 2 == 0 else (b, a),
            SAME: lambda i: (a, a) if i % 2 == 0 else (b, b),
            SINGLE: lambda i: (lone, lone),
        }
        started = time.perf_counter()
        pairs: dict[str, list[Pair]] = {}
        try:
            for name, where in placements.items():
                sessions = await site.fixtures.new_sessions(PAIRS)
                coros = [connect_pair(http, s, cookie, *where(i)) for i, s in enumerate(sessions)]
                pairs[name] = await bounded(coros, CONNECT_CONCURRENCY)
            connect_s = time.perf_counter() - started
            pids = site.pids()
            nodes = tuple(node.name for node in site.nodes)
            processes = {CROSS: nodes, SAME: nodes, SINGLE: ("single",)}
            runs = await measure_groups(pairs, RATES, duration, pids, processes)
            site.check_alive()
        finally:
            await close_pairs(pairs)
    for r in runs:
        r["redis_cpu_us_per_msg"] = r["cpu_us_per_msg_by_process"]["redis"]
    by = {(r["server"], r["rate"]): r for r in runs}
    return {
        "title": "Signalling relay across two nodes (Redis), candidate events one way",
        "status": "ok" if all(r["delivered"] == r["sent"] for r in runs) else "failed",
        "params": {
            "nodes": 2,
            "pairs_per_group": PAIRS,
            "rates_msg_per_s": list(RATES),
            "duration_s": duration,
            "warmup": f"{WARMUP_RATE} msg/s for {WARMUP_S} s, not measured",
            "max_events_per_peer": round(per_peer),
            "rate_limit": "SOCKET_EVENTS_PER_PEER 600/minute (server/ratelimit.py), not reached",
            "database": "PostgreSQL (throwaway database)",
            "redis": "redis-server of our own, no persistence",
            "connect_s": round(connect_s, 2),
        },
        "runs": runs,
        "rows": [row.as_dict() for rate in RATES for row in _rows(by, rate)],
        "details": [
            {k: r[k] for k in (*DETAIL_KEYS, "server_cpu_us_per_msg", "redis_cpu_us_per_msg")}
            for r in runs
        ],
    }


def _rows(by: dict[tuple[str, int], dict[str, Any]], rate: int) -> list[Row]:
    cross, same, single = by[(CROSS, rate)], by[(SAME, rate)], by[(SINGLE, rate)]
    at = f"@ {rate} msg/s"
    rows: list[Row] = []
    for key, label in (("p50_us", "p50"), ("p99_us", "p99"), ("max_us", "max")):
        target, met = "", None
        if key == "p99_us" and rate == TARGET_RATE:
            target = f"≤ {TARGET_RATIO:g}× same node"
            met = cross[key] <= TARGET_RATIO * same[key] and cross["delivered"] == cross["sent"]
        note = "; ".join(
            f"{r['server']} run disturbed: {r['disturbed']}"
            for r in (cross, same)
            if r["disturbed"] and key != "p50_us"
        )
        rows.append(
            Row(
                f"relay latency {label}, cross-node {at}",
                "µs",
                cross[key],
                same[key],
                "both peers on one node, with Redis",
                target,
                met,
                note,
            )
        )
    rows.append(
        Row(
            f"relay latency p99, cross-node {at}",
            "µs",
            cross["p99_us"],
            single["p99_us"],
            "one process without Redis",
        )
    )
    for name, run in (("cross-node", cross), ("same node", same)):
        rows.append(
            Row(
                f"delivered/sent, {name} {at}",
                "msgs",
                run["delivered"],
                single["delivered"],
                "one process without Redis",
                f"= {run['sent']}",
                run["delivered"] == run["sent"],
            )
        )
    rows += [
        Row(
            f"server CPU per message, cross-node (both nodes) {at}",
            "µs",
            cross["server_cpu_us_per_msg"],
            same["server_cpu_us_per_msg"],
            "both peers on one node, with Redis",
        ),
        Row(
            f"server CPU per message, same node (both nodes) {at}",
            "µs",
            same["server_cpu_us_per_msg"],
            single["server_cpu_us_per_msg"],
            "one process without Redis",
        ),
        Row(
            f"redis-server CPU per message, cross-node {at}",
            "µs",
            cross["redis_cpu_us_per_msg"],
            same["redis_cpu_us_per_msg"],
            "both peers on one node, with Redis",
        ),
    ]
    return rows
