"""The room on a weak link: our server and Chromium inside a network namespace whose loopback
is limited to 300 kbit/s (tests/netns.py). The shared screen still arrives readable (full
width), and the volunteer's low-data mode reaches the beneficiary, who is told, and stops the
video in "audio only" mode until "normal" resumes it. Figures: bench/weak_media.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.netns import WeakLink, connected_room, unavailable, weak_link

pytestmark = pytest.mark.browser

RATE_KBIT = 300
# Generous: the bandwidth estimator of a fresh connection ramps up over seconds on 300 kbit/s.
WAIT_MS = 40_000
expect.set_options(timeout=WAIT_MS)

INBOUND_VIDEO_JS = """async () => {
  for (const report of (await window.vpConnections.at(-1).getStats()).values()) {
    if (report.type === 'inbound-rtp' && report.kind === 'video') return report;
  }
  return null;
}"""
# The video the beneficiary's connection sends: bytes so far, and whether a track is on it.
OUTBOUND_VIDEO_JS = """async () => {
  const pc = window.vpConnections.at(-1);
  const sender = pc.getTransceivers().find((tr) => tr.sender.track?.kind === 'video'
    || tr.receiver.track.kind === 'video')?.sender;
  let bytes = 0;
  for (const report of (await pc.getStats()).values()) {
    if (report.type === 'outbound-rtp' && report.kind === 'video') bytes += report.bytesSent;
  }
  return { bytes, track: Boolean(sender?.track) };
}"""
# Polls the page's own stats until `check(report)` holds for its inbound video (a stats
# report has no event to await); the report, or null when `ms` pass first.
UNTIL_INBOUND_JS = f"""async ([check, ms]) => {{
  const inbound = {INBOUND_VIDEO_JS};
  const holds = new Function('report', 'return ' + check);
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {{
    const report = await inbound();
    if (report && holds(report)) return report;
    await new Promise((done) => setTimeout(done, 250));
  }}
  return null;
}}"""
UNTIL_OUTBOUND_JS = f"""async ([check, ms]) => {{
  const outbound = {OUTBOUND_VIDEO_JS};
  const holds = new Function('sent', 'return ' + check);
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {{
    const sent = await outbound();
    if (holds(sent)) return sent;
    await new Promise((done) => setTimeout(done, 250));
  }}
  return null;
}}"""


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[WeakLink]:
    """Server and Chromium in a namespace limited to 300 kbit/s; all removed afterwards."""
    reason = unavailable()
    if reason:
        pytest.fail(reason)  # a browser test never skips (root and iproute2 run it in CI)
    async with (
        async_playwright() as playwright,
        weak_link(playwright, tmp_path, "media", RATE_KBIT) as made,
    ):
        yield made


async def until_sent(ben: Page, check: str) -> dict[str, Any]:
    """Wait until `check` (JS on `sent`: {bytes, track}) holds for the beneficiary's video."""
    sent = await ben.evaluate(UNTIL_OUTBOUND_JS, [check, WAIT_MS])
    assert sent is not None, f"never: {check}"
    return dict(sent)


async def video_bytes_grow(ben: Page, by: int) -> None:
    """Wait until the beneficiary's connection has sent `by` more bytes of video."""
    start = (await ben.evaluate(OUTBOUND_VIDEO_JS))["bytes"]
    await until_sent(ben, f"sent.bytes > {start + by}")


async def test_shared_screen_arrives_full_width_on_a_300_kbit_link(link: WeakLink) -> None:
    """At 300 kbit/s for everything (media, voice, signalling), the screen shared by the
    beneficiary reaches the volunteer at least 1,280 px wide once the bandwidth estimator has
    settled (many frames decoded since the start), in the codec media.js prefers."""
    errors: list[str] = []
    vol, ben = await connected_room(link, errors)
    await ben.get_by_role("button", name="Partager mon écran").click()
    # Settled: 40 frames decoded (8 s at the 5 frames/s cap) and the estimate no longer
    # moving the size down; the width is then read as it stands.
    inbound = await vol.evaluate(UNTIL_INBOUND_JS, ["report.framesDecoded >= 40", WAIT_MS])
    assert inbound is not None, "fewer than 40 frames decoded"
    assert inbound["frameWidth"] >= 1280, inbound
    codec = await vol.evaluate(
        """async (id) => (await window.vpConnections.at(-1).getStats()).get(id)?.mimeType""",
        inbound["codecId"],
    )
    assert codec == "video/AV1", codec
    assert errors == []


async def test_low_data_modes_reach_the_beneficiary_who_is_told(link: WeakLink) -> None:
    """The volunteer picks "lower frame rate" then "audio and photos only": the beneficiary's
    page says so in plain French (visible and in the live region), no more video leaves it
    in audio mode (its sender has no track), and "normal" resumes the video."""
    errors: list[str] = []
    vol, ben = await connected_room(link, errors)
    await ben.get_by_role("button", name="Partager mon écran").click()
    await video_bytes_grow(ben, 5_000)
    notice = ben.locator("#data-mode-notice")
    state = vol.locator("#data-mode-state")

    await vol.get_by_label("Image moins fréquente (2 images par seconde au plus)").check()
    low = "Économie de données : le bénévole voit ce que vous montrez moins souvent."
    await expect(notice).to_have_text(low)
    await expect(ben.locator("#vp-live")).to_have_text(low)
    await expect(state).to_contain_text("En vigueur chez la personne : Image moins fréquente")
    framerate = await ben.evaluate(
        """() => window.vpConnections.at(-1).getTransceivers()
          .find((tr) => tr.sender.track?.kind === 'video').sender.getParameters()
          .encodings[0].maxFramerate"""
    )
    assert framerate == 2

    await vol.get_by_label("Son et photos seulement (pas de vidéo)").check()
    audio = (
        "Économie de données : le bénévole ne voit plus ce que vous montrez. Il vous entend. "
        "Vous pouvez envoyer une photo."
    )
    await expect(notice).to_have_text(audio)
    await expect(ben.locator("#vp-live")).to_have_text(audio)
    await expect(state).to_contain_text("En vigueur chez la personne : Son et photos seulement")
    # With no track on the sender, the encoder has nothing to send: the byte count freezes.
    sent = await until_sent(ben, "!sent.track")
    await expect(ben.locator("#sharing-info")).to_have_text(
        "Économie de données : le bénévole ne voit pas ce que vous montrez."
    )
    # Photos still go: the data channel is untouched.
    png = await vol.screenshot()
    await ben.locator("#photo-input").set_input_files(
        files=[{"name": "avis.png", "mimeType": "image/png", "buffer": png}]
    )
    await expect(ben.locator("#notice")).to_have_text("Photo envoyée.")
    await expect(vol.locator("#photos li img")).to_have_count(1)
    assert (await ben.evaluate(OUTBOUND_VIDEO_JS))["bytes"] == sent["bytes"]

    await vol.get_by_label("Normal").check()
    await expect(notice).to_be_hidden()
    await expect(ben.locator("#vp-live")).to_have_text(
        "Fin de l'économie de données : le bénévole voit de nouveau ce que vous montrez."
    )
    await expect(state).to_contain_text("En vigueur chez la personne : Normal")
    await video_bytes_grow(ben, 5_000)

    # A reloaded beneficiary page starts over in "normal"; the volunteer's page says its mode
    # again when the new channel opens.
    await vol.get_by_label("Son et photos seulement (pas de vidéo)").check()
    await expect(notice).to_have_text(audio)
    await ben.reload()
    await ben.get_by_role("button", name="Commencer").click()
    await expect(ben.locator("#data-mode-notice")).to_have_text(audio)
    await expect(state).to_contain_text("En vigueur chez la personne : Son et photos seulement")
    assert errors == []
