"""``make bench`` → ``python -m bench.run [--only NAME] [--quick] [--quiet-wait S] [--write-doc]``.

Starts the real server (``python -m server.cli migrate`` then ``serve``) on a free port with a
temporary data directory and SQLite, and the baseline relays, raw aiohttp (bench/raw_relay.py)
and bare python-socketio (bench/raw_sio_relay.py), as processes of their own; prepares data
through the domain modules; runs the benchmarks of ``BENCHMARKS``; prints a table; writes
``bench/results/<UTC time>.json`` (and ``latest.json``); with ``--write-doc``, rewrites each
benchmark's marked section of BENCHMARKS.md.

Adding a benchmark is one line in ``BENCHMARKS``: a module exposing
``async def run(server_url: str, env: BenchEnv) -> dict`` whose result holds ``"title"`` and
``"rows"`` (``Row.as_dict()`` items: ours vs its baseline from the same run), optionally
``"status"``, ``"params"``, ``"details"`` (a list of flat dicts, shown as a table) and
``"tables"`` (more such tables: ``{"title": str, "rows": [flat dicts]}``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.context import BenchEnv
from bench.fixtures import Fixtures
from bench.procs import (
    ROOT,
    ServerProcess,
    free_port,
    load_average,
    machine_info,
    raise_nofile_limit,
    run_command,
    wait_until_quiet,
)
from server.settings import PREFIX, load_settings

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOC = ROOT / "BENCHMARKS.md"
BENCH_TIMEOUT_S = 240.0
QUIET_CPU_PCT = 15.0  # CPU (% of one core) other processes may use before a benchmark starts
RunFunction = Callable[[str, BenchEnv], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: ``module`` exposes ``async def run(server_url, env) -> dict``."""

    name: str
    module: str
    title: str
    timeout_s: float = 0.0  # 0: BENCH_TIMEOUT_S

    def load(self) -> RunFunction:
        """Import the module only when the benchmark is selected."""
        run: RunFunction = importlib.import_module(self.module).run
        return run


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "relay",
        "bench.relay_latency",
        "Signalling relay latency, ours vs raw WS and bare sio relays",
    ),
    Benchmark("page", "bench.page_weight", "Beneficiary first load bytes, gzip vs identity"),
    Benchmark("memory", "bench.idle_memory", "RSS per idle client, ours vs raw WS server"),
    Benchmark("share", "bench.share_latency", "Partager click → first decoded frame (Chromium)"),
    Benchmark(
        "vault-page", "bench.vault_page_upload", "Vault: 5 MB photo encrypted + uploaded (Pixel 7)"
    ),
    Benchmark(
        "weak-media",
        "bench.weak_media",
        "Screen share and voice at 300 kbit/s (tbf): width, fps, freezes, concealment",
    ),
    Benchmark(
        "weaknet",
        "bench.weak_network",
        "Beneficiary's path on emulated Fast/Slow 3G and a 4× slower CPU (Chromium, Pixel 7)",
        timeout_s=1500.0,
    ),
    Benchmark("booking", "bench.booking", "Slot search, booking throughput, contention (API)"),
    Benchmark("queue", "bench.queue", "Drop-in queue: fan-out to volunteers"),
    Benchmark(
        "take",
        "bench.take_next",
        "take-next: CPU per take vs queue length, contention (SQLite, PG)",
    ),
    Benchmark("stats", "bench.stats", "Statistics dashboard and API over 1M sessions"),
    Benchmark("vault", "bench.vault_upload", "Vault: server CPU per MB uploaded and downloaded"),
    Benchmark(
        "rights",
        "bench.rights",
        "Rights check: OpenFisca-France pool vs a bare script, cold, warm, memory, event loop",
        timeout_s=900.0,
    ),
    Benchmark("login", "bench.login_flood", "Signalling latency under a login flood (50/s)"),
    Benchmark(
        "combined",
        "bench.combined",
        "Event-loop lag under relay + take-next + bookings + dashboard, SQLite and PostgreSQL",
    ),
    Benchmark(
        "cluster-relay",
        "bench.cluster_relay",
        "Two nodes (Redis): relay latency and CPU, cross-node vs same node",
    ),
    Benchmark(
        "cluster-queue",
        "bench.cluster_queue",
        "Two nodes (Redis): queue change → volunteers' push, spread vs one node",
    ),
    Benchmark(
        "cluster-writes",
        "bench.cluster_writes",
        "Two nodes (Redis, PostgreSQL): bookings/s and takes/s against one node",
    ),
    Benchmark(
        "cluster-idle",
        "bench.cluster_idle",
        "Two nodes (Redis): 10,000 idle clients, RSS per client and connect time",
        timeout_s=1200.0,
    ),
    Benchmark(
        "soak",
        "bench.soak",
        "Soak: 10 minutes of mixed traffic, growth of memory, files and lag, errors",
        timeout_s=1800.0,
    ),
)


def server_environment(data_dir: Path, port: int) -> dict[str, str]:
    """The process environment without any inherited PERMANENCE_* (SQLite, no Redis)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update(
        {
            f"{PREFIX}DATA_DIR": str(data_dir),
            f"{PREFIX}BASE_URL": f"http://127.0.0.1:{port}",
            f"{PREFIX}LOG_LEVEL": "WARNING",
            f"{PREFIX}SECRET_KEY": secrets.token_urlsafe(48),
            # The login flood sends each attempt from its own address (X-Forwarded-For); the
            # other benchmarks send no such header and count as 127.0.0.1 as before.
            f"{PREFIX}TRUST_PROXY": "true",
            # The rights check's pool is measured by its own benchmark (bench/rights.py, in
            # process); here it would only add its start-up CPU to the other figures.
            f"{PREFIX}RIGHTS_WORKERS": "0",
        }
    )
    env["PYTHONUNBUFFERED"] = "1"
    # As deploy/systemd/visio-permanence.service runs it: two glibc malloc arenas instead of
    # one per thread (each SQLite connection is a thread). The soak measures that server.
    env["MALLOC_ARENA_MAX"] = "2"
    return env


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        return f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"
    return str(value)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


SUMMARY_HEADER = ["metric", "unit", "ours", "baseline", "ours / baseline", "target", "met"]


def summary_rows(result: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """The comparison table of one benchmark, as strings, and its numbered notes."""
    rows: list[list[str]] = []
    notes: list[str] = []
    for row in result.get("rows", []):
        metric = row["metric"]
        if row.get("note"):
            if row["note"] not in notes:
                notes.append(row["note"])
            metric += f" [{notes.index(row['note']) + 1}]"
        rows.append(
            [
                metric,
                row["unit"],
                _fmt(row["ours"]),
                f"{_fmt(row['baseline'])} ({row['baseline_name']})",
                _ratio(row["ratio"]),
                row.get("target") or "",
                {None: "", True: "yes", False: "**NO**"}[row.get("met")],
            ]
        )
    return rows, [f"[{i}] {note}" for i, note in enumerate(notes, 1)]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned plain-text table for the terminal."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def details_table(details: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a benchmark's flat ``details`` records."""
    header = list(details[0])
    return header, [[_fmt(d.get(k)) for k in header] for d in details]


def machine_md(machine: dict[str, Any]) -> str:
    """The machine block repeated under every figure."""
    libs = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items())
    return "\n".join(
        [
            f"- Date: {machine['date']}; code: git {machine['git']}",
            f"- Machine: `nproc` = {machine['nproc']}, CPU model: {machine['cpu_model']}, "
            f"Linux {machine['kernel']}, RLIMIT_NOFILE {machine['nofile_limit']}",
            f"- Python {machine['python']}; {libs}",
            "- `free -h`:",
            "",
            "  ```",
            *("  " + line for line in machine["free_h"].splitlines()),
            "  ```",
        ]
    )


def section_md(bench: Benchmark, result: dict[str, Any], report: dict[str, Any]) -> str:
    """One benchmark's generated section of BENCHMARKS.md."""
    parts = [
        f"### {result.get('title', bench.title)}",
        "",
        f"Command: `{report['command']}` (from the repository root; `make bench` runs "
        "`python -m bench.run`). Status: **{}**.".format(result.get("status", "ok")),
        "",
        machine_md(report["machine"]),
        f"- Load average (1, 5, 15 min) before / after this benchmark: "
        f"{result['load_average']['before']} / {result['load_average']['after']}; "
        f"CPU used by other processes just before it: {result['other_cpu_pct_at_start']}% "
        "of a core",
        "",
    ]
    if result.get("params"):
        params = ", ".join(f"{k} = {_fmt(v)}" for k, v in result["params"].items())
        parts += [f"Parameters: {params}.", ""]
    if result.get("error"):
        parts += ["Error:", "", "```", result["error"].strip()[-1500:], "```", ""]
    if result.get("rows"):
        rows, notes = summary_rows(result)
        parts += [md_table(SUMMARY_HEADER, rows), ""]
        parts += [f"{note}  " for note in notes] + ([""] if notes else [])
    if result.get("details"):
        header, rows = details_table(result["details"])
        parts += ["Details:", "", md_table(header, rows), ""]
    for table in result.get("tables", []):
        if table.get("rows"):
            header, rows = details_table(table["rows"])
            parts += [f"{table['title']}:", "", md_table(header, rows), ""]
    for key, label in (
        ("lazy_imports_not_counted", "Lazy `import()` targets, not counted"),
        ("not_counted", "Referenced but not counted (images, icons, fonts)"),
        ("external_refs", "Other-origin references"),
    ):
        if result.get(key):
            parts += [f"{label}: " + ", ".join(f"`{v}`" for v in result[key]) + ".", ""]
    return "\n".join(parts).rstrip() + "\n"


def update_doc(sections: dict[str, str]) -> None:
    """Replace (or append) ``<!-- bench:NAME:begin -->…<!-- bench:NAME:end -->`` sections."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    for name, body in sections.items():
        begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
        block = f"{begin}\n{body}{end}"
        found = re.search(re.escape(begin) + r".*?" + re.escape(end), text, re.DOTALL)
        if found:
            text = text[: found.start()] + block + text[found.end() :]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")


async def run_all(
    selected: list[Benchmark], quick: bool, quiet_wait_s: float, workdir: Path
) -> dict[str, Any]:
    """Start both servers, prepare data, run each benchmark with a time limit, stop everything."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    port, raw_port, sio_port = free_port(), free_port(), free_port()
    env = server_environment(workdir / "data", port)
    await run_command([sys.executable, "-m", "server.cli", "migrate"], env)
    settings = load_settings(env)
    fixtures = Fixtures(settings)
    await fixtures.setup()
    ours = ServerProcess(
        "visio-permanence server",
        [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        port,
        RESULTS_DIR / f"{stamp}-server.log",
    )
    raw = ServerProcess(
        "raw aiohttp relay",
        [sys.executable, "-m", "bench.raw_relay", "--port", str(raw_port)],
        env,
        raw_port,
        RESULTS_DIR / f"{stamp}-raw-relay.log",
    )
    sio = ServerProcess(
        "bare python-socketio relay",
        [sys.executable, "-m", "bench.raw_sio_relay", "--port", str(sio_port)],
        env,
        sio_port,
        RESULTS_DIR / f"{stamp}-raw-sio-relay.log",
    )
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]).strip(),
        "machine": machine_info(),
        "quick": quick,
        "results": {},
    }
    try:
        await ours.start("/healthz")
        await raw.start("/healthz")
        await sio.start("/healthz")
        bench_env = BenchEnv(server=ours, raw=raw, sio=sio, fixtures=fixtures, quick=quick)
        failures_seen = 0
        for bench in selected:
            print(f"\n== {bench.name}: {bench.title}", flush=True)
            busy = await wait_until_quiet(quiet_wait_s, QUIET_CPU_PCT)
            if busy >= QUIET_CPU_PCT:
                print(f"warning: other processes use {busy:.0f}% of a core: figures will suffer")
            started, load_before = time.perf_counter(), load_average()
            try:
                async with asyncio.timeout(bench.timeout_s or BENCH_TIMEOUT_S):
                    result = await bench.load()(ours.url, bench_env)
            except Exception:
                result = {"title": bench.title, "status": "failed", "error": traceback.format_exc()}
                print(result["error"], file=sys.stderr)
            if len(fixtures.creation_failures) > failures_seen:
                failures_seen = len(fixtures.creation_failures)
                print(
                    f"note: {failures_seen} assistance session creation(s) failed and were "
                    "retried (6-digit code collision; see BENCHMARKS.md, Findings)"
                )
            result["elapsed_s"] = round(time.perf_counter() - started, 1)
            result["load_average"] = {"before": load_before, "after": load_average()}
            result["other_cpu_pct_at_start"] = round(busy, 1)
            report["results"][bench.name] = result
            rows, notes = summary_rows(result)
            print(text_table(SUMMARY_HEADER, rows))
            print("\n".join(notes))
            print(f"({result.get('status', 'ok')}, {result['elapsed_s']} s)", flush=True)
    finally:
        report["fixture_failures"] = fixtures.creation_failures
        await ours.stop()
        await raw.stop()
        await sio.stop()
        await fixtures.close()
    out = RESULTS_DIR / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    shutil.copyfile(out, RESULTS_DIR / "latest.json")
    report["path"] = str(out)
    return report


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, print where the results are; exit 1 if a benchmark failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--only", action="append", choices=names, metavar="NAME", help=str(names))
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer clients")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="before each benchmark, wait up to this long for other processes to go quiet",
    )
    parser.add_argument(
        "--write-doc", action="store_true", help="rewrite these sections of BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    raise_nofile_limit()
    selected = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vp-bench-") as workdir:
        report = asyncio.run(run_all(selected, args.quick, args.quiet_wait, Path(workdir)))
    print(f"\nResults: {report['path']} ({time.perf_counter() - started:.0f} s in all)")
    if args.write_doc:
        sections = {
            b.name: section_md(b, report["results"][b.name], report)
            for b in selected
            if b.name in report["results"]
        }
        update_doc(sections)
        print(f"Updated {DOC.name}: {', '.join(sections)}")
    failed = [n for n, r in report["results"].items() if r.get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
