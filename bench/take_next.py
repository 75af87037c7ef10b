"""take-next against the real server, on SQLite (the run's server) and on PostgreSQL.

Each server gets the queue lengths first, then the contention (in another association, whose
queue starts empty).

1. **CPU per take against the queue length.** One volunteer (a real python-socketio client on
   `/queue` with its login cookie, so it also gets the queue pushes its takes cause) calls
   `take_next` (an acknowledged event) back to back while 100, 500 and 2,000 people wait (made
   through ``server.dropin.join``; each length is topped up to the length plus half the takes,
   so the queue stays around it). Server CPU (``/proc/<pid>/stat``) from the first call until
   the last push has arrived, divided by the takes. Baseline: the same at 100 waiting; the
   2,000 row's ratio is the flatness. The takes must come in queue order, each exactly once.
2. **Contention.** 1 (the baseline), 10, 5 and 2 volunteers call `take_next` in closed loops
   until the waiting people are gone: latency of each call, p50/p99, takes per second, server
   CPU per take, and correctness (each person taken exactly once, by the volunteer whose
   acknowledgement named them, in queue order per volunteer, nobody left waiting); a failure
   fails the benchmark.

Both parts run on the run's server (SQLite), then on a throwaway PostgreSQL database served by
a second ``server.cli serve`` process without Redis (``bench/cluster.py``'s site, no node); on
PostgreSQL only that process's CPU is counted (the database's own backends are apart).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from bench.cluster import cluster_site, pg_base_url
from bench.context import BenchEnv, Row, percentile
from bench.fixtures import Fixtures
from bench.procs import CpuMeter, cpu_seconds
from bench.queue import Fleet, QueueData, Volunteer, Watcher, join, prepare
from server.dropin import places as dropin
from server.store.models import QueueEntry, QueueStatus
from signaling.dropin import NAMESPACE


@dataclass(frozen=True)
class Sizes:
    """How much load one run puts on each server."""

    lengths: tuple[int, ...]  # people waiting while the CPU per take is measured
    cpu_takes: int  # takes measured at each length
    waiting: int  # people taken in each contention phase
    groups: tuple[int, ...]  # volunteers taking at once; the first is the baseline


FULL = Sizes(lengths=(100, 500, 2_000), cpu_takes=40, waiting=200, groups=(1, 10, 5, 2))
QUICK = Sizes(lengths=(100, 500, 2_000), cpu_takes=20, waiting=100, groups=(1, 10, 5, 2))
TIME_BUDGET_S = 225.0  # of BENCH_TIMEOUT_S (240 s)
SQLITE_SHARE = 0.45  # of the budget, at most, for SQLite; PostgreSQL has the rest
TAKE_TIMEOUT_S = 30.0
MAX_TAKE_ERRORS = 20
CPU_TARGET_MS = 5.0
FLAT_TARGET = 1.5  # CPU per take at the longest queue / at 100 waiting
P99_TARGET_MS = {"SQLite": 250.0, "PostgreSQL": 100.0}
CONTENDED = 10  # the p99 target is for this many volunteers
ASSOCIATION = "Association du banc take-next"
LONG_QUEUE_ASSOCIATION = "Association du banc take-next, longue file"


@dataclass
class Site:
    """One server under test: its URL and process, and its data (database) factory."""

    name: str  # the database: "SQLite" or "PostgreSQL"
    url: str
    pid: int
    fixtures: Fixtures
    data: QueueData  # the association of the contention part (its queue starts empty)
    long_queue: QueueData  # another association, whose queue grows to the longest length


@dataclass
class Taker:
    """One volunteer's closed loop of `take_next` calls."""

    volunteer: Volunteer
    watcher: Watcher
    latencies_ns: list[int] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    empty: bool = False

    async def run(self, start: asyncio.Event, limit: int | None = None) -> None:
        """Take until the server says nobody waits, ``limit`` people, or too many errors."""
        await start.wait()
        while sum(self.errors.values()) < MAX_TAKE_ERRORS:
            if limit is not None and len(self.taken) >= limit:
                return
            sent = time.perf_counter_ns()
            ack = await self.watcher.client.call(
                "take_next", {}, namespace=NAMESPACE, timeout=TAKE_TIMEOUT_S
            )
            elapsed = time.perf_counter_ns() - sent
            if isinstance(ack, dict) and ack.get("ok"):
                self.latencies_ns.append(elapsed)
                self.taken.append(str(ack["entry_id"]))
            elif isinstance(ack, dict) and ack.get("code") == "empty":
                self.empty = True
                return
            else:
                self.errors[str(ack.get("code") if isinstance(ack, dict) else ack)] += 1


def _progress(what: str, started: float) -> None:
    print(f"  {what}: {time.perf_counter() - started:.1f} s", flush=True)


def _ms(values_ns: list[int]) -> list[float]:
    return sorted(v / 1e6 for v in values_ns)


async def _waiting_ids(site: Site, data: QueueData) -> list[str]:
    async with site.fixtures.sessionmaker() as db:
        return await dropin.waiting_ids(db, data.association_id)


async def _takers(site: Site, data: QueueData, fleet: Fleet, n: int) -> list[Taker]:
    takers = []
    for volunteer in data.volunteers[:n]:
        watcher = Watcher(fleet)
        await watcher.connect(site.url, volunteer.cookie)
        fleet.watchers.append(watcher)
        takers.append(Taker(volunteer, watcher))
    await fleet.settle()  # the pushes of the volunteers' arrival are not measured
    return takers


async def rows_problems(fixtures: Fixtures, by: dict[str, int]) -> list[str]:
    """The database agrees with the acknowledgements: each row TAKEN by the one they named."""
    async with fixtures.sessionmaker() as db:
        rows = (
            await db.execute(
                select(QueueEntry.id, QueueEntry.status, QueueEntry.taken_by_id).where(
                    QueueEntry.id.in_(list(by))
                )
            )
        ).all()
    wrong = sum(1 for r in rows if r.status != QueueStatus.TAKEN or by[r.id] != r.taken_by_id)
    wrong += len(by) - len(rows)
    return [f"{wrong} rows not TAKEN by the volunteer the ack named"] if wrong else []


async def _cpu_phase(site: Site, sizes: Sizes, length: int) -> dict[str, Any]:
    """One volunteer takes ``sizes.cpu_takes`` people with about ``length`` waiting."""
    data = site.long_queue
    wanted = length + sizes.cpu_takes // 2
    present = len(await _waiting_ids(site, data))
    if wanted > present:
        await join(site.fixtures, data, wanted - present)
    order = await _waiting_ids(site, data)
    fleet = Fleet()
    try:
        (taker,) = await _takers(site, data, fleet, 1)
        print(f"  {site.name}: taking {sizes.cpu_takes} with {len(order):,} waiting", flush=True)
        start = asyncio.Event()
        cpu_before, began = cpu_seconds(site.pid), time.perf_counter()
        start.set()
        await taker.run(start, limit=sizes.cpu_takes)
        wall = time.perf_counter() - began
        await fleet.settle()  # the pushes these takes caused count
        cpu = cpu_seconds(site.pid) - cpu_before
    finally:
        await fleet.close()
    problems = []
    if taker.taken != order[: len(taker.taken)]:
        problems.append("not taken in queue order")
    if len(taker.taken) != sizes.cpu_takes:
        problems.append(f"{len(taker.taken)} of {sizes.cpu_takes} taken")
    if taker.errors:
        problems.append(f"errors {dict(taker.errors)}")
    problems += await rows_problems(
        site.fixtures, {e: taker.volunteer.user_id for e in taker.taken}
    )
    latencies = _ms(taker.latencies_ns)
    return {
        "length": length,
        "waiting_at_start": len(order),
        "taken": len(taker.taken),
        "cpu_ms_per_take": cpu * 1000 / max(1, len(taker.taken)),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "takes_per_s": len(taker.taken) / wall,
        "correct": not problems,
        "problems": problems,
    }


def verify_takes(order: list[str], takers: list[Taker], still: int) -> list[str]:
    """Every prepared person taken exactly once, in queue order for each volunteer, nobody
    waiting; each problem found."""
    problems = []
    rank = {entry: i for i, entry in enumerate(order)}
    counts = Counter(entry for t in takers for entry in t.taken)
    twice = sum(1 for n in counts.values() if n > 1)
    if twice:
        problems.append(f"{twice} taken more than once")
    missing = len(rank.keys() - counts.keys())
    if missing:
        problems.append(f"{missing} never taken")
    strangers = len(counts.keys() - rank.keys())
    if strangers:
        problems.append(f"{strangers} taken who were not waiting")
    for taker in takers:
        ranks = [rank.get(entry, -1) for entry in taker.taken]
        if ranks != sorted(ranks):
            problems.append(f"volunteer {taker.volunteer.user_id} took out of queue order")
        if not taker.empty:
            problems.append(f"volunteer {taker.volunteer.user_id} never got 'empty'")
        if taker.errors:
            problems.append(f"volunteer {taker.volunteer.user_id} errors {dict(taker.errors)}")
    if still:
        problems.append(f"{still} still waiting")
    return problems


async def _contention_phase(site: Site, sizes: Sizes, n: int) -> dict[str, Any]:
    """``n`` volunteers (fresh sockets) take ``sizes.waiting`` people until nobody waits."""
    await join(site.fixtures, site.data, sizes.waiting)
    order = await _waiting_ids(site, site.data)
    fleet = Fleet()
    try:
        takers = await _takers(site, site.data, fleet, n)
        start = asyncio.Event()
        loops = [asyncio.create_task(t.run(start)) for t in takers]
        meter = CpuMeter({"ours": site.pid})
        cpu_before, began = cpu_seconds(site.pid), time.perf_counter()
        start.set()
        await asyncio.gather(*loops)
        wall = time.perf_counter() - began
        await fleet.settle()
        cpu = cpu_seconds(site.pid) - cpu_before
        shares = meter.stop()
    finally:
        await fleet.close()
    _progress(f"{site.name}: take_next, {n} volunteer(s)", began)
    problems = verify_takes(order, takers, len(await _waiting_ids(site, site.data)))
    problems += await rows_problems(
        site.fixtures, {e: t.volunteer.user_id for t in takers for e in t.taken}
    )
    latencies = _ms([v for t in takers for v in t.latencies_ns])
    taken = sum(len(t.taken) for t in takers)
    return {
        "volunteers": n,
        "taken": taken,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "takes_per_s": taken / wall,
        "cpu_ms_per_take": cpu * 1000 / max(1, taken),
        "client_cpu_pct": shares["bench client"],
        "other_cpu_pct": shares["other"],
        "per_volunteer": "/".join(str(len(t.taken)) for t in takers),
        "correct": not problems,
        "problems": problems,
    }


async def _measure(site: Site, sizes: Sizes, seconds: float) -> dict[str, Any]:
    """Both parts on one server, the queue lengths first (the goal's measure), then the
    contention (another association, whose queue starts empty); what does not fit in
    ``seconds`` is left out and said."""
    result: dict[str, Any] = {"database": site.name, "lengths": [], "phases": [], "skipped": []}
    started = time.perf_counter()
    end = started + seconds
    try:
        async with asyncio.timeout(seconds):
            for length in sizes.lengths:
                if time.perf_counter() < end:
                    result["lengths"].append(await _cpu_phase(site, sizes, length))
            _progress(f"{site.name}: CPU per take at {sizes.lengths} waiting", started)
            for n in sizes.groups:
                if time.perf_counter() < end:
                    result["phases"].append(await _contention_phase(site, sizes, n))
    except TimeoutError:
        pass
    done = {p["volunteers"] for p in result["phases"]}
    measured = {p["length"] for p in result["lengths"]}
    result["skipped"] = [f"{n:,} waiting" for n in sizes.lengths if n not in measured] + [
        f"{n} volunteers" for n in sizes.groups if n not in done
    ]
    return result


def _rows(result: dict[str, Any]) -> list[Row]:
    db = result["database"]
    rows: list[Row] = []
    lengths = result["lengths"]
    base = lengths[0] if lengths else {}
    base_name = f"{base.get('length', 0):,} waiting"
    for phase in lengths:
        longest = phase is lengths[-1] and len(lengths) > 1
        target = f"≤ {CPU_TARGET_MS:g}"
        met = phase["cpu_ms_per_take"] <= CPU_TARGET_MS
        if longest:
            target += f", ≤ {FLAT_TARGET:g}× at {base['length']:,}"
            met = met and phase["cpu_ms_per_take"] <= FLAT_TARGET * base["cpu_ms_per_take"]
        rows.append(
            Row(
                f"server CPU per take, {phase['length']:,} waiting, 1 volunteer ({db})",
                "ms",
                phase["cpu_ms_per_take"],
                base["cpu_ms_per_take"],
                base_name,
                target=target,
                met=met,
                note="; ".join(phase["problems"]),
            )
        )
    for phase in lengths:
        rows.append(
            Row(
                f"take_next p50, {phase['length']:,} waiting, 1 volunteer ({db})",
                "ms",
                phase["p50_ms"],
                base["p50_ms"],
                base_name,
            )
        )
    phases = result["phases"]
    if not phases:
        return rows
    single = phases[0]
    name = "1 volunteer alone"
    for phase in sorted(phases[1:], key=lambda p: int(p["volunteers"])):
        n = phase["volunteers"]
        p99_target = P99_TARGET_MS[db] if n == CONTENDED else None
        rows += [
            Row(
                f"take_next p50, {n} concurrent ({db})",
                "ms",
                phase["p50_ms"],
                single["p50_ms"],
                name,
            ),
            Row(
                f"take_next p99, {n} concurrent ({db})",
                "ms",
                phase["p99_ms"],
                single["p99_ms"],
                name,
                target=f"≤ {p99_target:g}" if p99_target else "",
                met=phase["p99_ms"] <= p99_target if p99_target else None,
            ),
            Row(
                f"takes/s, {n} concurrent ({db})",
                "takes/s",
                phase["takes_per_s"],
                single["takes_per_s"],
                name,
            ),
            Row(
                f"server CPU per take, {n} concurrent ({db})",
                "ms",
                phase["cpu_ms_per_take"],
                single["cpu_ms_per_take"],
                name,
            ),
        ]
    for phase in phases:
        rows.append(
            Row(
                f"people taken exactly once, {phase['volunteers']} volunteer(s) ({db})",
                "people",
                phase["taken"],
                single["taken"],
                name,
                target=f"= {single['taken']}, in order, none left",
                met=phase["correct"],
                note="; ".join(phase["problems"]),
            )
        )
    return rows


def _details(result: dict[str, Any]) -> list[dict[str, Any]]:
    db = result["database"]
    details = [
        {
            "database": db,
            "phase": f"{p['length']:,} waiting ({p['waiting_at_start']:,} at start)",
            "volunteers": 1,
            "taken": p["taken"],
            "p50_ms": p["p50_ms"],
            "p90_ms": None,
            "p99_ms": p["p99_ms"],
            "max_ms": None,
            "takes_per_s": p["takes_per_s"],
            "server_cpu_ms_per_take": p["cpu_ms_per_take"],
            "per_volunteer": str(p["taken"]),
            "client_cpu_pct": None,
            "other_cpu_pct": None,
        }
        for p in result["lengths"]
    ]
    details += [
        {
            "database": db,
            "phase": "until empty",
            "volunteers": p["volunteers"],
            "taken": p["taken"],
            "p50_ms": p["p50_ms"],
            "p90_ms": p["p90_ms"],
            "p99_ms": p["p99_ms"],
            "max_ms": p["max_ms"],
            "takes_per_s": p["takes_per_s"],
            "server_cpu_ms_per_take": p["cpu_ms_per_take"],
            "per_volunteer": p["per_volunteer"],
            "client_cpu_pct": p["client_cpu_pct"],
            "other_cpu_pct": p["other_cpu_pct"],
        }
        for p in result["phases"]
    ]
    return details


async def _site(name: str, url: str, pid: int, fixtures: Fixtures, sizes: Sizes) -> Site:
    data = await prepare(fixtures, max(sizes.groups), ASSOCIATION, tag="take")
    long_queue = await prepare(fixtures, 1, LONG_QUEUE_ASSOCIATION, tag="takelong")
    return Site(name, url, pid, fixtures, data, long_queue)


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """take-next on SQLite (the run's server), then on PostgreSQL (a site of its own)."""
    deadline = time.perf_counter() + TIME_BUDGET_S
    sizes = QUICK if env.quick else FULL
    site = await _site("SQLite", env.server.url, env.server.pid, env.fixtures, sizes)
    results = [await _measure(site, sizes, TIME_BUDGET_S * SQLITE_SHARE)]
    env.server.check_alive()
    pg_note = ""
    try:
        async with cluster_site(env, nodes=0, single=True) as cluster:
            assert cluster.single is not None
            pg = await _site(
                "PostgreSQL", cluster.single.url, cluster.single.pid, cluster.fixtures, sizes
            )
            results.append(await _measure(pg, sizes, deadline - time.perf_counter()))
            cluster.check_alive()
    except OSError as exc:  # the server is not there: say so, SQLite still counts
        pg_note = f"PostgreSQL unreachable ({pg_base_url()}): {exc}"
    rows = [row for result in results for row in _rows(result)]
    correct = all(p["correct"] for r in results for p in (*r["lengths"], *r["phases"]))
    skipped = {r["database"]: r["skipped"] for r in results if r["skipped"]}
    status = "ok" if correct else "failed"
    if correct and (skipped or pg_note):
        status = "incomplete: " + "; ".join(
            [f"{db}: {', '.join(parts)} skipped (time budget)" for db, parts in skipped.items()]
            + ([pg_note] if pg_note else [])
        )
    return {
        "title": "take-next: CPU per take vs queue length, contention (SQLite, PostgreSQL)",
        "status": status,
        "params": {
            "queue_lengths": "/".join(f"{n:,}" for n in sizes.lengths),
            "takes_per_length": sizes.cpu_takes,
            "waiting_per_contention_phase": sizes.waiting,
            "volunteers": "/".join(map(str, sizes.groups)),
            "postgresql": pg_note or f"throwaway database on {pg_base_url()}, no Redis",
            "client": "python-socketio AsyncClient per volunteer (gets the queue pushes too)",
        },
        "take_next": results,
        "rows": [row.as_dict() for row in rows],
        "details": [d for r in results for d in _details(r)],
    }
