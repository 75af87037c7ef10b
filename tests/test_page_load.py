"""How the beneficiary's pages load on a slow network (issue 14): versioned static files kept
for a year, an import map and preloads so that no module waits for its importer, the room shown
by the link or code itself (no redirect), the ICE servers in the page, the signalling connection
opened while the person reads, and buttons that never reload the page when pressed before the
page's script has arrived. Timings are in the benchmark (bench/weak_network.py), not here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import posixpath
import re
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import aiohttp
import pytest
from playwright.async_api import Page, Request, Route, WebSocket, expect

from server import assist
from server.store.models import AssistanceSession
from server.web.assets import DYNAMIC_IMPORT, SOON, STATIC_DIR, STATIC_IMPORT, Assets
from tests.browser import Chromium, chromium_with_devices
from tests.conftest import Account, Running, browser_session, entered_room, login
from tests.test_browser import consent, join_link, log_in, open_assistance, wait_status
from tests.test_web import create_assistance

WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)
IMMUTABLE = "public, max-age=31536000, immutable"
IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.DOTALL)
PRELOADS = re.compile(r'<link rel="modulepreload" href="([^"]+)"(?: fetchpriority="low")?>')
LOW_PRELOADS = re.compile(r'<link rel="modulepreload" href="([^"]+)" fetchpriority="low">')
ENTRY = re.compile(r'<script type="module" src="([^"]+)"></script>')


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    async with chromium_with_devices() as launched:
        yield launched


class Held:
    """Requests of a page for the URLs matching a pattern, held until `release` is set (a
    script arriving late on a slow network)."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.release = asyncio.Event()

    @classmethod
    async def on(cls, page: Page, pattern: str) -> Held:
        held = cls()

        async def hold(route: Route, request: Request) -> None:
            held.requested.set()
            await held.release.wait()
            await route.continue_()

        await page.route(re.compile(pattern), hold)
        return held


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a condition on what a page's events collected (no event marks it)."""
    for _ in range(WAIT_MS // 50):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def beneficiary_sid(running: Running, session_id: str) -> str | None:
    """The beneficiary's /assist socket in the session, if it joined the room."""
    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
    return assist.sid_of(session, assist.PeerRole.BENEFICIARY)


async def room_html(running: Running, http: aiohttp.ClientSession, volunteer: Account) -> str:
    """The beneficiary's room page, as the join link gives it."""
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    async with await browser_session() as person:
        link = await join_link(running, session_id)
        async with person.get(link, allow_redirects=False) as resp:
            await entered_room(resp)
            return await resp.text()


# --- Static files -------------------------------------------------------------------------------


async def test_a_versioned_static_url_is_immutable_only_for_the_content_it_names(
    running: Running,
) -> None:
    """`?v=` the file's version: kept a year; no version or another one: revalidated."""
    version = Assets().version("js/rtc.js")
    vendored = Assets().version("vendor/socket.io.esm.min.js")
    assert re.fullmatch(r"[0-9a-f]{16}", version)
    async with aiohttp.ClientSession() as http:
        cases = {
            f"/static/js/rtc.js?v={version}": IMMUTABLE,
            "/static/js/rtc.js": "no-cache",
            "/static/js/rtc.js?v=0123456789abcdef": "no-cache",
            f"/static/vendor/socket.io.esm.min.js?v={vendored}": IMMUTABLE,
        }
        for path, policy in cases.items():
            async with http.get(running.url(path)) as resp:
                assert resp.status == 200, path
                assert resp.headers["Cache-Control"] == policy, path


async def test_the_room_page_loads_every_module_at_once_through_its_import_map(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    """The import map maps every module to its versioned URL, is allowed by its hash in the
    page's CSP, and every module the page script imports (however deep) is preloaded."""
    await login(http, running, volunteer)
    link = await join_link(running, await create_assistance(http, running))
    async with await browser_session() as person, person.get(link) as resp:
        await entered_room(resp)
        html = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    import_map_text = IMPORT_MAP.search(html)
    assert import_map_text is not None
    digest = base64.b64encode(hashlib.sha256(import_map_text.group(1).encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}'" in csp
    imports = json.loads(import_map_text.group(1))["imports"]
    entry = ENTRY.search(html)
    assert entry is not None
    preloaded = set(PRELOADS.findall(html))
    # Walk the real files' static imports from the entry, as the browser would.
    wanted: set[str] = set()
    todo = [entry.group(1)]
    async with aiohttp.ClientSession() as client:
        while todo:
            url = todo.pop()
            async with client.get(running.url(url)) as resp:
                assert resp.status == 200, url
                assert resp.headers["Cache-Control"] == IMMUTABLE, url
                source = await resp.text()
            folder = posixpath.dirname(urlsplit(url).path)
            for specifier in STATIC_IMPORT.findall(source):
                plain = posixpath.normpath(posixpath.join(folder, specifier))
                assert plain in imports, (url, specifier)
                if imports[plain] not in wanted:
                    wanted.add(imports[plain])
                    todo.append(imports[plain])
    assert wanted and wanted <= preloaded, wanted - preloaded
    # What the script imports at once (SOON) is preloaded too, after the rest.
    soon = {imports[f"/static/{path}"] for path in SOON["js/beneficiary.js"]}
    assert soon <= set(LOW_PRELOADS.findall(html)) and not soon & wanted


def test_what_a_page_script_imports_at_once_is_what_it_imports_dynamically() -> None:
    """SOON (server/web/assets.py) names exactly the page script's immediate dynamic imports
    (photo.js, loaded on the first photo only, room-vault.js, loaded when the person shows
    a document of their vault, and rights-view.js, loaded when the volunteer shows a rights
    check, stay out)."""
    for entry, modules in SOON.items():
        source = (STATIC_DIR / entry).read_text()
        dynamic = {f"js/{spec.removeprefix('./')}" for spec in DYNAMIC_IMPORT.findall(source)}
        assert set(modules) <= dynamic
        assert dynamic - set(modules) == {"js/photo.js", "js/room-vault.js", "js/rights-view.js"}


# --- The room, in Chromium --------------------------------------------------------------------


async def test_the_link_opens_the_room_at_once_with_its_own_address_and_no_extra_request(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """No redirect, /b in the address bar (the token out of it), every module from its
    versioned URL, no ICE-servers request, the signalling WebSocket open before "Commencer"
    while the volunteer still sees nobody; then one click joins; a reload keeps the room."""
    errors: list[str] = []
    vol = await chrome.page(errors=errors)
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)
    requests: list[str] = []
    ben = await chrome.page("Pixel 7", errors=errors, requests=requests)
    sockets: list[WebSocket] = []
    ben.on("websocket", lambda socket: sockets.append(socket))
    link = await join_link(running, session_id)
    response = await ben.goto(link)
    assert response is not None and response.status == 200
    assert response.request.redirected_from is None
    await expect(ben.locator("body")).to_have_attribute("data-vp-ready", "true")
    assert urlsplit(ben.url).path == "/b"
    scripts = [url for url in requests if urlsplit(url).path.endswith(".js")]
    assert scripts and all("?v=" in url for url in scripts), scripts
    await until(lambda: len(sockets) == 1)
    # Open, but the room not joined: nobody is there for the volunteer yet.
    assert await beneficiary_sid(running, session_id) is None
    await wait_status(vol, "waiting")

    await consent(ben)
    await wait_status(ben, "connected")
    await wait_status(vol, "connected")
    assert await beneficiary_sid(running, session_id) is not None
    assert len(sockets) == 1  # the room joined on the connection opened at page load
    assert not [url for url in requests if "/api/ice-servers" in url]

    await ben.reload()
    await expect(ben.locator("#step-consent")).to_be_visible()
    assert urlsplit(ben.url).path == "/b"
    assert errors == []


async def test_buttons_pressed_before_the_script_arrives_never_reload_the_page(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """On a slow network "Commencer" shows before the page's script: pressed (or Enter in the
    name field) meanwhile, it says the page is getting ready and nothing reloads; once the
    script is there, one press starts the visio."""
    vol = await chrome.page()
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)
    ben = await chrome.page("Pixel 7")
    script = await Held.on(ben, r"/static/js/beneficiary\.js")
    navigations: list[str] = []
    ben.on("framenavigated", lambda frame: navigations.append(frame.url))
    goto = asyncio.create_task(ben.goto(await join_link(running, session_id), wait_until="commit"))
    await script.requested.wait()
    await goto
    start = ben.locator("#start-button")
    await expect(start).to_be_visible()
    await expect(start).to_be_disabled()
    await expect(ben.locator("#start-wait")).to_contain_text("Un instant, la page se prépare")
    before = len(navigations)
    box = await start.bounding_box()
    assert box is not None
    for _ in range(3):  # a tap where the button is, whatever its state
        await ben.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await ben.get_by_label("Votre prénom (facultatif)").fill("Awa")
    await ben.get_by_label("Votre prénom (facultatif)").press("Enter")
    assert len(navigations) == before
    await expect(ben.locator("#step-consent")).to_be_visible()

    script.release.set()
    await expect(start).to_be_enabled()
    await expect(ben.locator("#start-wait")).to_be_hidden()
    await start.click()
    await expect(ben.locator("#step-room")).to_be_visible()
    await wait_status(vol, "connected")
    assert len(navigations) == before + (1 if urlsplit(navigations[-1]).path == "/b" else 0)


async def test_the_code_page_fetches_the_rooms_files_while_the_person_types(
    running: Running, http: aiohttp.ClientSession, volunteer: Account, chrome: Chromium
) -> None:
    """/code prefetches the room's script and its modules; the room then takes them from the
    browser's cache (no request for them once the code is sent)."""
    page_html = await room_html(running, http, volunteer)
    entry = ENTRY.search(page_html)
    assert entry is not None
    vol = await chrome.page()
    await log_in(vol, running, volunteer)
    await open_assistance(vol)
    code = re.sub(r"\D", "", await vol.locator("#join-code").inner_text())
    requests: list[str] = []
    ben = await chrome.page("Pixel 7", requests=requests)
    await ben.goto(running.url("/code"))
    wanted = {entry.group(1), *PRELOADS.findall(page_html)}
    await until(lambda: wanted <= {f"{urlsplit(u).path}?{urlsplit(u).query}" for u in requests})
    await ben.wait_for_load_state("networkidle")
    requests.clear()
    await ben.get_by_label("Code à 8 chiffres").fill(code)
    await ben.get_by_role("button", name="Continuer").click()
    await expect(ben.locator("body")).to_have_attribute("data-vp-ready", "true")
    from_network = await ben.evaluate(
        """() => performance.getEntriesByType('resource')
            .filter((e) => e.name.includes('/static/js/') || e.name.includes('/static/vendor/'))
            .filter((e) => e.transferSize > 0).map((e) => e.name)"""
    )
    assert from_network == [], from_network


async def test_commencer_pressed_before_the_connections_scripts_waits_for_them(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """The consent step is usable before Socket.IO and WebRTC's modules arrive (they are most
    of the page's script): "Commencer" pressed then opens the room at once and connects as
    soon as they are there."""
    vol = await chrome.page()
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)
    errors: list[str] = []
    ben = await chrome.page("Pixel 7", errors=errors)
    script = await Held.on(ben, r"/static/js/signaling\.js")
    await ben.goto(await join_link(running, session_id), wait_until="commit")
    await script.requested.wait()
    await expect(ben.locator("body")).to_have_attribute("data-vp-ready", "true")
    await consent(ben)
    await wait_status(ben, "waiting")
    assert await beneficiary_sid(running, session_id) is None
    script.release.set()
    await wait_status(ben, "connected")
    await wait_status(vol, "connected")
    assert errors == []


async def test_after_the_code_a_reload_opens_b_and_never_sends_the_code_again(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """The code's answer is the room itself (a POST): once the page has put /b in the address
    bar, a reload asks GET /b with the pass, not the form again."""
    vol = await chrome.page()
    await log_in(vol, running, volunteer)
    await open_assistance(vol)
    code = re.sub(r"\D", "", await vol.locator("#join-code").inner_text())
    errors: list[str] = []
    ben = await chrome.page("Pixel 7", errors=errors)
    await ben.goto(running.url("/code"))
    await ben.get_by_label("Code à 8 chiffres").fill(code)
    await ben.get_by_role("button", name="Continuer").click()
    await expect(ben.locator("body")).to_have_attribute("data-vp-ready", "true")
    assert urlsplit(ben.url).path == "/b"
    sent: list[tuple[str, str]] = []
    ben.on("request", lambda request: sent.append((request.method, urlsplit(request.url).path)))
    response = await ben.reload()
    assert response is not None and response.status == 200
    assert ("GET", "/b") in sent and not [r for r in sent if r[0] == "POST"], sent
    await expect(ben.locator("#step-consent")).to_be_visible()
    await expect(ben.locator("body")).to_have_attribute("data-vp-ready", "true")
    assert errors == []
