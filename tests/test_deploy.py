"""The production recipe of deploy/ works as shipped: nginx accepts the site configuration and,
run in front of several nodes, keeps each Engine.IO session on one node while spreading the
rest, and serves static files with the app's headers; systemd accepts the node unit; the
settings file names every setting and, filled in, sends real notifications; `permanence serve`
warns when a public site would not."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server import cli
from server.settings import PREFIX, Settings, load_settings
from server.web.assets import VENDORED, WEB_DIR, Assets
from server.web.middlewares import CSP
from tests.conftest import Running, free_port

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
SITE_CONF = DEPLOY / "nginx" / "visio-permanence.conf"
LOG_CONF = DEPLOY / "nginx" / "visio-permanence-log.conf"
NODE_UNIT = DEPLOY / "systemd" / "visio-permanence@.service"
ENV_EXAMPLE = DEPLOY / "env.example"
CHECKOUT = "/opt/visio-permanence"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_nginx = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (make system-deps)"
)
# What a production install must set itself (uncommented in env.example), beyond the defaults.
RECIPE_SETTINGS = {
    "BASE_URL",
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "DATA_DIR",
    "TRUST_PROXY",
    "STUN_URLS",
    "TURN_URLS",
    "TURN_SECRET",
    "EMAIL_BACKEND",
    "EMAIL_FROM",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_TLS",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMS_BACKEND",
    "SMS_API_KEY",
    "SMS_SENDER",
    "METRICS_TOKEN",
    "TIMEZONE",
}


@pytest.fixture
def backend() -> str:
    """The recipe's files do not depend on the database: SQLite only."""
    return "sqlite"


# -- nginx --------------------------------------------------------------------------------------


def _nginx_version() -> tuple[int, ...]:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    assert found, out
    return tuple(int(part) for part in found.groups())


def _replace(text: str, old: str, new: str, count: int | None = None) -> str:
    """Replace, failing when the shipped file no longer has what the adaptation expects."""
    found = text.count(old)
    assert found and (count is None or found == count), f"{old!r} found {found} times"
    return text.replace(old, new)


@dataclass
class Nginx:
    """The shipped site configuration, adapted to run here as the current user."""

    prefix: Path
    nodes: list[int]
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def write(self) -> None:
        """Change only ports, paths and the certificate; keep everything else as shipped."""
        cert, key = self.prefix / "cert.pem", self.prefix / "key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=permanence.example.org", "-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        site = SITE_CONF.read_text()
        site = _replace(site, "    listen 80;\n", f"    listen 127.0.0.1:{self.http_port};\n", 1)
        site = _replace(site, "    listen [::]:80;\n", "", 1)
        site = _replace(site, "listen 443 ssl;", f"listen 127.0.0.1:{self.https_port} ssl;", 1)
        site = _replace(site, "    listen [::]:443 ssl;\n", "", 1)
        if _nginx_version() < (1, 25, 1):  # Debian 12: the file says to drop it there
            site = _replace(site, "    http2 on;\n", "", 1)
        site = _replace(
            site,
            "/etc/letsencrypt/live/permanence.example.org/fullchain.pem",
            str(cert),
            1,
        )
        site = _replace(
            site, "/etc/letsencrypt/live/permanence.example.org/privkey.pem", str(key), 1
        )
        site = _replace(site, "/var/log/nginx/", f"{self.prefix}/")
        site = _replace(site, "root /var/www/html;", f"root {self.prefix};", 1)
        site = _replace(site, f"{CHECKOUT}/web", str(WEB_DIR))
        upstream = re.search(
            r"(upstream visio_permanence \{.*?)((?:    server [^\n]+\n)+)", site, re.S
        )
        assert upstream, "no upstream block with server lines"
        servers = "".join(f"    server 127.0.0.1:{port};\n" for port in self.nodes)
        site = site[: upstream.start(2)] + servers + site[upstream.end(2) :]
        (self.prefix / "site.conf").write_text(site)
        self.conf.write_text(
            f"""
daemon off;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    client_body_temp_path {self.prefix}/body;
    proxy_temp_path {self.prefix}/proxy;
    fastcgi_temp_path {self.prefix}/fastcgi;
    uwsgi_temp_path {self.prefix}/uwsgi;
    scgi_temp_path {self.prefix}/scgi;
    include {LOG_CONF};
    include {self.prefix}/site.conf;
}}
"""
        )

    def command(self, *extra: str) -> list[str]:
        return [
            NGINX,
            "-p",
            str(self.prefix),
            "-e",
            f"{self.prefix}/error.log",
            "-c",
            str(self.conf),
            *extra,
        ]


@needs_nginx
def test_nginx_accepts_the_shipped_site_configuration(tmp_path: Path) -> None:
    """`nginx -t` on deploy/nginx/visio-permanence.conf with its log format, as installed."""
    nginx = Nginx(tmp_path, [free_port(), free_port(), free_port()])
    nginx.write()
    result = subprocess.run(nginx.command("-t"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_nginx_serves_exactly_the_vendored_files_of_the_app() -> None:
    """The /static/vendor/ locations alias the same npm files as server/web/routes.py."""
    aliases = dict(
        re.findall(r"location = /static/vendor/(\S+) \{\s*alias (\S+);", SITE_CONF.read_text())
    )
    expected = {
        name: f"{CHECKOUT}/web/{path.relative_to(WEB_DIR)}" for name, path in VENDORED.items()
    }
    assert aliases == expected


@dataclass
class Node:
    """A stand-in for one server node: answers with its port, records what reached it."""

    port: int
    paths: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path_qs)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str(str(self.port))
            await ws.close()
            return ws
        return web.Response(text=str(self.port))


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    """Two nodes on free ports, as two `visio-permanence@PORT` instances would be."""
    started: list[TestServer] = []
    found = []
    for _ in range(2):
        node = Node(free_port())
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", node.handle)
        server = TestServer(app, host="127.0.0.1", port=node.port)
        await server.start_server()
        started.append(server)
        found.append(node)
    try:
        yield found
    finally:
        for server in started:
            await server.close()


@pytest.fixture
async def proxy(tmp_path: Path, nodes: list[Node]) -> AsyncIterator[Nginx]:
    """A real nginx with the shipped site configuration in front of the nodes."""
    nginx = Nginx(tmp_path, [node.port for node in nodes])
    nginx.write()
    process = await asyncio.create_subprocess_exec(*nginx.command())
    try:
        async with aiohttp.ClientSession() as http:
            for _attempt in range(200):
                try:
                    async with http.get(f"{nginx.base_url}/static/favicon.svg", ssl=False) as resp:
                        await resp.read()
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        yield nginx
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def _node_of(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url, ssl=False) as resp:
        assert resp.status == 200, await resp.text()
        return int(await resp.text())


@needs_nginx
async def test_requests_without_an_engineio_session_are_spread_over_the_nodes(
    proxy: Nginx, nodes: list[Node]
) -> None:
    """Pages and Socket.IO handshakes (no ?sid= yet) go round robin: an empty hash key."""
    async with aiohttp.ClientSession() as http:
        pages = {await _node_of(http, f"{proxy.base_url}/rendez-vous") for _ in range(6)}
        handshakes = {
            await _node_of(http, f"{proxy.base_url}/socket.io/?EIO=4&transport=polling")
            for _ in range(6)
        }
    assert pages == handshakes == {node.port for node in nodes}


@needs_nginx
async def test_each_engineio_session_stays_on_one_node_through_polling_and_upgrade(
    proxy: Nginx, nodes: list[Node]
) -> None:
    """Every request of one session (?sid=), polling or the WebSocket upgrade, reaches the node
    that holds it, whatever the client's address; sessions are spread over the nodes."""
    homes = set()
    async with aiohttp.ClientSession() as http:
        for index in range(16):
            sid = f"session{index}-AAAAAAAAAAAAAAAAAAAA"
            query = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
            seen = {await _node_of(http, f"{proxy.base_url}{query}&t={n}") for n in range(4)}
            assert len(seen) == 1, f"{sid} reached {seen}"
            home = seen.pop()
            upgrade = (
                f"wss://127.0.0.1:{proxy.https_port}/socket.io/?EIO=4&transport=websocket&sid={sid}"
            )
            async with http.ws_connect(upgrade, ssl=False) as ws:
                assert int(await ws.receive_str()) == home, f"{sid} upgraded on another node"
            homes.add(home)
    assert homes == {node.port for node in nodes}


# Headers that describe the transfer or the file, not the app's policy.
TRANSFER_HEADERS = {
    "date",
    "server",
    "content-length",
    "etag",
    "last-modified",
    "accept-ranges",
    "connection",
    "keep-alive",
    "x-request-id",  # which request of the app answered: no request reaches it here
    "transfer-encoding",
    "content-encoding",
    "vary",
}


def _policy(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers a browser applies, with the charset parameter set aside."""
    kept = {k.lower(): v for k, v in headers.items() if k.lower() not in TRANSFER_HEADERS}
    kept["content-type"] = kept["content-type"].split(";")[0]
    return kept


@needs_nginx
async def test_nginx_serves_static_files_from_the_checkout_with_the_apps_headers(
    proxy: Nginx, nodes: list[Node], running: Running
) -> None:
    """/static/ (our files and the vendored npm files) never reaches a node, and carries the
    same headers as when the app serves it, plus HSTS (the site is https)."""
    async with aiohttp.ClientSession() as http:
        versioned = f"js/rtc.js?v={Assets().version('js/rtc.js')}"
        for path, file in (
            ("css/base.css", WEB_DIR / "static" / "css" / "base.css"),
            ("vendor/socket.io.esm.min.js", VENDORED["socket.io.esm.min.js"]),
            (versioned, WEB_DIR / "static" / "js" / "rtc.js"),
        ):
            async with http.get(f"{proxy.base_url}/static/{path}", ssl=False) as resp:
                assert resp.status == 200
                assert await resp.read() == file.read_bytes()
                through_nginx = _policy(resp.headers)
            async with http.get(running.url(f"/static/{path}")) as resp:
                assert resp.status == 200
                from_app = _policy(resp.headers)
            assert through_nginx.pop("strict-transport-security").startswith("max-age=")
            if ".js" in path:  # both are valid for modules (nginx's mime.types differs)
                assert through_nginx.pop("content-type") in {
                    "application/javascript",
                    "text/javascript",
                }
                from_app.pop("content-type")
            assert through_nginx == from_app
        assert through_nginx["content-security-policy"] == CSP
        async with http.get(f"{proxy.base_url}/static/vendor/unknown.js", ssl=False) as resp:
            assert resp.status == 404
    assert not [path for node in nodes for path in node.paths if path.startswith("/static/")]


# -- systemd ------------------------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_node_unit_for_an_instance(tmp_path: Path) -> None:
    """`systemd-analyze verify visio-permanence@8081.service`: no unknown key, no bad value,
    an executable ExecStart (the checkout's own venv stands in for /opt/visio-permanence)."""
    assert SYSTEMD_ANALYZE is not None
    unit = NODE_UNIT.read_text()
    assert "serve --host 127.0.0.1 --port %i" in unit
    unit = _replace(unit, f"ExecStart={CHECKOUT}/", f"ExecStart={ROOT}/", 1)
    unit = _replace(
        unit, "EnvironmentFile=/etc/visio-permanence/env", f"EnvironmentFile={tmp_path}/env", 1
    )
    (tmp_path / "env").write_text("")
    (tmp_path / NODE_UNIT.name).write_text(unit)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(tmp_path / "visio-permanence@8081.service")],
        capture_output=True,
        text=True,
    )
    complaints = [line for line in result.stderr.splitlines() if "visio-permanence" in line]
    assert result.returncode == 0 and not complaints, result.stderr


def test_node_unit_keeps_the_hardening_the_memory_setting_and_a_shared_cache() -> None:
    """What the recipe relies on: MALLOC_ARENA_MAX=2 (BENCHMARKS.md), enough descriptors, the
    geography index cached where geo.py looks ($XDG_CACHE_HOME/visio-permanence)."""
    unit = NODE_UNIT.read_text()
    for line in (
        "Environment=MALLOC_ARENA_MAX=2",
        "LimitNOFILE=65536",
        "CacheDirectory=visio-permanence",
        "Environment=XDG_CACHE_HOME=/var/cache",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "User=permanence",
    ):
        assert f"\n{line}\n" in unit, line
    writable = re.search(r"^ReadWritePaths=(.*)$", unit, re.M)
    assert writable and "/var/cache/visio-permanence" in writable.group(1).split()


# -- Settings -----------------------------------------------------------------------------------


def _example_lines() -> tuple[dict[str, str], set[str]]:
    """(variables set, variables shown commented out) in deploy/env.example."""
    active, commented = {}, set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := re.fullmatch(rf"{PREFIX}(\w+)=(.*)", line):
            active[match[1]] = match[2]
        elif match := re.fullmatch(rf"#{PREFIX}(\w+)=.*", line):
            commented.add(match[1])
    return active, commented


def test_env_example_names_every_setting_and_sets_what_the_recipe_needs() -> None:
    """Every field of Settings is in deploy/env.example; the recipe's own ones are set."""
    active, commented = _example_lines()
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - active.keys() - commented == set(), "add these to deploy/env.example"
    assert active.keys() - fields == set() and commented - fields == set(), "unknown settings"
    assert RECIPE_SETTINGS - active.keys() == set(), "set these in deploy/env.example"
    assert active["EMAIL_BACKEND"] == "smtp" and active["SMS_BACKEND"] == "brevo"
    assert active["REDIS_URL"].startswith("redis://127.0.0.1:")
    assert active["DATABASE_URL"].startswith("postgresql+asyncpg://")


def test_env_example_filled_in_loads_and_sends_real_notifications(tmp_path: Path) -> None:
    """With its blanks (secrets) filled in, the file is valid and has no notification problem."""
    active, _commented = _example_lines()
    environ = {PREFIX + name: value or "x" * 48 for name, value in active.items()}
    environ[PREFIX + "DATA_DIR"] = str(tmp_path)
    settings = load_settings(environ)
    assert settings.secure_cookies
    assert settings.notification_backend_problems() == []


@pytest.mark.parametrize(
    ("base_url", "email", "sms", "problems"),
    [
        (
            "https://permanence.example.org",
            "file",
            "file",
            ["EMAIL_BACKEND=file", "SMS_BACKEND=file"],
        ),
        ("https://permanence.example.org", "console", "brevo", ["EMAIL_BACKEND=console"]),
        ("https://permanence.example.org", "smtp", "console", ["SMS_BACKEND=console"]),
        ("https://permanence.example.org", "smtp", "brevo", []),
        ("http://127.0.0.1:8080", "file", "console", []),
    ],
)
def test_serve_warns_when_a_public_site_would_not_send_notifications(
    base_url: str,
    email: str,
    sms: str,
    problems: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`permanence serve` logs one WARNING per backend that keeps messages on the machine when
    BASE_URL is https, and none on http (development) or with real backends."""
    for name, value in {
        "BASE_URL": base_url,
        "SECRET_KEY": "k" * 48,
        "DATA_DIR": str(tmp_path),
        "EMAIL_BACKEND": email,
        "SMTP_HOST": "smtp.example.org",
        "SMS_BACKEND": sms,
        "SMS_API_KEY": "brevo-key",
    }.items():
        monkeypatch.setenv(PREFIX + name, value)
    served = []
    monkeypatch.setattr(cli.web, "run_app", lambda app, **options: served.append(options))
    caplog.set_level(logging.INFO)
    cli.main(["serve", "--port", "8081"])
    assert served and served[0]["port"] == 8081
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(problems), warnings
    for warning, problem in zip(warnings, problems, strict=True):
        assert problem in warning and "Notifications will not reach" in warning
