"""Drop-in queue across nodes: a person leaves the queue (the real form, on node a) → every
volunteer watching that association's queue gets the `queue` push, with the volunteers spread
over two nodes against all of them on one node.

Two nodes share one Redis and one PostgreSQL database (``bench/cluster.py``). Two associations,
each with 50 volunteers watching its queue (real python-socketio clients) and 500 people waiting
(``bench/queue.py``'s preparation, clients and measurement): in "one node" all 50 volunteers are
connected to node a; in "two nodes" volunteer *i* is on node a or b by parity. The change is
made on node a, which pushes to its own volunteers and publishes the committed event on Redis;
node b, receiving it, reads the queue and pushes to its own (PROTOCOL.md, "Several nodes").
Changes are spaced (no coalescing), in blocks of BLOCK alternating between the associations, so
a busy moment of the machine weighs on both alike and each block's CPU (both nodes) belongs to
one of them.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from bench.cluster import cluster_site
from bench.context import BenchEnv, Row, percentile
from bench.queue import (
    CHANGE_TIMEOUT_S,
    FULL,
    QUICK,
    Fleet,
    Target,
    interleaved,
    join,
    leave_all,
    leave_form,
    post_leave,
    prepare,
    summary,
    watchers,
)
from signaling.dropin import COALESCE_SECONDS

BLOCK = 5  # changes in a row on one association
ONE, TWO = "one node", "two nodes"
TARGET_RATIO = 2.0  # two nodes' push p99 at most twice the one-node figure


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Two associations' queues, watched from one node and from two; spaced changes on each."""
    sizes = QUICK if env.quick else FULL
    async with cluster_site(env, nodes=2) as site:
        a, b = (node.url for node in site.nodes)
        fixtures = site.fixtures
        data = {
            ONE: await prepare(fixtures, sizes.volunteers, "File d'attente, un nœud", "one-"),
            TWO: await prepare(fixtures, sizes.volunteers, "File d'attente, deux nœuds", "two-"),
        }
        people = {
            name: await join(fixtures, d, sizes.waiting + sizes.spaced) for name, d in data.items()
        }
        where = {ONE: lambda i: a, TWO: lambda i: a if i % 2 == 0 else b}
        fleets = {ONE: Fleet(), TWO: Fleet()}
        seed, form = leave_form(fixtures.settings)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        ) as http:
            try:
                started = time.perf_counter()
                for name, fleet in fleets.items():
                    clients = (
                        (where[name](i), v.cookie) for i, v in enumerate(data[name].volunteers)
                    )
                    await watchers(fleet, clients)
                connect_s = time.perf_counter() - started
                for name, fleet in fleets.items():
                    await _until_everyone_sees(fleet, len(people[name]), name)

                def leaver(name: str) -> Any:
                    group = people[name]
                    return lambda n: post_leave(http, a, seed, form, group[n])

                nodes = tuple(node.name for node in site.nodes)
                targets = [
                    Target(name, fleets[name], leaver(name), len(people[name]), processes=nodes)
                    for name in (ONE, TWO)
                ]
                pids = site.pids()
                no_pages: dict[str, list[Any]] = {ONE: [], TWO: []}
                for _block in range(max(1, sizes.spaced // BLOCK)):
                    for target in targets:
                        await interleaved((target,), BLOCK, 1, no_pages, pids)
                site.check_alive()
                summaries = {t.name: summary("spaced, no waiting page open", t) for t in targets}
                on_b = _deliveries_on(targets[1], b)
            finally:
                for fleet in fleets.values():
                    await fleet.close()
                for d in data.values():
                    await leave_all(fixtures, d)
    one, two = summaries[ONE], summaries[TWO]
    ok = one["missing"] == 0 and two["missing"] == 0 and not one["http_errors"]
    return {
        "title": "Drop-in queue across two nodes (Redis): change → every volunteer's push",
        "status": "ok" if ok and not two["http_errors"] else "failed",
        "params": {
            "nodes": 2,
            "volunteers_watching": f"{sizes.volunteers} per association",
            "placement": "one node: all on node a; two nodes: by parity on a and b",
            "waiting": f"{sizes.waiting + sizes.spaced} per association at the start",
            "changes": f"{len(targets[0].changes)} per association, blocks of {BLOCK}, "
            "leaves posted to node a",
            "coalescing_window_ms": COALESCE_SECONDS * 1000,
            "database": "PostgreSQL (throwaway database)",
            "connect_s": round(connect_s, 2),
            "client": "python-socketio AsyncClient per volunteer",
        },
        "rows": [row.as_dict() for row in _rows(one, two, on_b)],
        "details": [
            {
                "placement": s["server"],
                "changes": s["changes"],
                "deliveries": s["deliveries"],
                "missing": s["missing"],
                "first_p50_ms": s["first_p50_ms"],
                "p50_ms": s["p50_ms"],
                "p90_ms": s["p90_ms"],
                "p99_ms": s["p99_ms"],
                "max_ms": s["max_ms"],
                "server_cpu_ms_per_change": s["server_cpu_ms_per_change"],
                "client_cpu_pct": s["client_cpu_pct"],
                "other_cpu_pct": s["other_cpu_pct"],
            }
            for s in (one, two)
        ],
    }


async def _until_everyone_sees(fleet: Fleet, total: int, name: str) -> None:
    """Every volunteer of ``fleet`` has seen the prepared queue, and the pushes are over."""

    def everyone() -> bool:
        return all(w.total == total for w in fleet.watchers)

    if not await fleet.wait_for(everyone, CHANGE_TIMEOUT_S):
        raise RuntimeError(f"{name}: volunteers never saw the prepared queue")
    await fleet.settle()


def _deliveries_on(target: Target, node_url: str) -> dict[str, float]:
    """p50 and p99 (ms) of the deliveries to the volunteers connected to ``node_url``."""
    latencies = sorted(
        (received - change.sent_ns) / 1e6
        for change in target.changes
        for watcher in target.fleet.watchers
        if watcher.base_url == node_url
        if (received := watcher.first_reflecting(change.sent_ns, change.expected)) is not None
    )
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def _rows(one: dict[str, Any], two: dict[str, Any], on_b: dict[str, float]) -> list[Row]:
    base = "all volunteers on one node"
    window = COALESCE_SECONDS * 1000
    note = f"both include the {window:g} ms coalescing window (signaling/dropin.py)"
    p99_met = two["p99_ms"] <= TARGET_RATIO * one["p99_ms"]
    return [
        Row(
            "change → push, p50, volunteers on two nodes",
            "ms",
            two["p50_ms"],
            one["p50_ms"],
            base,
            note=note,
        ),
        Row(
            "change → push, p99, volunteers on two nodes",
            "ms",
            two["p99_ms"],
            one["p99_ms"],
            base,
            f"≤ {TARGET_RATIO:g}× one node",
            p99_met,
            note,
        ),
        Row(
            "change → push, p50, the volunteers on node b",
            "ms",
            on_b["p50_ms"],
            one["p50_ms"],
            base,
            note=note,
        ),
        Row(
            "change → push, p99, the volunteers on node b",
            "ms",
            on_b["p99_ms"],
            one["p99_ms"],
            base,
            note=note,
        ),
        Row(
            "change → first volunteer's push, p50",
            "ms",
            two["first_p50_ms"],
            one["first_p50_ms"],
            base,
        ),
        Row(
            "server CPU per change (both nodes)",
            "ms",
            two["server_cpu_ms_per_change"],
            one["server_cpu_ms_per_change"],
            base,
        ),
        Row(
            "volunteer deliveries missing",
            "deliveries",
            two["missing"],
            one["missing"],
            base,
            "= 0",
            two["missing"] == 0 and one["missing"] == 0,
        ),
    ]
