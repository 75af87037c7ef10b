"""The `/queue` Socket.IO namespace: the live drop-in queue, pushed (never polled).

Volunteers (login cookie) join their association's room and get the waiting list on every
change; they take people with acknowledged events (`take_next`, `take`, `requeue`, `transfer`,
`gone`, `remove`). A waiting person's page (queue cookie) joins its own room and gets its
position, the estimated wait and, when a volunteer takes them, `turn`. Changes are coalesced:
a burst of joins and leaves costs one database read and one push per association.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

import socketio
from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from server.accounts import login_for_token
from server.cluster import Absences
from server.dropin import places
from server.dropin.board import Presence, QueueBoard, RedisPresence, queue_delta
from server.events import (
    AccountRevoked,
    Dispatcher,
    OpeningChanged,
    PersonTransferred,
    PlaceCalled,
    PlaceClosed,
    QueueChanged,
)
from server.i18n import _
from server.metrics import QUEUE_REMOVED_IN_BULK, SOCKETS_REVOKED
from server.passes import QUEUE_COOKIE, cookie, login_token
from server.ratelimit import RATELIMIT_KEY, SOCKET_CONNECTS_PER_SESSION, SOCKET_EVENTS_PER_PEER
from server.runtime import BOARD_KEY, DISPATCHER_KEY, SESSIONMAKER_KEY, SETTINGS_KEY
from server.settings import Settings
from server.store.models import QueueEntry, QueueStatus, Role, User, utcnow
from signaling.assist import refuse
from signaling.frames import encode_event, send_frame
from signaling.messages import QueueEntryRef, QueueNothing, QueueRemove, QueueTransfer
from signaling.outage import CODE as UNAVAILABLE
from signaling.outage import outage
from signaling.revocation import AccountSockets, held_here

log = logging.getLogger(__name__)
NAMESPACE = "/queue"
COALESCE_SECONDS = 0.05


def room_url(app: web.Application, session_id: str) -> str:
    """The volunteer's page of an assistance room (a route of the web app)."""
    return str(app.router["assistance-room"].url_for(session_id=session_id))


def volunteers_room(association_id: int) -> str:
    """Socket.IO room of an association's volunteers watching the queue."""
    return f"volunteers:{association_id}"


def waiting_room(association_id: int) -> str:
    """Socket.IO room of an association's open waiting pages (whether a node has any)."""
    return f"waiting:{association_id}"


def entry_room(entry_id: str) -> str:
    """Socket.IO room of one waiting person's page(s)."""
    return f"entry:{entry_id}"


class LoginRevoked(places.QueueError):
    """A volunteer's socket whose login no longer gives access: refused, then revoked."""


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}


class QueueHub:
    """The coalesced pushes of each association's queue, and the subscriber of the queue events.

    At most one push per association runs at a time; changes arriving meanwhile make exactly one
    more push after it (a burst of joins and leaves costs a few pushes, not one per change).
    Positions go only to the waiting pages that are open, never one emit per person.
    """

    def __init__(self, app: web.Application, sio: socketio.AsyncServer) -> None:
        self.app = app
        self.sio = sio
        self._dirty: set[int] = set()
        self._pending: dict[int, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.pushes = 0  # how many pushes were made (tests, benchmarks)
        # The last view pushed to each association's volunteers of this node, numbered: a push
        # sends them what changed since (`queue_delta`), the whole view goes to a socket that
        # has none yet (it connected, or it missed a delta and asked).
        self._views: dict[int, dict[str, Any]] = {}
        self._needs_view: set[str] = set()
        self._absent = Absences()  # this node's presence records without a socket (janitor)
        # The volunteers' sockets, by account and login session (re-checked before pushes).
        self.logins = AccountSockets(roles=(Role.VOLUNTEER, Role.COORDINATOR))

    @property
    def board(self) -> QueueBoard:
        return self.app[BOARD_KEY]

    @property
    def settings(self) -> Settings:
        return self.app[SETTINGS_KEY]

    def subscribe(self, dispatcher: Dispatcher) -> None:
        """Act on the committed queue events (and on presence changes published here)."""
        dispatcher.subscribe(QueueChanged, self.on_queue_changed)
        dispatcher.subscribe(OpeningChanged, self.on_opening_changed)
        dispatcher.subscribe(PlaceCalled, self.on_place_called)
        dispatcher.subscribe(PlaceClosed, self.on_place_closed)
        dispatcher.subscribe(PersonTransferred, self.on_person_transferred)
        dispatcher.subscribe(AccountRevoked, self.on_account_revoked)

    def unsubscribe(self, dispatcher: Dispatcher) -> None:
        """Stop acting on events (application shutdown)."""
        dispatcher.unsubscribe(QueueChanged, self.on_queue_changed)
        dispatcher.unsubscribe(OpeningChanged, self.on_opening_changed)
        dispatcher.unsubscribe(PlaceCalled, self.on_place_called)
        dispatcher.unsubscribe(PlaceClosed, self.on_place_closed)
        dispatcher.unsubscribe(PersonTransferred, self.on_person_transferred)
        dispatcher.unsubscribe(AccountRevoked, self.on_account_revoked)

    async def on_queue_changed(self, event: QueueChanged) -> None:
        """Push the association's queue soon."""
        self.changed(event.association_id)

    async def on_opening_changed(self, event: OpeningChanged) -> None:
        """The opening hours changed (the board forgot them): push them."""
        self.changed(event.association_id)

    async def on_place_called(self, event: PlaceCalled) -> None:
        """Tell a waiting page it is their turn: it rings, then enters the room."""
        await self.sio.emit(
            "turn",
            self.turn_payload(),
            room=entry_room(event.entry_id),
            namespace=NAMESPACE,
            ignore_queue=True,  # every node tells its own sockets (the event reached them all)
        )

    async def on_place_closed(self, event: PlaceClosed) -> None:
        """Tell a waiting page its place is gone."""
        await self.sio.emit(
            "removed",
            {"reason": event.reason},
            room=entry_room(event.entry_id),
            namespace=NAMESPACE,
            ignore_queue=True,
        )

    async def on_person_transferred(self, event: PersonTransferred) -> None:
        """Tell the volunteer a person was handed to them to open the room."""
        payload = {
            "session_id": event.session_id,
            "url": room_url(self.app, event.session_id),
            "from": event.from_name,
            "first_name": event.first_name,
        }
        # This node's queue pages of that volunteer (the event reached every node).
        sids = await self.still_allowed(self.logins.of(event.to_user_id))
        for sid in sids:
            await self.sio.emit(
                "transferred", payload, to=sid, namespace=NAMESPACE, ignore_queue=True
            )

    async def on_account_revoked(self, event: AccountRevoked) -> None:
        """An account (or one login session of it) lost its access: its queue pages leave."""
        for sid in self.logins.of(event.user_id, event.login_id):
            await self.revoke(sid, event.reason)

    async def revoke(self, sid: str, reason: str) -> None:
        """Tell a volunteer's queue page its access ended, and disconnect it (it leaves the
        presence, so the wait estimates stop counting it)."""
        self.logins.discard(sid)
        SOCKETS_REVOKED.labels(NAMESPACE, reason).inc()
        await self.sio.emit(
            "revoked", {"reason": reason}, to=sid, namespace=NAMESPACE, ignore_queue=True
        )
        await self.sio.disconnect(sid, namespace=NAMESPACE, ignore_queue=True)

    async def still_allowed(self, sids: Iterable[str]) -> list[str]:
        """``sids`` whose login still gives access, read now; the others are revoked (an
        ``AccountRevoked`` that never arrived must not leak names and motifs)."""
        wanted = list(sids)
        gone = await self.logins.revoked(self.app[SESSIONMAKER_KEY], wanted)
        for sid in gone:
            log.warning("queue socket %s had lost its login: disconnected before a push", sid)
            await self.revoke(sid, "revoked")
        return [sid for sid in wanted if sid not in gone]

    def turn_payload(self) -> dict[str, str]:
        """What a waiting page gets on its turn: where to go (it sets the room pass)."""
        return {"url": str(self.app.router["dropin-enter"].url_for())}

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

    def _local(self, room: str) -> list[str]:
        """This node's sockets in ``room``."""
        return [sid for sid, _eio in self.sio.manager.get_participants(NAMESPACE, room)]

    async def push(self, association_id: int) -> None:
        """Send the queue to the association's volunteers and each open waiting page its
        position: this node's sockets only (every node pushes to its own, the change reached
        them all); nothing is read when none of them watches this association."""
        room = volunteers_room(association_id)
        volunteers = self._local(room)
        if not volunteers and not self._local(waiting_room(association_id)):
            self._views.pop(association_id, None)  # nobody here holds it any more
            return
        # First the logins behind the volunteers' sockets: a revoked one neither gets this push
        # nor counts in the estimates computed next.
        await self.still_allowed(volunteers)
        queue, positions = await self.board.push_views(association_id)
        self.pushes += 1
        await self._send_view(association_id, queue)
        await self._send_positions(positions)

    async def _send_positions(self, positions: list[tuple[str, dict[str, Any]]]) -> None:
        """Each open waiting page of this node its own `position` (one frame per page: each holds
        another number), straight to its socket (``signaling/frames.py``)."""
        for entry_id, position in positions:
            sids = self._local_eio(entry_room(entry_id))
            if sids:
                frame = encode_event(self.sio, NAMESPACE, "position", position)
                await send_frame(self.sio, sids, frame)

    def _local_eio(self, room: str) -> list[str]:
        """The Engine.IO sessions of this node's sockets in ``room``."""
        return [eio for _sid, eio in self.sio.manager.get_participants(NAMESPACE, room)]

    async def _send_view(self, association_id: int, queue: dict[str, Any]) -> None:
        """Number the new view and send it: what changed to the sockets holding the previous
        one, the whole view to those without. A client that sees a gap in the numbers asks for
        the whole view (`queue_sync`); frames to one socket keep their order."""
        previous = self._views.get(association_id)
        queue["version"] = previous["version"] + 1 if previous else 1
        self._views[association_id] = queue
        room = volunteers_room(association_id)
        here = self._local(room)
        fresh = [sid for sid in here if previous is None or sid in self._needs_view]
        self._needs_view.difference_update(fresh)
        if previous is not None and len(fresh) < len(here):
            delta = queue_delta(previous, queue)
            await self.sio.emit(
                "queue_delta",
                delta,
                room=room,
                skip_sid=fresh,
                namespace=NAMESPACE,
                ignore_queue=True,
            )
        if fresh:
            await self.sio.emit("queue", queue, to=fresh, namespace=NAMESPACE, ignore_queue=True)

    async def send_view(self, sid: str, association_id: int) -> None:
        """Send one volunteer's socket the whole current view (it missed a delta); when there
        is none yet, the next push brings it."""
        view = self._views.get(association_id)
        if view is None:
            self._needs_view.add(sid)
            self.changed(association_id)
            return
        await self.sio.emit("queue", view, to=sid, namespace=NAMESPACE, ignore_queue=True)

    def volunteer_arrived(self, sid: str) -> None:
        """A volunteer's socket joined its room: the next push gives it the whole view."""
        self._needs_view.add(sid)

    def volunteer_gone(self, sid: str) -> None:
        """A volunteer's socket left."""
        self._needs_view.discard(sid)

    async def retire_orphans(self) -> None:
        """Cluster janitor (after each heartbeat): the queue pages and volunteers of a node
        that died leave the presence; a page's grace time starts as if it had dropped. So do
        this node's own records of sockets gone for two passes in a row without their
        disconnection being written (a handler that failed under load)."""
        presence = self.board.presence
        if not isinstance(presence, RedisPresence):
            return
        changed, pages = await presence.take_orphans()
        held = functools.partial(held_here, self.sio, namespace=NAMESPACE)
        for sid in self._absent.confirmed(presence.local_sids(), held):
            dropped = await presence.drop_local(sid)
            if dropped is not None:
                association_id, ident, page = dropped
                changed.add(association_id)
                if page:
                    pages.append((association_id, ident, sid))
        now = utcnow()
        for association_id, entry_id, sid in pages:
            async with self.app[SESSIONMAKER_KEY].begin() as db:
                await places.disconnected(db, association_id, entry_id, sid, now)
        if changed:
            await self.app[DISPATCHER_KEY].dispatch([QueueChanged(a) for a in sorted(changed)])

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
        """Close lost places now (their pages are told after the commit); how many."""
        async with self.app[SESSIONMAKER_KEY].begin() as db:
            lost = await places.expire_lost(db, self.settings, utcnow())
        return len(lost)

    async def _sweep_forever(self) -> None:
        interval = max(1.0, min(10.0, self.settings.queue_grace_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("queue sweep failed")


QUEUE_HUB_KEY = web.AppKey("queue_hub", QueueHub)


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
        token = login_token(self.app[SETTINGS_KEY], cookies)
        async with self.app[SESSIONMAKER_KEY]() as db:
            if token:
                login = await login_for_token(db, token)
                if login is None:
                    raise refuse("unauthorized", "not logged in")
                user = login.user
                if user.role not in (Role.VOLUNTEER, Role.COORDINATOR) or not user.is_active:
                    raise refuse("forbidden", "only volunteers see the queue")
                self.hub.logins.add(sid, user.id, login.login_id)
                await self._volunteer_joins(sid, user)
                return
            entry = await places.find_by_token(
                db, cookie(self.app[SETTINGS_KEY], cookies, QUEUE_COOKIE)
            )
        if entry is None:
            raise refuse("unauthorized", "no queue place: join from /aide")
        if not await self.app[RATELIMIT_KEY].hit(SOCKET_CONNECTS_PER_SESSION, "queue", entry.id):
            raise refuse("rate_limited", "too many connections for this place")
        await self.save_session(
            sid, {"kind": "waiting", "entry_id": entry.id, "association_id": entry.association_id}
        )
        await self.enter_room(sid, entry_room(entry.id))
        await self.enter_room(sid, waiting_room(entry.association_id))
        self.server.start_background_task(self._welcome_waiting, sid, entry.id)

    async def _volunteer_joins(self, sid: str, user: User) -> None:
        association_id = user.association_id
        await self.save_session(
            sid, {"kind": "volunteer", "user_id": user.id, "association_id": association_id}
        )
        self.hub.volunteer_arrived(sid)  # before the room: a push in between sends it the view
        await self.enter_room(sid, volunteers_room(association_id))
        await self.presence.volunteer_joined(association_id, user.id, user.name, sid)
        await self._presence_changed(association_id)  # estimates depend on who is here

    @property
    def presence(self) -> Presence:
        return self.app[BOARD_KEY].presence

    async def _presence_changed(self, association_id: int) -> None:
        """Who is on the queue pages changed: the same event as a committed change."""
        await self.app[DISPATCHER_KEY].dispatch([QueueChanged(association_id)])

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
                await places.seen(db, entry_id, now, sid)
        if previous and previous != sid:
            await self.emit("removed", {"reason": "replaced"}, to=previous)
            await self.leave_room(previous, entry_room(entry_id))
            await self.leave_room(previous, waiting_room(association_id))
            await self.presence.page_closed(association_id, entry_id, previous)
        if status == QueueStatus.TAKEN:
            await self.emit("turn", self.hub.turn_payload(), to=sid)
            return
        if status != QueueStatus.WAITING:
            await self.emit("removed", {"reason": status.value}, to=sid)
            return
        if not self.server.manager.is_connected(sid, NAMESPACE):
            # The page went away while this ran (a slow database): its on_disconnect found no
            # open page to close, and may have written its departure before `seen` wrote this
            # sid. Opened now, the page would stay open for ever (the board counting it, the
            # grace time never starting): write the departure again instead.
            async with self.app[SESSIONMAKER_KEY].begin() as db:
                await places.disconnected(db, association_id, entry_id, sid, utcnow())
            return
        await self.presence.page_opened(association_id, entry_id, sid)
        position = await self.app[BOARD_KEY].position_for(association_id, entry_id)
        if position is not None:
            await self.emit("position", position, to=sid)
        await self._presence_changed(association_id)

    async def on_disconnect(self, sid: str, reason: object = None) -> None:
        """A volunteer leaves the queue page, or a waiting page drops (its grace time starts)."""
        self.hub.logins.discard(sid)
        self.hub.volunteer_gone(sid)
        info = await self._info(sid)
        if not info:
            return
        association_id = int(info["association_id"])
        if info["kind"] == "volunteer":
            await self.presence.volunteer_left(association_id, int(info["user_id"]), sid)
            await self._presence_changed(association_id)
        else:
            await self.presence.page_closed(association_id, info["entry_id"], sid)
            async with self.app[SESSIONMAKER_KEY].begin() as db:
                await places.disconnected(db, association_id, info["entry_id"], sid, utcnow())

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
            try:
                return await super().trigger_event(event, *args)
            except Exception as exc:
                error = outage(self.app, exc)
                if error is None:
                    raise
                if event == "connect":  # the page tries again
                    raise refuse(UNAVAILABLE, error.message) from exc
                return None  # a lost place is swept once the database is back
        if not connected:
            return None
        try:
            return await self._client_event(event, sid, args)
        except Exception as exc:
            error = outage(self.app, exc)
            if error is None:
                raise
            return _failure(UNAVAILABLE, error.message)

    async def _client_event(self, event: str, sid: str, args: tuple[Any, ...]) -> Any:
        """One event of a connected client: checked, then run; its acknowledgement."""
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
        except places.QueueError as exc:
            if isinstance(exc, LoginRevoked):
                # Answered first, then disconnected (an acknowledgement needs the connection).
                self.server.start_background_task(self.hub.revoke, sid, "revoked")
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
            "take_next": (QueueNothing, True, self._take_next),
            "take": (QueueEntryRef, True, self._take),
            "requeue": (QueueEntryRef, True, self._requeue),
            "transfer": (QueueTransfer, True, self._transfer),
            "gone": (QueueEntryRef, True, self._gone),
            "remove": (QueueRemove, True, self._remove),
            "leave": (QueueNothing, False, self._leave),
            "queue_sync": (QueueNothing, True, self._sync),
        }

    async def _volunteer(self, db: AsyncSession, sid: str, info: dict[str, Any]) -> User:
        """The volunteer behind ``sid``, if the login the socket was opened with still gives
        access, checked in the action's own transaction (one read); else LoginRevoked."""
        user = await self.hub.logins.user_in(db, sid)
        if user is None or user.id != int(info["user_id"]):
            raise LoginRevoked("forbidden", _("Votre compte n'est plus actif."))
        return user

    @contextlib.asynccontextmanager
    async def _acting(
        self, sid: str, info: dict[str, Any]
    ) -> AsyncIterator[tuple[AsyncSession, User]]:
        async with self.app[SESSIONMAKER_KEY].begin() as db:
            yield db, await self._volunteer(db, sid, info)

    def _taken(self, entry: QueueEntry) -> dict[str, Any]:
        """The acknowledgement of a take (the page rang when the take committed)."""
        session_id = entry.assistance_session_id
        assert session_id is not None
        return {
            "ok": True,
            "entry_id": entry.id,
            "session_id": session_id,
            "url": room_url(self.app, session_id),
        }

    async def _take_next(
        self, sid: str, info: dict[str, Any], _message: QueueNothing
    ) -> dict[str, Any]:
        async with self._acting(sid, info) as (db, user):
            entry = await places.take_next(db, self.app[SETTINGS_KEY], user, utcnow())
        if entry is None:
            return _failure("empty", _("Personne n'attend pour le moment."))
        return self._taken(entry)

    async def _take(self, sid: str, info: dict[str, Any], message: QueueEntryRef) -> dict[str, Any]:
        async with self._acting(sid, info) as (db, user):
            entry = await places.take(db, self.app[SETTINGS_KEY], user, message.entry_id, utcnow())
        return self._taken(entry)

    async def _requeue(
        self, sid: str, info: dict[str, Any], message: QueueEntryRef
    ) -> dict[str, Any]:
        async with self._acting(sid, info) as (db, user):
            await places.requeue(db, user, message.entry_id, utcnow())
        return {"ok": True}

    async def _transfer(
        self, sid: str, info: dict[str, Any], message: QueueTransfer
    ) -> dict[str, Any]:
        async with self._acting(sid, info) as (db, user):
            done = await places.transfer(db, user, message.entry_id, message.volunteer_id, utcnow())
        return {"ok": True, "session_id": done.session_id}

    async def _gone(self, sid: str, info: dict[str, Any], message: QueueEntryRef) -> dict[str, Any]:
        async with self._acting(sid, info) as (db, user):
            await places.mark_gone(db, user, message.entry_id, utcnow())
        return {"ok": True}

    async def _remove(self, sid: str, info: dict[str, Any], message: QueueRemove) -> dict[str, Any]:
        now = utcnow()
        since = now - timedelta(minutes=message.since_minutes) if message.since_minutes else None
        async with self._acting(sid, info) as (db, user):
            removed = await places.remove(
                db,
                user,
                now,
                entry_ids=message.entry_ids,
                since=since,
                reason=places.LeftReason(message.reason),
            )
        QUEUE_REMOVED_IN_BULK.labels(message.reason).inc(removed)
        return {"ok": True, "removed": removed}

    async def _sync(self, sid: str, info: dict[str, Any], _message: QueueNothing) -> dict[str, Any]:
        """The page missed a delta (a gap in the versions): the whole view comes as `queue`."""
        await self.hub.send_view(sid, int(info["association_id"]))
        return {"ok": True}

    async def _leave(
        self, sid: str, info: dict[str, Any], _message: QueueNothing
    ) -> dict[str, Any]:
        async with self.app[SESSIONMAKER_KEY].begin() as db:
            left = await places.leave(db, info["entry_id"], utcnow())
        return {"ok": left}
