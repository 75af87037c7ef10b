"""A weak link for media tests and benchmarks: a network namespace of our own whose loopback is
limited by a `tbf` queue, with our server and Chromium both inside it (NOTES.md, "Weak
networks"). The test process stays outside: it drives Chromium over Playwright's pipe (file
descriptors survive `ip netns exec`) and reaches the server only through the browser, or
through `ip netns exec` for the readiness probe.

`tbf` shapes what leaves `lo`, and on loopback every packet leaves it once: media, RTCP and
signalling of both directions share the one rate. `netem` is not in this kernel, so no delay
or loss is added here: what the limit drops, it drops by overflowing the queue (300 ms).
Needs root (CI and these machines run as root)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Browser, Page, Playwright, expect

from tests.browser import CHROMIUM, RECORD_CONNECTIONS_JS, collect_console_errors, launch
from tests.processes import ROOT, ServeProcess

# What `tbf` needs besides the rate (NOTES.md): with loopback's default 64 KiB MTU it drops
# packets, so the link gets an Ethernet MTU.
BURST = "32kbit"
LATENCY = "300ms"
MTU = "1500"
VOLUNTEER_EMAIL = "benevole@netns.invalid"
VOLUNTEER_PASSWORD = "netns-benevole-2026"


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("/usr/sbin/ip", "/usr/sbin/tc"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (Debian's iproute2)"
    return None


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _out, errors = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {errors.decode().strip()}")


@dataclass(frozen=True)
class Namespace:
    """A network namespace whose only interface is a loopback limited to `rate_kbit`."""

    name: str
    rate_kbit: int | None

    def argv(self, *argv: str) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def chromium_wrapper(self, folder: Path) -> Path:
        """A script that execs Debian's Chromium inside the namespace, for Playwright's
        `executable_path` (Playwright talks to it over inherited pipes, not the network)."""
        path = folder / f"chromium-{self.name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {CHROMIUM} "$@"\n')
        path.chmod(0o700)
        return path


@asynccontextmanager
async def network_namespace(helper: str, rate_kbit: int | None) -> AsyncIterator[Namespace]:
    """A fresh namespace named after `helper` (unique), loopback up with an MTU of 1500 and,
    if `rate_kbit`, a `tbf` limit; always deleted at the end."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    name = f"vp-{helper}-{os.getpid()}-{secrets.token_hex(3)}"
    namespace = Namespace(name, rate_kbit)
    await _run("ip", "netns", "add", name)
    try:
        await _run(*namespace.argv("ip", "link", "set", "lo", "up"))
        await _run(*namespace.argv("ip", "link", "set", "lo", "mtu", MTU))
        if rate_kbit:
            await _run(
                *namespace.argv(
                    *("tc", "qdisc", "add", "dev", "lo", "root", "tbf"),
                    *("rate", f"{rate_kbit}kbit", "burst", BURST, "latency", LATENCY),
                )
            )
        yield namespace
    finally:
        await _run("ip", "netns", "delete", name)


@dataclass
class NamespacedServer(ServeProcess):
    """`permanence serve` inside a namespace, on 127.0.0.1 there."""

    namespace: Namespace | None = None

    def __post_init__(self) -> None:
        assert self.namespace is not None
        self.prefix = self.namespace.argv()

    async def healthy(self) -> bool:
        """/healthz probed from inside the namespace (the test process is outside it)."""
        assert self.namespace is not None
        probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"
        process = await asyncio.create_subprocess_exec(
            *self.namespace.argv(sys.executable, "-c", probe, self.url + "/healthz"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return await process.wait() == 0


async def create_volunteer(server: ServeProcess, email: str, password: str) -> None:
    """A volunteer account in the server's database (`permanence create-user`)."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "server.cli", "create-user", "--email", email),
        *("--name", "Camille", "--role", "volunteer", "--password-stdin"),
        cwd=ROOT,
        env=server.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _out, errors = await asyncio.wait_for(process.communicate(password.encode() + b"\n"), 60)
    assert process.returncode == 0, errors.decode()


@dataclass
class WeakLink:
    """Our server and a Chromium inside one namespace, and the volunteer who can log in."""

    namespace: Namespace
    server: NamespacedServer
    browser: Browser
    email: str = VOLUNTEER_EMAIL
    password: str = VOLUNTEER_PASSWORD

    def url(self, path: str) -> str:
        """Absolute URL on the server (as the browser inside the namespace sees it)."""
        return self.server.url + path


@asynccontextmanager
async def weak_link(
    playwright: Playwright, folder: Path, helper: str, rate_kbit: int | None
) -> AsyncIterator[WeakLink]:
    """A namespace limited to `rate_kbit`, our server in it (SQLite under `folder`, migrated,
    one volunteer) and Chromium in it; everything stopped and the namespace deleted at the
    end, whatever happens."""
    async with network_namespace(helper, rate_kbit) as namespace:
        server = NamespacedServer(folder / "server", "server", namespace=namespace)
        await server.migrate()
        await create_volunteer(server, VOLUNTEER_EMAIL, VOLUNTEER_PASSWORD)
        await server.start()
        try:
            browser = await launch(playwright, namespace.chromium_wrapper(folder))
            try:
                yield WeakLink(namespace, server, browser)
            finally:
                await browser.close()
        finally:
            await server.stop()


async def connected_room(
    link: WeakLink, errors: list[str], init_script: str = "", wait_ms: float = 40_000
) -> tuple[Page, Page]:
    """The volunteer logs in and opens an assistance; the beneficiary joins by its link and
    consents; both pages connected, each recording its connections (and running
    `init_script` first, if given). Returns (volunteer, beneficiary)."""
    pages = []
    for viewport in ({"width": 1400, "height": 1000}, {"width": 1280, "height": 900}):
        context = await link.browser.new_context(locale="fr-FR", viewport=viewport)
        page = await context.new_page()
        collect_console_errors(page, errors)
        await page.add_init_script(RECORD_CONNECTIONS_JS)
        if init_script:
            await page.add_init_script(init_script)
        pages.append(page)
    vol, ben = pages
    await vol.goto(link.url("/login"))
    await vol.get_by_label("Adresse e-mail").fill(link.email)
    await vol.get_by_label("Mot de passe").fill(link.password)
    await vol.get_by_role("button", name="Se connecter").click()
    await vol.wait_for_url("**/tableau", timeout=wait_ms)
    await vol.get_by_role("button", name="Nouvelle assistance").click()
    await vol.wait_for_url(re.compile(r"/assistance/[^/]+$"), timeout=wait_ms)
    join = (await vol.locator("#join-link").inner_text()).strip()
    await ben.goto(join, timeout=wait_ms)
    await ben.get_by_role("button", name="Commencer").click()
    for page in (ben, vol):
        await expect(page.locator("body")).to_have_attribute(
            "data-vp-status", "connected", timeout=wait_ms
        )
    return vol, ben
