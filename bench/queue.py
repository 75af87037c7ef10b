"""Drop-in queue fan-out against the real server (SQLite), beside a baseline in the same run.

50 volunteers watch the queue (real python-socketio clients on `/queue` with their login cookie)
while 500+ people wait (made through ``server.dropin.join``). A person leaves through the real form
(``POST /aide/quitter`` with their `vp_queue` cookie and a CSRF token); latency = from that request
being sent to each volunteer receiving the `queue` push whose ``total`` reflects it (one clock:
both ends live in this process). Changes are spaced so pushes do not coalesce, first with no
waiting page connected, then with every waiting page connected (each push then also sends a
`position` to each of them), then in bursts of simultaneous leaves. Baseline:
``bench/raw_fanout.py``, a bare python-socketio server broadcasting a real `queue` payload of ours
(same frame size) to 50 identical clients in a room on ``POST /change``, measured the same way,
interleaved change by change with ours.

take-next under contention is ``bench/take_next.py`` (benchmark ``take``).

Waiting pages are spoken to by hand (Engine.IO v4 / Socket.IO v5 over aiohttp, as in
``bench/wsclient.py``): 500 full python-socketio clients would cost this process more CPU than the
50 volunteers being timed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import time as wall_time
from datetime import timedelta
from typing import Any

import aiohttp
import socketio
from aiohttp import WSMsgType
from sqlalchemy import func, select

from bench.context import BenchEnv, Row, percentile
from bench.fixtures import Fixtures
from bench.procs import CpuMeter, ServerProcess, cpu_seconds, free_port
from bench.wsclient import ENGINEIO_PATH, ws_url
from server import accounts, motifs
from server.dropin import places as dropin
from server.dropin.board import QueueBoard, apply_queue_delta, queue_delta
from server.passes import CSRF_COOKIE, LOGIN_COOKIE, QUEUE_COOKIE
from server.settings import Settings
from server.store.models import (
    Association,
    Availability,
    QueueEntry,
    Role,
    User,
    utcnow,
)
from server.tokens import csrf_token
from signaling.dropin import COALESCE_SECONDS, NAMESPACE


@dataclass(frozen=True)
class Sizes:
    """How much load one run puts on the server."""

    volunteers: int  # watching the queue during the fan-out
    waiting: int  # people waiting at the end of the fan-out
    spaced: int  # spaced changes per fan-out phase (and as many on the baseline)
    bursts: int
    burst_size: int
    pages: int  # waiting pages open during the second fan-out phase and the bursts


# Pages: 200 is the server's default queue_max_waiting. Opening all 500+ pages took 99 s on a
# busy 2-core machine (each connection makes the server push the whole queue), more than the
# benchmark's time budget: see BENCHMARKS.md, Findings.
FULL = Sizes(50, 500, spaced=15, bursts=2, burst_size=20, pages=200)
QUICK = Sizes(50, 100, spaced=10, bursts=2, burst_size=10, pages=50)
CPU_TARGET = 2.0  # issue 13: server CPU per change ≤ 2× the bare broadcast of the same delta
LOGIN_TTL = timedelta(hours=2)
FIRST_NAMES = ("Marie", "Mohamed", "Nathalie", "Jean", "Fatou", "Élodie", "Karim", "Josiane")
CONNECT_CONCURRENCY = 16
CHANGE_TIMEOUT_S = 10.0
GAP_S = 0.1  # after a change is fully delivered; > 0: the next change starts a new push
SETTLE_S = 0.3  # no push for this long: the queue is quiet
JOIN_BATCH = 100


# -- Data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Volunteer:
    """A volunteer account of the association and its login cookie."""

    user_id: int
    cookie: str


@dataclass(frozen=True)
class Person:
    """A place in the queue and the token the person's browser holds."""

    entry_id: str
    token: str


@dataclass(frozen=True)
class QueueData:
    """The association whose queue is measured, its volunteers and motifs."""

    association_id: int
    volunteers: list[Volunteer]
    motif_ids: list[int]
    availabilities: int


async def prepare(
    fixtures: Fixtures, count: int, association_name: str = "", tag: str = ""
) -> QueueData:
    """Volunteers with a login session each; the first holds a permanence all week (open).
    Of the fixtures' association, or of ``association_name`` (made if needed); ``tag`` keeps
    the e-mail addresses of several calls apart."""
    assert fixtures.volunteer is not None
    association_id = fixtures.volunteer.association_id
    async with fixtures.sessionmaker.begin() as db:
        if association_name:
            association_id = (await accounts.get_or_create_association(db, association_name)).id
        association = await db.get_one(Association, association_id)
        motif_ids = [m.id for m in await motifs.ensure_default_motifs(db, association_id)]
        volunteers = []
        for index in range(count):
            user = await accounts.create_user(
                db,
                association=association,
                email=f"file{tag}{index}@bench.invalid",
                name=f"Bénévole file {index}",
                role=Role.VOLUNTEER,
                password=None,
            )
            if index == 0:
                # As tests/test_dropin.py's open_all_week: add_availability stops at 23:55.
                for weekday in range(7):
                    db.add(
                        Availability(
                            volunteer_id=user.id,
                            weekday=weekday,
                            start_time=wall_time(0, 0),
                            end_time=wall_time(23, 59, 59),
                            timezone="Europe/Paris",
                        )
                    )
            token = await accounts.open_login_session(db, user, LOGIN_TTL)
            volunteers.append(Volunteer(user.id, f"{LOGIN_COOKIE}={token}"))
        await db.flush()
        availabilities = await db.scalar(
            select(func.count())
            .select_from(Availability)
            .join(User, User.id == Availability.volunteer_id)
            .where(User.association_id == association_id)
        )
    return QueueData(association_id, volunteers, motif_ids, int(availabilities or 0))


async def join(fixtures: Fixtures, data: QueueData, count: int) -> list[Person]:
    """``count`` people join through the domain, one transaction each, first in line first.

    The server refuses joins past ``queue_max_waiting`` (200 by default); the issue asks for
    500 waiting, so these joins pass a copy of the settings with the cap lifted."""
    settings = fixtures.settings.model_copy(update={"queue_max_waiting": 1_000_000})
    people: list[Person] = []
    started = time.perf_counter()
    while len(people) < count:
        # JOIN_BATCH joins per transaction: each join is unchanged, only the commits are fewer.
        async with fixtures.sessionmaker.begin() as db:
            for index in range(len(people), min(count, len(people) + JOIN_BATCH)):
                joined = await dropin.join(
                    db,
                    settings,
                    data.association_id,
                    data.motif_ids[index % len(data.motif_ids)],
                    FIRST_NAMES[index % len(FIRST_NAMES)],
                    None,
                    utcnow(),
                )
                people.append(Person(joined.entry.id, joined.token))
    _progress(f"{count} people joined through the domain", started)
    return people


async def post_leave(
    http: aiohttp.ClientSession, base_url: str, seed: str, form: dict[str, str], person: Person
) -> int:
    """The person leaves through the real form (``POST /aide/quitter``); the HTTP status."""
    cookie = f"{CSRF_COOKIE}={seed}; {QUEUE_COOKIE}={person.token}"
    async with http.post(base_url + "/aide/quitter", data=form, headers={"Cookie": cookie}) as resp:
        await resp.read()
        return resp.status


def leave_form(settings: Settings) -> tuple[str, dict[str, str]]:
    """A CSRF cookie seed and the form that goes with it, for ``post_leave``."""
    seed = secrets.token_urlsafe(24)
    return seed, {"csrf_token": csrf_token(settings.secret_key.get_secret_value(), seed)}


def _progress(what: str, started: float) -> None:
    print(f"  {what}: {time.perf_counter() - started:.1f} s", flush=True)


async def leave_all(fixtures: Fixtures, data: QueueData) -> None:
    """Close every place still waiting (through the domain), so the next phase starts empty."""
    async with fixtures.sessionmaker.begin() as db:
        ids = await dropin.waiting_ids(db, data.association_id)
        for entry_id in ids:
            await dropin.leave(db, entry_id, utcnow())


async def _until_pages_forgotten(env: BenchEnv, data: QueueData) -> None:
    """After closing the waiting pages: the server has handled every disconnection (a server-side
    database write per page, which would otherwise land in the next phase): poll the rows."""
    async with asyncio.timeout(60):
        while True:
            async with env.fixtures.sessionmaker() as db:
                present = await db.scalar(
                    select(func.count())
                    .select_from(QueueEntry)
                    .where(
                        QueueEntry.association_id == data.association_id,
                        QueueEntry.waiting_sid.is_not(None),
                    )
                )
            if not present:
                return
            await asyncio.sleep(0.2)


# -- Clients ------------------------------------------------------------------------------------


class Fleet:
    """Every client of one server; wakes whoever waits for a delivery."""

    def __init__(self) -> None:
        self.watchers: list[Watcher] = []
        self.pages: list[Page] = []
        self.delivered = asyncio.Event()

    def notify(self) -> None:
        """Something arrived."""
        self.delivered.set()

    async def wait_for(self, done: Callable[[], bool], seconds: float) -> bool:
        """Wait until ``done()`` (checked on every delivery); False on timeout."""
        try:
            async with asyncio.timeout(seconds):
                while not done():
                    self.delivered.clear()
                    await self.delivered.wait()
        except TimeoutError:
            return False
        return True

    async def settle(self) -> None:
        """Wait until no push has arrived for SETTLE_S."""
        while True:
            self.delivered.clear()
            try:
                async with asyncio.timeout(SETTLE_S):
                    await self.delivered.wait()
            except TimeoutError:
                return

    async def close(self) -> None:
        """Disconnect everyone."""
        await asyncio.gather(*(w.close() for w in self.watchers), *(p.close() for p in self.pages))
        self.watchers, self.pages = [], []


class Watcher:
    """A volunteer's `/file` page socket: a real python-socketio client stamping each push.

    It keeps the list as the page does: the whole `queue`, then each `queue_delta` applied
    (``apply_queue_delta``); a gap in the versions is counted and answered with `queue_sync`.
    The bare broadcaster's clients get the same frames and do the same work."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.client: Any = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self.pushes: list[tuple[int, int]] = []  # (receive time ns, total)
        self.total: int | None = None
        self.last: dict[str, Any] = {}  # the list as it stands
        self.gaps = 0
        self.delta_bytes: list[int] = []  # each `queue_delta` frame's size
        self.base_url = ""  # the server (node) it is connected to
        self.client.on("queue", self._on_queue, namespace=NAMESPACE)
        self.client.on("queue_delta", self._on_delta, namespace=NAMESPACE)

    async def _on_queue(self, payload: dict[str, Any]) -> None:
        self._stamp(payload)

    async def _on_delta(self, delta: dict[str, Any]) -> None:
        if self.last and delta["version"] <= self.last["version"]:
            return
        self.delta_bytes.append(frame_bytes("queue_delta", delta))
        if not self.last or delta["base"] != self.last["version"]:
            self.gaps += 1
            await self.client.emit("queue_sync", {}, namespace=NAMESPACE)
            return
        self._stamp(apply_queue_delta(self.last, delta))

    def _stamp(self, view: dict[str, Any]) -> None:
        now = time.perf_counter_ns()
        self.total = int(view["total"])
        self.pushes.append((now, self.total))
        self.last = view
        self.fleet.notify()

    async def connect(self, base_url: str, cookie: str | None) -> None:
        """Open the socket (websocket transport only, like a browser that can)."""
        self.base_url = base_url
        await self.client.connect(
            base_url,
            headers={"Cookie": cookie} if cookie else {},
            namespaces=[NAMESPACE],
            transports=["websocket"],
            wait_timeout=10,
        )

    def first_reflecting(self, since_ns: int, total: int) -> int | None:
        """Receive time of the first push after ``since_ns`` whose total is ``total`` or less."""
        for received, seen in self.pushes:
            if received >= since_ns and seen <= total:
                return received
        return None

    async def close(self) -> None:
        """Disconnect."""
        await self.client.disconnect()


EVENT_PREFIX = f"42{NAMESPACE},"


def frame_bytes(event: str, payload: dict[str, Any]) -> int:
    """Bytes of the Socket.IO text frame carrying this event (as python-socketio encodes it)."""
    return len((EVENT_PREFIX + json.dumps([event, payload], separators=(",", ":"))).encode())


POSITION_PREFIX = EVENT_PREFIX + '["position",'


class Page:
    """A waiting person's page socket, spoken by hand: pings answered, `position` stamped."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, fleet: Fleet) -> None:
        self.ws = ws
        self.fleet = fleet
        self.positions: list[tuple[int, int]] = []  # (receive time ns, total)
        self.total: int | None = None
        self.removed = False
        self.frame_bytes = 0
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                data: str = message.data
                if data.startswith(POSITION_PREFIX):
                    now = time.perf_counter_ns()
                    self.total = int(json.loads(data[len(EVENT_PREFIX) :])[1]["total"])
                    self.positions.append((now, self.total))
                    self.frame_bytes = len(data.encode())
                    self.fleet.notify()
                elif data.startswith(EVENT_PREFIX + '["removed"'):
                    self.removed = True
                elif data == "2":
                    await self.ws.send_str("3")
                elif data.startswith(f"40{NAMESPACE},") and not self.connected.done():
                    self.connected.set_result(None)
                elif data.startswith(f"44{NAMESPACE},") and not self.connected.done():
                    self.connected.set_exception(ConnectionError(data))
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            if not self.connected.done():
                self.connected.set_exception(ConnectionError("closed before connecting"))

    def first_reflecting(self, since_ns: int, total: int) -> int | None:
        """Receive time of the first `position` after ``since_ns`` with this total or less."""
        for received, seen in self.positions:
            if received >= since_ns and seen <= total:
                return received
        return None

    async def close(self) -> None:
        """Close the WebSocket and wait for the reader."""
        await self.ws.close()
        await self._reader


async def _connect_page(
    http: aiohttp.ClientSession, base_url: str, person: Person | None, fleet: Fleet
) -> Page:
    """A waiting page on our server (``person``'s cookie) or on the bare one (``None``)."""
    ws = await http.ws_connect(
        ws_url(base_url) + ENGINEIO_PATH,
        headers={"Cookie": f"{QUEUE_COOKIE}={person.token}"} if person else {},
        autoping=False,
        compress=0,
        max_msg_size=1 << 20,
    )
    opening = await ws.receive()
    if opening.type is not WSMsgType.TEXT or not opening.data.startswith("0{"):
        await ws.close()
        raise ConnectionError(f"no Engine.IO open packet: {opening!r}")
    page = Page(ws, fleet)
    await ws.send_str(f"40{NAMESPACE}," + ("" if person else '{"page":true}'))
    async with asyncio.timeout(30):
        await page.connected
    return page


async def _bounded(coros: Iterable[Awaitable[Any]], limit: int) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[Any]) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def watchers(fleet: Fleet, clients: Iterable[tuple[str, str | None]]) -> None:
    """Connect one volunteer page per (server URL, cookie) to ``fleet``."""

    async def one(base_url: str, cookie: str | None) -> None:
        watcher = Watcher(fleet)
        await watcher.connect(base_url, cookie)
        fleet.watchers.append(watcher)

    await _bounded((one(url, c) for url, c in clients), CONNECT_CONCURRENCY)


# -- Fan-out ------------------------------------------------------------------------------------


@dataclass
class Change:
    """One measured change and what it cost."""

    volunteer_ns: list[int]  # one per volunteer delivery
    missing: int  # volunteers that never got it
    sent_ns: int = 0  # when the change was sent
    expected: int = 0  # the total it leaves
    pages_ns: int | None = None  # until the last waiting page had its new position
    pushes: list[int] = field(default_factory=list)  # pushes per volunteer during a burst
    status_errors: int = 0


@dataclass
class Target:
    """One server of the fan-out and how to make a change on it."""

    name: str
    fleet: Fleet
    send: Callable[[int], Awaitable[int]]  # the change number → HTTP status
    total: int  # the total every client should now see
    changes: list[Change] = field(default_factory=list)
    processes: tuple[str, ...] = ()  # whose CPU counts (names of the pids); () = ``name``
    cpu_s: float = 0.0
    client_s: float = 0.0  # this process, during the phases (every server's clients)
    other_s: float = 0.0
    wall_s: float = 0.0

    def reset(self) -> None:
        """Forget the changes and CPU of the last phase."""
        self.changes = []
        self.cpu_s = self.client_s = self.other_s = self.wall_s = 0.0


async def _change(target: Target, count: int, first: int, pages: Sequence[Page]) -> Change:
    """``count`` simultaneous changes (1 = spaced); latency until every client reflects all."""
    fleet = target.fleet
    expected = target.total - count
    before = [len(w.pushes) for w in fleet.watchers]
    sent = time.perf_counter_ns()
    statuses = asyncio.gather(*(target.send(first + i) for i in range(count)))

    def everyone() -> bool:
        return all(w.total is not None and w.total <= expected for w in fleet.watchers) and all(
            p.removed or (p.total is not None and p.total <= expected) for p in pages
        )

    await fleet.wait_for(everyone, CHANGE_TIMEOUT_S)
    codes = await statuses
    target.total = expected
    received = [w.first_reflecting(sent, expected) for w in fleet.watchers]
    change = Change(
        volunteer_ns=[r - sent for r in received if r is not None],
        missing=sum(1 for r in received if r is None),
        sent_ns=sent,
        expected=expected,
        pushes=[len(w.pushes) - b for w, b in zip(fleet.watchers, before, strict=True)],
        status_errors=sum(1 for code in codes if code != 200),
    )
    live = [p.first_reflecting(sent, expected) for p in pages if not p.removed]
    if pages:
        change.pages_ns = None if None in live else max(r for r in live if r is not None) - sent
    await asyncio.sleep(GAP_S)
    return change


async def interleaved(
    targets: Sequence[Target],
    rounds: int,
    count: int,
    pages: dict[str, list[Page]],
    pids: dict[str, int],
) -> None:
    """``rounds`` changes of ``count`` on each server, alternating, so that a busy moment of the
    machine weighs on both alike. CPU is read over the whole phase (/proc ticks are 10 ms): each
    server is idle while the other one works. Called again, it adds to the targets' CPU (the
    cluster benchmark alternates blocks of changes whose processes are the same)."""
    meter, started = CpuMeter(pids), time.perf_counter()
    for _round in range(rounds):
        for target in targets:
            change = await _change(target, count, len(target.changes) * count, pages[target.name])
            target.changes.append(change)
    cpu = meter.stop()
    wall = time.perf_counter() - started
    for target in targets:
        target.cpu_s += sum(cpu[name] for name in target.processes or (target.name,)) / 100 * wall
        target.client_s += cpu["bench client"] / 100 * wall
        target.other_s += cpu["other"] / 100 * wall
        target.wall_s += wall


def _ms(values_ns: Iterable[int | None]) -> list[float]:
    return sorted(v / 1e6 for v in values_ns if v is not None)


def summary(phase: str, target: Target) -> dict[str, Any]:
    changes, cpu_s = target.changes, target.cpu_s
    latencies = _ms(v for c in changes for v in c.volunteer_ns)
    first = _ms(min(c.volunteer_ns) for c in changes if c.volunteer_ns)
    pages = _ms(c.pages_ns for c in changes)
    return {
        "phase": phase,
        "server": target.name,
        "changes": len(changes),
        "first_p50_ms": percentile(first, 50),
        "first_p99_ms": percentile(first, 99),
        "client_cpu_pct": target.client_s / max(target.wall_s, 1e-9) * 100,
        "other_cpu_pct": target.other_s / max(target.wall_s, 1e-9) * 100,
        "deliveries": len(latencies),
        "missing": sum(c.missing for c in changes),
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "all_pages_p50_ms": percentile(pages, 50) if pages else None,
        "all_pages_p99_ms": percentile(pages, 99) if pages else None,
        "pushes_per_volunteer": (
            sum(sum(c.pushes) for c in changes) / max(1, sum(len(c.pushes) for c in changes))
        ),
        "server_cpu_ms_per_change": cpu_s / max(1, len(changes)) * 1000,
        "http_errors": sum(c.status_errors for c in changes),
    }


async def _fanout(
    env: BenchEnv, data: QueueData, sizes: Sizes, raw: ServerProcess
) -> dict[str, Any]:
    """Spaced changes without then with waiting pages connected, then bursts; ours vs raw."""
    extra = 3 * sizes.spaced + sizes.bursts * sizes.burst_size
    people = await join(env.fixtures, data, sizes.waiting + extra)
    seed, form = leave_form(env.fixtures.settings)
    ours_fleet, raw_fleet = Fleet(), Fleet()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:

        async def leave(number: int) -> int:
            # People leave in queue order: each change also changes the list volunteers see.
            return await post_leave(http, env.server.url, seed, form, people[ahead + number])

        async def raw_change(_number: int) -> int:
            async with http.post(raw.url + "/change", data=form) as resp:
                await resp.read()
                return resp.status

        try:
            # 0: the same leaves with nobody watching: what the write costs without its push.
            ahead = 0
            alone = Target("ours", Fleet(), leave, len(people))
            main_before = cpu_seconds(env.server.pid, thread=env.server.pid)
            await interleaved((alone,), sizes.spaced, 1, {"ours": []}, {"ours": env.server.pid})
            write_cpu_ms = alone.cpu_s / max(1, len(alone.changes)) * 1000
            # The event loop's thread apart from the others (aiosqlite runs each SQLite
            # connection on a thread of its own): Python on the loop vs SQLite itself.
            write_loop_ms = (
                (cpu_seconds(env.server.pid, thread=env.server.pid) - main_before)
                / max(1, len(alone.changes))
                * 1000
            )
            ahead = sizes.spaced
            started = time.perf_counter()
            await watchers(ours_fleet, ((env.server.url, v.cookie) for v in data.volunteers))
            await watchers(raw_fleet, ((raw.url, None) for _ in data.volunteers))
            connect_s = time.perf_counter() - started
            total = len(people) - ahead
            if not await ours_fleet.wait_for(
                lambda: all(w.total == total for w in ours_fleet.watchers), CHANGE_TIMEOUT_S
            ):
                raise RuntimeError("volunteers never saw the prepared queue")
            await ours_fleet.settle()
            payload = ours_fleet.watchers[0].last
            template = leave_delta(payload)
            body = json.dumps({"queue": payload, "delta": template})
            async with http.post(raw.url + "/payload", data=body) as resp:
                assert resp.status == 200, await resp.text()
            if not await raw_fleet.wait_for(
                lambda: all(w.total == total for w in raw_fleet.watchers), CHANGE_TIMEOUT_S
            ):
                raise RuntimeError("the bare clients never got the list")
            ours = Target("ours", ours_fleet, leave, total)
            baseline = Target("raw", raw_fleet, raw_change, total)
            pids = {"ours": env.server.pid, "raw": raw.pid}
            no_pages: dict[str, list[Page]] = {"ours": [], "raw": []}
            summaries = []

            _progress("volunteers connected to both servers", started)
            started = time.perf_counter()
            # A: nobody's waiting page is open (e.g. pages gone to the background).
            await interleaved((baseline, ours), sizes.spaced, 1, no_pages, pids)
            summaries += [summary("spaced, no waiting page open", t) for t in (baseline, ours)]
            for t in (baseline, ours):
                t.reset()

            ours_delta_bytes = sorted(b for w in ours_fleet.watchers for b in w.delta_bytes)
            _progress("spaced changes, no page open", started)
            # B: every waiting page is open and gets its `position` on each push.
            started = time.perf_counter()
            # Pages of the people next in line (the leavers of phases B and C among them).
            remaining = people[ahead + sizes.spaced : ahead + sizes.spaced + sizes.pages]
            pages = await _bounded(
                (_connect_page(http, env.server.url, p, ours_fleet) for p in remaining),
                CONNECT_CONCURRENCY,
            )
            ours_fleet.pages = pages
            pages_connect_s = time.perf_counter() - started
            raw_pages = await _bounded(
                (_connect_page(http, raw.url, None, raw_fleet) for _ in remaining),
                CONNECT_CONCURRENCY,
            )
            raw_fleet.pages = raw_pages
            _progress(f"{len(pages)} waiting pages connected", started)
            started = time.perf_counter()
            await ours_fleet.settle()
            with_pages = {"ours": pages, "raw": raw_pages}
            ours.changes = []
            ours.send = lambda n: leave(sizes.spaced + n)
            await interleaved((baseline, ours), sizes.spaced, 1, with_pages, pids)
            summaries += [
                summary(f"spaced, {len(pages)} waiting pages open", t) for t in (baseline, ours)
            ]
            for t in (baseline, ours):
                t.reset()

            _progress("spaced changes, pages open", started)
            started = time.perf_counter()
            # C: bursts of simultaneous leaves (pages open); latency to the push showing all.
            ours.send = lambda n: leave(2 * sizes.spaced + n)
            await interleaved((baseline, ours), sizes.bursts, sizes.burst_size, with_pages, pids)
            summaries += [
                summary(f"bursts of {sizes.burst_size} leaves", t) for t in (baseline, ours)
            ]
            _progress("bursts", started)
            position_bytes = max((p.frame_bytes for p in pages), default=0)
            waiting_at_end = ours.total
            reads_ms = await _push_reads(env, data)
            everyone_bytes = await _whole_list_bytes(env, data, people_shown=sizes.waiting)
            gaps = sum(w.gaps for w in (*ours_fleet.watchers, *raw_fleet.watchers))
        finally:
            await leave_all(env.fixtures, data)
            await ours_fleet.close()
            await raw_fleet.close()
        await _until_pages_forgotten(env, data)
    return {
        "summaries": summaries,
        "queue_frame_bytes": frame_bytes("queue", payload),
        "delta_frame_bytes": percentile(ours_delta_bytes, 50),
        "raw_delta_frame_bytes": frame_bytes("queue_delta", template),
        "everyone_frame_bytes": everyone_bytes,
        "gaps": gaps,
        "write_cpu_ms": write_cpu_ms,
        "write_loop_ms": write_loop_ms,
        "position_frame_bytes": position_bytes,
        "waiting_start": len(people),
        "waiting_end": waiting_at_end,
        "pages": len(pages),
        "connect_s": round(connect_s, 2),
        "pages_connect_s": round(pages_connect_s, 2),
        "push_reads_ms": reads_ms,
    }


def leave_delta(view: dict[str, Any]) -> dict[str, Any]:
    """The `queue_delta` of the first person shown leaving while more wait than are shown: they
    go, the next one unseen joins the list's end (a person like the last one shown)."""
    after = dict(view)
    newcomer = {**view["waiting"][-1], "id": str(uuid.uuid4())}
    after["waiting"] = [*view["waiting"][1:], newcomer]
    after["total"] = view["total"] - 1
    after["version"] = view["version"] + 1
    return queue_delta(view, after)


async def _whole_list_bytes(env: BenchEnv, data: QueueData, people_shown: int) -> int:
    """Bytes of a `queue` frame that would show everyone waiting (``people_shown`` of them,
    as the board builds it): what sending the whole queue, not its first 50, would cost."""
    board = QueueBoard(env.fixtures.sessionmaker, env.fixtures.settings)
    async with env.fixtures.sessionmaker() as db:
        snap = await dropin.snapshot(db, data.association_id, limit=people_shown)
        facts = await board.facts(db, data.association_id)
    view = board.volunteer_view(
        snap, facts, [(v.user_id, "Bénévole") for v in data.volunteers], utcnow()
    )
    return frame_bytes("queue", {**view, "version": 1})


async def _push_reads(env: BenchEnv, data: QueueData) -> float:
    """Median time of the database reads one push makes (``QueueHub.push``: the snapshot and the
    waiting ids; opening hours and handling time are cached), done here through the domain
    against the same database."""
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        async with env.fixtures.sessionmaker() as db:
            await dropin.snapshot(db, data.association_id)
        async with env.fixtures.sessionmaker() as db:
            await dropin.waiting_ids(db, data.association_id)
        timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)[len(timings) // 2]


# -- Report -------------------------------------------------------------------------------------


def _fanout_rows(fan: dict[str, Any]) -> list[Row]:
    by = {(s["phase"], s["server"]): s for s in fan["summaries"]}
    phases = list(dict.fromkeys(s["phase"] for s in fan["summaries"]))
    raw_name = "bare python-socketio broadcast"
    rows: list[Row] = []
    window = COALESCE_SECONDS * 1000
    for phase in phases:
        ours, raw = by[(phase, "ours")], by[(phase, "raw")]
        burst = phase.startswith("bursts")
        what = "burst → push showing all" if burst else "change → push"
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            rows.append(
                Row(
                    f"{what}, {label} ({phase})",
                    "ms",
                    ours[key],
                    raw[key],
                    raw_name,
                    note=f"ours includes the {window:g} ms coalescing window (signaling/dropin.py)",
                )
            )
        if not burst:
            rows.append(
                Row(
                    f"change → first volunteer's push, p50 ({phase})",
                    "ms",
                    ours["first_p50_ms"],
                    raw["first_p50_ms"],
                    raw_name,
                    note="the earliest of the 50 deliveries of each change: server time plus one "
                    "client's decoding, without the other 49 clients' decoding in this process",
                )
            )
            rows.append(
                Row(
                    f"change → push p50 minus the {window:g} ms window ({phase})",
                    "ms",
                    ours["p50_ms"] - window,
                    raw["p50_ms"],
                    raw_name,
                )
            )
        cpu, raw_cpu = ours["server_cpu_ms_per_change"], raw["server_cpu_ms_per_change"]
        rows.append(
            Row(
                f"server CPU per change ({phase})",
                "ms",
                cpu,
                raw_cpu,
                raw_name,
                target=f"≤ {CPU_TARGET:g}×",
                met=cpu <= CPU_TARGET * raw_cpu,
                note="ours: the leave itself (HTTP form, write transaction, statistics event) "
                "and its push; bare: a form read and the broadcast of the same delta"
                + ("; both send each open waiting page its `position`" if "pages" in phase else ""),
            )
        )
        if not burst:
            rows.append(
                Row(
                    f"server CPU per change minus the leave alone ({phase})",
                    "ms",
                    cpu - fan["write_cpu_ms"],
                    raw_cpu,
                    raw_name,
                    note=f"the push's share: ours minus {fan['write_cpu_ms']:.1f} ms, the same "
                    "leaves measured with nobody watching (first phase, no push is read)",
                )
            )
        if ours["all_pages_p50_ms"] is not None:
            rows.append(
                Row(
                    f"change → last waiting page's position, p99 ({phase})",
                    "ms",
                    ours["all_pages_p99_ms"],
                    raw["all_pages_p99_ms"],
                    raw_name,
                    note="the bare server sends each of as many pages its own `position` "
                    "frame, one emit per socket",
                )
            )
        rows.append(
            Row(
                f"volunteer deliveries missing ({phase})",
                "deliveries",
                ours["missing"],
                raw["missing"],
                raw_name,
                target="= 0",
                met=ours["missing"] == 0 and ours["http_errors"] == 0,
            )
        )
    waiting = fan["waiting_end"]
    rows += [
        Row(
            "server CPU per leave, nobody watching (no push)",
            "ms",
            fan["write_cpu_ms"],
            None,
            "",
            note="POST /aide/quitter: CSRF, the place's row, its write transaction and "
            f"statistics event, the page it answers; {fan['write_loop_ms']:.1f} ms of it on the "
            "event loop's thread (the /proc ticks of a 15-leave phase: ±0.7 ms), the rest on "
            "SQLite's connection threads",
        ),
        Row(
            f"`queue_delta` frame, one person leaves ({fan['waiting_start']}+ waiting)",
            "bytes",
            fan["delta_frame_bytes"],
            fan["queue_frame_bytes"],
            "the whole `queue` frame, 50 people shown",
            note="p50 of the deltas our volunteers got in the first phase; the bare "
            f"broadcaster sends {fan['raw_delta_frame_bytes']:,} bytes (same shape)",
        ),
        Row(
            f"whole `queue` frame if it showed all {waiting} waiting",
            "bytes",
            fan["everyone_frame_bytes"],
            fan["queue_frame_bytes"],
            "the whole `queue` frame, 50 people shown",
            note="not sent: what 500 waiting people would cost on every change without deltas "
            "and the 50-person cap",
        ),
        Row(
            "version gaps seen by the volunteers' pages",
            "gaps",
            fan["gaps"],
            0,
            "none expected",
            target="= 0",
            met=fan["gaps"] == 0,
        ),
    ]
    return rows


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Start the bare broadcaster, measure the fan-out."""
    sizes = QUICK if env.quick else FULL
    data = await prepare(env.fixtures, sizes.volunteers)
    log_dir = env.server.log_path.parent
    raw = ServerProcess(
        "bare python-socketio broadcaster",
        [sys.executable, "-m", "bench.raw_fanout", "--port", str(port := free_port())],
        env.server.env,
        port,
        log_dir / f"{env.server.log_path.stem.removesuffix('-server')}-raw-fanout.log",
    )
    await raw.start("/healthz")
    try:
        fan = await _fanout(env, data, sizes, raw)
    finally:
        await raw.stop()
    env.server.check_alive()
    details: list[dict[str, Any]] = [
        {
            "phase": s["phase"],
            "server": s["server"],
            "ops": s["changes"],
            "volunteer_deliveries": s["deliveries"],
            "first_p50_ms": s["first_p50_ms"],
            "p50_ms": s["p50_ms"],
            "p90_ms": s["p90_ms"],
            "p99_ms": s["p99_ms"],
            "max_ms": s["max_ms"],
            "pages_p99_ms": s["all_pages_p99_ms"],
            "pushes_per_volunteer": s["pushes_per_volunteer"],
            "server_cpu": f"{s['server_cpu_ms_per_change']:.1f} ms/change",
            "client_cpu_pct": s["client_cpu_pct"],
            "other_cpu_pct": s["other_cpu_pct"],
        }
        for s in fan["summaries"]
    ]
    return {
        "title": "Drop-in queue: fan-out to volunteers (SQLite)",
        "status": "ok",
        "params": {
            "volunteers_watching": len(data.volunteers),
            "waiting": f"{fan['waiting_start']} → {fan['waiting_end']} during the fan-out",
            "waiting_pages_open": fan["pages"],
            "spaced_changes": f"{sizes.spaced} per phase and server, {GAP_S * 1000:g} ms apart",
            "bursts": f"{sizes.bursts} × {sizes.burst_size} simultaneous leaves",
            "position_frame_bytes": fan["position_frame_bytes"],
            "availability_rows": data.availabilities,
            "connect_s": fan["connect_s"],
            "pages_connect_s": fan["pages_connect_s"],
            "push_db_reads_ms": fan["push_reads_ms"],
            "client": "python-socketio AsyncClient per volunteer; waiting pages by hand",
        },
        "fanout": fan,
        "rows": [row.as_dict() for row in _fanout_rows(fan)],
        "details": details,
    }
