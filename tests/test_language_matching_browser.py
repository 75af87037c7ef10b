"""Matching by language in real headless Chromium: a person whose phone reads Arabic ticks "a
volunteer who speaks my language" on /aide; the Arabic-speaking volunteer's /file shows the ask,
pushed, marked as theirs; the waiting page says its estimate counts the speakers only; the
volunteer takes them with "Prendre le suivant"."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from server import accounts
from server.store.models import QueueEntry, User
from tests.browser import Chromium, assert_accessible, chromium_with_devices
from tests.conftest import Account, Running
from tests.test_browser import log_in
from tests.test_dropin import join_live, open_all_week

pytestmark = pytest.mark.browser

WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    """A fresh Chromium per test."""
    async with chromium_with_devices() as launched:
        yield launched


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_ask_travels_from_the_phone_to_the_speakers_queue(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    await open_all_week(running, volunteer)
    async with running.sessionmaker.begin() as db:
        await accounts.set_languages(db, await db.get_one(User, volunteer.user.id), ["ar"])
    errors: list[str] = []
    desk = await chrome.page(errors=errors)
    await log_in(desk, running, volunteer)
    await desk.goto(running.url("/file"))
    await join_live(running, volunteer.user.association_id, 1)  # "L0", French, earlier
    rows = desk.locator("#queue-rows tr")
    await expect(rows).to_have_count(1)

    phone = await chrome.page("Pixel 7", errors=errors)
    await phone.goto(running.url("/langue/ar?next=/aide"))
    await expect(phone.locator("html")).to_have_attribute("dir", "rtl")
    await phone.locator("#first_name").fill("Amina")
    await phone.locator("#language_wanted").check()
    await assert_accessible(phone, "dropin-language-box")
    await phone.locator("#dropin-join").click()
    await phone.wait_for_url("**/aide/attente")
    # One speaker on duty: the estimate counts them only, and the page says so.
    await expect(phone.locator("#language-note")).to_be_visible()

    await expect(rows).to_have_count(2)
    badge = rows.nth(1).locator(".language-badge")
    await expect(badge).to_have_text("Demande un bénévole parlant arabe · vous la parlez")
    await expect(badge).to_have_attribute("data-state", "connected")
    await expect(rows.nth(0).locator(".language-badge")).to_have_count(0)
    await assert_accessible(desk, "queue-language-badge")

    await desk.locator("#take-next").click()
    await desk.wait_for_url("**/assistance/*")
    async with running.sessionmaker() as db:
        amina = await db.scalar(select(QueueEntry).where(QueueEntry.first_name == "Amina"))
    assert amina is not None and amina.taken_by_id == volunteer.user.id
    assert (amina.language, amina.language_wanted) == ("ar", True)
    assert errors == []
