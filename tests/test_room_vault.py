"""The vault in the assistance session (issue 15), server side: the `vault-shown` event of
PROTOCOL.md through the real app, real python-socketio clients and the real database (SQLite and
PostgreSQL): refused for a volunteer, rate-limited, recorded once with the session's association
and département, never with anything about the document."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from sqlalchemy import select

from server import room_vault
from server.ratelimit import RATELIMIT_KEY
from server.stats.events import EventKind
from server.store.models import AssistanceSession, QueueEntry, QueueStatus, StatEvent
from server.tokens import sha256_hex
from server.vault.context import session_of_token
from tests.conftest import Running, browser_session, entered_room
from tests.peers import PeerSet, SignalPeer, connect_beneficiary, pair
from tests.test_browser import join_link


async def shown_events(running: Running, session_id: str) -> list[StatEvent]:
    """The committed `vault_document_shown` events of the session."""
    async with running.sessionmaker() as db:
        rows = await db.scalars(
            select(StatEvent)
            .where(
                StatEvent.session_id == session_id,
                StatEvent.kind == EventKind.VAULT_DOCUMENT_SHOWN.value,
            )
            .order_by(StatEvent.id)
        )
        return list(rows)


async def shown(peer: SignalPeer, running: Running, copy: bool) -> dict[str, Any]:
    """One report and its acknowledgement, the socket's rate limit forgotten first."""
    await running.app[RATELIMIT_KEY].reset()
    ack: dict[str, Any] = await peer.call("vault-shown", {"copy": copy})
    return ack


async def test_a_document_shown_is_recorded_once_with_the_sessions_association_and_departement(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        # The person came through the drop-in queue and gave a postal code in Marseille.
        db.add(
            QueueEntry(
                association_id=session.association_id,
                postal_code="13008",
                token_hash=sha256_hex("queue-token"),
                status=QueueStatus.TAKEN,
                assistance_session_id=session_id,
            )
        )
    _volunteer, beneficiary = await pair(running, http, session_id, peers)

    assert await shown(beneficiary, running, copy=False) == {"ok": True}
    [event] = await shown_events(running, session_id)
    assert event.association_id == session.association_id
    assert event.departement == "13"
    assert event.reason is None
    assert event.theme is None and event.themes == []

    assert await shown(beneficiary, running, copy=True) == {"ok": True}
    events = await shown_events(running, session_id)
    assert [e.reason for e in events] == [None, room_vault.COPY_REASON]
    await beneficiary.expect_nothing("error")


async def test_only_the_beneficiary_reports_a_document_shown(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, _beneficiary = await pair(running, http, session_id, peers)
    assert await shown(volunteer, running, copy=True) == {"ok": False, "code": "forbidden"}
    error = await volunteer.expect("error")
    assert error["code"] == "forbidden" and error["event"] == "vault-shown", error
    assert await shown_events(running, session_id) == []


@pytest.mark.parametrize(
    "payload",
    [{}, {"copy": "true"}, {"copy": 1}, {"copy": True, "name": "impots.pdf"}, ["copy"], None],
)
async def test_a_bad_vault_shown_payload_is_refused_and_records_nothing(
    running: Running,
    http: aiohttp.ClientSession,
    session_id: str,
    peers: PeerSet,
    payload: object,
) -> None:
    _volunteer, beneficiary = await pair(running, http, session_id, peers)
    await beneficiary.emit("vault-shown", payload)
    error = await beneficiary.expect("error")
    assert error["code"] == "malformed" and error["event"] == "vault-shown", error
    assert await shown_events(running, session_id) == []


async def test_one_vault_shown_report_per_socket_every_ten_seconds(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    _volunteer, beneficiary = await pair(running, http, session_id, peers)
    assert await shown(beneficiary, running, copy=False) == {"ok": True}
    # Back to back: the sliding window may let a second one through, never a third.
    acks = [await beneficiary.call("vault-shown", {"copy": False}) for _ in range(2)]
    assert {"ok": False, "code": "rate_limited"} in acks, acks
    error = await beneficiary.expect("error")
    assert error["code"] == "rate_limited" and error["event"] == "vault-shown", error
    assert len(await shown_events(running, session_id)) == 1 + acks.count({"ok": True})


async def test_a_replaced_beneficiary_tab_or_an_ended_session_records_nothing(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    _volunteer, first = await pair(running, http, session_id, peers)
    second = peers.add(await connect_beneficiary(running, session_id))
    await first.expect("ended")
    assert await shown(second, running, copy=False) == {"ok": True}
    # The rule underneath, for a report racing the replacement or the end of the session.
    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        assert not await room_vault.document_shown(db, session, first.peer_id, gave_copy=False)
    assert len(await shown_events(running, session_id)) == 1


async def test_a_page_reporting_in_a_loop_stops_being_counted(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    _volunteer, beneficiary = await pair(running, http, session_id, peers)
    limit = room_vault.MAX_RECORDED_PER_SESSION
    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        for _ in range(limit + 3):
            assert await room_vault.document_shown(
                db, session, beneficiary.peer_id, gave_copy=False
            )
            await db.flush()
    assert len(await shown_events(running, session_id)) == limit


async def test_the_rooms_vault_parts_need_the_rooms_pass(
    running: Running, http: aiohttp.ClientSession, session_id: str
) -> None:
    """`GET /b/coffre-fort` (the picker and the suggestion, fetched when first used): for the
    holder of the session's pass only, with the vault API's addresses and the link to the vault
    page signed with the session."""
    url = running.url(str(running.app.router["beneficiary-vault"].url_for()))
    async with await browser_session() as stranger, stranger.get(url) as resp:
        assert resp.status == 404
        assert "vp-vault" not in await resp.text()
    async with await browser_session() as person:
        async with person.get(await join_link(running, session_id)) as resp:
            await entered_room(resp)
        async with person.get(url) as resp:
            assert resp.status == 200
            html = await resp.text()
    found = re.search(r'<script type="application/json" id="vp-vault">(.*?)</script>', html)
    assert found is not None
    parts = json.loads(found.group(1))
    assert parts["urls"] == {"vault": "/coffre/api/vault", "documents": "/coffre/api/documents"}
    assert [c["code"] for c in parts["categories"]][:3] == ["identite", "caf", "impots"]
    token = parse_qs(urlsplit(parts["link"]).query)["depuis"][0]
    assert session_of_token(running.settings, token) == session_id
    assert 'id="vault-dialog"' in html and 'id="vault-suggest"' in html
