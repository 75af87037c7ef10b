"""Statistics dashboard and API over 1,000,000 synthetic sessions (``--quick``: 100,000), on
SQLite and on PostgreSQL, and the time ``permanence stats rebuild`` takes to recompute their
rollups.

Data, in two cached stages (preparing 1M sessions takes minutes):

1. events: ``server.synthetic.generate`` over two years (730 days) for one association with a
   coordinator, without its rollup rebuild; the insert is timed. Keyed on a hash of
   server/synthetic.py, server/stats/events.py and the stat_events columns, so a change to the
   rollups reuses them: ``var/bench-stats/events-<hash>-<sessions>.sqlite3`` and the
   PostgreSQL database ``bench_stats_events_<hash>_<sessions>``;
2. rollups: a copy of the events (SQLite's backup API; ``CREATE DATABASE … TEMPLATE`` on
   PostgreSQL), migrated, then ``python -m server.cli stats rebuild`` (the command operators
   run), timed. Keyed on a hash of server/synthetic.py, server/store/models.py, the events,
   rollups and rebuild modules of server/stats/ and the migrations:
   ``var/bench-stats/<hash>-<sessions>.sqlite3`` and ``bench_stats_<hash>_<sessions>``.
   PostgreSQL databases live on the server of ``PERMANENCE_BENCH_POSTGRES_URL`` (default:
   the tests' ``postgres@127.0.0.1:5432``).

Clear them with ``rm -rf var/bench-stats`` and ``DROP DATABASE bench_stats_…``; stale ones
(another hash, same stage) are dropped when a new one is prepared. Preparation runs in its own
process (``python -m bench.stats --prepare [--quick] [--events]``, also runnable beforehand):
if the runner's time limit stops this benchmark, that process goes on, and the next run finds
the cache.

Measure: a real server (``server.cli serve``) per database, the coordinator logged in, each
request sequentially ≥ 20 times (after 2 warm-ups): /stats for 12 and 24 months, 24 months
filtered by channel, theme, both, weekly, the map toggle, /stats.csv (départements),
/api/v1/stats. Baseline, side by side: the same request on the same server over an EMPTY
period (2001): the fixed cost of auth, filters, the (empty) rollup queries and rendering.
The rebuild's row: the command's wall time (target ≤ 60 s at 1M sessions) beside the bulk
insert of the same events (``executemany`` at the driver's speed), both from the cache's
preparation (the run that prepared it, which may be an earlier one: its date is in the meta).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from bench.cluster import pg_admin, pg_base_url
from bench.context import BenchEnv, Row, percentile
from bench.procs import ROOT, ServerProcess, free_port, run_command
from server import accounts, synthetic
from server.db import make_sessionmaker
from server.passes import LOGIN_COOKIE
from server.settings import PREFIX, load_settings
from server.stats.display import local_today
from server.store.engine import make_engine
from server.store.models import Role, StatEvent, User

SESSIONS, QUICK_SESSIONS = 1_000_000, 100_000
DAYS = 730
REQUESTS = 20
WARMUP = 2
TARGET_MS = 300.0
REBUILD_TARGET_S = 60.0
PREVIOUS_REBUILD = "202–211 s at 1M sessions before the monthly chunks (BENCHMARKS.md, 2026-11-25)"
CACHE_DIR = ROOT / "var" / "bench-stats"
COORDINATOR = "coordination@bench.invalid"
ASSOCIATION = "Association statistiques du banc d'essai"
EMPTY = {"from": "2001-01-01", "to": "2001-12-31"}
HASHED = (
    "server/synthetic.py",
    "server/store/models.py",
    "server/stats/events.py",
    "server/stats/rollups.py",
    "server/stats/rebuild.py",
)
EVENTS_HASHED = ("server/synthetic.py", "server/stats/events.py")


def data_hash() -> str:
    """What the cached databases depend on: the generator, the rollups, the schema (not the
    code that reads them: a change to the queries reuses the rebuilt rollups)."""
    digest = hashlib.sha256()
    files = [ROOT / name for name in HASHED]
    files += sorted((ROOT / "server" / "store" / "migrations" / "versions").glob("*.py"))
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def events_hash() -> str:
    """What the cached events alone depend on: the generator and the stat_events columns.
    A change to the rollups or to another table reuses them (cloned, migrated, rebuilt)."""
    digest = hashlib.sha256()
    for name in EVENTS_HASHED:
        digest.update(name.encode())
        digest.update((ROOT / name).read_bytes())
    for col in StatEvent.__table__.columns:
        digest.update(f"{col.name}:{col.type}:{col.nullable};".encode())
    return digest.hexdigest()[:12]


def sqlite_url(sessions: int, events_only: bool = False) -> str:
    """The cached SQLite database of this code version (or its events alone)."""
    name = f"events-{events_hash()}" if events_only else data_hash()
    return f"sqlite+aiosqlite:///{CACHE_DIR / f'{name}-{sessions}.sqlite3'}"


def pg_url(sessions: int, events_only: bool = False) -> str:
    """The cached PostgreSQL database of this code version (or its events alone)."""
    name = f"events_{events_hash()}" if events_only else data_hash()
    base = make_url(pg_base_url())
    return base.set(database=f"bench_stats_{name}_{sessions}").render_as_string(hide_password=False)


def _events_url(url: str, sessions: int) -> str:
    return pg_url(sessions, True) if url.startswith("postgresql") else sqlite_url(sessions, True)


def _settings(url: str, data_dir: Path) -> Any:
    return load_settings(
        {
            f"{PREFIX}DATA_DIR": str(data_dir),
            f"{PREFIX}DATABASE_URL": url,
            f"{PREFIX}SECRET_KEY": "b" * 48,
        }
    )


def _env(url: str, data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update({f"{PREFIX}DATA_DIR": data_dir, f"{PREFIX}DATABASE_URL": url})
    env[f"{PREFIX}SECRET_KEY"] = "b" * 48
    return env


def _meta_path(url: str) -> Path:
    return CACHE_DIR / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".json")


def _is_events(name: str) -> bool:
    return name.startswith(("bench_stats_events_", "events-"))


async def _pg_prepare_database(url: str, sessions: int, template: str | None = None) -> bool:
    """Create the database (a copy of ``template`` if given), dropping stale ones of its
    stage (events or rollups); False if it is already there."""
    name = make_url(url).database or ""
    admin = pg_admin(url)
    try:
        async with admin.connect() as conn:
            existing = set(
                await conn.scalars(
                    text("SELECT datname FROM pg_database WHERE datname LIKE 'bench_stats_%'")
                )
            )
            if name in existing and _meta_path(url).exists():
                return False
            if name in existing:  # an interrupted preparation
                await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            for stale in existing - {name, template}:
                if stale.endswith(f"_{sessions}") and _is_events(stale) == _is_events(name):
                    await conn.execute(text(f'DROP DATABASE "{stale}" WITH (FORCE)'))
            copy = f' TEMPLATE "{template}"' if template else ""
            await conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
            return True
    finally:
        await admin.dispose()


def _sqlite_cached(url: str, meta: Path, sessions: int) -> bool:
    """True if this version's SQLite database is there; else make room for it."""
    path = Path(make_url(url).database or "")
    if path.exists() and meta.exists():
        return True
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in CACHE_DIR.glob(f"*-{sessions}.sqlite3*"):
        if _is_events(stale.name) == _is_events(path.name):
            stale.unlink()
    return False


async def prepare_events(url: str, sessions: int) -> dict[str, Any]:
    """The events stage: migrate, create the association and its users, insert the synthetic
    events (``synthetic.generate`` without its rollup rebuild); the insert is timed."""
    meta = _meta_path(url)
    if url.startswith("postgresql"):
        if not await _pg_prepare_database(url, sessions):
            return dict(json.loads(meta.read_text()))
    elif _sqlite_cached(url, meta, sessions):
        return dict(json.loads(meta.read_text()))
    with tempfile.TemporaryDirectory(prefix="vp-bench-stats-") as data_dir:
        settings = _settings(url, Path(data_dir))
        await run_command([sys.executable, "-m", "server.cli", "migrate"], _env(url, data_dir))
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine, settings).begin() as db:
                association = await accounts.get_or_create_association(db, ASSOCIATION)
                for number in range(12):
                    await accounts.create_user(
                        db,
                        association=association,
                        email=f"benevole{number}@bench.invalid",
                        name=f"Bénévole {number}",
                        role=Role.VOLUNTEER,
                        password=None,
                    )
                await accounts.create_user(
                    db,
                    association=association,
                    email=COORDINATOR,
                    name="Coordination du banc d'essai",
                    role=Role.COORDINATOR,
                    password=None,
                )

                async def no_rebuild(db: Any, zone: Any, association_id: int | None = None) -> int:
                    return 0

                # The rollups are the next stage's (the command's) work.
                rebuild = synthetic.rebuild_rollups
                synthetic.rebuild_rollups = no_rebuild  # type: ignore[assignment]
                try:
                    started = time.perf_counter()
                    events = await synthetic.generate(
                        db, settings, association.id, sessions, days=DAYS
                    )
                    insert_s = time.perf_counter() - started
                finally:
                    synthetic.rebuild_rollups = rebuild
        finally:
            await engine.dispose()
    result = {"sessions": sessions, "events": events, "insert_s": round(insert_s, 1)}
    meta.write_text(json.dumps(result))
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _pg_has(url: str) -> bool:
    admin = pg_admin(url)
    try:
        async with admin.connect() as conn:
            found = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": make_url(url).database},
            )
    finally:
        await admin.dispose()
    return found is not None


async def _output(argv: list[str], env: dict[str, str]) -> str:
    """Run a command to completion; its output, or raise with it if it fails."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text_out = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{text_out}")
    return text_out


def _copy_sqlite(source: str, target: str) -> None:
    """A consistent copy of a SQLite database (the backup API, WAL included)."""
    with (
        sqlite3.connect(make_url(source).database or "") as src,
        sqlite3.connect(make_url(target).database or "") as dst,
    ):
        src.backup(dst)
    src.close()
    dst.close()


async def prepare(url: str, sessions: int) -> dict[str, Any]:
    """A copy of the cached events, migrated, then ``permanence stats rebuild`` (timed)."""
    meta = _meta_path(url)
    events_url = _events_url(url, sessions)
    if url.startswith("postgresql"):
        if meta.exists() and await _pg_has(url):
            return dict(json.loads(meta.read_text()))
        events = await prepare_events(events_url, sessions)
        await _pg_prepare_database(url, sessions, template=make_url(events_url).database)
    else:
        if _sqlite_cached(url, meta, sessions):
            return dict(json.loads(meta.read_text()))
        events = await prepare_events(events_url, sessions)
        _copy_sqlite(events_url, url)
    with tempfile.TemporaryDirectory(prefix="vp-bench-stats-") as data_dir:
        env = _env(url, data_dir)
        await run_command([sys.executable, "-m", "server.cli", "migrate"], env)
        started, children = time.perf_counter(), _children_cpu()
        output = await _output([sys.executable, "-m", "server.cli", "stats", "rebuild"], env)
        rebuild_s = time.perf_counter() - started
        rebuild_cpu_s = _children_cpu() - children
    result = {
        **events,
        "prepared_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rebuild_s": round(rebuild_s, 1),
        # The command's own CPU: all of the work on SQLite, the client's share on PostgreSQL.
        "rebuild_command_cpu_s": round(rebuild_cpu_s, 1),
        "rebuild_output": output.strip().splitlines()[-1:],
    }
    meta.write_text(json.dumps(result))
    return result


async def _prepare_in_process(url: str, sessions: int) -> dict[str, Any]:
    """Prepare in a child process that outlives a cancelled benchmark (minutes at 1M)."""
    meta = _meta_path(url)
    if not meta.exists():
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.stats",
            "--prepare-url",
            url,
            "--sessions",
            str(sessions),
            cwd=ROOT,
            start_new_session=True,
        )
        if await asyncio.shield(process.wait()) != 0:
            raise RuntimeError(f"preparing {make_url(url).render_as_string()} failed")
    return dict(json.loads(meta.read_text()))


async def _login_cookie(url: str) -> str:
    engine = make_engine(url)
    try:
        with tempfile.TemporaryDirectory(prefix="vp-bench-stats-") as data_dir:
            settings = _settings(url, Path(data_dir))
        async with make_sessionmaker(engine, settings).begin() as db:
            user = (await db.scalars(select(User).where(User.email == COORDINATOR))).one()
            token = await accounts.open_login_session(db, user, timedelta(hours=2))
    finally:
        await engine.dispose()
    return f"{LOGIN_COOKIE}={token}"


def _scenarios(today_iso: str, two_years_ago: str) -> list[tuple[str, str, dict[str, str]]]:
    two = {"from": two_years_ago, "to": today_iso}
    return [
        ("/stats, 12 months (default)", "/stats", {}),
        ("/stats, 24 months", "/stats", two),
        ("/stats, 24 months, channel", "/stats", {**two, "channel": "drop_in"}),
        ("/stats, 24 months, theme", "/stats", {**two, "theme": "logement"}),
        (
            "/stats, 24 months, channel + theme",
            "/stats",
            {**two, "channel": "link", "theme": "papiers"},
        ),
        ("/stats, 24 months, weekly", "/stats", {**two, "step": "week"}),
        ("/stats, 12 months, map: unmet", "/stats", {"carte": "unmet"}),
        ("/stats.csv départements, 12 months", "/stats.csv", {"table": "departements"}),
        ("/api/v1/stats, 12 months", "/api/v1/stats", {}),
        ("/api/v1/stats, 24 months", "/api/v1/stats", two),
    ]


async def _time(
    http: aiohttp.ClientSession, url: str, params: dict[str, str], runs: int
) -> list[float]:
    timings = []
    for index in range(WARMUP + runs):
        started = time.perf_counter()
        async with http.get(url, params=params) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url} {params}: HTTP {resp.status}")
        if index >= WARMUP:
            timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)


async def _measure(label: str, url: str, workdir: Path) -> list[dict[str, Any]]:
    """Start a server on this database and time every scenario against its empty-period twin."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update(
        {
            f"{PREFIX}DATA_DIR": str(workdir / label),
            f"{PREFIX}DATABASE_URL": url,
            f"{PREFIX}BASE_URL": f"http://127.0.0.1:{port}",
            f"{PREFIX}LOG_LEVEL": "WARNING",
            f"{PREFIX}SECRET_KEY": secrets.token_urlsafe(48),
            "PYTHONUNBUFFERED": "1",
        }
    )
    (workdir / label).mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        f"server on {label}",
        [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        port,
        workdir / f"server-{label}.log",
    )
    cookie = await _login_cookie(url)
    today = local_today(load_settings(env).timezone)  # the server's "today"
    start = today.replace(year=today.year - 2) + timedelta(days=1)
    details = []
    await server.start("/healthz")
    try:
        async with aiohttp.ClientSession(headers={"Cookie": cookie}) as http:
            for name, path, params in _scenarios(today.isoformat(), start.isoformat()):
                ours = await _time(http, server.url + path, params, REQUESTS)
                base = await _time(http, server.url + path, {**params, **EMPTY}, REQUESTS)
                details.append(
                    {
                        "database": label,
                        "request": name,
                        "p50 ms": percentile(ours, 50),
                        "p95 ms": percentile(ours, 95),
                        "empty period p50 ms": percentile(base, 50),
                        "empty period p95 ms": percentile(base, 95),
                        "requests": len(ours),
                    }
                )
    finally:
        await server.stop()
    return details


async def _pg_reachable(url: str) -> str | None:
    admin = pg_admin(url)
    try:
        async with asyncio.timeout(5), admin.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means: skip PostgreSQL
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    finally:
        await admin.dispose()
    return None


def _rows(details: Iterable[dict[str, Any]], prepared: Iterable[dict[str, Any]]) -> list[Row]:
    rows = []
    for d in details:
        for q in ("p50", "p95"):
            ours = d[f"{q} ms"]
            rows.append(
                Row(
                    f"{d['database']}: {d['request']}, {q}",
                    "ms",
                    ours,
                    d[f"empty period {q} ms"],
                    "same request, empty period",
                    target=f"≤ {TARGET_MS:.0f} ms",
                    met=ours <= TARGET_MS,
                )
            )
    for p in prepared:
        if p.get("rebuild_s") is None:
            continue
        rows.append(
            Row(
                f"{p['database']}: permanence stats rebuild, {p['sessions']:,} sessions"
                f" ({p['events']:,} events)",
                "s",
                p["rebuild_s"],
                p.get("insert_s"),
                "bulk insert of the same events",
                target=f"≤ {REBUILD_TARGET_S:.0f} s",
                met=p["rebuild_s"] <= REBUILD_TARGET_S,
                note=f"prepared {p.get('prepared_at', '?')}; the command's own CPU"
                f" {p.get('rebuild_command_cpu_s')} s",
            )
        )
    return rows


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Prepare (or reuse) both databases, then time the pages on each."""
    del server_url  # this benchmark starts its own servers, on its own databases
    sessions = QUICK_SESSIONS if env.quick else SESSIONS
    databases = [("SQLite", sqlite_url(sessions))]
    skipped = await _pg_reachable(pg_url(sessions))
    if skipped is None:
        databases.append(("PostgreSQL", pg_url(sessions)))
    details: list[dict[str, Any]] = []
    prepared: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vp-bench-stats-") as workdir:
        for label, url in databases:
            meta = await _prepare_in_process(url, sessions)
            prepared.append({"database": label, **meta})
            details += await _measure(label, url, Path(workdir))
    status = "ok" if skipped is None else f"skipped: PostgreSQL unreachable ({skipped})"
    return {
        "title": f"Statistics dashboard and API over {sessions:,} sessions (2 years)",
        "status": status,
        "params": {
            "sessions": sessions,
            "days": DAYS,
            "requests per figure": REQUESTS,
            "cache": "var/bench-stats/ and PostgreSQL bench_stats_<hash>_<sessions>",
            **{
                f"{p['database']} preparation": (
                    f"{p.get('events', 0):,} events inserted in {p.get('insert_s')} s,"
                    f" rollups rebuilt by `permanence stats rebuild` in {p.get('rebuild_s')} s"
                    f" ({p.get('rebuild_output')}) on {p.get('prepared_at')}"
                )
                for p in prepared
            },
            "previous rebuild": PREVIOUS_REBUILD,
        },
        "rows": [row.as_dict() for row in _rows(details, prepared)],
        "details": details,
    }


def main() -> None:
    """``python -m bench.stats --prepare [--quick] [--events]``: build the cached databases
    beforehand (``--events``: only the events, the slow stage the rollup code does not change)."""
    parser = argparse.ArgumentParser(prog="python -m bench.stats")
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", action="store_true")
    parser.add_argument("--prepare-url")
    parser.add_argument("--sessions", type=int)
    args = parser.parse_args()
    sessions = args.sessions or (QUICK_SESSIONS if args.quick else SESSIONS)
    if args.events:
        for url in (sqlite_url(sessions, True), pg_url(sessions, True)):
            print(json.dumps(asyncio.run(prepare_events(url, sessions))), flush=True)
        return
    urls = [args.prepare_url] if args.prepare_url else [sqlite_url(sessions), pg_url(sessions)]
    for url in urls:
        print(json.dumps(asyncio.run(prepare(url, sessions))), flush=True)


if __name__ == "__main__":
    main()
