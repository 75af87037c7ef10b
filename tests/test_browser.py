"""The room pages in real headless Chromium against the real server: screen sharing, pause,
pointer, chat and end between two browser contexts; phone emulation (camera, continue on a
computer); refusals. Media comes from Chromium's fake devices (see NOTES.md)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, expect

from server import assist
from server.store.models import AssistanceSession
from signaling.assist import NAMESPACE as ASSIST_NAMESPACE
from signaling.server import SIO_KEY
from tests.browser import (
    RECORD_CONNECTIONS_JS,
    Chromium,
    assert_accessible,
    chromium_with_devices,
    collect_console_errors,
    screenshot,
)
from tests.conftest import PG_UNREACHABLE, Account, Running, make_account

pytestmark = pytest.mark.browser

# Generous for a loaded 2-vCPU machine; on a quiet one every wait below ends in < 2 s.
WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)

# Phone descriptors, each run on Chromium (which keeps getDisplayMedia: the page must decide
# from the platform signals, see NOTES.md). The phone flow is client-side except the handover
# code, so each phone takes one backend instead of both: the module stays well under a minute.
PHONES_ON_BACKENDS = pytest.mark.parametrize(
    ("phone", "backend"),
    [("Pixel 7", "sqlite"), ("iPhone 15", "postgresql")],
    indirect=["backend"],
)

FRAMES_JS = (
    "() => document.getElementById('remote-video').getVideoPlaybackQuality().totalVideoFrames"
)
FRAMES_ABOVE_JS = (
    "n => document.getElementById('remote-video').getVideoPlaybackQuality().totalVideoFrames > n"
)
# Frames decoded by the volunteer during `windowMs`, once the frames already in flight when
# the pause took effect (jitter buffer) have drained: no new frame for `quietMs`, waited for at
# most `settleMs`. A bounded check: the absence of frames has no event to await.
STILL_JS = """async ([quietMs, settleMs, windowMs]) => {
  const video = document.getElementById('remote-video');
  const count = () => video.getVideoPlaybackQuality().totalVideoFrames;
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const deadline = performance.now() + settleMs;
  let seen = count();
  while (performance.now() < deadline) {
    await sleep(quietMs);
    if (count() === seen) break;
    seen = count();
  }
  const before = count();
  await sleep(windowMs);
  return [before, count()];
}"""
# Where the beneficiary's click ring is, relative to the painted frame of its preview (0..1).
POINTER_POSITION_JS = """() => {
  const ring = document.querySelector('#pointer-layer .vp-pointer');
  const video = document.getElementById('local-preview');
  const layer = document.getElementById('pointer-layer').getBoundingClientRect();
  const box = video.getBoundingClientRect();
  const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
  const width = video.videoWidth * scale;
  const height = video.videoHeight * scale;
  const left = box.left + (box.width - width) / 2;
  const top = box.top + (box.height - height) / 2;
  const x = layer.left + parseFloat(ring.style.left);
  const y = layer.top + parseFloat(ring.style.top);
  return [(x - left) / width, (y - top) / height];
}"""
# The remote ICE username fragment of the page's only connection: it changes on an ICE restart.
REMOTE_UFRAG_JS = """() => {
  const sdp = window.vpConnections[0]?.remoteDescription?.sdp ?? '';
  return /a=ice-ufrag:(\\S+)/.exec(sdp)?.[1] ?? null;
}"""


@pytest.fixture(autouse=True)
def postgres_is_required(backend: str) -> None:
    """A browser test never skips: an unreachable PostgreSQL fails its variants instead."""
    if backend == "postgresql" and PG_UNREACHABLE:
        pytest.fail(PG_UNREACHABLE)


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    """A fresh Chromium per test (about half a second to launch): no state between tests."""
    async with chromium_with_devices() as launched:
        yield launched


# --- Steps, each as a person does it --------------------------------------------------------


async def log_in(page: Page, running: Running, account: Account) -> None:
    """The volunteer logs in through the /login form."""
    await page.goto(running.url("/login"))
    await assert_accessible(page, "login")
    await page.get_by_label("Adresse e-mail").fill(account.email)
    await page.get_by_label("Mot de passe").fill(account.password)
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url("**/tableau")


async def open_assistance(page: Page) -> str:
    """Click "Nouvelle assistance" on the dashboard; the id of the session whose room opens."""
    await page.get_by_role("button", name="Nouvelle assistance").click()
    await page.wait_for_url(re.compile(r"/assistance/[^/]+$"))
    await expect(page.locator("body")).to_have_attribute("data-vp-status", "waiting")
    return page.url.rsplit("/", 1)[1]


async def join_link(running: Running, session_id: str) -> str:
    """The `/j/<token>` link of a session, as the volunteer would send it by SMS."""
    async with running.sessionmaker() as db:
        session = await db.get(AssistanceSession, session_id)
    assert session is not None
    return assist.link_for(running.settings, session)


async def enter_code(page: Page, running: Running, code: str) -> None:
    """The beneficiary types the join code on /code and reaches the consent step."""
    await page.goto(running.url("/code"))
    await assert_accessible(page, "code page")
    await page.get_by_label("Code à 8 chiffres").fill(code)
    await page.get_by_role("button", name="Continuer").click()
    await page.wait_for_url("**/b")


async def consent(page: Page, first_name: str = "") -> None:
    """The beneficiary gives consent (first name optional) and enters the room."""
    if first_name:
        await page.get_by_label("Votre prénom (facultatif)").fill(first_name)
    await page.get_by_role("button", name="Commencer").click()
    await expect(page.locator("#step-room")).to_be_visible()


async def wait_status(page: Page, status: str) -> None:
    """Wait for the page's connection status (`document.body.dataset.vpStatus`)."""
    await expect(page.locator("body")).to_have_attribute("data-vp-status", status)


async def frames(page: Page) -> int:
    """Video frames decoded so far by the volunteer's #remote-video."""
    return int(await page.evaluate(FRAMES_JS))


async def wait_frames_advance(page: Page, by: int = 5) -> int:
    """Wait until the volunteer's video decodes `by` more frames; the new count."""
    start = await frames(page)
    await page.wait_for_function(FRAMES_ABOVE_JS, arg=start + by, timeout=WAIT_MS)
    return await frames(page)


async def send_chat(page: Page, text: str) -> None:
    """Type a chat message and send it."""
    await page.locator("#chat-input").fill(text)
    await page.locator("#chat-send").click()


# --- a. The full desktop flow -------------------------------------------------------------


async def test_volunteer_sees_shared_screen_pause_pointer_chat_and_end(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """Code, consent, screen share, pause/resume, pointer, chat both ways and end, end to end."""
    vol_errors: list[str] = []
    ben_errors: list[str] = []
    requests: list[str] = []
    vol = await chrome.page(
        errors=vol_errors, requests=requests, viewport={"width": 1400, "height": 1000}
    )
    await log_in(vol, running, volunteer)
    await assert_accessible(vol, "dashboard")
    await open_assistance(vol)
    await assert_accessible(vol, "volunteer room, waiting")
    code = (await vol.locator("#join-code").inner_text()).strip()
    assert re.fullmatch(r"\d{4} \d{4}", code), code

    ben = await chrome.page(
        errors=ben_errors, requests=requests, viewport={"width": 1280, "height": 900}
    )
    await enter_code(ben, running, code)
    await assert_accessible(ben, "consent")
    await consent(ben, "Marie")
    await wait_status(ben, "connected")
    await wait_status(vol, "connected")
    await assert_accessible(ben, "room, connected")
    await assert_accessible(vol, "volunteer room, connected")

    await ben.get_by_role("button", name="Partager mon écran").click()
    await vol.wait_for_function(
        "() => document.getElementById('remote-video').videoWidth > 0", timeout=WAIT_MS
    )
    await expect(vol.locator("#no-video")).to_be_hidden()
    await wait_frames_advance(vol)
    await screenshot(vol, "volunteer-sees-shared-screen")
    await assert_accessible(ben, "room, sharing the screen")
    await assert_accessible(vol, "volunteer room, screen shown")

    # Pause: the volunteer is told, and no frame leaves the beneficiary's device.
    await ben.get_by_role("button", name="Pause").click()
    await expect(vol.locator("#paused-overlay")).to_be_visible()
    await expect(vol.locator("#paused-overlay")).to_contain_text("En pause")
    await wait_status(vol, "paused")
    await assert_accessible(ben, "room, paused")
    await assert_accessible(vol, "volunteer room, paused")
    before, after = await vol.evaluate(STILL_JS, [300, 3000, 1500])
    assert after == before, f"{after - before} frames decoded during the pause"

    await ben.get_by_role("button", name="Reprendre").click()
    await expect(vol.locator("#paused-overlay")).to_be_hidden()
    await wait_status(vol, "connected")
    await wait_frames_advance(vol)

    # Pointer: a click on the volunteer's video rings the same spot on the beneficiary's side.
    await vol.locator("#pointer-mode").click()
    await expect(vol.locator("#pointer-mode")).to_have_attribute("aria-pressed", "true")
    box = await vol.locator("#remote-video").bounding_box()
    assert box is not None
    await vol.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)
    await expect(ben.locator("#pointer-layer .vp-pointer")).to_have_count(1)
    await screenshot(ben, "beneficiary-sharing-with-pointer")
    x, y = await ben.evaluate(POINTER_POSITION_JS)
    assert x == pytest.approx(0.25, abs=0.03) and y == pytest.approx(0.5, abs=0.03), (x, y)

    await send_chat(vol, "Bonjour Marie, cliquez sur le cercle.")
    await expect(ben.locator("#chat-log")).to_contain_text("Bonjour Marie, cliquez sur le cercle.")
    await send_chat(ben, "C'est fait, merci !")
    await expect(vol.locator("#chat-log li.theirs")).to_contain_text("Marie : C'est fait, merci !")
    await assert_accessible(ben, "room, pointer and chat")
    await assert_accessible(vol, "volunteer room, pointer mode and chat")

    await vol.get_by_role("button", name="Terminer l'assistance").click()
    await wait_status(ben, "ended")
    await expect(ben.locator("#step-ended")).to_be_visible()
    await expect(ben.locator("#end-message")).to_have_text("L'assistance est terminée. Merci !")
    await assert_accessible(ben, "room, ended")
    await vol.wait_for_url(re.compile(r"/assistance/[^/]+/fiche$"))

    assert vol_errors == []
    assert ben_errors == []
    # No page contacts anyone but our server (no CDN, font, analytics or public STUN).
    web_requests = [url for url in requests if url.startswith(("http:", "https:", "ws:", "wss:"))]
    assert web_requests, "no request recorded"
    outside = [
        url
        for url in web_requests
        if not url.split("://", 1)[1].startswith(running.base_url.split("://", 1)[1] + "/")
    ]
    assert outside == []


# --- a2. Photos, and a dropped socket ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_photo_arrives_whole_and_a_dropped_socket_restarts_ice_on_the_same_connection(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """A chosen photo reaches the volunteer's page in one piece (downscaled, chunked over the
    data channel, reassembled); when the server drops the beneficiary's socket, the page comes
    back and restarts ICE on the same RTCPeerConnection while the screen keeps flowing."""
    errors: list[str] = []
    vol = await chrome.page(errors=errors, viewport={"width": 1400, "height": 1000})
    await vol.add_init_script(RECORD_CONNECTIONS_JS)
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)
    ben = await chrome.page(errors=errors, viewport={"width": 1280, "height": 900})
    await ben.add_init_script(RECORD_CONNECTIONS_JS)
    await ben.goto(await join_link(running, session_id))
    await ben.wait_for_url("**/b")
    await consent(ben)
    await wait_status(ben, "connected")
    await wait_status(vol, "connected")

    # A 1400 x 1000 PNG (bigger than one chunk once in JPEG): sent as is, it is under 1600 px.
    png = await vol.screenshot()
    await ben.locator("#photo-input").set_input_files(
        files=[{"name": "avis.png", "mimeType": "image/png", "buffer": png}]
    )
    await expect(ben.locator("#notice")).to_have_text("Photo envoyée.")
    thumb = vol.locator("#photos li img")
    await expect(thumb).to_have_count(1)
    await expect(thumb).to_have_attribute("alt", "Photo envoyée par la personne, numéro 1")
    await expect(vol.locator("#photos-empty")).to_be_hidden()
    size = await thumb.evaluate(
        "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])"
    )
    assert size == [1400, 1000]

    await ben.get_by_role("button", name="Partager mon écran").click()
    await vol.wait_for_function(
        "() => document.getElementById('remote-video').videoWidth > 0", timeout=WAIT_MS
    )
    await wait_frames_advance(vol)
    ufrag = await vol.evaluate(REMOTE_UFRAG_JS)
    assert ufrag

    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
    sid = assist.sid_of(session, assist.PeerRole.BENEFICIARY)
    assert sid is not None
    await running.app[SIO_KEY].disconnect(sid, namespace=ASSIST_NAMESPACE)

    # The beneficiary's page reconnects by itself and offers an ICE restart under its new id.
    await vol.wait_for_function(
        f"previous => ({REMOTE_UFRAG_JS})() !== previous", arg=ufrag, timeout=WAIT_MS
    )
    await wait_status(vol, "connected")
    await wait_status(ben, "connected")
    await wait_frames_advance(vol)
    assert await vol.evaluate("() => window.vpConnections.length") == 1
    assert await ben.evaluate("() => window.vpConnections.length") == 1
    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
    assert assist.sid_of(session, assist.PeerRole.BENEFICIARY) not in (None, sid)
    assert errors == []


# --- b. Phones: camera instead of the screen, and continue on a computer -------------------


@PHONES_ON_BACKENDS
async def test_phone_shows_camera_not_screen_and_continues_on_a_computer_with_a_code(
    running: Running, volunteer: Account, chrome: Chromium, phone: str
) -> None:
    """On a phone: camera only, its video reaches the volunteer; the handover code works."""
    errors: list[str] = []
    vol = await chrome.page(errors=errors)
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)

    mobile = await chrome.page(phone, errors=errors)
    await mobile.goto(await join_link(running, session_id))
    await mobile.wait_for_url("**/b")
    await assert_accessible(mobile, "phone consent")
    await consent(mobile)
    await wait_status(mobile, "connected")
    await expect(mobile.locator("#share-screen")).to_be_hidden()
    await expect(mobile.get_by_role("button", name="Partager mon écran")).to_have_count(0)
    camera = mobile.get_by_role("button", name="Montrer avec la caméra")
    await expect(camera).to_be_visible()

    await camera.click()
    await vol.wait_for_function(
        "() => document.getElementById('remote-video').videoWidth > 0", timeout=WAIT_MS
    )
    await wait_frames_advance(vol)
    shot = f"phone-{phone.replace(' ', '-').lower()}"
    await screenshot(mobile, f"{shot}-camera", full_page=False)
    await assert_accessible(mobile, "phone room, camera shown")

    await expect(mobile.locator("#continue")).to_be_visible()
    await mobile.locator("#continue-pc").click()
    await expect(mobile.locator("#continue-result")).to_be_visible()
    handover = (await mobile.locator("#continue-code").inner_text()).strip()
    assert re.fullmatch(r"\d{4} \d{4}", handover), handover
    assert await mobile.locator("#continue-url").inner_text() == running.url("/code")
    await mobile.locator("#continue-code").scroll_into_view_if_needed()
    await screenshot(mobile, f"{shot}-continue-code", full_page=False)
    await assert_accessible(mobile, "phone room, code for the computer")

    desktop = await chrome.page(errors=errors)
    await enter_code(desktop, running, handover)
    await consent(desktop)
    await expect(desktop.get_by_role("button", name="Partager mon écran")).to_be_visible()
    await wait_status(desktop, "connected")
    # One beneficiary connection per session: the phone hands over to the computer.
    await expect(mobile.locator("#end-message")).to_have_text(
        "L'assistance continue sur l'autre appareil."
    )
    await assert_accessible(mobile, "phone room, handed over")
    await wait_status(vol, "connected")

    assert errors == []


# --- c. Desktop: the counterpart of b ---------------------------------------------------------


async def test_desktop_offers_screen_sharing_and_no_handover_to_a_computer(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """A desktop browser sees "Partager mon écran" (and the camera), never "continue on PC"."""
    errors: list[str] = []
    async with running.sessionmaker.begin() as db:
        session = await assist.create_session(db, running.settings, volunteer.user)
    page = await chrome.page(errors=errors)
    await page.goto(assist.link_for(running.settings, session))
    await page.wait_for_url("**/b")
    await consent(page)
    await expect(page.get_by_role("button", name="Partager mon écran")).to_be_visible()
    await expect(page.get_by_role("button", name="Montrer avec la caméra")).to_be_visible()
    await expect(page.locator("#continue")).to_be_hidden()
    await wait_status(page, "waiting")
    await assert_accessible(page, "desktop room, waiting")
    assert errors == []


# --- d. Refusals ------------------------------------------------------------------------------


async def test_wrong_join_link_shows_the_same_neutral_french_page_as_an_ended_one(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """/j/<wrong token> answers 404 with a plain French page, word for word the one of the link
    of an ended session: the page never tells whether a session exists."""
    async with running.sessionmaker.begin() as db:
        session = await assist.create_session(db, running.settings, volunteer.user)
        await assist.end_session(db, session, "volunteer")
    ended = assist.link_for(running.settings, session)
    wrong = running.url("/j/" + "A" * 43)
    errors: list[str] = []
    page = await chrome.page()
    # The 404 answers of the pages under test are expected, not page errors.
    collect_console_errors(page, errors, expected_http_error=lambda url: url in (wrong, ended))
    shown = []
    for link in (wrong, ended):
        response = await page.goto(link)
        assert response is not None and response.status == 404
        await expect(page.locator("html")).to_have_attribute("lang", "fr")
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Impossible d'ouvrir l'assistance"
        )
        await expect(page.get_by_role("alert")).to_have_text(
            "Ce lien ne marche pas ou plus. Demandez un nouveau lien ou un code au bénévole."
        )
        await expect(page.get_by_role("link", name="J'ai un code")).to_have_attribute(
            "href", "/code"
        )
        await assert_accessible(page, "neutral refusal page")
        shown.append(await page.locator("main").inner_text())
    assert shown[0] == shown[1]
    assert "Traceback" not in await page.content()
    assert errors == []


async def test_another_volunteer_gets_404_on_a_room_that_is_not_theirs(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """The room of a session is hidden (404 page) from another logged-in volunteer."""
    async with running.sessionmaker.begin() as db:
        session = await assist.create_session(db, running.settings, volunteer.user)
    room = running.url(f"/assistance/{session.id}")
    other = await make_account(running, "dominique@example.org")
    errors: list[str] = []
    page = await chrome.page()
    collect_console_errors(page, errors, expected_http_error=lambda url: url == room)
    await log_in(page, running, other)
    response = await page.goto(room)
    assert response is not None and response.status == 404
    await expect(page.get_by_role("alert")).to_have_text(
        "Cette assistance n'existe pas ou ne vous concerne pas."
    )
    await expect(page.locator("#remote-video")).to_have_count(0)
    await expect(page.locator("#join-code")).to_have_count(0)
    await assert_accessible(page, "404 page")
    assert errors == []
