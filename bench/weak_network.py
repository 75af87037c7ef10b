"""Weak network and old phone (issue 14): the beneficiary's path on emulated 3G and a 4× slower CPU.

Real server, real Chromium (Debian's, tests/browser.py flags). The beneficiary is a fresh
Pixel 7 context per run (Playwright descriptor, French locale: cold cache, as a person opening an
SMS link); the volunteer is one logged-in desktop context, never throttled. Only the
beneficiary's page is slowed, through its own DevTools session
(``context.new_cdp_session(page)``, ``Network.enable``, ``Network.emulateNetworkConditions``,
and ``Emulation.setCPUThrottlingRate`` for the old phone). Profiles, as the issue defines them:

- loopback: no emulation at all — the **baseline** column of every row;
- "Fast 3G": 150 ms latency, 1.6 Mbit/s down, 750 kbit/s up (the issue's figures, not
  Chrome's 562.5 ms preset);
- "Slow 3G": 400 ms latency, 400 kbit/s down and up.

What this emulation shapes, as seen here in Chromium 156 (page-side marks and CDP times of the
round-trip tables): every HTTP request and the WebSocket handshake pay the latency once plus the
throughput; WebSocket *frames* get no added latency (offer → answer ≈ 160 ms on "Slow 3G", about
as on loopback), so the signalling exchanges are optimistic by about one latency each;
WebRTC does pay it (ICE checking → connected ≈ 0.8 s and DTLS ≈ 1.1 s more on "Slow 3G", both a
few ms on loopback). bench/weak_media.py measures media quality under a ``tbf`` limit.

How each time is taken (all in the browser, ``performance.timeOrigin + …``; both pages live in
one Chromium so their clocks agree, checked every run as in bench/share_latency.py):

1. ``/`` and ``/code`` load: navigation start (the page's time origin) → "usable" = the later of
   first contentful paint and ``DOMContentLoaded`` end; the load event end is reported too.
2. Code submitted → consent page usable. The code is typed at once after ``/code`` has
   finished its own requests, its prefetch of the room's files included (at most ``TYPING_S``
   = 5 s: a person takes longer to type 8 digits). t0 = ``event.timeStamp`` of the trusted click on
   "Continuer" (kept in ``sessionStorage`` by an init script, so it survives the navigation,
   whatever URL or redirect the submit goes through). "Usable" = the first moment
   ``#start-button`` is visible and enabled and ``document.body.dataset.vpReady === "true"``,
   seen by a MutationObserver (attribute changes) and a requestAnimationFrame check (CSS
   arriving), in whatever document shows it.
3. Link opened → consent page usable: the fresh context first opens ``/healthz`` (same site, no
   assets: the renderer process is up, as in the code path, and the cache stays cold), then t0 =
   that page's clock read just before it is sent to ``/j/<token>`` (so t0 does not depend on
   redirects); same "usable".
4. Whole path: from the same t0 as 2, the script taps "Commencer" on the touch screen as soon as
   the page is usable (one evaluate round trip later: ~25 ms, ~100 ms at CPU 4×), then
   "Montrer avec la caméra" (``#share-camera``) as soon as it is shown; end = ``presentationTime``
   of the first ``requestVideoFrameCallback`` on the volunteer's ``#remote-video``, armed before
   the code is typed. The raw results keep both tap times.
5. Round trips: the beneficiary page's CDP Network events in the run of (4) (HTTP requests with
   initiator and redirect hops, the WebSocket handshake, every frame sent or received; runs of
   the same frame folded into one row "×N") from t0 to the first frame at the volunteer, merged
   with the page's own marks (taps, ``getUserMedia``, ``RTCPeerConnection`` created, ICE and
   connection states, through transparent wrappers installed by the init script), for the
   median run of each network. CDP times are mapped to the page clock through ``wallTime`` of
   the first request: a few ms of slack.
6. Old phone: the same code path with the CPU throttled 4× (loopback, and Slow 3G), then
   ``ROOM_S`` seconds in the room sharing the camera while the volunteer sends chat messages and
   pointer moves/clicks; the longest ``longtask`` (PerformanceObserver, buffered) of the room
   document after "Commencer" was tapped, against the same at CPU 1× (baseline).
7. First-load weight: bytes on the wire (CDP ``encodedDataLength``, headers included) of the
   link-opened run until the consent page is usable, plus bench/page_weight.py's gzip body count.

Targets are judged on the median (p50); the details give the max and whether it meets the
target too. Runs interleave the profiles so a busy moment weighs on all alike; one untimed
warm-up run comes first. Each beneficiary context sends its own ``X-Forwarded-For`` address
(bench.run starts the server with ``TRUST_PROXY``) so the per-address code limits (10 a minute)
are not what is measured.

Standalone: ``python -m bench.weak_network --server http://127.0.0.1:8080 [--runs 3]`` against
a server where ``permanence demo`` created the demo volunteer (without ``TRUST_PROXY`` the code
limit allows about 10 code runs a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import (
    Browser,
    BrowserContext,
    CDPSession,
    Page,
    Playwright,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bench import page_weight
from bench.context import BenchEnv, Row
from bench.share_latency import ARM_FRAME_JS, DEMO_EMAIL, DEMO_PASSWORD, Volunteer
from tests.browser import Chromium, launch

RUNS = 5
QUICK_RUNS = 2
OLD_PHONE_RUNS = 3
QUICK_OLD_PHONE_RUNS = 1
ROOM_S = 20.0
# The longest the code path waits on /code before typing (see code_path): a person takes
# longer than this to type 8 digits.
TYPING_S = 5.0
QUICK_ROOM_S = 8.0
CPU_SLOWDOWN = 4
DEVICE = "Pixel 7"
WAIT_MS = 30_000
LONG_TASK_LIMIT_MS = 200.0
BASELINE_NAME = "loopback, no emulation (same runs)"


@dataclass(frozen=True)
class Network:
    """A DevTools network profile (no latency and no throughput: no emulation)."""

    name: str
    latency_ms: float = 0.0
    down_kbit: float = 0.0
    up_kbit: float = 0.0

    @property
    def emulated(self) -> bool:
        """Whether DevTools is asked to emulate anything."""
        return bool(self.latency_ms or self.down_kbit or self.up_kbit)


LOOPBACK = Network("loopback")
FAST_3G = Network("Fast 3G", 150.0, 1600.0, 750.0)
SLOW_3G = Network("Slow 3G", 400.0, 400.0, 400.0)
NETWORKS = (LOOPBACK, FAST_3G, SLOW_3G)

# Figures and their targets (ms), per network name, as issue 14 states them.
HOME = "/ usable"
HOME_LOAD = "/ load event"
CODE_PAGE = "/code usable"
CODE_PAGE_LOAD = "/code load event"
CODE_CONSENT = "code submitted → consent usable"
LINK_CONSENT = "link opened → consent usable"
WHOLE = "code submitted → video at the volunteer"
ROOM_LONG_TASK = "longest long task in the room"
TARGETS: dict[tuple[str, str], float] = {
    (HOME, SLOW_3G.name): 1500.0,
    (CODE_PAGE, SLOW_3G.name): 1500.0,
    (CODE_CONSENT, SLOW_3G.name): 1500.0,
    (LINK_CONSENT, SLOW_3G.name): 1500.0,
    (WHOLE, SLOW_3G.name): 3000.0,
    (WHOLE, FAST_3G.name): 1500.0,
}
OLD_PHONE_TARGETS = {CODE_CONSENT: 1500.0, LINK_CONSENT: 1500.0, ROOM_LONG_TASK: LONG_TASK_LIMIT_MS}

NOW_JS = "() => performance.timeOrigin + performance.now()"

# Runs at the start of every document of the beneficiary's context, before the page's scripts.
# Keeps trusted clicks in sessionStorage (they survive navigations), watches for the consent
# page becoming usable, and records paint and long-task entries.
INSTRUMENT_JS = """(() => {
  const state = { usable: null, longtasks: [] };
  window.__vpWeak = state;
  const now = () => performance.timeOrigin + performance.now();
  addEventListener('click', (event) => {
    if (!event.isTrusted) return;
    const target = event.target instanceof Element
      ? event.target.closest('button, a, input, [role=button]') || event.target : null;
    const label = target ? (target.id || (target.textContent || '').trim().slice(0, 30)) : '';
    try {
      const clicks = JSON.parse(sessionStorage.getItem('__vpWeakClicks') || '[]');
      clicks.push([performance.timeOrigin + event.timeStamp, label]);
      sessionStorage.setItem('__vpWeakClicks', JSON.stringify(clicks));
    } catch (err) { /* storage refused: the run reports no t0 */ }
  }, true);
  // Page-side marks of the media path (the page's own objects, wrapped transparently).
  state.marks = [];
  const mark = (label) => state.marks.push([now(), label]);
  const Native = window.RTCPeerConnection;
  if (Native) {
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        mark('RTCPeerConnection created');
        const pc = this;
        pc.addEventListener('iceconnectionstatechange', () => mark(`ICE ${pc.iceConnectionState}`));
        pc.addEventListener('connectionstatechange', () => mark(`peer ${pc.connectionState}`));
      }
    };
  }
  const devices = navigator.mediaDevices;
  if (devices && devices.getUserMedia) {
    const original = devices.getUserMedia.bind(devices);
    devices.getUserMedia = async (...args) => {
      mark('getUserMedia called');
      const stream = await original(...args);
      mark('getUserMedia resolved');
      return stream;
    };
  }
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) state.longtasks.push([e.startTime, e.duration]);
    }).observe({ type: 'longtask', buffered: true });
  } catch (err) { /* no long-task timing */ }
  const usable = () => {
    const button = document.getElementById('start-button');
    if (!button || !document.body || document.body.dataset.vpReady !== 'true') return false;
    if (button.disabled || button.getAttribute('aria-disabled') === 'true') return false;
    const box = button.getBoundingClientRect();
    return box.width > 0 && box.height > 0
      && button.checkVisibility({ opacityProperty: true, visibilityProperty: true });
  };
  let observer = null;
  const check = () => {
    if (state.usable !== null || !usable()) return false;
    state.usable = now();
    if (observer) observer.disconnect();
    return true;
  };
  observer = new MutationObserver(check);
  observer.observe(document, {
    subtree: true, attributes: true,
    attributeFilter: ['data-vp-ready', 'hidden', 'disabled', 'aria-disabled', 'class', 'style'],
  });
  const frame = () => { if (!check()) requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
})();"""

NAVIGATION_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  if (!nav || !(nav.loadEventEnd > 0) || !paint) return null;
  return { dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, fcp: paint.startTime,
           redirects: nav.redirectCount, path: location.pathname };
}"""

CLICKS_JS = "() => JSON.parse(sessionStorage.getItem('__vpWeakClicks') || '[]')"
USABLE_JS = "() => window.__vpWeak && window.__vpWeak.usable"
ROOM_TASKS_JS = """(since) => ({
  origin: performance.timeOrigin,
  tasks: (window.__vpWeak ? window.__vpWeak.longtasks : []),
})"""
# Where to tap a button once it is shown: its centre, scrolled into view first if needed, as a
# person would; null while it is hidden.
TAP_TARGET_JS = """(id) => {
  const button = document.getElementById(id);
  if (!button || button.disabled || !button.checkVisibility({ visibilityProperty: true })) {
    return null;
  }
  let box = button.getBoundingClientRect();
  if (!box.width || !box.height) return null;
  if (box.top < 0 || box.bottom > innerHeight || box.left < 0 || box.right > innerWidth) {
    button.scrollIntoView({ block: 'center', behavior: 'instant' });
    box = button.getBoundingClientRect();
  }
  return [box.left + box.width / 2, box.top + box.height / 2];
}"""
MARKS_JS = "() => (window.__vpWeak ? window.__vpWeak.marks : [])"
CHAT_COUNT_JS = "(n) => document.querySelectorAll('#chat-log li').length >= n"


def _emulation(network: Network) -> dict[str, Any]:
    """``Network.emulateNetworkConditions`` parameters (throughput in bytes per second)."""
    return {
        "offline": False,
        "latency": network.latency_ms,
        "downloadThroughput": network.down_kbit * 1000 / 8 if network.down_kbit else -1,
        "uploadThroughput": network.up_kbit * 1000 / 8 if network.up_kbit else -1,
    }


# --- Network log from CDP -------------------------------------------------------------------

SIO_FRAME = re.compile(r'^(\d+)(?:/[\w-]+,)?(?:\d+)?(?:\[\s*"([^"]{1,40})")?')
ENGINE_IO = {"0": "open", "1": "close", "2": "ping", "3": "pong", "4": "message", "5": "upgrade"}


def frame_summary(payload: str, opcode: int) -> str:
    """A short, token-free name for a WebSocket frame (Socket.IO packets by type and event)."""
    if opcode == 2:
        return f"binary, {len(payload)} chars base64"
    found = SIO_FRAME.match(payload)
    if not found:
        return f"{len(payload)} chars"
    digits, event = found.group(1), found.group(2)
    if event:
        return f"{digits} {event}"
    kind = ENGINE_IO.get(digits[:1], "?")
    if digits[:1] == "4" and len(digits) > 1:
        kind = {"0": "sio connect", "1": "sio disconnect", "4": "sio connect_error"}.get(
            digits[1], kind
        )
    return f"{digits} {kind}"


def short_path(url: str) -> str:
    """Path and a trimmed query, with link tokens masked."""
    parts = urlsplit(url)
    path = re.sub(r"^/j/[^/?]+", "/j/…", parts.path)
    query = re.sub(r"(^|&)(sid|t|token)=[^&]+", r"\1\2=…", parts.query)
    text = f"{path}?{query}" if query else path
    if parts.scheme in ("ws", "wss"):
        text = f"{parts.scheme}:{text}"
    return text[:70]


@dataclass
class Entry:
    """One request, redirect hop, WebSocket handshake or frame seen by CDP (times in CDP s)."""

    kind: str
    what: str
    start: float
    end: float | None = None
    status: str = ""
    by: str = ""
    bytes: int = 0


@dataclass
class NetLog:
    """The beneficiary page's Network events, in order."""

    entries: list[Entry] = field(default_factory=list)
    open: dict[str, Entry] = field(default_factory=dict)
    wall_offset_ms: float | None = None  # wallTime − monotonic timestamp, ms
    ws_urls: dict[str, str] = field(default_factory=dict)

    def attach(self, cdp: CDPSession) -> None:
        """Listen to the events (before ``Network.enable``)."""
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "Network.requestWillBeSent": self._request,
            "Network.responseReceived": self._response,
            "Network.loadingFinished": self._finished,
            "Network.loadingFailed": self._failed,
            "Network.webSocketCreated": self._ws_created,
            "Network.webSocketWillSendHandshakeRequest": self._ws_request,
            "Network.webSocketHandshakeResponseReceived": self._ws_response,
            "Network.webSocketFrameSent": lambda p: self._frame(p, "ws →"),
            "Network.webSocketFrameReceived": lambda p: self._frame(p, "ws ←"),
            "Network.webSocketClosed": lambda p: self._add(
                Entry("ws", "closed", p["timestamp"]), None
            ),
        }
        for name, handler in handlers.items():
            cdp.on(name, handler)

    def _add(self, entry: Entry, request_id: str | None) -> None:
        self.entries.append(entry)
        if request_id is not None:
            self.open[request_id] = entry

    def _wall(self, params: dict[str, Any]) -> None:
        if self.wall_offset_ms is None and "wallTime" in params:
            self.wall_offset_ms = (params["wallTime"] - params["timestamp"]) * 1000

    def _request(self, p: dict[str, Any]) -> None:
        self._wall(p)
        request = p["request"]
        if request["url"].startswith(("data:", "blob:")):
            return
        previous = self.open.get(p["requestId"])
        if previous is not None and p.get("redirectResponse"):
            previous.status = str(p["redirectResponse"].get("status", ""))
            previous.end = p["timestamp"]
            previous.kind = "redirect"
        initiator = p.get("initiator", {}).get("type", "")
        if p.get("redirectResponse"):
            initiator = "redirect"
        entry = Entry(
            "http",
            f"{request['method']} {short_path(request['url'])}",
            p["timestamp"],
            by=f"{initiator} ({p.get('type', '?')})",
        )
        self._add(entry, p["requestId"])

    def _response(self, p: dict[str, Any]) -> None:
        entry = self.open.get(p["requestId"])
        if entry is not None:
            entry.status = str(p["response"].get("status", ""))

    def _finished(self, p: dict[str, Any]) -> None:
        entry = self.open.get(p["requestId"])
        if entry is not None and entry.kind == "http":
            entry.end = p["timestamp"]
            entry.bytes = int(p.get("encodedDataLength", 0))

    def _failed(self, p: dict[str, Any]) -> None:
        entry = self.open.get(p["requestId"])
        if entry is not None and entry.kind == "http":
            entry.end = p["timestamp"]
            entry.status = f"failed: {p.get('errorText', '')}"[:40]

    def _ws_created(self, p: dict[str, Any]) -> None:
        self.ws_urls[p["requestId"]] = p.get("url", "")

    def _ws_request(self, p: dict[str, Any]) -> None:
        self._wall(p)
        url = p.get("request", {}).get("url") or self.ws_urls.get(p["requestId"], "")
        self._add(Entry("ws", f"handshake {short_path(url)}", p["timestamp"]), p["requestId"])

    def _ws_response(self, p: dict[str, Any]) -> None:
        entry = self.open.get(p["requestId"])
        if entry is not None:
            entry.end = p["timestamp"]
            entry.status = str(p["response"].get("status", ""))

    def _frame(self, p: dict[str, Any], kind: str) -> None:
        response = p["response"]
        what = frame_summary(response.get("payloadData", ""), int(response.get("opcode", 1)))
        self.entries.append(Entry(kind, what, p["timestamp"]))

    def epoch_ms(self, cdp_s: float) -> float:
        """A CDP monotonic time (s) on the pages' ``timeOrigin + now`` clock (ms)."""
        return cdp_s * 1000 + (self.wall_offset_ms or 0.0)

    def wire_bytes(self, since_ms: float, until_ms: float) -> int:
        """Body + header bytes of the HTTP responses started after ``since_ms`` and finished
        before ``until_ms``."""
        return sum(
            e.bytes
            for e in self.entries
            if e.kind == "http"
            and e.end is not None
            and self.epoch_ms(e.start) >= since_ms
            and self.epoch_ms(e.end) <= until_ms
        )

    def table(
        self, t0_ms: float, until_ms: float, marks: Sequence[tuple[float, str]] = ()
    ) -> list[dict[str, Any]]:
        """What happened between ``t0_ms`` and ``until_ms``, as rows (times since t0, ms),
        with the page's own ``marks`` (clock ms, label) merged in."""
        found: list[tuple[float, Entry]] = []
        for entry in self.entries:
            start = self.epoch_ms(entry.start)
            if t0_ms - 50 <= start <= until_ms:
                found.append((start, entry))
        found += [(t, Entry("page", label, 0.0)) for t, label in marks if t <= until_ms]
        found.sort(key=lambda item: item[0])
        rows: list[dict[str, Any]] = []
        for start, entry in found:
            last = rows[-1] if rows else None
            if (
                last
                and entry.kind.startswith("ws ")
                and (last["kind"], last["what"])
                == (
                    entry.kind,
                    entry.what,
                )
            ):
                # A run of the same frame (ICE candidates): one row, its count and last time.
                last["count"] += 1
                last["end_ms"] = round(start - t0_ms)
                continue
            end = None
            if entry.end is not None:
                end = round(self.epoch_ms(entry.end) - t0_ms)
            rows.append(
                {
                    "#": len(rows) + 1,
                    "start_ms": round(start - t0_ms),
                    "end_ms": end,
                    "kind": entry.kind,
                    "what": entry.what,
                    "status": entry.status,
                    "initiator": entry.by,
                    "bytes": entry.bytes or None,
                    "count": 1,
                }
            )
        for row in rows:
            count = row.pop("count")
            if count > 1:
                row["what"] += f" ×{count}"
        return rows


def table_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many requests, redirects and frames a round-trip table holds."""
    before_welcome = list(itertools.takewhile(lambda r: not r["what"].endswith(" welcome"), rows))
    return {
        "http_requests": sum(r["kind"] in ("http", "redirect") for r in rows),
        "redirects": sum(r["kind"] == "redirect" for r in rows),
        "ws_handshakes": sum(r["what"].startswith("handshake") for r in rows),
        "ws_frame_rows": sum(r["kind"].startswith("ws ") for r in rows),
        "rows_before_welcome": len(before_welcome),
    }


# --- One beneficiary ------------------------------------------------------------------------


@dataclass
class Beneficiary:
    """A fresh Pixel 7 context (cold cache) with its throttled page and network log."""

    context: BrowserContext
    page: Page
    cdp: CDPSession
    log: NetLog

    @classmethod
    async def open(
        cls,
        playwright: Playwright,
        browser: Browser,
        network: Network,
        cpu: float,
        address: str,
    ) -> Beneficiary:
        """New context and page; emulation set before the first navigation."""
        device = Chromium(playwright, browser).device(DEVICE)
        context = await browser.new_context(
            **device, locale="fr-FR", extra_http_headers={"X-Forwarded-For": address}
        )
        await context.add_init_script(INSTRUMENT_JS)
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        log = NetLog()
        log.attach(cdp)
        await cdp.send("Network.enable")
        if network.emulated:
            await cdp.send("Network.emulateNetworkConditions", _emulation(network))
        if cpu > 1:
            await cdp.send("Emulation.setCPUThrottlingRate", {"rate": cpu})
        return cls(context, page, cdp, log)

    async def close(self) -> None:
        """Close the context (and its CDP session)."""
        await self.context.close()

    async def navigation(self) -> dict[str, Any]:
        """Navigation timing of the current document once loaded and painted (ms)."""
        handle = await self.page.wait_for_function(NAVIGATION_JS, timeout=WAIT_MS)
        timing: dict[str, Any] = await handle.json_value()
        timing["usable"] = max(timing["fcp"], timing["dcl"])
        return timing

    async def usable_at(self) -> float:
        """The clock time the consent page became usable, across navigations."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:
            try:
                handle = await self.page.wait_for_function(
                    USABLE_JS, timeout=max(1.0, (deadline - time.monotonic()) * 1000)
                )
                return float(await handle.json_value())
            except PlaywrightError as exc:
                if "destroyed" not in str(exc) and "navigat" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise

    async def tap(self, element_id: str) -> None:
        """Tap ``#element_id`` on the touch screen as soon as it is shown (no actionability
        wait beyond that: the script should react about as fast as the page allows)."""
        handle = await self.page.wait_for_function(TAP_TARGET_JS, arg=element_id, timeout=WAIT_MS)
        x, y = await handle.json_value()
        await self.page.touchscreen.tap(x, y)

    async def clicks(self) -> list[tuple[float, str]]:
        """Trusted clicks of this tab so far: (clock ms, target id or text)."""
        return [(float(t), str(label)) for t, label in await self.page.evaluate(CLICKS_JS)]


class Addresses:
    """A distinct X-Forwarded-For address per beneficiary context (TEST-NET-2/3 ranges)."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> str:
        """The next address."""
        self.count += 1
        return f"198.51.{100 + self.count // 250}.{self.count % 250 + 1}"


@dataclass
class Bench:
    """Everything one measurement needs."""

    playwright: Playwright
    browser: Browser
    volunteer: Volunteer
    server_url: str
    addresses: Addresses = field(default_factory=Addresses)

    async def beneficiary(self, network: Network, cpu: float = 1.0) -> Beneficiary:
        """A fresh beneficiary context on ``network`` at ``cpu``× slowdown."""
        return await Beneficiary.open(
            self.playwright, self.browser, network, cpu, self.addresses.next()
        )

    async def home(self, network: Network) -> dict[str, Any]:
        """``/`` in a fresh context: usable and load event (ms since navigation start)."""
        ben = await self.beneficiary(network)
        try:
            await ben.page.goto(f"{self.server_url}/", timeout=WAIT_MS)
            timing = await ben.navigation()
        finally:
            await ben.close()
        return {HOME: timing["usable"], HOME_LOAD: timing["load"]}

    async def link(self, network: Network, cpu: float = 1.0) -> dict[str, Any]:
        """A new assistance's ``/j/`` link opened in a fresh context → consent page usable."""
        link = await self.volunteer.new_assistance()
        ben = await self.beneficiary(network, cpu)
        try:
            # A page of the same site without assets first: the renderer process exists, as for
            # the code path, and the cache stays cold for the beneficiary's page.
            await ben.page.goto(f"{self.server_url}/healthz", timeout=WAIT_MS)
            t0 = float(await ben.page.evaluate(NOW_JS))
            await ben.page.goto(link, wait_until="commit", timeout=WAIT_MS)
            usable = await ben.usable_at()
            weight = ben.log.wire_bytes(t0, usable)
        finally:
            await ben.close()
            await self.volunteer.end()
        return {LINK_CONSENT: usable - t0, "wire_bytes": weight}

    async def code_path(
        self, network: Network, cpu: float = 1.0, room_s: float = 0.0
    ) -> dict[str, Any]:
        """``/code`` → code → consent → room → camera → first frame at the volunteer, then
        optionally ``room_s`` seconds of chat and pointer from the volunteer."""
        vol = self.volunteer.page
        await self.volunteer.new_assistance()
        code = re.sub(r"\D", "", await vol.inner_text("#join-code"))
        if await vol.evaluate(ARM_FRAME_JS) != 0:
            raise RuntimeError("the volunteer already had video before the beneficiary came")
        ben = await self.beneficiary(network, cpu)
        try:
            await ben.page.goto(f"{self.server_url}/code", timeout=WAIT_MS)
            code_page = await ben.navigation()
            # A person types the 8 digits in several seconds, while the page fetches the
            # room's files (prefetch): let those finish, at most TYPING_S, then type at once.
            with contextlib.suppress(PlaywrightTimeout):
                await ben.page.wait_for_load_state("networkidle", timeout=TYPING_S * 1000)
            await ben.page.locator("input[name=code]").fill(code)
            await ben.page.get_by_role("button", name="Continuer").click()
            usable = await ben.usable_at()
            t0 = (await ben.clicks())[0][0]
            await ben.tap("start-button")
            await ben.tap("share-camera")
            await vol.wait_for_function("() => window.__vpFirst !== null", timeout=WAIT_MS)
            first = float(await vol.evaluate("() => window.__vpFirst.presented"))
            clicked = await ben.clicks()
            clicks = {label: t for t, label in reversed(clicked)}
            if "start-button" not in clicks or "share-camera" not in clicks:
                raise RuntimeError(f"a tap missed its button: the page saw {clicked}")
            marks = [(float(t), str(label)) for t, label in await ben.page.evaluate(MARKS_JS)]
            marks += [(t, f"tap {label}") for t, label in clicked]
            marks.append((first, "first frame presented at the volunteer"))
            offset = await _clock_offset(ben.page, vol)
            result: dict[str, Any] = {
                CODE_PAGE: code_page["usable"],
                CODE_PAGE_LOAD: code_page["load"],
                CODE_CONSENT: usable - t0,
                WHOLE: first - t0,
                "tap_start_ms": clicks["start-button"] - t0,
                "tap_camera_ms": clicks["share-camera"] - t0,
                "clock_offset_ms": offset,
                "round_trips": ben.log.table(t0, first, marks),
            }
            if room_s:
                result.update(await self._room(ben, room_s, clicks["start-button"]))
        finally:
            await ben.close()
            await self.volunteer.end()
        return result

    async def _room(self, ben: Beneficiary, room_s: float, entered: float) -> dict[str, Any]:
        """Chat and pointer from the volunteer for ``room_s`` s; the room's long tasks."""
        vol = self.volunteer.page
        await vol.locator("#pointer-mode").click()
        box = await vol.locator("#remote-video").bounding_box()
        if box is None:
            raise RuntimeError("the volunteer's video has no box")
        x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
        sent = 0
        deadline = time.monotonic() + room_s
        while time.monotonic() < deadline:
            sent += 1
            await vol.locator("#chat-input").fill(f"Message {sent} : appuyez sur le bouton vert.")
            await vol.locator("#chat-send").click()
            for step in range(12):
                # Pacing of a hand moving the mouse (the page sends at most one move per 80 ms).
                await vol.mouse.move(x0 + w * (0.2 + 0.05 * step), y0 + h * (0.3 + 0.03 * step))
                await asyncio.sleep(0.05)
            await vol.mouse.click(x0 + w * 0.5, y0 + h * 0.5)
        # A message typed before the data channel is open stays in the input (not sent).
        delivered = await vol.locator("#chat-log li.mine").count()
        await ben.page.wait_for_function(CHAT_COUNT_JS, arg=delivered, timeout=WAIT_MS)
        record = await ben.page.evaluate(ROOM_TASKS_JS)
        since = entered - record["origin"]
        room = sorted(
            ((d, start - since) for start, d in record["tasks"] if start + d >= since),
            reverse=True,
        )
        return {
            ROOM_LONG_TASK: room[0][0] if room else 0.0,
            # The longest few, as (duration, start since "Commencer" was tapped), in ms.
            "room_longest_tasks": [[round(d), round(at)] for d, at in room[:5]],
            "room_long_tasks": len(room),
            "room_tasks_over_limit": sum(d > LONG_TASK_LIMIT_MS for d, _ in room),
            "load_longest_task_ms": max((d for s, d in record["tasks"] if s < since), default=0),
            "chat_sent": delivered,
            "chat_not_sent": sent - delivered,
        }


async def _clock_offset(a: Page, b: Page) -> float:
    """b's clock minus a's (ms), from the tightest of three a-b-a reads."""
    best: tuple[float, float] | None = None
    for _ in range(3):
        before = float(await a.evaluate(NOW_JS))
        middle = float(await b.evaluate(NOW_JS))
        after = float(await a.evaluate(NOW_JS))
        sample = (middle - (before + after) / 2, after - before)
        if best is None or sample[1] < best[1]:
            best = sample
    assert best is not None
    return round(best[0], 2)


# --- Summary --------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def _label(network: Network, cpu: float) -> str:
    return f"{network.name}, CPU {cpu:g}×"


def _collect(samples: dict[str, list[dict[str, Any]]], figures: Sequence[str]) -> dict[str, Any]:
    """{label: {figure: [values]}} from {label: [run results]}."""
    return {
        label: {f: [r[f] for r in runs if f in r] for f in figures}
        for label, runs in samples.items()
    }


def summarise(
    main: dict[str, list[dict[str, Any]]], old: dict[str, list[dict[str, Any]]]
) -> tuple[list[Row], list[dict[str, Any]]]:
    """Rows (p50 vs loopback p50, target on p50) and the details table (p50, max, targets)."""
    figures = [HOME, HOME_LOAD, CODE_PAGE, CODE_PAGE_LOAD, CODE_CONSENT, LINK_CONSENT, WHOLE]
    values = _collect(main, figures)
    base = values[LOOPBACK.name]
    rows: list[Row] = []
    details: list[dict[str, Any]] = []
    for label, by_figure in values.items():
        for figure in figures:
            if not by_figure[figure]:
                continue
            ours = _stats(by_figure[figure])
            loop = _stats(base[figure]) if base[figure] else None
            target = TARGETS.get((figure, label))
            details.append(_detail(figure, label, by_figure[figure], ours, loop, target))
            if label == LOOPBACK.name or figure in (HOME_LOAD, CODE_PAGE_LOAD):
                continue
            rows.append(_row(f"{label}: {figure}, p50", ours, loop, target, "p50"))
            if figure == WHOLE:
                rows.append(_row(f"{label}: {figure}, max", ours, loop, target, "max"))
    old_figures = [CODE_CONSENT, LINK_CONSENT, WHOLE, ROOM_LONG_TASK]
    old_values = _collect(old, old_figures)
    old_base_label = _label(LOOPBACK, 1)
    old_base = old_values.get(old_base_label, {})
    for label, by_figure in old_values.items():
        for figure in old_figures:
            if not by_figure[figure]:
                continue
            ours = _stats(by_figure[figure])
            loop = _stats(old_base[figure]) if old_base.get(figure) else None
            target = OLD_PHONE_TARGETS.get(figure) if label != old_base_label else None
            details.append(_detail(figure, label, by_figure[figure], ours, loop, target))
            if label == old_base_label or figure == WHOLE:
                continue
            stat = "max" if figure == ROOM_LONG_TASK else "p50"
            rows.append(_row(f"{label}: {figure}, {stat}", ours, loop, target, stat))
    return rows, details


def _detail(
    figure: str,
    label: str,
    raw: list[float],
    ours: dict[str, float],
    loop: dict[str, float] | None,
    target: float | None,
) -> dict[str, Any]:
    return {
        "figure": figure,
        "conditions": label,
        "runs": len(raw),
        "p50_ms": ours["p50"],
        "max_ms": ours["max"],
        "loopback_p50_ms": loop["p50"] if loop else None,
        "target_ms": target,
        "p50_met": None if target is None else ours["p50"] <= target,
        "max_met": None if target is None else ours["max"] <= target,
        "raw_ms": " ".join(f"{v:.0f}" for v in raw),
    }


def _row(
    metric: str,
    ours: dict[str, float],
    loop: dict[str, float] | None,
    target: float | None,
    stat: str,
) -> Row:
    return Row(
        metric,
        "ms",
        ours[stat],
        loop[stat] if loop else None,
        BASELINE_NAME if "CPU" not in metric else "loopback, CPU 1× (same runs)",
        target=f"≤ {target:,.0f}" if target is not None else "",
        met=None if target is None else ours[stat] <= target,
        note="Pixel 7 descriptor, fresh context per run (cold cache); see the module docstring",
    )


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r[WHOLE])
    return ordered[(len(ordered) - 1) // 2]


# --- Entry points ---------------------------------------------------------------------------


async def measure(
    server_url: str,
    runs: int,
    old_runs: int,
    room_s: float,
    email: str,
    password: str,
    cookie: str | None,
) -> dict[str, Any]:
    """All runs; raw results by conditions."""
    main: dict[str, list[dict[str, Any]]] = {n.name: [] for n in NETWORKS}
    old: dict[str, list[dict[str, Any]]] = {}
    homes: dict[str, list[dict[str, Any]]] = {n.name: [] for n in NETWORKS}
    links: dict[str, list[dict[str, Any]]] = {n.name: [] for n in NETWORKS}
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            volunteer = await Volunteer.log_in(browser, server_url, email, password, cookie)
            bench = Bench(playwright, browser, volunteer, server_url)
            warmup = await bench.code_path(LOOPBACK)
            for _ in range(runs):
                for network in NETWORKS:
                    homes[network.name].append(await bench.home(network))
                    links[network.name].append(await bench.link(network))
                    main[network.name].append(await bench.code_path(network))
            old_conditions = [(LOOPBACK, 1.0), (LOOPBACK, CPU_SLOWDOWN), (SLOW_3G, CPU_SLOWDOWN)]
            for _ in range(old_runs):
                for network, cpu in old_conditions:
                    label = _label(network, cpu)
                    path = await bench.code_path(network, cpu, room_s)
                    path.update(await bench.link(network, cpu))
                    old.setdefault(label, []).append(path)
        finally:
            await browser.close()
    for name in main:
        for path, home, link in zip(main[name], homes[name], links[name], strict=True):
            path.update(home)
            path.update(link)
    return {"main": main, "old": old, "warmup": warmup}


async def run(
    server_url: str,
    runs: int | BenchEnv = RUNS,
    *,
    email: str = DEMO_EMAIL,
    password: str = DEMO_PASSWORD,
) -> dict[str, Any]:
    """The weak-network benchmark; ``runs`` may be bench.run's ``BenchEnv``."""
    cookie = None
    old_runs, room_s = OLD_PHONE_RUNS, ROOM_S
    weight: dict[str, Any] | None = None
    if isinstance(runs, BenchEnv):
        env = runs
        cookie = env.volunteer_cookie
        runs = QUICK_RUNS if env.quick else RUNS
        if env.quick:
            old_runs, room_s = QUICK_OLD_PHONE_RUNS, QUICK_ROOM_S
        session = (await env.new_sessions(1))[0]
        weight = await page_weight.first_load(server_url, session.join_token, page_weight.GZIP)
    if runs < 1:
        raise ValueError("runs must be at least 1")
    server_url = server_url.rstrip("/")
    raw = await measure(server_url, runs, old_runs, room_s, email, password, cookie)
    rows, details = summarise(raw["main"], raw["old"])
    tables = []
    counts = {}
    for network in NETWORKS:
        sample = _median_run(raw["main"][network.name])
        counts[network.name] = table_counts(sample["round_trips"])
        tables.append(
            {
                "title": f"Round trips, {network.name}, code submitted → first frame at the "
                f"volunteer (median run, {sample[WHOLE]:.0f} ms; times in ms since the click; "
                "kind page = the page's own marks)",
                "rows": sample["round_trips"],
            }
        )
    bytes_by_net = {n: [r["wire_bytes"] for r in raw["main"][n]] for n in raw["main"]}
    loop_bytes = statistics.median(bytes_by_net[LOOPBACK.name])
    rows.append(
        Row(
            "link opened → consent usable, bytes on the wire (CDP, headers included)",
            "bytes",
            statistics.median(bytes_by_net[SLOW_3G.name]),
            loop_bytes,
            "loopback (same runs)",
            target="≤ 60,000",
            met=statistics.median(bytes_by_net[SLOW_3G.name]) <= page_weight.TARGET_BYTES,
            note="first load, cold cache, until the consent page is usable (Slow 3G run)",
        )
    )
    if weight is not None and "error" not in weight:
        body = sum(f.wire_bytes for f in weight["files"])
        rows.append(
            Row(
                "beneficiary first load, gzip body bytes (bench/page_weight.py)",
                "bytes",
                body,
                None,
                "—",
                target="≤ 60,000",
                met=body <= page_weight.TARGET_BYTES,
            )
        )
    met = [r.met for r in rows if r.met is not None]
    offsets = [
        abs(r["clock_offset_ms"])
        for runs_ in (*raw["main"].values(), *raw["old"].values())
        for r in runs_
    ]
    return {
        "title": "Weak network and old phone: the beneficiary's path (Chromium, Pixel 7)",
        "status": "ok" if all(met) else "target missed",
        "params": {
            "runs per network": runs,
            "old-phone runs": old_runs,
            "room seconds": room_s,
            "device": DEVICE,
            "Fast 3G": "150 ms, 1.6 Mbit/s down, 750 kbit/s up",
            "Slow 3G": "400 ms, 400 kbit/s down and up",
            "CPU slowdown": f"{CPU_SLOWDOWN}×",
        },
        "rows": [row.as_dict() for row in rows],
        "details": details,
        "tables": tables,
        "round_trip_counts": counts,
        "max_clock_offset_ms": max(offsets),
        "warmup_ms": round(raw["warmup"][WHOLE], 1),
        "raw": {
            "main": {k: [_slim(r) for r in v] for k, v in raw["main"].items()},
            "old": {k: [_slim(r) for r in v] for k, v in raw["old"].items()},
        },
    }


def _slim(result: dict[str, Any]) -> dict[str, Any]:
    """A run's figures without its round-trip table, rounded."""
    return {
        k: round(v, 1) if isinstance(v, float) else v
        for k, v in result.items()
        if k != "round_trips"
    }


def main(argv: list[str] | None = None) -> None:
    """Run against a server started by hand (with `permanence demo` accounts); print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--email", default=DEMO_EMAIL)
    parser.add_argument("--password", default=DEMO_PASSWORD)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.server, args.runs, email=args.email, password=args.password))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
