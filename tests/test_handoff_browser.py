"""The handoff sheet in real headless Chromium: the volunteer ends an assistance, lands on the
sheet form and fills it; the beneficiary's end screen offers "Voir ma fiche", which shows the
large printable sheet (print CSS, the "Imprimer" button from a module script); no console error."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from server.store.models import HandoffSheet
from tests.browser import Chromium, assert_accessible, chromium_with_devices, screenshot
from tests.conftest import PG_UNREACHABLE, Account, Running
from tests.test_browser import consent, enter_code, log_in, open_assistance, wait_status

pytestmark = pytest.mark.browser

WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)
NEXT_STEPS = "Envoyer votre avis d'impôt à la CAF avant vendredi."


@pytest.fixture(autouse=True)
def postgres_is_required(backend: str) -> None:
    """A browser test never skips: an unreachable PostgreSQL fails its variants instead."""
    if backend == "postgresql" and PG_UNREACHABLE:
        pytest.fail(PG_UNREACHABLE)


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    """A fresh Chromium per test."""
    async with chromium_with_devices() as launched:
        yield launched


async def test_volunteer_fills_the_sheet_and_the_beneficiary_prints_it(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    vol_errors: list[str] = []
    ben_errors: list[str] = []
    vol = await chrome.page(errors=vol_errors, viewport={"width": 1280, "height": 900})
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)
    code = (await vol.locator("#join-code").inner_text()).strip()
    ben = await chrome.page(errors=ben_errors, viewport={"width": 412, "height": 860})
    await enter_code(ben, running, code)
    await consent(ben, "Marie")
    await wait_status(vol, "connected")

    await vol.get_by_role("button", name="Terminer l'assistance").click()
    await vol.wait_for_url(f"**/assistance/{session_id}/fiche")
    await expect(ben.locator("#step-ended")).to_be_visible()
    await expect(ben.get_by_role("link", name="Voir ma fiche")).to_be_visible()

    # The form: ticks, two radios, two short texts with their counters, in under a minute.
    await expect(vol.get_by_role("link", name="Passer")).to_be_visible()
    await assert_accessible(vol, "sheet form")
    await vol.get_by_label("Argent, impôts").check()
    await vol.get_by_label("CAF").check()
    await vol.get_by_label("Impôts (DGFiP)").check()
    await vol.get_by_label("La personne a fait avec de l'aide").check()
    await vol.get_by_label("À suivre (un autre rendez-vous)").check()
    await vol.get_by_label("Ce qui a été fait").fill("Mot de passe CAF refait ensemble.")
    await expect(vol.locator("#actions_done-count")).to_have_text("33 / 1000")
    await vol.get_by_label("La suite pour la personne, en mots simples").fill(NEXT_STEPS)
    await vol.get_by_label("Code postal de la personne (facultatif)").fill("13008")
    await vol.get_by_label(
        "La personne accepte que les prochains bénévoles lisent cette fiche"
    ).check()
    await screenshot(vol, "handoff-form")
    await assert_accessible(vol, "sheet form, filled")
    await vol.get_by_role("button", name="Enregistrer la fiche").click()
    await expect(vol.locator("#sheet-saved")).to_be_visible()
    await expect(vol.locator("#sheet-link")).to_contain_text("/fiche/")
    await assert_accessible(vol, "sheet saved")
    async with running.sessionmaker() as db:
        sheet = await db.get(HandoffSheet, await _sheet_id(running, session_id))
    assert sheet is not None and sheet.shared_with_volunteers

    # The beneficiary opens their sheet from the end screen: large, simple, printable.
    await ben.get_by_role("link", name="Voir ma fiche").click()
    await ben.wait_for_url("**/b/fiche")
    await expect(ben.locator("#sheet-next")).to_have_text(NEXT_STEPS)
    await expect(ben.locator("#sheet-themes")).to_contain_text("Argent, impôts")
    await expect(ben.locator("#sheet-outcome")).to_contain_text("À suivre")
    await screenshot(ben, "handoff-beneficiary-sheet")
    await assert_accessible(ben, "the person's sheet")
    await ben.evaluate("() => { window.print = () => { document.body.dataset.printed = '1'; }; }")
    await ben.get_by_role("button", name="Imprimer").click()
    await expect(ben.locator("body")).to_have_attribute("data-printed", "1")
    await ben.emulate_media(media="print")
    await expect(ben.get_by_role("button", name="Imprimer")).to_be_hidden()
    await expect(ben.locator(".site-header")).to_be_hidden()
    await expect(ben.locator("#sheet-next")).to_be_visible()
    await screenshot(ben, "handoff-beneficiary-sheet-print")
    await ben.emulate_media(media="screen")

    # Withdrawing the agreement from the sheet itself.
    await ben.get_by_role("button", name="Je ne veux plus qu'ils la lisent").click()
    await expect(ben.locator("#share-done")).to_contain_text("ne verront plus")
    await assert_accessible(ben, "the person's sheet, sharing withdrawn")

    assert vol_errors == []
    assert ben_errors == []


async def _sheet_id(running: Running, session_id: str) -> str:
    """The id of the session's sheet."""
    async with running.sessionmaker() as db:
        sheet_id = await db.scalar(
            select(HandoffSheet.id).where(HandoffSheet.assistance_session_id == session_id)
        )
    assert sheet_id is not None and re.fullmatch(r"[0-9a-f-]{36}", sheet_id)
    return sheet_id
