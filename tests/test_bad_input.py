"""Input that used to crash a view (a 500) gets a clear 4xx from the real server: form bodies
that cannot be parsed, on every POST route; Unicode digits such as "²" where a number is read;
timestamps far outside any appointment; API bodies that are not UTF-8 JSON, too deep or with
huge numbers. SQLite and PostgreSQL."""

from __future__ import annotations

import html
import itertools
import json
import uuid
from dataclasses import dataclass
from datetime import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server import api_tokens, availability, motifs
from server.store.models import Role, User
from tests.conftest import Account, Running, browser_session, csrf_from, login, make_account

BOUNDARY = "----vpfuzzboundary"
UNREADABLE = "Ce formulaire n'a pas pu être lu"


@dataclass(frozen=True)
class Body:
    """A raw request body and its Content-Type."""

    name: str
    content_type: str
    data: bytes


def _part(headers: str, value: str) -> bytes:
    return f"--{BOUNDARY}\r\n{headers}\r\n\r\n{value}\r\n".encode()


UNPARSEABLE = [
    Body(
        "unknown charset",
        "application/x-www-form-urlencoded; charset=no-such-charset",
        b"code=123456",
    ),
    Body("not a text codec", "application/x-www-form-urlencoded; charset=rot13", b"code=1"),
    Body("invalid UTF-8", "application/x-www-form-urlencoded", b"code=\xff"),
    Body(
        "multipart without boundary",
        "multipart/form-data",
        _part('Content-Disposition: form-data; name="code"', "123456") + b"--\r\n",
    ),
    Body(
        "multipart field without a name",
        f"multipart/form-data; boundary={BOUNDARY}",
        _part("Content-Disposition: form-data", "123456") + f"--{BOUNDARY}--\r\n".encode(),
    ),
    Body(
        "multipart part in an unknown charset",
        f"multipart/form-data; boundary={BOUNDARY}",
        _part(
            'Content-Disposition: form-data; name="code"\r\n'
            "Content-Type: text/plain; charset=no-such-charset",
            "123456",
        )
        + f"--{BOUNDARY}--\r\n".encode(),
    ),
    Body(
        "multipart part with invalid UTF-8",
        f"multipart/form-data; boundary={BOUNDARY}",
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="code"\r\n\r\n'.encode()
        + b"\xff\xfe\r\n"
        + f"--{BOUNDARY}--\r\n".encode(),
    ),
]
# The public forms the issue names: each must answer the French 400 page.
PUBLIC_FORMS = {
    "/code",
    "/login",
    "/rappel",
    "/aide",
    "/rendez-vous/reserver",
    "/rendez-vous/attente",
    "/rendez-vous/retrouver",
}
PLACEHOLDER_VALUES = ("1", str(uuid.uuid4()), "x" * 43)


def post_paths(app: web.Application) -> list[str]:
    """A concrete path for every POST route of the site (not the API, not Socket.IO)."""
    paths = []
    for route in app.router.routes():
        if route.method != "POST":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        if "path" in info:
            path = str(info["path"])
        else:
            formatter, pattern = str(info["formatter"]), info["pattern"]
            names = [part.split("}")[0] for part in formatter.split("{")[1:]]
            candidates = (
                formatter.format(**dict(zip(names, values, strict=True)))
                for values in itertools.product(PLACEHOLDER_VALUES, repeat=len(names))
            )
            path = next(c for c in candidates if pattern.fullmatch(c))
        # JSON APIs answer JSON errors (the vault's: tests/test_vault_api.py).
        if not path.startswith(("/api/", "/coffre/api/", "/socket.io")):
            paths.append(path)
    return sorted(set(paths))


# Staff routes that the trustee page's script calls with JSON (server/web/views/vault_trustees.py).
JSON_STAFF_ROUTES = ("/coffre/confiance/",)


async def _logged_in(running: Running, account: Account) -> aiohttp.ClientSession:
    http = await browser_session()
    await login(http, running, account)
    return http


async def test_unparseable_form_bodies_get_the_french_400_page_on_every_post_route(
    running: Running, coordinator: Account
) -> None:
    """Each body, sent to each POST route by a visitor, a coordinator and a referrer: never a
    500; the public forms (and every route that reads the body) answer the French 400 page."""
    referrer = await make_account(running, "referente@ccas.example.org", Role.REFERRER)
    paths = post_paths(running.app)
    assert set(paths) >= PUBLIC_FORMS
    clients = {
        "visitor": await browser_session(),
        "coordinator": await _logged_in(running, coordinator),
        "referrer": await _logged_in(running, referrer),
    }
    failures: list[str] = []
    answered_400: dict[str, set[str]] = {who: set() for who in clients}
    try:
        for (who, http), path, body in itertools.product(clients.items(), paths, UNPARSEABLE):
            async with http.post(
                running.url(path),
                data=body.data,
                headers={"Content-Type": body.content_type},
                allow_redirects=False,
            ) as resp:
                page = html.unescape(await resp.text())
                where = f"{who} POST {path} ({body.name}): {resp.status}"
                if resp.status >= 500:
                    failures.append(where)
                elif resp.status == 400 and path.startswith(JSON_STAFF_ROUTES):
                    # The trustee page's script calls these: a French message in JSON.
                    error = json.loads(page).get("error", {}) if "json" in resp.content_type else {}
                    if not error.get("message"):
                        failures.append(where + " without a French JSON error")
                    answered_400[who].add(path)
                elif resp.status == 400:
                    if UNREADABLE not in page or "text/html" not in resp.content_type:
                        failures.append(where + " without the French page")
                    answered_400[who].add(path)
                elif resp.status not in (303, 403, 404):
                    # 303: to the login page; 403: a page of another role; 404: a handoff
                    # sheet of no session, looked up before the form is read.
                    failures.append(where)
        for http in clients.values():
            async with http.get(running.url("/healthz")) as resp:
                assert resp.status == 200
    finally:
        for http in clients.values():
            await http.close()
    assert not failures, "\n".join(failures)
    assert answered_400["visitor"] >= PUBLIC_FORMS
    # The staff's forms too (the coordinator's pages, the referrer's tokens).
    assert {"/motifs", "/disponibilites", "/benevoles", "/profil"} <= answered_400["coordinator"]
    assert "/mes-jetons" in answered_400["referrer"]


# -- Unicode digits, far timestamps ----------------------------------------------------------


@pytest.fixture
async def place(running: Running, volunteer: Account) -> dict[str, Any]:
    """Association A with its default motifs, the volunteer open every day 00:00–23:55."""
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        rows = await motifs.ensure_default_motifs(db, user.association_id)
        for weekday in range(7):
            await availability.add_availability(
                db, user, weekday=weekday, start_time=time(0), end_time=time(23, 55)
            )
    return {"association_id": volunteer.user.association_id, "motif_id": rows[0].id}


SUPERSCRIPT_TWO = "²"  # str.isdigit() is True, int() raises ValueError
NOT_ASCII_DIGITS = [SUPERSCRIPT_TWO, "①", "٣", "１", "3²", " 3", "+3", "3_0"]


async def test_an_association_id_of_unicode_digits_is_not_found_not_a_crash(
    running: Running, http: aiohttp.ClientSession, place: dict[str, Any]
) -> None:
    for page, value in itertools.product(["/rendez-vous", "/aide", "/rappel"], NOT_ASCII_DIGITS):
        async with http.get(running.url(page), params={"a": value}) as resp:
            assert resp.status == 404, (page, value, resp.status)
            assert "Cette association est introuvable" in html.unescape(await resp.text())


async def test_a_motif_of_unicode_digits_in_the_call_back_link_preselects_nothing(
    running: Running, http: aiohttp.ClientSession, place: dict[str, Any]
) -> None:
    async with http.get(running.url("/rappel"), params={"motif": SUPERSCRIPT_TWO}) as resp:
        assert resp.status == 200


IMPOSSIBLE_TIMES = [
    SUPERSCRIPT_TWO,
    "١٧٠٠٠٠٠٠٠٠",  # Arabic-Indic digits: int() reads them, a link never carries them
    "253402300799",  # 9999-12-31T23:59:59Z: time-zone arithmetic overflows
    "4102444801",  # just after 2100
    "946684799",  # just before 2000
    "9" * 5000,
]


async def test_a_booking_form_for_an_impossible_time_asks_for_a_slot(
    running: Running, http: aiohttp.ClientSession, place: dict[str, Any]
) -> None:
    url = running.url(f"/rendez-vous/motif/{place['motif_id']}/reserver")
    # Behind UTC and ahead of it (where year 9999 overflows).
    for t, tz in itertools.product(IMPOSSIBLE_TIMES, ["Pacific/Tahiti", "Pacific/Noumea"]):
        params = {"a": str(place["association_id"]), "t": t, "tz": tz}
        async with http.get(url, params=params) as resp:
            assert resp.status == 400, (t, tz, resp.status)
            assert "Choisissez un horaire dans la liste" in html.unescape(await resp.text())


async def _csrf(http: aiohttp.ClientSession, running: Running, page: str) -> str:
    async with http.get(running.url(page)) as resp:
        assert resp.status == 200, page
        return csrf_from(await resp.text())


@pytest.mark.parametrize("value", [SUPERSCRIPT_TWO, "٣"])
async def test_unicode_digits_in_public_forms_are_refused_in_french(
    running: Running, http: aiohttp.ClientSession, place: dict[str, Any], value: str
) -> None:
    """`t=²`, `motif=²` in the booking, waitlist, call-back and queue forms: 400, never 500."""
    token = await _csrf(http, running, "/code")
    a = str(place["association_id"])
    motif = str(place["motif_id"])
    posts = {
        "/rendez-vous/reserver": {"a": a, "motif": motif, "t": value, "first_name": "Awa"},
        "/rendez-vous/attente": {"a": a, "motif": value, "first_name": "Awa"},
        "/rappel": {"a": a, "motif": value, "phone": "06 12 34 56 78", "windows": "any"},
        "/aide": {"a": a, "motif": value, "first_name": "Awa"},
    }
    for path, data in posts.items():
        async with http.post(
            running.url(path), data={"csrf_token": token, **data}, allow_redirects=False
        ) as resp:
            assert resp.status == 400, (path, resp.status, await resp.text())
            assert "text/html" in resp.content_type


async def test_unicode_digits_in_staff_forms_and_links_are_refused_not_a_crash(
    running: Running, coordinator: Account, place: dict[str, Any]
) -> None:
    http = await _logged_in(running, coordinator)
    try:
        async with http.get(
            running.url("/agenda"), params={"benevole": SUPERSCRIPT_TWO, "jour": "٢٠٢٦-٠١-٠١"}
        ) as resp:
            assert resp.status == 200
        token = await _csrf(http, running, "/motifs")
        form = {"csrf_token": token, "name": "Impôts", "first_visit_minutes": SUPERSCRIPT_TWO}
        async with http.post(running.url("/motifs"), data=form) as resp:
            assert resp.status == 400, await resp.text()
        token = await _csrf(http, running, "/disponibilites")
        form = {
            "csrf_token": token,
            "weekday": SUPERSCRIPT_TWO,
            "start": "09:00",
            "end": "12:00",
            "timezone": "Europe/Paris",
        }
        async with http.post(running.url("/disponibilites"), data=form) as resp:
            assert resp.status == 400, await resp.text()
        form.update(weekday="1", start="٠٩:٠٠")
        async with http.post(running.url("/disponibilites"), data=form) as resp:
            assert resp.status == 400, await resp.text()
        entry = str(uuid.uuid4())
        async with http.post(
            running.url(f"/file/{entry}/transferer"),
            data={"csrf_token": token, "volunteer_id": SUPERSCRIPT_TWO},
        ) as resp:
            assert resp.status == 409, await resp.text()  # the queue's refusals are conflicts
            assert "Choisissez un bénévole" in html.unescape(await resp.text())
    finally:
        await http.close()


# -- The API ----------------------------------------------------------------------------------


@pytest.fixture
async def api_token(running: Running, place: dict[str, Any]) -> str:
    referrer = await make_account(running, "referente@ccas.example.org", Role.REFERRER)
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, referrer.user.id)
        _row, raw = await api_tokens.create_token(db, user, "logiciel", ["bookings:write"])
    return raw


def _booking_json(place: dict[str, Any], motif_id: str | None = None) -> str:
    motif = motif_id if motif_id is not None else str(place["motif_id"])
    return (
        '{"motif_id": ' + motif + ', "starts_at": "2030-01-07T09:00:00+01:00", '
        '"first_name": "Awa", "phone": "06 12 34 56 78"}'
    )


NOT_UTF8_JSON = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "application/json; charset=no-such-charset",
    "application/json; charset=utf-16",
    "application/json-patch+json",
    "",
]


async def test_a_body_that_is_not_utf8_json_is_refused_with_415(
    running: Running,
    http: aiohttp.ClientSession,
    place: dict[str, Any],
    api_token: str,
) -> None:
    """Refused whole (415), while the same body as UTF-8 JSON reaches the rules (here: 2030
    is past the booking horizon)."""
    body = _booking_json(place).encode()
    for content_type in NOT_UTF8_JSON:
        headers = {"Authorization": f"Bearer {api_token}", "Content-Type": content_type}
        async with http.post(running.url("/api/v1/bookings"), data=body, headers=headers) as resp:
            assert resp.status == 415, (content_type, resp.status, await resp.text())
            error = (await resp.json())["error"]
        assert error["code"] == "unsupported_media_type"
        assert error["message"]
    for content_type in ["application/json", "application/json; charset=UTF-8"]:
        headers = {"Authorization": f"Bearer {api_token}", "Content-Type": content_type}
        async with http.post(running.url("/api/v1/bookings"), data=body, headers=headers) as resp:
            assert resp.status == 400, await resp.text()
            assert (await resp.json())["error"]["code"] == "too_far"


DEEP_OR_HUGE = [
    b"[" * 3000 + b"]" * 3000,
    b'{"motif_id": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"needs": ' + b'{"a":' * 2500 + b"1" + b"}" * 2501,  # 15 KiB: under the cap
    b'{"motif_id": 1' + b"0" * 5000 + b"}",
    b'{"motif_id": -1' + b"0" * 5000 + b"}",
    b'{"motif_id": 1e' + b"9" * 5000 + b"}",
    b'{"motif_id": 1' + b"0" * 400 + b".0}",
    '{"motif_id": "٣"}'.encode(),
    b'{"first_name": "\\ud800"}',
    b'{"first_name": "\xff"}',
]


async def test_deep_or_huge_json_is_refused_with_400(
    running: Running,
    http: aiohttp.ClientSession,
    place: dict[str, Any],
    api_token: str,
) -> None:
    headers = {"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"}
    for body in DEEP_OR_HUGE:
        async with http.post(running.url("/api/v1/bookings"), data=body, headers=headers) as resp:
            assert resp.status == 400, (body[:60], resp.status, await resp.text())
            assert (await resp.json())["error"]["code"]


async def test_a_nul_character_in_a_form_is_the_french_400_page(
    running: Running, http: aiohttp.ClientSession, place: dict[str, Any]
) -> None:
    """PostgreSQL refuses NUL in a text: the e-mail of the login form made its query fail."""
    token = await _csrf(http, running, "/code")
    for path, field in [("/login", "email"), ("/code", "code"), ("/rappel", "first_name")]:
        data = {"csrf_token": token, field: "a\x00b", "password": "x"}
        async with http.post(running.url(path), data=data) as resp:
            assert resp.status == 400, (path, resp.status)
            assert UNREADABLE in html.unescape(await resp.text())


async def test_a_nul_character_in_a_link_is_not_a_crash(
    running: Running, http: aiohttp.ClientSession, place: dict[str, Any]
) -> None:
    motif = place["motif_id"]
    for path in [
        f"/rendez-vous/motif/{motif}?cp=%00&from=%00&tz=%00&kind=%00",
        "/rendez-vous?a=%00&tz=%00&cp=7%005",
        "/code?c=%00",
        "/login?next=/%00",
        "/aide?a=%00",
        "/rappel?motif=%00",
        "/rendez-vous/retrouver?code=%00",
        "/j/%00",
        "/fiche/%00",
        "/rendez-vous/gerer/%00",
        "/rappel/annuler/%00",
    ]:
        async with http.get(running.url(path), allow_redirects=False) as resp:
            assert resp.status < 500, (path, resp.status)
