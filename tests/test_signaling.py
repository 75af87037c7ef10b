"""The `/assist` signalling contract of PROTOCOL.md, end to end: the real app on its port, real
python-socketio clients, the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import select

from server.assist import MAX_RECORDED_PER_SESSION, current_code, link_for
from server.store.models import AssistanceSession, Role, SessionStatus, StatEvent, utcnow
from signaling.assist import AssistNamespace
from signaling.server import SIO_KEY
from tests.conftest import (
    Account,
    Running,
    browser_session,
    create_assistance,
    csrf_from,
    login,
    make_account,
)
from tests.peers import (
    PeerSet,
    Refused,
    SignalPeer,
    connect_beneficiary,
    connect_volunteer,
    join_token,
    login_cookie,
    refusal,
)

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
NAME = "Josette"
CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host"


async def load(running: Running, session_id: str) -> AssistanceSession:
    """The session row as committed."""
    async with running.sessionmaker() as db:
        return await db.get_one(AssistanceSession, session_id)


async def invite_observer(
    http: aiohttp.ClientSession, running: Running, session_id: str, email: str
) -> None:
    """The volunteer invites an observer through the room's real form."""
    async with http.get(running.url(f"/assistance/{session_id}")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url(f"/assistance/{session_id}/observer"),
        data={"csrf_token": token, "email": email},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()


async def pair(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> tuple[SignalPeer, SignalPeer]:
    """Volunteer then beneficiary connected, the volunteer's peer-joined consumed."""
    volunteer = peers.add(await connect_volunteer(running, http, session_id))
    beneficiary = peers.add(await connect_beneficiary(running, session_id, name=NAME))
    await volunteer.expect("peer-joined")
    return volunteer, beneficiary


async def expect_error(peer: SignalPeer, code: str, event: str) -> dict[str, Any]:
    """The next ``error`` event, checked against the expected code and event name."""
    error = await peer.expect("error")
    assert error["code"] == code, error
    assert error["event"] == event, error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


# --- joining -----------------------------------------------------------------------------------


async def test_volunteer_and_beneficiary_are_welcomed_with_their_roles_and_each_other(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer = peers.add(await connect_volunteer(running, http, session_id))
    assert volunteer.welcome == {
        "peer_id": volunteer.client.get_sid("/assist"),
        "role": "volunteer",
        "session": {"id": session_id, "status": "waiting", "beneficiary_name": None},
        "peers": [],
    }

    beneficiary = peers.add(await connect_beneficiary(running, session_id, name=NAME))
    assert beneficiary.welcome == {
        "peer_id": beneficiary.client.get_sid("/assist"),
        "role": "beneficiary",
        "session": {"id": session_id, "status": "connected", "beneficiary_name": NAME},
        "peers": [{"peer_id": volunteer.peer_id, "role": "volunteer"}],
    }
    assert await volunteer.expect("peer-joined") == {
        "peer_id": beneficiary.peer_id,
        "role": "beneficiary",
        "name": NAME,
    }
    await beneficiary.expect_nothing("peer-joined")

    session = await load(running, session_id)
    assert session.status is SessionStatus.CONNECTED
    assert session.volunteer_sid == volunteer.peer_id
    assert session.beneficiary_sid == beneficiary.peer_id
    assert session.beneficiary_joined_at is not None


async def knows_of(peer: SignalPeer, other: SignalPeer) -> bool:
    """Whether ``peer`` learnt of ``other`` from its welcome or from a peer-joined."""
    if any(p["peer_id"] == other.peer_id for p in peer.welcome["peers"]):
        return True
    joined = await peer.expect("peer-joined")
    return bool(joined["peer_id"] == other.peer_id)


async def test_volunteer_and_beneficiary_joining_at_once_always_learn_of_each_other(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    for _round in range(6):
        volunteer, beneficiary = await asyncio.gather(
            connect_volunteer(running, http, session_id),
            connect_beneficiary(running, session_id),
        )
        peers.add(volunteer)
        peers.add(beneficiary)
        assert await knows_of(volunteer, beneficiary)
        assert await knows_of(beneficiary, volunteer)
        session = await load(running, session_id)
        assert session.volunteer_sid == volunteer.peer_id
        assert session.beneficiary_sid == beneficiary.peer_id
        assert session.status is SessionStatus.CONNECTED
        await asyncio.gather(volunteer.close(), beneficiary.close())


async def test_offer_answer_and_candidates_are_relayed_with_from_added_and_to_removed(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)

    await beneficiary.emit("offer", {"to": volunteer.peer_id, "sdp": SDP})
    assert await volunteer.expect("offer") == {"from": beneficiary.peer_id, "sdp": SDP}

    await volunteer.emit("answer", {"to": beneficiary.peer_id, "sdp": SDP + "a=answer\r\n"})
    assert await beneficiary.expect("answer") == {
        "from": volunteer.peer_id,
        "sdp": SDP + "a=answer\r\n",
    }

    candidate = {
        "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    await beneficiary.emit("candidate", {"to": volunteer.peer_id, **candidate})
    assert await volunteer.expect("candidate") == {"from": beneficiary.peer_id, **candidate}
    end_of_candidates = {"candidate": "", "sdpMid": None, "sdpMLineIndex": None}
    await volunteer.emit("candidate", {"to": beneficiary.peer_id, **end_of_candidates})
    assert await beneficiary.expect("candidate") == {
        "from": volunteer.peer_id,
        **end_of_candidates,
    }

    await beneficiary.emit("offer", {"to": volunteer.peer_id, "sdp": SDP, "restart": True})
    assert await volunteer.expect("offer") == {
        "from": beneficiary.peer_id,
        "sdp": SDP,
        "restart": True,
    }
    # Relayed to the addressee only: the sender never gets its own message back.
    await beneficiary.expect_nothing("offer", "candidate")
    await volunteer.expect_nothing("answer")


async def test_beneficiary_state_is_relayed_and_recorded_in_the_database(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)

    await beneficiary.emit("state", {"state": "sharing", "media": "screen"})
    assert await volunteer.expect("state") == {
        "from": beneficiary.peer_id,
        "role": "beneficiary",
        "state": "sharing",
        "media": "screen",
    }
    session = await load(running, session_id)
    assert session.status is SessionStatus.CONNECTED
    assert session.first_media_at is not None
    assert session.media_kinds == ["screen"]
    first_media_at = session.first_media_at

    await beneficiary.emit("state", {"state": "paused", "media": "screen"})
    assert (await volunteer.expect("state"))["state"] == "paused"
    session = await load(running, session_id)
    assert session.status is SessionStatus.PAUSED
    assert session.pause_count == 1

    await beneficiary.emit("state", {"state": "sharing", "media": "camera"})
    assert await volunteer.expect("state") == {
        "from": beneficiary.peer_id,
        "role": "beneficiary",
        "state": "sharing",
        "media": "camera",
    }
    session = await load(running, session_id)
    assert session.status is SessionStatus.CONNECTED
    assert session.media_kinds == ["screen", "camera"]
    assert session.first_media_at == first_media_at
    async with running.sessionmaker() as db:
        kinds = (await db.scalars(select(StatEvent.kind).order_by(StatEvent.id))).all()
    assert kinds == [
        "session_created",
        "beneficiary_joined",
        "media_shared",
        "paused",
        "media_shared",
    ]
    await beneficiary.expect_nothing("state")


async def test_toggling_pause_in_a_loop_records_a_bounded_number_of_statistics_events(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    """A script pausing and resuming over a real socket keeps the events table bounded; the
    session's counter still counts every pause."""
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    toggles = 3 * MAX_RECORDED_PER_SESSION
    for _ in range(toggles):
        await beneficiary.emit("state", {"state": "paused", "media": "screen"})
        await beneficiary.emit("state", {"state": "sharing", "media": "screen"})
    for _ in range(2 * toggles):  # relayed once handled: every toggle has been written
        await volunteer.expect("state")
    session = await load(running, session_id)
    assert session.pause_count == toggles
    async with running.sessionmaker() as db:
        kinds = (await db.scalars(select(StatEvent.kind))).all()
    assert kinds.count("paused") == MAX_RECORDED_PER_SESSION
    assert len(kinds) < MAX_RECORDED_PER_SESSION + 5


async def test_reconnecting_in_a_loop_records_a_bounded_number_of_statistics_events(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    await beneficiary.close()
    rejoins = MAX_RECORDED_PER_SESSION + 5
    for _ in range(rejoins):
        again = await connect_beneficiary(running, session_id)
        await volunteer.expect("peer-joined")
        await again.close()
    session = await load(running, session_id)
    assert session.reconnect_count == rejoins
    async with running.sessionmaker() as db:
        kinds = (await db.scalars(select(StatEvent.kind))).all()
    assert kinds.count("reconnected") == MAX_RECORDED_PER_SESSION


# --- refusals ----------------------------------------------------------------------------------


async def test_beneficiary_with_a_wrong_or_expired_join_token_is_refused_as_unauthorized(
    running: Running, session_id: str
) -> None:
    wrong = await refusal(running, auth={"join_token": "not-the-token-aaaaaaaaaaaaaaaaaaaaa"})
    assert wrong["code"] == "unauthorized"
    assert (await refusal(running, auth={}))["code"] == "unauthorized"
    assert (await refusal(running, auth={"join_token": "x" * 5000}))["code"] == "unauthorized"

    token = await join_token(running, session_id)
    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        session.expires_at = utcnow() - timedelta(seconds=1)
    expired = await refusal(running, auth={"join_token": token})
    assert expired["code"] == "unauthorized"
    assert isinstance(expired["message"], str) and expired["message"]
    assert (await load(running, session_id)).beneficiary_sid is None


async def test_forged_login_cookie_is_refused_as_unauthorized(
    running: Running, session_id: str
) -> None:
    refused = await refusal(
        running, auth={"session_id": session_id}, cookie="vp_session=forged-login-token"
    )
    assert refused["code"] == "unauthorized"


async def test_volunteer_cannot_connect_to_another_volunteers_session(
    running: Running, session_id: str
) -> None:
    other = await make_account(running, "intrus@example.org")
    intruder = await browser_session()
    try:
        await login(intruder, running, other)
        refused = await refusal(
            running, auth={"session_id": session_id}, cookie=login_cookie(intruder, running)
        )
    finally:
        await intruder.close()
    assert refused["code"] == "forbidden"
    assert (await load(running, session_id)).volunteer_sid is None


async def test_beneficiary_cannot_address_a_peer_of_another_session(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    other_session = await create_assistance(http, running)
    other_volunteer, other_beneficiary = await pair(running, http, other_session, peers)

    await beneficiary.emit("offer", {"to": other_volunteer.peer_id, "sdp": SDP})
    await expect_error(beneficiary, "not_in_room", "offer")
    await beneficiary.emit(
        "candidate",
        {"to": other_beneficiary.peer_id, "candidate": "", "sdpMid": None, "sdpMLineIndex": None},
    )
    await expect_error(beneficiary, "not_in_room", "candidate")
    await beneficiary.emit("answer", {"to": beneficiary.peer_id, "sdp": SDP})
    await expect_error(beneficiary, "not_in_room", "answer")

    for peer in (other_volunteer, other_beneficiary, volunteer):
        await peer.expect_nothing()
    # Nothing but their own session's announcements, ever.
    assert other_volunteer.events() == ["welcome", "peer-joined"]
    assert other_beneficiary.events() == ["welcome"]


async def test_invited_observer_connects_with_the_observer_role(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    trainee = await make_account(running, "stagiaire@example.org")
    await invite_observer(http, running, session_id, trainee.email)

    trainee_http = await browser_session()
    try:
        await login(trainee_http, running, trainee)
        observer = peers.add(await connect_volunteer(running, trainee_http, session_id))
    finally:
        await trainee_http.close()
    assert observer.role == "observer"
    assert sorted(observer.welcome["peers"], key=lambda p: p["role"]) == [
        {"peer_id": beneficiary.peer_id, "role": "beneficiary"},
        {"peer_id": volunteer.peer_id, "role": "volunteer"},
    ]
    joined = {"peer_id": observer.peer_id, "role": "observer"}
    assert await volunteer.expect("peer-joined") == joined
    assert await beneficiary.expect("peer-joined") == joined

    # The beneficiary offers to the observer too (one RTCPeerConnection per volunteer peer).
    await beneficiary.emit("offer", {"to": observer.peer_id, "sdp": SDP})
    assert await observer.expect("offer") == {"from": beneficiary.peer_id, "sdp": SDP}
    # Watching is not running the session: an observer cannot end it.
    await observer.emit("end", {})
    await expect_error(observer, "forbidden", "end")
    await volunteer.expect_nothing("ended")
    assert (await load(running, session_id)).observer_sid == observer.peer_id


async def test_beneficiary_cannot_end_the_session(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    await beneficiary.emit("end", {})
    await expect_error(beneficiary, "forbidden", "end")
    await volunteer.expect_nothing("ended", "peer-left")
    assert (await load(running, session_id)).status is SessionStatus.CONNECTED


async def test_only_the_beneficiary_may_send_state(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    await volunteer.emit("state", {"state": "paused", "media": None})
    await expect_error(volunteer, "forbidden", "state")
    await beneficiary.expect_nothing("state")
    session = await load(running, session_id)
    assert session.status is SessionStatus.CONNECTED and session.pause_count == 0


async def test_unknown_events_and_malformed_or_oversized_payloads_get_an_error_and_go_nowhere(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    to = volunteer.peer_id
    refused: list[tuple[str, Any, str]] = [
        ("hello", {"to": to}, "unknown_event"),
        ("welcome", {"peer_id": "x"}, "unknown_event"),
        ("offer", "v=0", "malformed"),
        ("offer", [to, SDP], "malformed"),
        ("offer", None, "malformed"),
        ("offer", ({"to": to, "sdp": SDP}, "extra argument"), "malformed"),
        ("offer", {"to": to, "sdp": 42}, "malformed"),
        ("offer", {"to": to, "sdp": SDP, "restart": "yes"}, "malformed"),
        ("offer", {"to": to, "sdp": SDP, "extra": 1}, "malformed"),
        ("offer", {"to": "../" + to, "sdp": SDP}, "malformed"),
        ("answer", {"to": to}, "malformed"),
        ("candidate", {"to": to, "candidate": "", "sdpMid": "0", "sdpMLineIndex": 65}, "malformed"),
        ("state", {"state": "dancing", "media": "screen"}, "malformed"),
        ("bye", {"reason": "whatever"}, "malformed"),
        ("offer", {"to": to, "sdp": "x" * 65_537}, "too_large"),
        ("offer", {"to": to, "sdp": SDP, "padding": "y" * 80_000}, "too_large"),
        (
            "candidate",
            {"to": to, "candidate": "c" * 2049, "sdpMid": None, "sdpMLineIndex": None},
            "too_large",
        ),
    ]
    for event, payload, code in refused:
        await beneficiary.emit(event, payload)
        error = await expect_error(beneficiary, code, event)
        assert len(error["message"]) < 1000  # bounded, never an echo of a huge payload
    await volunteer.expect_nothing()
    assert volunteer.events() == ["welcome", "peer-joined"]
    assert beneficiary.client.connected
    session = await load(running, session_id)
    assert session.status is SessionStatus.CONNECTED and session.media_kinds == []


async def test_client_events_named_connect_or_disconnect_cannot_fake_a_departure(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    await beneficiary.emit("disconnect", "transport close")
    await expect_error(beneficiary, "unknown_event", "disconnect")
    await beneficiary.emit("connect", {"join_token": "x"})
    await expect_error(beneficiary, "unknown_event", "connect")

    await volunteer.expect_nothing("peer-left", "peer-joined")
    session = await load(running, session_id)
    assert session.beneficiary_sid == beneficiary.peer_id
    assert session.status is SessionStatus.CONNECTED
    await beneficiary.emit("offer", {"to": volunteer.peer_id, "sdp": SDP})
    assert (await volunteer.expect("offer"))["from"] == beneficiary.peer_id


async def test_a_peer_that_keeps_sending_garbage_is_disconnected(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    for index in range(60):
        if beneficiary.disconnected.is_set():
            break
        await beneficiary.emit(f"garbage-{index}", {})
    await beneficiary.expect_disconnected()
    # 50 refusals a minute are tolerated (SOCKET_ERRORS_PER_PEER); the next one disconnects.
    # A few more may be answered: events already in flight are handled concurrently.
    assert beneficiary.queues["error"].qsize() >= 50
    # The flood was only refused: the others see a plain disconnection.
    left = await volunteer.expect("peer-left")
    assert left == {"peer_id": beneficiary.peer_id, "role": "beneficiary", "reason": "disconnected"}


# --- replacement, reconnection, leaving ----------------------------------------------------------


async def test_second_beneficiary_connection_replaces_the_first(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, first = await pair(running, http, session_id, peers)
    second = peers.add(await connect_beneficiary(running, session_id))

    assert await first.expect("ended") == {"reason": "replaced"}
    await first.expect_disconnected()
    assert await volunteer.expect("peer-left") == {
        "peer_id": first.peer_id,
        "role": "beneficiary",
        "reason": "replaced",
    }
    joined = await volunteer.expect("peer-joined")
    assert {k: joined[k] for k in ("peer_id", "role")} == {
        "peer_id": second.peer_id,
        "role": "beneficiary",
    }
    assert volunteer.events()[-2:] == ["peer-left", "peer-joined"]  # in that order
    assert second.welcome["peers"] == [{"peer_id": volunteer.peer_id, "role": "volunteer"}]
    # The replaced connection is not reported a second time as "disconnected".
    await volunteer.expect_nothing("peer-left")

    session = await load(running, session_id)
    assert session.beneficiary_sid == second.peer_id
    assert session.reconnect_count == 1
    assert session.status is SessionStatus.CONNECTED
    await first.expect_nothing("offer")
    await volunteer.emit("answer", {"to": first.peer_id, "sdp": SDP})
    await expect_error(volunteer, "not_in_room", "answer")


async def test_reload_racing_the_old_connections_drop_keeps_the_new_connection(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, current = await pair(running, http, session_id, peers)
    for _round in range(4):
        old = current
        current, _closed = await asyncio.gather(
            connect_beneficiary(running, session_id), old.close()
        )
        peers.add(current)
        left = await volunteer.expect("peer-left")
        assert left["peer_id"] == old.peer_id and left["reason"] in ("replaced", "disconnected")
        joined = await volunteer.expect("peer-joined")
        assert {k: joined[k] for k in ("peer_id", "role")} == {
            "peer_id": current.peer_id,
            "role": "beneficiary",
        }
        session = await load(running, session_id)
        assert session.beneficiary_sid == current.peer_id
        assert session.status is SessionStatus.CONNECTED
    await volunteer.expect_nothing("peer-left", "peer-joined")
    # The last connection still counts as the beneficiary: its drop is announced.
    await current.close()
    assert (await volunteer.expect("peer-left"))["peer_id"] == current.peer_id


async def test_beneficiary_disconnect_shows_reconnecting_and_reconnect_restores_the_session(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    await beneficiary.close()

    assert await volunteer.expect("peer-left") == {
        "peer_id": beneficiary.peer_id,
        "role": "beneficiary",
        "reason": "disconnected",
    }
    session = await load(running, session_id)
    assert session.status is SessionStatus.RECONNECTING
    assert session.beneficiary_sid is None
    assert session.reconnect_count == 0

    back = peers.add(await connect_beneficiary(running, session_id))
    assert await volunteer.expect("peer-joined") == {
        "peer_id": back.peer_id,
        "role": "beneficiary",
        "name": NAME,  # kept from the first join: the volunteer still sees who is back
    }
    assert back.welcome["session"]["beneficiary_name"] == NAME
    session = await load(running, session_id)
    assert session.reconnect_count == 1
    assert session.status is SessionStatus.CONNECTED
    assert session.beneficiary_sid == back.peer_id
    async with running.sessionmaker() as db:
        kinds = (await db.scalars(select(StatEvent.kind))).all()
    assert kinds.count("reconnected") == 1


async def test_bye_tells_the_others_the_peer_left_for_good(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    await beneficiary.emit("bye", {"reason": "left"})
    await beneficiary.expect_disconnected()
    assert await volunteer.expect("peer-left") == {
        "peer_id": beneficiary.peer_id,
        "role": "beneficiary",
        "reason": "left",
    }
    await volunteer.expect_nothing("peer-left")
    assert (await load(running, session_id)).beneficiary_sid is None


# --- nothing left behind -------------------------------------------------------------------------


async def test_assistances_that_come_and_go_leave_no_socket_state_behind(
    running: Running, http: aiohttp.ClientSession, volunteer: Account
) -> None:
    """Five assistances joined, relayed, left and ended: the rooms, the Socket.IO sessions and
    the volunteers' logins behind the sockets are empty again (a long-running server must not
    grow)."""
    await login(http, running, volunteer)
    sio = running.app[SIO_KEY]
    for _ in range(5):
        session_id = await create_assistance(http, running)
        async with PeerSet() as peers:
            volunteer_peer, beneficiary = await pair(running, http, session_id, peers)
            candidate = {"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}
            await beneficiary.emit("candidate", {"to": volunteer_peer.peer_id, **candidate})
            await volunteer_peer.expect("candidate")
            await beneficiary.emit("bye", {"reason": "left"})
            await beneficiary.expect_disconnected()
            await volunteer_peer.emit("end", {})
            await volunteer_peer.expect("ended")
            await volunteer_peer.expect_disconnected()
    for _ in range(100):  # the server side of the disconnections
        if not sio.eio.sockets:
            break
        await asyncio.sleep(0.05)
    rooms = sio.namespace_handlers["/assist"]
    assert isinstance(rooms, AssistNamespace)
    assert not sio.eio.sockets
    assert not sio.environ
    assert not sio.manager.rooms.get("/assist")
    assert len(rooms.logins) == 0


# --- ending --------------------------------------------------------------------------------------


async def test_volunteer_end_ends_it_for_everyone_records_duration_and_no_personal_data(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    trainee = await make_account(running, "stagiaire@example.org")
    await invite_observer(http, running, session_id, trainee.email)
    trainee_http = await browser_session()
    try:
        await login(trainee_http, running, trainee)
        observer = peers.add(await connect_volunteer(running, trainee_http, session_id))
        await beneficiary.emit("state", {"state": "sharing", "media": "screen"})
        await volunteer.expect("state")

        await volunteer.emit("end", {})
        for peer in (volunteer, beneficiary, observer):
            assert await peer.expect("ended") == {"reason": "volunteer"}
            await peer.expect_disconnected()
        # Ending is not leaving: nobody is told "reconnexion…".
        for peer in (volunteer, beneficiary, observer):
            assert peer.queues["peer-left"].empty()

        session = await load(running, session_id)
        assert session.status is SessionStatus.ENDED
        assert session.end_reason == "volunteer"
        assert session.ended_at is not None
        assert (session.beneficiary_sid, session.volunteer_sid, session.observer_sid) == (
            None,
            None,
            None,
        )
        async with running.sessionmaker() as db:
            events = (await db.scalars(select(StatEvent).order_by(StatEvent.id))).all()
        ended = [event for event in events if event.kind == "session_ended"]
        assert len(ended) == 1
        assert ended[0].duration_seconds is not None and ended[0].duration_seconds >= 0
        columns = [column.key for column in StatEvent.__table__.columns]
        for event in events:
            for column in columns:
                assert NAME.lower() not in str(getattr(event, column)).lower(), (event.kind, column)

        # Once ended, nobody gets back in.
        for browser in (http, trainee_http):
            cookie = login_cookie(browser, running)
            again = await refusal(running, auth={"session_id": session_id}, cookie=cookie)
            assert again["code"] == "session_ended"
        token = await join_token(running, session_id)
        assert (await refusal(running, auth={"join_token": token}))["code"] == "unauthorized"
    finally:
        await trainee_http.close()


async def test_http_end_emits_ended_to_connected_peers(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    async with http.get(running.url(f"/assistance/{session_id}")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url(f"/assistance/{session_id}/end"),
        data={"csrf_token": token},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303

    assert await volunteer.expect("ended") == {"reason": "volunteer"}
    assert await beneficiary.expect("ended") == {"reason": "volunteer"}
    assert (await load(running, session_id)).status is SessionStatus.ENDED
    assert (await refusal(running, auth={"join_token": await join_token(running, session_id)}))[
        "code"
    ] == "unauthorized"


async def test_http_end_also_disconnects_the_peers(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    _volunteer, beneficiary = await pair(running, http, session_id, peers)
    async with http.get(running.url(f"/assistance/{session_id}")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url(f"/assistance/{session_id}/end"),
        data={"csrf_token": token},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
    await beneficiary.expect("ended")
    await beneficiary.expect_disconnected(seconds=1.0)


async def _observer(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet, email: str
) -> tuple[SignalPeer, Any]:
    """Invite `email` as observer through the form and connect it; (peer, account)."""
    trainee = await make_account(running, email)
    await invite_observer(http, running, session_id, trainee.email)
    trainee_http = await browser_session()
    try:
        await login(trainee_http, running, trainee)
        observer = peers.add(await connect_volunteer(running, trainee_http, session_id))
    finally:
        await trainee_http.close()
    assert observer.role == "observer"
    return observer, trainee


async def test_an_observer_cannot_pose_as_the_beneficiary_to_the_volunteer(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    observer, _account = await _observer(running, http, session_id, peers, "obs@example.org")
    await volunteer.expect("peer-joined")
    await observer.emit("offer", {"to": volunteer.peer_id, "sdp": SDP})
    await expect_error(observer, "forbidden", "offer")
    # Offers come from the beneficiary only, answers from the volunteer side only.
    await observer.emit("offer", {"to": beneficiary.peer_id, "sdp": SDP})
    await expect_error(observer, "forbidden", "offer")
    await beneficiary.emit("answer", {"to": volunteer.peer_id, "sdp": SDP})
    await expect_error(beneficiary, "forbidden", "answer")
    await volunteer.expect_nothing("offer")


async def test_replacing_the_observer_disconnects_the_old_one_at_once(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    await pair(running, http, session_id, peers)
    first, _account = await _observer(running, http, session_id, peers, "obs1@example.org")
    second_account = await make_account(running, "obs2@example.org")
    await invite_observer(http, running, session_id, second_account.email)
    assert await first.expect("ended") == {"reason": "revoked"}
    await first.expect_disconnected()
    session = await load(running, session_id)
    assert session.observer_id == second_account.user.id and session.observer_sid is None


async def test_deactivating_an_account_cuts_its_open_sockets(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    observer, account = await _observer(running, http, session_id, peers, "obs@example.org")
    coordinator = await make_account(running, "coord@example.org", Role.COORDINATOR)
    coord_http = await browser_session()
    try:
        await login(coord_http, running, coordinator)
        async with coord_http.get(running.url("/benevoles")) as resp:
            token = csrf_from(await resp.text())
        async with coord_http.post(
            running.url(f"/benevoles/{account.user.id}/desactiver"),
            data={"csrf_token": token},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
        assert await observer.expect("ended") == {"reason": "revoked"}
        await observer.expect_disconnected()
        # Deactivating the volunteer who runs the session ends it for everyone.
        async with coord_http.post(
            running.url(f"/benevoles/{volunteer_id(await load(running, session_id))}/desactiver"),
            data={"csrf_token": token},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
    finally:
        await coord_http.close()
    assert await beneficiary.expect("ended") == {"reason": "volunteer"}
    await volunteer.expect_disconnected()
    assert (await load(running, session_id)).status is SessionStatus.ENDED


def volunteer_id(session: AssistanceSession) -> int:
    """The id of the volunteer running a session."""
    return session.volunteer_id


async def test_a_referrer_cannot_be_invited_as_observer(
    running: Running, http: aiohttp.ClientSession, session_id: str
) -> None:
    referrer = await make_account(running, "ref@ccas.example.org", Role.REFERRER)
    async with http.get(running.url(f"/assistance/{session_id}")) as resp:
        token = csrf_from(await resp.text())
    async with http.post(
        running.url(f"/assistance/{session_id}/observer"),
        data={"csrf_token": token, "email": referrer.email},
    ) as resp:
        assert resp.status == 400
    assert (await load(running, session_id)).observer_id is None


async def test_an_observer_is_not_shown_the_join_link_or_code(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    trainee = await make_account(running, "obs@example.org")
    await invite_observer(http, running, session_id, trainee.email)
    session = await load(running, session_id)
    link = link_for(running.settings, session)
    code = current_code(running.settings, session)
    trainee_http = await browser_session()
    try:
        await login(trainee_http, running, trainee)
        async with trainee_http.get(running.url(f"/assistance/{session_id}")) as resp:
            assert resp.status == 200
            page = await resp.text()
    finally:
        await trainee_http.close()
    assert code is not None and link.rsplit("/", 1)[1] not in page and code not in page


async def test_a_reconnection_loop_is_cut_before_it_floods_the_statistics(
    running: Running, http: aiohttp.ClientSession, session_id: str
) -> None:
    token = await join_token(running, session_id)
    codes = []
    for _ in range(32):
        try:
            peer = await connect_beneficiary(running, session_id)
        except Refused:
            codes.append((await refusal(running, auth={"join_token": token}))["code"])
            break
        await peer.close()
    assert codes == ["rate_limited"]
    async with running.sessionmaker() as db:
        joins = (await db.scalars(select(StatEvent.kind))).all()
    assert joins.count("reconnected") < 30


async def test_an_expired_session_relays_nothing_more_and_ends(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> None:
    volunteer, beneficiary = await pair(running, http, session_id, peers)
    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        session.expires_at = utcnow() - timedelta(seconds=1)
    # The peers' seats on the node still hold the old expiry: push it into the past as well,
    # as time itself would.
    namespace = running.app[SIO_KEY].namespace_handlers["/assist"]
    assert isinstance(namespace, AssistNamespace)
    for peer in (volunteer, beneficiary):
        seat = namespace._seats[peer.peer_id]
        namespace._seats[peer.peer_id] = replace(seat, expires_at=utcnow().timestamp() - 1)
    await beneficiary.emit("offer", {"to": volunteer.peer_id, "sdp": SDP})
    assert await volunteer.expect("ended") == {"reason": "expired"}
    assert await beneficiary.expect("ended") == {"reason": "expired"}
    await volunteer.expect_nothing("offer")
    assert (await load(running, session_id)).status is SessionStatus.ENDED
