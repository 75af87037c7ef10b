"""The rights check's engine (issue 16): cold start, warm latency, memory of the pool, and the
event loop while checks run, each against OpenFisca-France in a bare script measured in the same
run (bench/raw_openfisca.py: the same households, the same variables, no pool).

The engine is measured in-process — ``RightsEngine`` and ``engine.calculate`` from this event
loop, as the server's views call it — not through HTTP: the cost of the check is the model and
the pool, and the page around it is measured elsewhere.

1. **Cold** (3 runs each, alternating): a fresh process (bench/rights_cold.py; a fresh process
   has no fork server yet) runs ``RightsEngine(2).start()`` then one check; the bare script
   imports the model, builds ``FranceTaxBenefitSystem`` and computes the same household. Compared:
   start → ready, the first check, and process spawn → first result (the caller's clock).
   Files are in the page cache after the first run: "cold" is a new process, not a cold disk.
2. **Warm latency**: one check of each household first (not counted, on both sides), then
   ``REPEAT`` sequential checks cycling through 3 reference households: ours is the round trip
   from the event loop (the situation pickled to a worker, computed, the values back), the
   baseline one computation in the bare script's own process.
3. **Memory**: RSS, PSS and USS (``psutil.Process.memory_full_info``) of the pool — its workers
   and the fork server (the workers' parent) — after those checks, against the bare script's
   process after its own computations. PSS counts shared pages once in all (the pool's true
   cost in RAM); RSS counts them in every process; a worker's USS is what one more worker adds.
4. **Event loop**: a ticker sleeping 5 ms records how late it wakes while ``CONCURRENT`` checks
   run at once (two workers, both cores busy), against the same ticker with nothing running for
   as long; the wall time of those checks against ``CONCURRENT`` back-to-back computations of
   the bare script divided by the number of workers (perfect parallelism, no pool overhead).
   The same ticker also runs beside two processes spinning in Python, not ours: the lag that
   busy cores alone cause (the machine has two).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.context import BenchEnv, Row, percentile
from bench.procs import ROOT
from server.rights import results
from server.rights.answers import Adult, Answers, situation
from server.rights.engine import RightsEngine

WORKERS = 2
COLD_RUNS = 3
REPEAT = 30
CONCURRENT = 10
TICK_S = 0.005
QUICK = {"cold_runs": 1, "repeat": 6}
BASELINE = "bare OpenFisca-France script"
MB = 1024 * 1024
# Per cold run, both sides: import_s is our engine module (ours; the model is imported by the
# fork server, within ready_s) or openfisca_france (baseline).
COLD_KEYS = ("import_s", "ready_s", "first_s", "spawn_to_result_s")
# Where our start() goes (bench/rights_cold.py).
POOL_COLD_KEYS = ("fork_server_spawn_s", "preload_s", "forked_to_ready_s", "ready_s")

# Three reference households (issue 16): who comes to a permanence.
HOUSEHOLDS: dict[str, Answers] = {
    "single adult, no resources, hosted free, Paris": Answers(
        adults=(Adult(40, "inactif", 0.0, 0.0, 0.0, "none"),),
        children=(),
        housing="hosted",
        rent=None,
        postal_code="75011",
        commune="75056",
        received=(),
    ),
    "couple, 2 children, one SMIC, tenant 700 €, Montreuil": Answers(
        adults=(
            Adult(36, "salarie", 1430.0, 0.0, 0.0, "none"),
            Adult(34, "inactif", 0.0, 0.0, 0.0, "none"),
        ),
        children=(4, 9),
        housing="tenant",
        rent=700.0,
        postal_code="93100",
        commune="93048",
        received=(),
    ),
    "retiree aged 70, pension 950 €, social housing 420 €, Marseille": Answers(
        adults=(Adult(70, "retraite", 0.0, 0.0, 950.0, "none"),),
        children=(),
        housing="social_tenant",
        rent=420.0,
        postal_code="13003",
        commune="13055",
        received=(),
    ),
}


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and max of durations in seconds, in milliseconds."""
    values = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "max_ms": values[-1] if values else float("nan"),
    }


async def tick(stop: asyncio.Event, interval: float = TICK_S) -> list[float]:
    """How late (ms) each ``asyncio.sleep(interval)`` wakes, until ``stop`` is set: the event
    loop's lag as any handler of the server would feel it."""
    lateness: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(interval)
        lateness.append((time.perf_counter() - started - interval) * 1000)
    return lateness


async def ticker_for(seconds: float) -> list[float]:
    """``tick`` for ``seconds``, nothing else on this event loop."""
    stop = asyncio.Event()
    ticker = asyncio.create_task(tick(stop))
    await asyncio.sleep(seconds)
    stop.set()
    return await ticker


def lag_summary(lateness: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max lateness in ms, and how many ticks."""
    values = sorted(lateness)
    return {
        "ticks": len(values),
        "lag_p50_ms": percentile(values, 50),
        "lag_p99_ms": percentile(values, 99),
        "lag_max_ms": values[-1] if values else float("nan"),
    }


def pool_processes(worker_pids: Sequence[int]) -> list[psutil.Process]:
    """The workers and their parent, the fork server (which holds the model too, and forks
    replacements). Fails if the workers do not share one parent."""
    workers = [psutil.Process(pid) for pid in worker_pids]
    parents = {worker.ppid() for worker in workers}
    if len(parents) != 1:
        raise RuntimeError(f"the workers have several parents: {sorted(parents)}")
    return [psutil.Process(parents.pop()), *workers]


def memory_mb(process: psutil.Process) -> dict[str, float]:
    """RSS, PSS and USS of one process, in MB."""
    info = process.memory_full_info()
    return {"rss_mb": info.rss / MB, "pss_mb": info.pss / MB, "uss_mb": info.uss / MB}


async def _child(module: str, job: dict[str, Any], log: Path) -> asyncio.subprocess.Process:
    """``python -m module`` with ``job`` as its first stdin line, stderr to ``log``."""
    with log.open("ab") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    assert process.stdin is not None
    process.stdin.write(json.dumps(job).encode() + b"\n")
    await process.stdin.drain()
    return process


async def _answer(process: asyncio.subprocess.Process, log: Path) -> dict[str, Any]:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        await process.wait()
        raise RuntimeError(f"no answer (exit {process.returncode}); see {log}")
    answer: dict[str, Any] = json.loads(line)
    return answer


async def cold_run(module: str, job: dict[str, Any], log: Path) -> dict[str, Any]:
    """One fresh process of ``module``: its own times, and spawn → first result."""
    started = time.perf_counter()
    process = await _child(module, job, log)
    answer = await _answer(process, log)
    answer["spawn_to_result_s"] = time.perf_counter() - started
    assert process.stdin is not None
    process.stdin.close()
    if await process.wait() != 0:
        raise RuntimeError(f"{module} exited with {process.returncode}; see {log}")
    return answer


async def baseline_warm(job: dict[str, Any], log: Path) -> dict[str, Any]:
    """The bare script's latencies and batch, then its memory while it still lives."""
    process = await _child("bench.raw_openfisca", {**job, "mode": "warm"}, log)
    try:
        answer = await _answer(process, log)
        answer["memory"] = memory_mb(psutil.Process(process.pid))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await process.wait()
    return answer


async def ours_warm(
    situations: list[dict[str, Any]], variables: list[tuple[str, str]], repeat: int
) -> dict[str, Any]:
    """Our pool in this process: latencies, memory, and the event loop under concurrent checks
    and idle."""
    engine = RightsEngine(WORKERS)
    try:
        started = time.perf_counter()
        await engine.start()
        ready_s = time.perf_counter() - started
        for one in situations:
            await engine.calculate(one, variables)
        latencies: list[float] = []
        in_worker: list[float] = []
        for index in range(repeat):
            started = time.perf_counter()
            out = await engine.calculate(situations[index % len(situations)], variables)
            latencies.append(time.perf_counter() - started)
            in_worker.append(out["seconds"])

        processes = pool_processes(engine.worker_pids())
        memory = [{"process": "fork server", **memory_mb(processes[0])}]
        memory += [{"process": f"worker {p.pid}", **memory_mb(p)} for p in processes[1:]]

        stop = asyncio.Event()
        ticker = asyncio.create_task(tick(stop))
        await asyncio.sleep(TICK_S * 4)  # the ticker running before the checks arrive
        started = time.perf_counter()
        outs = await asyncio.gather(
            *(
                engine.calculate(situations[index % len(situations)], variables)
                for index in range(CONCURRENT)
            )
        )
        concurrent_s = time.perf_counter() - started
        stop.set()
        busy = await ticker
    finally:
        await engine.close()
    # The same ticker as long with nothing running (the pool is stopped, its processes gone),
    # then beside two CPU-bound processes that are not ours: the share of the lag that is only
    # the cores being busy.
    idle = await ticker_for(concurrent_s)
    burners = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
        for _ in range(WORKERS)
    ]
    try:
        contended = await ticker_for(concurrent_s)
    finally:
        for burner in burners:
            burner.kill()
            await burner.wait()
    return {
        "ready_s": ready_s,
        "latencies_s": latencies,
        "in_worker_s": in_worker,
        "memory": memory,
        "concurrent_s": concurrent_s,
        "lag_busy": lag_summary(busy),
        "lag_idle": lag_summary(idle),
        "lag_contended": lag_summary(contended),
        "concurrent_in_worker_s": [out["seconds"] for out in outs],
        "concurrent_workers": len({out["pid"] for out in outs}),
    }


def _sum(memory: list[dict[str, Any]], key: str) -> float:
    return float(sum(m[key] for m in memory))


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Cold runs of both, the bare script's warm run, then our pool's; one table."""
    cold_runs = QUICK["cold_runs"] if env.quick else COLD_RUNS
    repeat = QUICK["repeat"] if env.quick else REPEAT
    month = date.today().replace(day=1)
    situations = [situation(answers, month) for answers in HOUSEHOLDS.values()]
    variables = results.variables(month)
    job = {
        "situations": situations,
        "variables": variables,
        "repeat": repeat,
        "batch": CONCURRENT,
    }
    log = env.server.log_path.parent / (
        env.server.log_path.stem.removesuffix("-server") + "-rights.log"
    )

    cold_ours: list[dict[str, Any]] = []
    cold_base: list[dict[str, Any]] = []
    for _ in range(cold_runs):
        cold_ours.append(await cold_run("bench.rights_cold", job, log))
        cold_base.append(await cold_run("bench.raw_openfisca", {**job, "mode": "cold"}, log))
    base = await baseline_warm(job, log)
    ours = await ours_warm(situations, variables, repeat)

    ours_lat, base_lat = summary_ms(ours["latencies_s"]), summary_ms(base["latencies_s"])
    in_worker = summary_ms(ours["in_worker_s"])
    memory = ours["memory"]
    workers = memory[1:]
    base_mem = base["memory"]
    busy, idle, contended = ours["lag_busy"], ours["lag_idle"], ours["lag_contended"]
    parallel_s = base["batch_s"] / WORKERS
    cold_note = (
        f"median of {cold_runs} fresh processes; ours: RightsEngine({WORKERS}).start() (fork "
        "server started, model loaded and one household computed in it, workers forked); "
        "baseline: import openfisca_france + FranceTaxBenefitSystem()"
    )
    first_note = (
        "ours: the first check after start() (the fork server computed a warm-up household "
        "before forking); baseline: the first computation in its process, caches cold"
    )
    warm_note = (
        f"{repeat} sequential checks over {len(HOUSEHOLDS)} households, after one of each; "
        "ours: round trip from the event loop to a worker and back; baseline: one computation "
        "in-process"
    )
    memory_note = (
        f"ours: fork server + {len(workers)} workers after {repeat + len(HOUSEHOLDS)} checks; "
        "baseline: the bare script's process after its computations"
    )
    lag_note = (
        f"a ticker sleeping {TICK_S * 1000:.0f} ms: how late it wakes while {CONCURRENT} checks "
        "run concurrently (ours) / with nothing running for as long (baseline)"
    )
    contended_note = (
        f"the same ticker beside {WORKERS} processes spinning in Python (not ours), as long: "
        "the lag that busy cores alone cause on this machine"
    )
    rows = [
        Row(
            "cold: start → ready",
            "s",
            _median(cold_ours, "ready_s"),
            _median(cold_base, "ready_s"),
            BASELINE,
            note=cold_note,
        ),
        Row(
            "cold: first check after ready",
            "s",
            _median(cold_ours, "first_s"),
            _median(cold_base, "first_s"),
            BASELINE,
            note=first_note,
        ),
        Row(
            "cold: process spawn → first result",
            "s",
            _median(cold_ours, "spawn_to_result_s"),
            _median(cold_base, "spawn_to_result_s"),
            BASELINE,
            note=cold_note,
        ),
        Row(
            "warm check p50", "ms", ours_lat["p50_ms"], base_lat["p50_ms"], BASELINE, note=warm_note
        ),
        Row(
            "warm check p95", "ms", ours_lat["p95_ms"], base_lat["p95_ms"], BASELINE, note=warm_note
        ),
        Row(
            "memory: RSS, sum over the pool",
            "MB",
            _sum(memory, "rss_mb"),
            base_mem["rss_mb"],
            BASELINE,
            note=memory_note,
        ),
        Row(
            "memory: PSS, sum over the pool",
            "MB",
            _sum(memory, "pss_mb"),
            base_mem["pss_mb"],
            BASELINE,
            note=memory_note,
        ),
        Row(
            "memory: USS, sum over the pool",
            "MB",
            _sum(memory, "uss_mb"),
            base_mem["uss_mb"],
            BASELINE,
            note=memory_note,
        ),
        Row(
            "memory: USS of one worker (what one more adds)",
            "MB",
            _sum(workers, "uss_mb") / len(workers),
            base_mem["uss_mb"],
            BASELINE,
            note=memory_note,
        ),
        Row(
            f"event-loop lag p50, {CONCURRENT} checks running",
            "ms",
            busy["lag_p50_ms"],
            idle["lag_p50_ms"],
            "same ticker, idle",
            note=lag_note,
        ),
        Row(
            f"event-loop lag p99, {CONCURRENT} checks running",
            "ms",
            busy["lag_p99_ms"],
            idle["lag_p99_ms"],
            "same ticker, idle",
            note=lag_note,
        ),
        Row(
            f"event-loop lag max, {CONCURRENT} checks running",
            "ms",
            busy["lag_max_ms"],
            idle["lag_max_ms"],
            "same ticker, idle",
            note=lag_note,
        ),
        Row(
            f"event-loop lag p99, {CONCURRENT} checks running",
            "ms",
            busy["lag_p99_ms"],
            contended["lag_p99_ms"],
            f"same ticker, {WORKERS} CPU-bound processes",
            note=contended_note,
        ),
        Row(
            f"event-loop lag max, {CONCURRENT} checks running",
            "ms",
            busy["lag_max_ms"],
            contended["lag_max_ms"],
            f"same ticker, {WORKERS} CPU-bound processes",
            note=contended_note,
        ),
        Row(
            f"{CONCURRENT} concurrent checks, wall time",
            "s",
            ours["concurrent_s"],
            parallel_s,
            f"{CONCURRENT} bare computations / {WORKERS}",
            note=(
                f"ours: {CONCURRENT} engine.calculate at once on {WORKERS} workers; baseline: "
                f"{CONCURRENT} back-to-back computations in the bare script, divided by "
                f"{WORKERS} (perfect parallelism)"
            ),
        ),
    ]
    details = [
        {"run": f"cold {i + 1}", "who": who, **{k: r[k] for k in COLD_KEYS}}
        for i, (o, b) in enumerate(zip(cold_ours, cold_base, strict=True))
        for who, r in (("ours", o), (BASELINE, b))
    ]
    return {
        "title": "Rights check: OpenFisca-France pool, cold and warm latency, memory, event loop",
        "status": "ok",
        "params": {
            "workers": WORKERS,
            "cold_runs": cold_runs,
            "warm_checks": repeat,
            "concurrent_checks": CONCURRENT,
            "workers_that_answered_them": ours["concurrent_workers"],
            "month": f"{month:%Y-%m}",
            "variables": len(variables),
            "households": "; ".join(HOUSEHOLDS),
            "openfisca-france": metadata.version("openfisca-france"),
            "openfisca-core": metadata.version("openfisca-core"),
            "psutil": psutil.__version__,
        },
        "rows": [r.as_dict() for r in rows],
        "details": details,
        "tables": [
            {
                "title": "Cold start of our pool, per run (s)",
                "rows": [
                    {"run": f"cold {i + 1}", **{k: r[k] for k in POOL_COLD_KEYS}}
                    for i, r in enumerate(cold_ours)
                ],
            },
            {
                "title": "Warm checks (ms)",
                "rows": [
                    {"who": "ours, round trip", **ours_lat},
                    {"who": "ours, inside the worker", **in_worker},
                    {"who": BASELINE, **base_lat},
                    {
                        "who": f"ours, {CONCURRENT} concurrent, inside the worker",
                        **summary_ms(ours["concurrent_in_worker_s"]),
                    },
                ],
            },
            {
                "title": "Memory after the warm checks (MB)",
                "rows": [*memory, {"process": BASELINE, **base_mem}],
            },
            {
                "title": "Event-loop lag (ms)",
                "rows": [
                    {"ticker": f"{CONCURRENT} checks running", **busy},
                    {"ticker": "idle", **idle},
                    {"ticker": f"{WORKERS} CPU-bound processes, not ours", **contended},
                ],
            },
        ],
    }
