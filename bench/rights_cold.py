"""The cold start of the rights engine, in a fresh process (bench/rights.py runs it 3 times).

A new Python process has no fork server yet: ``RightsEngine(2).start()`` starts one, which
imports ``server.rights.preload`` (OpenFisca-France loaded and one household computed), forks
the two workers and waits until both answer. Then one check, as the first beneficiary's.

``python -m bench.rights_cold`` reads one JSON line on stdin (``{"situations": [...],
"variables": [[name, period], ...]}``, as bench/raw_openfisca.py) and writes one JSON line:
``import_s`` (our engine module), ``ready_s`` (``start()`` → every worker ready), ``first_s``
(the first check's round trip, ``situations[0]``), ``worker_seconds`` (its time in the worker).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import psutil

WORKERS = 2


async def cold(job: dict[str, Any]) -> None:
    """Import, start, check once, say the times of each step (before stopping the pool: the
    caller's clock stops at that line)."""
    began = time.perf_counter()
    from server.rights.engine import RightsEngine

    imported = time.perf_counter()
    engine = RightsEngine(WORKERS)
    try:
        clock = time.time()  # psutil's process creation times are on this clock
        await engine.start()
        ready = time.perf_counter()
        ready_clock = time.time()
        workers = [psutil.Process(pid) for pid in engine.worker_pids()]
        forked = min(worker.create_time() for worker in workers)
        fork_server = psutil.Process(workers[0].ppid()).create_time()
        variables = [tuple(v) for v in job["variables"]]
        out = await engine.calculate(job["situations"][0], variables)
        first = time.perf_counter()
        times = {
            "import_s": imported - began,
            "ready_s": ready - imported,
            "first_s": first - ready,
            "worker_seconds": out["seconds"],
            "engine_cold_seconds": engine.cold_seconds,
            # start() → the fork server's process exists → it has preloaded the model and
            # forks the first worker → every worker answered (psutil times: ±10 ms).
            "fork_server_spawn_s": fork_server - clock,
            "preload_s": forked - fork_server,
            "forked_to_ready_s": ready_clock - forked,
        }
        print(json.dumps(times), flush=True)
    finally:
        await engine.close()


def main() -> None:
    """Read the job, measure, answer."""
    asyncio.run(cold(json.loads(sys.stdin.readline())))


if __name__ == "__main__":
    main()
