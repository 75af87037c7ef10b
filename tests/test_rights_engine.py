"""The rights check's engine (server/rights/): reference households checked by hand against the
official scales, households compared with OpenFisca-France called directly, the process pool
(cold start, a worker killed, ten checks at once with the event loop free), bad answers.

Hand-checked figures (the scales in force in June 2025, from the legal texts):
- RSA, montant forfaitaire for one person from 1 April 2025: 646.52 € (décret 2025-365, +1.7 %).
  Forfait logement (art. R262-10 CASF) for one person: 12 % of it, 77.58 €.
- AAH, full rate from 1 April 2025: 1,033.32 € (décret 2025-365).
- ASPA, one person, from 1 January 2025: 1,034.28 € a month (12,411.08 € a year).
- Complémentaire santé solidaire with participation, a person aged 70 or more: 30 € a month
  (arrêté of 22 March 2022, unchanged since).
- Allocations familiales, two children: 32 % of the BMAF of 474.37 € from 1 April 2025, 151.80 €.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from server.rights import checks
from server.rights.answers import Adult, Answers, AnswersInvalid, parse_answers, situation
from server.rights.benefits import BENEFITS, Verdict
from server.rights.engine import EngineUnavailable, RightsEngine
from server.rights.results import BenefitResult, interpret, variables
from server.runtime import RIGHTS_KEY
from server.settings import Settings
from tests.conftest import serve

JUNE_2025 = date(2025, 6, 1)
ROOT = Path(__file__).resolve().parent.parent


def adult(age: int, activity: str = "inactif", **amounts: Any) -> Adult:
    return Adult(
        age=age,
        activity=activity,
        salary=amounts.get("salary", 0.0),
        unemployment=amounts.get("unemployment", 0.0),
        pension=amounts.get("pension", 0.0),
        disability=amounts.get("disability", "none"),
    )


def household(*adults: Adult, children: tuple[int, ...] = (), **rest: Any) -> Answers:
    return Answers(
        adults=adults,
        children=children,
        housing=rest.get("housing", "hosted"),
        rent=rest.get("rent"),
        postal_code=rest.get("postal_code", "75011"),
        commune=rest.get("commune", "75056"),
        received=tuple(rest.get("received", ())),
    )


async def results_for(
    engine: RightsEngine, answers: Answers, month: date
) -> dict[str, BenefitResult]:
    out = await engine.calculate(situation(answers, month), variables(month))
    return {result.code: result for result in interpret(answers, out["values"])}


def raw_values(engine_out: dict[str, Any]) -> dict[str, Any]:
    return engine_out["values"]


# -- Reference households checked by hand ---------------------------------------------------


async def test_rsa_single_person_hosted_free_is_the_lump_sum_minus_the_housing_flat_rate(
    rights_engine: RightsEngine,
) -> None:
    answers = household(adult(40))
    out = await rights_engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
    assert out["values"]["rsa"][0] == pytest.approx(646.52 - 77.58, abs=0.01)
    results = {r.code: r for r in interpret(answers, out["values"])}
    assert results["rsa"].verdict is Verdict.LIKELY and results["rsa"].amount == 569
    assert results["css_gratuite"].verdict is Verdict.LIKELY
    assert results["ppa"].verdict is Verdict.UNLIKELY and results["ppa"].reason == "ppa_no_work"
    assert results["aide_logement"].reason == "housing_not_tenant"


async def test_rsa_without_home_has_no_housing_flat_rate(rights_engine: RightsEngine) -> None:
    answers = household(adult(40), housing="homeless")
    out = await rights_engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
    assert out["values"]["rsa"][0] == pytest.approx(646.52, abs=0.01)


async def test_aah_full_rate_at_80_percent_and_then_no_rsa(rights_engine: RightsEngine) -> None:
    answers = household(adult(40, disability="80_plus"))
    out = await rights_engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
    assert out["values"]["aah"][0] == pytest.approx(1033.32, abs=0.01)
    # The AAH is a resource of the RSA: 646.52 - 77.58 - 1,033.32 < 0.
    assert out["values"]["rsa"][0] == 0
    results = {r.code: r for r in interpret(answers, out["values"])}
    assert results["aah"].verdict is Verdict.LIKELY and results["aah"].amount == 1033
    assert results["rsa"].verdict is Verdict.UNLIKELY


async def test_aspa_alone_at_70_and_the_health_cover_participation(
    rights_engine: RightsEngine,
) -> None:
    answers = household(adult(70, "retraite"))
    out = await rights_engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
    assert out["values"]["aspa"][0] == pytest.approx(1034.28, abs=0.01)
    # With the ASPA the person is over the free cover's ceiling, under the other one's.
    assert out["values"]["cmu_c"][0] is False
    assert out["values"]["css_participation_forfaitaire"][0] == pytest.approx(30.0)
    results = {r.code: r for r in interpret(answers, out["values"])}
    assert results["css_participation"].verdict is Verdict.LIKELY
    assert results["css_participation"].detail == 30
    assert results["css_gratuite"].verdict is Verdict.UNLIKELY


async def test_allocations_familiales_for_two_children(rights_engine: RightsEngine) -> None:
    answers = household(
        adult(40, "salarie", salary=1426.30),
        adult(38),
        children=(10, 7),
        housing="tenant",
        rent=700.0,
        postal_code="93100",
        commune="93048",
    )
    out = await rights_engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
    assert out["values"]["af"][0] == pytest.approx(0.32 * 474.37, abs=0.01)
    assert out["values"]["af"][0] == pytest.approx(151.80, abs=0.01)


# -- Compared with OpenFisca-France called directly -------------------------------------------


@pytest.fixture(scope="module")
def openfisca() -> Any:
    """OpenFisca-France loaded in this test process (3 s), to compute situations written by
    hand in the tests, independently of server/rights/answers.py."""
    from openfisca_france import FranceTaxBenefitSystem

    return FranceTaxBenefitSystem()


def direct(
    openfisca: Any, situation_json: dict[str, Any], wanted: dict[str, str]
) -> dict[str, float]:
    from openfisca_core.simulation_builder import SimulationBuilder

    simulation = SimulationBuilder().build_from_entities(openfisca, situation_json)
    return {
        name: float(simulation.calculate(name, period).sum()) for name, period in wanted.items()
    }


def months(last: str, count: int) -> list[str]:
    year, month = map(int, last.split("-"))
    index = year * 12 + month - 1
    return [f"{(index - i) // 12:04d}-{(index - i) % 12 + 1:02d}" for i in range(count)]


async def test_prime_activite_couple_two_children_one_minimum_wage_matches_openfisca(
    rights_engine: RightsEngine, openfisca: Any
) -> None:
    # Written by hand: the couple's salary every month of the last three years, rent and
    # commune (Montreuil) every month, ages as dates of birth.
    every = months("2025-06", 37)
    by_hand = {
        "individus": {
            "parent1": {
                "date_naissance": {"ETERNITY": "1984-12-01"},
                "salaire_net": dict.fromkeys(every, 1426.30),
                "salaire_imposable": dict.fromkeys(every, 1426.30),
                "activite": dict.fromkeys(every, "actif"),
            },
            "parent2": {
                "date_naissance": {"ETERNITY": "1986-12-01"},
                "activite": dict.fromkeys(every, "inactif"),
            },
            "child1": {"date_naissance": {"ETERNITY": "2014-12-01"}},
            "child2": {"date_naissance": {"ETERNITY": "2017-12-01"}},
        },
        "familles": {"f": {"parents": ["parent1", "parent2"], "enfants": ["child1", "child2"]}},
        "foyers_fiscaux": {
            "ff": {"declarants": ["parent1", "parent2"], "personnes_a_charge": ["child1", "child2"]}
        },
        "menages": {
            "m": {
                "personne_de_reference": ["parent1"],
                "conjoint": ["parent2"],
                "enfants": ["child1", "child2"],
                "depcom": dict.fromkeys(every, "93048"),
                "loyer": dict.fromkeys(every, 700.0),
                "statut_occupation_logement": dict.fromkeys(every, "locataire_vide"),
            }
        },
    }
    wanted = {"ppa": "2025-06", "aide_logement": "2025-06", "af": "2025-06", "rsa": "2025-06"}
    expected = direct(openfisca, by_hand, wanted)
    answers = household(
        adult(40, "salarie", salary=1426.30),
        adult(38),
        children=(10, 7),
        housing="tenant",
        rent=700.0,
        postal_code="93100",
        commune="93048",
    )
    results = await results_for(rights_engine, answers, JUNE_2025)
    assert expected["ppa"] > 100  # a real prime d'activité, not a zero compared with a zero
    for code in wanted:
        assert (results[code].amount or 0) == round(expected[code]), code
    assert results["ppa"].verdict is Verdict.LIKELY
    assert results["aide_logement"].verdict is Verdict.LIKELY
    assert results["rsa"].verdict is Verdict.UNLIKELY


async def test_single_parent_with_a_baby_matches_openfisca(
    rights_engine: RightsEngine, openfisca: Any
) -> None:
    every = months("2025-06", 37)
    by_hand = {
        "individus": {
            "mother": {
                "date_naissance": {"ETERNITY": "1994-12-01"},
                "activite": dict.fromkeys(every, "inactif"),
            },
            "baby": {"date_naissance": {"ETERNITY": "2024-12-01"}},
        },
        "familles": {"f": {"parents": ["mother"], "enfants": ["baby"]}},
        "foyers_fiscaux": {"ff": {"declarants": ["mother"], "personnes_a_charge": ["baby"]}},
        "menages": {
            "m": {
                "personne_de_reference": ["mother"],
                "enfants": ["baby"],
                "depcom": dict.fromkeys(every, "13055"),
                "loyer": dict.fromkeys(every, 500.0),
                "statut_occupation_logement": dict.fromkeys(every, "locataire_vide"),
            }
        },
    }
    wanted = {
        "rsa": "2025-06",
        "aide_logement": "2025-06",
        "paje_base": "2025-06",
        "asf": "2025-06",
    }
    expected = direct(openfisca, by_hand, wanted)
    answers = household(
        adult(30), children=(0,), housing="tenant", rent=500.0, postal_code="13008", commune="13055"
    )
    results = await results_for(rights_engine, answers, JUNE_2025)
    for code in wanted:
        assert (results[code].amount or 0) == round(expected[code]), code
    assert expected["paje_base"] > 100 and results["paje_base"].verdict is Verdict.LIKELY
    # The ASF depends on the other parent's alimony, which the form does not ask.
    assert results["asf"].verdict is Verdict.CHECK


async def test_this_months_check_matches_openfisca_and_marks_what_is_received(
    rights_engine: RightsEngine, openfisca: Any
) -> None:
    """``evaluate`` for today, from the answers as the form sends them."""
    today = date.today()
    month = f"{today:%Y-%m}"
    every = months(month, 37)
    by_hand = {
        "individus": {
            "p": {
                "date_naissance": {"ETERNITY": f"{today.year - 52}-{today.month:02d}-01"},
                "chomage_net": dict.fromkeys(every, 700.0),
                "chomage_imposable": dict.fromkeys(every, 700.0),
                "activite": dict.fromkeys(every, "chomeur"),
            }
        },
        "familles": {"f": {"parents": ["p"]}},
        "foyers_fiscaux": {"ff": {"declarants": ["p"]}},
        "menages": {
            "m": {
                "personne_de_reference": ["p"],
                "depcom": dict.fromkeys(every, "69123"),
                "loyer": dict.fromkeys(every, 450.0),
                "statut_occupation_logement": dict.fromkeys(every, "locataire_hlm"),
            }
        },
    }
    expected = direct(openfisca, by_hand, {"aide_logement": month, "rsa": month})
    raw = {
        "couple": False,
        "adults": [{"age": 52, "activity": "chomeur", "unemployment": "700", "disability": "none"}],
        "children": [],
        "housing": "social_tenant",
        "rent": "450",
        "postal_code": "69003",
        "commune": "69123",
        "received": ["aide_logement"],
    }
    evaluation = await checks.evaluate(rights_engine, raw, today)
    results = {r.code: r for r in evaluation.results}
    assert evaluation.period == month
    assert evaluation.model_version == rights_engine.version
    assert expected["aide_logement"] > 50
    assert results["aide_logement"].amount == round(expected["aide_logement"])
    assert results["rsa"].amount in (None, round(expected["rsa"]))
    assert results["aide_logement"].received and not results["aide_logement"].unclaimed
    assert evaluation.answers.departement == "69"


# -- Bad answers: French messages, nothing computed -------------------------------------------


def good_raw() -> dict[str, Any]:
    return {
        "couple": False,
        "adults": [{"age": 40, "activity": "inactif", "disability": "none"}],
        "children": [],
        "housing": "hosted",
        "postal_code": "75011",
        "commune": "75056",
        "received": [],
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r["adults"][0].update(salary="-300"), "adults.0.salary"),
        (lambda r: r["adults"][0].update(salary="1e9"), "adults.0.salary"),
        (lambda r: r["adults"][0].update(pension="beaucoup"), "adults.0.pension"),
        (lambda r: r["adults"][0].update(age=200), "adults.0.age"),
        (lambda r: r["adults"][0].update(age="-4"), "adults.0.age"),
        (lambda r: r["adults"][0].update(age=True), "adults.0.age"),
        (lambda r: r["adults"][0].update(activity="astronaute"), "adults.0.activity"),
        (lambda r: r.update(children=[3, 40]), "children.1"),
        (lambda r: r.update(children=list(range(20))), "children"),
        (lambda r: r.update(postal_code="00000"), "postal_code"),
        (lambda r: r.update(postal_code="abc"), "postal_code"),
        (lambda r: r.update(commune="13055"), "commune"),
        (lambda r: r.update(housing="tenant"), "rent"),
        (lambda r: r.update(housing="tenant", rent="-5"), "rent"),
        (lambda r: r.update(housing="castle"), "housing"),
        (lambda r: r.update(couple=True), "adults"),
        (lambda r: r.update(received=["rsa", "unknown"]), "received"),
    ],
)
def test_bad_answers_are_named_in_french(change: Any, field: str) -> None:
    raw = good_raw()
    change(raw)
    with pytest.raises(AnswersInvalid) as caught:
        parse_answers(raw)
    assert field in caught.value.errors, caught.value.errors
    message = caught.value.errors[field]
    assert message and message[0].isupper() and "Traceback" not in message


def test_good_answers_parse_and_amounts_accept_french_writing() -> None:
    raw = good_raw()
    raw["adults"][0]["salary"] = "1 234,50"
    answers = parse_answers(raw)
    assert answers.adults[0].salary == 1234.50
    assert answers.departement == "75"
    with pytest.raises(AnswersInvalid):
        parse_answers("not a mapping")


async def test_bad_answers_never_reach_the_engine() -> None:
    engine = RightsEngine(1)  # never started: computing anything would raise "off"
    raw = good_raw()
    raw["adults"][0]["age"] = 300
    with pytest.raises(AnswersInvalid):
        await checks.evaluate(engine, raw, date.today())


# -- The pool ---------------------------------------------------------------------------------


async def test_a_worker_killed_mid_check_gives_a_french_error_and_the_pool_recovers(
    rights_engine: RightsEngine,
) -> None:
    await rights_engine.start()
    answers = household(adult(40))
    before = rights_engine.started
    pids = rights_engine.worker_pids()
    assert pids
    task = asyncio.create_task(
        rights_engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
    )
    await asyncio.sleep(0.2)  # the check is in a worker now (it takes over a second)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(EngineUnavailable) as caught:
        await task
    assert caught.value.code == "rights_failed"
    assert "Réessayez" in caught.value.message
    # The next check gets a new pool, with new processes.
    results = await results_for(rights_engine, answers, JUNE_2025)
    assert results["rsa"].amount == 569
    assert rights_engine.started == before + 1
    assert not set(rights_engine.worker_pids()) & set(pids)


async def test_ten_checks_at_once_are_right_and_leave_the_event_loop_free(
    rights_engine: RightsEngine,
) -> None:
    await rights_engine.start()
    cases = [
        (household(adult(40)), "rsa", 569),
        (household(adult(40), housing="homeless"), "rsa", 647),
        (household(adult(40, disability="80_plus")), "aah", 1033),
        (household(adult(70, "retraite")), "aspa", 1034),
    ]
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        interval = 0.005
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(interval)
            lags.append(time.perf_counter() - started - interval)

    ticking = asyncio.create_task(ticker())
    chosen = [cases[i % len(cases)] for i in range(10)]
    outs = await asyncio.gather(
        *(results_for(rights_engine, answers, JUNE_2025) for answers, _, _ in chosen)
    )
    stop.set()
    await ticking
    for (_, code, amount), results in zip(chosen, outs, strict=True):
        assert results[code].amount == amount
    lags.sort()
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    assert len(lags) > 100
    assert p99 <= 0.020, f"event-loop lag p99 {p99 * 1000:.1f} ms"


async def test_a_full_queue_refuses_at_once_in_french(rights_engine: RightsEngine) -> None:
    await rights_engine.start()  # the fork server is warm: a new pool only forks
    engine = RightsEngine(1, queue_max=1)
    try:
        await engine.start()
        answers = household(adult(40))
        first = asyncio.create_task(
            engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
        )
        await asyncio.sleep(0)
        with pytest.raises(EngineUnavailable) as caught:
            await engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
        assert caught.value.code == "rights_busy"
        assert (await first)["values"]["rsa"][0] > 500
    finally:
        await engine.close()


def test_every_benefit_is_computed_by_a_variable_of_the_model(openfisca: Any) -> None:
    for benefit in BENEFITS.values():
        variable = openfisca.variables.get(benefit.variable)
        assert variable is not None, benefit.variable
        assert variable.entity.key == benefit.entity, benefit.code
        assert variable.definition_period.value == benefit.period.value, benefit.code


async def test_a_pool_that_did_its_share_is_renewed_without_failing_a_check(
    rights_engine: RightsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers' memory grows with their checks: after TASKS_PER_WORKER each the pool is
    replaced by fresh forks, and a check in flight meanwhile still gets its answer."""
    await rights_engine.start()
    monkeypatch.setattr("server.rights.engine.TASKS_PER_WORKER", 1)
    engine = RightsEngine(1)
    try:
        await engine.start()
        answers = household(adult(40))
        first, second = await asyncio.gather(
            *(
                engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
                for _ in range(2)
            )
        )
        # The first answer renewed the pool while the second was queued in the old one.
        assert first["values"]["rsa"][0] > 500 and second["values"]["rsa"][0] > 500
        assert first["pid"] == second["pid"]
        assert engine.started == 2  # renewed once: the second answer came from the old pool
        third = await engine.calculate(situation(answers, JUNE_2025), variables(JUNE_2025))
        assert third["pid"] != first["pid"]
    finally:
        await engine.close()


async def test_the_app_starts_its_own_pool_with_the_server_and_stops_it_with_it(
    settings: Settings, rights_engine: RightsEngine
) -> None:
    """RIGHTS_WORKERS > 0: the pool starts with the application (the server listens while it
    warms: /readyz says so), answers, and its processes end with the application."""
    await rights_engine.start()  # the fork server is warm: this pool only forks
    async with serve(settings.model_copy(update={"rights_workers": 1})) as running:
        engine = running.app[RIGHTS_KEY]
        assert engine is not rights_engine
        await engine.start()
        async with aiohttp.ClientSession() as http, http.get(running.url("/readyz")) as resp:
            assert (await resp.json())["rights"] == "ok"
        results = await results_for(engine, household(adult(40)), JUNE_2025)
        assert results["rsa"].amount == 569
        pids = engine.worker_pids()
        assert pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    async with serve(settings) as running:  # RIGHTS_WORKERS=0
        assert RIGHTS_KEY not in running.app
        async with aiohttp.ClientSession() as http, http.get(running.url("/readyz")) as resp:
            assert (await resp.json())["rights"] == "off"


def test_cold_start_then_a_server_killed_without_a_shutdown_takes_its_pool_with_it(
    tmp_path: Path,
) -> None:
    """A server process from nothing (its own fork server, the model loaded in it): a check
    sent before the pool is warm waits for it and is right; then SIGKILL (out of memory, a hard
    stop): the fork server and the workers must not live on, holding hundreds of MB for
    nobody."""
    script = (
        "import asyncio, json\n"
        "from datetime import date\n"
        "from server.rights.answers import Adult, Answers, situation\n"
        "from server.rights.engine import RightsEngine\n"
        "from server.rights.results import variables\n"
        "async def main():\n"
        "    engine = RightsEngine(2)\n"
        "    engine.start_in_background()\n"
        "    warm_at_once = engine.ready\n"
        "    month = date(2025, 6, 1)\n"
        "    alone = Answers((Adult(40, 'inactif', 0.0, 0.0, 0.0, 'none'),), (), 'hosted',\n"
        "                    None, '75011', '75056', ())\n"
        "    out = await engine.calculate(situation(alone, month), variables(month))\n"
        "    print(json.dumps({'warm_at_once': warm_at_once, 'rsa': out['values']['rsa'][0],\n"
        "                      'cold_seconds': engine.cold_seconds,\n"
        "                      'workers': engine.worker_pids()}), flush=True)\n"
        "    await asyncio.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    path = tmp_path / "server_like.py"
    path.write_text(script)
    with subprocess.Popen(
        [sys.executable, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            report = json.loads(process.stdout.readline())
            assert report["warm_at_once"] is False
            assert report["rsa"] == pytest.approx(646.52 - 77.58, abs=0.01)
            assert report["cold_seconds"] > 1  # the model was loaded from nothing
            workers = report["workers"]
            assert len(workers) == 2
            fork_server = psutil.Process(workers[0]).ppid()
            assert psutil.Process(fork_server).ppid() == process.pid
            assert psutil.Process(workers[1]).ppid() == fork_server
            pool = [fork_server, *workers]
        finally:
            process.kill()
    _gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in pool], timeout=10)
    assert alive == [], f"still running after their server died: {alive}"


async def test_a_pool_never_started_or_closed_says_the_check_is_off(
    rights_engine: RightsEngine,
) -> None:
    never = RightsEngine(1)
    with pytest.raises(EngineUnavailable) as caught:
        await never.calculate({}, [])
    assert caught.value.code == "rights_off"
    assert "pas disponible" in caught.value.message
    await rights_engine.start()  # a warm fork server: the next pool only forks
    closed = RightsEngine(1)
    await closed.start()
    await closed.close()
    with pytest.raises(EngineUnavailable) as caught:
        await closed.calculate({}, [])
    assert caught.value.code == "rights_off"
