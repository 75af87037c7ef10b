"""The language of a helped person's pages: chosen from the browser, then by the switch, kept
in a cookie; staff pages stay French."""

from __future__ import annotations

import re

import aiohttp
import pytest

from server import i18n
from server.store.models import Role
from tests.conftest import Account, Running, login, make_account


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "fr"),
        ("", "fr"),
        ("ar", "ar"),
        ("en-GB,en;q=0.9,fr;q=0.8", "en"),
        ("de-DE,de;q=0.9,uk;q=0.5,fr;q=0.4", "uk"),
        ("fa-IR", "fa-AF"),
        ("prs", "fa-AF"),
        ("fa-AF;q=0.2, es;q=0.3", "es"),
        ("fr;q=0, ro", "ro"),
        ("en;q=0", "fr"),
        ("*", "fr"),
        ("xx-YY, zz", "fr"),
        ("en;q=abc, es", "es"),
        ("ar;q=0.5;x=y", "ar"),
        (",,,;;;=", "fr"),
        ("a" * 5000, "fr"),
        ("de," * 100 + "en", "fr"),  # cut after 20 entries: a hostile header is not parsed whole
    ],
)
def test_accept_language_picks_our_best_language(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header).code == expected


def test_every_language_has_its_catalogue_name_and_direction() -> None:
    assert [language.code for language in i18n.LANGUAGES] == [
        "fr", "en", "ar", "fa-AF", "uk", "ro", "es"
    ]  # fmt: skip
    assert {language.code for language in i18n.LANGUAGES if language.rtl} == {"ar", "fa-AF"}
    assert i18n.language("FA_af") is i18n.BY_CODE["fa-AF"]
    assert i18n.language("de") is None
    assert i18n.stored_language(None) is i18n.FRENCH


def test_a_message_is_written_in_the_language_of_its_block() -> None:
    with i18n.use_language("en"):
        assert i18n.gettext("Langue") == "Language"
        with i18n.use_language("ar"):
            assert i18n.gettext("Langue") == "اللغة"
        assert i18n.current().code == "en"
    assert i18n.gettext("Langue") == "Langue"


def _html_lang(html: str) -> tuple[str, str]:
    match = re.search(r'<html lang="([^"]+)" dir="(ltr|rtl)">', html)
    assert match, html[:300]
    return match.group(1), match.group(2)


async def test_a_first_visit_follows_the_browser_and_the_switch_keeps_the_choice(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/"), headers={"Accept-Language": "ar,fr;q=0.5"}) as resp:
        html = await resp.text()
        assert resp.headers["Content-Language"] == "ar"
        assert "Accept-Language" in resp.headers["Vary"]
    assert _html_lang(html) == ("ar", "rtl")
    # The switch: every language named in itself, a link back to this page.
    for language in i18n.LANGUAGES:
        assert f'lang="{language.code}" hreflang="{language.code}"' in html
        assert f">{language.name}</a>" in html
    assert 'href="/langue/uk?next=/"' in html

    async with http.get(
        running.url("/langue/uk"), params={"next": "/aide"}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/aide"
        assert "Max-Age=31536000" in resp.headers["Set-Cookie"]
    # The cookie wins over the browser's preference, page after page.
    await make_account(running, "v@example.org", Role.VOLUNTEER)  # the association exists
    for path in ("/aide", "/code", "/rendez-vous", "/rappel", "/coffre"):
        async with http.get(running.url(path), headers={"Accept-Language": "ar"}) as resp:
            assert resp.status == 200, path
            assert _html_lang(await resp.text()) == ("uk", "ltr"), path


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "aide", "/a\r\nX: y"]
)
async def test_the_switch_never_leaves_the_site(
    running: Running, http: aiohttp.ClientSession, target: str
) -> None:
    async with http.get(
        running.url("/langue/es"), params={"next": target}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/"


async def test_an_unknown_language_is_a_plain_not_found(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/langue/xx"), allow_redirects=False) as resp:
        assert resp.status == 404
        assert "Set-Cookie" not in resp.headers or "lang=" not in resp.headers["Set-Cookie"]


async def test_staff_pages_stay_french_whatever_the_browser_says(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    async with http.get(running.url("/langue/ar"), allow_redirects=False):
        pass
    for path in ("/tableau", "/file", "/login"):
        async with http.get(running.url(path), headers={"Accept-Language": "ar"}) as resp:
            html = await resp.text()
            assert _html_lang(html) == ("fr", "ltr"), path
            assert "Content-Language" not in resp.headers
            assert 'class="lang-switch"' not in html


async def test_an_unknown_address_answers_in_the_persons_language(
    running: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(running.url("/nowhere"), headers={"Accept-Language": "en"}) as resp:
        assert resp.status == 404
        assert _html_lang(await resp.text()) == ("en", "ltr")
