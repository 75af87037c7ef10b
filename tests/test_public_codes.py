"""Join codes against a guessing botnet: clients counted by IPv6 prefix, the global wrong-code
budget and its slower mode, the time to a first hit, and passes that end with their session."""

from __future__ import annotations

import logging
from datetime import timedelta

import aiohttp
import pytest
from pydantic import SecretStr

from server import assist
from server.ratelimit import address_key, days_to_first_code_hit
from server.settings import Settings
from server.store.models import AssistanceSession, utcnow
from tests.conftest import (
    Account,
    Running,
    browser_session,
    create_assistance,
    csrf_from,
    entered_room,
    login,
)

ATTACKER_CLIENTS = 1_000 + 100  # 1,000 IPv4 addresses and 100 IPv6 /64s (issue 11)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Behind a proxy, so that tests choose the client address (X-Forwarded-For)."""
    update = {"trust_proxy": True, "metrics_token": SecretStr("metrics-test")}
    return settings.model_copy(update=update)


async def _try_code(
    http: aiohttp.ClientSession, running: Running, token: str, code: str, address: str
) -> int:
    async with http.post(
        running.url("/code"),
        data={"csrf_token": token, "code": code},
        headers={"X-Forwarded-For": address},
        allow_redirects=False,
    ) as resp:
        return resp.status


async def _metrics(http: aiohttp.ClientSession, running: Running) -> str:
    headers = {"Authorization": "Bearer metrics-test"}
    async with http.get(running.url("/metrics"), headers=headers) as resp:
        assert resp.status == 200
        return await resp.text()


def _metric(text: str, name: str) -> float:
    """A sample's value in the Prometheus text format (0 when absent: never counted here)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def _csrf(http: aiohttp.ClientSession, running: Running) -> str:
    async with http.get(running.url("/code")) as resp:
        return csrf_from(await resp.text())


def test_guessing_a_live_code_takes_more_than_30_days_at_our_limits(settings: Settings) -> None:
    """1,000 live codes, 1,000 IPv4 addresses and 100 IPv6 /64s: the expected time to a first
    hit (SECURITY.md shows the computation) exceeds 30 days with the default settings, and the
    6-digit codes of before would fall within the day."""
    days = days_to_first_code_hit(settings, live_codes=1_000, clients=ATTACKER_CLIENTS)
    assert settings.code_digits == 8 and days > 30, days
    six = settings.model_copy(update={"code_digits": 6})
    assert days_to_first_code_hit(six, live_codes=1_000, clients=ATTACKER_CLIENTS) < 1


def test_client_keys_group_an_ipv6_prefix_and_canonicalise() -> None:
    assert address_key("2001:db8:1:2::1", 64) == address_key("2001:DB8:1:2:ffff::9", 64)
    assert address_key("2001:db8:1:2::1", 64) == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1", 64) != address_key("2001:db8:1:2::1", 64)
    assert address_key("2001:db8:1:2::1", 48) == address_key("2001:db8:1:3::1", 48)
    assert address_key("::ffff:192.0.2.7", 64) == address_key("192.0.2.7", 64) == "192.0.2.7"
    assert address_key("[2001:db8::1]", 64) == "2001:db8::/64"
    assert address_key("fe80::1%eth0", 64) == "fe80::/64"
    assert address_key("not an address", 64) == "invalid"


async def test_every_address_of_one_ipv6_prefix_shares_one_budget(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """12 addresses of one /64 used to get 10 wrong codes each; now they share 10."""
    token = await _csrf(http, running)
    statuses = [
        await _try_code(http, running, token, f"{n:08d}", f"2001:db8:5:6::{n + 1:x}")
        for n in range(12)
    ]
    assert statuses[:10] == [400] * 10 and statuses[10:] == [429, 429]
    # Another /64, and the last hop of a spoofed X-Forwarded-For chain, are other clients.
    assert await _try_code(http, running, token, "00000099", "2001:db8:5:7::1") == 400
    spoofed = "2001:db8:9:9::1, 2001:db8:5:6::99"  # the client wrote the first hop
    assert await _try_code(http, running, token, "00000098", spoofed) == 429


async def test_a_spent_wrong_code_budget_slows_every_client_and_raises_an_alert(
    running: Running,
    http: aiohttp.ClientSession,
    volunteer: Account,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert running.settings.budget_wrong_codes == "12/hour"
    spread = [f"198.51.100.{n}" for n in range(1, 14)]  # 13 clients, one wrong code each
    token = await _csrf(http, running)
    exceeded = 'permanence_budget_exceeded_total{family="wrong_codes"}'
    before = _metric(await _metrics(http, running), exceeded)
    with caplog.at_level(logging.WARNING, logger="server.ratelimit"):
        for n, address in enumerate(spread):
            assert await _try_code(http, running, token, f"{n:08d}", address) == 400
    alerts = [r.getMessage() for r in caplog.records if "BUDGET_WRONG_CODES" in r.getMessage()]
    assert len(alerts) == 1 and "slower mode on" in alerts[0]
    metrics = await _metrics(http, running)
    assert _metric(metrics, exceeded) == before + 1
    assert _metric(metrics, 'permanence_budget_slow_mode{family="wrong_codes"}') == 1

    # Slower mode: a fresh client has two tries a day, right or wrong.
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
        code = assist.current_code(running.settings, session)
    assert code is not None
    token = await _csrf(http, running)  # the login rotated the CSRF seed
    fresh = "203.0.113.50"
    assert await _try_code(http, running, token, "11111111", fresh) == 400
    assert await _try_code(http, running, token, "22222222", fresh) == 400
    assert await _try_code(http, running, token, code, fresh) == 429
    # Another client still gets in with the right code (the room itself, no redirect).
    assert await _try_code(http, running, token, code, "203.0.113.51") == 200


async def test_metrics_need_their_token(running: Running, http: aiohttp.ClientSession) -> None:
    async with http.get(running.url("/metrics")) as resp:
        assert resp.status == 401
    async with http.get(running.url("/metrics"), headers={"Authorization": "Bearer no"}) as resp:
        assert resp.status == 401


async def test_the_pass_shows_the_sheet_only_for_an_hour_after_the_session_ended(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    await login(http, running, volunteer)
    session_id = await create_assistance(http, running)
    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
        code = assist.current_code(running.settings, session)
    async with await browser_session() as person:
        token = await _csrf(person, running)
        async with person.post(
            running.url("/code"),
            data={"csrf_token": token, "code": code},
            allow_redirects=False,
        ) as resp:
            await entered_room(resp)
            cookie = resp.cookies["vp_benef"]
            # The browser keeps the pass no longer than the session (plus the sheet's hour).
            left = (session.expires_at - utcnow()).total_seconds() + 3600
            assert 0 < int(cookie["max-age"]) <= left
        for ended_ago, status in ((timedelta(minutes=50), 200), (timedelta(minutes=70), 404)):
            async with running.sessionmaker.begin() as db:
                session = await db.get_one(AssistanceSession, session_id)
                session.ended_at = utcnow() - ended_ago
            async with person.get(running.url("/b/fiche")) as resp:
                assert resp.status == status, ended_ago
