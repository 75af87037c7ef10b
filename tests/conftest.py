"""Shared fixtures: a real app on an ephemeral port, a fresh database per test (SQLite, and
PostgreSQL when reachable), logged-in HTTP clients. Nothing of our own is mocked."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from server import accounts
from server.db import make_sessionmaker
from server.rights.engine import RightsEngine
from server.runtime import RIGHTS_KEY
from server.settings import Settings, load_settings
from server.store.engine import make_engine
from server.store.models import Base, Role, User
from server.web.app import create_app
from tests.peers import PeerSet

POSTGRES_URL = os.environ.get(
    "PERMANENCE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
ARTIFACTS = Path(__file__).parent / "artifacts"
PASSWORD = "correct horse battery staple"


def _postgres_reachable() -> str | None:
    """None if PostgreSQL answers, else the reason it does not."""
    url = make_url(POSTGRES_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            return None
    except OSError as exc:
        return f"PostgreSQL not reachable at {url.host}:{url.port}: {exc}"


PG_UNREACHABLE = _postgres_reachable()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test run, schema created once."""
    if PG_UNREACHABLE:
        pytest.skip(PG_UNREACHABLE)
    name = f"vp_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin_url = make_url(POSTGRES_URL)

    async def create() -> None:
        admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await admin.dispose()
        engine = make_engine(admin_url.set(database=name).render_as_string(hide_password=False))
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await engine.dispose()

    async def drop() -> None:
        admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    # Session fixtures may first be requested from inside a test's running loop: use a thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, create()).result()
    yield admin_url.set(database=name).render_as_string(hide_password=False)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, drop()).result()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database with the current schema, made once per test process: each test
    gets a copy of the file (under a millisecond) instead of creating ~40 tables (~90 ms)."""
    path = tmp_path_factory.mktemp("schema") / "template.sqlite3"

    async def create() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await engine.dispose()

    # Session fixtures may first be requested from inside a test's running loop: use a thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, create()).result()
    return path


# Empties every table and restarts every sequence in one statement: the rows of the previous test
# are few, and DELETE is several times faster than TRUNCATE's file operations on ~40 tables.
_DELETES = " ".join(f'DELETE FROM "{t.name}";' for t in reversed(Base.metadata.sorted_tables))  # noqa: S608
_RESTART_SEQUENCES = (
    "PERFORM setval(c.oid::regclass, 1, false) FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind = 'S' AND n.nspname = current_schema();"
)
_EMPTY_POSTGRES = f"DO $$ BEGIN {_DELETES} {_RESTART_SEQUENCES} END $$"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test on SQLite and on PostgreSQL."""
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A fresh, empty database with the current schema."""
    if backend == "sqlite":
        path = tmp_path / "test.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_database")
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(_EMPTY_POSTGRES))
    await engine.dispose()
    yield url


def free_port() -> int:
    """An ephemeral port (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings of the app under test: its own data dir, database and port."""
    port = free_port()
    return load_settings(
        {
            "PERMANENCE_DATA_DIR": str(tmp_path / "var"),
            "PERMANENCE_DATABASE_URL": database_url,
            "PERMANENCE_SECRET_KEY": "test-secret-key-" + "x" * 32,
            "PERMANENCE_BASE_URL": f"http://127.0.0.1:{port}",
            "PERMANENCE_TURN_URLS": "turn:127.0.0.1:3478?transport=udp",
            "PERMANENCE_TURN_SECRET": "turn-test-secret",
            "PERMANENCE_LOG_LEVEL": "WARNING",
            # One OpenFisca pool per test would cost seconds each: the rights tests share one
            # (tests/test_rights_*.py, the `rights_engine` fixture).
            "PERMANENCE_RIGHTS_WORKERS": "0",
        }
    )


@dataclass
class Running:
    """The app running on a real port, and a sessionmaker on its database."""

    app: web.Application
    server: TestServer
    base_url: str
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings

    def url(self, path: str) -> str:
        """Absolute URL on the running server."""
        return self.base_url + path


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[Running]:
    """The real application factory, served on 127.0.0.1 at the settings' port."""
    async with serve(settings) as served:
        yield served


@pytest.fixture(scope="session")
def rights_engine() -> Iterator[RightsEngine]:
    """One OpenFisca-France pool for the whole test run (it takes seconds to warm): the rights
    tests give it to their apps through ``serve(..., rights=)``."""
    engine = RightsEngine(2, timeout=60)
    engine.start_in_background()
    yield engine
    engine.shutdown()


@asynccontextmanager
async def serve(
    settings: Settings, *, rights: RightsEngine | None = None
) -> AsyncIterator[Running]:
    """The app made from these settings, on their port, until the block ends (``running`` for
    a test that needs other settings than its fixture's). ``rights``: the shared rights engine
    (``rights_engine``), which the app then uses and leaves running."""
    app = create_app(settings)
    if rights is not None:
        app[RIGHTS_KEY] = rights
    port = int(settings.base_url.rsplit(":", 1)[1])
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    engine = make_engine(settings.database_url)
    try:
        yield Running(app, server, settings.base_url, make_sessionmaker(engine, settings), settings)
    finally:
        await engine.dispose()
        await server.close()


@dataclass
class Account:
    """A created account and its password."""

    user: User
    email: str
    password: str


async def make_account(
    running: Running, email: str, role: Role = Role.VOLUNTEER, association: str = "Asso A"
) -> Account:
    """Create an account directly through the domain module."""
    async with running.sessionmaker.begin() as db:
        assoc = await accounts.get_or_create_association(db, association)
        user = await accounts.create_user(
            db,
            association=assoc,
            email=email,
            name=email.split("@")[0],
            role=role,
            password=PASSWORD,
        )
    return Account(user, email, PASSWORD)


@pytest.fixture
async def volunteer(running: Running) -> Account:
    """A volunteer of association A."""
    return await make_account(running, "camille@example.org")


@pytest.fixture
async def coordinator(running: Running) -> Account:
    """A coordinator of association A."""
    return await make_account(running, "nadia@example.org", Role.COORDINATOR)


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    """The CSRF token of the first form of a page."""
    match = CSRF_RE.search(html)
    assert match, "no csrf_token field in page"
    return match.group(1)


async def entered_room(resp: aiohttp.ClientResponse) -> None:
    """The answer to a join link, a code or a drop-in turn: the room itself (no redirect: one
    round trip less on a slow network), with the beneficiary's pass cookie."""
    text = await resp.text()
    assert resp.status == 200, (resp.status, text[:500])
    assert 'id="step-consent"' in text and '"room_url": "/b"' in text
    assert "vp_benef=" in resp.headers.get("Set-Cookie", "")


async def browser_session() -> aiohttp.ClientSession:
    """A client session that keeps cookies for 127.0.0.1 (unsafe=True allows IP hosts)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(http: aiohttp.ClientSession, running: Running, account: Account) -> None:
    """Log in through the real form, CSRF token included."""
    async with http.get(running.url("/login")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/login"),
        data={"csrf_token": token, "email": account.email, "password": account.password},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()


async def create_assistance(http: aiohttp.ClientSession, running: Running) -> str:
    """Click "Nouvelle assistance" and return the new session id."""
    async with http.get(running.url("/tableau")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url("/assistance"), data={"csrf_token": token}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        location = resp.headers["Location"]
    return location.rsplit("/", 1)[1]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client with its own cookie jar (one browser)."""
    session = await browser_session()
    yield session
    await session.close()


@pytest.fixture
async def peers(running: Running) -> AsyncIterator[PeerSet]:
    """Every Socket.IO peer a test opens, closed before the server stops."""
    async with PeerSet() as opened:
        yield opened


@pytest.fixture
async def session_id(running: Running, http: aiohttp.ClientSession, volunteer: Account) -> str:
    """A new assistance, opened by the logged-in volunteer through the real form."""
    await login(http, running, volunteer)
    return await create_assistance(http, running)
