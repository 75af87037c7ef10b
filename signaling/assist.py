"""The `/assist` Socket.IO namespace: authenticates peers, keeps them in their session's room,
validates every event against its schema and relays signalling to the addressed peer only."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from server import assist as domain
from server import data_used, i18n, passes, room_vault, text
from server.cluster import Absences, ClusterUnavailable
from server.events import AccountRevoked, Dispatcher, PeerRevoked, RoomEnded
from server.metrics import SIGNALING_RELAYED, SOCKETS_REVOKED
from server.ratelimit import (
    RATELIMIT_KEY,
    SOCKET_CONNECTS_PER_SESSION,
    SOCKET_ERRORS_PER_PEER,
    SOCKET_EVENTS_PER_PEER,
    SOCKET_USAGE_PER_PEER,
    SOCKET_VAULT_SHOWN_PER_PEER,
)
from server.runtime import CLUSTER_KEY, SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import AssistanceSession
from signaling.access import Refused, session_access
from signaling.frames import encode_event, send_frame
from signaling.messages import (
    Answer,
    Bye,
    Candidate,
    ClientMessage,
    End,
    MessageError,
    Offer,
    RelayedMessage,
    StateUpdate,
    Usage,
    VaultShown,
    decode,
    encode_relay,
)
from signaling.outage import CODE as UNAVAILABLE
from signaling.outage import outage
from signaling.revocation import AccountSockets, held_here

log = logging.getLogger(__name__)
NAMESPACE = "/assist"
MAX_NAME_LENGTH = 40
# How long a volunteer-side socket's login, once found valid, is trusted before the next
# relay to or from it reads it again (AccountRevoked closes it at once; this bounds what a
# lost event could leak: a few seconds of signalling, no media, which flows peer to peer).
LOGIN_RECHECK_SECONDS = 5.0
# The relay's counters, looked up once (a labels() lookup per message costs more than the inc).
_RELAYED = {event: SIGNALING_RELAYED.labels(event) for event in ("offer", "answer", "candidate")}


def refuse(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    """A connection refusal the client receives as ``connect_error`` data."""
    refusal = socketio.exceptions.ConnectionRefusedError(message)
    # error_args is the CONNECT_ERROR packet's data as sent. Given a dict argument, python-socketio
    # would send {"message": str(dict)}; set it ourselves: code and message at the top level (the
    # contract, what Python clients get), repeated under "data" because socket.io-client builds
    # its Error from `message` and only exposes `data` (as err.data) to the page.
    refusal.error_args = {
        "code": code,
        "message": message,
        "data": {"code": code, "message": message},
    }
    return refusal


def clean_name(value: object) -> str | None:
    """An optional first name: one line of free text (server/text.py), spaces tidied, at most
    40 characters."""
    if not isinstance(value, str):
        return None
    name = " ".join(text.without_harmful(value).split())
    return name[:MAX_NAME_LENGTH] or None


def _may_signal(
    sender: domain.PeerRole, target: domain.PeerRole | None, message: ClientMessage
) -> bool:
    """Only beneficiary ↔ volunteer/observer pairs negotiate; offers come from the beneficiary
    and answers from the volunteer side (PROTOCOL.md), so an observer can never pose as the
    beneficiary to the volunteer."""
    beneficiary = domain.PeerRole.BENEFICIARY
    if target is None or (sender is beneficiary) == (target is beneficiary):
        return False
    if isinstance(message, Offer):
        return sender is beneficiary
    if isinstance(message, Answer):
        return sender is not beneficiary
    return True


@dataclass(frozen=True, slots=True)
class _Seat:
    """What the relay needs of a room socket of this node, read without a Socket.IO session
    lookup: its session, its role and when the session expires."""

    session_id: str
    role: domain.PeerRole
    expires_at: float


@dataclass(frozen=True)
class _Arrival:
    """Who is connecting: to which live session, in which role; the beneficiary's optional first
    name, the account of a volunteer-side peer."""

    session: AssistanceSession
    role: domain.PeerRole
    name: str | None
    user_id: int | None = None
    login_id: int | None = None
    # The beneficiary's language (their page's: the switch's cookie, else their browser's).
    language: str | None = None


class AssistNamespace(socketio.AsyncNamespace):
    """One room per assistance session; at most one peer per role (newer replaces older)."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(NAMESPACE)
        self.app = app
        self._writers: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.logins = AccountSockets()  # volunteer-side sockets, by account and login
        self._seats: dict[str, _Seat] = {}  # this node's room sockets, for the relay
        self._absent = Absences()  # this node's room records without a socket (janitor)

    @asynccontextmanager
    async def _writing(
        self, session_id: str
    ) -> AsyncIterator[tuple[AsyncSession, AssistanceSession | None]]:
        """One transaction on the session row, one writer per session at a time.

        Every change to the per-role sids is a read-modify-write: unserialised, two peers joining
        together each miss the other (and leave the status `waiting`), and an old connection
        dropping while its replacement joins clears the new sid. SELECT … FOR UPDATE serialises
        writers across processes and nodes on PostgreSQL (SQLite, one node only, ignores it but
        has one writer at a time). The per-session lock of this process comes first, and keeps
        each node's writers in arrival order: a peer's events (pause, resume, pause…) all reach
        its own node, and the row lock alone does not queue its waiters fairly. The row is read
        fresh, never merged from an older copy.
        """
        lock = self._writers.get(session_id)
        if lock is None:
            lock = self._writers[session_id] = asyncio.Lock()
        # The session's events (RoomEnded…) are handed over when it closes, after the lock is
        # released: their subscribers disconnect peers, whose on_disconnect takes the lock.
        async with self.app[SESSIONMAKER_KEY]() as db, lock, db.begin():
            session = await db.get(
                AssistanceSession, session_id, with_for_update=True, populate_existing=True
            )
            yield db, session

    # -- connection -------------------------------------------------------------------------

    async def _identify(self, environ: dict[str, Any], auth: object) -> _Arrival:
        """Who is connecting, to which live session; raises ConnectionRefusedError otherwise."""
        if auth is not None and not isinstance(auth, dict):
            raise refuse("bad_request", "auth must be an object")
        auth = auth or {}
        request: web.Request = environ["aiohttp.request"]
        join_token, session_id = auth.get("join_token"), auth.get("session_id")
        async with self.app[SESSIONMAKER_KEY]() as db:
            try:
                access = await session_access(
                    db,
                    self.app[SETTINGS_KEY],
                    request.cookies,
                    join_token=join_token if isinstance(join_token, str) else None,
                    session_id=session_id if isinstance(session_id, str) else None,
                )
            except Refused as exc:
                raise refuse(exc.code, exc.message) from None
        if access.user_id is not None:
            return _Arrival(access.session, access.role, None, access.user_id, access.login_id)
        chosen = passes.cookie(self.app[SETTINGS_KEY], request.cookies, i18n.LANGUAGE_COOKIE)
        lang = i18n.preferred(chosen, request.headers.get("Accept-Language"))
        name = clean_name(auth.get("name"))
        return _Arrival(access.session, access.role, name, language=lang.code)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        """Authenticate, register the peer in the database, join the session room."""
        arrival = await self._identify(environ, auth)
        found, role = arrival.session, arrival.role
        if not await self.app[RATELIMIT_KEY].hit(SOCKET_CONNECTS_PER_SESSION, found.id):
            # Each reconnection is written and counted: a loop must not flood the statistics.
            raise refuse("rate_limited", "too many connections to this session")
        try:
            # Not merge() the copy read by _identify: merge would write that stale copy back
            # (an `ended` status, a sid set in between...).
            async with self._writing(found.id) as (db, session):
                if session is None or not session.is_live:
                    raise refuse("session_ended", "this session has ended")
                # Enter the room before committing: a peer that reads our sid after the commit
                # then always reaches us with its peer-joined, so two peers joining together
                # never miss each other.
                await self.save_session(
                    sid,
                    {
                        "session_id": session.id,
                        "role": role.value,
                        "user_id": arrival.user_id,
                    },
                )
                await self.enter_room(sid, session.id)
                self._seats[sid] = _Seat(session.id, role, session.expires_at.timestamp())
                cluster = self.app.get(CLUSTER_KEY)
                if cluster is not None:  # and peers on other nodes can reach us
                    await cluster.rooms.add(session.id, role.value, sid, arrival.user_id)
                if arrival.user_id is not None and arrival.login_id is not None:
                    self.logins.add(sid, arrival.user_id, arrival.login_id)
                previous = await domain.peer_joined(
                    db, session, role, sid, arrival.name, language=arrival.language
                )
                peers = self._peers_of(session, exclude=sid)
                status = session.status.value
                beneficiary_name = session.beneficiary_name
        except BaseException:
            self.logins.discard(sid)
            self._seats.pop(sid, None)
            await self.leave_room(sid, found.id)
            await self._unregister(sid)
            raise
        self.server.start_background_task(
            self._announce, sid, session.id, role, previous, peers, status, beneficiary_name
        )

    @staticmethod
    def _peers_of(session: AssistanceSession, exclude: str) -> list[dict[str, str]]:
        peers = []
        for role in domain.PeerRole:
            peer_sid = domain.sid_of(session, role)
            if peer_sid and peer_sid != exclude:
                peers.append({"peer_id": peer_sid, "role": role.value})
        return peers

    async def _announce(
        self,
        sid: str,
        session_id: str,
        role: domain.PeerRole,
        previous: str | None,
        peers: list[dict[str, str]],
        status: str,
        beneficiary_name: str | None,
    ) -> None:
        """After the CONNECT packet: welcome the peer, tell the room, retire a replaced peer."""
        if previous and previous != sid:
            await self.emit("ended", {"reason": "replaced"}, to=previous)
            await self.emit(
                "peer-left",
                {"peer_id": previous, "role": role.value, "reason": "replaced"},
                room=session_id,
                skip_sid=[sid, previous],
            )
            await self.leave_room(previous, session_id)
            await self.disconnect(previous)
        await self.emit(
            "welcome",
            {
                "peer_id": sid,
                "role": role.value,
                "session": {
                    "id": session_id,
                    "status": status,
                    "beneficiary_name": beneficiary_name,
                },
                "peers": peers,
            },
            to=sid,
        )
        joined: dict[str, str] = {"peer_id": sid, "role": role.value}
        if role is domain.PeerRole.BENEFICIARY and beneficiary_name:
            joined["name"] = beneficiary_name  # the volunteer greets the person by first name
        await self._drop_revoked(self._room_sids(session_id), max_age=0.0)
        await self.emit("peer-joined", joined, room=session_id, skip_sid=sid)

    async def on_disconnect(self, sid: str, reason: object = None) -> None:
        """A peer went away: if it still held its role, the others see "reconnexion…"."""
        self.logins.discard(sid)
        self._seats.pop(sid, None)
        await self._unregister(sid)
        info = await self._info(sid)
        if not info:
            return
        role = domain.PeerRole(info["role"])
        async with self._writing(info["session_id"]) as (db, session):
            held = session is not None and await domain.peer_left(db, session, role, sid)
        if held and not info.get("left"):
            await self.emit(
                "peer-left",
                {"peer_id": sid, "role": role.value, "reason": "disconnected"},
                room=info["session_id"],
                skip_sid=sid,
            )

    # -- events -----------------------------------------------------------------------------

    async def _info(self, sid: str) -> dict[str, Any] | None:
        """The peer's Socket.IO session, or None once it is gone (an event racing a disconnect)."""
        try:
            info: dict[str, Any] = await self.get_session(sid)
        except KeyError:
            return None
        return info

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Every client event goes through schema validation; nothing invalid is relayed."""
        sid: str = args[0]
        connected = self.server.manager.is_connected(sid, NAMESPACE)
        if event in ("connect", "disconnect") and not connected:
            # The server's own call: it only makes it while the sid is still connecting (with
            # python-socketio's default always_connect=False) or already disconnecting.
            try:
                return await super().trigger_event(event, *args)
            except Exception as exc:
                error = outage(self.app, exc)
                if error is None:
                    raise
                if event == "connect":  # not in the fatal refusals: the page tries again
                    raise refuse(UNAVAILABLE, error.message) from exc
                return None  # its seat is released when it (or a replacement) next joins
        if not connected:
            return None  # still in flight from a peer being disconnected (a flood, a replaced tab)
        # From here on the event came from the client, including one it named "connect" or
        # "disconnect" to fake a departure: that too is just an unknown event.
        payload = args[1] if len(args) == 2 else None
        try:
            if len(args) != 2:
                raise MessageError("malformed", "exactly one payload object is expected")
            if not await self.app[RATELIMIT_KEY].hit(SOCKET_EVENTS_PER_PEER, sid):
                await self._error(sid, event, "rate_limited", "too many events, slow down")
                return None
            message = decode(event, payload)
        except MessageError as exc:
            await self._error(sid, event, exc.code, exc.message)
            return None
        seat = self._seats.get(sid)
        if seat is None:
            await self._error(sid, event, "forbidden", "not joined to a session")
            return None
        try:
            if time.time() >= seat.expires_at:
                await self._expire(seat.session_id)
                return None
            # No login read here: the relay stays off the database (a read per socket every
            # few seconds, inline, made the relay's p99 at 1,000 msg/s 100-180 ms instead of
            # 2 ms: BENCHMARKS.md). ``sweep_logins`` re-checks them all in the background.
            if isinstance(message, Offer | Answer | Candidate):
                await self._relay(sid, seat, message)
            else:
                info = await self._info(sid)
                if info:
                    return await self._handle(sid, info, message)
        except Exception as exc:
            error = outage(self.app, exc)
            if error is None:
                raise
            # Not the peer's fault: told, but not counted towards its disconnection.
            failure = {"code": UNAVAILABLE, "message": error.message, "event": event[:40]}
            await self.emit("error", failure, to=sid)
            return {"ok": False, **failure}
        return None

    async def _error(self, sid: str, event: object, code: str, message: str) -> None:
        """Tell the sender what was wrong; disconnect a peer that keeps sending garbage."""
        name = event if isinstance(event, str) else repr(event)
        log.warning("refused socket event %.40s from %s: %s (%s)", name, sid, code, message)
        await self.emit("error", {"code": code, "message": message, "event": name[:40]}, to=sid)
        if not await self.app[RATELIMIT_KEY].hit(SOCKET_ERRORS_PER_PEER, sid):
            log.warning("disconnecting %s: too many invalid events", sid)
            await self.disconnect(sid)

    def _in_room(self, target: str, session_id: str) -> bool:
        # The manager's room map itself: get_participants() copies the room on every call.
        room = self.server.manager.rooms.get(NAMESPACE, {}).get(session_id)
        return room is not None and target in room

    async def _peer(
        self, target: str, session_id: str
    ) -> tuple[domain.PeerRole, str | None] | None:
        """The role of ``target`` in this session, and its node (None: this one); None when it
        is in no room of this session on any node."""
        if self._in_room(target, session_id):
            seat = self._seats.get(target)  # none once its disconnection has begun
            return None if seat is None else (seat.role, None)
        cluster = self.app.get(CLUSTER_KEY)
        if cluster is None:
            return None
        record = await cluster.rooms.find(target)
        if record is None or record.session_id != session_id:
            return None
        return domain.PeerRole(record.role), record.node

    async def _unregister(self, sid: str) -> None:
        cluster = self.app.get(CLUSTER_KEY)
        if cluster is not None:
            await cluster.rooms.remove(sid)

    async def retire_orphans(self) -> None:
        """Cluster janitor (after each heartbeat): the room sockets of a node that died leave
        their seats, and their rooms see them go as if they had dropped."""
        cluster = self.app.get(CLUSTER_KEY)
        if cluster is None:
            return
        records = await cluster.rooms.take_orphans()
        # This node's own records of sockets gone for two passes in a row, their departure never
        # written (a disconnect handler that failed under load): retired the same way.
        mine = cluster.rooms.local()
        held_now = functools.partial(held_here, self.server, namespace=NAMESPACE)
        for sid in self._absent.confirmed(mine, held_now):
            await cluster.rooms.remove(sid)
            records.append(mine[sid])
        for record in records:
            role = domain.PeerRole(record.role)
            async with self._writing(record.session_id) as (db, session):
                held = session is not None and await domain.peer_left(db, session, role, record.sid)
            if held:
                await self.emit(
                    "peer-left",
                    {"peer_id": record.sid, "role": role.value, "reason": "disconnected"},
                    room=record.session_id,
                )

    async def _relay(self, sid: str, seat: _Seat, message: RelayedMessage) -> None:
        """Offer, answer or candidate: to the addressed peer of the sender's room only, and only
        between the beneficiary and a volunteer-side peer."""
        target = None if message.to == sid else await self._peer(message.to, seat.session_id)
        if target is None:
            await self._error(sid, message.event, "not_in_room", "no such peer in this session")
            return
        target_role, node = target
        if not _may_signal(seat.role, target_role, message):
            await self._error(
                sid,
                message.event,
                "forbidden",
                "media flows between the beneficiary and the volunteers only; the beneficiary "
                "offers, the volunteers answer",
            )
            return
        frame = encode_event(self.server, NAMESPACE, message.event, encode_relay(message, sid))
        if node is None:
            await self._send_here(message.to, frame)
        else:
            # On the target node's own channel: only that node reads it (cluster.RelayChannel).
            relay = self.app[CLUSTER_KEY].relay
            if not relay.send(node, message.to, seat.session_id, frame, sid, message.event):
                await self.relay_lost(sid, message.event)
                return
        _RELAYED[message.event].inc()

    async def _send_here(self, target: str, frame: str) -> None:
        """One encoded event to one socket of this node (``signaling/frames.py``)."""
        eio_sid = self.server.manager.eio_sid_from_sid(target, NAMESPACE)
        if eio_sid is not None:  # else gone meanwhile
            await send_frame(self.server, (eio_sid,), frame)

    async def deliver(self, message: str) -> None:
        """A message relayed from another node to a peer of this one (``RelayChannel``): handed
        over only if the peer is still in that session's room here."""
        to, session_id, frame = message.split("|", 2)
        if to in self._seats and self._in_room(to, session_id):
            await self._send_here(to, frame)

    async def relay_lost(self, sender: str, event: str) -> None:
        """The cluster could not take a relayed message: its sender is told to try again."""
        unavailable = ClusterUnavailable()
        failure = {"code": UNAVAILABLE, "message": unavailable.message, "event": event[:40]}
        await self.emit("error", failure, to=sender, ignore_queue=True)

    async def _handle(
        self, sid: str, info: dict[str, Any], message: ClientMessage
    ) -> dict[str, object] | None:
        """A room event (not relayed); what it returns is the client's acknowledgement."""
        session_id: str = info["session_id"]
        role = domain.PeerRole(info["role"])
        if isinstance(message, StateUpdate):
            if role is not domain.PeerRole.BENEFICIARY:
                await self._error(sid, "state", "forbidden", "only the beneficiary sends state")
                return None
            async with self._writing(session_id) as (db, session):
                if session is not None:
                    await domain.media_state(db, session, message.state, message.media)
            await self._drop_revoked(self._room_sids(session_id))
            await self.emit(
                "state",
                {"from": sid, "role": role.value, "state": message.state, "media": message.media},
                room=session_id,
                skip_sid=sid,
            )
        elif isinstance(message, Bye):
            info["left"] = True
            await self.save_session(sid, info)
            async with self._writing(session_id) as (db, session):
                if session is not None:
                    await domain.peer_left(db, session, role, sid)
            await self.emit(
                "peer-left",
                {"peer_id": sid, "role": role.value, "reason": "left"},
                room=session_id,
                skip_sid=sid,
            )
            await self.disconnect(sid)
        elif isinstance(message, End):
            if role is not domain.PeerRole.VOLUNTEER:
                await self._error(sid, "end", "forbidden", "only the session's volunteer ends it")
                return None
            async with self._writing(session_id) as (db, session):
                if session is not None:  # the room is told after the commit (RoomEnded)
                    await domain.end_session(db, session, "volunteer")
        elif isinstance(message, Usage):
            return await self._usage(sid, session_id, role, message)
        elif isinstance(message, VaultShown):
            return await self._vault_shown(sid, session_id, role, message)
        return None

    async def _usage(
        self, sid: str, session_id: str, role: domain.PeerRole, message: Usage
    ) -> dict[str, object]:
        """The beneficiary's data used so far, kept on the session row if it grows
        (``server/data_used.py``); acknowledged with the figure stored."""
        refused: tuple[str, str] | None = None
        if role is not domain.PeerRole.BENEFICIARY:
            refused = ("forbidden", "only the beneficiary reports the data it used")
        elif not await self.app[RATELIMIT_KEY].hit(SOCKET_USAGE_PER_PEER, sid):
            refused = ("rate_limited", "one usage report per socket every 10 seconds")
        else:
            async with self._writing(session_id) as (_db, session):
                stored = None if session is None else data_used.record(session, sid, message.bytes)
            if stored is not None:
                return {"ok": True, "bytes": stored}
            refused = ("forbidden", "this socket no longer holds the beneficiary's seat")
        code, why = refused
        await self._error(sid, message.event, code, why)
        return {"ok": False, "code": code}

    async def _vault_shown(
        self, sid: str, session_id: str, role: domain.PeerRole, message: VaultShown
    ) -> dict[str, object]:
        """The beneficiary showed a vault document over the data channel: one statistics event
        (``server/room_vault.py``); the document itself never reaches the server."""
        refused: tuple[str, str] | None = None
        if role is not domain.PeerRole.BENEFICIARY:
            refused = ("forbidden", "only the beneficiary shows documents of their vault")
        elif not await self.app[RATELIMIT_KEY].hit(SOCKET_VAULT_SHOWN_PER_PEER, sid):
            refused = ("rate_limited", "one vault-shown report per socket every 10 seconds")
        else:
            async with self._writing(session_id) as (db, session):
                taken = session is not None and await room_vault.document_shown(
                    db, session, sid, gave_copy=message.give_copy
                )
            if taken:
                return {"ok": True}
            refused = ("forbidden", "this socket no longer holds the beneficiary's seat")
        code, why = refused
        await self._error(sid, message.event, code, why)
        return {"ok": False, "code": code}

    async def kick(self, sid: str, reason: str) -> None:
        """Retire one peer: it is told why, leaves for good and its seat is freed."""
        info = await self._info(sid)
        if not info:
            return
        await self.emit("ended", {"reason": reason}, to=sid)
        role = domain.PeerRole(info["role"])
        async with self._writing(info["session_id"]) as (db, session):
            if session is not None:
                await domain.peer_left(db, session, role, sid)
        await self.emit(
            "peer-left",
            {"peer_id": sid, "role": role.value, "reason": "left"},
            room=info["session_id"],
            skip_sid=sid,
        )
        info["left"] = True
        await self.save_session(sid, info)
        await self.disconnect(sid)

    def _room_sids(self, session_id: str) -> list[str]:
        return [sid for sid, _eio in self.server.manager.get_participants(NAMESPACE, session_id)]

    async def sweep_logins(self) -> None:
        """Every LOGIN_RECHECK_SECONDS, in one query, the logins behind this node's
        volunteer-side sockets: one found closed, expired or of a deactivated account is retired
        (an ``AccountRevoked`` that never arrived leaks for a few seconds at most)."""
        while True:
            await asyncio.sleep(LOGIN_RECHECK_SECONDS)
            try:
                await self._drop_revoked(self.logins.sids(), max_age=0.0)
            except Exception as exc:
                if outage(self.app, exc) is None:
                    log.exception("login sweep failed")

    async def _drop_revoked(
        self, sids: list[str], max_age: float = LOGIN_RECHECK_SECONDS
    ) -> list[str]:
        """Those of ``sids`` whose login no longer gives access, retired before anything more
        reaches them (an ``AccountRevoked`` that never arrived must not leak)."""
        gone = await self.logins.revoked(self.app[SESSIONMAKER_KEY], sids, max_age)
        for sid in gone:
            log.warning("room socket %s had lost its login: retired", sid)
            await self._revoke(sid, "revoked")
        return gone

    async def _revoke(self, sid: str, reason: str) -> None:
        self.logins.discard(sid)
        SOCKETS_REVOKED.labels(NAMESPACE, reason).inc()
        await self.kick(sid, "revoked")

    async def _expire(self, session_id: str) -> None:
        """A session past its lifetime ends at its next event: nothing is relayed any more."""
        async with self._writing(session_id) as (db, session):
            ended = session is not None and await domain.end_session(db, session, "expired")
        if not ended:  # ended already: whoever is still here leaves now
            await self.end_room(session_id, "expired")

    # -- committed events ---------------------------------------------------------------------

    def subscribe(self, dispatcher: Dispatcher) -> None:
        """Act on the committed events that concern rooms."""
        dispatcher.subscribe(RoomEnded, self.on_room_ended)
        dispatcher.subscribe(PeerRevoked, self.on_peer_revoked)
        dispatcher.subscribe(AccountRevoked, self.on_account_revoked)

    def unsubscribe(self, dispatcher: Dispatcher) -> None:
        """Stop acting on events (application shutdown)."""
        dispatcher.unsubscribe(RoomEnded, self.on_room_ended)
        dispatcher.unsubscribe(PeerRevoked, self.on_peer_revoked)
        dispatcher.unsubscribe(AccountRevoked, self.on_account_revoked)

    async def on_room_ended(self, event: RoomEnded) -> None:
        """A session ended: its room is told why and emptied."""
        await self.end_room(event.session_id, event.reason)

    async def on_peer_revoked(self, event: PeerRevoked) -> None:
        """An account lost its seat in a session: its sockets there leave."""
        participants = list(self.server.manager.get_participants(NAMESPACE, event.session_id))
        for participant, _eio in participants:
            info = await self._info(participant)
            if info and info.get("user_id") == event.user_id:
                await self.kick(participant, event.reason)

    async def on_account_revoked(self, event: AccountRevoked) -> None:
        """An account (or one login session of it) lost its access: its sockets in every
        room are told ``revoked`` and leave."""
        for sid in self.logins.of(event.user_id, event.login_id):
            await self._revoke(sid, event.reason)

    async def end_room(self, session_id: str, reason: str) -> None:
        """Tell everyone in the room on this node the session is over and disconnect them
        (``RoomEnded`` reaches every node: each retires its own sockets)."""
        await self.emit("ended", {"reason": reason}, room=session_id, ignore_queue=True)
        participants = list(self.server.manager.get_participants(NAMESPACE, session_id))
        for participant, _eio in participants:
            info = await self._info(participant)
            if info:
                info["left"] = True
                await self.save_session(participant, info)
            await self.disconnect(participant)
