"""The vault's server cost: CPU per uploaded and per downloaded MB of ciphertext, and the wall
time of one 5 MB upload on loopback, against a bare aiohttp server doing the same streaming to a
file (bench/raw_upload.py) in the same run.

The documents are encrypted beforehand by this process exactly as the browser does
(tests/vault_client.py), so the server's figures hold its own work only: the capability lookup,
the multipart parsing, the streaming write with its fsync and atomic rename (``files`` storage,
the bench server runs on SQLite), the quota statement and the row. The browser's side
(encrypting a 5 MB photo in the Pixel 7 emulation) is measured by the vault page's tests.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import aiohttp
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.cluster import pg_admin, pg_base_url
from bench.context import BenchEnv, Row, percentile
from bench.procs import ServerProcess, cpu_seconds, free_port, run_command
from server.settings import PREFIX
from tests.vault_client import (
    VaultHttp,
    VaultKeys,
    create_vault,
    document_form,
    encrypt_document,
)

DOCUMENT_MB = 5
COUNT = 10
QUICK_COUNT = 3
MB = 1024 * 1024


async def _ours(server_url: str, pid: int, count: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        made = await create_vault(http, server_url)
        if made.answer.status != 201:
            raise RuntimeError(f"vault creation failed: {made.answer}")
        device = VaultHttp(http, server_url, made.keys)
        documents = [
            encrypt_document(made.keys, os.urandom(DOCUMENT_MB * MB - 28)) for _ in range(count)
        ]
        return await _measure(
            pid,
            [lambda d=d: device.upload(d) for d in documents],
            [lambda d=d: device.blob(d.id) for d in documents],
            sum(len(d.blob) for d in documents),
        )


async def _other_node(
    env: BenchEnv, count: int, overrides: dict[str, str], log_stem: str, label: str
) -> dict[str, Any]:
    """A second server process on the bench server's settings with ``overrides``, measured."""
    port = free_port()
    environ = {**env.server.env, **overrides, f"{PREFIX}BASE_URL": f"http://127.0.0.1:{port}"}
    node = ServerProcess(
        f"server ({label})",
        [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        environ,
        port,
        env.server.log_path.parent / f"{log_stem}-server-{label}.log",
    )
    await node.start("/healthz")
    try:
        return await _ours(node.url, node.pid, count)
    finally:
        await node.stop()


async def _raw(raw: ServerProcess, env: BenchEnv, count: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        made_keys = VaultKeys.new()
        documents = [
            encrypt_document(made_keys, os.urandom(DOCUMENT_MB * MB - 28)) for _ in range(count)
        ]
        names: list[str] = []

        async def upload(document: Any) -> int:
            async with http.post(raw.url + "/upload", data=document_form(document)) as resp:
                names.append((await resp.json())["name"])
                return resp.status

        async def download(index: int) -> int:
            async with http.get(f"{raw.url}/blob/{names[index]}") as resp:
                await resp.read()
                return resp.status

        return await _measure(
            raw.pid,
            [lambda d=d: upload(d) for d in documents],
            [lambda i=i: download(i) for i in range(count)],
            sum(len(d.blob) for d in documents),
        )


async def _measure(
    pid: int, uploads: list[Any], downloads: list[Any], total_bytes: int
) -> dict[str, Any]:
    """Sequential uploads then downloads: server CPU per MB and wall time per upload."""
    walls: list[float] = []
    cpu = cpu_seconds(pid)
    for send in uploads:
        started = time.perf_counter()
        answer = await send()
        walls.append((time.perf_counter() - started) * 1000)
        status = answer if isinstance(answer, int) else answer.status
        if status != 201:
            raise RuntimeError(f"upload refused: {answer}")
    upload_cpu = cpu_seconds(pid) - cpu
    cpu = cpu_seconds(pid)
    for fetch in downloads:
        answer = await fetch()
        status = answer if isinstance(answer, int) else answer[0]
        if status != 200:
            raise RuntimeError(f"download refused: {status}")
    download_cpu = cpu_seconds(pid) - cpu
    megabytes = total_bytes / MB
    walls.sort()
    return {
        "upload_cpu_ms_per_mb": upload_cpu * 1000 / megabytes,
        "download_cpu_ms_per_mb": download_cpu * 1000 / megabytes,
        "upload_p50_ms": percentile(walls, 50),
        "upload_max_ms": walls[-1],
        "megabytes": megabytes,
    }


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Start the bare upload server, upload and download the same documents to both."""
    count = QUICK_COUNT if env.quick else COUNT
    log_dir = env.server.log_path.parent
    raw = ServerProcess(
        "bare aiohttp upload server",
        [sys.executable, "-m", "bench.raw_upload", "--port", str(port := free_port())],
        env.server.env,
        port,
        log_dir / f"{env.server.log_path.stem.removesuffix('-server')}-raw-upload.log",
    )
    await raw.start("/healthz")
    try:
        baseline = await _raw(raw, env, count)
    finally:
        await raw.stop()
    ours = await _ours(server_url, env.server.pid, count)
    env.server.check_alive()
    # The same data, served by a node that keeps blobs in the database chunks (what several
    # nodes use, on PostgreSQL), first on SQLite, then on PostgreSQL when it is reachable.
    log_stem = env.server.log_path.stem.removesuffix("-server")
    chunks = await _other_node(env, count, {f"{PREFIX}VAULT_STORAGE": "database"}, log_stem, "db")
    on_pg: dict[str, Any] | None = None
    pg_note = ""
    database = f"bench_vault_{os.getpid()}"
    pg_url = make_url(pg_base_url()).set(database=database).render_as_string(hide_password=False)
    admin = pg_admin(pg_url)
    try:
        async with asyncio.timeout(5), admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{database}"'))
    except Exception as exc:
        pg_note = f"PostgreSQL unreachable: {type(exc).__name__}"
    else:
        try:
            pg_env = {**env.server.env, f"{PREFIX}DATABASE_URL": pg_url}
            await run_command([sys.executable, "-m", "server.cli", "migrate"], pg_env)
            on_pg = await _other_node(env, count, {f"{PREFIX}DATABASE_URL": pg_url}, log_stem, "pg")
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        await admin.dispose()
    name = "bare aiohttp upload"
    rows = [
        Row(
            "upload: server CPU per MB",
            "ms",
            ours["upload_cpu_ms_per_mb"],
            baseline["upload_cpu_ms_per_mb"],
            name,
        ),
        Row(
            "download: server CPU per MB",
            "ms",
            ours["download_cpu_ms_per_mb"],
            baseline["download_cpu_ms_per_mb"],
            name,
        ),
        Row(
            "upload: server CPU per MB, database storage (SQLite)",
            "ms",
            chunks["upload_cpu_ms_per_mb"],
            baseline["upload_cpu_ms_per_mb"],
            name,
        ),
        Row(
            "download: server CPU per MB, database storage (SQLite)",
            "ms",
            chunks["download_cpu_ms_per_mb"],
            baseline["download_cpu_ms_per_mb"],
            name,
        ),
        *(
            [
                Row(
                    "upload: server CPU per MB, database storage (PostgreSQL)",
                    "ms",
                    on_pg["upload_cpu_ms_per_mb"],
                    baseline["upload_cpu_ms_per_mb"],
                    name,
                ),
                Row(
                    "download: server CPU per MB, database storage (PostgreSQL)",
                    "ms",
                    on_pg["download_cpu_ms_per_mb"],
                    baseline["download_cpu_ms_per_mb"],
                    name,
                ),
            ]
            if on_pg is not None
            else []
        ),
        Row(
            f"one {DOCUMENT_MB} MB upload, p50 wall time (loopback)",
            "ms",
            ours["upload_p50_ms"],
            baseline["upload_p50_ms"],
            name,
        ),
    ]
    return {
        "title": f"Vault: server CPU per MB of ciphertext, {DOCUMENT_MB} MB documents",
        "status": "ok",
        "params": {"documents": count, "document_mb": DOCUMENT_MB, "postgresql": pg_note or "yes"},
        "rows": [r.as_dict() for r in rows],
        "details": [
            {"server": "ours, files storage", **ours},
            {"server": "ours, database storage (SQLite)", **chunks},
            *([{"server": "ours, database storage (PostgreSQL)", **on_pg}] if on_pg else []),
            {"server": name, **baseline},
        ],
    }
