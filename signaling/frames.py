"""Socket.IO events encoded once and handed straight to this node's sockets.

python-socketio's ``emit`` to a room or a sid starts a task per recipient and waits on them;
on the hot paths (a relayed offer, answer or candidate; each open waiting page's position)
that was a fifth of a relayed message's CPU and half of a queue push's with 200 pages open
(BENCHMARKS.md). These paths encode the event once and put the frame on each recipient's
Engine.IO queue, in order, with no task. Local sockets only: another node's go through the
cluster (``server/cluster.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import socketio
from socketio import packet


def encode_event(sio: socketio.AsyncServer, namespace: str, event: str, data: Any) -> str:
    """The text frame of one event, as the server's own emit would encode it (its JSON module
    included); these events carry no binary."""
    frame: str = sio.packet_class(packet.EVENT, namespace=namespace, data=[event, data]).encode()
    return frame


async def send_frame(sio: socketio.AsyncServer, eio_sids: Iterable[str], frame: str) -> None:
    """``frame`` to each of these Engine.IO sessions of this node, in order."""
    for eio_sid in eio_sids:
        await sio.eio.send(eio_sid, frame)
