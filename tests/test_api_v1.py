"""The partner API under /api/v1 on the real server: tokens, scopes, slots, bookings, OpenAPI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from datetime import time as clock
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import regress
from openapi_schema_validator import oas31_format_checker
from openapi_spec_validator import validate
from sqlalchemy import select, update
from yarl import URL

from server import api_tokens, availability, motifs
from server.passes import LOGIN_COOKIE
from server.store.models import ApiToken, Appointment, OutboxMessage, Role, User, utcnow
from server.web.api import models as m
from server.web.views.api_v1 import openapi_document
from tests.conftest import Account, Running, csrf_from, login, make_account


async def _token(running: Running, account: Account, scopes: list[str]) -> str:
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, account.user.id)
        _row, raw = await api_tokens.create_token(db, user, "logiciel", scopes)
    return raw


@pytest.fixture
async def world(running: Running, volunteer: Account) -> dict[str, Any]:
    """An association with motifs, a volunteer open every day 09:00–17:00, and a referrer."""
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        motif_rows = await motifs.ensure_default_motifs(db, user.association_id)
        for weekday in range(7):
            await availability.add_availability(
                db, user, weekday=weekday, start_time=clock(9), end_time=clock(17)
            )
    referrer = await make_account(running, "referente@ccas.example.org", Role.REFERRER)
    token = await _token(
        running, referrer, ["motifs:read", "slots:read", "bookings:read", "bookings:write"]
    )
    return {"motif_id": motif_rows[0].id, "referrer": referrer, "token": token}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _first_slot(http: aiohttp.ClientSession, running: Running, world: dict[str, Any]) -> str:
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    async with http.get(
        running.url(f"/api/v1/slots?motif_id={world['motif_id']}&from={tomorrow}&days=3"),
        headers=_auth(world["token"]),
    ) as resp:
        assert resp.status == 200, await resp.text()
        slots = (await resp.json())["slots"]
    assert slots and slots[0]["capacity"] == 1
    return str(slots[0]["starts_at"])


def _booking(world: dict[str, Any], starts_at: str, **extra: Any) -> dict[str, Any]:
    return {
        "motif_id": world["motif_id"],
        "kind": "first",
        "starts_at": starts_at,
        "first_name": "Josette",
        "phone": "06 12 34 56 78",
        **extra,
    }


def _ecma_regex(pattern: object) -> bool:
    if isinstance(pattern, str):
        regress.Regex(pattern, "u")
    return True


def test_openapi_document_is_valid_and_covers_every_api_route(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # JSON Schema patterns are ECMA-262 regular expressions (Unicode mode); the validator checks
    # them with Python's re, which lacks the \p{L} classes that say "letters" in any script.
    monkeypatch.setitem(oas31_format_checker.checkers, "regex", (_ecma_regex, regress.RegressError))
    document = openapi_document("http://127.0.0.1")
    validate(document)
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in running.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.resource.canonical != "/api/v1/openapi.json"
        and route.method != "HEAD"
    }
    documented = {(m, path) for path, ops in document["paths"].items() for m in ops}
    assert routes == documented


def test_openapi_document_states_the_servers_rules_on_bookings() -> None:
    """As strict as the server where JSON Schema can say it: positive 32-bit ids, a first name
    of at least one letter, a phone or an e-mail, UTF-8 JSON only (415); the future start in
    words."""
    document = openapi_document("http://127.0.0.1")
    schemas = document["components"]["schemas"]
    assert (schemas["Id"]["minimum"], schemas["Id"]["maximum"]) == (1, 2**31 - 1)
    booking = schemas["BookingRequest"]
    first_name = booking["properties"]["first_name"]
    assert first_name["minLength"] == 1 and "\\p{L}" in first_name["pattern"]
    assert {tuple(option["required"]) for option in booking["anyOf"]} == {("phone",), ("email",)}
    assert "in the future" in booking["properties"]["starts_at"]["description"]
    create = document["paths"]["/api/v1/bookings"]["post"]
    assert list(create["requestBody"]["content"]) == ["application/json"]
    assert "415" in create["responses"]


async def test_openapi_is_served(running: Running, http: aiohttp.ClientSession) -> None:
    async with http.get(running.url("/api/v1/openapi.json")) as resp:
        assert resp.status == 200
        assert (await resp.json())["openapi"] == "3.1.0"


async def test_no_token_or_a_forged_one_gets_401(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    async with http.get(running.url("/api/v1/motifs")) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
    async with http.get(running.url("/api/v1/motifs"), headers=_auth("vp_forged")) as resp:
        assert resp.status == 401


async def test_a_token_without_the_scope_gets_403(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    read_only = await _token(running, world["referrer"], ["motifs:read"])
    async with http.get(running.url("/api/v1/motifs"), headers=_auth(read_only)) as resp:
        assert resp.status == 200
        assert len((await resp.json())["motifs"]) == len(motifs.DEFAULT_MOTIFS)
    async with http.post(
        running.url("/api/v1/bookings"), json={}, headers=_auth(read_only)
    ) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "forbidden"


async def test_book_list_and_cancel_through_the_api(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    starts_at = await _first_slot(http, running, world)
    async with http.post(
        running.url("/api/v1/bookings"),
        json=_booking(world, starts_at),
        headers=_auth(world["token"]),
    ) as resp:
        assert resp.status == 201, await resp.text()
        created = await resp.json()
    assert created["status"] == "booked" and len(created["code"]) == 8
    assert created["join_url"].startswith(running.settings.base_url + "/j/")
    async with running.sessionmaker() as db:
        keys = (
            await db.scalars(
                select(OutboxMessage.idempotency_key).where(
                    OutboxMessage.appointment_id == created["id"]
                )
            )
        ).all()
    assert any(":confirmation:" in key for key in keys), keys  # the beneficiary is told

    # The slot is gone for everyone: booking it again is a 409 slot_taken.
    async with http.post(
        running.url("/api/v1/bookings"),
        json=_booking(world, starts_at),
        headers=_auth(world["token"]),
    ) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "slot_taken"

    async with http.get(running.url("/api/v1/bookings"), headers=_auth(world["token"])) as resp:
        assert [b["id"] for b in (await resp.json())["bookings"]] == [created["id"]]

    # Another referrer neither sees nor cancels it.
    other = await make_account(running, "autre@caf.example.org", Role.REFERRER)
    other_token = await _token(running, other, ["bookings:read", "bookings:write"])
    async with http.get(running.url("/api/v1/bookings"), headers=_auth(other_token)) as resp:
        assert (await resp.json())["bookings"] == []
    async with http.delete(
        running.url(f"/api/v1/bookings/{created['id']}"), headers=_auth(other_token)
    ) as resp:
        assert resp.status == 404

    async with http.delete(
        running.url(f"/api/v1/bookings/{created['id']}"), headers=_auth(world["token"])
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "cancelled"
    async with http.delete(
        running.url(f"/api/v1/bookings/{created['id']}"), headers=_auth(world["token"])
    ) as resp:
        assert resp.status == 409
    # Freed at once: the same slot can be booked again.
    async with http.post(
        running.url("/api/v1/bookings"),
        json=_booking(world, starts_at),
        headers=_auth(world["token"]),
    ) as resp:
        assert resp.status == 201


async def test_free_text_in_any_script_and_newer_characters_is_kept_as_typed(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    # Persian needs the zero-width non-joiner inside words; an emoji family joins with the
    # zero-width joiner; U+1FAE8 is newer than some servers' Unicode tables, and U+20F9 is not
    # assigned yet: the person's phone may know what the server does not.
    description = "سلام، می\u200cخواهم کمک\n👨\u200d👩\u200d👧 \U0001fae8 \u20f9"
    language = "دری (فارسی\u200cافغانستان)"
    starts_at = await _first_slot(http, running, world)
    body = _booking(
        world, starts_at, description=description, needs={"interpreter_language": language}
    )
    async with http.post(
        running.url("/api/v1/bookings"), json=body, headers=_auth(world["token"])
    ) as resp:
        assert resp.status == 201, await resp.text()
        created = await resp.json()
    async with running.sessionmaker() as db:
        appointment = await db.get(Appointment, created["id"])
        assert appointment is not None
    assert appointment.description == description
    assert appointment.needs["interpreter_language"] == language


BAD_BOOKINGS: list[tuple[Any, int, str]] = [
    ("not json", 400, "invalid_json"),
    ([1, 2], 400, "invalid_json"),
    ({"motif_id": "x"}, 400, "invalid_motif"),
    ({"motif_id": 2**31}, 400, "invalid_motif"),
    ({"motif_id": 2**31 - 1}, 404, "invalid_motif"),
    ({"starts_at": "demain"}, 400, "invalid_starts_at"),
    ({"starts_at": "2030-01-01T10:00:00"}, 400, "invalid_starts_at"),
    ({"starts_at": "2020-01-06T10:00:00+01:00"}, 400, "past"),
    ({"phone": "06 12 AB CD EF"}, 400, "invalid_phone"),
    ({"phone": "01 23 45 67 89"}, 400, "no_reachable_contact"),
    ({"phone": None, "email": None}, 400, "missing_contact"),
    ({"phone": "", "email": "  "}, 400, "invalid_email"),
    ({"email": "josette@exemple"}, 400, "invalid_email"),
    ({"kind": "third"}, 400, "invalid_kind"),
    ({"first_name": 12}, 400, "invalid_first_name"),
    ({"first_name": "Jo3"}, 400, "invalid_first_name"),
    ({"first_name": "J" * 41}, 400, "invalid_first_name"),
    ({"postal_code": "7501"}, 400, "invalid_postal_code"),
    ({"description": "x" * 1001}, 400, "description_too_long"),
    ({"description": "bip\x07"}, 400, "invalid_description"),
    ({"description": "payer \u202eoc.liam@"}, 400, "invalid_description"),  # reorders the text
    ({"needs": {"interpreter_language": "dari\n"}}, 400, "invalid_needs"),
    ({"needs": {"interpreter_language": "\u2066dari"}}, 400, "invalid_needs"),
    ({"timezone": "Europe/Lutece"}, 400, "invalid_timezone"),
    ({"needs": {"hearing": "oui"}}, 400, "invalid_needs"),
    ({"needs": {"interpreter_language": "x" * 41}}, 400, "invalid_needs"),
]


async def test_bad_bookings_get_precise_errors_and_write_nothing(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    starts_at = await _first_slot(http, running, world)
    for body, status, code in BAD_BOOKINGS:  # one server for all: each case is one request
        if isinstance(body, dict):
            kwargs: dict[str, Any] = {"json": {**_booking(world, starts_at), **body}}
        elif isinstance(body, list):
            kwargs = {"json": body}
        else:
            kwargs = {"data": body, "headers": {"Content-Type": "application/json"}}
        headers = {**kwargs.pop("headers", {}), **_auth(world["token"])}
        async with http.post(running.url("/api/v1/bookings"), headers=headers, **kwargs) as resp:
            assert resp.status == status, (body, await resp.text())
            error = (await resp.json())["error"]
        assert error["code"] == code, (body, error)
        assert error["message"], body
        if isinstance(body, dict):  # the field is named, for the partner's form
            assert error["field"] in {*body, "phone", "email"}, (body, error)
    async with http.get(running.url("/api/v1/bookings"), headers=_auth(world["token"])) as resp:
        assert (await resp.json())["bookings"] == []


async def test_a_body_over_16_kib_gets_413_and_a_french_message(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    body = {**_booking(world, "2030-01-07T09:00:00+01:00"), "padding": "x" * 16 * 1024}
    async with http.post(
        running.url("/api/v1/bookings"), json=body, headers=_auth(world["token"])
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["message"] == "Requête trop grosse."


def test_every_input_field_has_a_stable_code_and_a_french_message() -> None:
    for model in (m.SlotQuery, m.BookingRequest, m.StatisticsQuery):
        for name, info in model.model_fields.items():
            found = m.error_text(model, info.alias or name, "any")
            assert found is not None, (model.__name__, name)
            code, message = found
            assert code.isascii() and code.islower() and message, (model.__name__, name)


async def test_a_referrer_creates_a_token_on_their_page_and_revokes_it(
    running: Running, http: aiohttp.ClientSession
) -> None:
    referrer = await make_account(running, "referente@ccas.example.org", Role.REFERRER)
    await login(http, running, referrer)
    async with http.get(running.url("/mes-jetons")) as resp:
        assert resp.status == 200
        csrf = csrf_from(await resp.text())
    form = {"csrf_token": csrf, "name": "logiciel du CCAS", "scopes": "motifs:read"}
    async with http.post(running.url("/mes-jetons"), data=form) as resp:
        assert resp.status == 200
        page = await resp.text()
    token = re.search(r'value="(vp_[^"]+)"', page)  # shown once
    assert token, page
    async with http.get(running.url("/api/v1/motifs"), headers=_auth(token[1])) as resp:
        assert resp.status == 200
    async with running.sessionmaker() as db:
        user = await db.get_one(User, referrer.user.id)
        (row,) = await api_tokens.list_tokens(db, user)
    revoke = running.url(f"/mes-jetons/{row.id}/revoquer")
    async with http.post(revoke, data={"csrf_token": csrf}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/mes-jetons"
    async with http.get(running.url("/api/v1/motifs"), headers=_auth(token[1])) as resp:
        assert resp.status == 401
    for path in (f"/mes-jetons/{row.id}/revoquer", "/mes-jetons/abc/revoquer"):
        async with http.post(running.url(path), data={"csrf_token": csrf}) as resp:
            assert resp.status == 404  # already revoked; not an id


async def test_a_revoked_token_stops_working(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, world["referrer"].user.id)
        (token,) = await api_tokens.list_tokens(db, user)
        assert await api_tokens.revoke(db, user, token.id)
    async with http.get(running.url("/api/v1/motifs"), headers=_auth(world["token"])) as resp:
        assert resp.status == 401


async def test_only_referrers_get_tokens(running: Running, volunteer: Account) -> None:
    async with running.sessionmaker.begin() as db:
        user = await db.get_one(User, volunteer.user.id)
        with pytest.raises(api_tokens.ApiTokenError):
            await api_tokens.create_token(db, user, "x", ["motifs:read"])


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ("motif_id=99999999999999999999", "invalid_motif", "motif_id"),
        ("motif_id=", "invalid_motif", "motif_id"),
        ("motif_id={motif}&from=9999-12-31", "invalid_range", "from"),
        ("motif_id={motif}&from=0001-01-01", "invalid_range", "from"),
        ("motif_id={motif}&from=20300101", "invalid_range", "from"),
        ("motif_id={motif}&days=32", "invalid_range", "days"),
        ("motif_id={motif}&tz=posixrules", "invalid_timezone", "tz"),
        ("motif_id={motif}&kind=third", "invalid_kind", "kind"),
    ],
)
async def test_impossible_slot_queries_get_400_naming_the_parameter(
    running: Running,
    http: aiohttp.ClientSession,
    world: dict[str, Any],
    query: str,
    code: str,
    field: str,
) -> None:
    url = running.url("/api/v1/slots?" + query.format(motif=world["motif_id"]))
    async with http.get(url, headers=_auth(world["token"])) as resp:
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"]


async def test_empty_parameters_mean_their_defaults(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    url = running.url(f"/api/v1/slots?motif_id={world['motif_id']}&kind=&from=&tz=")
    async with http.get(url, headers=_auth(world["token"])) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["slots"]


# Every check schemathesis has (and ours, tests/schemathesis_hooks.py), configured by
# tests/schemathesis.toml; `max_response_time` needs a limit and timing is not a unit test's.
FUZZ_CHECKS = "all"
FUZZ_EXAMPLES = 25  # per operation in the fuzzing phase (the coverage phase makes its own)
FUZZ_TOKENS = 5  # per operation: ~250 requests at most for one of them
FUZZ_PER_TOKEN = 100
ROOT = Path(__file__).resolve().parents[1]


async def test_schemathesis_finds_no_server_error_and_no_contradiction_with_the_schema(
    running: Running,
    http: aiohttp.ClientSession,
    world: dict[str, Any],
    coordinator: Account,
    tmp_path: Path,
) -> None:
    """Schemathesis generates valid and invalid input from the served document: the server
    never fails, answers only documented statuses and bodies, refuses what the schema forbids,
    and refuses schema-valid input only for a rule the schema states in words."""
    await login(http, running, coordinator)
    session = http.cookie_jar.filter_cookies(URL(running.base_url))[LOGIN_COOKIE].value
    # Tokens per operation, each used for FUZZ_PER_TOKEN requests at most: no token goes over
    # its 120 requests a minute (the run lasts less than one) and the fuzzer never waits.
    scopes = {
        "listMotifs": "motifs:read",
        "listSlots": "slots:read",
        "listBookings": "bookings:read",
        "createBooking": "bookings:write",
        "cancelBooking": "bookings:write",
    }
    tokens = {
        op: [await _token(running, world["referrer"], [s]) for _ in range(FUZZ_TOKENS)]
        for op, s in scopes.items()
    }
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(ROOT / "tests" / "schemathesis.toml"),
        "run",
        running.url("/api/v1/openapi.json"),
        "--checks",
        FUZZ_CHECKS,
        "--max-examples",
        str(FUZZ_EXAMPLES),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        "--generation-with-security-parameters",
        "false",
        "--max-failures",
        "5",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "API_FUZZ_TOKENS": json.dumps(tokens),
        "API_FUZZ_SESSION": session,
        "API_FUZZ_PER_TOKEN": str(FUZZ_PER_TOKEN),
    }
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,  # schemathesis leaves its cache there
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    report = output.decode(errors="replace")
    print(report)  # shown by pytest -s, and on failure
    assert process.returncode == 0, report
    assert time.monotonic() - started < 60, report


async def _last_used(running: Running, raw: str) -> Any:
    async with running.sessionmaker() as db:
        return await db.scalar(
            select(ApiToken.last_used_at).where(ApiToken.token_hash == api_tokens.sha256_hex(raw))
        )


async def _age_stamp(running: Running, raw: str) -> None:
    """Move the token's last use two minutes back, so the next use is due a stamp."""
    async with running.sessionmaker.begin() as db:
        await db.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == api_tokens.sha256_hex(raw))
            .values(last_used_at=utcnow() - timedelta(minutes=2))
        )


async def test_the_last_used_stamp_is_written_by_reads_bookings_and_refusals_once_a_minute(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any]
) -> None:
    raw = world["token"]
    assert await _last_used(running, raw) is None
    # A read: the stamp is written on its own after the answer.
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    async with http.get(
        running.url(f"/api/v1/slots?motif_id={world['motif_id']}&from={tomorrow}&days=3"),
        headers=_auth(raw),
    ) as resp:
        slots = [slot["starts_at"] for slot in (await resp.json())["slots"]]
    first = await _last_used(running, raw)
    assert first is not None and utcnow() - first < timedelta(minutes=1)
    # Within the minute, a booking leaves it as it is.
    async with http.post(
        running.url("/api/v1/bookings"), json=_booking(world, slots[0]), headers=_auth(raw)
    ) as resp:
        assert resp.status == 201, await resp.text()
    assert await _last_used(running, raw) == first
    # Due again: a refused booking still writes it (on its own, its transaction rolled back).
    await _age_stamp(running, raw)
    before = utcnow()
    async with http.post(
        running.url("/api/v1/bookings"), json=_booking(world, slots[0]), headers=_auth(raw)
    ) as resp:
        assert resp.status == 409, await resp.text()
    refused = await _last_used(running, raw)
    assert refused is not None and refused >= before
    # Due again: a booking writes it in its own transaction.
    await _age_stamp(running, raw)
    before = utcnow()
    async with http.post(
        running.url("/api/v1/bookings"), json=_booking(world, slots[-1]), headers=_auth(raw)
    ) as resp:
        assert resp.status == 201, await resp.text()
    booked = await _last_used(running, raw)
    assert booked is not None and booked >= before
