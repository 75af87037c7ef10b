"""The statistics dashboard in real Chromium: map (its three layers), ranking, the rights
checks' section, a CSV download that parses, no console error (the page needs no JavaScript);
the coordinator's other list pages pass the accessibility check too."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from playwright.async_api import expect

from server.rights.statistics import record_check
from server.stats.events import EventKind, record
from server.store.models import Role
from tests.browser import assert_accessible, chromium_with_devices, screenshot
from tests.conftest import Account, Running, make_account

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def _events(running: Running, coordinator: Account) -> None:
    async with running.sessionmaker.begin() as db:
        for i, postal in enumerate(["75011"] * 8 + ["69001"] * 6 + ["97411"] * 5 + ["ZZ"]):
            await record(
                db,
                EventKind.SHEET_FILED,
                association_id=coordinator.user.association_id,
                channel=("drop_in", "link", "appointment", "callback")[i % 4],
                themes=["logement"] if i % 2 else ["social_sante", "argent_impots"],
                organisations=["caf"],
                outcome="resolved",
                autonomy="alone",
                volunteer_id=coordinator.user.id,
                duration_seconds=600 + 60 * i,
                postal_code=postal,
            )
        # Rights checks: Paris published, Lozère hatched on the map (fewer than 5).
        for departement, times in (("75", 6), ("48", 2)):
            for _ in range(times):
                await record_check(
                    db,
                    association_id=coordinator.user.association_id,
                    departement=departement,
                    channel="drop_in",
                    unclaimed=[("ppa", "100_200"), ("css_gratuite", None)],
                )
        for postal in ["48000"] * 6 + ["13001"] * 7 + ["97200"] * 5:
            await record(
                db,
                EventKind.QUEUE_LEFT,
                association_id=coordinator.user.association_id,
                channel="drop_in",
                reason="lost",
                postal_code=postal,
            )


async def test_coordinator_sees_the_map_and_downloads_a_csv(
    running: Running, coordinator: Account, tmp_path: Path
) -> None:
    await _events(running, coordinator)
    await make_account(running, "referente@example.org", Role.REFERRER)  # a row on /referents
    errors: list[str] = []
    async with chromium_with_devices() as launched:
        page = await launched.page(errors=errors, accept_downloads=True)
        await page.goto(running.url("/login"))
        await page.get_by_label("Adresse e-mail").fill(coordinator.email)
        await page.get_by_label("Mot de passe").fill(coordinator.password)
        await page.get_by_role("button", name="Se connecter").click()
        await page.wait_for_url("**/tableau")
        await page.get_by_role("link", name="Statistiques").click()
        await page.wait_for_url("**/stats")
        assert await page.locator("#total-sessions").inner_text() == "20"
        await assert_accessible(page, "statistics")
        assert await page.locator("svg.france-map path.dep").count() == 96
        assert await page.locator("svg.france-map g.inset").count() == 5
        title = await page.locator('path[data-code="75"] title').text_content()
        assert title is not None and "Paris (75)" in title and "pour 100 000" in title
        await page.locator("#map-unmet-link").click()
        await page.wait_for_url("**carte=unmet**")
        first = page.locator("#ranking tbody tr").first
        assert "Lozère (48)" in await first.inner_text()
        await screenshot(page, "stats-dashboard")
        await assert_accessible(page, "statistics, unmet demand map")
        await page.locator("#map-rights-link").click()
        await page.wait_for_url("**carte=rights**")
        assert await page.locator("#rights-checks").inner_text() == "8"
        lozere = page.locator('path[data-code="48"]')
        assert await lozere.get_attribute("fill") == "url(#map-suppressed)"
        await page.locator("#map-table-link").click()
        await expect(page.locator("#droits-departements")).to_be_in_viewport()
        row = page.locator("#droits-departements tbody tr").first
        assert "Paris (75)" in await row.inner_text()
        await screenshot(page, "stats-rights-map")
        await assert_accessible(page, "statistics, rights map and section")
        async with page.expect_download() as info:
            await page.locator('a.csv-link[data-table="departements"]').click()
        download = await info.value
        target = tmp_path / "departements.csv"
        await download.save_as(target)
        rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
        by_code = {row["departement"]: row for row in rows}
        assert by_code["75"]["sessions"] == "8"
        assert by_code["971"]["sessions"] == "0"
        assert by_code["974"]["sessions"] == "5"
        assert by_code["inconnu"]["sessions"] == "< 5"
        assert by_code["48"]["unmet"] == "6"
        for menu, path in (
            ("Bénévoles", "benevoles"),
            ("Motifs", "motifs"),
            ("Référents", "referents"),
        ):
            await page.get_by_role("link", name=menu, exact=True).click()
            await page.wait_for_url(f"**/{path}")
            await expect(page.locator("table.list tbody tr").first).to_be_visible()
            await assert_accessible(page, menu)
    assert errors == []
