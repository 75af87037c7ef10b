"""`permanence serve` as a real process, started and stopped as a supervisor (systemd) would:
the restart test runs one on SQLite, the cluster tests two on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from server.settings import PREFIX, Settings, load_settings
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


@dataclass
class ServeProcess:
    """One server process on its own port and data folder; ``settings`` are its environment
    (PERMANENCE_* without the prefix), on top of the data folder, the URL and a secret key."""

    data_dir: Path
    name: str = "server"
    settings_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    # Put before the command (e.g. ``ip netns exec NAME``: tests/netns.py).
    prefix: list[str] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Its own base URL (BASE_URL unless ``settings_env`` names another, a proxy's)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The process environment: our settings only (none inherited from this process)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
        env.update(
            {
                f"{PREFIX}DATA_DIR": str(self.data_dir),
                f"{PREFIX}BASE_URL": self.url,
                f"{PREFIX}SECRET_KEY": "process-test-secret-" + "k" * 32,
                f"{PREFIX}LOG_LEVEL": "INFO",
                # An OpenFisca pool per server process would cost each start seconds of CPU;
                # the rights tests share one in-process pool (conftest `rights_engine`).
                f"{PREFIX}RIGHTS_WORKERS": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({PREFIX + key: value for key, value in self.settings_env.items()})
        return env

    @property
    def settings(self) -> Settings:
        """The settings the process reads."""
        return load_settings(self.env)

    @property
    def log(self) -> Path:
        """The output of its latest start."""
        return self.logs[-1]

    async def migrate(self) -> None:
        """`permanence migrate` on its database."""
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "server.cli", "migrate"),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _out, errors = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, errors.decode()

    async def start(self) -> None:
        """Start `serve` and wait until /healthz answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.prefix,
                sys.executable,
                *("-m", "server.cli", "serve", "--port", str(self.port)),
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self.process.returncode is None, log.read_text()
            if await self.healthy():
                return
            assert time.monotonic() < deadline, f"not ready: {log.read_text()}"
            # Polling is the only way to learn another process is listening.
            await asyncio.sleep(0.1)

    async def healthy(self) -> bool:
        """Whether /healthz answers 200 (from this process's network)."""
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(self.url + "/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

    async def stop(self) -> float:
        """SIGTERM, and wait for the process to exit by itself, cleanly; how long it took. One
        that does not stop is killed and the test fails (never left running)."""
        assert self.process is not None
        if self.process.returncode is not None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                code = await self.process.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"{self.name} did not stop on SIGTERM") from None
        assert code == 0, self.log.read_text()[-3000:]
        return time.monotonic() - started

    async def kill(self) -> None:
        """SIGKILL: no clean-up at all, as when a machine dies (and the tests' last resort)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
