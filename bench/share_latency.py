"""Share latency: the beneficiary clicks "Partager mon écran" → the volunteer's page presents
the first decoded frame, in headless Chromium over loopback, through the real server.

Both pages live in ONE Chromium (two contexts, as two people on two machines would, but on one
clock): each time is taken as ``performance.timeOrigin + t`` in its own page. Those clocks agree
across pages of one machine; every run checks it (``max_clock_offset_ms``, measured to within
``max_clock_uncertainty_ms``: half an evaluate round trip, a few ms on a busy machine).

- Click: ``timeOrigin + event.timeStamp`` of the click on ``#share-screen`` (beneficiary).
- First frame: ``timeOrigin + metadata.presentationTime`` of the first
  ``requestVideoFrameCallback`` on ``#remote-video`` (volunteer), armed once both pages are
  connected and before the click.

Every run is a fresh assistance created through the volunteer's UI ("Nouvelle assistance"),
joined by its ``/j/`` link from a fresh beneficiary context, then ended with "Terminer
l'assistance". One untimed warm-up run comes first (first capture in a new browser process).

Baseline, same browser, same runs: two ``RTCPeerConnection``s in ONE page, no server, already
connected with a ``sendonly`` video transceiver like ours; the click runs the same
``getDisplayMedia`` constraints then ``replaceTrack`` → first ``requestVideoFrameCallback``.
The difference is what our pages, signalling state and two renderer processes add.

Standalone: ``python -m bench.share_latency --server http://127.0.0.1:8080 [--runs 20]`` against
a server where ``permanence demo`` created the demo volunteer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
from collections.abc import Sequence
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bench.context import BenchEnv, Row, percentile
from tests.browser import launch

DEMO_EMAIL = "benevole@demo.invalid"
DEMO_PASSWORD = "demo-benevole-2026"  # `permanence demo` (server/cli.py DEMO_ACCOUNTS)
RUNS = 20
QUICK_RUNS = 5
TARGET_P95_MS = 1000.0
WAIT_MS = 15_000
BASELINE_NAME = "Chromium→Chromium, one page, no server"
# Any 127.0.0.1 URL is a secure context (getDisplayMedia needs one); Playwright answers it,
# so the baseline page never reaches a server.
BASELINE_URL = "http://127.0.0.1:9/share-latency-baseline"

NOW_JS = "() => performance.timeOrigin + performance.now()"

# Beneficiary page: note the click time and when getDisplayMedia resolves (instrumentation
# only: the page's own handler still does the sharing).
ARM_CLICK_JS = """() => {
  window.__vpBench = { click: null, captured: null };
  document.getElementById('share-screen').addEventListener('click', (event) => {
    window.__vpBench.click = performance.timeOrigin + event.timeStamp;
  }, { capture: true, once: true });
  const devices = navigator.mediaDevices;
  const original = devices.getDisplayMedia.bind(devices);
  devices.getDisplayMedia = async (...args) => {
    const stream = await original(...args);
    window.__vpBench.captured = performance.timeOrigin + performance.now();
    return stream;
  };
}"""

# Volunteer page: the first frame presented by #remote-video from now on.
ARM_FRAME_JS = """() => {
  const video = document.getElementById('remote-video');
  window.__vpFirst = null;
  video.requestVideoFrameCallback((now, meta) => {
    window.__vpFirst = {
      presented: performance.timeOrigin + meta.presentationTime,
      received: meta.receiveTime ? performance.timeOrigin + meta.receiveTime : null,
      width: meta.width,
    };
  });
  return video.videoWidth;
}"""

BASELINE_HTML = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>share latency baseline</title></head>
<body>
<button id="share" type="button">Partager</button>
<video id="remote" autoplay muted playsinline></video>
<script>
window.__vpReady = (async () => {
  const sender = new RTCPeerConnection();
  const receiver = new RTCPeerConnection();
  sender.onicecandidate = (event) => receiver.addIceCandidate(event.candidate);
  receiver.onicecandidate = (event) => sender.addIceCandidate(event.candidate);
  const video = document.getElementById('remote');
  receiver.ontrack = (event) => {
    video.srcObject = new MediaStream([event.track]);
    video.play().catch(() => {});
  };
  const transceiver = sender.addTransceiver('video', { direction: 'sendonly' });
  const connected = new Promise((resolve) => {
    receiver.onconnectionstatechange = () => {
      if (receiver.connectionState === 'connected') resolve();
    };
  });
  await sender.setLocalDescription();
  await receiver.setRemoteDescription(sender.localDescription);
  await receiver.setLocalDescription();
  await sender.setRemoteDescription(receiver.localDescription);
  await connected;
  window.__vpBench = { click: null, captured: null };
  window.__vpFirst = null;
  video.requestVideoFrameCallback((now, meta) => {
    window.__vpFirst = {
      presented: performance.timeOrigin + meta.presentationTime,
      received: meta.receiveTime ? performance.timeOrigin + meta.receiveTime : null,
      width: meta.width,
    };
  });
  document.getElementById('share').addEventListener('click', async (event) => {
    window.__vpBench.click = performance.timeOrigin + event.timeStamp;
    const stream = await navigator.mediaDevices.getDisplayMedia({
      video: { frameRate: { ideal: 15, max: 30 } },
      audio: false,
      selfBrowserSurface: 'exclude',
      surfaceSwitching: 'include',
    });
    window.__vpBench.captured = performance.timeOrigin + performance.now();
    const track = stream.getVideoTracks()[0];
    track.contentHint = 'detail';
    await transceiver.sender.replaceTrack(track);
  });
  return true;
})();
</script>
</body></html>"""


def _timings(click: dict[str, Any], first: dict[str, Any]) -> dict[str, Any]:
    """One run's figures (ms) from the click and first-frame records."""
    received = first.get("received")
    return {
        "total_ms": first["presented"] - click["click"],
        "capture_ms": click["captured"] - click["click"],
        "to_first_packet_ms": None if received is None else received - click["captured"],
        "width": first.get("width"),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _stats(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(percentile(ordered, 95), 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
        "raw_ms": [round(v, 1) for v in values],
    }


async def _clock_offset(a: Page, b: Page, samples: int = 5) -> tuple[float, float]:
    """Offset (ms) of b's timeOrigin+now clock from a's, and its uncertainty: b is read between
    two reads of a; the sample with the shortest round trip wins."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = float(await a.evaluate(NOW_JS))
        middle = float(await b.evaluate(NOW_JS))
        after = float(await a.evaluate(NOW_JS))
        sample = (middle - (before + after) / 2, (after - before) / 2)
        if best is None or sample[1] < best[1]:
            best = sample
    assert best is not None
    return best


class Volunteer:
    """The volunteer's logged-in page, creating and ending assistances through the UI."""

    def __init__(self, page: Page, server_url: str) -> None:
        self.page = page
        self.server_url = server_url

    @classmethod
    async def log_in(
        cls, browser: Browser, server_url: str, email: str, password: str, cookie: str | None
    ) -> Volunteer:
        """Log in through /login, or reuse a login cookie (``name=value``) when given."""
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        if cookie:
            name, _, value = cookie.partition("=")
            await context.add_cookies([{"name": name, "value": value, "url": server_url}])
        else:
            await page.goto(f"{server_url}/login")
            await page.fill("#email", email)
            await page.fill("#password", password)
            await page.click("#login-form button[type=submit]")
            await page.wait_for_url("**/tableau", timeout=WAIT_MS)
        return cls(page, server_url)

    async def new_assistance(self) -> str:
        """Click "Nouvelle assistance"; the join link of the room that opens."""
        await self.page.goto(f"{self.server_url}/tableau")
        await self.page.click("#new-assistance button[type=submit]")
        await self.page.wait_for_url(re.compile(r"/assistance/[^/]+$"), timeout=WAIT_MS)
        return (await self.page.inner_text("#join-link")).strip()

    async def end(self) -> None:
        """Click "Terminer l'assistance" (the volunteer lands on the handoff sheet's form)."""
        await self.page.click("#end-session")
        await self.page.wait_for_url(re.compile(r"/assistance/[^/]+/fiche$"), timeout=WAIT_MS)


async def _wait_status(page: Page, status: str) -> None:
    await page.wait_for_function(
        "s => document.body.dataset.vpStatus === s", arg=status, timeout=WAIT_MS
    )


async def ours_once(browser: Browser, volunteer: Volunteer) -> dict[str, Any]:
    """One assistance: join, connect, click "Partager mon écran", first frame at the volunteer."""
    link = await volunteer.new_assistance()
    context: BrowserContext = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        ben = await context.new_page()
        await ben.goto(link)
        await ben.click("#start-button")
        await _wait_status(ben, "connected")
        await _wait_status(volunteer.page, "connected")
        if await volunteer.page.evaluate(ARM_FRAME_JS) != 0:
            raise RuntimeError("the volunteer already had video before the click")
        await ben.evaluate(ARM_CLICK_JS)
        offset, uncertainty = await _clock_offset(ben, volunteer.page)
        await ben.click("#share-screen")
        await volunteer.page.wait_for_function("() => window.__vpFirst !== null", timeout=WAIT_MS)
        click = await ben.evaluate("() => window.__vpBench")
        first = await volunteer.page.evaluate("() => window.__vpFirst")
        await volunteer.end()
        await _wait_status(ben, "ended")
    finally:
        await context.close()
    return {
        **_timings(click, first),
        "clock_offset_ms": offset,
        "clock_uncertainty_ms": uncertainty,
    }


async def baseline_once(browser: Browser) -> dict[str, Any]:
    """The same click → first frame between two RTCPeerConnections of one page."""
    context = await browser.new_context()
    try:
        await context.route(
            BASELINE_URL, lambda route: route.fulfill(body=BASELINE_HTML, content_type="text/html")
        )
        page = await context.new_page()
        await page.goto(BASELINE_URL)
        await page.evaluate("() => window.__vpReady")
        await page.click("#share")
        await page.wait_for_function("() => window.__vpFirst !== null", timeout=WAIT_MS)
        click = await page.evaluate("() => window.__vpBench")
        first = await page.evaluate("() => window.__vpFirst")
    finally:
        await context.close()
    return _timings(click, first)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    totals = [r["total_ms"] for r in runs]
    captures = [r["capture_ms"] for r in runs]
    return {**_stats(totals), "capture_median_ms": round(statistics.median(captures), 1)}


async def run(
    server_url: str,
    runs: int | BenchEnv = RUNS,
    *,
    email: str = DEMO_EMAIL,
    password: str = DEMO_PASSWORD,
) -> dict[str, object]:
    """Median, p95 and raw list (ms) of click → first frame, ours and the one-page baseline.

    ``runs`` may also be the ``BenchEnv`` of ``bench.run`` (which calls ``run(url, env)``): the
    volunteer is then its logged-in fixture account, and ``--quick`` does fewer runs.
    """
    cookie = None
    if isinstance(runs, BenchEnv):
        cookie = runs.volunteer_cookie
        runs = QUICK_RUNS if runs.quick else RUNS
    if runs < 1:
        raise ValueError("runs must be at least 1")
    server_url = server_url.rstrip("/")
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            volunteer = await Volunteer.log_in(browser, server_url, email, password, cookie)
            warmup = {"ours": await ours_once(browser, volunteer)}
            warmup["baseline"] = await baseline_once(browser)
            ours: list[dict[str, Any]] = []
            base: list[dict[str, Any]] = []
            # Interleaved, so a busy moment of the machine weighs on both sides alike.
            for _ in range(runs):
                ours.append(await ours_once(browser, volunteer))
                base.append(await baseline_once(browser))
        finally:
            await browser.close()
    mine, theirs = _summary(ours), _summary(base)
    met = mine["p95_ms"] <= TARGET_P95_MS
    note = "click → first rVFC presentationTime, same clock; warm-up run excluded"
    rows = [
        Row(
            "share → first frame, median",
            "ms",
            mine["median_ms"],
            theirs["median_ms"],
            BASELINE_NAME,
            note=note,
        ),
        Row(
            "share → first frame, p95",
            "ms",
            mine["p95_ms"],
            theirs["p95_ms"],
            BASELINE_NAME,
            target=f"≤ {TARGET_P95_MS:.0f}",
            met=met,
            note=note,
        ),
        Row(
            "click → getDisplayMedia resolved, median",
            "ms",
            mine["capture_median_ms"],
            theirs["capture_median_ms"],
            BASELINE_NAME,
        ),
    ]
    return {
        "title": "Share click → first frame at the volunteer (Chromium, loopback)",
        "status": "ok" if met else "target missed",
        "params": {"runs": runs, "target_p95_ms": TARGET_P95_MS},
        "median_ms": mine["median_ms"],
        "p95_ms": mine["p95_ms"],
        "raw_ms": mine["raw_ms"],
        "ours": mine,
        "baseline": {"name": BASELINE_NAME, **theirs},
        "target_met": met,
        # Cross-page clock check: |offset| between the two pages' clocks, and how precisely
        # it was measured (half the shortest evaluate round trip).
        "max_clock_offset_ms": round(max(abs(r["clock_offset_ms"]) for r in ours), 3),
        "max_clock_uncertainty_ms": round(max(r["clock_uncertainty_ms"] for r in ours), 3),
        "warmup_ms": {k: round(v["total_ms"], 1) for k, v in warmup.items()},
        "rows": [row.as_dict() for row in rows],
        "details": [
            {
                "run": i,
                "ours_ms": round(o["total_ms"], 1),
                "ours_capture_ms": round(o["capture_ms"], 1),
                "ours_capture_to_first_packet_ms": _round(o["to_first_packet_ms"]),
                "baseline_ms": round(b["total_ms"], 1),
                "baseline_capture_ms": round(b["capture_ms"], 1),
                "width_px": o["width"],
            }
            for i, (o, b) in enumerate(zip(ours, base, strict=True), 1)
        ],
    }


def main(argv: list[str] | None = None) -> None:
    """Run against a server started by hand (with `permanence demo` accounts); print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--email", default=DEMO_EMAIL)
    parser.add_argument("--password", default=DEMO_PASSWORD)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.server, args.runs, email=args.email, password=args.password))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
