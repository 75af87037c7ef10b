"""CSRF tokens masked per response (BREACH), the CSRF seed rotated at login, and the
``__Host-`` cookie names under https, for every reader: pages, API and both socket
namespaces. Real server, real database, real Socket.IO clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from server.db import make_sessionmaker
from server.passes import BENEFICIARY_COOKIE, CSRF_COOKIE, LOGIN_COOKIE
from server.settings import Settings
from server.store.engine import make_engine
from server.web.app import create_app
from tests.conftest import (
    PASSWORD,
    Account,
    Running,
    csrf_from,
    login,
    make_account,
)
from tests.peers import PeerSet, Refused, connect_peer, join_token


async def page_token(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    """The CSRF token of a page's first form, and its Content-Encoding."""
    async with http.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.status == 200
        return csrf_from(await resp.text()), resp.headers.get("Content-Encoding", "")


# -- BREACH: a different token string in every response ---------------------------------------


async def test_each_page_carries_a_differently_masked_token_and_each_one_works(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    tokens = []
    for _ in range(3):
        token, encoding = await page_token(http, running.url("/login"))
        assert encoding == "gzip"  # still compressed for 3G
        tokens.append(token)
    assert len(set(tokens)) == 3, "the same CSRF string in every gzipped page (BREACH)"
    for token in tokens:  # each masked copy unmasks to this browser's token
        async with http.post(
            running.url("/login"),
            data={"csrf_token": token, "email": volunteer.email, "password": "wrong"},
        ) as resp:
            assert resp.status == 401  # past the CSRF check, refused on the password
    async with http.post(
        running.url("/login"), data={"csrf_token": tokens[0][:-2] + "AA", "email": "x"}
    ) as resp:
        assert resp.status == 403


async def test_the_csrf_header_used_by_scripts_takes_a_masked_token(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    token, _encoding = await page_token(http, running.url("/tableau"))
    async with http.post(
        running.url("/logout"), headers={"X-CSRF-Token": token}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
    async with http.get(running.url("/tableau"), allow_redirects=False) as resp:
        assert resp.status == 303  # logged out: back to the login page


# -- Rotation at login --------------------------------------------------------------------------


async def test_logging_in_rotates_the_csrf_seed_so_older_tokens_stop_working(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    before, _encoding = await page_token(http, running.url("/login"))
    seed_before = http.cookie_jar.filter_cookies(URL(running.base_url))[CSRF_COOKIE].value
    async with http.post(
        running.url("/login"),
        data={"csrf_token": before, "email": volunteer.email, "password": PASSWORD},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        assert CSRF_COOKIE in resp.cookies, "login must set a new CSRF cookie"
    seed_after = http.cookie_jar.filter_cookies(URL(running.base_url))[CSRF_COOKIE].value
    assert seed_after != seed_before
    async with http.post(
        running.url("/logout"), data={"csrf_token": before}, allow_redirects=False
    ) as resp:
        assert resp.status == 403  # a token from before the login is worthless
    after, _encoding = await page_token(http, running.url("/tableau"))
    async with http.post(
        running.url("/logout"), data={"csrf_token": after}, allow_redirects=False
    ) as resp:
        assert resp.status == 303


# -- __Host- cookies under https ------------------------------------------------------------------


@pytest.fixture
async def https_site(settings: Settings) -> AsyncIterator[Running]:
    """The real app with an https BASE_URL (as behind nginx), served here over plain http."""
    port = int(settings.base_url.rsplit(":", 1)[1])
    secure = settings.model_copy(update={"base_url": f"https://127.0.0.1:{port}"})
    assert secure.secure_cookies
    app = create_app(secure)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    engine = make_engine(secure.database_url)
    try:
        yield Running(
            app, server, f"http://127.0.0.1:{port}", make_sessionmaker(engine, secure), secure
        )
    finally:
        await engine.dispose()
        await server.close()


def set_cookies(resp: aiohttp.ClientResponse) -> SimpleCookie:
    """Every Set-Cookie of a response."""
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


def assert_host_cookie(jar: SimpleCookie, name: str) -> str:
    """``__Host-<name>`` was set as the prefix requires (Secure, Path=/, no Domain)."""
    assert name not in jar, f"{name} set without the __Host- prefix"
    morsel = jar["__Host-" + name]
    assert morsel["secure"] and morsel["path"] == "/" and not morsel["domain"]
    assert morsel["httponly"]
    return morsel.value


async def test_under_https_every_cookie_is_a_host_cookie_and_every_reader_reads_it(
    https_site: Running,
) -> None:
    site = https_site
    account = await make_account(site, "camille@example.org")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        # CSRF seed, then login: both __Host- cookies; the form reads the prefixed seed.
        async with http.get(site.url("/login")) as resp:
            seed = assert_host_cookie(set_cookies(resp), CSRF_COOKIE)
            token = csrf_from(await resp.text())
        async with http.post(
            site.url("/login"),
            data={"csrf_token": token, "email": account.email, "password": PASSWORD},
            headers={"Cookie": f"__Host-{CSRF_COOKIE}={seed}"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303, await resp.text()
            jar = set_cookies(resp)
            session = assert_host_cookie(jar, LOGIN_COOKIE)
            seed = assert_host_cookie(jar, CSRF_COOKIE)
        logged_in = f"__Host-{LOGIN_COOKIE}={session}; __Host-{CSRF_COOKIE}={seed}"
        async with http.get(site.url("/tableau"), headers={"Cookie": logged_in}) as resp:
            assert resp.status == 200  # the pages read the prefixed login cookie
            token = csrf_from(await resp.text())
        # A bare-named cookie (planted by a sibling subdomain or over http) is not read.
        async with http.get(
            site.url("/tableau"),
            headers={"Cookie": f"{LOGIN_COOKIE}={session}"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        # Both socket namespaces read the prefixed login cookie.
        async with http.post(
            site.url("/assistance"),
            data={"csrf_token": token},
            headers={"Cookie": logged_in},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
            session_id = resp.headers["Location"].rsplit("/", 1)[1]
        async with PeerSet() as peers:
            volunteer = peers.add(
                await connect_peer(
                    site, auth={"session_id": session_id}, cookie=f"__Host-{LOGIN_COOKIE}={session}"
                )
            )
            assert volunteer.welcome["role"] == "volunteer"
            queue = peers.add(
                await connect_peer(
                    site,
                    cookie=f"__Host-{LOGIN_COOKIE}={session}",
                    namespace="/queue",
                    welcome=False,
                )
            )
            assert queue.client.connected
            with pytest.raises(Refused):
                peers.add(
                    await connect_peer(
                        site, auth={"session_id": session_id}, cookie=f"{LOGIN_COOKIE}={session}"
                    )
                )
            # The beneficiary's pass: set by the join link, read by /b and by /assist.
            async with http.get(
                site.url(f"/j/{await join_token(site, session_id)}"), allow_redirects=False
            ) as resp:
                assert resp.status == 200  # the room itself, with the pass
                beneficiary = assert_host_cookie(set_cookies(resp), BENEFICIARY_COOKIE)
            async with http.get(
                site.url("/b"), headers={"Cookie": f"__Host-{BENEFICIARY_COOKIE}={beneficiary}"}
            ) as resp:
                assert resp.status == 200
            peer = peers.add(
                await connect_peer(site, cookie=f"__Host-{BENEFICIARY_COOKIE}={beneficiary}")
            )
            assert peer.welcome["role"] == "beneficiary"
        # Logging out clears the prefixed cookie (a deletion must be Secure to be accepted).
        async with http.post(
            site.url("/logout"),
            data={"csrf_token": token},
            headers={"Cookie": logged_in},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
            cleared = set_cookies(resp)["__Host-" + LOGIN_COOKIE]
            assert cleared.value == "" and cleared["secure"]


async def test_the_api_document_names_the_host_cookie_under_https(https_site: Running) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(https_site.url("/api/v1/openapi.json")) as resp,
    ):
        document = await resp.json()
    scheme = document["components"]["securitySchemes"]["coordinatorSession"]
    assert scheme["name"] == "__Host-" + LOGIN_COOKIE
