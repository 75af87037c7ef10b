"""Real test peers for the `/assist` namespace: authenticated python-socketio clients that record
what they receive, and an aiortc peer wrapper that signals through them. Nothing is mocked."""

from __future__ import annotations

import asyncio
import fractions
from collections import defaultdict
from collections.abc import Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import aiohttp
import av
import socketio
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack
from yarl import URL

from server import assist
from server.dropin.board import apply_queue_delta
from server.passes import LOGIN_COOKIE
from server.store.models import AssistanceSession

if TYPE_CHECKING:  # conftest imports this module for its fixtures
    from tests.conftest import Running

NAMESPACE = "/assist"
EVENT_TIMEOUT = 5.0
QUIET_PERIOD = 0.3
"""How long "nothing arrives" is watched for when proving that something was not delivered."""


# --- Socket.IO peers ---------------------------------------------------------------------------


class Refused(Exception):
    """The server refused the connection with ``connect_error`` data ``{"code", "message"}``."""

    def __init__(self, data: object) -> None:
        super().__init__(data)
        self.data = data


class SignalPeer:
    """A real python-socketio AsyncClient (on `/assist` unless told) that queues every event it
    receives."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self.client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self.received: list[tuple[str, Any]] = []
        self.queues: defaultdict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self.disconnected = asyncio.Event()
        self.connect_error: object = None
        self.welcome: dict[str, Any] = {}
        # `/queue`: the volunteers' view as the page keeps it (whole `queue`, then each
        # `queue_delta` applied); every delta's result is also queued as a `queue` event.
        self.queue_view: dict[str, Any] | None = None
        self.queue_gaps: list[dict[str, Any]] = []
        self.client.on("*", self._record, namespace=namespace)
        self.client.on("connect_error", self._refused, namespace=namespace)
        self.client.on("disconnect", self._gone, namespace=namespace)

    async def _record(self, event: str, *args: Any) -> None:
        data = args[0] if len(args) == 1 else list(args)
        self.received.append((event, data))
        self.queues[event].put_nowait(data)
        if event == "queue":
            self.queue_view = data
        elif event == "queue_delta":
            self._apply_delta(data)

    def _apply_delta(self, delta: dict[str, Any]) -> None:
        """What the volunteer's page does with a `queue_delta`: apply it to its view when it
        follows it, ignore one already included, and note a gap (the page then asks)."""
        view = self.queue_view
        if view is not None and delta["version"] <= view["version"]:
            return
        if view is None or delta["base"] != view["version"]:
            self.queue_gaps.append(delta)
            return
        self.queue_view = apply_queue_delta(view, delta)
        self.queues["queue"].put_nowait(self.queue_view)

    async def _refused(self, data: object = None) -> None:
        self.connect_error = data

    async def _gone(self, reason: object = None) -> None:
        self.disconnected.set()

    @property
    def peer_id(self) -> str:
        """The sid the server gave this peer (from ``welcome``)."""
        return str(self.welcome["peer_id"])

    @property
    def role(self) -> str:
        """The role the server gave this peer (from ``welcome``)."""
        return str(self.welcome["role"])

    def events(self) -> list[str]:
        """Names of all events received so far, in order."""
        return [event for event, _data in self.received]

    async def expect(self, event: str, seconds: float = EVENT_TIMEOUT) -> Any:
        """The next not yet consumed ``event``, waiting for it at most ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                return await self.queues[event].get()
        except TimeoutError:
            raise AssertionError(
                f"{self.welcome.get('role', 'peer')} got no {event!r} within {seconds} s; "
                f"received so far: {self.events()}"
            ) from None

    async def expect_nothing(self, *events: str, within: float = QUIET_PERIOD) -> None:
        """Prove non-delivery: none of ``events`` (any event if none given) is pending, and none
        arrives within ``within`` seconds."""
        names = events or None
        already = len(self.received)
        pending = [name for name, queue in self.queues.items() if not queue.empty()]
        await asyncio.sleep(within)
        late = [name for name, _data in self.received[already:]]
        unexpected = [name for name in pending + late if names is None or name in names]
        assert not unexpected, f"{self.welcome.get('role', 'peer')} received {unexpected}"

    async def expect_disconnected(self, seconds: float = EVENT_TIMEOUT) -> None:
        """Wait until the server has disconnected this peer."""
        try:
            async with asyncio.timeout(seconds):
                await self.disconnected.wait()
        except TimeoutError:
            raise AssertionError(f"still connected after {seconds} s") from None

    async def emit(self, event: str, data: Any = None) -> None:
        """Send one client event (``data`` may be a tuple for several arguments)."""
        await self.client.emit(event, data, namespace=self.namespace)

    async def call(self, event: str, data: Any = None) -> Any:
        """Send one client event and return the server's acknowledgement."""
        return await self.client.call(event, data, namespace=self.namespace, timeout=EVENT_TIMEOUT)

    async def close(self) -> None:
        """Disconnect (idempotent) and let the client's transport close."""
        if self.client.connected:
            await self.client.disconnect()
        # The client shuts its engine.io transport down in background; wait for it so that no
        # socket or task outlives the test.
        with suppress(TimeoutError):
            async with asyncio.timeout(EVENT_TIMEOUT):
                await self.client.eio.wait()


async def connect_peer(
    running: Running,
    *,
    auth: Mapping[str, object] | None = None,
    cookie: str | None = None,
    welcome: bool = True,
    namespace: str = NAMESPACE,
) -> SignalPeer:
    """Connect a real Socket.IO client to `/assist` (or `namespace`); raise :class:`Refused` on
    connect_error. With ``welcome`` (the default) it also waits for the server's ``welcome``.
    """
    peer = SignalPeer(namespace)
    headers = {"Cookie": cookie} if cookie else {}
    try:
        await peer.client.connect(
            running.base_url,
            headers=headers,
            auth=dict(auth) if auth is not None else None,
            namespaces=[namespace],
            transports=["websocket"],
            wait_timeout=EVENT_TIMEOUT,
        )
    except socketio.exceptions.ConnectionError:
        await peer.close()
        if peer.connect_error is not None:
            raise Refused(peer.connect_error) from None
        raise
    if welcome:
        try:
            peer.welcome = await peer.expect("welcome")
        except BaseException:
            await peer.close()
            raise
    return peer


async def refusal(
    running: Running,
    *,
    auth: Mapping[str, object] | None = None,
    cookie: str | None = None,
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    """The ``connect_error`` data of a connection the server must refuse."""
    try:
        peer = await connect_peer(
            running, auth=auth, cookie=cookie, welcome=False, namespace=namespace
        )
    except Refused as exc:
        assert isinstance(exc.data, dict), exc.data
        return exc.data
    await peer.close()
    raise AssertionError("the connection was accepted")


def login_cookie(http: aiohttp.ClientSession, running: Running) -> str:
    """The ``Cookie`` header value carrying a logged-in browser's ``vp_session``."""
    cookies = http.cookie_jar.filter_cookies(URL(running.base_url))
    return f"{LOGIN_COOKIE}={cookies[LOGIN_COOKIE].value}"


async def join_token(running: Running, session_id: str) -> str:
    """The token of the session's `/j/<token>` link, as the volunteer hands it out."""
    async with running.sessionmaker() as db:
        session = await db.get_one(AssistanceSession, session_id)
    return assist.link_for(running.settings, session).rsplit("/", 1)[1]


async def connect_volunteer(
    running: Running, http: aiohttp.ClientSession, session_id: str
) -> SignalPeer:
    """The logged-in browser ``http`` joins its assistance as volunteer (or observer)."""
    return await connect_peer(
        running, auth={"session_id": session_id}, cookie=login_cookie(http, running)
    )


async def connect_beneficiary(
    running: Running, session_id: str, name: str | None = None
) -> SignalPeer:
    """A beneficiary joins with the session's join-link token (as a non-browser client does)."""
    auth: dict[str, object] = {"join_token": await join_token(running, session_id)}
    if name is not None:
        auth["name"] = name
    return await connect_peer(running, auth=auth)


class PeerSet:
    """Closes every peer opened through it; use as ``async with PeerSet() as peers``."""

    def __init__(self) -> None:
        self._peers: list[SignalPeer] = []

    def add(self, peer: SignalPeer) -> SignalPeer:
        """Track ``peer`` so it is closed on exit; returns it."""
        self._peers.append(peer)
        return peer

    async def __aenter__(self) -> PeerSet:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.gather(*(peer.close() for peer in self._peers))


async def pair(
    running: Running, http: aiohttp.ClientSession, session_id: str, peers: PeerSet
) -> tuple[SignalPeer, SignalPeer]:
    """The volunteer, then the beneficiary, connected to the session's room."""
    volunteer = peers.add(await connect_volunteer(running, http, session_id))
    beneficiary = peers.add(await connect_beneficiary(running, session_id))
    await volunteer.expect("peer-joined")
    return volunteer, beneficiary


# --- aiortc peers -------------------------------------------------------------------------------


class PatternTrack(VideoStreamTrack):
    """A synthetic "screen": a moving bar over a gradient, so each frame differs from the last."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self.frames_sent = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        luma, chroma_u, chroma_v = frame.planes
        bar = (self.frames_sent * 8) % self.width
        row = bytes(
            255 if bar <= x < bar + 16 else (x * 255) // self.width for x in range(luma.line_size)
        )
        luma.update(row * self.height)
        chroma_u.update(bytes([(self.frames_sent * 5) % 256]) * chroma_u.buffer_size)
        chroma_v.update(bytes([128]) * chroma_v.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.frames_sent += 1
        return frame


class RtcPeer:
    """An aiortc RTCPeerConnection on loopback whose signalling goes through a SignalPeer."""

    def __init__(self, signal: SignalPeer) -> None:
        self.signal = signal
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel: RTCDataChannel | None = None
        self.channel_open = asyncio.Event()
        self.messages: asyncio.Queue[str] = asyncio.Queue()
        self.tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
        self.pc.on("track", self.tracks.put_nowait)
        self.pc.on("datachannel", self._adopt_channel)

    def _adopt_channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.on("message", self.messages.put_nowait)
        if channel.readyState == "open":
            self.channel_open.set()
        channel.on("open", self.channel_open.set)

    # -- beneficiary side (the offerer, per PROTOCOL.md) --

    def add_beneficiary_media(self) -> RTCRtpTransceiver:
        """Video ``sendonly`` (its track comes later by replaceTrack), audio ``sendrecv`` with a
        silent microphone, and the ordered ``assist`` data channel; returns the video one."""
        video = self.pc.addTransceiver("video", direction="sendonly")
        self.pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        self._adopt_channel(self.pc.createDataChannel("assist", ordered=True))
        return video

    async def send_offer(self, to: str, restart: bool = False) -> None:
        """Create and send an offer (aiortc puts every candidate in the SDP, no trickle)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        payload: dict[str, object] = {"to": to, "sdp": self.pc.localDescription.sdp}
        if restart:
            payload["restart"] = True
        await self.signal.emit("offer", payload)

    async def accept_answer(self) -> dict[str, Any]:
        """Wait for the relayed answer and apply it; returns the relayed payload."""
        answer = await self.signal.expect("answer")
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        return dict(answer)

    # -- volunteer side (answers) --

    async def answer_offer(self) -> dict[str, Any]:
        """Wait for the relayed offer, answer it with a silent microphone; returns the offer."""
        offer = await self.signal.expect("offer")
        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        if not any(sender.track for sender in self.pc.getSenders()):
            self.pc.addTrack(AudioStreamTrack())
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.signal.emit("answer", {"to": offer["from"], "sdp": self.pc.localDescription.sdp})
        return dict(offer)

    async def video_track(self, seconds: float = EVENT_TIMEOUT) -> MediaStreamTrack:
        """The first remote video track."""
        async with asyncio.timeout(seconds):
            while True:
                track = await self.tracks.get()
                if track.kind == "video":
                    return track

    async def wait_channel_open(self, seconds: float = EVENT_TIMEOUT) -> RTCDataChannel:
        """The ``assist`` data channel once open."""
        async with asyncio.timeout(seconds):
            await self.channel_open.wait()
        assert self.channel is not None
        return self.channel

    async def next_message(self, seconds: float = EVENT_TIMEOUT) -> str:
        """The next text message received on the data channel."""
        async with asyncio.timeout(seconds):
            return await self.messages.get()

    async def close(self) -> None:
        """Close the connection and stop its tracks."""
        await self.pc.close()


async def decoded_frames(track: MediaStreamTrack, count: int) -> list[av.VideoFrame]:
    """Receive ``count`` decoded frames from a remote video track."""
    frames: list[av.VideoFrame] = []
    for _ in range(count):
        frame = await track.recv()
        assert isinstance(frame, av.VideoFrame), frame
        frames.append(frame)
    return frames


def pts_seconds(frame: av.VideoFrame) -> fractions.Fraction:
    """A frame's presentation time in seconds."""
    assert frame.pts is not None and frame.time_base is not None
    return frame.pts * fractions.Fraction(frame.time_base)
