"""The proof of work in real headless Chromium, under our strict CSP: once the queue's global
budget is spent, /aide loads the ALTCHA widget (npm `altcha`, from our origin), which solves
the challenge in its PBKDF2 Worker by itself, and the person joins as usual; a click made before
the solution is ready is sent when it is. While the budget lasts, the page loads none of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

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


WIDGET_FILES = {
    "/static/vendor/altcha/altcha.min.js",
    "/static/vendor/altcha/altcha.css",
    "/static/vendor/altcha/pbkdf2.js",
    "/static/js/altcha-setup.js",
}


def paths(requests: list[str]) -> set[str]:
    """The URL paths a page requested."""
    return {urlsplit(url).path for url in requests}


async def test_under_pressure_the_phone_solves_the_challenge_and_joins(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """The waiting-room form under pressure: the widget (our files only) says it checks,
    solves the challenge, the join goes through; no CSP violation nor console error on the
    way. Before the budget is spent the page loads no widget."""
    await open_all_week(running, volunteer)
    errors: list[str] = []
    requests: list[str] = []
    calm = await chrome.page("Pixel 7", errors=errors, requests=requests)
    await calm.goto(running.url("/aide"))
    await expect(calm.get_by_role("button", name="Attendre mon tour")).to_be_visible()
    assert not paths(requests) & WIDGET_FILES
    assert await calm.locator("altcha-widget").count() == 0

    assert await running.app[RATELIMIT_KEY].spend("queue_joins")  # someone joined before
    requests.clear()
    phone = await chrome.page("Pixel 7", errors=errors, requests=requests)
    await phone.goto(running.url("/aide"))
    # Clicked while the widget still works: the form waits for the solution, then goes by
    # itself.
    await expect(
        phone.locator("altcha-widget").get_by_text("Vérification automatique en cours")
    ).to_be_visible()
    await phone.get_by_label("Votre prénom (si vous voulez)").fill("Aïcha")
    await phone.get_by_role("button", name="Attendre mon tour").click()
    await phone.wait_for_url("**/aide/attente")
    await expect(phone.locator("#position")).to_have_text("Vous êtes la prochaine personne.")
    async with running.sessionmaker() as db:
        [entry] = list(await db.scalars(select(QueueEntry)))
        assert entry.first_name == "Aïcha"
        assert len(list(await db.scalars(select(UsedChallenge)))) == 1
    assert errors == []
    assert paths(requests) >= WIDGET_FILES
    origin = urlsplit(running.url("/")).netloc
    assert {urlsplit(url).netloc for url in requests} == {origin}, requests

    # A second person opens the page and waits for the check before clicking.
    other = await chrome.page("Pixel 7", errors=errors)
    await other.goto(running.url("/aide"))
    widget = other.locator("altcha-widget")
    await expect(widget.get_by_text("Vérification faite. Vous pouvez envoyer.")).to_be_visible()
    await expect(widget.get_by_role("checkbox")).to_be_checked()
    assert await widget.locator('input[name="altcha"]').input_value()
    assert await widget.get_by_text("ALTCHA").count() == 0  # no branding
    await screenshot(other, "pow-help-solved", full_page=False)
    await assert_accessible(other, "help page, proof of work done")
    await other.get_by_role("button", name="Attendre mon tour").click()
    await other.wait_for_url("**/aide/attente")
    assert errors == []
