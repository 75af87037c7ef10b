"""Booking benchmarks through the real server's partner API (/api/v1), on SQLite (the run's
server) and on PostgreSQL (a throwaway database and a second ``python -m server.cli serve``
process on it, without Redis: ``bench/cluster.py``'s ``cluster_site(nodes=0, single=True)``):

1. slot search over 3 months (three 31-day `/api/v1/slots` requests in a row) with 50 volunteers
   holding two 3-hour permanences each weekday and ~1,000 existing appointments, p50/p99;
   baseline: the same number of authenticated `/api/v1/motifs` requests (the API's floor);
   SQLite only;
2. booking throughput and p99 with 200 concurrent clients booking 200 different slots, and the
   server's CPU per booking; baseline: 200 concurrent authenticated reads (`/api/v1/motifs`) on
   the same server; targets (issue 13): >= 100 bookings/s on SQLite, >= 300/s on PostgreSQL,
   p99 <= 1 s;
3. contention: 200 concurrent clients booking ONE slot whose capacity is the number of
   volunteers free then → exactly that many bookings, the rest `409 slot_taken`, on both.

Each client has its own API token (the API limits each token to 120 requests a minute).
"""

from __future__ import annotations

import asyncio
import random
import time as clock
from collections import Counter
from collections.abc import Iterable
from datetime import time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from bench.cluster import cluster_site
from bench.context import BenchEnv, Row, percentile
from bench.fixtures import Fixtures
from bench.procs import cpu_seconds
from server import accounts, api_tokens, availability, booking, contact, motifs
from server.store.models import Association, Role, VisitKind, utcnow

VOLUNTEERS = 50
CLIENTS = 200
SEARCH_RUNS = 30
EXISTING_BOOKINGS = 1000
PARIS = ZoneInfo("Europe/Paris")
PERMANENCES = ((time(9, 30), time(12, 30)), (time(14, 0), time(17, 0)))
# Issue 13's goals, 200 concurrent clients on distinct slots.
TARGET_PER_S = {"SQLite": 100.0, "PostgreSQL": 300.0}
TARGET_P99_MS = 1000.0
# Existing appointments are made a few at a time: one by one, PostgreSQL's 1,000 took most of
# the runner's 240 s on a busy machine.
PREPARE_CONCURRENCY = 8


async def _prepare(
    fixtures: Fixtures, volunteers: int, clients: int, existing: int
) -> dict[str, Any]:
    """Volunteers with weekly permanences, motifs, existing bookings, a referrer with tokens."""
    settings = fixtures.settings
    maker = fixtures.sessionmaker
    assert fixtures.volunteer is not None
    association_id = fixtures.volunteer.association_id
    async with maker.begin() as db:
        association = await db.get_one(Association, association_id)
        motif = (await motifs.ensure_default_motifs(db, association_id))[0]
        for index in range(volunteers):
            user = await accounts.create_user(
                db,
                association=association,
                email=f"permanence{index}@bench.invalid",
                name=f"Bénévole {index}",
                role=Role.VOLUNTEER,
                password=None,
            )
            for weekday in range(5):
                for start, end in PERMANENCES:
                    await availability.add_availability(
                        db, user, weekday=weekday, start_time=start, end_time=end
                    )
        referrer = await accounts.create_user(
            db,
            association=association,
            email="referent@bench.invalid",
            name="Référent du banc d'essai",
            role=Role.REFERRER,
            password=None,
        )
        tokens = [
            (await api_tokens.create_token(db, referrer, f"client {i}", list(api_tokens.SCOPES)))[1]
            for i in range(clients)
        ]
    # Existing appointments spread over the three months, booked through the domain.
    async with maker() as db:
        slots = await availability.find_slots(
            db, settings, association_id, motif, VisitKind.FOLLOW_UP, utcnow().date(), 92, utcnow()
        )
    rng = random.Random(2026)
    gate = asyncio.Semaphore(PREPARE_CONCURRENCY)

    async def existing_booking(starts_at: Any) -> bool:
        async with gate:
            try:
                async with maker.begin() as db:
                    await booking.book(
                        db,
                        settings,
                        association_id=association_id,
                        motif_id=motif.id,
                        kind=VisitKind.FOLLOW_UP,
                        starts_at=starts_at,
                        contact=contact.ContactInfo(first_name="Banc", email="banc@bench.invalid"),
                        via="public",
                        now=utcnow(),
                    )
            except booking.BookingError:
                return False  # overlaps one made just before for every free volunteer
            return True

    chosen = rng.sample(slots, min(existing, len(slots)))
    taken = sum(await asyncio.gather(*(existing_booking(slot.starts_at) for slot in chosen)))
    return {
        "association_id": association_id,
        "motif_id": motif.id,
        "tokens": tokens,
        "existing": taken,
    }


async def _timed(coro: Any) -> tuple[float, int]:
    start = clock.perf_counter()
    status = await coro
    return (clock.perf_counter() - start) * 1000, status


async def _get(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        await resp.read()
        return resp.status


async def _search_3_months(
    http: aiohttp.ClientSession, base: str, motif_id: int, token: str
) -> int:
    today = utcnow().astimezone(PARIS).date()
    status = 200
    for month in range(3):
        start = today + timedelta(days=31 * month)
        status = max(
            status,
            await _get(
                http,
                f"{base}/api/v1/slots?motif_id={motif_id}&kind=first&from={start}&days=31",
                token,
            ),
        )
    return status


async def _floor_3(http: aiohttp.ClientSession, base: str, token: str) -> int:
    status = 200
    for _ in range(3):
        status = max(status, await _get(http, f"{base}/api/v1/motifs", token))
    return status


def _answers(statuses: Iterable[int]) -> str:
    """HTTP statuses and how often, e.g. ``503: 12`` (a 503 is a connection not had in time)."""
    return ", ".join(f"{status}: {n}" for status, n in sorted(Counter(statuses).items()))


def _stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return percentile(ordered, 50), percentile(ordered, 99)


async def _book(
    http: aiohttp.ClientSession, base: str, token: str, motif_id: int, starts_at: str, n: int
) -> int:
    body = {
        "motif_id": motif_id,
        "kind": "first",
        "starts_at": starts_at,
        "first_name": "Client",
        "email": f"client{n}@bench.invalid",
    }
    async with http.post(
        f"{base}/api/v1/bookings", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        await resp.read()
        return resp.status


async def _free_slots(fixtures: Fixtures, data: dict[str, Any]) -> tuple[list[Any], Any]:
    """Slots that don't overlap each other for any volunteer (one per permanence and day), and
    the one with the most capacity, kept apart for the contention phase."""
    tomorrow = (utcnow() + timedelta(days=1)).astimezone(PARIS).date()
    association_id = data["association_id"]
    async with fixtures.sessionmaker() as db:
        motif = await motifs.get_motif(db, association_id, data["motif_id"])
        assert motif is not None
        slots = await availability.find_slots(
            db,
            fixtures.settings,
            motif.association_id,
            motif,
            VisitKind.FIRST,
            tomorrow,
            60,
            utcnow(),
        )
    distinct, seen = [], set()
    for slot in slots:
        key = (
            slot.starts_at.astimezone(PARIS).date(),
            slot.starts_at.astimezone(PARIS).hour < 13,
        )
        if key not in seen:
            seen.add(key)
            distinct.append(slot)
    contended = max(distinct, key=lambda slot: (slot.capacity, slot.starts_at))
    distinct.remove(contended)
    return distinct, contended


async def _write_phases(
    http: aiohttp.ClientSession,
    base: str,
    pid: int,
    fixtures: Fixtures,
    data: dict[str, Any],
    clients: int,
    database: str,
) -> list[Row]:
    """Throughput (against concurrent reads of the same server) and contention on one server."""
    tokens: list[str] = data["tokens"]
    motif_id: int = data["motif_id"]
    distinct, contended = await _free_slots(fixtures, data)

    # Throughput: `clients` concurrent bookings of different slots (capacity permitting),
    # against the same number of concurrent authenticated reads. The server's CPU (all its
    # threads) is read around each phase: it holds on a busy machine, latencies don't.
    targets = [distinct[i % len(distinct)].starts_at.isoformat() for i in range(clients)]
    cpu, start = cpu_seconds(pid), clock.perf_counter()
    results = await asyncio.gather(
        *(_timed(_book(http, base, tokens[i], motif_id, targets[i], i)) for i in range(clients))
    )
    book_wall, book_cpu = clock.perf_counter() - start, cpu_seconds(pid) - cpu
    cpu, start = cpu_seconds(pid), clock.perf_counter()
    reads = await asyncio.gather(
        *(_timed(_get(http, f"{base}/api/v1/motifs", tokens[i])) for i in range(clients))
    )
    read_wall, read_cpu = clock.perf_counter() - start, cpu_seconds(pid) - cpu
    booked = sum(1 for _ms, status in results if status == 201)
    assert all(status == 200 for _ms, status in reads), [s for _ms, s in reads if s != 200][:5]

    # Contention: everyone on one slot.
    outcomes = await asyncio.gather(
        *(
            _book(http, base, tokens[i], motif_id, contended.starts_at.isoformat(), 10_000 + i)
            for i in range(clients)
        )
    )
    won = outcomes.count(201)
    lost = outcomes.count(409)
    b50, b99 = _stats([ms for ms, _status in results])
    r50, r99 = _stats([ms for ms, _status in reads])
    per_s = clients / book_wall
    others = clients - booked
    return [
        Row(
            f"{database}: bookings/s, {clients} concurrent clients",
            "req/s",
            per_s,
            clients / read_wall,
            f"{clients} concurrent API reads",
            target=f">= {TARGET_PER_S[database]:.0f}",
            met=per_s >= TARGET_PER_S[database] and others == 0,
            note=f"{booked} booked over {len(distinct)} slots"
            + (
                f"; other answers (status: count): {_answers(s for _ms, s in results if s != 201)}"
                if others
                else ""
            ),
        ),
        Row(
            f"{database}: booking latency p99, {clients} concurrent",
            "ms",
            b99,
            r99,
            "API read p99",
            target=f"<= {TARGET_P99_MS:,.0f}",
            met=b99 <= TARGET_P99_MS,
        ),
        Row(
            f"{database}: booking latency p50, {clients} concurrent", "ms", b50, r50, "API read p50"
        ),
        Row(
            f"{database}: server CPU per booking, {clients} concurrent",
            "ms",
            1000 * book_cpu / clients,
            1000 * read_cpu / clients,
            "server CPU per API read",
            note="user + system CPU of the server process (all threads, the outbox worker "
            "sending the confirmations included) over the phase, divided by the requests",
        ),
        Row(
            f"{database}: contention, {clients} clients on one slot, bookings made",
            "bookings",
            won,
            contended.capacity,
            "slot capacity",
            target=f"= {contended.capacity}",
            met=won == contended.capacity and won + lost == clients,
            note=f"{database}: {lost} × 409 slot_taken, {clients - won - lost} other"
            + (
                f" ({_answers(s for s in outcomes if s not in (201, 409))})"
                if won + lost < clients
                else ""
            ),
        ),
    ]


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Prepare the data, then measure search, throughput and contention on SQLite (the run's
    server), then throughput and contention on PostgreSQL (a server of our own)."""
    volunteers = 10 if env.quick else VOLUNTEERS
    clients = 50 if env.quick else CLIENTS
    runs = 10 if env.quick else SEARCH_RUNS
    existing = 200 if env.quick else EXISTING_BOOKINGS
    began = clock.perf_counter()
    data = await _prepare(env.fixtures, volunteers, clients, existing)
    elapsed = {"SQLite data": clock.perf_counter() - began}
    tokens: list[str] = data["tokens"]
    motif_id: int = data["motif_id"]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        # 1. Slot search over three months, sequential, against the API floor.
        search, floor = [], []
        for i in range(runs):
            ms, status = await _timed(_search_3_months(http, server_url, motif_id, tokens[i]))
            assert status == 200, status
            search.append(ms)
            ms, status = await _timed(_floor_3(http, server_url, tokens[i]))
            floor.append(ms)
        elapsed["SQLite search"] = clock.perf_counter() - began - sum(elapsed.values())
        # 2 and 3 on SQLite.
        sqlite_rows = await _write_phases(
            http, server_url, env.server.pid, env.fixtures, data, clients, "SQLite"
        )
        elapsed["SQLite writes"] = clock.perf_counter() - began - sum(elapsed.values())
        # 2 and 3 on PostgreSQL: the same data on a throwaway database.
        async with cluster_site(env, nodes=0, single=True) as site:
            assert site.single is not None
            pg_data = await _prepare(site.fixtures, volunteers, clients, existing)
            elapsed["PostgreSQL site and data"] = (
                clock.perf_counter() - began - sum(elapsed.values())
            )
            pg_rows = await _write_phases(
                http, site.single.url, site.single.pid, site.fixtures, pg_data, clients,
                "PostgreSQL",
            )  # fmt: skip
    elapsed["PostgreSQL writes"] = clock.perf_counter() - began - sum(elapsed.values())
    s50, s99 = _stats(search)
    f50, f99 = _stats(floor)
    rows = [
        Row("SQLite: 3-month slot search, p50", "ms", s50, f50, "3 authenticated API reads"),
        Row("SQLite: 3-month slot search, p99", "ms", s99, f99, "3 authenticated API reads"),
        *sqlite_rows,
        *pg_rows,
    ]
    return {
        "title": "Booking: slot search, throughput, contention (partner API, SQLite and "
        "PostgreSQL)",
        "status": "ok",
        "params": {
            "volunteers": volunteers,
            "clients": clients,
            "search_runs": runs,
            "existing_appointments": f"{data['existing']} (SQLite), {pg_data['existing']} "
            "(PostgreSQL)",
            "permanences": "Mon–Fri 09:30–12:30 and 14:00–17:00 Europe/Paris",
            "phases (s)": ", ".join(f"{name} {s:.0f}" for name, s in elapsed.items()),
        },
        "rows": [row.as_dict() for row in rows],
    }
