"""Combined load: the server's event-loop lag while it relays signalling, hands out the queue,
takes bookings and draws the dashboard at once (issue 13), on the run's server (SQLite) and on
a PostgreSQL single process (a throwaway database, no Redis).

Load, open-loop (each operation is due at its time whatever the answers), for 20 s:

- relay: ``candidate`` events at 1,000 msg/s over 120 beneficiary → volunteer pairs on
  `/assist` (bench/relay_latency.py's pairs, sender and recorder);
- take-next: 10 volunteers (python-socketio clients on `/queue`) clicking ``take_next`` at 10/s
  in all, while people join through the real form (``POST /aide``, 10/s) to refill the queue;
- bookings: 20/s through the partner API (``POST /api/v1/bookings``), each on its own slot;
- dashboard: one ``GET /stats`` a second by a coordinator whose association holds
  STATS_SESSIONS synthetic sessions over two years (its rollups: every day has rows).

The event loop's lag is what ``server/web/observability.py`` measures: how late a timer due every
10 ms runs, in the ``permanence_event_loop_lag_seconds`` histogram of ``/metrics``, read before
and after each phase (the 10 ms bucket bound makes "p99 ≤ 10 ms" exact; the p99 shown is
interpolated inside its bucket, the max is its bucket's upper bound). Baselines in the same run,
on the same server and connections: the lag when idle, and under the relay alone.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import time as wall_time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.cluster import pg_admin, pg_base_url
from bench.context import BenchEnv, Row, percentile
from bench.fixtures import Fixtures
from bench.procs import CpuMeter, ServerProcess, free_port, run_command
from bench.queue import Fleet, Person, QueueData, join, leave_form, prepare, watchers
from bench.relay_latency import Pair, Recorder, bounded, connect_pair, paced_send
from server import accounts, api_tokens, availability, motifs, synthetic
from server.passes import CSRF_COOKIE, LOGIN_COOKIE
from server.settings import PREFIX, load_settings
from server.store.models import Motif, Role, VisitKind, utcnow
from signaling.dropin import NAMESPACE

RELAY_RATE = 1000
PAIRS = 120
TAKE_RATE = 10
JOIN_RATE = 10
BOOKING_RATE = 20
DASHBOARD_RATE = 1
VOLUNTEERS = 10  # clicking take_next
BOOKING_VOLUNTEERS = 20
TOKENS = 50  # the API allows 120 requests a minute per token
STATS_SESSIONS = 10_000
STATS_DAYS = 730
WAITING_AT_START = 60  # the queue holds at most queue_max_waiting (200) people
TARGET_LAG_MS = 10.0
LAG_METRIC = "permanence_event_loop_lag_seconds"
BUSY_METRIC = "permanence_event_loop_lag_busy_seconds"
DRAIN_S = 5.0  # after the last operation is due, for the answers
CALL_TIMEOUT_S = 15.0
CONNECT_CONCURRENCY = 16
LOGIN_TTL = timedelta(hours=2)


@dataclass(frozen=True)
class Durations:
    """Seconds of each phase."""

    idle: float
    relay: float
    combined: float


FULL = Durations(idle=5.0, relay=10.0, combined=20.0)
QUICK = Durations(idle=3.0, relay=3.0, combined=8.0)
RELAY_BUDGET = 400  # events per peer: the server allows 600 a minute (server/ratelimit.py)


# -- Event-loop lag from /metrics ---------------------------------------------------------------

_BUCKET = re.compile(r'(\w+)_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)')
Histograms = dict[str, dict[float, float]]


async def lag_buckets(http: aiohttp.ClientSession, base_url: str) -> Histograms:
    """Cumulative bucket counts (upper bound in seconds → samples) of both lag histograms."""
    async with http.get(base_url + "/metrics") as resp:
        text = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"/metrics answered {resp.status}: {text[:200]}")
    histograms: Histograms = {LAG_METRIC: {}, BUSY_METRIC: {}}
    for name, le, count in _BUCKET.findall(text):
        if name in histograms:
            histograms[name][float(le)] = float(count)
    if not all(histograms.values()):
        raise RuntimeError(f"no {LAG_METRIC} or {BUSY_METRIC} histogram in /metrics")
    return histograms


@dataclass(frozen=True)
class Lag:
    """The lag samples of one window: how many, their p50/p99 (ms), the bound of the largest,
    and the share of samples over the target."""

    samples: int
    p50_ms: float
    p99_ms: float
    max_bound_ms: float
    over_target: float

    @classmethod
    def between(cls, before: dict[float, float], after: dict[float, float]) -> Lag:
        """The samples taken between two readings of the histogram."""
        bounds = sorted(after)
        counts = [after[b] - before.get(b, 0.0) for b in bounds]  # cumulative
        total = counts[-1]  # le="+Inf"
        if total <= 0:
            raise RuntimeError("the loop-lag sampler took no sample in the window")
        highest = next(b for b, c in zip(bounds, counts, strict=True) if c >= total)
        at_target = next(c for b, c in zip(bounds, counts, strict=True) if b >= TARGET_LAG_MS / 1e3)
        return cls(
            samples=int(total),
            p50_ms=_quantile(bounds, counts, 0.50) * 1e3,
            p99_ms=_quantile(bounds, counts, 0.99) * 1e3,
            max_bound_ms=highest * 1e3,
            over_target=1 - at_target / total,
        )


def _quantile(bounds: list[float], cumulative: list[float], q: float) -> float:
    """Prometheus' histogram_quantile: linear inside the bucket holding the q-th sample."""
    rank = q * cumulative[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


# -- What each server under test needs ----------------------------------------------------------


@dataclass(frozen=True)
class Booking:
    """The partner API side: a motif, tokens of a referrer, free slots (one booking each)."""

    motif_id: int
    tokens: list[str]
    starts: list[str]


@dataclass
class Subject:
    """One server under test and its data."""

    label: str
    url: str
    pid: int
    fixtures: Fixtures
    queue: QueueData | None = None
    booking: Booking | None = None
    coordinator_cookie: str = ""
    people: list[Person] = field(default_factory=list)


async def prepare_subject(subject: Subject, needed_slots: int) -> dict[str, Any]:
    """The queue's volunteers and first waiting people, the booking side, the dashboard's
    association with its synthetic history; seconds each took."""
    fixtures = subject.fixtures
    timings: dict[str, Any] = {}
    started = time.perf_counter()
    subject.queue = await prepare(fixtures, VOLUNTEERS, "Association combinée, file", "combined-")
    subject.people = await join(fixtures, subject.queue, WAITING_AT_START)
    timings["queue_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    subject.booking = await prepare_booking(fixtures, needed_slots)
    timings["booking_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    subject.coordinator_cookie = await _prepare_dashboard(fixtures)
    timings["dashboard_s"] = round(time.perf_counter() - started, 1)
    return timings


async def prepare_booking(fixtures: Fixtures, needed: int, tokens: int = TOKENS) -> Booking:
    """Volunteers with two 3-hour permanences each weekday, a referrer with ``tokens`` API
    tokens, and ``needed`` distinct future start times (their slots hold several volunteers)."""
    settings = fixtures.settings
    async with fixtures.sessionmaker.begin() as db:
        association = await accounts.get_or_create_association(
            db, "Association combinée, rendez-vous"
        )
        motif = (await motifs.ensure_default_motifs(db, association.id))[0]
        for index in range(BOOKING_VOLUNTEERS):
            user = await accounts.create_user(
                db,
                association=association,
                email=f"combined-rdv{index}@bench.invalid",
                name=f"Bénévole rendez-vous {index}",
                role=Role.VOLUNTEER,
                password=None,
            )
            for weekday in range(5):
                for start, end in ((9, 12), (14, 17)):
                    await availability.add_availability(
                        db,
                        user,
                        weekday=weekday,
                        start_time=wall_time(start, 0),
                        end_time=wall_time(end, 0),
                    )
        referrer = await accounts.create_user(
            db,
            association=association,
            email="combined-referent@bench.invalid",
            name="Référent combiné",
            role=Role.REFERRER,
            password=None,
        )
        scopes = list(api_tokens.SCOPES)
        raw = [
            (await api_tokens.create_token(db, referrer, f"combined {i}", scopes))[1]
            for i in range(tokens)
        ]
        association_id, motif_id = association.id, motif.id
    async with fixtures.sessionmaker() as db:
        motif = await db.get_one(Motif, motif_id)
        slots = await availability.find_slots(
            db,
            settings,
            association_id,
            motif,
            VisitKind.FIRST,
            (utcnow() + timedelta(days=1)).date(),
            92,
            utcnow(),
        )
    starts = [s.starts_at.isoformat() for s in slots if s.capacity > 0]
    if len(starts) < needed:
        raise RuntimeError(f"{len(starts)} free slots, {needed} needed")
    # Spread over the three months: neighbouring bookings are far apart in time.
    step = len(starts) / needed
    return Booking(motif_id, raw, [starts[int(i * step)] for i in range(needed)])


async def _prepare_dashboard(fixtures: Fixtures) -> str:
    """An association with volunteers, a coordinator and STATS_SESSIONS synthetic sessions
    (rollups rebuilt); the coordinator's login cookie."""
    async with fixtures.sessionmaker.begin() as db:
        association = await accounts.get_or_create_association(
            db, "Association combinée, statistiques"
        )
        for index in range(6):
            await accounts.create_user(
                db,
                association=association,
                email=f"combined-stats{index}@bench.invalid",
                name=f"Bénévole statistiques {index}",
                role=Role.VOLUNTEER,
                password=None,
            )
        coordinator = await accounts.create_user(
            db,
            association=association,
            email="combined-coordination@bench.invalid",
            name="Coordination combinée",
            role=Role.COORDINATOR,
            password=None,
        )
        await synthetic.generate(
            db, fixtures.settings, association.id, STATS_SESSIONS, days=STATS_DAYS
        )
        token = await accounts.open_login_session(db, coordinator, LOGIN_TTL)
    return f"{LOGIN_COOKIE}={token}"


# -- Operations ---------------------------------------------------------------------------------


@dataclass
class Ops:
    """Latencies (ms) and outcomes of one kind of operation."""

    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    def record(self, started: float, outcome: str) -> None:
        """One answer, ``started`` being its perf_counter() at sending."""
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.outcomes[outcome] += 1

    def p(self, q: float) -> float:
        """Latency percentile (ms)."""
        return percentile(sorted(self.latencies_ms), q)


async def paced(
    rate: float,
    duration_s: float,
    fire: Callable[[int], Coroutine[Any, Any, None]],
    offset_s: float = 0.0,
) -> None:
    """Open loop: operation i starts at start + offset + i/rate as its own task; waits for all."""
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + offset_s
    for index in range(int(rate * duration_s)):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.add(asyncio.create_task(fire(index)))
    if tasks:
        await asyncio.wait(tasks, timeout=DRAIN_S + CALL_TIMEOUT_S)
        for task in tasks:
            if not task.done():
                task.cancel()


@dataclass
class Load:
    """The clients of one server and what each kind of operation measured."""

    subject: Subject
    http: aiohttp.ClientSession
    pairs: list[Pair]
    recorder: Recorder
    fleet: Fleet
    takes: Ops = field(default_factory=Ops)
    joins: Ops = field(default_factory=Ops)
    bookings: Ops = field(default_factory=Ops)
    dashboard: Ops = field(default_factory=Ops)
    taken: list[str] = field(default_factory=list)
    booked: int = 0
    joined: int = 0

    async def take(self, index: int) -> None:
        """Volunteer ``index % VOLUNTEERS`` clicks "take the next person"."""
        watcher = self.fleet.watchers[index % len(self.fleet.watchers)]
        started = time.perf_counter()
        try:
            ack = await watcher.client.call(
                "take_next", {}, namespace=NAMESPACE, timeout=CALL_TIMEOUT_S
            )
        except Exception as exc:  # a timeout: counted, the load goes on
            self.takes.record(started, type(exc).__name__)
            return
        if isinstance(ack, dict) and ack.get("ok"):
            self.taken.append(str(ack["entry_id"]))
            self.takes.record(started, "ok")
        else:
            self.takes.record(started, str(ack.get("code") if isinstance(ack, dict) else ack))

    async def join(self, index: int) -> None:
        """Someone joins the queue through the real form, from an address of their own."""
        subject = self.subject
        assert subject.queue is not None
        seed, form = leave_form(subject.fixtures.settings)
        form |= {
            "a": str(subject.queue.association_id),
            "motif": str(subject.queue.motif_ids[index % len(subject.queue.motif_ids)]),
            "first_name": "Combiné",
        }
        headers = {
            "Cookie": f"{CSRF_COOKIE}={seed}",
            "X-Forwarded-For": f"10.{index // 250 % 250}.{index % 250}.{secrets.randbelow(250)}",
        }
        self.joined += await self._request(
            self.joins,
            "POST",
            subject.url + "/aide",
            lambda r: r.status == 303 and "attente" in r.headers.get("Location", ""),
            data=form,
            headers=headers,
            allow_redirects=False,
        )

    async def book(self, index: int) -> None:
        """A referrer's software books the index-th free slot through the partner API."""
        booking = self.subject.booking
        assert booking is not None
        body = {
            "motif_id": booking.motif_id,
            "kind": "first",
            "starts_at": booking.starts[index],
            "first_name": "Combiné",
            "email": f"combined{index}@bench.invalid",
        }
        token = booking.tokens[index % len(booking.tokens)]
        self.booked += await self._request(
            self.bookings,
            "POST",
            self.subject.url + "/api/v1/bookings",
            lambda r: r.status == 201,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )

    async def show_dashboard(self, _index: int) -> None:
        """The coordinator opens the statistics dashboard (12 months, the default)."""
        await self._request(
            self.dashboard,
            "GET",
            self.subject.url + "/stats",
            lambda r: r.status == 200,
            headers={"Cookie": self.subject.coordinator_cookie},
        )

    async def _request(
        self,
        ops: Ops,
        method: str,
        url: str,
        expected: Callable[[aiohttp.ClientResponse], bool],
        **options: Any,
    ) -> bool:
        """One timed HTTP request (at most CALL_TIMEOUT_S); whether it got the expected answer."""
        started = time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        try:
            async with self.http.request(method, url, timeout=timeout, **options) as resp:
                await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            ops.record(started, type(exc).__name__)
            return False
        ok = expected(resp)
        ops.record(started, "ok" if ok else f"HTTP {resp.status}")
        return ok

    async def relay(self, duration_s: float) -> list[float]:
        """Candidates at RELAY_RATE for ``duration_s``; one-way latencies (ms) of those
        delivered within DRAIN_S after the last was sent."""
        total = int(RELAY_RATE * duration_s)
        self.recorder.reset(total)
        await paced_send(self.pairs, RELAY_RATE, duration_s)
        try:
            async with asyncio.timeout(DRAIN_S):
                await self.recorder.complete.wait()
        except TimeoutError:
            pass  # reported as delivered < sent
        return sorted(ns / 1e6 for ns in self.recorder.latencies_ns)


@dataclass
class Phase:
    """One measured window."""

    name: str
    lag: Lag
    busy: Lag
    server_cpu_pct: float
    client_cpu_pct: float
    other_cpu_pct: float
    relay_ms: list[float] | None = None
    relay_sent: int = 0


async def measure(
    load: Load, name: str, duration_s: float, work: Callable[[], Awaitable[list[float] | None]]
) -> Phase:
    """Run ``work`` between two readings of the lag histogram and of the CPU counters."""
    url = load.subject.url
    print(f"  {load.subject.label}: {name} ({duration_s:g} s)…", flush=True)
    before = await lag_buckets(load.http, url)
    meter = CpuMeter({"server": load.subject.pid})
    relay_ms = await work()
    cpu = meter.stop()
    after = await lag_buckets(load.http, url)
    return Phase(
        name,
        Lag.between(before[LAG_METRIC], after[LAG_METRIC]),
        Lag.between(before[BUSY_METRIC], after[BUSY_METRIC]),
        cpu["server"],
        cpu["bench client"],
        cpu["other"],
        relay_ms,
        int(RELAY_RATE * duration_s) if relay_ms is not None else 0,
    )


async def measure_subject(subject: Subject, durations: Durations) -> dict[str, Any]:
    """Idle, relay alone, then everything together, on one server; its phases and checks."""
    assert subject.queue is not None
    per_peer = RELAY_RATE * (durations.relay + durations.combined) / PAIRS
    if per_peer > RELAY_BUDGET:
        raise ValueError(f"{per_peer:.0f} events per peer would hit the server's rate limit")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        sessions = await subject.fixtures.new_sessions(PAIRS)
        cookie = subject.fixtures.volunteer_cookie
        pairs: list[Pair] = await bounded(
            [connect_pair(http, s, cookie, subject.url, subject.url) for s in sessions],
            CONNECT_CONCURRENCY,
        )
        fleet = Fleet()
        recorder = Recorder()
        for pair in pairs:
            pair.receiver.on_candidate = recorder.handler(pair)
        load = Load(subject, http, pairs, recorder, fleet)
        try:
            await watchers(fleet, ((subject.url, v.cookie) for v in subject.queue.volunteers))
            await fleet.settle()
            await load.relay(1.0)  # warm-up, not measured
            await asyncio.sleep(1.0)

            async def idle() -> None:
                await asyncio.sleep(durations.idle)
                return None

            async def relay_alone() -> list[float]:
                return await load.relay(durations.relay)

            async def combined() -> list[float]:
                duration = durations.combined
                others = asyncio.gather(
                    paced(TAKE_RATE, duration, load.take, offset_s=0.05),
                    paced(JOIN_RATE, duration, load.join, offset_s=0.0),
                    paced(BOOKING_RATE, duration, load.book, offset_s=0.025),
                    paced(DASHBOARD_RATE, duration, load.show_dashboard, offset_s=0.5),
                )
                relayed = await load.relay(duration)
                await others
                return relayed

            phases = [
                await measure(load, "idle", durations.idle, idle),
                await measure(load, "relay alone", durations.relay, relay_alone),
                await measure(load, "combined", durations.combined, combined),
            ]
        finally:
            await fleet.close()
            await asyncio.gather(
                *(p.close() for pair in pairs for p in (pair.sender, pair.receiver))
            )
    return {"phases": phases, "load": load, "checks": _checks(load, durations)}


def _checks(load: Load, durations: Durations) -> list[str]:
    """What went wrong with the operations themselves (each is expected to succeed)."""
    problems = []
    takes = int(TAKE_RATE * durations.combined)
    duplicates = len(load.taken) - len(set(load.taken))
    if duplicates:
        problems.append(f"{duplicates} people taken twice")
    for name, ops, expected in (
        ("takes", load.takes, takes),
        ("joins", load.joins, int(JOIN_RATE * durations.combined)),
        ("bookings", load.bookings, int(BOOKING_RATE * durations.combined)),
        ("dashboard requests", load.dashboard, int(DASHBOARD_RATE * durations.combined)),
    ):
        answered = sum(ops.outcomes.values())
        failed = {k: v for k, v in ops.outcomes.items() if k != "ok"}
        if answered != expected:
            problems.append(f"{name}: {answered} answered of {expected}")
        if failed:
            problems.append(f"{name}: {failed}")
    return problems


# -- PostgreSQL single process ------------------------------------------------------------------


@asynccontextmanager
async def pg_single(env: BenchEnv) -> AsyncIterator[Subject]:
    """A throwaway PostgreSQL database, migrated, and one server process on it without Redis;
    dropped (WITH FORCE) on the way out."""
    from bench.run import server_environment  # bench.run imports benchmarks lazily

    base = pg_base_url()
    name = f"bench_combined_{env.server.pid}_{secrets.token_hex(3)}"
    admin = pg_admin(base)
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    port = free_port()
    work = Path(env.fixtures.settings.data_dir).parent / f"combined-{secrets.token_hex(3)}"
    environ = server_environment(work, port) | {f"{PREFIX}DATABASE_URL": url}
    stamp = env.server.log_path.stem.removesuffix("-server")
    server = ServerProcess(
        "PostgreSQL single process",
        [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        environ,
        port,
        env.server.log_path.parent / f"{stamp}-combined-pg.log",
    )
    fixtures = Fixtures(load_settings(environ))
    try:
        await run_command([sys.executable, "-m", "server.cli", "migrate"], environ)
        await fixtures.setup()
        await server.start("/healthz")
        yield Subject("PostgreSQL", server.url, server.pid, fixtures)
    finally:
        await server.stop()
        await fixtures.close()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


# -- Report -------------------------------------------------------------------------------------


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    by = {p.name: p for p in result["phases"]}
    load: Load = result["load"]
    combined = by["combined"]
    relay = combined.relay_ms or []
    alone = by["relay alone"].relay_ms or []
    return {
        "by": by,
        "relay_p99": percentile(relay, 99),
        "relay_alone_p99": percentile(alone, 99),
        "relay_delivered": len(relay),
        "relay_sent": combined.relay_sent,
        "relay_alone_delivered": len(alone),
        "relay_alone_sent": by["relay alone"].relay_sent,
        "load": load,
    }


def _rows(label: str, result: dict[str, Any]) -> list[Row]:
    s = _summary(result)
    by, load = s["by"], s["load"]
    idle, alone, combined = by["idle"], by["relay alone"], by["combined"]
    checks = result["checks"]
    ok = not checks and s["relay_delivered"] == s["relay_sent"]
    note = "; ".join(checks)
    return [
        Row(
            f"{label}: event-loop lag p99, combined load",
            "ms",
            combined.lag.p99_ms,
            idle.lag.p99_ms,
            "same server idle",
            target=f"≤ {TARGET_LAG_MS:g} ms",
            met=combined.lag.over_target <= 0.01 and ok,
            note=note,
        ),
        Row(
            f"{label}: event-loop lag p99 while the loop ran (busy part), combined",
            "ms",
            combined.busy.p99_ms,
            idle.busy.p99_ms,
            "same server idle",
            target=f"≤ {TARGET_LAG_MS:g} ms",
            met=combined.busy.over_target <= 0.01,
            note="the part of each lag sample during which the server's loop thread was on a "
            "CPU: what the server caused itself, the rest being CPU taken by other processes "
            "(meaningful on a shared machine; on a quiet one both agree)",
        ),
        Row(
            f"{label}: event-loop lag p99, relay 1,000 msg/s alone",
            "ms",
            alone.lag.p99_ms,
            idle.lag.p99_ms,
            "same server idle",
        ),
        Row(
            f"{label}: event-loop lag max (bucket bound), combined",
            "ms",
            combined.lag.max_bound_ms,
            alone.lag.max_bound_ms,
            "relay alone",
        ),
        Row(
            f"{label}: lag samples over {TARGET_LAG_MS:g} ms, combined",
            "%",
            combined.lag.over_target * 100,
            alone.lag.over_target * 100,
            "relay alone",
            target="≤ 1 %",
            met=combined.lag.over_target <= 0.01,
        ),
        Row(
            f"{label}: relay p99, combined",
            "ms",
            s["relay_p99"],
            s["relay_alone_p99"],
            "relay alone",
        ),
        Row(f"{label}: take_next p99, combined", "ms", load.takes.p(99), None, ""),
        Row(f"{label}: booking p99, combined", "ms", load.bookings.p(99), None, ""),
        Row(f"{label}: queue join (form) p99, combined", "ms", load.joins.p(99), None, ""),
        Row(f"{label}: dashboard /stats p99, combined", "ms", load.dashboard.p(99), None, ""),
        Row(
            f"{label}: server CPU, combined",
            "% of a core",
            combined.server_cpu_pct,
            alone.server_cpu_pct,
            "relay alone",
        ),
    ]


def _details(label: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    s = _summary(result)
    load: Load = s["load"]
    out = []
    for phase in result["phases"]:
        is_combined = phase.name == "combined"
        relay = phase.relay_ms or []
        out.append(
            {
                "server": label,
                "phase": phase.name,
                "lag samples": phase.lag.samples,
                "lag p50 ms": phase.lag.p50_ms,
                "lag p99 ms": phase.lag.p99_ms,
                "lag max ≤ ms": phase.lag.max_bound_ms,
                "lag > 10 ms %": phase.lag.over_target * 100,
                "busy lag p99 ms": phase.busy.p99_ms,
                "busy lag max ≤ ms": phase.busy.max_bound_ms,
                "relay p99 ms": percentile(relay, 99) if relay else None,
                "relay delivered": f"{len(relay)}/{phase.relay_sent}" if phase.relay_sent else "",
                "take p99 ms": load.takes.p(99) if is_combined else None,
                "booking p99 ms": load.bookings.p(99) if is_combined else None,
                "join p99 ms": load.joins.p(99) if is_combined else None,
                "dashboard p99 ms": load.dashboard.p(99) if is_combined else None,
                "server CPU %": phase.server_cpu_pct,
                "client CPU %": phase.client_cpu_pct,
                "other CPU %": phase.other_cpu_pct,
            }
        )
    return out


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """The run's server (SQLite), then a PostgreSQL single process, each idle, under the relay
    alone and under the combined load."""
    durations = QUICK if env.quick else FULL
    needed = int(BOOKING_RATE * durations.combined)
    results: dict[str, dict[str, Any]] = {}
    preparation: dict[str, Any] = {}
    sqlite = Subject("SQLite", server_url, env.server.pid, env.fixtures)
    preparation["SQLite"] = await prepare_subject(sqlite, needed)
    results["SQLite"] = await measure_subject(sqlite, durations)
    env.server.check_alive()
    async with pg_single(env) as postgres:
        preparation["PostgreSQL"] = await prepare_subject(postgres, needed)
        results["PostgreSQL"] = await measure_subject(postgres, durations)
    rows = [row for label, result in results.items() for row in _rows(label, result)]
    details = [d for label, result in results.items() for d in _details(label, result)]
    problems = {label: r["checks"] for label, r in results.items() if r["checks"]}
    return {
        "title": "Combined load: event-loop lag (relay + take-next + bookings + dashboard)",
        "status": "ok" if not problems else f"operations failed: {problems}",
        "params": {
            "relay": f"{RELAY_RATE} msg/s over {PAIRS} pairs",
            "take_next": f"{TAKE_RATE}/s by {VOLUNTEERS} volunteers, "
            f"{WAITING_AT_START} waiting at start, joins {JOIN_RATE}/s (form)",
            "bookings": f"{BOOKING_RATE}/s (partner API, distinct slots, "
            f"{BOOKING_VOLUNTEERS} volunteers)",
            "dashboard": f"{DASHBOARD_RATE}/s GET /stats, {STATS_SESSIONS:,} sessions over "
            f"{STATS_DAYS} days",
            "phases_s": f"idle {durations.idle}, relay alone {durations.relay}, "
            f"combined {durations.combined}",
            "lag_probe": "timer due every 10 ms (permanence_event_loop_lag_seconds)",
            "preparation_s": str(preparation),
        },
        "rows": [row.as_dict() for row in rows],
        "details": details,
    }
