"""The rights benchmark's instruments (bench/rights.py), without OpenFisca: the event-loop ticker,
the pool's processes found through the workers' parent, and their memory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from bench.rights import lag_summary, memory_mb, pool_processes, summary_ms, tick, ticker_for


async def test_ticker_sees_the_event_loop_blocked() -> None:
    stop = asyncio.Event()
    ticker = asyncio.create_task(tick(stop))
    await asyncio.sleep(0.05)
    time.sleep(0.08)  # noqa: ASYNC251  (the point: a computation blocking the event loop)
    await asyncio.sleep(0.05)
    stop.set()
    summary = lag_summary(await ticker)
    assert summary["lag_max_ms"] >= 60
    assert summary["lag_p50_ms"] < 20
    assert summary["ticks"] >= 5


async def test_ticker_on_an_idle_loop_runs_for_the_time_asked_and_is_rarely_late() -> None:
    started = time.perf_counter()
    lateness = await ticker_for(0.2)
    assert 0.2 <= time.perf_counter() - started < 0.5
    assert len(lateness) >= 10
    assert lag_summary(lateness)["lag_p50_ms"] < 5


def test_durations_are_summarised_in_milliseconds_by_nearest_rank() -> None:
    summary = summary_ms([i / 1000 for i in range(1, 101)])  # 1 … 100 ms
    assert summary == pytest.approx({"p50_ms": 50.0, "p95_ms": 95.0, "max_ms": 100.0})


@pytest.fixture
def children() -> Iterator[list[int]]:
    """Two processes of this one, as a pool's workers are of the fork server."""
    processes = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(2)
    ]
    yield [process.pid for process in processes]
    for process in processes:
        process.kill()
        process.wait()


def test_pool_is_the_workers_and_their_parent(children: list[int]) -> None:
    processes = pool_processes(children)
    assert [p.pid for p in processes] == [os.getpid(), *children]


def test_workers_of_different_parents_are_refused(children: list[int]) -> None:
    with pytest.raises(RuntimeError, match="several parents"):
        pool_processes([children[0], os.getpid()])


def test_memory_of_a_process_orders_rss_pss_uss() -> None:
    memory = memory_mb(psutil.Process())
    assert 0 < memory["uss_mb"] <= memory["pss_mb"] <= memory["rss_mb"]
