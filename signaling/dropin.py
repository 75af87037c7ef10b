"""The `/queue` Socket.IO namespace: the live drop-in queue, pushed (never polled).

Volunteers (login cookie) join their association's room and get the waiting list on every
change; they take people with acknowledged events (`take_next`, `take`, `requeue`, `transfer`,
`gone`). A waiting person's page (queue cookie) joins its own room and gets its position, the
estimated wait and, when a volunteer takes them, `turn`. Changes are coalesced: a burst of joins
and leaves costs one database read and one push per association.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import socketio
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from server.accounts import user_for_login_token
from server.availability import Opening
from server.dropin import places as dropin
from server.i18n import _
from server.ratelimit import SOCKET_CONNECTS_PER_SESSION, SOCKET_EVENTS_PER_PEER
from server.runtime import QUEUE_HUB_KEY, RATELIMIT_KEY, SESSIONMAKER_KEY, SETTINGS_KEY, SIO_KEY
from server.settings import Settings
from server.store.models import QueueEntry, QueueStatus, Role, User, utcnow
from server.web.request import LOGIN_COOKIE
from signaling.assist import end_session_room, kick_peer, refuse

log = logging.getLogger(__name__)
NAMESPACE = "/queue"
QUEUE_COOKIE = "vp_queue"
COALESCE_SECONDS = 0.05
FACTS_SECONDS = 60.0
ENTER_URL = "/aide/entrer"


def volunteers_room(association_id: int) -> str:
    """Socket.IO room of an association's volunteers watching the queue."""
    return f"volunteers:{association_id}"


def entry_room(entry_id: str) -> str:
    """Socket.IO room of one waiting person's page(s)."""
    return f"entry:{entry_id}"


class _Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _EntryRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry_id: str = Field(min_length=1, max_length=36)


class _TransferRef(_EntryRef):
    volunteer_id: int = Field(ge=1, le=2**31 - 1)


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}


@dataclass
class _Facts:
    """Slow-changing facts of an association's queue, cached for a short while: the opening
    state (until it changes, at most FACTS_SECONDS) and the typical handling time."""

    opening: Opening
    handling_minutes: float
    until: float  # event-loop time


class QueueHub:
    """Who is online, and the coalesced pushes of each association's queue.

    At most one push per association runs at a time; changes arriving meanwhile make exactly one
    more push after it (a burst of joins and leaves costs a few pushes, not one per change).
    Positions go only to the waiting pages that are open (`pages`), never one emit per person.
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app
        # association → volunteer id → their connected sids (one node; see README, scaling).
        self.online: dict[int, dict[int, set[str]]] = defaultdict(dict)
        self.names: dict[int, str] = {}
        # queue entry id → sids of its open waiting pages.
        self.pages: dict[str, set[str]] = defaultdict(set)
        self._dirty: set[int] = set()
        self._pending: dict[int, asyncio.Task[None]] = {}
        self._facts: dict[int, _Facts] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.pushes = 0  # how many snapshots were sent (tests, benchmarks)

    @property
    def sio(self) -> socketio.AsyncServer:
        return self.app[SIO_KEY]

    @property
    def settings(self) -> Settings:
        return self.app[SETTINGS_KEY]

    def volunteers_online(self, association_id: int) -> int:
        """Distinct volunteers with the queue page open."""
        return len(self.online.get(association_id, {}))

    def changed(self, association_id: int) -> None:
        """Something in this association's queue changed: push it soon, once per burst."""
        self._dirty.add(association_id)
        task = self._pending.get(association_id)
        if task is None or task.done():
            self._pending[association_id] = asyncio.get_running_loop().create_task(
                self._pusher(association_id)
            )

    async def _pusher(self, association_id: int) -> None:
        # No await between the last check and the return: a change always finds either this
        # loop still running (it pushes again) or the task done (a new one starts).
        while association_id in self._dirty:
            await asyncio.sleep(COALESCE_SECONDS)
            self._dirty.discard(association_id)
            try:
                await self.push(association_id)
            except Exception:  # a push must never kill the hub; the next change pushes again
                log.exception("queue push failed for association %s", association_id)

    async def facts(self, db: AsyncSession, association_id: int) -> _Facts:
        """Opening state and handling time, read at most every FACTS_SECONDS."""
        loop_now = asyncio.get_running_loop().time()
        cached = self._facts.get(association_id)
        if cached is not None and cached.until > loop_now:
            return cached
        now = utcnow()
        state = await dropin.state_of(db, association_id, now)
        handling = await dropin.handling_minutes(db, self.settings, association_id)
        until = loop_now + FACTS_SECONDS
        if state.next_change is not None:
            until = min(until, loop_now + max(0.0, (state.next_change - now).total_seconds()))
        facts = _Facts(state, handling, until)
        self._facts[association_id] = facts
        return facts

    def forget_facts(self, association_id: int | None = None) -> None:
        """Read opening hours and handling time again at the next push (tests, edits)."""
        if association_id is None:
            self._facts.clear()
        else:
            self._facts.pop(association_id, None)

    async def volunteer_payload(self, association_id: int) -> dict[str, Any]:
        """The queue as volunteers see it."""
        now = utcnow()
        async with self.app[SESSIONMAKER_KEY]() as db:
            snap = await dropin.snapshot(db, association_id)
            facts = await self.facts(db, association_id)
        return self._volunteer_payload(association_id, snap, facts, now)

    def _volunteer_payload(
        self, association_id: int, snap: dropin.Snapshot, facts: _Facts, now: datetime
    ) -> dict[str, Any]:
        online = self.online.get(association_id, {})
        state = facts.opening
        return {
            "server_time": now.isoformat(),
            "open": state.is_open,
            "next_change": state.next_change.isoformat() if state.next_change else None,
            "total": snap.total,
            "handling_minutes": round(facts.handling_minutes, 1),
            "volunteers": [
                {"id": user_id, "name": self.names.get(user_id, "")} for user_id in sorted(online)
            ],
            "waiting": [
                {
                    "id": person.id,
                    "first_name": person.first_name,
                    "motif": person.motif,
                    "queued_at": person.queued_at.isoformat(),
                    "waited_seconds": max(0, int((now - person.queued_at).total_seconds())),
                    "reserved_for_id": person.reserved_for_id,
                    "connected": person.connected,
                }
                for person in snap.waiting
            ],
        }

    async def push(self, association_id: int) -> None:
        """Send the queue to the association's volunteers and each open waiting page its
        position."""
        now = utcnow()
        async with self.app[SESSIONMAKER_KEY]() as db:
            snap = await dropin.snapshot(db, association_id)
            facts = await self.facts(db, association_id)
            ids = await dropin.waiting_ids(db, association_id) if self.pages else []
        self.pushes += 1
        await self.sio.emit(
            "queue",
            self._volunteer_payload(association_id, snap, facts, now),
            room=volunteers_room(association_id),
            namespace=NAMESPACE,
        )
        volunteers = self.volunteers_online(association_id)
        for index, entry_id in enumerate(ids):
            if entry_id in self.pages:
                await self.sio.emit(
                    "position",
                    self.position_payload(index + 1, len(ids), volunteers, facts),
                    room=entry_room(entry_id),
                    namespace=NAMESPACE,
                )

    def position_payload(
        self, position: int, total: int, volunteers: int, facts: _Facts
    ) -> dict[str, Any]:
        """What a waiting page shows: place, estimate, and whether to offer a call-back."""
        estimate = dropin.estimate_minutes(position, volunteers, facts.handling_minutes)
        is_open = facts.opening.is_open
        return {
            "position": position,
            "total": total,
            "estimate_minutes": estimate,
            "open": is_open,
            "offer_callback": dropin.offers_callback(self.settings, estimate) or not is_open,
        }

    async def position_for(self, association_id: int, entry_id: str) -> dict[str, Any] | None:
        """One waiting page's current position (on connect and for the page itself)."""
        async with self.app[SESSIONMAKER_KEY]() as db:
            facts = await self.facts(db, association_id)
            place = await dropin.place_of(db, association_id, entry_id)
        if place is None:
            return None
        position, total = place
        return self.position_payload(position, total, self.volunteers_online(association_id), facts)

    async def turn(self, entry_id: str) -> None:
        """Tell a waiting page it is their turn: it rings, then enters the room."""
        await self.sio.emit(
            "turn", {"url": ENTER_URL}, room=entry_room(entry_id), namespace=NAMESPACE
        )

    async def removed(self, entry_id: str, reason: str) -> None:
        """Tell a waiting page its place is gone."""
        await self.sio.emit(
            "removed", {"reason": reason}, room=entry_room(entry_id), namespace=NAMESPACE
        )

    async def transferred(self, done: dropin.Transferred, by: User) -> None:
        """After a transfer: the old volunteer leaves the room, the new one is told to open it."""
        if done.previous_sid:
            await kick_peer(self.sio, done.previous_sid, "transferred")
        if done.session_id is not None:
            payload = {
                "session_id": done.session_id,
                "url": f"/assistance/{done.session_id}",
                "from": by.name,
                "first_name": done.entry.first_name,
            }
            for sid in self.online.get(by.association_id, {}).get(done.target.id, set()):
                await self.sio.emit("transferred", payload, to=sid, namespace=NAMESPACE)
        self.changed(by.association_id)

    # -- grace time sweep -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic sweep of places whose page stayed away past the grace time."""
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        """Stop the sweep and pending pushes (application shutdown)."""
        tasks = [t for t in [self._sweeper, *self._pending.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pending.clear()

    async def sweep(self) -> int:
        """Close lost places now; how many."""
        async with self.app[SESSIONMAKER_KEY].begin() as db:
            lost = await dropin.expire_lost(db, self.settings, utcnow())
            gone = [(entry.id, entry.association_id) for entry in lost]
        for entry_id, association_id in gone:
            await self.removed(entry_id, "lost")
            self.changed(association_id)
        return len(gone)

    async def _sweep_forever(self) -> None:
        interval = max(1.0, min(10.0, self.settings.queue_grace_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("queue sweep failed")


class QueueNamespace(socketio.AsyncNamespace):
    """Volunteers watch and take; waiting pages learn their position and their turn."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(NAMESPACE)
        self.app = app

    @property
    def hub(self) -> QueueHub:
        return self.app[QUEUE_HUB_KEY]

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        """A volunteer (login cookie) or a waiting page (queue cookie); anyone else is refused."""
        request: web.Request = environ["aiohttp.request"]
        cookies = request.cookies
        login_token = cookies.get(LOGIN_COOKIE)
        async with self.app[SESSIONMAKER_KEY]() as db:
            if login_token:
                user = await user_for_login_token(db, login_token[:128])
                if user is None:
                    raise refuse("unauthorized", "not logged in")
                if user.role not in (Role.VOLUNTEER, Role.COORDINATOR) or not user.is_active:
                    raise refuse("forbidden", "only volunteers see the queue")
                await self._volunteer_joins(sid, user)
                return
            entry = await dropin.find_by_token(db, cookies.get(QUEUE_COOKIE))
        if entry is None:
            raise refuse("unauthorized", "no queue place: join from /aide")
        if not await self.app[RATELIMIT_KEY].hit(SOCKET_CONNECTS_PER_SESSION, "queue", entry.id):
            raise refuse("rate_limited", "too many connections for this place")
        await self.save_session(
            sid, {"kind": "waiting", "entry_id": entry.id, "association_id": entry.association_id}
        )
        await self.enter_room(sid, entry_room(entry.id))
        self.server.start_background_task(self._welcome_waiting, sid, entry.id)

    async def _volunteer_joins(self, sid: str, user: User) -> None:
        association_id = user.association_id
        await self.save_session(
            sid, {"kind": "volunteer", "user_id": user.id, "association_id": association_id}
        )
        await self.enter_room(sid, volunteers_room(association_id))
        self.hub.online[association_id].setdefault(user.id, set()).add(sid)
        self.hub.names[user.id] = user.name
        self.hub.changed(association_id)  # estimates depend on how many volunteers are here

    async def _welcome_waiting(self, sid: str, entry_id: str) -> None:
        """After CONNECT: mark the page present (replacing an older tab) and send its state."""
        now = utcnow()
        async with self.app[SESSIONMAKER_KEY].begin() as db:
            entry = await db.get(QueueEntry, entry_id, populate_existing=True)
            if entry is None:
                return
            previous = entry.waiting_sid
            status = entry.status
            association_id = entry.association_id
            if status == QueueStatus.WAITING:
                await dropin.seen(db, entry_id, now, sid)
        if previous and previous != sid:
            await self.emit("removed", {"reason": "replaced"}, to=previous)
            await self.leave_room(previous, entry_room(entry_id))
            self.hub.pages[entry_id].discard(previous)
        if status == QueueStatus.TAKEN:
            await self.emit("turn", {"url": ENTER_URL}, to=sid)
            return
        if status != QueueStatus.WAITING:
            await self.emit("removed", {"reason": status.value}, to=sid)
            return
        self.hub.pages[entry_id].add(sid)
        position = await self.hub.position_for(association_id, entry_id)
        if position is not None:
            await self.emit("position", position, to=sid)
        self.hub.changed(association_id)

    async def on_disconnect(self, sid: str, reason: object = None) -> None:
        """A volunteer leaves the queue page, or a waiting page drops (its grace time starts)."""
        info = await self._info(sid)
        if not info:
            return
        association_id = int(info["association_id"])
        if info["kind"] == "volunteer":
            online = self.hub.online.get(association_id, {})
            sids = online.get(int(info["user_id"]))
            if sids is not None:
                sids.discard(sid)
                if not sids:
                    online.pop(int(info["user_id"]), None)
        else:
            pages = self.hub.pages.get(info["entry_id"])
            if pages is not None:
                pages.discard(sid)
                if not pages:
                    self.hub.pages.pop(info["entry_id"], None)
            async with self.app[SESSIONMAKER_KEY].begin() as db:
                await dropin.disconnected(db, info["entry_id"], sid, utcnow())
        self.hub.changed(association_id)

    async def _info(self, sid: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = await self.get_session(sid)
        except KeyError:
            return None
        return info

    # -- events -------------------------------------------------------------------------------

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Validate and rate-limit every client event; answer through the acknowledgement."""
        sid: str = args[0]
        connected = self.server.manager.is_connected(sid, NAMESPACE)
        if event in ("connect", "disconnect") and not connected:
            return await super().trigger_event(event, *args)
        if not connected:
            return None
        handler = self._handlers().get(event)
        if handler is None:
            return _failure("unknown_event", f"unknown event {event[:40]!r}")
        if not await self.app[RATELIMIT_KEY].hit(SOCKET_EVENTS_PER_PEER, sid):
            return _failure("rate_limited", _("Trop de demandes. Attendez un peu."))
        model, needs_volunteer, run = handler
        info = await self._info(sid)
        if not info:
            return _failure("forbidden", "not connected to the queue")
        if needs_volunteer != (info["kind"] == "volunteer"):
            return _failure("forbidden", f"{event} is not allowed for this peer")
        payload = args[1] if len(args) == 2 else {}
        try:
            message = model.model_validate(payload if payload is not None else {})
        except ValidationError as exc:
            return _failure("malformed", exc.errors()[0]["msg"][:200])
        try:
            return await run(sid, info, message)
        except dropin.QueueError as exc:
            return _failure(exc.code, exc.message)

    def _handlers(
        self,
    ) -> dict[
        str,
        tuple[
            type[BaseModel], bool, Callable[[str, dict[str, Any], Any], Awaitable[dict[str, Any]]]
        ],
    ]:
        return {
            "take_next": (_Empty, True, self._take_next),
            "take": (_EntryRef, True, self._take),
            "requeue": (_EntryRef, True, self._requeue),
            "transfer": (_TransferRef, True, self._transfer),
            "gone": (_EntryRef, True, self._gone),
            "leave": (_Empty, False, self._leave),
        }

    async def _volunteer(self, db: AsyncSession, info: dict[str, Any]) -> User:
        user = await db.get(User, int(info["user_id"]))
        if user is None or not user.is_active:
            raise dropin.QueueError("forbidden", _("Votre compte n'est plus actif."))
        return user

    @contextlib.asynccontextmanager
    async def _acting(self, info: dict[str, Any]) -> AsyncIterator[tuple[AsyncSession, User]]:
        async with self.app[SESSIONMAKER_KEY].begin() as db:
            yield db, await self._volunteer(db, info)

    async def _taken(self, entry: QueueEntry, association_id: int) -> dict[str, Any]:
        await self.hub.turn(entry.id)
        self.hub.changed(association_id)
        session_id = entry.assistance_session_id
        return {
            "ok": True,
            "entry_id": entry.id,
            "session_id": session_id,
            "url": f"/assistance/{session_id}",
        }

    async def _take_next(self, sid: str, info: dict[str, Any], _message: _Empty) -> dict[str, Any]:
        async with self._acting(info) as (db, user):
            entry = await dropin.take_next(db, self.app[SETTINGS_KEY], user, utcnow())
        if entry is None:
            return _failure("empty", _("Personne n'attend pour le moment."))
        return await self._taken(entry, user.association_id)

    async def _take(self, sid: str, info: dict[str, Any], message: _EntryRef) -> dict[str, Any]:
        async with self._acting(info) as (db, user):
            entry = await dropin.take(db, self.app[SETTINGS_KEY], user, message.entry_id, utcnow())
        return await self._taken(entry, user.association_id)

    async def _requeue(self, sid: str, info: dict[str, Any], message: _EntryRef) -> dict[str, Any]:
        async with self._acting(info) as (db, user):
            session_id = await dropin.requeue(db, user, message.entry_id, utcnow())
        if session_id is not None:
            await end_session_room(self.server, session_id, "requeued")
        self.hub.changed(user.association_id)
        return {"ok": True}

    async def _transfer(
        self, sid: str, info: dict[str, Any], message: _TransferRef
    ) -> dict[str, Any]:
        async with self._acting(info) as (db, user):
            done = await dropin.transfer(db, user, message.entry_id, message.volunteer_id, utcnow())
        await self.hub.transferred(done, user)
        return {"ok": True, "session_id": done.session_id}

    async def _gone(self, sid: str, info: dict[str, Any], message: _EntryRef) -> dict[str, Any]:
        async with self._acting(info) as (db, user):
            entry, ended = await dropin.mark_gone(db, user, message.entry_id, utcnow())
        if ended is not None:
            await end_session_room(self.server, ended, "gone")
        await self.hub.removed(entry.id, "gone")
        self.hub.changed(user.association_id)
        return {"ok": True}

    async def _leave(self, sid: str, info: dict[str, Any], _message: _Empty) -> dict[str, Any]:
        async with self.app[SESSIONMAKER_KEY].begin() as db:
            left = await dropin.leave(db, info["entry_id"], utcnow())
        if left:
            await self.hub.removed(info["entry_id"], "left")
            self.hub.changed(int(info["association_id"]))
        return {"ok": left}
