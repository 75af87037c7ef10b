"""Every page a helped person meets is written in each of our languages, with nothing left in
French: no message of the French catalogue shows through untranslated."""

from __future__ import annotations

import html
import re

import aiohttp
import pytest
from babel.messages.pofile import read_po

from server import i18n
from tests.conftest import Running, browser_session
from tests.language_pages import beneficiary_pages
from tests.test_i18n_catalogues import LOCALE, TRANSLATED

# French messages long enough to be recognised in a page, and without placeholders (a filled-in
# message no longer reads as its msgid).
with (LOCALE / "messages.pot").open("rb") as _pot:
    _CATALOGUE = read_po(_pot)
_FRENCH = sorted(
    {
        str(message.id)
        for message in _CATALOGUE
        if isinstance(message.id, str)
        and len(message.id) >= 18
        and "%" not in message.id
        and "{" not in message.id
    }
)
_TAGS = re.compile(r"<[^>]+>")


def _text(page: str) -> str:
    """A page's text and attribute values as a person or a screen reader meets them."""
    attributes = " ".join(re.findall(r'(?:aria-label|title|placeholder|alt|value)="([^"]*)"', page))
    return html.unescape(_TAGS.sub(" ", page) + " " + attributes)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_every_beneficiary_page_is_written_in_each_language(running: Running) -> None:
    pages = await beneficiary_pages(running)
    paths = {**pages.paths, "room": pages.join_link.removeprefix(running.base_url)}
    for language in TRANSLATED:
        with i18n.use_language(language):
            # A message translated into itself (a name, "SMS") is not a leak.
            untouched = [m for m in _FRENCH if i18n.gettext(m) == m]
        http = await browser_session()
        try:
            async with http.get(running.url(f"/langue/{language.code}")):
                pass
            for name, path in paths.items():
                async with http.get(running.url(path)) as resp:
                    page = await resp.text()
                    assert resp.status in (200, 404), (language.code, name, resp.status)
                    assert resp.headers["Content-Language"] == language.code, name
                assert f'<html lang="{language.code}" dir="{language.dir}">' in page, name
                if name == "room":  # the switch comes back to /b, never to the secret link
                    switch = re.findall(r'href="(/langue/[^"]+)"', page)
                    assert switch and all(href.endswith("?next=/b") for href in switch), switch
                text = _text(page)
                leaks = [message for message in untouched if message in text]
                assert not leaks, f"{language.code} {name}: French left in the page: {leaks[:3]}"
        finally:
            await http.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_dates_words_follow_the_page_language(
    running: Running, http: aiohttp.ClientSession
) -> None:
    pages = await beneficiary_pages(running)
    async with http.get(running.url("/langue/uk")):
        pass
    async with http.get(running.url(pages.paths["booking-manage"])) as resp:
        page = await resp.text()
    months = ("січня", "лютого", "березня", "квітня", "травня", "червня", "липня", "серпня",
              "вересня", "жовтня", "листопада", "грудня")  # fmt: skip
    assert any(month in page for month in months), page[:2000]
