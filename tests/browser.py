"""Real headless Chromium (Debian's) driven by Playwright, with the flags measured in NOTES.md."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
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


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Launch Chromium; Playwright gives every launch a fresh temporary user-data-dir."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Debian's chromium is not installed: run `make chromium`")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under tests/artifacts/ (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


def collect_console_errors(page: Page, sink: list[str]) -> None:
    """Keep the page's console errors and CSP violations so tests can assert there are none."""
    page.on("console", lambda msg: sink.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: sink.append(str(exc)))
