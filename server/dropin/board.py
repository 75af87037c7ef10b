"""What the drop-in queue looks like from outside: who is there, and the figures every screen
shows (the volunteers' list, a waiting person's position and estimated wait).

Shared by the web layer (pages rendered without JavaScript) and the socket layer (pushes), so it
lives below both. ``Presence`` records which volunteers have the queue page open and which waiting
pages are connected; it is kept in this process (one node: see the README, several nodes need it
in Redis). The slow-changing facts of an association's queue (opening state, typical handling
time) are cached for a short while and forgotten when the permanences change.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.availability import Opening
from server.dropin import places
from server.settings import Settings
from server.store.models import utcnow

FACTS_SECONDS = 60.0


@dataclass
class Facts:
    """Slow-changing facts of an association's queue, cached for a short while: the opening
    state (until it changes, at most FACTS_SECONDS) and the typical handling time."""

    opening: Opening
    handling_minutes: float
    until: float  # event-loop time


class Presence:
    """Volunteers with the queue page open, and the open waiting pages, in this process."""

    def __init__(self) -> None:
        # association → volunteer id → their connected sids.
        self._online: dict[int, dict[int, set[str]]] = defaultdict(dict)
        self._names: dict[int, str] = {}
        # queue entry id → sids of its open waiting pages.
        self._pages: dict[str, set[str]] = defaultdict(set)

    def volunteer_joined(self, association_id: int, user_id: int, name: str, sid: str) -> None:
        """A volunteer opened the queue page (one more tab counts once)."""
        self._online[association_id].setdefault(user_id, set()).add(sid)
        self._names[user_id] = name

    def volunteer_left(self, association_id: int, user_id: int, sid: str) -> None:
        """A volunteer's queue page closed."""
        online = self._online.get(association_id, {})
        sids = online.get(user_id)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                online.pop(user_id, None)

    def volunteers_online(self, association_id: int) -> int:
        """Distinct volunteers with the queue page open."""
        return len(self._online.get(association_id, {}))

    def volunteers(self, association_id: int) -> list[tuple[int, str]]:
        """(id, name) of the volunteers with the queue page open, by id."""
        return [
            (user_id, self._names.get(user_id, ""))
            for user_id in sorted(self._online.get(association_id, {}))
        ]

    def sids_of(self, association_id: int, user_id: int) -> set[str]:
        """The queue-page sockets of one volunteer."""
        return set(self._online.get(association_id, {}).get(user_id, set()))

    def page_opened(self, entry_id: str, sid: str) -> None:
        """A waiting page is connected."""
        self._pages[entry_id].add(sid)

    def page_closed(self, entry_id: str, sid: str) -> None:
        """A waiting page went away."""
        pages = self._pages.get(entry_id)
        if pages is not None:
            pages.discard(sid)
            if not pages:
                self._pages.pop(entry_id, None)

    def has_page(self, entry_id: str) -> bool:
        """Whether this person's waiting page is connected."""
        return entry_id in self._pages

    def any_page(self) -> bool:
        """Whether any waiting page is connected."""
        return bool(self._pages)


class QueueBoard:
    """The figures of each association's queue, from the database and the presence."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        presence: Presence | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.presence = presence or Presence()
        self._facts: dict[int, Facts] = {}

    async def facts(self, db: AsyncSession, association_id: int) -> Facts:
        """Opening state and handling time, read at most every FACTS_SECONDS."""
        loop_now = asyncio.get_running_loop().time()
        cached = self._facts.get(association_id)
        if cached is not None and cached.until > loop_now:
            return cached
        now = utcnow()
        state = await places.state_of(db, association_id, now)
        handling = await places.handling_minutes(db, self.settings, association_id)
        until = loop_now + FACTS_SECONDS
        if state.next_change is not None:
            until = min(until, loop_now + max(0.0, (state.next_change - now).total_seconds()))
        facts = Facts(state, handling, until)
        self._facts[association_id] = facts
        return facts

    def forget_facts(self, association_id: int | None = None) -> None:
        """Read opening hours and handling time again next time (permanences changed)."""
        if association_id is None:
            self._facts.clear()
        else:
            self._facts.pop(association_id, None)

    async def volunteer_payload(self, association_id: int) -> dict[str, Any]:
        """The queue as volunteers see it."""
        now = utcnow()
        async with self.sessionmaker() as db:
            snap = await places.snapshot(db, association_id)
            facts = await self.facts(db, association_id)
        return self.volunteer_view(association_id, snap, facts, now)

    def volunteer_view(
        self, association_id: int, snap: places.Snapshot, facts: Facts, now: datetime
    ) -> dict[str, Any]:
        """The `queue` payload (PROTOCOL.md) of one snapshot."""
        state = facts.opening
        return {
            "server_time": now.isoformat(),
            "open": state.is_open,
            "next_change": state.next_change.isoformat() if state.next_change else None,
            "total": snap.total,
            "handling_minutes": round(facts.handling_minutes, 1),
            "volunteers": [
                {"id": user_id, "name": name}
                for user_id, name in self.presence.volunteers(association_id)
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

    async def push_views(
        self, association_id: int
    ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """What one push sends: the volunteers' view, and the position of each open page."""
        now = utcnow()
        async with self.sessionmaker() as db:
            snap = await places.snapshot(db, association_id)
            facts = await self.facts(db, association_id)
            ids = await places.waiting_ids(db, association_id) if self.presence.any_page() else []
        volunteers = self.presence.volunteers_online(association_id)
        positions = [
            (entry_id, self.position_view(index + 1, len(ids), volunteers, facts))
            for index, entry_id in enumerate(ids)
            if self.presence.has_page(entry_id)
        ]
        return self.volunteer_view(association_id, snap, facts, now), positions

    def position_view(
        self, position: int, total: int, volunteers: int, facts: Facts
    ) -> dict[str, Any]:
        """What a waiting page shows: place, estimate, and whether to offer a call-back."""
        estimate = places.estimate_minutes(position, volunteers, facts.handling_minutes)
        is_open = facts.opening.is_open
        return {
            "position": position,
            "total": total,
            "estimate_minutes": estimate,
            "open": is_open,
            "offer_callback": places.offers_callback(self.settings, estimate) or not is_open,
        }

    async def position_for(self, association_id: int, entry_id: str) -> dict[str, Any] | None:
        """One waiting page's current position (on connect and for the page itself)."""
        async with self.sessionmaker() as db:
            facts = await self.facts(db, association_id)
            place = await places.place_of(db, association_id, entry_id)
        if place is None:
            return None
        position, total = place
        volunteers = self.presence.volunteers_online(association_id)
        return self.position_view(position, total, volunteers, facts)

    async def estimate_for_newcomer(self, db: AsyncSession, association_id: int) -> int:
        """The wait someone joining now should expect."""
        waiting = await places.count_waiting(db, association_id)
        handling = await places.handling_minutes(db, self.settings, association_id)
        volunteers = self.presence.volunteers_online(association_id)
        return places.estimate_minutes(waiting + 1, volunteers, handling)
