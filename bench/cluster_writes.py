"""Write paths across two nodes (issue 13 with issue 9): bookings per second with 200 concurrent
clients on distinct slots, and takes per second with 10 volunteers clicking back to back, through
two nodes (Redis, clients spread over both) against one node alone, on one PostgreSQL database
(``bench/cluster.py``'s site: ``node a`` and ``node b`` on Redis, ``single`` without).

Both run in the same benchmark, alternately (one node, two nodes, two nodes, one node), so a busy
moment of the machine weighs on both alike; the speed-up is two nodes' rate over one node's.
Bookings go through the partner API (``POST /api/v1/bookings``), each client with its own token
and slot; takes through ``take_next`` on `/queue` (python-socketio clients), with each person
taken exactly once, in queue order per volunteer, checked after each round.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.cluster import Site, cluster_site
from bench.combined import prepare_booking
from bench.context import BenchEnv, Row, percentile
from bench.procs import CpuMeter
from bench.queue import Fleet, QueueData, Watcher, join, prepare
from bench.take_next import Taker, rows_problems, verify_takes
from server.dropin import places as dropin

CLIENTS = 200
VOLUNTEERS = 10
WAITING = 150  # people taken per take round (joining them takes a while on PostgreSQL)
ROUNDS = ("one node", "two nodes", "two nodes", "one node")
QUICK_CLIENTS, QUICK_WAITING = 50, 60
ONE, TWO = "one node", "two nodes"


@dataclass
class Tally:
    """One way of serving (one node or two) over its rounds."""

    wall_s: float = 0.0
    done: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Operations per second over all its rounds."""
        return self.done / self.wall_s if self.wall_s else 0.0

    def p(self, q: float) -> float:
        """Latency percentile (ms)."""
        return percentile(sorted(self.latencies_ms), q)


async def _book(
    http: aiohttp.ClientSession, url: str, token: str, motif_id: int, starts_at: str, n: int
) -> tuple[float, int]:
    body = {
        "motif_id": motif_id,
        "kind": "first",
        "starts_at": starts_at,
        "first_name": "Grappe",
        "email": f"grappe{n}@bench.invalid",
    }
    started = time.perf_counter()
    async with http.post(
        f"{url}/api/v1/bookings", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        await resp.read()
    return (time.perf_counter() - started) * 1000, resp.status


def _urls(site: Site) -> dict[str, Callable[[int], str]]:
    assert site.single is not None
    a, b, lone = site.nodes[0].url, site.nodes[1].url, site.single.url
    return {ONE: lambda i: lone, TWO: lambda i: a if i % 2 == 0 else b}


def _cpu_names(site: Site) -> dict[str, tuple[str, ...]]:
    return {ONE: ("single",), TWO: (*(n.name for n in site.nodes), "redis")}


async def bookings(site: Site, clients: int) -> dict[str, Tally]:
    """ROUNDS of ``clients`` concurrent bookings, each on a slot of its own."""
    booking = await prepare_booking(site.fixtures, clients * len(ROUNDS), tokens=clients)
    where, names = _urls(site), _cpu_names(site)
    tallies = {ONE: Tally(), TWO: Tally()}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for number, way in enumerate(ROUNDS):
            starts = booking.starts[number * clients : (number + 1) * clients]
            meter = CpuMeter(site.pids())
            began = time.perf_counter()
            results = await asyncio.gather(
                *(
                    _book(
                        http,
                        where[way](i),
                        booking.tokens[i],
                        booking.motif_id,
                        starts[i],
                        number * clients + i,
                    )
                    for i in range(clients)
                )
            )
            tally = tallies[way]
            tally.wall_s += time.perf_counter() - began
            print(f"  bookings, {way}: {time.perf_counter() - began:.1f} s", flush=True)
            cpu = meter.stop()
            tally.cpu_s += sum(cpu[n] for n in names[way]) / 100 * (time.perf_counter() - began)
            for ms, status in results:
                tally.latencies_ms.append(ms)
                tally.outcomes[str(status)] += 1
                tally.done += status == 201
    for tally in tallies.values():
        if set(tally.outcomes) != {"201"}:
            tally.problems.append(f"bookings answered {dict(tally.outcomes)}, all 201 expected")
    return tallies


async def takes(site: Site, waiting: int) -> dict[str, Tally]:
    """ROUNDS of VOLUNTEERS volunteers taking ``waiting`` people back to back."""
    data: QueueData = await prepare(site.fixtures, VOLUNTEERS, "Grappe, file", "writes-")
    where, names = _urls(site), _cpu_names(site)
    tallies = {ONE: Tally(), TWO: Tally()}
    for way in ROUNDS:
        people = await join(site.fixtures, data, waiting)
        fleet = Fleet()
        try:
            takers = []
            for index, volunteer in enumerate(data.volunteers):
                watcher = Watcher(fleet)
                await watcher.connect(where[way](index), volunteer.cookie)
                fleet.watchers.append(watcher)
                takers.append(Taker(volunteer, watcher))
            await fleet.settle()
            start = asyncio.Event()
            loops = [asyncio.create_task(t.run(start)) for t in takers]
            meter = CpuMeter(site.pids())
            began = time.perf_counter()
            start.set()
            await asyncio.gather(*loops)
            wall = time.perf_counter() - began
            cpu = meter.stop()
        finally:
            await fleet.close()
        print(f"  takes, {way}: {wall:.1f} s", flush=True)
        tally = tallies[way]
        tally.wall_s += wall
        tally.cpu_s += sum(cpu[n] for n in names[way]) / 100 * wall
        tally.done += sum(len(t.taken) for t in takers)
        tally.latencies_ms += [ns / 1e6 for t in takers for ns in t.latencies_ns]
        async with site.fixtures.sessionmaker() as db:
            still = await dropin.count_waiting(db, data.association_id)
        tally.problems += verify_takes([p.entry_id for p in people], takers, still)
        tally.problems += await rows_problems(
            site.fixtures, {e: t.volunteer.user_id for t in takers for e in t.taken}
        )
    return tallies


def _rows(what: str, unit: str, tallies: dict[str, Tally], count: str, check: str) -> list[Row]:
    one, two = tallies[ONE], tallies[TWO]
    speedup = two.rate / one.rate if one.rate else float("nan")
    problems = "; ".join(
        f"{way}: {'; '.join(t.problems)}" for way, t in tallies.items() if t.problems
    )
    return [
        Row(
            f"{what}/s, {count}",
            unit,
            two.rate,
            one.rate,
            "one node alone (same database)",
            note=f"{what}: speed-up of two nodes over one: {speedup:.2f}×",
        ),
        Row(f"{what} p50, {count}", "ms", two.p(50), one.p(50), "one node alone"),
        Row(f"{what} p99, {count}", "ms", two.p(99), one.p(99), "one node alone"),
        Row(
            f"server CPU per {what.rstrip('s')}, {count}",
            "ms",
            two.cpu_s / max(two.done, 1) * 1000,
            one.cpu_s / max(one.done, 1) * 1000,
            "one node alone",
            note="two nodes: both nodes and redis-server",
        ),
        Row(
            f"{what} done correctly, {count}",
            what,
            two.done,
            one.done,
            "one node alone",
            target=check,
            met=not one.problems and not two.problems,
            note=problems,
        ),
    ]


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """A two-node site with a lone node on the same database; bookings, then takes."""
    del server_url  # the site's own servers, on PostgreSQL
    clients = QUICK_CLIENTS if env.quick else CLIENTS
    waiting = QUICK_WAITING if env.quick else WAITING
    async with cluster_site(env, nodes=2, single=True) as site:
        booked = await bookings(site, clients)
        taken = await takes(site, waiting)
        site.check_alive()
    rows = _rows(
        "bookings", "bookings/s", booked, f"{clients} concurrent clients", "every one answered 201"
    )
    rows += _rows(
        "takes",
        "takes/s",
        taken,
        f"{VOLUNTEERS} volunteers back to back",
        "each person once, in order, none left",
    )
    problems = [p for t in (*booked.values(), *taken.values()) for p in t.problems]
    details = [
        {
            "operation": what,
            "served by": way,
            "done": t.done,
            "per second": t.rate,
            "p50 ms": t.p(50),
            "p99 ms": t.p(99),
            "CPU ms per op": t.cpu_s / max(t.done, 1) * 1000,
            "outcomes": dict(t.outcomes) if t.outcomes else "",
        }
        for what, tallies in (("bookings", booked), ("takes", taken))
        for way, t in tallies.items()
    ]
    return {
        "title": "Two nodes (Redis, PostgreSQL): bookings/s and takes/s against one node",
        "status": "ok" if not problems else "failed: " + "; ".join(problems),
        "params": {
            "rounds": " → ".join(ROUNDS),
            "bookings": f"{clients} concurrent clients per round, each its own token and slot",
            "takes": f"{VOLUNTEERS} volunteers, {waiting} waiting per round",
            "speedup_bookings": f"{_speedup(booked):.2f}×",
            "speedup_takes": f"{_speedup(taken):.2f}×",
            "database": "PostgreSQL (throwaway database), redis-server of our own",
        },
        "rows": [row.as_dict() for row in rows],
        "details": details,
    }


def _speedup(tallies: dict[str, Tally]) -> float:
    one = tallies[ONE].rate
    return tallies[TWO].rate / one if one else float("nan")
