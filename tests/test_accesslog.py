"""Secrets in URLs never reach a log: every route of the real app is requested through a real
server with the production access logger, and the captured log lines are searched for the
secrets sent. The nginx log format shipped in deploy/nginx/ is generated from the same route
table and checked here (and run, when nginx is installed)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy.engine import make_url

from server.settings import Settings
from server.web.accesslog import (
    PUBLIC_PARAMETERS,
    REDACTED,
    SECRET_PARAMETERS,
    RedactingAccessLogger,
    Redactor,
    nginx_log_config,
    path_parameters,
)
from server.web.app import create_app
from tests.conftest import browser_session, csrf_from, free_port

NGINX_LOG_CONF = Path(__file__).parents[1] / "deploy" / "nginx" / "visio-permanence-log.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# Values a public (non-secret) parameter may take; the first its route accepts is used.
PUBLIC_SAMPLES = ("7", str(uuid.UUID(int=0x1234)))


@pytest.fixture
def backend() -> str:
    """Logging does not depend on the database: SQLite only (its file is broken on purpose)."""
    return "sqlite"


@dataclass
class Logged:
    """The app served with the production access logger, and what it logs."""

    app: web.Application
    base_url: str
    caplog: pytest.LogCaptureFixture
    settings: Settings

    def text(self) -> str:
        """Every captured record, message and traceback, as written by a formatter."""
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(formatter.format(record) for record in self.caplog.records)


@pytest.fixture
async def logged(settings: Settings, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Logged]:
    """The real app, run as ``permanence serve`` runs it (RedactingAccessLogger), logs captured
    from INFO up."""
    caplog.set_level(logging.INFO)
    app = create_app(settings)
    port = int(settings.base_url.rsplit(":", 1)[1])
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server(access_log_class=RedactingAccessLogger)
    try:
        yield Logged(app, settings.base_url, caplog, settings)
    finally:
        await server.close()


@dataclass(frozen=True)
class Probe:
    """One request: method, target sent, and the target the log must show instead."""

    method: str
    target: str
    logged: str
    secrets: tuple[str, ...]


def route_probes(app: web.Application) -> Iterator[Probe]:
    """A request for every method of every route with a parameter: secrets filled with unique
    random values, ids with values their route accepts, and a query string with a code."""
    for resource in app.router.resources():
        if not isinstance(resource, web.DynamicResource):
            continue
        info = resource.get_info()
        formatter: str = info["formatter"]
        names = re.findall(r"\{(\w+)\}", formatter)
        hidden = {
            name: "S3CR3T" + secrets.token_hex(10) for name in names if name in SECRET_PARAMETERS
        }
        public = [name for name in names if name not in SECRET_PARAMETERS]
        for values in itertools.product(PUBLIC_SAMPLES, repeat=len(public)):
            shown = dict(zip(public, values, strict=True))
            path = formatter.format_map({**hidden, **shown})
            if info["pattern"].fullmatch(path):
                break
        else:
            raise AssertionError(f"no sample value fits {formatter}: add one to PUBLIC_SAMPLES")
        code = f"{secrets.randbelow(10**9):09d}"
        logged = formatter.format_map({**dict.fromkeys(hidden, REDACTED), **shown})
        for route in resource:
            yield Probe(
                route.method, f"{path}?c={code}", f"{logged}?{REDACTED}", (*hidden.values(), code)
            )


def secret_probes(app: web.Application) -> list[Probe]:
    """Requests the router refuses on secret routes: a longer path (404), another method
    (405)."""
    probes = []
    for probe in route_probes(app):
        if len(probe.secrets) < 2 or probe.method != "GET":
            continue
        path, _sep, _query = probe.target.partition("?")
        logged_path = probe.logged.partition("?")[0]
        probes.append(Probe("GET", f"{path}/plus/loin", f"{logged_path}/plus/loin", probe.secrets))
        probes.append(Probe("PATCH", path, logged_path, probe.secrets))
    return probes


def assert_no_secret(logged: Logged, probes: list[Probe]) -> None:
    """No log record (message or traceback) holds any secret of any probe."""
    text = logged.text()
    for probe in probes:
        for secret in probe.secrets:
            assert secret not in text, f"{probe.method} {probe.target}: {secret} was logged"


# -- The registry of parameters -----------------------------------------------------------------


def test_every_path_parameter_of_the_app_is_classified_secret_or_public(settings: Settings) -> None:
    """A new route parameter must be declared in server/web/accesslog.py: a secret, or an id
    that may be logged. (Until then it is redacted anyway.)"""
    names = path_parameters(create_app(settings).router)
    unknown = names - SECRET_PARAMETERS.keys() - PUBLIC_PARAMETERS.keys()
    assert not unknown, f"classify these route parameters in server/web/accesslog.py: {unknown}"
    assert "token" in names


async def _page(_request: web.Request) -> web.Response:
    return web.Response()


def test_an_unknown_parameter_is_treated_as_a_secret() -> None:
    router = web.UrlDispatcher()
    router.add_get("/nouveau/{cle_inconnue}/suite", _page)
    router.add_get("/rendez-vous/motif/{motif_id}", _page)
    redactor = Redactor.of(router)
    assert redactor.path("/nouveau/abc/suite") == f"/nouveau/{REDACTED}/suite"
    assert redactor.path("/rendez-vous/motif/3?x=1") == f"/rendez-vous/motif/3?{REDACTED}"


# -- The access log -----------------------------------------------------------------------------


async def test_no_request_to_any_route_logs_a_secret_or_a_query_string(logged: Logged) -> None:
    probes = list(route_probes(logged.app)) + secret_probes(logged.app)
    secret_paths = {p.logged.partition("?")[0] for p in probes if len(p.secrets) > 1}
    assert {f"/j/{REDACTED}", f"/fiche/{REDACTED}", f"/rappel/annuler/{REDACTED}"} < secret_paths
    async with aiohttp.ClientSession() as http:
        for probe in probes:
            async with http.request(
                probe.method, logged.base_url + probe.target, allow_redirects=False
            ) as resp:
                await resp.read()
    text = logged.text()
    for probe in probes:
        assert f'"{probe.method} {probe.logged}" ' in text, f"no access line for {probe}"
    assert_no_secret(logged, probes)


async def test_ids_that_are_not_secrets_stay_in_the_access_log(logged: Logged) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(logged.base_url + "/rendez-vous/motif/4242") as resp,
    ):
        await resp.read()
    assert '"GET /rendez-vous/motif/4242" 404' in logged.text()


async def test_an_absolute_form_target_and_an_unparsable_request_log_no_secret(
    logged: Logged,
) -> None:
    secret = "S3CR3T" + secrets.token_hex(12)
    host = logged.base_url.removeprefix("http://")
    requests = [
        # The absolute form is routed like the path alone (RFC 9112 §3.2.2).
        f"GET {logged.base_url}/fiche/{secret} HTTP/1.1\r\nHost: {host}\r\n"
        "Connection: close\r\n\r\n",
        # A request line aiohttp refuses: it logs the error quoting the raw line.
        f"GET /j/{secret}?c={secret} HTTP/1.1 x\r\nHost: {host}\r\n\r\n",
        f"GET /fiche/{secret}\x01 HTTP/1.1\r\nHost: {host}\r\n\r\n",
    ]
    for raw in requests:
        reader, writer = await asyncio.open_connection(*host.split(":"))
        writer.write(raw.encode())
        await writer.drain()
        await reader.read()
        writer.close()
        await writer.wait_closed()
    text = logged.text()
    assert f'"GET {logged.base_url}/fiche/{REDACTED}" ' in text
    assert text.count("Error handling request") == 2  # aiohttp did log the refused requests
    assert f"b'GET /j/{REDACTED}?{REDACTED} HTTP/1.1 x'" in text
    assert secret not in text


# -- The error log ------------------------------------------------------------------------------


def _drop_every_table(database: str) -> None:
    """Break the database under the running app: every table is dropped."""
    with sqlite3.connect(database, timeout=60) as db:
        tables = [
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        db.execute("PRAGMA foreign_keys = OFF")
        for table in tables:
            db.execute(f'DROP TABLE "{table}"')


async def test_a_server_error_on_a_secret_route_logs_its_traceback_without_the_secret(
    logged: Logged,
) -> None:
    """The database breaks under the app (its tables are gone): every secret route fails with
    a 5xx, the traceback is logged, the secret is not."""
    probes = [p for p in route_probes(logged.app) if len(p.secrets) > 1 and p.method != "HEAD"]
    http = await browser_session()
    async with http:
        async with http.get(logged.base_url + "/login") as resp:
            token = csrf_from(await resp.text())
        database = make_url(logged.settings.database_url).database
        assert database
        # In a thread: the app runs on this event loop, and its connections (worker, sweeps)
        # must be able to finish the transaction they may hold while the tables are dropped.
        await asyncio.to_thread(_drop_every_table, database)
        for probe in probes:
            async with http.request(
                probe.method,
                logged.base_url + probe.target,
                data={"csrf_token": token},
                # The vault's routes look their vault up only with a capability of its shape.
                headers={"Authorization": "Vault " + "A" * 43},
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if probe.method == "GET":  # a POST may refuse its form before the lookup
                    assert resp.status >= 500, f"{probe}: {resp.status}"
    errors = [r for r in logged.caplog.records if r.levelno >= logging.ERROR]
    assert errors, "the failures were not logged"
    assert "no such table" in logged.text()  # the traceback itself was logged
    assert f"unhandled error on GET /fiche/{REDACTED}?{REDACTED}" in logged.text()
    assert_no_secret(logged, probes)


# -- nginx --------------------------------------------------------------------------------------


def test_the_shipped_nginx_log_format_redacts_every_secret_route_of_the_app(
    settings: Settings,
) -> None:
    expected = nginx_log_config(create_app(settings).router)
    assert NGINX_LOG_CONF.read_text() == expected, (
        f"{NGINX_LOG_CONF} is out of date with the route table; replace its content with:\n\n"
        + expected
    )


@pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is not installed (apt install nginx)")
async def test_nginx_logs_no_secret_with_the_shipped_log_format(
    logged: Logged, tmp_path: Path
) -> None:
    """A real nginx proxies every route to the app and logs with deploy/nginx's format."""
    port = free_port()
    access = tmp_path / "access.log"
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log crit;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {NGINX_LOG_CONF};
    server {{
        listen 127.0.0.1:{port};
        access_log {access} visio_permanence;
        location / {{ proxy_pass {logged.base_url}; }}
    }}
}}
"""
    )
    nginx = await asyncio.create_subprocess_exec(NGINX, "-p", str(tmp_path), "-c", str(conf))
    probes = list(route_probes(logged.app)) + secret_probes(logged.app)
    try:
        async with aiohttp.ClientSession() as http:
            for _attempt in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        await resp.read()
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            for probe in probes:
                async with http.request(
                    probe.method, f"http://127.0.0.1:{port}{probe.target}", allow_redirects=False
                ) as resp:
                    await resp.read()
    finally:
        nginx.terminate()
        await asyncio.wait_for(nginx.wait(), 10)
    lines = access.read_text()
    for probe in probes:
        assert f'"{probe.method} {probe.logged} HTTP/1.1"' in lines, f"no nginx line for {probe}"
        for secret in probe.secrets:
            assert secret not in lines
