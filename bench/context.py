"""What every benchmark receives: the running servers, the data factory, the run mode, and the
small vocabulary of results (a row compares ours with the baseline measured in the same run)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.fixtures import Fixtures, SessionFixture
from bench.procs import ServerProcess


@dataclass
class BenchEnv:
    """The real server (ours), the baseline relays (raw aiohttp WebSocket, bare python-socketio),
    and fresh data on demand.

    A benchmark module exposes ``async def run(server_url: str, env: BenchEnv) -> dict`` and
    gets ``server_url == env.server.url``.
    """

    server: ServerProcess
    raw: ServerProcess
    sio: ServerProcess
    fixtures: Fixtures
    quick: bool

    @property
    def volunteer_cookie(self) -> str:
        """``Cookie`` header of the logged-in volunteer who owns every session."""
        return self.fixtures.volunteer_cookie

    async def new_sessions(self, count: int) -> list[SessionFixture]:
        """Fresh assistance sessions nobody has joined yet."""
        return await self.fixtures.new_sessions(count)


@dataclass(frozen=True)
class Row:
    """One line of the summary table: ours and the baseline, side by side, and their ratio."""

    metric: str
    unit: str
    ours: float | None
    baseline: float | None
    baseline_name: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """ours / baseline."""
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, ratio included."""
        return {**asdict(self), "ratio": self.ratio}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted, non-empty sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])
