"""URLs come from route names: the links the domain sends in messages are routed exactly as
declared, and ids are constrained in the route patterns."""

from __future__ import annotations

import aiohttp
import pytest

from server import links
from tests.conftest import Running, login, make_account


async def test_every_public_link_is_the_route_of_its_name(running: Running) -> None:
    router = running.app.router
    for link in links.ALL:
        parts = {piece.split("}")[0]: "42" for piece in link.path.split("{")[1:]}
        assert link.name in router, f"{link.name} is not routed"
        assert str(router[link.name].url_for(**parts)) == link.path.format(**parts), link
        expected = running.settings.url(link.path.format(**parts))
        assert link.url(running.settings, **parts) == expected


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_malformed_ids_never_reach_a_view(
    running: Running, http: aiohttp.ClientSession
) -> None:
    account = await make_account(running, "camille@example.org")
    await login(http, running, account)
    for path in (
        "/assistance/not-a-uuid",
        "/assistance/" + "a" * 300,
        "/rappels/123",
        "/fiches/x",
        "/benevoles/12345678901/desactiver",
    ):
        async with http.post(running.url(path), allow_redirects=False) as resp:
            assert resp.status == 404, path
            assert "Cette page n&#39;existe pas" in await resp.text()
