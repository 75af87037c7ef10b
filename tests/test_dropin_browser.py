"""The drop-in queue in real headless Chromium: a person on a phone waits on /aide, a volunteer
sees them appear on /file (pushed), takes them, and both land in the same room with video; the
waiting page follows its position; outside the permanences the page offers a call-back."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import select

from server.dropin import places as dropin
from server.runtime import SESSIONMAKER_KEY
from server.store.models import (
    AssistanceSession,
    CallbackRequest,
    OutboxMessage,
    QueueEntry,
    utcnow,
)
from signaling.dropin import NAMESPACE, QUEUE_HUB_KEY, volunteers_room
from signaling.server import SIO_KEY
from tests.browser import Chromium, assert_accessible, chromium_with_devices, screenshot
from tests.conftest import Account, Running, make_account
from tests.test_browser import consent, log_in, wait_frames_advance, wait_status
from tests.test_dropin import (
    add_motif,
    join_directly,
    join_live,
    open_all_week,
    until,
    volunteer_peer,
)

pytestmark = pytest.mark.browser

WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    """A fresh Chromium per test."""
    async with chromium_with_devices() as launched:
        yield launched


async def wait_in_line(page: Page, running: Running, first_name: str, motif: str) -> None:
    """The person fills the /aide form and reaches the waiting room."""
    await page.goto(running.url("/"))
    await page.get_by_role("link", name="Parler à un bénévole maintenant").click()
    await page.wait_for_url("**/aide")
    await page.get_by_label("Pour quelle démarche ?").select_option(label=motif)
    await page.get_by_label("Votre prénom (si vous voulez)").fill(first_name)
    await page.get_by_role("button", name="Attendre mon tour").click()
    await page.wait_for_url("**/aide/attente")


async def test_phone_waits_volunteer_takes_them_and_both_share_the_room_with_video(
    running: Running, volunteer: Account, chrome: Chromium, backend: str
) -> None:
    """Position changes live, "Prendre le suivant" opens the room for the volunteer and rings
    the phone into it; the camera's video reaches the volunteer."""
    await open_all_week(running, volunteer)
    await add_motif(running, volunteer, "CAF")
    [earlier] = await join_directly(running, volunteer.user.association_id, 1)
    errors: list[str] = []
    vol = await chrome.page(errors=errors, viewport={"width": 1400, "height": 1000})
    await log_in(vol, running, volunteer)
    await vol.get_by_role("link", name="File d'attente").click()
    await vol.wait_for_url("**/file")

    phone = await chrome.page("Pixel 7", errors=errors)
    await wait_in_line(phone, running, "Aïcha", "CAF")
    await expect(phone.locator("#position")).to_have_text("Vous êtes la personne n° 2.")
    await expect(phone.locator("#estimate")).to_contain_text("Attente : environ")
    # Pushed to the volunteer, no reload: the newcomer's row with first name and motif.
    row = vol.locator("#queue-rows tr").nth(1)
    await expect(row).to_contain_text("Aïcha")
    await expect(row).to_contain_text("CAF")
    await expect(vol.locator("#queue-count")).to_have_text("2 personne(s) en attente")
    # The pushed row's forms still work without the socket: their actions come from the page
    # config's URL templates, filled with the entry's id.
    entry = await row.get_attribute("data-entry")
    assert entry and re.fullmatch(r"[0-9a-f-]{36}", entry), entry
    for action, path in (("take", "prendre"), ("transfer", "transferer"), ("gone", "absent")):
        form = row.locator(f'form[data-action="{action}"]')
        await expect(form).to_have_attribute("action", f"/file/{entry}/{path}")
    await screenshot(vol, "dropin-volunteer-queue")
    await screenshot(phone, "dropin-phone-waiting", full_page=False)
    await assert_accessible(vol, "queue with two people")
    await assert_accessible(phone, "waiting room, second")

    # The person ahead leaves: the phone moves up without reloading.
    await vol.locator(f'form[data-action="gone"][data-entry="{earlier}"] button').click()
    await expect(phone.locator("#position")).to_have_text("Vous êtes la prochaine personne.")
    await expect(vol.locator("#queue-rows tr")).to_have_count(1)
    await assert_accessible(phone, "waiting room, next")

    await vol.get_by_role("button", name="Prendre le suivant").click()
    await vol.wait_for_url(re.compile(r"/assistance/[^/]+$"))
    session_id = vol.url.rsplit("/", 1)[1]
    # The phone rings (title, then straight into the room).
    await phone.wait_for_url("**/b")
    await consent(phone)
    await wait_status(phone, "connected")
    await wait_status(vol, "connected")
    await phone.get_by_role("button", name="Montrer avec la caméra").click()
    await vol.wait_for_function(
        "() => document.getElementById('remote-video').videoWidth > 0", timeout=WAIT_MS
    )
    await wait_frames_advance(vol)
    await screenshot(vol, "dropin-volunteer-sees-camera")

    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
        entry = await db.scalar(
            select(QueueEntry).where(QueueEntry.assistance_session_id == session_id)
        )
    assert session.channel == "drop_in" and session.beneficiary_name == "Aïcha"
    assert entry is not None and entry.first_name == "Aïcha"
    assert errors == []


async def test_turn_changes_the_title_and_a_closed_queue_offers_a_call_back(
    running: Running, chrome: Chromium, backend: str
) -> None:
    """Outside the permanences the page says so and links to the call-back form, which a
    person fills at night; a waiting page's title announces the turn."""
    volunteer = await make_account(running, "camille@example.org")
    errors: list[str] = []
    page = await chrome.page("iPhone 15", errors=errors)
    await page.goto(running.url("/aide"))
    await expect(page.locator("#dropin-closed")).to_be_visible()
    await assert_accessible(page, "drop-in closed")
    await page.get_by_role("link", name="Être rappelé").first.click()
    await page.wait_for_url(re.compile(r"/rappel"))
    await page.get_by_label("Votre numéro de téléphone").fill("06 12 34 56 78")
    await page.get_by_label("Votre prénom (si vous voulez)").fill("Rosa")
    await page.get_by_label("Le matin (9 h – 12 h)").check()
    await screenshot(page, "dropin-closed-callback-form", full_page=False)
    await assert_accessible(page, "call-back form")
    await page.get_by_role("button", name="Être rappelé").click()
    await page.wait_for_url(re.compile(r"/rappel/annuler/"))
    await expect(page.get_by_role("button", name="Annuler ma demande")).to_be_visible()
    await assert_accessible(page, "call-back confirmed")
    async with running.sessionmaker() as db:
        [request] = (await db.scalars(select(CallbackRequest))).all()
        acks = (await db.scalars(select(OutboxMessage))).all()
    assert request.phone == "+33612345678" and request.first_name == "Rosa"
    assert any(ack.channel == "sms" and "/rappel/annuler/" in ack.body for ack in acks)

    await open_all_week(running, volunteer)
    await page.goto(running.url("/aide"))
    await assert_accessible(page, "drop-in open")
    await page.get_by_role("button", name="Attendre mon tour").click()
    await page.wait_for_url("**/aide/attente")
    await expect(page.locator("#position")).to_have_text("Vous êtes la prochaine personne.")
    vol = await chrome.page(errors=errors)
    await log_in(vol, running, volunteer)
    await vol.goto(running.url("/file"))
    await expect(vol.locator("#queue-rows tr")).to_have_count(1)
    await vol.get_by_role("button", name="Prendre", exact=True).click()
    await vol.wait_for_url(re.compile(r"/assistance/[^/]+$"))
    await expect(page).to_have_title(re.compile("C'est votre tour"))
    await page.wait_for_url("**/b")
    assert errors == []


async def test_a_volunteer_page_that_missed_a_delta_asks_for_the_list_and_shows_it_right(
    running: Running, volunteer: Account, chrome: Chromium, backend: str
) -> None:
    """The page keeps the list from `queue_delta` pushes; when one never reached it, the next
    one does not follow its version: it asks (`queue_sync`) and shows the whole list again,
    never the list with a change missing."""
    await open_all_week(running, volunteer)
    association_id = volunteer.user.association_id
    first, _second = await join_directly(running, association_id, 2)
    hub = running.app[QUEUE_HUB_KEY]
    sio = running.app[SIO_KEY]
    errors: list[str] = []
    vol = await chrome.page(errors=errors)
    await log_in(vol, running, volunteer)
    await vol.goto(running.url("/file"))
    await expect(vol.locator("#queue-rows tr")).to_have_count(2)
    # Another queue page of the volunteer stays in the room, so the pushes go on meanwhile.
    desk, desk_http = await volunteer_peer(running, volunteer)
    try:
        await until(desk, "queue", lambda q: q["total"] == 2)
        desk_sid = desk.client.get_sid(NAMESPACE)
        [page_sid] = [sid for sid in hub.logins.of(volunteer.user.id) if sid != desk_sid]
        room = volunteers_room(association_id)
        await sio.leave_room(page_sid, room, namespace=NAMESPACE)
        await join_live(running, association_id, 1)  # "L0": the page misses this push
        await until(desk, "queue", lambda q: q["total"] == 3)
        await sio.enter_room(page_sid, room, namespace=NAMESPACE)
        await expect(vol.locator("#queue-rows tr")).to_have_count(2)
        async with running.app[SESSIONMAKER_KEY].begin() as db:
            assert await dropin.leave(db, first, utcnow())
        # The delta of that departure does not follow the page's version: it asks again.
        await until(desk, "queue", lambda q: q["total"] == 2)
        rows = vol.locator("#queue-rows tr")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_contain_text("P1")
        await expect(rows.nth(1)).to_contain_text("L0")
        await expect(vol.locator("#queue-count")).to_have_text("2 personne(s) en attente")
        # And the deltas after it apply again.
        await join_live(running, association_id, 1)
        await expect(rows).to_have_count(3)
    finally:
        await desk.close()
        await desk_http.close()
    assert errors == []
