"""Data used by the beneficiary's device (issue 14): the `usage` event of PROTOCOL.md through
the real app, real python-socketio clients and the real database (SQLite and PostgreSQL), and
the figure the volunteer reads on the ended page, the handoff form and the ended panel's JSON."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from server import data_used
from server.data_used import MAX_DATA_BYTES
from server.ratelimit import RATELIMIT_KEY
from server.store.models import AssistanceSession, utcnow
from tests.conftest import (
    Running,
    browser_session,
    csrf_from,
    login,
    make_account,
)
from tests.peers import PeerSet, SignalPeer, connect_beneficiary, pair


async def stored(running: Running, session_id: str) -> int | None:
    """The figure on the committed session row."""
    async with running.sessionmaker() as db:
        return (await db.get_one(AssistanceSession, session_id)).data_bytes


async def report(peer: SignalPeer, used: int, running: Running) -> dict[str, Any]:
    """One report, its acknowledgement; the socket's rate limit is forgotten first (a page
    sends one every 30 s)."""
    await running.app[RATELIMIT_KEY].reset()
    ack: dict[str, Any] = await peer.call("usage", {"bytes": used})
    return ack


async def test_the_beneficiary_reports_and_the_figure_only_grows(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    _volunteer, beneficiary = await pair(running, http, session_id, peers)
    assert await stored(running, session_id) is None
    assert await report(beneficiary, 5_000_000, running) == {"ok": True, "bytes": 5_000_000}
    assert await stored(running, session_id) == 5_000_000
    # A smaller figure (a page that lost its count) changes nothing: a client cannot shrink it.
    assert await report(beneficiary, 3_000, running) == {"ok": True, "bytes": 5_000_000}
    assert await report(beneficiary, 0, running) == {"ok": True, "bytes": 5_000_000}
    assert await stored(running, session_id) == 5_000_000
    assert await report(beneficiary, 14_200_000, running) == {"ok": True, "bytes": 14_200_000}
    assert await report(beneficiary, MAX_DATA_BYTES, running) == {
        "ok": True,
        "bytes": MAX_DATA_BYTES,
    }
    assert await stored(running, session_id) == MAX_DATA_BYTES
    await beneficiary.expect_nothing("error")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, "malformed"),
        ({"bytes": -1}, "malformed"),
        ({"bytes": MAX_DATA_BYTES + 1}, "malformed"),
        ({"bytes": 2**64}, "malformed"),
        ({"bytes": "5000"}, "malformed"),
        ({"bytes": 5000.5}, "malformed"),
        ({"bytes": 5000.0}, "malformed"),
        ({"bytes": True}, "malformed"),
        ({"bytes": None}, "malformed"),
        ({"bytes": 5000, "seconds": 60}, "malformed"),
        ({"bytes": 5000, "pad": "x" * 80_000}, "too_large"),
        ([5000], "malformed"),
        ("5000", "malformed"),
    ],
)
async def test_a_bad_usage_payload_gets_the_protocol_error_and_changes_nothing(
    running: Running,
    http: aiohttp.ClientSession,
    session_id: str,
    peers: PeerSet,
    payload: object,
    code: str,
) -> None:
    _volunteer, beneficiary = await pair(running, http, session_id, peers)
    await beneficiary.emit("usage", payload)
    error = await beneficiary.expect("error")
    assert error["code"] == code and error["event"] == "usage", error
    assert await stored(running, session_id) is None
    # The socket lives on and can still report.
    assert await report(beneficiary, 1_000, running) == {"ok": True, "bytes": 1_000}


async def test_only_the_beneficiary_reports_data_used(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, _beneficiary = await pair(running, http, session_id, peers)
    assert await report(volunteer, 9_000_000, running) == {"ok": False, "code": "forbidden"}
    error = await volunteer.expect("error")
    assert error["code"] == "forbidden" and error["event"] == "usage", error
    assert await stored(running, session_id) is None


async def test_a_replaced_beneficiary_tab_no_longer_counts(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    _volunteer, first = await pair(running, http, session_id, peers)
    assert await report(first, 2_000, running) == {"ok": True, "bytes": 2_000}
    second = peers.add(await connect_beneficiary(running, session_id))
    await first.expect("ended")
    assert await report(second, 3_000, running) == {"ok": True, "bytes": 3_000}
    # The rule underneath, for a report racing the replacement or the end of the session.
    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
        assert data_used.record(session, first.peer_id, 9_000) is None
        session.ended_at = utcnow()
        session.expires_at = utcnow() - timedelta(seconds=1)
        assert data_used.record(session, second.peer_id, 9_000) is None
    assert await stored(running, session_id) == 3_000


async def test_one_usage_report_per_socket_every_ten_seconds(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    _volunteer, beneficiary = await pair(running, http, session_id, peers)
    assert await report(beneficiary, 1_000, running) == {"ok": True, "bytes": 1_000}
    # Back to back: the limit's windows are approximate (a sliding-window counter), so a window
    # boundary may let a second one through, never a third.
    acks = [await beneficiary.call("usage", {"bytes": 2_000 + n}) for n in range(2)]
    assert {"ok": False, "code": "rate_limited"} in acks, acks
    error = await beneficiary.expect("error")
    assert error["code"] == "rate_limited" and error["event"] == "usage", error
    assert await stored(running, session_id) in (1_000, 2_000)
    # Ten seconds on (here: the counts forgotten), a report is taken again.
    assert await report(beneficiary, 5_000, running) == {"ok": True, "bytes": 5_000}


# --- What the volunteer reads ------------------------------------------------------------------


def plain(text: str) -> str:
    """Text with CLDR's no-break spaces (U+00A0, U+202F) as plain spaces."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


def test_sizes_and_durations_read_as_people_say_them() -> None:
    sizes = (850_000, 1_460_000, 14_200_000, 1_230_000_000, 10)
    assert [plain(data_used.format_size(size)) for size in sizes] == [
        "850 ko",
        "1,5 Mo",
        "14 Mo",
        "1,2 Go",
        "1 ko",
    ]
    lengths = (timedelta(seconds=40), timedelta(minutes=21, seconds=10), timedelta(minutes=80))
    assert [plain(data_used.format_duration(length)) for length in lengths] == [
        "40 s",
        "21 min",
        "1 h 20 min",
    ]
    assert plain(data_used.format_duration(timedelta(hours=2))) == "2 h"


async def end_through_the_form(
    http: aiohttp.ClientSession, running: Running, session_id: str
) -> str:
    """The volunteer clicks "Terminer l'assistance" (the real form); the page it lands on."""
    async with http.get(running.url(f"/assistance/{session_id}")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url(f"/assistance/{session_id}/end"), data={"csrf_token": token}
    ) as resp:
        assert resp.status == 200 and resp.url.path.endswith("/fiche"), resp.url
        return await resp.text()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_volunteer_reads_the_stored_figure_with_the_duration_after_the_end(
    running: Running, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        now = utcnow()
        session.beneficiary_joined_at = now - timedelta(minutes=22)
        session.first_media_at = now - timedelta(minutes=21)
        session.data_bytes = 14_200_000
    sentence = "Données utilisées par la personne : environ 14 Mo en 21 min."
    form = await end_through_the_form(http, running, session_id)
    assert sentence in plain(form)
    async with http.get(running.url(f"/assistance/{session_id}")) as resp:
        assert sentence in plain(await resp.text())  # the room of an ended session
    async with http.get(running.url(f"/assistance/{session_id}/donnees")) as resp:
        assert resp.status == 200
        figure = await resp.json()
    assert figure["bytes"] == 14_200_000 and plain(figure["text"]) == sentence


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_no_report_reads_as_not_measured_and_others_get_404(
    running: Running, http: aiohttp.ClientSession, session_id: str
) -> None:
    form = await end_through_the_form(http, running, session_id)
    assert "Données utilisées par la personne : non mesurées." in form
    other = await make_account(running, "autre@example.org")
    async with await browser_session() as stranger:
        await login(stranger, running, other)
        async with stranger.get(running.url(f"/assistance/{session_id}/donnees")) as resp:
            assert resp.status == 404
