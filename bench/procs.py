"""Server subprocesses (ours and the raw baseline), file-descriptor limits, RSS and CPU readings,
and a description of the machine for every published figure."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = (
    "aiohttp",
    "python-socketio",
    "python-engineio",
    "pydantic",
    "SQLAlchemy",
    "aiosqlite",
    "limits",
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (thousands of sockets); returns it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 chosen by the OS."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time consumed so far by a process (all its threads), or by one of
    its threads (``thread``: its id; the main thread's is the pid)."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    stat = Path(path).read_text(encoding="ascii")
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of stat(5)): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def system_busy_seconds() -> float:
    """CPU time all processes of the machine have used (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuMeter:
    """CPU used during a phase by each of our processes, by this process, and by anything else
    on the machine (other work skews latency on a 2-core machine: we report it, per run)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        values["bench client"] = time.process_time()
        values["machine"] = system_busy_seconds()
        values["wall"] = time.perf_counter()
        return values

    def stop(self) -> dict[str, float]:
        """Percent of one core used since creation: each process, ``bench client``, ``other``."""
        end = self._read()
        delta = {k: end[k] - self._start[k] for k in end}
        wall = delta.pop("wall")
        machine = delta.pop("machine")
        result = {name: used / wall * 100 for name, used in delta.items()}
        result["other"] = max(0.0, machine - sum(delta.values())) / wall * 100
        return result


async def wait_until_quiet(max_wait_s: float, threshold_pct: float, sample_s: float = 2.0) -> float:
    """Wait (up to ``max_wait_s``) until the machine's CPU use, all processes but this one,
    drops under ``threshold_pct`` of a core over ``sample_s``; returns the last sample (%)."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        meter = CpuMeter({})
        await asyncio.sleep(sample_s)
        busy = meter.stop()["other"]
        if busy < threshold_pct or time.perf_counter() >= deadline:
            return busy
        print(f"  machine busy ({busy:.0f}% of a core used by other processes), waiting…")


@dataclass
class ServerProcess:
    """A server started as its own process on 127.0.0.1, stopped by ``stop``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id (the Python interpreter itself, no shell in between)."""
        assert self.process is not None
        return self.process.pid

    async def start(self, ready_path: str) -> None:
        """Start the process and wait until ``ready_path`` answers 200."""
        self._log = self.log_path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile_limit,  # only setrlimit between fork and exec
        )
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), aiohttp.ClientSession() as http:
                # Polling is the only way to learn another process is listening.
                while not await self._ready(http, ready_path):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise TimeoutError(f"{self.name} not ready in time; see {self.log_path}") from None

    async def _ready(self, http: aiohttp.ClientSession, path: str) -> bool:
        self.check_alive()
        try:
            async with http.get(self.url + path) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def stop(self) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not exit in time."""
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def check_alive(self) -> None:
        """Fail loudly if the server died during a benchmark."""
        if self.process is None or self.process.returncode is not None:
            raise RuntimeError(f"{self.name} is not running; see {self.log_path}")


async def run_command(argv: list[str], env: dict[str, str]) -> None:
    """Run a command to completion (e.g. migrations); raise with its output if it fails."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        text = output.decode(errors="replace")
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{text}")


def load_average() -> str:
    """1, 5 and 15-minute load averages: other work on the machine skews every figure."""
    return " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _free_h() -> str:
    try:
        out = subprocess.run(["free", "-h"], capture_output=True, text=True, check=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unavailable"
    return out.stdout.rstrip()


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+uncommitted changes" if dirty else "")


def machine_info() -> dict[str, Any]:
    """Everything a reader needs to compare a figure: CPUs, memory, CPU model, versions, date."""
    versions: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "free_h": _free_h(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "libraries": versions,
        "git": _git_revision(),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "load_average_at_start": load_average(),
    }
