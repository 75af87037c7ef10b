"""Data used (issue 14) in real headless Chromium against the real server: a beneficiary page
shows its camera to a volunteer page, its connection is replaced by a fresh one, the session
ends, and the volunteer reads a non-zero figure, as stored, on the ended panel and the pages
after it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, expect

from server.store.models import AssistanceSession
from tests.browser import Chromium, chromium_with_devices
from tests.conftest import Account, Running
from tests.test_browser import (
    WAIT_MS,
    consent,
    join_link,
    log_in,
    open_assistance,
    wait_frames_advance,
    wait_status,
)

pytestmark = pytest.mark.browser

REMOTE_VIDEO_JS = "() => document.getElementById('remote-video').videoWidth > 0"
# The page's figure as the server acknowledged it (usage.js sets it on each acknowledgement).
REPORTED_ABOVE_JS = "n => Number(document.body.dataset.vpDataUsed ?? 0) > n"


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    """A fresh Chromium per test."""
    async with chromium_with_devices() as launched:
        yield launched


async def reported(page: Page, above: int = 0) -> int:
    """Wait until the server acknowledged a figure above `above`; that figure."""
    await page.wait_for_function(REPORTED_ABOVE_JS, arg=above, timeout=WAIT_MS * 2)
    return int(await page.evaluate("() => Number(document.body.dataset.vpDataUsed)"))


async def stored(running: Running, session_id: str) -> int | None:
    """The figure on the committed session row."""
    async with running.sessionmaker() as db:
        return (await db.get_one(AssistanceSession, session_id)).data_bytes


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_volunteer_sees_the_data_the_beneficiary_used_after_the_session(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    errors: list[str] = []
    vol = await chrome.page(errors=errors)
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)

    ben = await chrome.page(errors=errors)
    await ben.goto(await join_link(running, session_id))
    await ben.wait_for_url("**/b")
    await consent(ben)
    await wait_status(ben, "connected")
    await ben.get_by_role("button", name="Montrer avec la caméra").click()
    await vol.wait_for_function(REMOTE_VIDEO_JS, timeout=WAIT_MS)
    await wait_frames_advance(vol)

    # The first report comes soon after the connection is up, with the camera's bytes in it.
    first = await reported(ben)
    assert first > 0
    assert await stored(running, session_id) == first

    # The session ends while the volunteer's room is open (here from another tab's form): the
    # ended panel shows the stored figure, worded by the server.
    token = await vol.locator("#end-form input[name=csrf_token]").input_value()
    response = await vol.request.post(
        running.url(f"/assistance/{session_id}/end"), form={"csrf_token": token}
    )
    assert response.ok
    await expect(vol.locator("#ended-panel")).to_be_visible()
    panel = vol.locator("#ended-data-used")
    await expect(panel).to_be_visible()
    text = (await panel.inner_text()).replace("\u202f", " ").replace("\xa0", " ")
    assert re.fullmatch(
        r"Données utilisées par la personne : environ \d+(,\d)? (ko|Mo) en \d+ s\.", text
    ), text
    assert await stored(running, session_id) == first

    # And on the handoff form the volunteer goes to next.
    shown = await panel.inner_text()
    await vol.get_by_role("link", name="Remplir la fiche").click()
    await vol.wait_for_url(re.compile(r"/assistance/[^/]+/fiche$"))
    await expect(vol.locator("#data-used")).to_have_text(shown)
    assert errors == []


# Two connections one after the other, as a Peer renews its connection: bytes go through each
# (data channel), the first is closed as rtc.js does (`closing`, then close()), and the meter's
# total must hold both: the closed connection's last reading plus the open one's.
RENEWAL_JS = """async () => {
  const { DataMeter, connectionBytes } = await import("/static/js/usage.js");
  async function connectedPair() {
    const a = new RTCPeerConnection();
    const b = new RTCPeerConnection();
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const channel = a.createDataChannel("assist");
    const received = new Promise((done) => {
      let bytes = 0;
      b.ondatachannel = ({ channel: remote }) => {
        remote.onmessage = ({ data }) => {
          bytes += data.length;
          if (bytes >= 200000) done();
        };
      };
    });
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    await new Promise((open) => { channel.onopen = open; });
    for (let i = 0; i < 20; i += 1) channel.send("x".repeat(10000));
    await received;
    return [a, b];
  }
  const meter = new DataMeter();
  const [a1, b1] = await connectedPair();
  meter.watch(a1);
  const firstReading = await meter.read();
  const closed = meter.closing(a1);
  a1.close();
  b1.close();
  await closed;
  const [a2, b2] = await connectedPair();
  meter.watch(a2);
  await meter.read();
  const second = await connectionBytes(a2);
  const closedAgain = meter.closing(a2);
  a2.close();
  b2.close();
  await closedAgain;
  return { firstReading, second, total: meter.total };
}"""


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_replaced_connection_keeps_counting_in_the_total(
    running: Running, chrome: Chromium
) -> None:
    page = await chrome.page()
    await page.goto(running.url("/code"))
    figures = await page.evaluate(RENEWAL_JS)
    # 200 kB went through each connection, counted with their packets' headers.
    assert figures["firstReading"] > 200_000, figures
    assert figures["second"] > 200_000, figures
    assert figures["total"] >= figures["firstReading"] + figures["second"], figures
