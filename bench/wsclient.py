"""Lightweight load-generator clients: one WebSocket each, speaking Engine.IO v4 / Socket.IO v5
by hand for our server, or plain text frames for the raw baseline relay.

Why not ``socketio.AsyncClient``: on a 2-core machine a full Python Socket.IO client per peer
costs about as much CPU as the server it measures, so the client would set the figures. These
clients share one aiohttp ``ClientSession``, read with one task per connection, parse only what
the benchmark needs, and the *same* reading code serves both servers (the baseline carries the
very same ``42/assist,[...]`` text), so the client cost is small and symmetric.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType

NAMESPACE = "/assist"
EVENT_PREFIX = f"42{NAMESPACE},"
CONNECT_PREFIX = f"40{NAMESPACE},"
CONNECT_ERROR_PREFIX = f"44{NAMESPACE},"
DISCONNECT_PREFIX = f"41{NAMESPACE}"
ENGINEIO_PATH = "/socket.io/?EIO=4&transport=websocket"
TIMEOUT_S = 30.0  # connecting, or waiting for an expected event

CandidateHandler = Callable[[dict[str, Any], int], None]


class Refused(Exception):
    """The server refused the Socket.IO connection (``connect_error``)."""


def ws_url(http_url: str) -> str:
    """ws:// URL for an http:// base URL."""
    return "ws" + http_url.removeprefix("http")


class Peer:
    """One WebSocket connection with a reader task: answers pings, records events.

    ``on_candidate`` is called synchronously with ``(payload, receive_time_ns)`` for every
    ``candidate`` event, with the receive time taken before parsing.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, socketio: bool) -> None:
        self.ws = ws
        self.on_candidate: CandidateHandler | None = None
        self.pings = 0
        self.events: list[tuple[str, Any]] = []
        self.connected: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if not socketio:
            self.connected.set_result("")  # the raw relay has no handshake
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        ws = self.ws
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._on_text(message.data)
                elif message.type is WSMsgType.PING:
                    # The raw baseline's aiohttp heartbeat: answered by hand to count it.
                    self.pings += 1
                    await ws.pong(message.data)
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            if not self.connected.done():
                self.connected.set_exception(ConnectionError("closed before connecting"))
            self._changed.set()

    async def _on_text(self, data: str) -> None:
        if data.startswith(EVENT_PREFIX):
            now = time.perf_counter_ns()
            name, payload = json.loads(data[len(EVENT_PREFIX) :])
            if name == "candidate" and self.on_candidate is not None:
                self.on_candidate(payload, now)
            else:
                self.events.append((name, payload))
                self._changed.set()
        elif data == "2":  # Engine.IO ping from the server
            self.pings += 1
            await self.ws.send_str("3")
        elif data.startswith(CONNECT_PREFIX):
            if not self.connected.done():
                self.connected.set_result(json.loads(data[len(CONNECT_PREFIX) :])["sid"])
        elif data.startswith(CONNECT_ERROR_PREFIX):
            if not self.connected.done():
                self.connected.set_exception(Refused(data[len(CONNECT_ERROR_PREFIX) :]))
        elif data.startswith(DISCONNECT_PREFIX):
            self.events.append(("disconnect", None))
            self._changed.set()

    async def wait_event(self, name: str) -> Any:
        """The payload of the first ``name`` event received (waits up to TIMEOUT_S for it)."""
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                for event, payload in self.events:
                    if event == name:
                        return payload
                if self._reader.done():
                    raise ConnectionError(f"connection closed while waiting for {name!r}")
                self._changed.clear()
                await self._changed.wait()

    async def send(self, text: str) -> None:
        """Send one text frame."""
        await self.ws.send_str(text)

    async def close(self) -> None:
        """Close the WebSocket and wait for the reader to finish."""
        await self.ws.close()
        await self._reader


async def _open(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> aiohttp.ClientWebSocketResponse:
    # compress=0: no permessage-deflate, on both servers alike (cheaper for the load generator).
    return await http.ws_connect(
        url, headers=headers, autoping=False, compress=0, max_msg_size=1 << 20
    )


async def connect_assist(
    http: aiohttp.ClientSession,
    base_url: str,
    auth: dict[str, str],
    cookie: str | None = None,
) -> tuple[Peer, Any]:
    """Connect to our `/assist` namespace; returns the peer and its ``welcome`` payload."""
    headers = {"Cookie": cookie} if cookie else None
    async with asyncio.timeout(TIMEOUT_S):
        ws = await _open(http, ws_url(base_url) + ENGINEIO_PATH, headers)
        opening = await ws.receive()
        if opening.type is not WSMsgType.TEXT or not opening.data.startswith("0{"):
            await ws.close()
            raise ConnectionError(f"no Engine.IO open packet: {opening!r}")
        peer = Peer(ws, socketio=True)
        await peer.send(CONNECT_PREFIX + json.dumps(auth))
        try:
            await peer.connected
            welcome = await peer.wait_event("welcome")
        except BaseException:
            await peer.close()
            raise
    return peer, welcome


async def connect_raw(http: aiohttp.ClientSession, base_url: str, pair: str, side: str) -> Peer:
    """Connect one side of a pair to the raw baseline relay."""
    async with asyncio.timeout(TIMEOUT_S):
        ws = await _open(http, f"{ws_url(base_url)}/ws/{pair}/{side}")
    return Peer(ws, socketio=False)


def client_session() -> aiohttp.ClientSession:
    """One HTTP session for thousands of WebSockets (no per-host connection cap)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
