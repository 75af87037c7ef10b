"""Signalling under a login flood: the one-way relay latency of `/assist` candidate events
(beneficiary → server → volunteer, as in bench/relay_latency.py) while a botnet posts wrong
logins at LOGIN_RATE per second, each from its own address (X-Forwarded-For through the trusted
proxy, so that per-client limits do not stop them and every attempt costs an argon2 hash).
Baseline: the same probe, same rate and duration, with no login traffic, measured in the same
run just before.

The probe's latency includes the relay's own work (~0.2 ms): what grows under the flood is the
event loop's lag, which every socket of the server shares. Logins hash in the password pool
(PASSWORD_HASH_THREADS) under LOGIN_MAX_CONCURRENT; the answers (401, 303, 503) are counted.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from typing import Any

import aiohttp

from bench.context import BenchEnv, Row, percentile
from bench.fixtures import VOLUNTEER_EMAIL, VOLUNTEER_PASSWORD
from bench.procs import CpuMeter
from bench.relay_latency import Pair, Recorder, ours_pairs, paced_send, pair_peers
from bench.wsclient import client_session

LOGIN_RATE = 50  # login attempts per second, open loop
PROBE_RATE = 50  # probe candidates per second (all pairs together)
PAIRS = 5  # per phase: 10 probe events/s each, well under SOCKET_EVENTS_PER_PEER
DURATION_S = 10.0
QUICK_DURATION_S = 4.0
TARGET_P99_MS = 20.0
RIGHT_PASSWORD_EVERY = 10  # one attempt in ten is the volunteer's real password
DRAIN_TIMEOUT_S = 10.0
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def address(index: int) -> str:
    """A distinct IPv4 address per attempt (10.x.y.z): a botnet, one try each."""
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255 or 1}"


async def csrf_token(http: aiohttp.ClientSession, base_url: str) -> str:
    """The login form's CSRF token (the jar keeps the matching cookie)."""
    async with http.get(base_url + "/login") as response:
        match = CSRF_RE.search(await response.text())
    if match is None:
        raise RuntimeError("no CSRF token on the login page")
    return match.group(1)


async def attempt(
    http: aiohttp.ClientSession, base_url: str, token: str, index: int
) -> tuple[int, float]:
    """One login POST; its status and its duration (ms)."""
    if index % RIGHT_PASSWORD_EVERY == 0:
        email, password = VOLUNTEER_EMAIL, VOLUNTEER_PASSWORD
    elif index % 2:
        email, password = VOLUNTEER_EMAIL, f"wrong-{index}"
    else:
        email, password = f"nobody{index}@bench.invalid", f"wrong-{index}"
    started = time.perf_counter()
    async with http.post(
        base_url + "/login",
        data={"csrf_token": token, "email": email, "password": password},
        headers={"X-Forwarded-For": address(index)},
        allow_redirects=False,
    ) as response:
        await response.read()
        return response.status, (time.perf_counter() - started) * 1000


async def flood(base_url: str, rate: int, duration_s: float) -> list[tuple[int, float]]:
    """Open-loop login attempts at ``rate`` per second for ``duration_s``; every answer."""
    jar = aiohttp.CookieJar(unsafe=True)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(cookie_jar=jar, connector=connector) as http:
        token = await csrf_token(http, base_url)
        tasks = []
        start = time.perf_counter()
        for index in range(int(rate * duration_s)):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(attempt(http, base_url, token, index + 1)))
        return list(await asyncio.gather(*tasks))


async def probe(pairs: list[Pair], recorder: Recorder, duration_s: float) -> list[float]:
    """PROBE_RATE candidates per second for ``duration_s``; their one-way latencies (ms)."""
    total = int(PROBE_RATE * duration_s)
    recorder.reset(total)
    await paced_send(pairs, PROBE_RATE, duration_s)
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            await recorder.complete.wait()
    except TimeoutError:
        pass  # reported as delivered < sent
    return sorted(ns / 1e6 for ns in recorder.latencies_ns)


def summary(name: str, latencies: list[float], sent: int, cpu: dict[str, float]) -> dict[str, Any]:
    """Percentiles of one phase."""
    return {
        "phase": name,
        "sent": sent,
        "delivered": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "server_cpu_pct": cpu["ours"],
        "other_cpu_pct": cpu["other"],
    }


async def run(server_url: str, env: BenchEnv) -> dict[str, Any]:
    """Baseline phase (probe alone), then the flood phase (probe + logins)."""
    duration = QUICK_DURATION_S if env.quick else DURATION_S
    sent = int(PROBE_RATE * duration)
    pids = {"ours": env.server.pid}
    async with client_session() as http:
        phases: dict[str, list[Pair]] = {
            "no logins": await ours_pairs(http, env, PAIRS),
            f"{LOGIN_RATE} logins/s": await ours_pairs(http, env, PAIRS),
        }
        recorders = {name: Recorder() for name in phases}
        for name, group in phases.items():
            for pair in group:
                pair.receiver.on_candidate = recorders[name].handler(pair)
        try:
            await flood(server_url, 10, 0.5)  # warm-up: the pool's thread, the templates
            baseline_name, flood_name = list(phases)
            meter = CpuMeter(pids)
            baseline = await probe(phases[baseline_name], recorders[baseline_name], duration)
            runs = [summary(baseline_name, baseline, sent, meter.stop())]
            meter = CpuMeter(pids)
            flooded, answers = await asyncio.gather(
                probe(phases[flood_name], recorders[flood_name], duration),
                flood(server_url, LOGIN_RATE, duration),
            )
            runs.append(summary(flood_name, flooded, sent, meter.stop()))
            env.server.check_alive()
        finally:
            await asyncio.gather(
                *(
                    p.close()
                    for group in phases.values()
                    for pair in group
                    for p in pair_peers(pair)
                )
            )
    statuses = Counter(status for status, _ms in answers)
    login_ms = sorted(ms for _status, ms in answers)
    ours, base = runs[1], runs[0]
    all_delivered = ours["delivered"] == ours["sent"]
    rows = [
        Row("relay latency p50", "ms", ours["p50_ms"], base["p50_ms"], "same probe, no logins"),
        Row(
            "relay latency p99",
            "ms",
            ours["p99_ms"],
            base["p99_ms"],
            "same probe, no logins",
            f"≤ {TARGET_P99_MS:g} ms",
            ours["p99_ms"] <= TARGET_P99_MS and all_delivered,
        ),
        Row("relay latency max", "ms", ours["max_ms"], base["max_ms"], "same probe, no logins"),
        Row(
            "probe events delivered",
            "msgs",
            ours["delivered"],
            base["delivered"],
            "same probe, no logins",
            f"= {sent}",
            all_delivered,
        ),
        Row(
            "server CPU",
            "% of a core",
            ours["server_cpu_pct"],
            base["server_cpu_pct"],
            "same probe, no logins",
        ),
    ]
    return {
        "title": f"Signalling latency under a login flood ({LOGIN_RATE} logins/s)",
        "params": {
            "login_rate_per_s": LOGIN_RATE,
            "probe_rate_per_s": PROBE_RATE,
            "pairs_per_phase": PAIRS,
            "duration_s": duration,
            "login_answers": dict(sorted(statuses.items())),
            "login_response_p50_ms": round(percentile(login_ms, 50), 1),
            "login_response_p99_ms": round(percentile(login_ms, 99), 1),
            "addresses": "one per attempt (X-Forwarded-For, TRUST_PROXY=true)",
        },
        "runs": runs,
        "rows": [row.as_dict() for row in rows],
        "details": runs,
    }
