"""Every page a helped person meets, in each language, on a phone (Chromium, Pixel 7): the
document's language and direction, right-to-left mirrored for Arabic and Dari with codes kept
left-to-right, zero axe-core violations; screenshots under tests/artifacts/. And the switch:
chosen once, kept page after page and into the SMS and e-mail the person receives."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import select

from server import i18n
from server.store.models import Appointment, OutboxMessage
from tests.browser import AXE_JS, Chromium, assert_accessible, chromium_with_devices, screenshot
from tests.conftest import Running
from tests.language_pages import beneficiary_pages
from tests.test_booking_pages import make_place

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)

GROUPS = {
    "rtl": ("ar", "fa-AF"),
    "ltr-1": ("en", "uk"),
    "ltr-2": ("ro", "es", "fr"),
}


async def _check_page(page: Page, language: i18n.Language, name: str) -> None:
    """The page says its language and direction, and axe finds nothing wrong."""
    html = page.locator("html")
    await expect(html).to_have_attribute("lang", language.code)
    await expect(html).to_have_attribute("dir", language.dir)
    await assert_accessible(page, f"{language.code} {name}")
    if language.rtl or name == "home":
        await screenshot(page, f"lang-{language.code}-{name}", full_page=False)


async def _mirrored(page: Page) -> None:
    """Right-to-left: the first item of the switch sits on the right, codes read left-to-right."""
    first = await page.locator(".lang-switch li").first.bounding_box()
    last = await page.locator(".lang-switch li").last.bounding_box()
    assert first and last
    assert first["x"] > last["x"] or first["y"] < last["y"], (first, last)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("group", list(GROUPS))
async def test_every_beneficiary_page_in_each_language_on_a_phone(
    running: Running, group: str
) -> None:
    pages = await beneficiary_pages(running)
    async with chromium_with_devices() as chrome:
        for code in GROUPS[group]:
            await _every_page(chrome, running, pages.paths, pages.join_link, i18n.BY_CODE[code])


async def _every_page(
    chrome: Chromium,
    running: Running,
    paths: dict[str, str],
    join_link: str,
    language: i18n.Language,
) -> None:
    errors: list[str] = []
    # The browser's own language: the first visit follows it, without any choice made.
    page = await chrome.page("Pixel 7", errors=errors, locale=language.code)
    # axe-core in every document of this context as it opens (one script, not one upload each).
    await page.context.add_init_script(path=str(AXE_JS))
    for name, path in paths.items():
        await page.goto(running.url(path))
        await _check_page(page, language, name)
        if language.rtl and name == "home":
            await _mirrored(page)
        if name == "booking-manage":
            code = page.locator("#join-code")
            assert await code.evaluate("e => getComputedStyle(e).direction") == "ltr"
    # The drop-in waiting room, through its form (its proof of work solves in the page).
    await page.goto(running.url(paths["dropin"]))
    await page.locator("#dropin-join").click()
    await page.wait_for_url("**/aide/attente")
    await _check_page(page, language, "dropin-waiting")
    await page.locator("#leave-form button").click()  # one live place per address at most
    await page.wait_for_url("**/aide/quitter")
    await _check_page(page, language, "dropin-left")
    # The room, before and after the person agrees to be helped.
    await page.goto(join_link)
    await page.wait_for_selector("#step-consent")
    await _check_page(page, language, "room-consent")
    await page.context.close()
    unexpected = [e for e in errors if "404" not in e]
    assert unexpected == [], unexpected


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_switch_keeps_the_choice_across_pages_and_into_the_messages(
    running: Running,
) -> None:
    await make_place(running, volunteers=1)
    arabic = i18n.BY_CODE["ar"]
    async with chromium_with_devices() as chrome:
        page = await chrome.page("Pixel 7")  # a French browser
        await page.goto(running.url("/"))
        await expect(page.locator("html")).to_have_attribute("lang", "fr")
        await page.locator('.lang-switch a[hreflang="ar"]').click()
        await expect(page.locator("html")).to_have_attribute("dir", "rtl")
        await expect(page.locator('.lang-switch a[aria-current="true"]')).to_have_text("العربية")
        await page.click("#book-button")
        await expect(page.locator("html")).to_have_attribute("lang", "ar")
        await page.locator(".choice-list a").first.click()
        await page.locator(".slot").first.click()
        await expect(page.locator("html")).to_have_attribute("lang", "ar")
        await page.fill("#first_name", "Amina")
        await page.fill("#phone", "06 12 34 56 78")
        await page.fill("#email", "amina@example.org")
        await page.click("#booking-form button[type=submit]")
        await page.wait_for_selector("#confirmed")
        await _check_page(page, arabic, "booking-confirmed")
        await page.context.close()
    async with running.sessionmaker() as db:
        appointment = (await db.scalars(select(Appointment))).one()
        messages = list(await db.scalars(select(OutboxMessage)))
    assert appointment.language == "ar"
    with i18n.use_language(arabic):
        confirmed = i18n.gettext("Votre rendez-vous en visio est confirmé.")
        sms_start = i18n.gettext(
            "Rendez-vous visio confirmé le %(day)s à %(time)s. "
            "Lien (15 min avant) : %(join)s Code : %(code)s. Annuler ou changer : %(manage)s"
        )
    assert confirmed != "Votre rendez-vous en visio est confirmé."
    emails = [m for m in messages if m.channel == "email"]
    sms = [m for m in messages if m.channel == "sms"]
    assert emails and sms
    assert any(confirmed in m.body for m in emails), [m.body[:200] for m in emails]
    assert all("Bonjour" not in m.body for m in emails + sms)
    assert any(sms_start.split("%")[0].strip() in m.body for m in sms), [m.body for m in sms]
