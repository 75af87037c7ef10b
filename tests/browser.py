"""Real headless Chromium (Debian's) driven by Playwright, with the flags measured in NOTES.md."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    async_playwright,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
# axe-core from the lock file (web/package.json, devDependencies), installed by `npm ci`.
AXE_JS = Path(__file__).parents[1] / "web" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--auto-select-desktop-capture-source=Entire screen",
]
# An init script: every RTCPeerConnection the page creates, kept in `window.vpConnections`, so a
# test can read its stats or tell an ICE restart on the same connection from a fresh one.
RECORD_CONNECTIONS_JS = """(() => {
  const Native = window.RTCPeerConnection;
  window.vpConnections = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.vpConnections.push(this);
    }
  };
})()"""
# Descriptor keys that choose a browser engine rather than configure a context: every
# descriptor runs on Chromium here (the iPhone ones name WebKit).
_NOT_CONTEXT_OPTIONS = {"default_browser_type"}


async def launch(playwright: Playwright, executable: str | Path = CHROMIUM) -> Browser:
    """Debian's Chromium with the WebRTC/headless flags; each launch gets a fresh profile.

    `executable` may be a wrapper that execs Debian's Chromium (tests/netns.py runs it inside a
    network namespace)."""
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError("Debian's chromium is not installed: run `make system-deps`")
    return await playwright.chromium.launch(
        executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
    )


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Launch Chromium; Playwright gives every launch a fresh temporary user-data-dir."""
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Chromium:
    """A launched Chromium plus Playwright's device descriptors (for phone emulation)."""

    playwright: Playwright
    browser: Browser

    def device(self, name: str) -> dict[str, Any]:
        """Context options of a Playwright device descriptor, e.g. "Pixel 7" or "iPhone 15"."""
        devices = self.playwright.devices
        if name not in devices:
            raise LookupError(f"Playwright has no device descriptor {name!r}")
        return {k: v for k, v in devices[name].items() if k not in _NOT_CONTEXT_OPTIONS}

    async def page(
        self,
        device: str | None = None,
        errors: list[str] | None = None,
        requests: list[str] | None = None,
        **options: Any,
    ) -> Page:
        """A page in a fresh context (own cookies), emulating `device` if given; its console
        errors go to `errors`, the URL of every request it makes to `requests`."""
        context_options = {"locale": "fr-FR", **(self.device(device) if device else {}), **options}
        context: BrowserContext = await self.browser.new_context(**context_options)
        page = await context.new_page()
        if errors is not None:
            collect_console_errors(page, errors)
        if requests is not None:
            context.on("request", lambda request: requests.append(request.url))
        return page


@asynccontextmanager
async def chromium_with_devices() -> AsyncIterator[Chromium]:
    """Like `chromium()`, with device descriptors at hand."""
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            yield Chromium(playwright, browser)
        finally:
            await browser.close()


async def screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    """Save a screenshot under tests/artifacts/ (git-ignored).

    Use `full_page=False` on emulated phones: a full-page capture there paints playing videos
    at their pre-scroll place, over other content.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    return path


# The console line Chromium writes for any HTTP error response, including a page we opened on
# purpose to check that it answers 404.
_HTTP_ERROR_LINE = re.compile(r"^Failed to load resource: the server responded with a status of")


def collect_console_errors(
    page: Page, sink: list[str], expected_http_error: Callable[[str], bool] | None = None
) -> None:
    """Keep the page's console errors and CSP violations so tests can assert there are none.

    `expected_http_error(url)` may excuse the console line of an HTTP error response that the
    test asked for (e.g. the 404 page itself); every other error is kept, with its URL.
    """

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        url = msg.location.get("url", "")
        if _HTTP_ERROR_LINE.match(msg.text):
            # Chromium itself asks every origin for /favicon.ico; our pages never reference it
            # and the app serves none, so that 404 says nothing about the page under test.
            if urlsplit(url).path == "/favicon.ico":
                return
            if expected_http_error and expected_http_error(url):
                return
        sink.append(f"{page.url}: {msg.text} ({url})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: sink.append(f"{page.url}: uncaught {exc}"))


# Every rule axe runs by default (WCAG 2.x A/AA and best practices), violations only; each node
# keeps its CSS target and axe's own summary of what to fix.
_AXE_RUN_JS = """async () => {
  const results = await window.axe.run(document, { resultTypes: ['violations'] });
  return results.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })),
  }));
}"""


async def assert_accessible(page: Page, state: str = "") -> None:
    """Run axe-core on the page as it is now and fail on any violation, whatever its impact.

    The script is evaluated by Playwright rather than added as a <script>: our CSP forbids
    inline scripts, an evaluation is not page script. `state` names the page state in the
    failure message (e.g. "room, connected").
    """
    if not AXE_JS.exists():
        raise RuntimeError("axe-core is missing: run `npm ci` in web/ (make setup does it)")
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    violations: list[dict[str, Any]] = await page.evaluate(_AXE_RUN_JS)
    if violations:
        lines = [f"{len(violations)} accessibility violation(s) on {page.url} {state}".rstrip()]
        for violation in violations:
            lines.append(f"- {violation['id']} ({violation['impact']}): {violation['help']}")
            for node in violation["nodes"]:
                summary = " ".join((node["summary"] or "").split())
                lines.append(f"    {node['target']}: {summary}")
        raise AssertionError("\n".join(lines))
