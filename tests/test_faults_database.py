"""PostgreSQL stopped under traffic, then started again, against a throwaway cluster of our own on
a free port (the shared PostgreSQL stays untouched): pages, the API and socket events answer 503
"try again later" (Retry-After, a French page, JSON under /api/) — never a 500 and never a hang —
the pool recovers without restarting the application, and a transaction cut by the stop leaves
nothing behind."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from server import assist
from server.db import make_sessionmaker
from server.runtime import DATABASE_DOWN, RETRY_AFTER_SECONDS
from server.settings import load_settings
from server.store.engine import CannotConnect, database_unavailable, make_engine
from server.store.models import AssistanceSession, Base, StatEvent, User
from server.web.app import create_app
from signaling.dropin import NAMESPACE as QUEUE_NAMESPACE
from tests.conftest import (
    Running,
    browser_session,
    csrf_from,
    free_port,
    login,
    make_account,
)
from tests.peers import connect_peer, login_cookie, refusal

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB_TIMEOUT_SECONDS = 2.0
# A request that takes longer than this during the outage is a hang: the connect timeout and
# the pool wait are both DB_TIMEOUT_SECONDS.
REQUEST_TIMEOUT_SECONDS = 3 * DB_TIMEOUT_SECONDS + 4
WORKERS = 4
PAUSE_SECONDS = 0.05  # between two requests of one worker: steady traffic, not a flood


def _why_no_cluster() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL server binaries not found under {PG_BIN}"
    if os.geteuid() != 0:
        return "a throwaway PostgreSQL cluster is started as the postgres user: run as root"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres system user"
    return None


@dataclass
class Cluster:
    """A PostgreSQL cluster of our own on a free port: started, stopped (fast shutdown, as a
    supervisor would), started again."""

    root: Path
    port: int = field(default_factory=free_port)

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def init(self) -> None:
        """initdb with trust authentication, as the postgres user (it must own the folder)."""
        shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            [
                "runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"),
                "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back, connections closed."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database of this cluster."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One throwaway cluster for the module (initdb takes under a second)."""
    reason = _why_no_cluster()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="vp-pg-"))
    made = Cluster(root)
    try:
        made.init()
        made.start()
        yield made
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(root / "data"),
             "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


async def _create_database(cluster: Cluster) -> str:
    """A fresh database with the current schema; its URL."""
    name = f"faults_{secrets.token_hex(4)}"
    admin = create_async_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    engine = make_engine(cluster.url(name))
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await engine.dispose()
    return cluster.url(name)


@pytest.fixture
async def pg_running(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Running]:
    """The real application on the throwaway cluster, with a short database timeout."""
    url = await _create_database(cluster)
    port = free_port()
    settings = load_settings(
        {
            "PERMANENCE_DATA_DIR": str(tmp_path / "var"),
            "PERMANENCE_DATABASE_URL": url,
            "PERMANENCE_DATABASE_TIMEOUT_SECONDS": str(DB_TIMEOUT_SECONDS),
            "PERMANENCE_SECRET_KEY": "test-secret-key-" + "x" * 32,
            "PERMANENCE_BASE_URL": f"http://127.0.0.1:{port}",
            "PERMANENCE_LOG_LEVEL": "WARNING",
            "PERMANENCE_RIGHTS_WORKERS": "0",  # as the other tests (conftest `settings`)
        }
    )
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    engine = make_engine(url)
    try:
        yield Running(app, server, settings.base_url, make_sessionmaker(engine, settings), settings)
    finally:
        await engine.dispose()
        await server.close()


# --- Traffic ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One request of the traffic: which kind, when it was sent, what came back."""

    kind: str  # "page" (logged-in page), "write" (new assistance), "api" (bearer token)
    sent: float
    status: int | None  # None: no answer in time, or the connection failed
    retry_after: str | None = None
    content_type: str = ""
    body: str = ""
    location: str = ""
    error: str = ""


@dataclass
class Traffic:
    """Workers sending a steady mix of requests that all need the database."""

    running: Running
    http: aiohttp.ClientSession
    csrf: str
    outcomes: list[Outcome] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def _one(self, kind: str) -> Outcome:
        sent = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        try:
            if kind == "page":
                request = self.http.get(self.running.url("/tableau"), timeout=timeout)
            elif kind == "write":
                request = self.http.post(
                    self.running.url("/assistance"),
                    data={"csrf_token": self.csrf},
                    allow_redirects=False,
                    timeout=timeout,
                )
            else:
                request = self.http.get(
                    self.running.url("/api/v1/bookings"),
                    headers={"Authorization": "Bearer " + "n" * 43},
                    timeout=timeout,
                )
            async with request as resp:
                return Outcome(
                    kind,
                    sent,
                    resp.status,
                    resp.headers.get("Retry-After"),
                    resp.headers.get("Content-Type", ""),
                    await resp.text(),
                    resp.headers.get("Location", ""),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(kind, sent, None, error=f"{type(exc).__name__}: {exc}")

    async def worker(self, index: int) -> None:
        """Send requests in turn until stopped."""
        kinds = ("page", "write", "api")
        turn = index
        while not self.stopped.is_set():
            self.outcomes.append(await self._one(kinds[turn % len(kinds)]))
            turn += 1
            await asyncio.sleep(PAUSE_SECONDS)

    async def until(self, what: str, done: object, seconds: float) -> None:
        """Wait (polling the recorded outcomes) until ``done()`` is true."""
        assert callable(done)
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() > deadline:
                summary = [(o.kind, o.status, o.error[:60]) for o in self.outcomes[-12:]]
                raise AssertionError(f"{what}: not within {seconds} s; last outcomes {summary}")
            await asyncio.sleep(0.1)

    def since(self, moment: float, ok: bool | None = None) -> list[Outcome]:
        """Outcomes of requests sent after ``moment`` (only successes/503s if ``ok`` says)."""
        found = [o for o in self.outcomes if o.sent >= moment]
        if ok is None:
            return found
        return [o for o in found if (o.status in SUCCESS[o.kind]) == ok]


SUCCESS = {"page": {200}, "write": {303}, "api": {401}}


async def test_postgresql_stopped_mid_traffic_answers_503_then_recovers_without_a_restart(
    cluster: Cluster, pg_running: Running
) -> None:
    """While PostgreSQL is stopped every request needing it gets 503 with Retry-After (a French
    page, JSON under /api/), none a 500 and none hangs; socket events are acknowledged with
    ``unavailable`` and new socket connections refused the same way; once it is started again
    the same process serves everything, and each assistance is whole (row and statistics
    event) or absent."""
    running = pg_running
    account = await make_account(running, "camille@example.org")
    http = await browser_session()
    await login(http, running, account)
    async with http.get(running.url("/tableau")) as resp:
        traffic = Traffic(running, http, csrf_from(await resp.text()))
    cookie = login_cookie(http, running)
    queue_peer = await connect_peer(
        running, cookie=cookie, welcome=False, namespace=QUEUE_NAMESPACE
    )
    async with http.post(
        running.url("/assistance"), data={"csrf_token": traffic.csrf}, allow_redirects=False
    ) as resp:
        room = resp.headers["Location"].rsplit("/", 1)[1]
    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, room)
    join_token = assist.link_for(running.settings, session).rsplit("/", 1)[1]
    workers = [asyncio.create_task(traffic.worker(i)) for i in range(WORKERS)]
    try:
        await traffic.until("traffic flows", lambda: len(traffic.since(0, ok=True)) >= 12, 30)

        await asyncio.to_thread(cluster.stop)
        down = time.monotonic()

        def outage_seen() -> bool:
            refused = traffic.since(down, ok=False)
            return all(sum(o.kind == kind for o in refused) >= 3 for kind in SUCCESS)

        await traffic.until("503s of every kind during the outage", outage_seen, 30)

        # Socket events and connections during the outage: told, not crashed, not hanging.
        ack = await queue_peer.call("take_next", {})
        assert ack["ok"] is False and ack["code"] == "unavailable", ack
        assert ack["message"] == DATABASE_DOWN
        # A beneficiary's page reconnecting to its room (its join token, no login cookie):
        # refused with `unavailable`, which the page retries (not one of the final refusals).
        refused = await refusal(running, auth={"join_token": join_token})
        assert refused["code"] == "unavailable", refused
        assert refused["message"] == DATABASE_DOWN

        await asyncio.to_thread(cluster.start)
        up = time.monotonic()

        def recovered() -> bool:
            good = traffic.since(up, ok=True)
            return all(sum(o.kind == kind for o in good) >= 3 for kind in SUCCESS)

        await traffic.until("the pool recovers by itself", recovered, 30)
        # Once recovered, it stays so: the next requests all succeed.
        settled = time.monotonic()
        await traffic.until("traffic after recovery", lambda: len(traffic.since(settled)) >= 12, 30)
        traffic.stopped.set()
        await asyncio.gather(*workers)
        after = traffic.since(settled)
        assert all(o.status in SUCCESS[o.kind] for o in after), [
            (o.kind, o.status, o.body[:80]) for o in after if o.status not in SUCCESS[o.kind]
        ]
        ack = await queue_peer.call("take_next", {})
        assert ack.get("code") != "unavailable", ack
    finally:
        traffic.stopped.set()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await queue_peer.close()
        await http.close()

    outcomes = traffic.outcomes
    unexpected = [
        (o.kind, o.status, o.error or o.body[:120])
        for o in outcomes
        if o.status not in SUCCESS[o.kind] | {503}
    ]
    assert unexpected == [], (
        f"{len(unexpected)} request(s) neither served nor 503: {unexpected[:8]}"
    )
    unavailable = [o for o in outcomes if o.status == 503]
    assert unavailable, "the outage was never seen"
    for outcome in unavailable:
        assert outcome.retry_after == str(RETRY_AFTER_SECONDS), outcome
        if outcome.kind == "api":
            assert outcome.content_type.startswith("application/json"), outcome
            assert '"code": "database_unavailable"' in outcome.body, outcome.body
        else:
            assert outcome.content_type.startswith("text/html"), outcome
            assert DATABASE_DOWN in outcome.body, outcome.body[:500]

    # Nothing half-written: every assistance the volunteer was sent to exists, and every
    # assistance row has its statistics event (both were written in one transaction).
    created = {
        o.location.rsplit("/", 1)[1] for o in outcomes if o.kind == "write" and o.status == 303
    }
    async with running.sessionmaker() as db:
        rows = set(await db.scalars(select(AssistanceSession.id)))
        counted = set(
            await db.scalars(
                select(StatEvent.session_id).where(StatEvent.kind == "session_created")
            )
        )
    assert created <= rows
    assert rows == counted


async def test_a_transaction_cut_by_the_stop_leaves_no_partial_rows(
    cluster: Cluster, pg_running: Running
) -> None:
    """An assistance written (flushed: its row, its code, its statistics event) but not yet
    committed when PostgreSQL stops: the commit fails with an error the application recognises
    as an outage (503, not a bug), and after the restart none of its rows exist."""
    running = pg_running
    account = await make_account(running, "camille@example.org")
    db = running.sessionmaker()
    try:
        await db.begin()
        volunteer = await db.get_one(User, account.user.id)
        session = await assist.create_session(db, running.settings, volunteer)
        assert session.id
        await asyncio.to_thread(cluster.stop)
        with pytest.raises(Exception) as raised:
            await db.commit()
        assert database_unavailable(raised.value), repr(raised.value)
    finally:
        try:
            await db.close()
        except Exception as exc:  # closing a connection whose server is gone
            assert database_unavailable(exc), repr(exc)
        await asyncio.to_thread(cluster.start)
    async with running.sessionmaker() as fresh:
        sessions = await fresh.scalar(select(func.count()).select_from(AssistanceSession))
        events = await fresh.scalar(select(func.count()).select_from(StatEvent))
    assert (sessions, events) == (0, 0)


def test_only_database_connection_failures_count_as_an_outage() -> None:
    """A connection the database refused, a pool wait that timed out or a cut connection is an
    outage; a wrong statement, a file error or another service's network error is not (it stays
    a 500 and is logged as a bug)."""
    import asyncpg
    from sqlalchemy import exc as sa_exc

    assert database_unavailable(CannotConnect("ConnectionRefusedError: Connect call failed"))
    assert database_unavailable(sa_exc.TimeoutError("QueuePool limit reached"))
    closed = sa_exc.DBAPIError("SELECT 1", {}, asyncpg.InterfaceError("connection is closed"))
    assert database_unavailable(closed)
    reset = sa_exc.DBAPIError("SELECT 1", {}, Exception("driver"))
    reset.orig.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert database_unavailable(reset)
    assert not database_unavailable(ConnectionRefusedError(111, "Redis: connect call failed"))
    assert not database_unavailable(FileNotFoundError(2, "No such file"))
    assert not database_unavailable(sa_exc.ProgrammingError("SELECT nope", {}, Exception("syntax")))
    assert not database_unavailable(ValueError("bad"))
