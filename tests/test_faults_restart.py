"""The server stopped (SIGTERM) and started again in the middle of an assistance, with two real
Chromium pages (volunteer and beneficiary): both show "Reconnexion…" while it is away, rejoin
the same session when it is back, and the shared screen flows again.

The server runs as a real process (``python -m server.cli serve``) on a fixed data folder with
SQLite, restarted on the same port, as a supervisor (systemd) would do it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from server import accounts, assist
from server.db import make_sessionmaker
from server.store.engine import make_engine
from server.store.models import AssistanceSession, Role, SessionStatus
from tests.browser import Chromium, chromium_with_devices, collect_console_errors
from tests.conftest import PASSWORD
from tests.processes import STOP_TIMEOUT_S, ServeProcess

pytestmark = pytest.mark.browser

WAIT_MS = 20_000
SOON_MS = 3_000  # a page tells a dropped socket within this (its disconnect event is immediate)
expect.set_options(timeout=WAIT_MS)
FRAMES_JS = (
    "() => document.getElementById('remote-video').getVideoPlaybackQuality().totalVideoFrames"
)
FRAMES_ABOVE_JS = (
    "n => document.getElementById('remote-video').getVideoPlaybackQuality().totalVideoFrames > n"
)
# Every connection status a page shows, in order (the page sets `data-vp-status` on <body>).
RECORD_STATUS_JS = """(() => {
  window.vpStatuses = [];
  new MutationObserver(() => window.vpStatuses.push(document.body.dataset.vpStatus))
    .observe(document, { attributes: true, subtree: true, attributeFilter: ["data-vp-status"] });
})()"""
# Chromium reports every failed attempt to reach the stopped server on the console; those are
# the outage itself, not a fault of the page.
OUTAGE_LINE = re.compile(
    r"WebSocket connection to .* failed|Failed to load resource: net::ERR_CONNECTION_REFUSED"
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    """A migrated data folder (SQLite) with a volunteer account, and the server running on it."""
    made = ServeProcess(tmp_path / "var")
    made.data_dir.mkdir()
    await made.migrate()
    engine = make_engine(made.settings.database_url)
    try:
        async with make_sessionmaker(engine, made.settings).begin() as db:
            association = await accounts.get_or_create_association(db, "Asso A")
            await accounts.create_user(
                db,
                association=association,
                email="camille@example.org",
                name="Camille",
                role=Role.VOLUNTEER,
                password=PASSWORD,
            )
    finally:
        await engine.dispose()
    await made.start()
    try:
        yield made
    finally:
        await made.kill()


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    """A fresh Chromium for the test."""
    async with chromium_with_devices() as launched:
        yield launched


async def session_row(server: ServeProcess, session_id: str) -> AssistanceSession:
    """The assistance as the database has it now."""
    engine = make_engine(server.settings.database_url)
    try:
        async with make_sessionmaker(engine, server.settings)() as db:
            return await db.get_one(AssistanceSession, session_id)
    finally:
        await engine.dispose()


async def frames(page: Page) -> int:
    """Video frames decoded so far by the volunteer's #remote-video."""
    return int(await page.evaluate(FRAMES_JS))


async def wait_frames_advance(page: Page, by: int = 5) -> None:
    """Wait until the volunteer's video decodes `by` more frames."""
    await page.wait_for_function(FRAMES_ABOVE_JS, arg=await frames(page) + by, timeout=WAIT_MS)


async def wait_status(
    page: Page, status: str, text: str | None = None, timeout_ms: float = WAIT_MS
) -> None:
    """The page's connection status (and the words its badge shows)."""
    body = page.locator("body")
    await expect(body).to_have_attribute("data-vp-status", status, timeout=timeout_ms)
    if text is not None:
        await expect(page.locator("#status")).to_have_text(text, timeout=timeout_ms)


async def test_server_restarted_during_an_assistance_both_pages_rejoin_and_video_flows_again(
    server: ServeProcess, chrome: Chromium
) -> None:
    """SIGTERM in the middle of a shared screen: both pages say "Reconnexion…"; the server
    started again on the same port and data: both rejoin the same session (same room, same
    pass, nobody sent away) and the volunteer sees the screen moving again."""
    errors: list[str] = []
    vol = await chrome.page(viewport={"width": 1400, "height": 1000})
    ben = await chrome.page(viewport={"width": 1280, "height": 900})
    for page in (vol, ben):
        collect_console_errors(page, errors, expected_http_error=lambda url: True)
        await page.add_init_script(RECORD_STATUS_JS)

    await vol.goto(server.url + "/login")
    await vol.get_by_label("Adresse e-mail").fill("camille@example.org")
    await vol.get_by_label("Mot de passe").fill(PASSWORD)
    await vol.get_by_role("button", name="Se connecter").click()
    await vol.wait_for_url("**/tableau")
    await vol.get_by_role("button", name="Nouvelle assistance").click()
    await vol.wait_for_url(re.compile(r"/assistance/[^/]+$"))
    room_url = vol.url
    session_id = room_url.rsplit("/", 1)[1]

    await ben.goto(assist.link_for(server.settings, await session_row(server, session_id)))
    await ben.wait_for_url("**/b")
    await ben.get_by_role("button", name="Commencer").click()
    await wait_status(ben, "connected")
    await wait_status(vol, "connected")
    await ben.get_by_role("button", name="Partager mon écran").click()
    await wait_frames_advance(vol)
    before = await session_row(server, session_id)

    seen = [len(await page.evaluate("() => window.vpStatuses")) for page in (vol, ben)]
    stopped_in = await server.stop()
    # The sockets dropped when the server closed them: both pages say so at once, not when the
    # media path times out.
    await wait_status(vol, "reconnecting", "Reconnexion…", timeout_ms=SOON_MS)
    await wait_status(ben, "reconnecting", "Reconnexion…", timeout_ms=SOON_MS)

    await server.start()
    await wait_status(ben, "connected", "Connecté avec le bénévole")
    await wait_status(vol, "connected", "Connecté")
    await wait_frames_advance(vol)
    await wait_frames_advance(vol)

    # Each page went from connected to "Reconnexion…" and back, never to an end.
    for page, since in zip((vol, ben), seen, strict=True):
        statuses = (await page.evaluate("() => window.vpStatuses"))[since:]
        assert statuses[0] == "reconnecting" and statuses[-1] == "connected", statuses
        assert "ended" not in statuses, statuses
    # The same session, rejoined by both: new sockets in the same room, nobody sent away.
    assert vol.url == room_url
    assert ben.url.endswith("/b")
    await expect(ben.locator("#step-ended")).to_be_hidden()
    after = await session_row(server, session_id)
    assert after.status == SessionStatus.CONNECTED
    assert after.beneficiary_sid and after.beneficiary_sid != before.beneficiary_sid
    assert after.volunteer_sid and after.volunteer_sid != before.volunteer_sid
    # A graceful stop: the supervisor does not have to kill it.
    assert stopped_in < STOP_TIMEOUT_S
    page_errors = [line for line in errors if not OUTAGE_LINE.search(line)]
    assert page_errors == []
