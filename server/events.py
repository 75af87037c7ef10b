"""The one event path: what happened, published on the database session, handed to the
subscribers after the transaction commits (never on rollback).

A domain function that changes something other screens or processes must learn about publishes
an event in its transaction (``publish(db, QueueChanged(association_id))``). When the
transaction commits, the sessionmaker (``server/db.py``) gives its events to the
``Dispatcher``, which calls every subscriber of each event's type: the ``/queue`` hub, the
``/assist`` namespace, the notification worker. Views and domain functions never call a transport.

Events are small frozen dataclasses holding ids and short codes only (no personal data beyond a
first name already shown to volunteers), so that a publisher can later send them to other nodes
(issue 12: a Redis publisher is one more subscriber; each node's hubs then act on their own
sockets). The list, with who acts on each, is in ``signaling/PROTOCOL.md`` ("Events").
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from server.store.engine import after_commit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Something that happened and was committed."""


@dataclass(frozen=True)
class QueueChanged(Event):
    """The drop-in queue of an association changed (a join, a take, a leave, presence…):
    volunteers and waiting pages get it again (coalesced)."""

    association_id: int


@dataclass(frozen=True)
class OpeningChanged(Event):
    """The permanences of an association changed: its queue's opening hours are read again."""

    association_id: int


@dataclass(frozen=True)
class PlaceCalled(Event):
    """A volunteer took this waiting person: their page rings and enters the room."""

    entry_id: str


@dataclass(frozen=True)
class PlaceClosed(Event):
    """A waiting person's place is gone (left, lost, gone): their page is told why."""

    entry_id: str
    reason: str


@dataclass(frozen=True)
class PersonTransferred(Event):
    """A person being helped changed volunteer: the new one is told to open the room."""

    association_id: int
    session_id: str
    to_user_id: int
    from_name: str
    first_name: str | None


@dataclass(frozen=True)
class RoomEnded(Event):
    """An assistance session ended: everyone in its room is told ``reason`` and disconnected."""

    session_id: str
    reason: str


@dataclass(frozen=True)
class PeerRevoked(Event):
    """An account lost its seat in a session (a replaced observer, a deactivated account, a
    volunteer whose person was transferred): its sockets there are told ``reason`` and leave."""

    session_id: str
    user_id: int
    reason: str


@dataclass(frozen=True)
class AccountRevoked(Event):
    """An account lost its access: wholly (deactivated, role or password changed; ``login_id``
    None) or one login session of it (logout: ``login_id``). Every socket it opened that way,
    on ``/assist`` and ``/queue``, is told ``reason`` and disconnected."""

    user_id: int
    reason: str
    login_id: int | None = None


@dataclass(frozen=True)
class OutboxWritten(Event):
    """Notifications were written to the outbox: the worker looks now, not at its next poll."""


EVENT_TYPES: dict[str, type[Event]] = {
    kind.__name__: kind
    for kind in (
        QueueChanged,
        OpeningChanged,
        PlaceCalled,
        PlaceClosed,
        PersonTransferred,
        RoomEnded,
        PeerRevoked,
        AccountRevoked,
        OutboxWritten,
    )
}


def event_to_json(event: Event) -> list[object]:
    """``[type name, fields]``: how an event travels to the other nodes (server/cluster.py)."""
    return [type(event).__name__, dataclasses.asdict(event)]


def event_from_json(item: object) -> Event | None:
    """The event ``event_to_json`` wrote, or None for a type this node does not know (a newer
    node during a rolling upgrade); ValueError if it is malformed."""
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict)):
        raise ValueError(f"not an event: {item!r:.80}")
    kind = EVENT_TYPES.get(item[0]) if isinstance(item[0], str) else None
    if kind is None:
        log.warning("event bus: unknown event type %.40r ignored", item[0])
        return None
    try:
        return kind(**item[1])
    except TypeError as exc:
        raise ValueError(f"bad fields for {item[0]}: {exc}") from exc


def publish(db: AsyncSession, event: Event) -> None:
    """Publish ``event`` in the session's transaction: its subscribers get it after commit."""
    after_commit(db, event)


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Awaitable[None]]
Forwarder = Callable[[Sequence[Event]], Awaitable[None]]


class Dispatcher:
    """Hands committed events to their subscribers, in order, once per distinct event of a
    transaction (ten ``QueueChanged(1)`` in one commit make one call)."""

    def __init__(self) -> None:
        self._subscribers: dict[type[Event], list[Handler]] = defaultdict(list)
        self._forwarders: list[Forwarder] = []
        self.dispatched = 0  # events handed over (tests, benchmarks)

    def add_forwarder(self, forwarder: Forwarder) -> None:
        """Also give every dispatched event to ``forwarder`` (the cluster's event bus, which
        sends them to the other nodes)."""
        self._forwarders.append(forwarder)

    def remove_forwarder(self, forwarder: Forwarder) -> None:
        """Stop forwarding (application shutdown)."""
        if forwarder in self._forwarders:
            self._forwarders.remove(forwarder)

    def subscribe(self, kind: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        """Call ``handler`` with every committed event of type ``kind``."""
        self._subscribers[kind].append(handler)

    def unsubscribe(self, kind: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        """Stop calling ``handler`` (application shutdown)."""
        handlers = self._subscribers.get(kind, [])
        if handler in handlers:
            handlers.remove(handler)

    async def dispatch(
        self, events: Sequence[object] | Iterable[object], *, forward: bool = True
    ) -> None:
        """Give each distinct event to the forwarders (other nodes, first: they act in
        parallel with this one), then to its subscribers here. ``forward=False`` for events
        that came from another node. A failing subscriber is logged and the others still run:
        the transaction has committed, and the next change refreshes any screen a lost event
        left behind."""
        distinct: list[Event] = []
        for event in dict.fromkeys(events):  # first-published order
            if not isinstance(event, Event):
                raise TypeError(f"only events are published, got {event!r}")
            distinct.append(event)
        if forward and distinct:
            for forwarder in list(self._forwarders):
                await forwarder(distinct)
        for event in distinct:
            self.dispatched += 1
            for handler in list(self._subscribers.get(type(event), ())):
                try:
                    await handler(event)
                except Exception:
                    log.exception("subscriber %r failed on %r", handler, event)
