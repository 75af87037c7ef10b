"""Soak: mixed traffic against the real server for 10 minutes (``--quick``: 1 minute;
``BENCH_SOAK_SECONDS`` overrides either), looking for what only time shows — memory or file
descriptors that grow, an event loop that slows down, errors that appear after a while.

The traffic, all at once, each kind in its own closed loop:

- **assistances**: the volunteer opens one (``POST /assistance``), volunteer and beneficiary join
  it on `/assist` (real Engine.IO/Socket.IO frames, ``bench/wsclient.py``), the beneficiary
  relays 20 ICE candidates to the volunteer (each one must arrive), leaves (``bye``), and the
  volunteer ends the session — 4 of these loops;
- **drop-in queue**: a person joins (through the domain, as bench/queue.py does: the public form
  is rate-limited per address and this client has one), their waiting page connects to `/queue`,
  a volunteer's `/queue` socket takes them (``take_next``, acknowledged), the page must get its
  ``turn``, then the volunteer marks them gone (``gone``, acknowledged);
- **bookings**: a referrer's API token lists the free slots, books one (201, or 409 when taken)
  and cancels it (the worker sends the e-mails meanwhile);
- **wrong codes**: ``POST /code`` with a random code (400, then 429 once the per-address limit is
  reached);
- a ``GET /healthz`` probe every 100 ms, from a thread of its own: its round trip is our
  measure of the server's event-loop lag.

Measured at the start (after a warm-up of a tenth of the run, traffic paused, every client
closed) and at the end (same quiet state): the server's RSS and open file descriptors; the
probe's p99 over the first and the last tenth of the run; and over the whole run the 5xx
answers, lost messages (candidates, ``turn``s and acknowledgements that never came), client
errors, ``error`` events, and ERROR lines or tracebacks in the server's log. Targets: growth
≤ 5 % (lag: ≤ 5 % + 1 ms, a probe's jitter), zero 5xx, zero lost messages, zero errors.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import time as wall_time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from aiohttp import WSMsgType
from yarl import URL

from bench.context import BenchEnv, Row, percentile
from bench.procs import CpuMeter, rss_kib
from bench.wsclient import ENGINEIO_PATH, EVENT_PREFIX, Peer, connect_assist, ws_url
from server import accounts, api_tokens, motifs
from server.assist import link_for
from server.dropin import places as dropin
from server.passes import LOGIN_COOKIE, QUEUE_COOKIE
from server.store.models import (
    AssistanceSession,
    Association,
    Availability,
    Role,
    utcnow,
)

DURATION_S = 600.0
QUICK_DURATION_S = 60.0
DURATION_ENV = "BENCH_SOAK_SECONDS"
MAX_DURATION_S = 1500.0  # the harness gives this benchmark 30 minutes in all
ASSIST_LOOPS = 4
ASSIST_GAP_S = 0.5
CANDIDATES_PER_SESSION = 20
CANDIDATE_GAP_S = 0.02
BOOKING_GAP_S = 3.0
CODE_GAP_S = 2.0
QUEUE_GAP_S = 0.5
PROBE_GAP_S = 0.1
DELIVERY_TIMEOUT_S = 10.0
SETTLE_S = 3.0
GROWTH_LIMIT = 0.05
LAG_SLACK_MS = 1.0
QUEUE_NAMESPACE = "/queue"
CANDIDATE = "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host n="
LOGIN_TTL = timedelta(hours=2)
KEPT_ERRORS = 20


@dataclass
class Tally:
    """What the traffic saw, over the whole run."""

    done: Counter[str] = field(default_factory=Counter)  # completed actions per kind
    statuses: Counter[str] = field(default_factory=Counter)  # "kind status" → count
    server_errors: int = 0  # HTTP 5xx
    sent: int = 0  # messages that must arrive (candidates, turns, acknowledgements)
    lost: int = 0
    error_events: int = 0  # Socket.IO `error` events and `ok: false` acks other than expected
    errors: list[str] = field(default_factory=list)  # client-side exceptions, first KEPT_ERRORS
    error_count: int = 0
    probes: list[tuple[float, float]] = field(default_factory=list)  # (time, round trip ms)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the run, MiB)

    def status(self, kind: str, status: int) -> None:
        """Count one HTTP answer."""
        self.statuses[f"{kind} {status}"] += 1
        if status >= 500:
            self.server_errors += 1

    def error(self, where: str, exc: BaseException) -> None:
        """Count one client-side failure (kept for the report)."""
        self.error_count += 1
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(f"{where}: {type(exc).__name__}: {exc}"[:300])


class Gate:
    """Starts the loops together and stops them between two iterations (none is cut short)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.stopped = False
        self.busy = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def turn(self, body: Callable[[], Awaitable[None]]) -> bool:
        """Run one iteration when open; False once stopped."""
        await self.open.wait()
        if self.stopped:
            return False
        self.busy += 1
        self.idle.clear()
        try:
            await body()
        finally:
            self.busy -= 1
            if not self.busy:
                self.idle.set()
        return not self.stopped

    async def stop(self) -> None:
        """Finish the current iterations and end the loops."""
        self.stopped = True
        self.open.set()
        await self.idle.wait()


# -- Data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakData:
    """Accounts and data the traffic uses."""

    association_id: int
    motif_id: int
    queue_cookie: str  # a volunteer with permanences all week: the queue is open
    api_token: str


async def _prepare(env: BenchEnv) -> SoakData:
    assert env.fixtures.volunteer is not None
    association_id = env.fixtures.volunteer.association_id
    tag = os.urandom(3).hex()
    async with env.fixtures.sessionmaker.begin() as db:
        association = await db.get_one(Association, association_id)
        motif_id = (await motifs.ensure_default_motifs(db, association_id))[0].id
        taker = await accounts.create_user(
            db,
            association=association,
            email=f"soak-{tag}@bench.invalid",
            name="Bénévole endurance",
            role=Role.VOLUNTEER,
            password=None,
        )
        for weekday in range(7):  # as tests/test_dropin.py's open_all_week
            db.add(
                Availability(
                    volunteer_id=taker.id,
                    weekday=weekday,
                    start_time=wall_time(0, 0),
                    end_time=wall_time(23, 59, 59),
                    timezone="Europe/Paris",
                )
            )
        login = await accounts.open_login_session(db, taker, LOGIN_TTL)
        referrer = await accounts.create_user(
            db,
            association=association,
            email=f"soak-referent-{tag}@bench.invalid",
            name="Référent endurance",
            role=Role.REFERRER,
            password=None,
        )
        _row, token = await api_tokens.create_token(db, referrer, "soak", list(api_tokens.SCOPES))
    return SoakData(association_id, motif_id, f"{LOGIN_COOKIE}={login}", token)


# -- Traffic ------------------------------------------------------------------------------------


@dataclass
class Soak:
    """The loops of one traffic phase and the tally they share."""

    env: BenchEnv
    base: str
    data: SoakData
    tally: Tally
    gate: Gate
    http: aiohttp.ClientSession  # the volunteer's browser (login and CSRF cookies)
    anon: aiohttp.ClientSession  # sockets of beneficiaries and waiting pages: no cookie jar
    csrf: str = ""
    taker: Any = None  # the volunteer's /queue socket (python-socketio)

    async def open(self) -> None:
        """Log the HTTP client in as the volunteer and open the queue volunteer's socket."""
        self.http.cookie_jar.update_cookies(
            {LOGIN_COOKIE: self.env.volunteer_cookie.split("=", 1)[1]}, URL(self.base)
        )
        async with self.http.get(self.base + "/tableau") as resp:
            text = await resp.text()
            assert resp.status == 200, resp.status
        self.csrf = text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        self.taker = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        await self.taker.connect(
            self.base,
            headers={"Cookie": self.data.queue_cookie},
            namespaces=[QUEUE_NAMESPACE],
            transports=["websocket"],
            wait_timeout=10,
        )

    async def close(self) -> None:
        """Close the queue socket (the HTTP session is closed by its owner)."""
        if self.taker is not None:
            await self.taker.disconnect()
            await self.taker.eio.wait()

    async def loop(self, name: str, body: Callable[[], Awaitable[None]], gap: float) -> None:
        """Run ``body`` again and again until stopped; count what fails."""

        async def once() -> None:
            try:
                async with asyncio.timeout(60):
                    await body()
                self.tally.done[name] += 1
            except Exception as exc:
                self.tally.error(name, exc)
            if gap:
                await asyncio.sleep(gap)

        while await self.gate.turn(once):
            pass

    # --- assistances ---

    async def assistance(self) -> None:
        """Open, join, relay, leave, end."""
        async with self.http.post(
            self.base + "/assistance", data={"csrf_token": self.csrf}, allow_redirects=False
        ) as resp:
            self.tally.status("assistance", resp.status)
            assert resp.status == 303, resp.status
            session_id = resp.headers["Location"].rsplit("/", 1)[1]
        async with self.env.fixtures.sessionmaker() as db:
            session = await db.get_one(AssistanceSession, session_id)
        token = link_for(self.env.fixtures.settings, session).rsplit("/j/", 1)[1]
        volunteer, _welcome = await connect_assist(
            self.http, self.base, {"session_id": session_id}, cookie=self.env.volunteer_cookie
        )
        beneficiary: Peer | None = None
        try:
            beneficiary, welcome = await connect_assist(self.http, self.base, {"join_token": token})
            to = next(p["peer_id"] for p in welcome["peers"] if p["role"] == "volunteer")
            arrived: set[int] = set()
            everything = asyncio.Event()

            def on_candidate(payload: dict[str, Any], _now: int) -> None:
                arrived.add(int(str(payload["candidate"]).rsplit("n=", 1)[1]))
                if len(arrived) == CANDIDATES_PER_SESSION:
                    everything.set()

            volunteer.on_candidate = on_candidate
            for n in range(CANDIDATES_PER_SESSION):
                frame = {
                    "to": to,
                    "candidate": f"{CANDIDATE}{n}",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                }
                await beneficiary.send(EVENT_PREFIX + json.dumps(["candidate", frame]))
                await asyncio.sleep(CANDIDATE_GAP_S)
            self.tally.sent += CANDIDATES_PER_SESSION
            try:
                async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                    await everything.wait()
            except TimeoutError:
                pass
            self.tally.lost += CANDIDATES_PER_SESSION - len(arrived)
            await beneficiary.send(EVENT_PREFIX + json.dumps(["bye", {"reason": "left"}]))
            await volunteer.send(EVENT_PREFIX + json.dumps(["end", {}]))
            await volunteer.wait_event("ended")
        finally:
            for peer in (volunteer, beneficiary):
                if peer is not None:
                    self.tally.error_events += sum(name == "error" for name, _ in peer.events)
                    await peer.close()

    # --- drop-in queue ---

    async def queue_visit(self) -> None:
        """Join, open the waiting page, be taken (the page gets its turn), be marked gone."""
        settings = self.env.fixtures.settings
        async with self.env.fixtures.sessionmaker.begin() as db:
            joined = await dropin.join(
                db, settings, self.data.association_id, self.data.motif_id, "Marie", None, utcnow()
            )
        page = await QueuePage.connect(self.anon, self.base, joined.token)
        try:
            ack = await self._ack("take_next", {})
            if not ack.get("ok"):
                raise RuntimeError(f"take_next: {ack}")
            if ack["entry_id"] != joined.entry.id:
                raise RuntimeError(f"take_next took {ack['entry_id']}, not {joined.entry.id}")
            self.tally.sent += 1
            if not await page.wait_for("turn"):
                self.tally.lost += 1
                self.tally.error("queue turn", RuntimeError(f"page got only {page.events}"))
            ack = await self._ack("gone", {"entry_id": ack["entry_id"]})
            if not ack.get("ok"):
                raise RuntimeError(f"gone: {ack}")
        finally:
            await page.close()

    async def _ack(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.tally.sent += 1
        try:
            ack = await self.taker.call(
                event, payload, namespace=QUEUE_NAMESPACE, timeout=DELIVERY_TIMEOUT_S
            )
        except socketio.exceptions.TimeoutError:
            self.tally.lost += 1
            raise
        if not isinstance(ack, dict):
            raise RuntimeError(f"{event}: acknowledgement {ack!r}")
        if not ack.get("ok"):
            self.tally.error_events += 1
        return ack

    # --- bookings ---

    async def booking(self) -> None:
        """List free slots, book one (or find it taken), cancel it."""
        headers = {"Authorization": f"Bearer {self.data.api_token}"}
        start = (utcnow() + timedelta(days=2)).date()
        url = (
            f"{self.base}/api/v1/slots?motif_id={self.data.motif_id}&kind=first&from={start}&days=7"
        )
        async with self.http.get(url, headers=headers) as resp:
            self.tally.status("slots", resp.status)
            slots = (await resp.json())["slots"]
        slot = random.choice(slots)
        body = {
            "motif_id": self.data.motif_id,
            "kind": "first",
            "starts_at": slot["starts_at"],
            "first_name": "Endurance",
            "email": "endurance@bench.invalid",
        }
        async with self.http.post(
            self.base + "/api/v1/bookings", json=body, headers=headers
        ) as resp:
            self.tally.status("book", resp.status)
            if resp.status != 201:
                return
            booking_id = (await resp.json())["id"]
        async with self.http.delete(
            f"{self.base}/api/v1/bookings/{booking_id}", headers=headers
        ) as resp:
            self.tally.status("cancel", resp.status)
            await resp.read()

    # --- wrong codes ---

    async def wrong_code(self) -> None:
        """Type a random code on /code (almost surely wrong; limited per address)."""
        async with self.http.get(self.base + "/code") as resp:
            text = await resp.text()
        csrf = text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        code = f"{random.randrange(10**6):06d}"
        async with self.http.post(
            self.base + "/code", data={"csrf_token": csrf, "code": code}, allow_redirects=False
        ) as resp:
            self.tally.status("code", resp.status)
            await resp.read()


class Probe(threading.Thread):
    """``GET /healthz`` every PROBE_GAP_S from a thread of its own (blocking HTTP, one kept-alive
    connection), so that the load generators' event loop being busy does not count as the
    server's lag."""

    def __init__(self, base: str, tally: Tally) -> None:
        super().__init__(name="soak-probe", daemon=True)
        self.address = URL(base)
        self.tally = tally
        self.stopped = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection(
            self.address.host or "127.0.0.1", self.address.port, timeout=30
        )
        try:
            while not self.stopped.wait(PROBE_GAP_S):
                started = time.perf_counter()
                try:
                    connection.request("GET", "/healthz")
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self.tally.error("probe", exc)
                    connection.close()
                    continue
                elapsed_ms = (time.perf_counter() - started) * 1000
                self.tally.status("healthz", response.status)
                self.tally.probes.append((time.monotonic(), elapsed_ms))
        finally:
            connection.close()


class QueuePage:
    """A waiting person's page on `/queue`, spoken by hand: pings answered, events recorded."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[str] = []
        self.changed = asyncio.Event()
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, base: str, token: str) -> QueuePage:
        """Open the socket with the person's queue cookie and join the namespace."""
        ws = await http.ws_connect(
            ws_url(base) + ENGINEIO_PATH,
            headers={"Cookie": f"{QUEUE_COOKIE}={token}"},
            autoping=False,
            compress=0,
        )
        opening = await ws.receive()
        if opening.type is not WSMsgType.TEXT or not opening.data.startswith("0{"):
            await ws.close()
            raise ConnectionError(f"no Engine.IO open packet: {opening!r}")
        page = cls(ws)
        await ws.send_str(f"40{QUEUE_NAMESPACE},")
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            await page.connected
        return page

    async def _read(self) -> None:
        prefix = f"42{QUEUE_NAMESPACE},"
        try:
            async for message in self.ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                data: str = message.data
                if data.startswith(prefix):
                    self.events.append(json.loads(data[len(prefix) :])[0])
                    self.changed.set()
                elif data == "2":
                    await self.ws.send_str("3")
                elif data.startswith(f"40{QUEUE_NAMESPACE},") and not self.connected.done():
                    self.connected.set_result(None)
                elif data.startswith(f"44{QUEUE_NAMESPACE},") and not self.connected.done():
                    self.connected.set_exception(ConnectionError(data))
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            if not self.connected.done():
                self.connected.set_exception(ConnectionError("closed before connecting"))
            self.changed.set()

    async def wait_for(self, event: str) -> bool:
        """Whether ``event`` arrives within DELIVERY_TIMEOUT_S."""
        try:
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                while event not in self.events:
                    if self._reader.done():
                        return False
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Close the socket and wait for the reader."""
        await self.ws.close()
        await self._reader


# -- Measures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The quiet server: memory and file descriptors."""

    rss_mib: float
    open_files: int


def snapshot(pid: int) -> Snapshot:
    """RSS and open descriptors of the server process now."""
    return Snapshot(rss_kib(pid) / 1024, len(os.listdir(f"/proc/{pid}/fd")))


def log_errors(path: Path) -> int:
    """ERROR lines and tracebacks the server wrote to its log."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return sum(1 for line in text.splitlines() if line.startswith("ERROR:") or "Traceback" in line)


def duration(quick: bool) -> float:
    """The run's length: ``BENCH_SOAK_SECONDS``, else 10 minutes (1 with ``--quick``)."""
    configured = os.environ.get(DURATION_ENV)
    seconds = float(configured) if configured else (QUICK_DURATION_S if quick else DURATION_S)
    return max(10.0, min(seconds, MAX_DURATION_S))


async def _record_rss(pid: int, tally: Tally, seconds: float) -> None:
    """The server's RSS every tenth of the run (under traffic): a plateau or a slope."""
    started = time.monotonic()
    while True:
        tally.rss.append((time.monotonic() - started, rss_kib(pid) / 1024))
        await asyncio.sleep(seconds / 10)


async def _phase(
    env: BenchEnv, data: SoakData, tally: Tally, seconds: float, record_rss: bool = False
) -> None:
    """All the loops for ``seconds``, then every client closed."""
    gate = Gate()
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
        ) as anon,
    ):
        soak = Soak(env, env.server.url, data, tally, gate, http, anon)
        await soak.open()
        loops = [
            *(soak.loop("assistance", soak.assistance, ASSIST_GAP_S) for _ in range(ASSIST_LOOPS)),
            soak.loop("queue", soak.queue_visit, QUEUE_GAP_S),
            soak.loop("booking", soak.booking, BOOKING_GAP_S),
            soak.loop("wrong code", soak.wrong_code, CODE_GAP_S),
        ]
        tasks = [asyncio.create_task(loop) for loop in loops]
        if record_rss:
            tasks.append(asyncio.create_task(_record_rss(env.server.pid, tally, seconds)))
        probe = Probe(env.server.url, tally)
        gate.open.set()
        probe.start()
        try:
            await asyncio.sleep(seconds)
            env.server.check_alive()
        finally:
            probe.stopped.set()
            for task in tasks[len(loops) :]:
                task.cancel()
            await gate.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await soak.close()
            await asyncio.to_thread(probe.join)


def _lag_p99(tally: Tally, start: float, end: float) -> float:
    values = sorted(ms for at, ms in tally.probes if start <= at < end)
    return percentile(values, 99)


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Warm up, measure the quiet server, soak, measure it again."""
    seconds = duration(env.quick)
    warmup = max(10.0, seconds / 10)
    window = max(10.0, seconds / 10)
    data = await _prepare(env)
    pid = env.server.pid
    before_traffic = snapshot(pid)
    tally = Tally()
    await _phase(env, data, tally, warmup)
    await asyncio.sleep(SETTLE_S)
    start = snapshot(pid)
    log_before = log_errors(env.server.log_path)
    began = time.monotonic()
    meter = CpuMeter({"server": pid})
    await _phase(env, data, tally, seconds, record_rss=True)
    ended = time.monotonic()
    cpu = meter.stop()
    await asyncio.sleep(SETTLE_S)
    end = snapshot(pid)
    lag_start = _lag_p99(tally, began, began + window)
    lag_end = _lag_p99(tally, ended - window, ended)
    server_log_errors = log_errors(env.server.log_path)
    rss_ok = end.rss_mib <= start.rss_mib * (1 + GROWTH_LIMIT)
    files_ok = end.open_files <= start.open_files * (1 + GROWTH_LIMIT)
    lag_ok = lag_end <= lag_start * (1 + GROWTH_LIMIT) + LAG_SLACK_MS
    errors = tally.error_count + tally.error_events + server_log_errors
    start_name = "after warm-up"
    rows = [
        Row("server RSS, quiet", "MiB", end.rss_mib, start.rss_mib, start_name, "≤ +5 %", rss_ok),
        Row(
            "server open file descriptors, quiet",
            "fds",
            end.open_files,
            start.open_files,
            start_name,
            "≤ +5 %",
            files_ok,
        ),
        Row(
            "event-loop lag p99 (/healthz round trip)",
            "ms",
            lag_end,
            lag_start,
            f"first {window:.0f} s",
            "≤ +5 % + 1 ms",
            lag_ok,
            note=f"last {window:.0f} s of the run against its first {window:.0f} s, "
            f"probe every {PROBE_GAP_S * 1000:.0f} ms during the traffic",
        ),
        Row(
            "HTTP 5xx answers",
            "count",
            tally.server_errors,
            0,
            "none",
            "0",
            not tally.server_errors,
        ),
        Row(
            "lost messages",
            "count",
            tally.lost,
            0,
            "none",
            "0",
            not tally.lost,
            note=f"of {tally.sent:,} that had to arrive: ICE candidates relayed, `turn`s, "
            "acknowledgements",
        ),
        Row("errors", "count", errors, 0, "none", "0", not errors),
    ]
    details = [{"what": kind, "count": count} for kind, count in sorted(tally.done.items())] + [
        {"what": f"HTTP {key}", "count": count} for key, count in sorted(tally.statuses.items())
    ]
    details += [
        {"what": "client-side failures", "count": tally.error_count},
        {"what": "`error` events and refused acknowledgements", "count": tally.error_events},
        {"what": "server log ERROR lines / tracebacks", "count": server_log_errors},
        {"what": "server log ERROR lines during the warm-up", "count": log_before},
        {"what": "server CPU, % of one core", "count": round(cpu["server"], 1)},
        {"what": "RSS before any traffic, MiB", "count": round(before_traffic.rss_mib, 1)},
        {"what": "open fds before any traffic", "count": before_traffic.open_files},
    ]
    details += [
        {"what": f"RSS under traffic at {at:.0f} s, MiB", "count": round(mib, 1)}
        for at, mib in tally.rss
    ]
    met = all(row.met for row in rows)
    return {
        "title": "Soak: mixed traffic, growth and errors over the run",
        "status": "ok" if met else "failed",
        "params": {
            "duration_s": seconds,
            "warm-up_s": warmup,
            "assistance loops": ASSIST_LOOPS,
            "candidates per assistance": CANDIDATES_PER_SESSION,
        },
        "rows": [row.as_dict() for row in rows],
        "details": details,
        "errors_seen": tally.errors,
    }
