"""Real aiortc peers signalling through the real server: the beneficiary's screen reaches the
volunteer, the volunteer's pointer reaches the beneficiary, renegotiation keeps media flowing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from itertools import pairwise

import aiohttp
import aioice.ice
import av
import pytest

from signaling.messages import Pointer, decode_datachannel, encode_datachannel
from tests.conftest import Running
from tests.peers import (
    PatternTrack,
    PeerSet,
    RtcPeer,
    SignalPeer,
    connect_beneficiary,
    connect_volunteer,
    decoded_frames,
    join_token,
    pts_seconds,
)

# Media does not touch the database: SQLite only, so each aiortc scenario runs once.
pytestmark = [pytest.mark.webrtc, pytest.mark.parametrize("backend", ["sqlite"])]

FRAMES = 10


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gather host candidates on loopback only (NOTES.md: other interfaces stall gathering)."""

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback)


@pytest.fixture
async def signals(
    running: Running, http: aiohttp.ClientSession, session_id: str
) -> AsyncIterator[tuple[SignalPeer, SignalPeer]]:
    """Volunteer and beneficiary Socket.IO peers of the session, closed at the end."""
    async with PeerSet() as peers:
        volunteer = peers.add(await connect_volunteer(running, http, session_id))
        beneficiary = peers.add(await connect_beneficiary(running, session_id))
        await volunteer.expect("peer-joined")
        yield volunteer, beneficiary


def assert_frames_advance(frames: list[av.VideoFrame], after: float = -1.0) -> None:
    """Real decoded pictures whose timestamps strictly increase (after ``after`` seconds)."""
    assert len(frames) >= FRAMES
    for frame in frames:
        assert (frame.width, frame.height) == (320, 240)
        assert sum(plane.buffer_size for plane in frame.planes) > 0
    stamps = [pts_seconds(frame) for frame in frames]
    assert stamps[0] > after
    assert all(a < b for a, b in pairwise(stamps)), stamps
    # The pattern moves: the last picture is not the first one again.
    assert bytes(frames[0].planes[0]) != bytes(frames[-1].planes[0])


async def test_volunteer_decodes_the_shared_screen_and_its_pointer_reaches_the_beneficiary(
    signals: tuple[SignalPeer, SignalPeer],
) -> None:
    volunteer_signal, beneficiary_signal = signals
    beneficiary = RtcPeer(beneficiary_signal)
    volunteer = RtcPeer(volunteer_signal)
    try:
        video = beneficiary.add_beneficiary_media()
        await beneficiary.send_offer(to=volunteer_signal.peer_id)
        offer = await volunteer.answer_offer()
        assert offer["from"] == beneficiary_signal.peer_id
        answer = await beneficiary.accept_answer()
        assert answer["from"] == volunteer_signal.peer_id

        directions = {t.kind: t.currentDirection for t in volunteer.pc.getTransceivers()}
        assert directions == {"video": "recvonly", "audio": "sendrecv"}
        # Sharing starts without renegotiating: the screen track is put in the sendonly slot.
        screen = PatternTrack()
        video.sender.replaceTrack(screen)
        await beneficiary_signal.emit("state", {"state": "sharing", "media": "screen"})
        assert (await volunteer_signal.expect("state"))["media"] == "screen"

        track = await volunteer.video_track()
        assert_frames_advance(await decoded_frames(track, FRAMES))

        channel = await volunteer.wait_channel_open()
        assert channel.label == "assist" and channel.ordered
        pointer = Pointer(x=0.25, y=0.75, kind="click")
        channel.send(encode_datachannel(pointer))
        assert decode_datachannel(await beneficiary.next_message()) == pointer
    finally:
        await volunteer.close()
        await beneficiary.close()


async def test_renegotiation_offer_flagged_restart_is_answered_and_media_keeps_flowing(
    signals: tuple[SignalPeer, SignalPeer],
) -> None:
    volunteer_signal, beneficiary_signal = signals
    beneficiary = RtcPeer(beneficiary_signal)
    volunteer = RtcPeer(volunteer_signal)
    try:
        video = beneficiary.add_beneficiary_media()
        video.sender.replaceTrack(PatternTrack())
        await beneficiary.send_offer(to=volunteer_signal.peer_id)
        await volunteer.answer_offer()
        await beneficiary.accept_answer()
        track = await volunteer.video_track()
        before = await decoded_frames(track, FRAMES)
        assert_frames_advance(before)

        # What the page does after a socket reconnection. aiortc has no restartIce(), so the
        # ICE credentials stay the same; the offer/answer round trip and the flag are real.
        await beneficiary.send_offer(to=volunteer_signal.peer_id, restart=True)
        second_offer = await volunteer.answer_offer()
        assert second_offer["restart"] is True
        await beneficiary.accept_answer()
        assert beneficiary.pc.signalingState == volunteer.pc.signalingState == "stable"

        after = await decoded_frames(track, FRAMES)
        assert_frames_advance(after, after=float(pts_seconds(before[-1])))
        assert volunteer.pc.connectionState == "connected"
    finally:
        await volunteer.close()
        await beneficiary.close()


async def test_beneficiary_gets_turn_credentials_with_its_join_token(
    running: Running, http: aiohttp.ClientSession, session_id: str
) -> None:
    token = await join_token(running, session_id)
    async with aiohttp.ClientSession() as client:
        async with client.get(
            running.url("/api/ice-servers"), headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
        async with client.get(
            running.url("/api/ice-servers"), headers={"Authorization": "Bearer " + "A" * 32}
        ) as resp:
            assert resp.status == 403
    turn = next(server for server in body["iceServers"] if "credential" in server)
    assert turn["urls"] == ["turn:127.0.0.1:3478?transport=udp"]
    expiry, owner = turn["username"].split(":")
    assert owner == session_id
    assert int(expiry) > time.time()
    assert int(expiry) <= time.time() + body["ttl"] + 5
    assert turn["credential"]
