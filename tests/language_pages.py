"""Every page a helped person meets, made reachable in one test database: home, code, a dead
link, an unknown address, drop-in, call-back and its cancel page, the booking steps and the
manage, move and recover pages, a handoff sheet, the vault and a room. Shared by the language
tests over HTTP (tests/test_language_pages.py) and in Chromium (tests/test_language_browser.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiohttp
from sqlalchemy import select

from server import callback_requests
from server.callback_requests import CallbackForm
from server.ratelimit import RATELIMIT_KEY
from server.store.models import Association, utcnow
from tests.conftest import Running, browser_session, create_assistance, login, make_account
from tests.test_booking_pages import book, make_place, slot_times
from tests.test_dropin import open_all_week
from tests.test_handoff import end_assistance, file_sheet, join_as_beneficiary

SHEET_LINK = re.compile(r"/fiche/([A-Za-z0-9_-]{20,})")


@dataclass
class Pages:
    """The addresses of the beneficiary's pages (name → path), and the room's join link."""

    paths: dict[str, str]
    join_link: str


async def beneficiary_pages(running: Running) -> Pages:
    """Make a permanence with a booking, a call-back, a filed sheet and a live session; the
    addresses of every page a helped person meets."""
    place = await make_place(running, volunteers=1)
    paths = {
        "home": "/",
        "code": "/code",
        "dead-link": "/j/" + "A" * 43,
        "not-found": "/nulle-part",
        "dropin": "/aide",
        "callback": "/rappel",
        "booking-motifs": "/rendez-vous",
        "booking-recover": "/rendez-vous/retrouver",
        "vault": "/coffre",
    }
    http = await browser_session()
    volunteer = await browser_session()
    try:
        times = await slot_times(http, running, place)
        association = f"a={place.association_id}"
        paths["booking-slots"] = f"/rendez-vous/motif/{place.motif_id}?{association}"
        paths["booking-form"] = (
            f"/rendez-vous/motif/{place.motif_id}/reserver?{association}&t={times[0]}"
            "&tz=Europe/Paris"
        )
        status, page, url = await book(http, running, place, times[1])
        assert status == 200, page
        manage = str(aiohttp.client.URL(url).path)
        paths["booking-manage"] = manage
        paths["booking-move"] = manage + "/deplacer"

        async with running.sessionmaker.begin() as db:
            found = await db.scalar(
                select(Association).where(Association.id == place.association_id)
            )
            assert found is not None
            form = CallbackForm(
                phone="06 98 76 54 32", first_name="Olena", windows=("any",)
            ).validated(running.settings.timezone, set())
            done = await callback_requests.submit(
                db,
                running.settings,
                found,
                form,
                utcnow(),
                sms_budget=running.app[RATELIMIT_KEY],
            )
            assert done.cancel_token
        paths["callback-manage"] = f"/rappel/annuler/{done.cancel_token}"

        account = await make_account(running, "langues@example.org")
        await open_all_week(running, account)  # the drop-in queue is open, day and night
        await login(volunteer, running, account)
        session_id = await create_assistance(volunteer, running)
        beneficiary = await browser_session()
        try:
            await join_as_beneficiary(beneficiary, running, session_id)
        finally:
            await beneficiary.close()
        await end_assistance(volunteer, running, session_id)
        _status, page = await file_sheet(volunteer, running, f"/assistance/{session_id}/fiche")
        token = SHEET_LINK.search(page)
        assert token, page[:500]
        paths["sheet"] = f"/fiche/{token.group(1)}"

        live = await create_assistance(volunteer, running)
        async with volunteer.get(running.url(f"/assistance/{live}")) as resp:
            room = await resp.text()
        join = re.search(r'id="join-link">([^<]+)<', room)
        assert join, room[:500]
        join_link = join.group(1)
    finally:
        await http.close()
        await volunteer.close()
    return Pages(paths, join_link)
