"""The rights check's pages (issue 16) through the real app, the real database and the shared
warm OpenFisca-France pool: computing in the room and from a filed sheet, French refusals that
store nothing, who may check whose rights, the check off (no engine), the benefits put on the
handoff sheet and read by the person through their link (amounts only if they agreed), and the
answers forgotten at the session's end unless kept. A test that computes runs on one database
(the model's seconds, not the database, are its cost): SQLite, and PostgreSQL for the check made
from a filed sheet; the others run on both."""

from __future__ import annotations

import copy
import html
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from server import i18n
from server.rights import display
from server.rights.engine import RightsEngine
from server.settings import Settings
from server.store.models import AssistanceSession, HandoffSheet, RightsCheck, Role, StatEvent
from tests.conftest import (
    Account,
    Running,
    browser_session,
    create_assistance,
    csrf_from,
    login,
    make_account,
    serve,
)
from tests.test_handoff import SHEET_LINK, end_assistance, file_sheet, get, join_as_beneficiary

# A single adult of 40, no resources, hosted free in Paris: the RSA, about 570 € a month.
REFERENCE: dict[str, Any] = {
    "couple": False,
    "adults": [
        {
            "age": 40,
            "activity": "inactif",
            "salary": "",
            "unemployment": "",
            "pension": "",
            "disability": "none",
        }
    ],
    "children": [],
    "housing": "hosted",
    "rent": None,
    "postal_code": "75011",
    "commune": "75056",
    "received": [],
}


def answers(**changes: Any) -> dict[str, Any]:
    """The reference answers with some changed (``adult`` changes the first adult)."""
    data = copy.deepcopy(REFERENCE)
    data["adults"][0].update(changes.pop("adult", {}))
    data.update(changes)
    return data


@pytest.fixture
async def rights_running(settings: Settings, rights_engine: RightsEngine) -> AsyncIterator[Running]:
    """The app with the shared warm engine."""
    async with serve(settings, rights=rights_engine) as served:
        yield served


async def token_of(http: aiohttp.ClientSession, running: Running, path: str) -> str:
    """A CSRF token for the scripts' header, read from a page of this browser."""
    async with http.get(running.url(path)) as resp:
        assert resp.status == 200, path
        return csrf_from(await resp.text())


async def post_json(
    http: aiohttp.ClientSession, running: Running, path: str, body: object, token: str
) -> tuple[int, dict[str, Any]]:
    """POST JSON as rights.js does; status and JSON answer ({} if not JSON)."""
    async with http.post(
        running.url(path), json=body, headers={"X-CSRF-Token": token}, allow_redirects=False
    ) as resp:
        data = await resp.json() if "json" in resp.content_type else {}
        return resp.status, data


async def stored(running: Running) -> list[RightsCheck]:
    async with running.sessionmaker() as db:
        return list(await db.scalars(select(RightsCheck)))


async def room(running: Running, volunteer: Account) -> tuple[aiohttp.ClientSession, str, str]:
    """A logged-in volunteer's browser, a new assistance and a CSRF token."""
    http = await browser_session()
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    return http, session_id, await token_of(http, running, f"/assistance/{session_id}")


def result(data: dict[str, Any], code: str) -> dict[str, Any]:
    return next(item for item in data["check"]["results"] if item["code"] == code)


def line(data: dict[str, Any], code: str) -> dict[str, Any]:
    return next(item for item in data["view"]["lines"] if item["code"] == code)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # computes: one database
async def test_a_reference_household_probably_gets_the_rsa_with_its_amount_and_where_to_apply(
    rights_running: Running,
) -> None:
    running = rights_running
    volunteer = await make_account(running, "camille@example.org")
    http, session_id, token = await room(running, volunteer)
    async with running.sessionmaker.begin() as db:  # the person's page is in Arabic
        (await db.get_one(AssistanceSession, session_id)).language = "ar"
    async with http:
        # The form's parts come with the room's first press.
        status, parts = await get(http, running, f"/assistance/{session_id}/droits")
        assert status == 200 and 'id="rights-form"' in parts and "Vérifier les droits" in parts
        # The same form in the person's language, to name what they are shown.
        assert f"/assistance/{session_id}/droits?pour=personne" in parts
        status, theirs = await get(http, running, f"/assistance/{session_id}/droits?pour=personne")
        with i18n.use_language("ar"):
            locataire = i18n.gettext("Locataire (logement privé)")
        assert status == 200 and locataire in theirs and "Locataire (logement privé)" not in theirs
        status, data = await post_json(
            http,
            running,
            f"/assistance/{session_id}/droits",
            {"answers": REFERENCE, "keep_answers": False},
            token,
        )
        assert status == 200, data
        rsa = result(data, "rsa")
        assert rsa["verdict"] == "likely" and rsa["amount"] > 500
        words = line(data, "rsa")
        assert words["verdict_text"].startswith("Probablement éligible — environ ")
        assert words["verdict_text"].endswith("€ par mois")
        assert words["apply_url"].startswith("https://www.caf.fr/")
        assert line(data, "aah")["verdict_text"] == "Probablement pas"
        assert data["view"]["notice"].startswith("C'est une estimation, pas une décision")
        assert "OpenFisca-France " + data["check"]["model_version"] in data["view"]["source"]
        # Probably due first.
        assert data["view"]["lines"][0]["verdict"] == "likely"
        # What "Montrer à la personne" sends: the same lines, in the person's language.
        theirs = data["person_view"]
        with i18n.use_language("ar"):
            assert theirs["notice"] == i18n.gettext(display.NOTICE) != display.NOTICE
            assert theirs["received_text"] == i18n.gettext(display.RECEIVED)
        assert [x["code"] for x in theirs["lines"]] == [x["code"] for x in data["view"]["lines"]]
        rsa_words = next(x for x in theirs["lines"] if x["code"] == "rsa")["verdict_text"]
        assert rsa_words != words["verdict_text"] and str(rsa["amount"]) in rsa_words
        # The communes of a postal code, for the form's list.
        async with http.get(running.url("/droits/communes?cp=75011")) as resp:
            assert await resp.json() == {"communes": [{"code": "75056", "name": "Paris"}]}
    (check,) = await stored(running)
    assert check.assistance_session_id == session_id and check.answers is not None
    assert not check.on_sheet


BAD_ANSWERS = [
    ("negative amount", answers(adult={"salary": "-300"}), "adults.0.salary", "négatif"),
    ("age 200", answers(adult={"age": 200}), "adults.0.age", "16 à 120 ans"),
    ("absurd salary", answers(adult={"salary": "250000"}), "adults.0.salary", "vérifiez"),
    ("unknown postal code", answers(postal_code="99999"), "postal_code", "n'existe pas"),
    ("commune of another code", answers(commune="13055"), "commune", "Choisissez la commune"),
    ("tenant without rent", answers(housing="tenant"), "rent", "loyer"),
    ("child of 40", answers(children=[40]), "children.0", "enfant"),
    (
        "handicap without its rate",
        answers(adult={"disability": "unset"}),
        "adults.0.disability",
        "taux",
    ),
]


@pytest.mark.parametrize(
    ("case", "bad", "path", "words"), BAD_ANSWERS, ids=[case[0] for case in BAD_ANSWERS]
)
async def test_impossible_answers_are_refused_in_french_beside_their_field_and_nothing_is_stored(
    running: Running, volunteer: Account, case: str, bad: dict[str, Any], path: str, words: str
) -> None:
    """Refused before the model runs: the same answer with or without an engine."""
    http, session_id, token = await room(running, volunteer)
    async with http:
        status, data = await post_json(
            http, running, f"/assistance/{session_id}/droits", {"answers": bad}, token
        )
    assert status == 400, data
    assert data["error"]["message"].startswith("Certaines réponses sont à corriger")
    assert words in data["error"]["errors"][path], data["error"]["errors"]
    assert await stored(running) == []


async def test_bodies_that_are_not_the_forms_are_refused_in_french(
    running: Running, volunteer: Account
) -> None:
    http, session_id, token = await room(running, volunteer)
    path = running.url(f"/assistance/{session_id}/droits")
    async with http:
        for body, status, words in (
            (b"not json", 400, "n'ont pas pu être lues"),
            (b"[1, 2]", 400, "n'ont pas pu être lues"),
            (b'{"answers": "' + b"x" * 40_000 + b'"}', 413, "trop gros"),
            (b'{"answers": 3}', 400, "n'ont pas pu être lues"),
        ):
            async with http.post(
                path,
                data=body,
                headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
            ) as resp:
                assert resp.status == status, (body[:20], resp.status)
                error = (await resp.json())["error"]
                assert words in " ".join([error["message"], *error.get("errors", {}).values()])
        # Without the CSRF header: refused before anything is read.
        async with http.post(path, json={"answers": REFERENCE}) as resp:
            assert resp.status == 403
    assert await stored(running) == []


async def test_without_the_engine_the_check_says_it_is_not_available(
    running: Running, volunteer: Account
) -> None:
    http, session_id, token = await room(running, volunteer)
    async with http:
        status, parts = await get(http, running, f"/assistance/{session_id}/droits")
        assert status == 200 and 'id="rights-off"' in parts and 'id="rights-form"' not in parts
        status, data = await post_json(
            http, running, f"/assistance/{session_id}/droits", {"answers": REFERENCE}, token
        )
    assert status == 503
    assert data["error"]["message"] == (
        "La vérification des droits n'est pas disponible sur ce serveur."
    )
    assert await stored(running) == []


async def test_nobody_but_the_volunteer_of_the_session_or_sheet_checks_or_reads_its_rights(
    rights_running: Running,
) -> None:
    running = rights_running
    owner = await make_account(running, "camille@example.org")
    colleague = await make_account(running, "sam@example.org")
    far = await make_account(running, "loin@example.org", association="Asso B")
    referrer = await make_account(running, "ref@ccas.example.org", Role.REFERRER)
    http, session_id, token = await room(running, owner)
    async with http:
        status, _data = await post_json(
            http, running, f"/assistance/{session_id}/droits", {"answers": REFERENCE}, token
        )
        assert status == 200
        await end_assistance(http, running, session_id)
        await file_sheet(http, running, f"/assistance/{session_id}/fiche")
    async with running.sessionmaker() as db:
        sheet = await db.scalar(select(HandoffSheet))
    assert sheet is not None
    before = [(c.id, c.updated_at, c.on_sheet) for c in await stored(running)]
    for account, expected in ((colleague, 404), (far, 404), (referrer, 403)):
        other = await browser_session()
        async with other:
            await login(other, running, account)
            # A referrer is refused by role before any token is read.
            other_token = "" if account is referrer else await token_of(other, running, "/tableau")
            for base in (f"/assistance/{session_id}/droits", f"/fiches/{sheet.id}/droits"):
                status, _page = await get(other, running, base)
                assert status == expected, (account.email, base, status)
                status, _data = await post_json(
                    other, running, base, {"answers": REFERENCE}, other_token
                )
                assert status == expected, (account.email, base, status)
                status, _data = await post_json(
                    other, running, base + "/fiche", {"on_sheet": True}, other_token
                )
                assert status == expected, (account.email, base, status)
    assert [(c.id, c.updated_at, c.on_sheet) for c in await stored(running)] == before


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # computes: one database
async def test_the_benefits_put_on_the_sheet_are_read_by_the_person_with_amounts_only_if_agreed(
    rights_running: Running,
) -> None:
    running = rights_running
    volunteer = await make_account(running, "camille@example.org")
    http, session_id, token = await room(running, volunteer)
    async with http:
        status, data = await post_json(
            http, running, f"/assistance/{session_id}/droits", {"answers": REFERENCE}, token
        )
        assert status == 200
        amount = line(data, "rsa")["amount_text"]
        assert amount and amount.startswith("environ ")
        # Before any check there is nothing to put; then on the sheet, without the amounts.
        status, data = await post_json(
            http,
            running,
            f"/assistance/{session_id}/droits/fiche",
            {"on_sheet": True, "show_amounts": False},
            token,
        )
        assert status == 200 and data["check"]["on_sheet"] and not data["check"]["show_amounts"]
        # Put on the sheet, the check is settled: counted once in the statistics.
        async with running.sessionmaker() as db:
            kinds = list(await db.scalars(select(StatEvent.kind)))
        assert kinds.count("rights_checked") == 1 and "rights_unclaimed" in kinds
        await end_assistance(http, running, session_id)
        status, page = await file_sheet(
            http, running, f"/assistance/{session_id}/fiche", next_steps="Demander le RSA."
        )
        assert status == 200
        match = SHEET_LINK.search(page)
        assert match
        person_link = f"/fiche/{match.group(1)}"
        async with running.sessionmaker() as db:
            sheet = await db.scalar(select(HandoffSheet))
        assert sheet is not None
        person = await browser_session()
        async with person:
            status, page = await get(person, running, person_link)
            assert status == 200
            assert "Aides à demander" in page and "Revenu de solidarité active (RSA)" in page
            assert "Probablement éligible" in page and "https://www.caf.fr/" in page
            assert "C'est une estimation, pas une décision" in page
            assert "€ par mois" not in page
            # Not listed: what is probably not due.
            assert "Allocation aux adultes handicapés" not in page
            # The person agrees to the amounts: from the sheet, after the session.
            token = await token_of(http, running, f"/assistance/{session_id}/fiche")
            status, data = await post_json(
                http,
                running,
                f"/fiches/{sheet.id}/droits/fiche",
                {"on_sheet": True, "show_amounts": True},
                token,
            )
            assert status == 200 and data["check"]["show_amounts"]
            status, page = await get(person, running, person_link)
            assert html.unescape(amount) in page
            # The volunteer's reading of the sheet lists them too.
            status, page = await get(http, running, f"/fiches/{sheet.id}")
            assert status == 200 and "Aides à demander" in page and amount in page
            # Taken off the sheet: the person no longer sees them.
            status, data = await post_json(
                http, running, f"/fiches/{sheet.id}/droits/fiche", {"on_sheet": False}, token
            )
            assert status == 200 and not data["check"]["on_sheet"]
            status, page = await get(person, running, person_link)
            assert "Aides à demander" not in page


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # computes: one database
async def test_a_check_made_from_the_sheet_after_the_session_belongs_to_the_sheet(
    rights_running: Running,
) -> None:
    running = rights_running
    volunteer = await make_account(running, "camille@example.org")
    http, session_id, _token = await room(running, volunteer)
    async with http:
        await end_assistance(http, running, session_id)
        status, page = await file_sheet(http, running, f"/assistance/{session_id}/fiche")
        async with running.sessionmaker() as db:
            sheet = await db.scalar(select(HandoffSheet))
        assert sheet is not None
        status, page = await get(http, running, f"/assistance/{session_id}/fiche")
        assert f"/fiches/{sheet.id}/droits" in page  # the sheet's form offers the check
        token = csrf_from(page)
        status, data = await post_json(
            http, running, f"/fiches/{sheet.id}/droits", {"answers": REFERENCE}, token
        )
        assert status == 200 and result(data, "rsa")["verdict"] == "likely"
        # The person is not in a live session: without their agreement nothing is kept.
        assert data["check"]["answers"] is None
        status, data = await post_json(
            http,
            running,
            f"/fiches/{sheet.id}/droits",
            {"answers": REFERENCE, "keep_answers": True},
            token,
        )
        assert data["check"]["answers"]["postal_code"] == "75011"
    (check,) = await stored(running)
    assert check.handoff_sheet_id == sheet.id


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # computes: one database
@pytest.mark.parametrize("keep", [False, True])
async def test_the_answers_are_forgotten_when_the_session_ends_unless_the_person_agreed(
    rights_running: Running, keep: bool
) -> None:
    running = rights_running
    volunteer = await make_account(running, "camille@example.org")
    http, session_id, token = await room(running, volunteer)
    async with http:
        async with await browser_session() as person:
            await join_as_beneficiary(person, running, session_id)
        status, data = await post_json(
            http,
            running,
            f"/assistance/{session_id}/droits",
            {"answers": REFERENCE, "keep_answers": keep},
            token,
        )
        assert status == 200 and data["check"]["answers"] is not None
        # The form opened again in the room finds the answers.
        status, parts = await get(http, running, f"/assistance/{session_id}/droits")
        assert '"postal_code": "75011"' in parts
        await end_assistance(http, running, session_id)
    (check,) = await stored(running)
    assert (check.answers is not None) is keep
    assert check.results  # the results stay while the sheet may take them
