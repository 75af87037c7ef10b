"""The proof of work in real headless Chromium, under our strict CSP: once the queue's global
budget is spent, /aide solves its challenge in Workers (WebCrypto PBKDF2) by itself, and the
person joins as usual; a click made before the solution is ready is sent when it is."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from server.ratelimit import RATELIMIT_KEY
from server.settings import Settings
from server.store.models import QueueEntry, UsedChallenge
from tests.browser import Chromium, assert_accessible, chromium_with_devices, screenshot
from tests.conftest import Account, Running
from tests.test_dropin import open_all_week

pytestmark = pytest.mark.browser

expect.set_options(timeout=30_000)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One join an hour before the slower mode; the default proof of work."""
    return settings.model_copy(update={"budget_queue_joins": "1/hour"})


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    """A fresh Chromium per test."""
    async with chromium_with_devices() as launched:
        yield launched


async def test_under_pressure_the_phone_solves_the_challenge_and_joins(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """The waiting-room form under pressure: the page says it checks, the Workers solve the
    challenge, the join goes through; no CSP violation nor console error on the way."""
    await open_all_week(running, volunteer)
    assert await running.app[RATELIMIT_KEY].spend("queue_joins")  # someone joined before
    errors: list[str] = []
    phone = await chrome.page("Pixel 7", errors=errors)
    await phone.goto(running.url("/aide"))
    # Clicked at once: the form waits for the solution, then goes by itself.
    await phone.get_by_label("Votre prénom (si vous voulez)").fill("Aïcha")
    await phone.get_by_role("button", name="Attendre mon tour").click()
    await phone.wait_for_url("**/aide/attente")
    await expect(phone.locator("#position")).to_have_text("Vous êtes la prochaine personne.")
    async with running.sessionmaker() as db:
        [entry] = list(await db.scalars(select(QueueEntry)))
        assert entry.first_name == "Aïcha"
        assert len(list(await db.scalars(select(UsedChallenge)))) == 1
    assert errors == []

    # A second person opens the page and waits for the check before clicking.
    other = await chrome.page("Pixel 7", errors=errors)
    await other.goto(running.url("/aide"))
    await expect(other.locator("#pow-status")).to_have_text(
        "Vérification faite. Vous pouvez envoyer."
    )
    await screenshot(other, "pow-help-solved", full_page=False)
    await assert_accessible(other, "help page, proof of work done")
    await other.get_by_role("button", name="Attendre mon tour").click()
    await other.wait_for_url("**/aide/attente")
    assert errors == []
