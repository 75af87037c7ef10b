"""Screen share and voice on a 300 kbit/s link: our server and Chromium inside a network
namespace whose loopback is limited by `tbf` (tests/netns.py; the server given by bench.run is
not used: media must cross the limited link). Both microphones on (Chromium's fake device: a
beep every second), the beneficiary shares the screen for ~30 s; at the volunteer's page,
from `getStats()`: frame width, frames per second, freezes (freezeCount,
totalFreezesDuration), video bit rate and codec; the beneficiary's voice: concealed samples /
received samples, concealment events, FEC packets received, packets lost.

Ours: the pages as they are (media.js: codec order, contentHint "detail", sender parameters,
Opus FEC + DTX). Baseline, same namespace and run: the same pages with an init script (this
benchmark only) that leaves all of that to Chromium's defaults and strips `useinbandfec` and
`usedtx` from every local description (voice without FEC or DTX).

The screen is Chromium's fake capture (`--use-fake-device-for-media-stream`): a 1280×720 green
field with a rotating pie, a time code and a frame counter; far easier to encode than a real
screen of text, so bit rates are low and the baseline keeps full width too: real pages cost
more bits per frame.

Standalone: ``python -m bench.weak_media [--seconds 30] [--rate 300]`` (as root).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from bench.context import BenchEnv, Row
from tests.netns import WeakLink, connected_room, weak_link

RATE_KBIT = 300
SECONDS = 30
QUICK_SECONDS = 15
WARMUP_S = 8  # left out of the frame rate: the bandwidth estimator's first ramp
TARGET_WIDTH = 1280
TARGET_FPS = 2.0
BASELINE_NAME = "Chromium defaults (no hint, params, codec order, FEC/DTX)"

# Chromium's defaults: our media.js calls become no-ops, and no description asks for FEC/DTX.
DEFAULTS_JS = """(() => {
  RTCRtpSender.prototype.setParameters = function () { return Promise.resolve(); };
  RTCRtpTransceiver.prototype.setCodecPreferences = function () {};
  Object.defineProperty(MediaStreamTrack.prototype, 'contentHint', {
    configurable: true, get() { return ''; }, set(value) {},
  });
  const setLocal = RTCPeerConnection.prototype.setLocalDescription;
  RTCPeerConnection.prototype.setLocalDescription = function (description) {
    if (description && typeof description.sdp === 'string') {
      description = {
        type: description.type,
        sdp: description.sdp.replace(/;?usedtx=1/g, '').replace(/;?useinbandfec=1/g, ''),
      };
    }
    return setLocal.call(this, description);
  };
})()"""

# The volunteer's inbound video and audio, and the codec of each.
INBOUND_JS = """async () => {
  const stats = await window.vpConnections.at(-1).getStats();
  const out = { t: performance.now() };
  for (const report of stats.values()) {
    if (report.type === 'inbound-rtp') {
      out[report.kind] = { ...report, codec: stats.get(report.codecId)?.mimeType ?? null };
    }
  }
  return out;
}"""


def _video(first: dict[str, Any], last: dict[str, Any], widths: list[int]) -> dict[str, Any]:
    seconds = (last["t"] - first["t"]) / 1000
    a, b = first.get("video") or {}, last.get("video") or {}
    frames = b.get("framesDecoded", 0) - a.get("framesDecoded", 0)
    kbits = (b.get("bytesReceived", 0) - a.get("bytesReceived", 0)) * 8 / 1000
    return {
        "codec": b.get("codec"),
        "frame_width": b.get("frameWidth"),
        "min_frame_width": min(widths) if widths else None,
        "fps": round(frames / seconds, 2) if seconds else None,
        "freeze_count": b.get("freezeCount"),
        "freezes_s": round(b.get("totalFreezesDuration", 0.0), 2),
        "video_kbit_s": round(kbits / seconds, 1) if seconds else None,
        "qp_per_frame": round(b["qpSum"] / b["framesDecoded"], 1)
        if b.get("qpSum") is not None and b.get("framesDecoded")
        else None,
        "packets_lost": b.get("packetsLost"),
    }


def _audio(last: dict[str, Any]) -> dict[str, Any]:
    a = last.get("audio") or {}
    total = a.get("totalSamplesReceived") or 0
    return {
        "concealed_pct": round(100 * a.get("concealedSamples", 0) / total, 3) if total else None,
        "concealment_events": a.get("concealmentEvents"),
        "fec_packets": a.get("fecPacketsReceived"),
        "audio_packets_lost": a.get("packetsLost"),
        "audio_packets": a.get("packetsReceived"),
    }


async def _share(link: WeakLink, init_script: str, seconds: int) -> dict[str, Any]:
    """One assistance: both microphones on, the screen shared for `seconds`; the figures."""
    errors: list[str] = []
    vol, ben = await connected_room(link, errors, init_script)
    try:
        # The volunteer's microphone is on by itself when the permission is already granted.
        mic = vol.locator("#mic-toggle")
        if "is-off" in (await mic.get_attribute("class") or ""):
            await mic.click()
        await ben.get_by_role("button", name="Partager mon écran").click()
        await vol.wait_for_function(
            "() => document.getElementById('remote-video').videoWidth > 0", timeout=40_000
        )
        await asyncio.sleep(WARMUP_S)  # a benchmark samples over time: sleeps are its clock
        first = await vol.evaluate(INBOUND_JS)
        widths: list[int] = []
        last = first
        for _ in range(max(1, seconds - WARMUP_S)):
            await asyncio.sleep(1)
            last = await vol.evaluate(INBOUND_JS)
            if (last.get("video") or {}).get("frameWidth"):
                widths.append(int(last["video"]["frameWidth"]))
        return {**_video(first, last, widths), **_audio(last), "page_errors": errors}
    finally:
        await _close(vol, ben)


async def _close(*pages: Page) -> None:
    for page in pages:
        await page.context.close()


async def measure(rate_kbit: int, seconds: int) -> dict[str, Any]:
    """Ours and the baseline, one after the other, in one namespace limited to `rate_kbit`."""
    with tempfile.TemporaryDirectory(prefix="vp-weak-media-") as folder:
        async with (
            async_playwright() as playwright,
            weak_link(playwright, Path(folder), "media-bench", rate_kbit) as link,
        ):
            ours = await _share(link, "", seconds)
            baseline = await _share(link, DEFAULTS_JS, seconds)
    return {"ours": ours, "baseline": baseline}


async def run(server_url: str, env: BenchEnv | None = None) -> dict[str, Any]:
    """bench.run entry point: the figures at 300 kbit/s, ours vs Chromium's defaults."""
    seconds = QUICK_SECONDS if env is not None and env.quick else SECONDS
    return summarise(await measure(RATE_KBIT, seconds), RATE_KBIT, seconds)


def summarise(result: dict[str, Any], rate_kbit: int, seconds: int) -> dict[str, Any]:
    """Rows, status and details from `measure`."""
    ours, base = result["ours"], result["baseline"]
    width_ok = (ours["min_frame_width"] or 0) >= TARGET_WIDTH
    fps_ok = (ours["fps"] or 0) >= TARGET_FPS
    note = f"tbf {rate_kbit} kbit/s, {seconds} s share, fake capture; at the volunteer"
    rows = [
        Row(
            "screen frame width (lowest sample)",
            "px",
            ours["min_frame_width"],
            base["min_frame_width"],
            BASELINE_NAME,
            target=f"≥ {TARGET_WIDTH}",
            met=width_ok,
            note=note,
        ),
        Row(
            "screen frames per second",
            "fps",
            ours["fps"],
            base["fps"],
            BASELINE_NAME,
            target=f"≥ {TARGET_FPS:g}",
            met=fps_ok,
            note=f"after {WARMUP_S} s; ours capped at 5 fps",
        ),
        Row("freezes", "count", ours["freeze_count"], base["freeze_count"], BASELINE_NAME),
        Row("freezes, total", "s", ours["freezes_s"], base["freezes_s"], BASELINE_NAME),
        Row("video received", "kbit/s", ours["video_kbit_s"], base["video_kbit_s"], BASELINE_NAME),
        Row(
            "voice concealed",
            "% samples",
            ours["concealed_pct"],
            base["concealed_pct"],
            "same, without FEC/DTX",
            note="beneficiary's voice at the volunteer",
        ),
        Row(
            "voice FEC packets received",
            "count",
            ours["fec_packets"],
            base["fec_packets"],
            "same, without FEC/DTX",
        ),
    ]
    return {
        "title": f"Screen share and voice at {rate_kbit} kbit/s (tbf, network namespace)",
        "status": "ok" if width_ok and fps_ok else "target missed",
        "params": {"rate_kbit": rate_kbit, "seconds": seconds, "warmup_s": WARMUP_S},
        "rows": [row.as_dict() for row in rows],
        "details": [{"variant": "ours", **ours}, {"variant": "baseline", **base}],
    }


def main(argv: list[str] | None = None) -> None:
    """Run alone (as root); print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=SECONDS)
    parser.add_argument("--rate", type=int, default=RATE_KBIT, help="kbit/s")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.rate, args.seconds))
    print(json.dumps(summarise(result, args.rate, args.seconds), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
