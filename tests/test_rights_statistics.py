"""Droits potentiels non réclamés (issue 16) in the statistics, on SQLite and PostgreSQL: what
``record_check`` refuses and writes (codes only: no session, no amount, no free text), the
rollups kept at every flush equal to a rebuild in SQL, the figures by benefit and by
département on /stats, in the CSV files and in /api/v1/stats (validated against the OpenAPI
document), small counts hidden everywhere, the map layer, filters and the coordinator's scope."""

from __future__ import annotations

import csv
import html
import io
import re
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import jsonschema
import pytest
from sqlalchemy import func, select

from server import geo, synthetic
from server.rights.benefits import AMOUNT_BANDS, BAND_ESTIMATE, BENEFITS
from server.rights.figures import TABLES, about
from server.rights.statistics import record_check
from server.stats.display import local_today
from server.stats.filters import parse_filters
from server.stats.queries import build_report
from server.stats.rebuild import rebuild_rollups
from server.stats.rollups import CHANNELS, CHECK_FOUND, CHECK_NONE
from server.store.models import Role, StatEvent, StatRollup, StatRollupMonthly
from server.web.views.api_v1 import openapi_document
from server.web.views.stats import PALETTES
from tests.conftest import Account, Running, login, make_account

BANDS = {code for code, _low, _high in AMOUNT_BANDS}
FACT_COLUMNS = (  # every StatEvent column besides id, occurred_at and association_id
    "kind",
    "session_id",
    "channel",
    "media",
    "duration_seconds",
    "motif_id",
    "reason",
    "departement",
    "theme",
    "themes",
    "organisations",
    "outcome",
    "autonomy",
    "volunteer_id",
)

# (département, channel, benefits found, how many such checks)
CHECKS: list[tuple[str | None, str | None, list[tuple[str, str | None]], int]] = [
    ("75", "drop_in", [("ppa", "100_200"), ("aide_logement", "200_400")], 8),
    ("75", "drop_in", [], 4),
    ("13", "link", [("rsa", "400_800")], 1),
    ("13", "link", [], 1),
    (None, "drop_in", [("css_gratuite", None)], 1),
]


async def _record(running: Running, association_id: int) -> None:
    async with running.sessionmaker.begin() as db:
        for departement, channel, unclaimed, times in CHECKS:
            for _ in range(times):
                await record_check(
                    db,
                    association_id=association_id,
                    departement=departement,
                    channel=channel,
                    unclaimed=unclaimed,
                )
                await db.flush()


async def _events(running: Running) -> list[StatEvent]:
    async with running.sessionmaker() as db:
        return list(await db.scalars(select(StatEvent).order_by(StatEvent.id)))


def _filters(running: Running, **query: str) -> Any:
    return parse_filters(query, local_today(running.settings.timezone))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"unclaimed": [("rsa_typo", "400_800")]}, "unknown benefit"),
        ({"unclaimed": [("rsa", "573.49")]}, "unknown amount band"),
        ({"unclaimed": [("rsa", "573 € par mois")]}, "unknown amount band"),
        ({"unclaimed": [("css_gratuite", "lt50")]}, "has no amount"),
        ({"unclaimed": [("rsa", "400_800"), ("rsa", "200_400")]}, "twice"),
        ({"unclaimed": [("rsa",)]}, "(code, band)"),
        ({"unclaimed": ["rsa"]}, "(code, band)"),
        ({"departement": "7"}, "INSEE"),
        ({"departement": "75011"}, "INSEE"),
        ({"departement": "Paris"}, "INSEE"),
        ({"channel": "téléphone de Mme X"}, "channel"),
        ({"association_id": "1"}, "association_id"),
    ],
)
async def test_record_check_refuses_anything_but_known_codes_and_writes_nothing(
    running: Running, coordinator: Account, change: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "association_id": coordinator.user.association_id,
        "departement": "75",
        "channel": "link",
        "unclaimed": [("rsa", "400_800")],
        **change,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        async with running.sessionmaker.begin() as db:
            await record_check(db, **arguments)
    assert await _events(running) == []


async def test_a_check_leaves_coded_facts_only_and_rollups_equal_to_a_rebuild(
    running: Running, coordinator: Account
) -> None:
    association_id = coordinator.user.association_id
    await _record(running, association_id)
    events = await _events(running)
    kinds = Counter(e.kind for e in events)
    assert kinds == {"rights_checked": 15, "rights_unclaimed": 18}
    departements = {d.code for d in geo.departements()}
    for event in events:
        facts = {name: getattr(event, name) for name in FACT_COLUMNS}
        # Nothing ties an event to a session or a person, and no amount: only codes.
        assert facts["session_id"] is None, facts
        assert facts["duration_seconds"] is None and facts["media"] is None, facts
        assert facts["motif_id"] is None and facts["volunteer_id"] is None, facts
        assert facts["outcome"] is None and facts["autonomy"] is None, facts
        assert facts["themes"] == [] and facts["organisations"] == [], facts
        assert event.association_id == association_id
        assert facts["channel"] in CHANNELS
        assert facts["departement"] is None or facts["departement"] in departements
        if event.kind == "rights_checked":
            assert facts["theme"] is None and facts["reason"] in {CHECK_FOUND, CHECK_NONE}
        else:
            assert facts["theme"] in BENEFITS
            assert facts["reason"] is None or facts["reason"] in BANDS
    found = Counter(e.reason for e in events if e.kind == "rights_checked")
    assert found == {CHECK_FOUND: 10, CHECK_NONE: 5}

    def key(row: Any) -> tuple[Any, ...]:
        return (row.dim, row.channel, row.theme, row.day, row.kind, row.value)

    async def rollups() -> dict[Any, Any]:
        async with running.sessionmaker() as db:
            found: dict[Any, Any] = {}
            for model in (StatRollup, StatRollupMonthly):
                rows = await db.scalars(select(model).where(model.association_id == association_id))
                found.update({(model.__name__, *key(r)): r.count for r in rows if r.count})
            return found

    incremental = await rollups()
    assert incremental
    async with running.sessionmaker.begin() as db:
        await rebuild_rollups(db, ZoneInfo(running.settings.timezone), association_id)
    assert await rollups() == incremental
    # The benefit is its own dimension, never a theme of the sessions.
    assert {k[3] for k in incremental} == {"*", ""}
    assert {k[6] for k in incremental if k[1] == "benefit"} == {
        "ppa",
        "aide_logement",
        "rsa",
        "css_gratuite",
    }

    report_filters = _filters(running)
    async with running.sessionmaker() as db:
        rights = (await build_report(db, association_id, report_filters)).rights
    assert rights.totals["rights_checked"] == 15
    assert rights.totals["rights_found"] == 10
    assert rights.totals["rights_unclaimed"] == 18
    assert rights.totals["rights_band:200_400"] == 8
    assert rights.benefits["ppa"]["rights_unclaimed"] == 8
    assert rights.benefits["css_gratuite"] == Counter({"rights_unclaimed": 1})
    assert rights.departements["75"]["rights_found"] == 8
    assert rights.departements[""]["rights_checked"] == 1


def test_estimates_are_rounded_to_two_significant_figures() -> None:
    assert [about(v) for v in (0, 25, 75, 125, 3600, 4249, 4250, 12_345, 999_999)] == [
        0,
        25,
        75,
        130,
        3600,
        4200,
        4300,
        12_000,
        1_000_000,
    ]
    assert set(BAND_ESTIMATE) == BANDS


def _section(page: str) -> str:
    start = page.index('id="droits"')
    return page[start : page.index("</section>", start)]


def _row(page: str, label: str) -> list[str]:
    """The cells of the table row whose header contains ``label`` (as the page escapes it), as
    text."""
    match = re.search(r"<tr><th scope=\"row\">[^<]*" + re.escape(label) + r".*?</tr>", page)
    assert match, label
    cells = re.findall(r"<td[^>]*>(.*?)</td>", match.group(0))
    return [html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in cells]


async def _csv(http: aiohttp.ClientSession, running: Running, table: str, **query: str) -> Any:
    async with http.get(running.url("/stats.csv"), params={"table": table, **query}) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        return list(csv.DictReader(io.StringIO(await resp.text())))


async def test_page_csv_and_api_show_the_figures_with_small_counts_hidden(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    await _record(running, coordinator.user.association_id)
    await login(http, running, coordinator)
    async with http.get(running.url("/stats")) as resp:
        assert resp.status == 200
        section = _section(await resp.text())
    assert "Droits potentiels non réclamés" in section
    assert '<dd id="rights-checks">15</dd>' in section
    assert "66,7\u202f%" in section  # 10 checks of 15 found a right
    assert '<dd id="rights-unclaimed">18</dd>' in section
    # 8 × 150 € + 8 × 300 € + 1 × 600 € (the middles of the bands); css_gratuite has no amount.
    assert '<dd id="rights-estimate">environ 4\u202f200 €</dd>' in section
    assert _row(section, "Prime d&#39;activité") == ["8", "53,3\u202f%", "environ 1\u202f200 €"]
    assert _row(section, "Revenu de solidarité active") == ["< 5", "—", "—"]
    assert _row(section, "Complémentaire santé solidaire gratuite") == ["< 5", "—", "sans montant"]
    assert _row(section, "Allocations familiales") == ["0", "0,0\u202f%", "0 €"]
    paris = _row(section, "Paris (75)")
    assert paris[:2] == ["12", "16"] and paris[3:] == ["66,7\u202f%", "environ 3\u202f600 €"]
    assert _row(section, "Bouches-du-Rhône (13)") == ["< 5", "< 5", "—", "—", "—"]
    assert _row(section, "inconnu")[:2] == ["< 5", "< 5"]
    assert "Lozère" not in section  # no check there: not listed on the page
    # Highest published count first, suppressed ones after.
    assert section.index("Prime d&#39;activité") < section.index("Revenu de solidarité active")
    assert section.index("Paris (75)") < section.index("Bouches-du-Rhône (13)")

    benefits = {row["benefit"]: row for row in await _csv(http, running, "rights_benefits")}
    assert list(benefits) == list(BENEFITS)
    assert benefits["ppa"] == {
        "benefit": "ppa",
        "label": "Prime d'activité",
        "unclaimed": "8",
        "share_of_checks_pct": "53.3",
        "estimated_monthly_eur": "1200",
    }
    assert benefits["rsa"]["unclaimed"] == "< 5"
    assert benefits["rsa"]["share_of_checks_pct"] == benefits["rsa"]["estimated_monthly_eur"] == ""
    assert benefits["css_gratuite"]["estimated_monthly_eur"] == ""
    deps = {row["departement"]: row for row in await _csv(http, running, "rights_departements")}
    assert len(deps) == len(geo.departements()) + 1
    assert deps["75"]["checks"] == "12" and deps["75"]["unclaimed"] == "16"
    assert deps["75"]["share_with_rights_pct"] == "66.7"
    assert deps["75"]["estimated_monthly_eur"] == "3600"
    assert float(deps["75"]["unclaimed_per_100k"]) > 0
    assert deps["13"]["checks"] == deps["13"]["unclaimed"] == "< 5"
    assert deps["13"]["unclaimed_per_100k"] == deps["13"]["estimated_monthly_eur"] == ""
    assert deps["inconnu"]["checks"] == "< 5"
    assert deps["48"]["checks"] == "0"

    async with http.get(running.url("/api/v1/stats")) as resp:
        assert resp.status == 200
        body = await resp.json()
    document = openapi_document(running.settings.base_url)
    schema = document["paths"]["/api/v1/stats"]["get"]
    response_schema = schema["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**response_schema, "components": document["components"]})
    rights = body["rights"]
    assert (rights["checks"], rights["checks_with_rights"], rights["unclaimed"]) == (15, 10, 18)
    assert rights["share_with_rights_pct"] == 66.7
    assert rights["estimated_monthly_eur"] == 4200
    by_code = {b["code"]: b for b in rights["benefits"]}
    assert by_code["aide_logement"]["estimated_monthly_eur"] == 2400
    assert by_code["rsa"] == {
        "code": "rsa",
        "label": "Revenu de solidarité active (RSA)",
        "unclaimed": "< 5",
        "share_of_checks_pct": None,
        "estimated_monthly_eur": None,
    }
    places = {d["code"]: d for d in rights["departements"]}
    assert places["13"]["checks"] == "< 5" and places["13"]["estimated_monthly_eur"] is None
    assert places["75"]["share_with_rights_pct"] == 66.7


async def test_the_map_layer_hatches_small_counts_and_points_to_its_table(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    await _record(running, coordinator.user.association_id)
    await login(http, running, coordinator)
    async with http.get(running.url("/stats"), params={"carte": "rights"}) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert 'id="map-rights"' in page
    assert "Droits potentiels non réclamés pour 100 000 habitants, par département" in page
    paris = re.search(r'<path d="[^"]*" fill="([^"]+)" data-code="75"[^>]*><title>([^<]+)', page)
    assert paris and paris.group(1).startswith("#")
    assert "droits potentiels non réclamés pour 100 000 habitants (16)" in paris.group(2)
    marseille = re.search(r'fill="([^"]+)" data-code="13"[^>]*><title>([^<]+)', page)
    assert marseille and marseille.group(1) == "url(#map-suppressed)"
    assert "moins de 5 droits potentiels non réclamés (non publié)" in marseille.group(2)
    assert "16" not in marseille.group(2) and "(1)" not in marseille.group(2)
    assert "moins de 5 (non publié)" in page  # in the legend
    assert 'href="#droits-departements" id="map-table-link"' in page
    # The other layers are as before: the suppression is the rights layer's.
    async with http.get(running.url("/stats"), params={"carte": "unmet"}) as resp:
        assert 'url(#map-suppressed)" data-code' not in await resp.text()


async def test_the_channel_filter_applies_and_the_theme_filter_does_not(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    association_id = coordinator.user.association_id
    await _record(running, association_id)

    async def rights(**query: str) -> Counter[str]:
        async with running.sessionmaker() as db:
            return (
                await build_report(db, association_id, _filters(running, **query))
            ).rights.totals

    assert (await rights(channel="link"))["rights_checked"] == 2
    assert (await rights(channel="drop_in"))["rights_checked"] == 13
    assert (await rights(channel="callback"))["rights_checked"] == 0
    assert await rights(theme="logement") == await rights()
    await login(http, running, coordinator)
    async with http.get(running.url("/api/v1/stats"), params={"channel": "link"}) as resp:
        body = await resp.json()
    assert body["rights"]["checks"] == "< 5"
    assert body["rights"]["share_with_rights_pct"] is None
    # A period without checks: zeros, and the page says so.
    async with http.get(
        running.url("/stats"), params={"from": "2024-01-01", "to": "2024-01-31"}
    ) as r:
        assert "Aucune simulation de droits sur cette période." in _section(await r.text())


async def test_a_coordinator_sees_only_the_checks_of_their_association(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    other = await make_account(running, "coord-b@example.org", Role.COORDINATOR, "Asso B")
    async with running.sessionmaker.begin() as db:
        for _ in range(20):
            await record_check(
                db,
                association_id=other.user.association_id,
                departement="69",
                channel="appointment",
                unclaimed=[("aah", "800_plus")],
            )
    await _record(running, coordinator.user.association_id)
    await login(http, running, coordinator)
    async with http.get(running.url("/stats")) as resp:
        section = _section(await resp.text())
    assert '<dd id="rights-checks">15</dd>' in section and "Rhône (69)" not in section
    assert _row(section, "Allocation aux adultes handicapés")[0] == "0"
    deps = {row["departement"]: row for row in await _csv(http, running, "rights_departements")}
    assert deps["69"]["checks"] == "0"
    async with http.get(running.url("/api/v1/stats")) as resp:
        rights = (await resp.json())["rights"]
    assert rights["checks"] == 15
    assert {b["code"]: b for b in rights["benefits"]}["aah"]["unclaimed"] == 0
    # The other coordinator sees theirs, and not association A's.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        await login(client, running, other)
        async with client.get(running.url("/api/v1/stats")) as resp:
            theirs = (await resp.json())["rights"]
    assert theirs["checks"] == 20 and theirs["estimated_monthly_eur"] == 20_000
    assert {d["code"]: d for d in theirs["departements"]}["75"]["checks"] == 0
    async with running.sessionmaker() as db:
        total = await db.scalar(select(func.count()).select_from(StatEvent))
    assert total == 33 + 40


async def test_every_csv_table_of_the_page_downloads(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    await login(http, running, coordinator)
    async with http.get(running.url("/stats")) as resp:
        page = await resp.text()
    for table in TABLES:
        assert f'data-table="{table}"' in page
        rows = await _csv(http, running, table, **{"from": "2025-01-01", "to": "2025-12-31"})
        assert rows
    async with http.get(running.url("/stats.csv"), params={"table": "droits"}) as resp:
        assert resp.status == 400 and "rights_benefits" in await resp.text()


async def test_the_demo_history_fills_the_section(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    association_id = coordinator.user.association_id
    async with running.sessionmaker.begin() as db:
        await synthetic.generate(db, running.settings, association_id, 4000, days=60)
    await login(http, running, coordinator)
    async with http.get(running.url("/stats"), params={"carte": "rights"}) as resp:
        page = await resp.text()
    section = _section(page)
    checks = re.search(r'<dd id="rights-checks">([0-9\u202f]+)</dd>', section)
    assert checks and int(checks.group(1).replace("\u202f", "")) > 300
    assert re.search(r'<dd id="rights-estimate">environ [0-9\u202f]+ €</dd>', section)
    assert _row(section, "Prime d&#39;activité")[2].startswith("environ ")
    # The map layer: the busiest départements published in colour, the smallest hatched.
    fills = Counter(re.findall(r'fill="([^"]+)" data-code=', page))
    assert sum(fills[color] for color in PALETTES["rights"][1:]) >= 10
    assert fills["url(#map-suppressed)"] > 0
