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
import os
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

MODEL = "openfisca-france"
# A household computed at load time so that the first real check does not pay for the caches.
WARM_SITUATION: dict[str, Any] = {
    "individus": {
        "a": {
            "date_naissance": {"ETERNITY": "1980-01-01"},
            "salaire_net": {"2025-01": 800, "2025-02": 800, "2025-03": 800, "2025-04": 800},
        },
        "b": {"date_naissance": {"ETERNITY": "2018-01-01"}},
    },
    "familles": {"f": {"parents": ["a"], "enfants": ["b"]}},
    "foyers_fiscaux": {"ff": {"declarants": ["a"], "personnes_a_charge": ["b"]}},
    "menages": {
        "m": {
            "personne_de_reference": ["a"],
            "enfants": ["b"],
            "depcom": {"2025-04": "93048"},
            "loyer": {"2025-04": 500},
            "statut_occupation_logement": {"2025-04": "locataire_vide"},
        }
    },
}
WARM_VARIABLES = (
    ("rsa", "2025-04"),
    ("ppa", "2025-04"),
    ("aide_logement", "2025-04"),
    ("af", "2025-04"),
    ("asf", "2025-04"),
    ("cmu_c", "2025-04"),
    ("ars", "2025"),
    ("cheque_energie", "2025"),
)

# Workers run at a lower priority than the web process: a check may take a second longer when
# the machine is busy, a room's signalling must not wait for it (the event loop keeps its lag
# under 20 ms while checks run: tests/test_rights_engine.py).
NICENESS = 10

_system: Any = None
load_seconds: float | None = None


def version() -> str:
    """The installed OpenFisca-France version (recorded with every result)."""
    return metadata.version(MODEL)


def system() -> Any:
    """The tax-benefit system of this process, loaded (and warmed) on first use."""
    global _system, load_seconds
    if _system is None:
        with contextlib.suppress(OSError):
            os.nice(NICENESS)  # once: the workers forked from a warm fork server inherit it
        started = time.perf_counter()
        from openfisca_france import FranceTaxBenefitSystem

        _system = FranceTaxBenefitSystem()
        _calculate(_system, WARM_SITUATION, WARM_VARIABLES)
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
