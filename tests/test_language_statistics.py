"""Demand and unmet demand by language (issue 17): rollups kept by record() equal a rebuild,
NULL counts as French, filters and the coordinator's scope apply, small counts are hidden on
the page, in the CSV and the API, the demo history fills the table, and the events of the
booking, queue and call-back kinds hold nothing more than before but the language code and
whether a volunteer speaking it was asked for."""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import jsonschema
import pytest
from sqlalchemy import inspect as schema_of
from sqlalchemy import select

from server import i18n, motifs, synthetic
from server.dropin import places as dropin
from server.stats.events import EventKind, record
from server.stats.export import LANGUAGE_NAMES, TABLES, language_rows
from server.stats.filters import parse_filters
from server.stats.queries import LanguageFigures, Report, build_report
from server.stats.rebuild import rebuild_rollups
from server.stats.rollups import LANGUAGE_DIM, LANGUAGE_WANTED_DIM, UNMET
from server.store.models import Role, StatEvent, User, utcnow
from server.web.views.api_v1 import openapi_document
from tests.conftest import Account, Running, login, make_account
from tests.test_callbacks import ask
from tests.test_dropin import join_by_http, open_all_week
from tests.test_statistics import DAY, PERIOD, _bulk_insert, _monthly, _record_all, _rollups

TODAY = date(2025, 12, 31)


def _language_specs() -> list[dict[str, Any]]:
    """Demand in four languages, some of it unmet, some asking for the language; 7 events
    recorded before languages existed (no language) and 1 with an empty code."""
    specs: list[dict[str, Any]] = []
    specs += [{"kind": EventKind.QUEUE_JOINED, "language": "fr"} for _ in range(4)]
    specs += [{"kind": EventKind.APPOINTMENT_BOOKED} for _ in range(6)]  # NULL: French
    specs.append({"kind": EventKind.CALLBACK_REQUESTED, "language": ""})  # empty: French
    specs.append({"kind": EventKind.QUEUE_LEFT, "reason": "left"})  # unmet, NULL: French
    arabic = {"language": "ar", "language_wanted": True}
    specs += [{"kind": EventKind.QUEUE_JOINED, **arabic} for _ in range(5)]
    specs += [{"kind": EventKind.QUEUE_JOINED, "language": "ar", "language_wanted": False}] * 2
    specs += [{"kind": EventKind.QUEUE_LEFT, "reason": "gone", **arabic} for _ in range(3)]
    specs.append({"kind": EventKind.QUEUE_LEFT, "reason": "taken", **arabic})  # helped: met
    specs.append({"kind": EventKind.QUEUE_TAKEN, **arabic})  # not demand, not unmet
    specs += [
        {"kind": EventKind.CALLBACK_REQUESTED, "language": "fa-AF", "language_wanted": True},
        {"kind": EventKind.CALLBACK_EXPIRED, "language": "fa-AF", "language_wanted": True},
        {"kind": EventKind.NO_SLOT_FOUND, "language": "uk", "theme": "logement"},
        {"kind": EventKind.APPOINTMENT_BOOKED, "language": "uk", "theme": "logement"},
        # Not a demand kind: no language row even with a language.
        {"kind": EventKind.WAITLIST_JOINED, "language": "uk"},
        {"kind": EventKind.SHEET_FILED, "channel": "drop_in", "language": "uk"},
    ]
    return specs


async def _report(running: Running, association_id: int, **query: str) -> Report:
    async with running.sessionmaker() as db:
        return await build_report(db, association_id, parse_filters({**PERIOD, **query}, TODAY))


def _figures(report: Report) -> dict[str, tuple[int, int, int, int]]:
    return {
        code: (f.demand, f.demand_wanted, f.unmet, f.unmet_wanted)
        for code, f in report.languages.items()
    }


async def test_language_rollups_equal_a_rebuild_and_a_bulk_import(
    running: Running, coordinator: Account
) -> None:
    association_id = coordinator.user.association_id
    await _record_all(running, association_id, _language_specs())
    incremental = await _rollups(running, association_id)
    dims = {key[0] for key in incremental}
    assert {LANGUAGE_DIM, LANGUAGE_WANTED_DIM} <= dims
    monthly = await _monthly(running, association_id)
    async with running.sessionmaker.begin() as db:
        await rebuild_rollups(db, ZoneInfo(running.settings.timezone), association_id)
    assert await _rollups(running, association_id) == incremental
    assert await _monthly(running, association_id) == monthly
    other = await make_account(running, "coord-b@example.org", Role.COORDINATOR, "Asso B")
    await _bulk_insert(running, other.user.association_id, _language_specs())
    assert await _rollups(running, other.user.association_id) == incremental


async def test_a_language_changed_after_record_moves_its_counts(
    running: Running, coordinator: Account
) -> None:
    association_id = coordinator.user.association_id
    async with running.sessionmaker.begin() as db:
        event = await record(db, EventKind.QUEUE_JOINED, association_id=association_id)
        event.occurred_at = DAY
        await db.flush()
        event.language, event.language_wanted = "es", True
    rows = await _rollups(running, association_id)
    day = DAY.date()
    assert rows[(LANGUAGE_DIM, "*", "*", day, "queue_joined", "es")] == (1, 0)
    assert rows[(LANGUAGE_WANTED_DIM, "*", "*", day, "queue_joined", "es")] == (1, 0)
    assert (LANGUAGE_DIM, "*", "*", day, "queue_joined", "fr") not in rows


async def test_demand_and_unmet_by_language_with_null_as_french(
    running: Running, coordinator: Account
) -> None:
    association_id = coordinator.user.association_id
    await _record_all(running, association_id, _language_specs())
    report = await _report(running, association_id)
    # (demand, of which asked for the language, unmet, of which asked for the language)
    assert _figures(report) == {
        "fr": (4 + 6 + 1, 0, 1, 0),
        "ar": (7, 5, 3, 3),
        "fa-AF": (1, 1, 1, 1),
        "uk": (1, 0, 1, 0),
    }
    # The language table adds up to the dashboard's demand and unmet demand.
    demand = sum(report.totals[k] for k in ("appointment_booked", "queue_joined"))
    demand += report.totals["callback_requested"]
    assert sum(f.demand for f in report.languages.values()) == demand
    assert sum(f.unmet for f in report.languages.values()) == report.totals[UNMET]
    # Filters apply as to the other tables: channel, theme, period.
    assert _figures(await _report(running, association_id, channel="drop_in")) == {
        "fr": (4, 0, 1, 0),
        "ar": (7, 5, 3, 3),
    }
    assert _figures(await _report(running, association_id, theme="logement")) == {
        "uk": (1, 0, 1, 0)
    }
    empty = await _report(running, association_id, **{"from": "2025-04-01", "to": "2025-04-30"})
    assert empty.languages == {}
    rows = language_rows(report)
    assert [row.code for row in rows] == list(i18n.CODES)  # every language, counted or not
    assert [row.label for row in rows][:4] == [
        "Français",
        "Anglais (English)",
        "Arabe (العربية)",
        "Dari (دری)",
    ]
    assert rows[1].figures == LanguageFigures("en")


def test_every_language_of_the_switch_has_a_french_name() -> None:
    assert set(LANGUAGE_NAMES) == set(i18n.CODES)


async def test_page_csv_and_api_show_the_language_table_with_small_counts_hidden(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    association_id = coordinator.user.association_id
    await _record_all(running, association_id, _language_specs())
    # Another association's events are never counted for this coordinator.
    other = await make_account(running, "coord-b@example.org", Role.COORDINATOR, "Asso B")
    many = [{"kind": EventKind.QUEUE_JOINED, "language": "ro"}] * 9
    await _record_all(running, other.user.association_id, many)
    await login(http, running, coordinator)
    async with http.get(running.url("/stats"), params=PERIOD) as resp:
        assert resp.status == 200
        page = html.unescape(await resp.text())
    table = page[
        page.index('id="languages"') : page.index("</table>", page.index('id="languages"'))
    ]
    assert 'Arabe (<bdi lang="ar" dir="rtl">العربية</bdi>)' in table
    assert "Ukrainien (<bdi" in table and "Français</th>" in table

    def cells(code: str) -> list[str]:
        line = table[table.index(f'data-language="{code}"') :]
        line = line[: line.index("</tr>")]
        return [part.split("</td>")[0] for part in line.split('<td class="num">')[1:]]

    assert cells("fr") == ["11", "0", "< 5", "0"]
    assert cells("ar") == ["7", "5", "< 5", "< 5"]
    assert cells("ro") == ["0", "0", "0", "0"]  # Asso B's nine are not ours
    assert "csv-link" in page and 'data-table="languages"' in page

    async with http.get(running.url("/stats.csv"), params={**PERIOD, "table": "languages"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert "statistiques-languages-" in resp.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert list(rows[0]) == [
        "language",
        "label",
        "demand",
        "demand_language_wanted",
        "unmet",
        "unmet_language_wanted",
    ]
    by_code = {row["language"]: row for row in rows}
    assert list(by_code) == list(i18n.CODES)
    assert by_code["ar"] == {
        "language": "ar",
        "label": "Arabe (العربية)",
        "demand": "7",
        "demand_language_wanted": "5",
        "unmet": "< 5",
        "unmet_language_wanted": "< 5",
    }
    assert by_code["fr"]["demand"] == "11" and by_code["ro"]["demand"] == "0"
    assert "languages" in TABLES

    async with http.get(running.url("/api/v1/stats"), params=PERIOD) as resp:
        assert resp.status == 200
        body = await resp.json()
    languages = {line["code"]: line for line in body["languages"]}
    assert languages["ar"]["demand"] == 7 and languages["ar"]["unmet"] == "< 5"
    assert languages["ro"]["demand"] == 0
    document = openapi_document(running.settings.base_url)
    schema = document["paths"]["/api/v1/stats"]["get"]
    response_schema = schema["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**response_schema, "components": document["components"]})


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # a year of history: one database
async def test_demo_history_gives_a_plausible_share_of_languages(
    running: Running, coordinator: Account
) -> None:
    association_id = coordinator.user.association_id
    now = datetime(2025, 12, 31, 12, tzinfo=ZoneInfo("UTC"))
    async with running.sessionmaker.begin() as db:
        await synthetic.generate(db, running.settings, association_id, 1000, days=90, now=now)
    report = await _report(running, association_id)
    figures = report.languages
    assert set(figures) == set(i18n.CODES)
    demand = Counter({code: f.demand for code, f in figures.items()})
    total = sum(demand.values())
    assert 0.7 < demand["fr"] / total < 0.92
    assert demand.most_common(2)[1][0] == "ar"  # Arabic comes second
    assert all(demand[code] > 0 for code in i18n.CODES)
    assert figures["fr"].demand_wanted == 0  # French speakers are never asked
    asked = sum(f.demand_wanted for f in figures.values())
    foreign = total - demand["fr"]
    assert 0.2 * foreign < asked < 0.7 * foreign
    assert sum(f.unmet for f in figures.values()) == report.totals[UNMET]
    assert sum(f.unmet_wanted for f in figures.values()) > 0
    # The rollups the demo rebuilt are those record() would have kept.
    before = await _rollups(running, association_id)
    async with running.sessionmaker.begin() as db:
        await rebuild_rollups(db, ZoneInfo(running.settings.timezone), association_id)
    assert await _rollups(running, association_id) == before


# Every fact an event of the booking, queue and call-back kinds held before languages: the
# step, when, whose association, the session (a booked or taken one), the channel, the motif,
# a short outcome code, a duration, the département. Only the language code and whether a
# volunteer speaking it was asked for are added.
FACTS_BEFORE = {
    "id",
    "occurred_at",
    "kind",
    "association_id",
    "session_id",
    "channel",
    "motif_id",
    "reason",
    "duration_seconds",
    "departement",
}
LANGUAGE_FACTS = {"language", "language_wanted"}
DEMAND_FAMILY = {
    k.value
    for k in EventKind
    if k.value.startswith(("appointment_", "queue_", "callback_"))
    or k in (EventKind.NO_SLOT_FOUND, EventKind.WAITLIST_JOINED, EventKind.NO_SHOW)
}


async def test_demand_events_hold_nothing_but_their_codes_and_the_language(
    running: Running, coordinator: Account, volunteer: Account
) -> None:
    """Through the real pages: a queue place (taken), a call-back, a search without slot.
    Whatever the producers record, no other fact than before plus the two language ones."""
    association_id = volunteer.user.association_id
    async with running.sessionmaker.begin() as db:
        motif_rows = await motifs.ensure_default_motifs(db, association_id)
    # An Arabic-speaking browser: once the producers pass the language, it is "ar".
    person = aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept-Language": "ar"}
    )
    try:
        url = running.url(f"/rendez-vous/motif/{motif_rows[0].id}")  # no permanence: no slot
        async with person.get(url, params={"a": str(association_id), "cp": "48000"}) as resp:
            assert resp.status == 200
        await open_all_week(running, volunteer)
        await join_by_http(running, person, first_name="Zéphyrine", postal_code="13008")
        status, _page, _url = await ask(person, running, association_id, first_name="Zéphyrine")
        assert status == 200
    finally:
        await person.close()
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        await dropin.take_next(db, running.settings, user, utcnow())
    async with running.sessionmaker() as db:
        events = (await db.scalars(select(StatEvent))).all()
    kinds = {event.kind for event in events}
    assert {"queue_joined", "queue_taken", "callback_requested", "no_slot_found"} <= kinds
    for event in events:
        if event.kind not in DEMAND_FAMILY:
            continue
        held = {
            name
            for name, value in vars(event).items()
            if not name.startswith("_") and value not in (None, [])
        }
        assert held <= FACTS_BEFORE | LANGUAGE_FACTS, (event.kind, held)
        assert event.language is None or event.language in i18n.CODES
        assert event.language_wanted in (None, True, False)
    dumped = repr([vars(event) for event in events])
    for personal in ("Zéphyrine", "13008", "48000", "awa@example.org", "Ma déclaration"):
        assert personal not in dumped
    # And the table has no column for anything else.
    columns = {c.key for c in schema_of(StatEvent).mapper.column_attrs}
    assert columns == FACTS_BEFORE | LANGUAGE_FACTS | {
        "media",
        "theme",
        "themes",
        "organisations",
        "outcome",
        "autonomy",
        "volunteer_id",
    }
