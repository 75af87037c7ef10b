"""What runs inside the pool's worker processes: OpenFisca-France, loaded once per process.

Only ``server/rights/engine.py`` sends work here, through a process pool; the web process never
imports this module's model. With the ``forkserver`` start method the engine asks the fork
server to import this module first (``preload``): the model is loaded, and one household
computed to fill its caches, once in the fork server, and every worker forks from it already
warm (and shares those pages with its siblings until it writes to them).

Values cross the process boundary as plain Python: a dict of variable → float or bool.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Sequence
from datetime import date
from importlib import metadata
from typing import Any

MODEL = "openfisca-france"


def _warm_up(tax_benefit_system: Any) -> None:
    """Compute, for the current month, every benefit of a household that goes through most of
    the model (a couple with a baby and two schoolchildren, one salary and one unemployment
    benefit, a disability, renting): the first real check then finds the parameters of the
    month and the formulas' caches ready (BENCHMARKS.md "Rights check": 2.2 s for a first check
    after a warm-up on another month, 1.7 s warm)."""
    from server.rights.answers import Adult, Answers, situation
    from server.rights.results import variables

    month = date.today().replace(day=1)
    household = Answers(
        adults=(
            Adult(40, "salarie", 1400.0, 0.0, 0.0, "none"),
            Adult(38, "chomeur", 0.0, 600.0, 0.0, "50_79"),
        ),
        children=(1, 7, 12),
        housing="tenant",
        rent=650.0,
        postal_code="93100",
        commune="93048",
        received=(),
    )
    _calculate(tax_benefit_system, situation(household, month), variables(month))


# Workers run at a lower priority than the web process: a check may take a second longer when
# the machine is busy, a room's signalling must not wait for it (the event loop keeps its lag
# under 20 ms while checks run: tests/test_rights_engine.py). 10, as the password-hashing threads
# (server/accounts.py): about a tenth of the web process's share of a busy core. 19 would starve
# the checks themselves on a busy node, for a lag already within its target at 10.
NICENESS = 10

_system: Any = None
load_seconds: float | None = None
_watching: int | None = None  # the process that asked to die with its parent
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies: the fork server with the server
    process that started it, each worker with the fork server. A pool's processes otherwise
    outlive a server killed without a shutdown (SIGKILL, out of memory), holding their memory
    for ever: each child keeps the fork server alive, and the workers wait on a queue whose
    writing end they hold themselves. Once per process (the setting is not inherited by a
    fork); silently nothing where ``prctl`` does not exist.

    A parent that died before the request cannot send the signal any more: a worker forked
    from the fork server knows its parent (the value of ``_watching`` it inherited) and leaves
    at once if it is gone."""
    global _watching
    pid = os.getpid()
    if _watching == pid:
        return
    parent = _watching if _watching is not None else os.getppid()
    _watching = pid
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


def version() -> str:
    """The installed OpenFisca-France version (recorded with every result)."""
    return metadata.version(MODEL)


def system() -> Any:
    """The tax-benefit system of this process, loaded (and warmed) on first use."""
    global _system, load_seconds
    die_with_parent()
    if _system is None:
        with contextlib.suppress(OSError):
            os.nice(NICENESS)  # once: the workers forked from a warm fork server inherit it
        started = time.perf_counter()
        from openfisca_france import FranceTaxBenefitSystem

        _system = FranceTaxBenefitSystem()
        _warm_up(_system)
        load_seconds = time.perf_counter() - started
    return _system


def _calculate(
    tax_benefit_system: Any, situation: dict[str, Any], variables: Sequence[tuple[str, str]]
) -> dict[str, list[float | bool]]:
    from openfisca_core.simulation_builder import SimulationBuilder

    simulation = SimulationBuilder().build_from_entities(tax_benefit_system, situation)
    return {
        variable: [item.item() for item in simulation.calculate(variable, period)]
        for variable, period in variables
    }


def calculate(situation: dict[str, Any], variables: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Compute ``variables`` (name, period) for ``situation``: ``{"values": {name: [value per
    entity]}, "pid": …, "seconds": …}``. Runs in a worker process."""
    started = time.perf_counter()
    values = _calculate(system(), situation, variables)
    return {"values": values, "pid": os.getpid(), "seconds": time.perf_counter() - started}


def ready() -> dict[str, Any]:
    """Load the model if this worker has not (warm-up), and say who answered."""
    system()
    return {"pid": os.getpid(), "load_seconds": load_seconds, "version": version()}
