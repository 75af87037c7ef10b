"""Booking on a phone in real headless Chromium (Pixel 7 descriptor): home → motif → slot →
form → confirmation → cancel, with screenshots under tests/artifacts/ and an accessibility
check (axe-core) of every step."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from server.store.models import Appointment, AppointmentStatus
from tests.browser import assert_accessible, chromium_with_devices, screenshot
from tests.conftest import Running
from tests.test_booking_pages import make_place

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_phone_books_sees_the_confirmation_and_cancels(running: Running) -> None:
    await make_place(running, volunteers=2)
    errors: list[str] = []
    async with chromium_with_devices() as launched:
        page = await launched.page("Pixel 7", errors=errors)
        await page.goto(running.url("/"))
        await assert_accessible(page, "home")
        await page.click("#book-button")
        await expect(page.locator(".steps-count")).to_have_text("Étape 1 sur 3")
        await assert_accessible(page, "step 1, motif")
        await page.get_by_role("link", name="CAF").click()
        await page.wait_for_selector(".slot")
        await expect(page.locator('[aria-current="step"]')).to_have_text("L'horaire")
        await assert_accessible(page, "step 2, slot")
        await screenshot(page, "booking-pixel-7-slots", full_page=False)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 412  # nothing wider than the phone
        await page.locator(".slot").first.click()
        await page.fill("#first_name", "Awa")
        await page.fill("#phone", "06 12 34 56 78")
        await page.check("#first_time_computer")
        await expect(page.locator(".steps-count")).to_have_text("Étape 3 sur 3")
        await screenshot(page, "booking-pixel-7-form", full_page=False)
        await assert_accessible(page, "step 3, contact details")
        await page.click("#booking-form button[type=submit]")
        await page.wait_for_selector("#confirmed")
        assert "Rendez-vous confirmé" in await page.inner_text("h1")
        code = await page.inner_text("#join-code")
        assert re.fullmatch(r"\d{4} \d{4}", code.strip()), code
        assert "/j/" in (await page.get_attribute("#join-link", "href") or "")
        await screenshot(page, "booking-pixel-7-confirmation", full_page=True)
        await assert_accessible(page, "confirmation")
        async with page.expect_download() as download:
            await page.click("#ics-link")
        assert (await download.value).suggested_filename == "rendez-vous.ics"
        await page.click("#cancel-form button")
        await page.wait_for_selector("#cancelled-notice")
        await screenshot(page, "booking-pixel-7-cancelled", full_page=False)
        await assert_accessible(page, "cancelled")
        await page.context.close()
    assert errors == []
    async with running.sessionmaker() as db:
        appointment = (await db.scalars(select(Appointment))).one()
    assert appointment.status == AppointmentStatus.CANCELLED
