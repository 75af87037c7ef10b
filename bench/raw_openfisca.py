"""The baseline of bench/rights.py: OpenFisca-France in a bare script — no pool, no event loop,
no code of ours — computing the same households the same way (``SimulationBuilder``, then
``simulation.calculate`` of each variable, as server/rights/compute.py does).

``python -m bench.raw_openfisca`` reads one JSON line on stdin:
``{"mode": "cold" | "warm", "situations": [...], "variables": [[name, period], ...],
"warmup": N, "repeat": N, "batch": N}`` and writes one JSON line on stdout.

- ``cold``: import the model, build ``FranceTaxBenefitSystem``, compute ``situations[0]`` once;
  exit.
- ``warm``: then compute each situation once (warm-up, not counted), ``repeat`` computations
  cycling through the situations (one latency each), and ``batch`` more back to back (their
  wall time); write the result, then stay alive until stdin closes so that the caller can read
  this process's memory after its computations.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any


def compute(system: Any, situation: dict[str, Any], variables: Sequence[Sequence[str]]) -> None:
    """One household, every variable: what a worker of ours does for a check."""
    from openfisca_core.simulation_builder import SimulationBuilder

    simulation = SimulationBuilder().build_from_entities(system, situation)
    for variable, period in variables:
        [item.item() for item in simulation.calculate(variable, period)]


def main() -> None:
    """Read the job, compute, answer (see the module docstring)."""
    job = json.loads(sys.stdin.readline())
    situations, variables = job["situations"], job["variables"]
    began = time.perf_counter()
    from openfisca_france import FranceTaxBenefitSystem

    imported = time.perf_counter()
    system = FranceTaxBenefitSystem()
    built = time.perf_counter()
    compute(system, situations[0], variables)
    first = time.perf_counter()
    out: dict[str, Any] = {
        "import_s": imported - began,
        "build_s": built - imported,
        "ready_s": built - began,
        "first_s": first - built,
    }
    if job["mode"] == "warm":
        for situation in situations:
            compute(system, situation, variables)
        latencies = []
        for index in range(job["repeat"]):
            started = time.perf_counter()
            compute(system, situations[index % len(situations)], variables)
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        for index in range(job["batch"]):
            compute(system, situations[index % len(situations)], variables)
        out |= {"latencies_s": latencies, "batch_s": time.perf_counter() - started}
    print(json.dumps(out), flush=True)
    if job["mode"] == "warm":
        sys.stdin.read()  # until the caller has read our memory and closes stdin


if __name__ == "__main__":
    main()
