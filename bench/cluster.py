"""Several nodes for the cluster benchmarks: a redis-server of our own on a free port, a throwaway
PostgreSQL database (created, migrated, dropped at the end), N ``python -m server.cli serve``
processes sharing both (``PERMANENCE_REDIS_URL`` set: python-socketio's ``AsyncRedisManager``,
the event bus, presence in Redis), optionally one more process on the same database *without*
Redis (one node alone, as a reference), and the benchmark data made through the domain modules
against that database (``bench/fixtures.py``).

Nothing here touches the shared Redis on 6379: the benchmark starts and stops its own.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.context import BenchEnv
from bench.fixtures import Fixtures
from bench.procs import ServerProcess, free_port, run_command
from server.settings import PREFIX, load_settings

PG_URL_ENV = "PERMANENCE_BENCH_POSTGRES_URL"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
REDIS_READY_TIMEOUT_S = 10.0


def pg_base_url() -> str:
    """The PostgreSQL server benchmarks may create databases on."""
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)


def pg_admin(url: str) -> Any:
    """An AUTOCOMMIT engine on the ``postgres`` database of ``url``'s server (CREATE/DROP)."""
    return create_async_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


@dataclass
class RedisProcess:
    """``redis-server`` on a free port of 127.0.0.1 without persistence: a restart starts empty
    (the fault tests use it too, tests/test_faults_redis.py)."""

    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """Process id (its CPU is reported next to the nodes')."""
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        """Start it and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.Redis.from_url(self.url)
        try:
            async with asyncio.timeout(REDIS_READY_TIMEOUT_S):
                while True:
                    try:
                        if await client.ping():
                            return
                    except (OSError, aioredis.ConnectionError):
                        await asyncio.sleep(0.05)  # another process: polling is the only way
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """SIGTERM, and wait until it is gone."""
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            async with asyncio.timeout(REDIS_READY_TIMEOUT_S):
                await self.process.wait()


@dataclass
class Site:
    """A running cluster: its nodes (all on Redis), the optional lone node, data on demand."""

    redis: RedisProcess
    database_url: str
    nodes: list[ServerProcess]
    single: ServerProcess | None
    fixtures: Fixtures

    def pids(self) -> dict[str, int]:
        """Every process of the site by name (``node a``, ``node b``…, ``redis``, ``single``)."""
        pids = {node.name: node.pid for node in self.nodes}
        if self.redis.process is not None:
            pids["redis"] = self.redis.pid
        if self.single is not None:
            pids[self.single.name] = self.single.pid
        return pids

    def check_alive(self) -> None:
        """Fail loudly if a node died."""
        for node in (*self.nodes, *([self.single] if self.single else [])):
            node.check_alive()


def node_name(index: int) -> str:
    """``node a``, ``node b``, …"""
    return f"node {chr(ord('a') + index)}"


async def _admin_execute(url: str, statement: str) -> None:
    admin = pg_admin(url)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await admin.dispose()


async def _create_database(base_url: str) -> str:
    name = f"bench_cluster_{os.getpid()}_{secrets.token_hex(3)}"
    await _admin_execute(base_url, f'CREATE DATABASE "{name}"')
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def _drop_database(url: str) -> None:
    name = make_url(url).database
    await _admin_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def cluster_site(env: BenchEnv, nodes: int = 2, single: bool = False) -> AsyncIterator[Site]:
    """Redis, a migrated throwaway PostgreSQL database, ``nodes`` nodes on both (and, with
    ``single``, one process on the database without Redis; ``nodes=0, single=True``: that
    process alone, no Redis started); everything stopped and dropped on the way out. Logs go
    next to the main server's (``bench/results/<stamp>-<name>.log``)."""
    # Imported here: bench.run imports the benchmark modules lazily, never this one at start.
    from bench.run import server_environment

    stamp = env.server.log_path.stem.removesuffix("-server")
    log_dir = env.server.log_path.parent
    work = Path(env.fixtures.settings.data_dir).parent / f"cluster-{secrets.token_hex(3)}"
    secret = secrets.token_urlsafe(48)  # one key for every node: cookies and links verify anywhere
    redis = RedisProcess()
    database_url = await _create_database(pg_base_url())
    processes: list[ServerProcess] = []
    fixtures: Fixtures | None = None
    try:
        if nodes:
            await redis.start()

        def process(name: str, with_redis: bool) -> ServerProcess:
            port = free_port()
            environ = server_environment(work / name.replace(" ", "-"), port)
            environ |= {
                f"{PREFIX}SECRET_KEY": secret,
                f"{PREFIX}DATABASE_URL": database_url,
                f"{PREFIX}NODE_NAME": name.replace(" ", "-"),
            }
            if with_redis:
                environ[f"{PREFIX}REDIS_URL"] = redis.url
            argv = [sys.executable, "-m", "server.cli", "serve"]
            argv += ["--host", "127.0.0.1", "--port", str(port)]
            log = log_dir / f"{stamp}-{name.replace(' ', '-')}.log"
            return ServerProcess(name, argv, environ, port, log)

        members = [process(node_name(i), True) for i in range(nodes)]
        lone = process("single", False) if single else None
        # nodes=0 with single=True: one process on a throwaway PostgreSQL database, no Redis.
        first = (members or ([lone] if lone else []))[0]
        await run_command([sys.executable, "-m", "server.cli", "migrate"], first.env)
        fixtures = Fixtures(load_settings(first.env))
        await fixtures.setup()
        for member in (*members, *([lone] if lone else [])):
            processes.append(member)
            await member.start("/healthz")
        yield Site(redis, database_url, members, lone, fixtures)
    finally:
        await asyncio.gather(*(p.stop() for p in processes))
        if fixtures is not None:
            await fixtures.close()
        await redis.stop()
        await _drop_database(database_url)
        shutil.rmtree(work, ignore_errors=True)
