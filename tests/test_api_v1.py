"""The partner API under /api/v1 on the real server: tokens, scopes, slots, bookings, OpenAPI."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate
from sqlalchemy import select

from server import api_tokens, availability, motifs
from server.store.models import OutboxMessage, Role, User, utcnow
from server.web.views.api_v1 import openapi_document
from tests.conftest import Account, Running, make_account


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
                db, user, weekday=weekday, start_time=time(9), end_time=time(17)
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


def test_openapi_document_is_valid_and_covers_every_api_route(running: Running) -> None:
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
    assert created["status"] == "booked" and len(created["code"]) == 6
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


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "invalid_json"),
        ([1, 2], 400, "invalid_json"),
        ({"motif_id": "x"}, 422, "invalid_motif"),
        ({"starts_at": "demain"}, 422, "invalid_starts_at"),
        ({"starts_at": "2030-01-01T10:00:00"}, 422, "invalid_starts_at"),
        ({"phone": "06 12 AB CD EF"}, 422, "invalid_phone"),
        ({"phone": None, "email": None}, 422, None),
        ({"kind": "third"}, 422, "invalid_kind"),
        ({"first_name": 12}, 422, "invalid_first_name"),
    ],
)
async def test_bad_bookings_get_precise_errors_and_write_nothing(
    running: Running,
    http: aiohttp.ClientSession,
    world: dict[str, Any],
    body: Any,
    status: int,
    code: str | None,
) -> None:
    starts_at = await _first_slot(http, running, world)
    if isinstance(body, dict):
        payload: Any = {**_booking(world, starts_at), **body}
        kwargs: dict[str, Any] = {"json": payload}
    elif isinstance(body, list):
        kwargs = {"json": body}
    else:
        kwargs = {"data": body, "headers": {"Content-Type": "application/json"}}
    headers = {**kwargs.pop("headers", {}), **_auth(world["token"])}
    async with http.post(running.url("/api/v1/bookings"), headers=headers, **kwargs) as resp:
        assert resp.status == status, await resp.text()
        error = (await resp.json())["error"]
    if code is not None:
        assert error["code"] == code
    assert error["message"]
    async with http.get(running.url("/api/v1/bookings"), headers=_auth(world["token"])) as resp:
        assert (await resp.json())["bookings"] == []


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
    "query",
    [
        "motif_id=99999999999999999999",
        "motif_id={motif}&from=9999-12-31",
        "motif_id={motif}&from=0001-01-01",
        "motif_id={motif}&tz=posixrules",
    ],
)
async def test_impossible_slot_queries_get_422_not_500(
    running: Running, http: aiohttp.ClientSession, world: dict[str, Any], query: str
) -> None:
    url = running.url("/api/v1/slots?" + query.format(motif=world["motif_id"]))
    async with http.get(url, headers=_auth(world["token"])) as resp:
        assert resp.status == 422, await resp.text()
