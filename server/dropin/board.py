"""What the drop-in queue looks like from outside: who is there, and the figures every screen
shows (the volunteers' list, a waiting person's position and estimated wait).

Shared by the web layer (pages rendered without JavaScript) and the socket layer (pushes), so it
lives below both. ``Presence`` records which volunteers have the queue page open and which waiting
pages are connected: in this process (one node), or in Redis for several nodes
(``RedisPresence``). The slow-changing facts of an association's queue (opening state, typical
handling time) are cached for a short while and forgotten when the permanences change (on every
node: ``OpeningChanged`` travels with the other events).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import accounts
from server.availability import Opening
from server.cluster import PREFIX, REDIS_ERRORS, Node, outage, texts
from server.dropin import places
from server.settings import Settings
from server.store.models import utcnow

log = logging.getLogger(__name__)
FACTS_SECONDS = 60.0


@dataclass
class Facts:
    """Slow-changing facts of an association's queue, cached for a short while: the opening
    state (until it changes, at most FACTS_SECONDS) and the typical handling time."""

    opening: Opening
    handling_minutes: float
    until: float  # event-loop time


class Presence:
    """Volunteers with the queue page open, and the open waiting pages, in this process (one
    node: the embedded default). ``RedisPresence`` is the same for several nodes."""

    def __init__(self) -> None:
        # association → volunteer id → their connected sids.
        self._online: dict[int, dict[int, set[str]]] = defaultdict(dict)
        self._names: dict[int, str] = {}
        # queue entry id → sids of its open waiting pages.
        self._pages: dict[str, set[str]] = defaultdict(set)

    async def volunteer_joined(
        self, association_id: int, user_id: int, name: str, sid: str
    ) -> None:
        """A volunteer opened the queue page (one more tab counts once)."""
        self._online[association_id].setdefault(user_id, set()).add(sid)
        self._names[user_id] = name

    async def volunteer_left(self, association_id: int, user_id: int, sid: str) -> None:
        """A volunteer's queue page closed."""
        online = self._online.get(association_id, {})
        sids = online.get(user_id)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                online.pop(user_id, None)

    async def volunteers(self, association_id: int) -> list[tuple[int, str]]:
        """(id, name) of the volunteers with the queue page open, by id."""
        return [
            (user_id, self._names.get(user_id, ""))
            for user_id in sorted(self._online.get(association_id, {}))
        ]

    async def page_opened(self, association_id: int, entry_id: str, sid: str) -> None:
        """A waiting page is connected."""
        self._pages[entry_id].add(sid)

    async def page_closed(self, association_id: int, entry_id: str, sid: str) -> None:
        """A waiting page went away."""
        pages = self._pages.get(entry_id)
        if pages is not None:
            pages.discard(sid)
            if not pages:
                self._pages.pop(entry_id, None)

    async def open_pages(self) -> frozenset[str]:
        """The queue entries whose waiting page is connected."""
        return frozenset(self._pages)


@dataclass(frozen=True)
class _Member:
    """One presence record in Redis: ``node|association|id|sid|name`` (the id of a volunteer or
    of a queue entry; the name of a volunteer, shown to the others)."""

    node: str
    association_id: int
    ident: str
    sid: str
    name: str = ""

    def encode(self) -> str:
        return "|".join((self.node, str(self.association_id), self.ident, self.sid, self.name))

    @classmethod
    def decode(cls, raw: str) -> _Member | None:
        parts = raw.split("|", 4)
        if len(parts) != 5 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2], parts[3], parts[4])


class RedisPresence(Presence):
    """The presence of every node, in Redis: ``vp:queue-volunteers:<association>`` and
    ``vp:queue-pages`` hold one record per socket, tagged with its node. A node that dies
    leaves records that readers ignore as soon as its heartbeat expires, and that a living
    node's janitor (``take_orphans``) removes; a starting node clears nothing. While Redis does
    not answer, each node sees its own records only (the estimates count fewer volunteers), and
    writes them again once Redis is back."""

    PAGES = PREFIX + "queue-pages"
    ASSOCIATIONS = PREFIX + "queue-associations"

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node
        self.redis = node.redis
        # sid → (key, record): what this node wrote, to remove it and to write it again.
        self._mine: dict[str, tuple[str, str]] = {}
        node.on_restore(self.restore)

    async def restore(self) -> None:
        """Write this node's records again (Redis lost them)."""
        if self._mine:
            log.warning("cluster: writing %d queue presence record(s) again", len(self._mine))
            await self._add(list(self._mine.values()))

    @staticmethod
    def _volunteers_key(association_id: int) -> str:
        return f"{PREFIX}queue-volunteers:{association_id}"

    async def _add(self, records: list[tuple[str, str]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, member in records:
                    pipe.sadd(key, member)
                    if key != self.PAGES:
                        pipe.sadd(self.ASSOCIATIONS, key.rsplit(":", 1)[1])
                await pipe.execute()
        except REDIS_ERRORS as exc:  # written again by ``restore`` once Redis is back
            outage("queue presence", exc)

    async def _remove(self, key: str, *members: str) -> None:
        try:
            await self.redis.srem(key, *members)
        except REDIS_ERRORS as exc:  # this node's records are retired when it goes, anyway
            outage("queue presence", exc)

    async def _members(self, key: str) -> list[_Member]:
        """The live records under ``key``; this node's own while Redis does not answer."""
        try:
            raw = texts(await self.redis.smembers(key))
            members = [m for r in raw if (m := _Member.decode(r)) is not None]
            live = await self.node.live(m.node for m in members)
        except REDIS_ERRORS as exc:
            outage("queue presence", exc)
            mine = [m for k, r in self._mine.values() if k == key and (m := _Member.decode(r))]
            return mine
        return [m for m in members if m.node in live]

    async def volunteer_joined(
        self, association_id: int, user_id: int, name: str, sid: str
    ) -> None:
        member = _Member(self.node.id, association_id, str(user_id), sid, name).encode()
        self._mine[sid] = (self._volunteers_key(association_id), member)
        await self._add([self._mine[sid]])

    async def volunteer_left(self, association_id: int, user_id: int, sid: str) -> None:
        mine = self._mine.pop(sid, None)
        if mine is not None:
            await self._remove(*mine)

    def local_sids(self) -> list[str]:
        """The sockets of this node that have a record."""
        return list(self._mine)

    async def drop_local(self, sid: str) -> tuple[int, str, bool] | None:
        """Remove the record of one of this node's sockets (its disconnection was never
        written): (association, volunteer or entry id, whether a waiting page), or None."""
        mine = self._mine.pop(sid, None)
        if mine is None:
            return None
        await self._remove(*mine)
        member = _Member.decode(mine[1])
        if member is None:
            return None
        return member.association_id, member.ident, mine[0] == self.PAGES

    async def volunteers(self, association_id: int) -> list[tuple[int, str]]:
        members = await self._members(self._volunteers_key(association_id))
        names = {int(m.ident): m.name for m in members if m.ident.isdigit()}
        return sorted(names.items())

    async def page_opened(self, association_id: int, entry_id: str, sid: str) -> None:
        member = _Member(self.node.id, association_id, entry_id, sid).encode()
        self._mine[sid] = (self.PAGES, member)
        await self._add([self._mine[sid]])

    async def page_closed(self, association_id: int, entry_id: str, sid: str) -> None:
        mine = self._mine.pop(sid, None)
        if mine is not None:
            await self._remove(*mine)
            return
        # Another node's page (an older tab replaced from here): its record, whatever its node.
        found = [
            m.encode()
            for m in await self._members(self.PAGES)
            if (m.association_id, m.ident, m.sid) == (association_id, entry_id, sid)
        ]
        if found:
            await self._remove(self.PAGES, *found)

    async def open_pages(self) -> frozenset[str]:
        return frozenset(m.ident for m in await self._members(self.PAGES))

    async def take_orphans(self) -> tuple[set[int], list[tuple[int, str, str]]]:
        """Remove the records of dead nodes: the associations whose volunteers changed, and the
        (association, entry, sid) of the waiting pages that went away with them. (Called after
        a heartbeat: Redis answered.)"""
        changed: set[int] = set()
        associations = texts(await self.redis.smembers(self.ASSOCIATIONS))
        for association in associations:
            if not association.isdigit():
                continue
            key = self._volunteers_key(int(association))
            for member in await self._dead(texts(await self.redis.smembers(key))):
                if await self.redis.srem(key, member.encode()):
                    changed.add(member.association_id)
        pages = []
        for member in await self._dead(texts(await self.redis.smembers(self.PAGES))):
            if await self.redis.srem(self.PAGES, member.encode()):
                pages.append((member.association_id, member.ident, member.sid))
        return changed, pages

    async def _dead(self, raw: Iterable[str]) -> list[_Member]:
        members = [m for r in raw if (m := _Member.decode(r)) is not None]
        live = await self.node.live(m.node for m in members)
        return [m for m in members if m.node not in live]


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
        volunteers = await self.presence.volunteers(association_id)
        return self.volunteer_view(snap, facts, volunteers, now)

    def volunteer_view(
        self,
        snap: places.Snapshot,
        facts: Facts,
        volunteers: list[tuple[int, str]],
        now: datetime,
    ) -> dict[str, Any]:
        """The `queue` payload (PROTOCOL.md) of one snapshot (without its ``version``, which
        the socket hub numbers)."""
        state = facts.opening
        return {
            "server_time": now.isoformat(),
            "open": state.is_open,
            "next_change": state.next_change.isoformat() if state.next_change else None,
            "total": snap.total,
            "handling_minutes": round(facts.handling_minutes, 1),
            "volunteers": [{"id": user_id, "name": name} for user_id, name in volunteers],
            "waiting": [
                {
                    "id": person.id,
                    "first_name": person.first_name,
                    "motif": person.motif,
                    "queued_at": person.queued_at.isoformat(),
                    "waited_seconds": max(0, int((now - person.queued_at).total_seconds())),
                    "reserved_for_id": person.reserved_for_id,
                    "connected": person.connected,
                    # The language they asked a volunteer to speak: its code (each page marks
                    # it when its volunteer speaks it) and its French name, else None.
                    "language": person.language,
                    "language_name": accounts.language_name(person.language)
                    if person.language
                    else None,
                }
                for person in snap.waiting
            ],
        }

    async def push_views(
        self, association_id: int
    ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """What one push sends: the volunteers' view, and the position of each open page."""
        now = utcnow()
        pages = await self.presence.open_pages()
        volunteers = await self.presence.volunteers(association_id)
        async with self.sessionmaker() as db:
            snap = await places.snapshot(db, association_id)
            facts = await self.facts(db, association_id)
            order = await places.waiting_order(db, association_id) if pages else []
            wanted = {language for entry_id, language in order if language and entry_id in pages}
            speakers = await self._speakers(db, volunteers, wanted)
        positions = [
            (
                entry_id,
                self.position_view(
                    index + 1,
                    len(order),
                    len(volunteers),
                    facts,
                    language,
                    speakers.get(language, 0) if language else 0,
                ),
            )
            for index, (entry_id, language) in enumerate(order)
            if entry_id in pages
        ]
        return self.volunteer_view(snap, facts, volunteers, now), positions

    @staticmethod
    async def _speakers(
        db: AsyncSession, volunteers: list[tuple[int, str]], languages: set[str]
    ) -> dict[str, int]:
        """How many of the volunteers on duty speak each of ``languages`` (read only when
        someone waiting asked for one)."""
        if not languages or not volunteers:
            return {}
        spoken = await accounts.languages_by_user(db, [user_id for user_id, _name in volunteers])
        return {
            language: sum(language in codes for codes in spoken.values()) for language in languages
        }

    def position_view(
        self,
        position: int,
        total: int,
        volunteers: int,
        facts: Facts,
        language: str | None = None,
        speakers: int = 0,
    ) -> dict[str, Any]:
        """What a waiting page shows: place, estimate, and whether to offer a call-back. For
        someone who asked for a volunteer speaking ``language``, the estimate counts the
        ``speakers`` of it on duty (``language_only``), within the starvation guard
        (``places.estimate_for_language``)."""
        language_only = False
        if language is None:
            estimate = places.estimate_minutes(position, volunteers, facts.handling_minutes)
        else:
            estimate, language_only = places.estimate_for_language(
                self.settings, position, speakers, volunteers, facts.handling_minutes
            )
        is_open = facts.opening.is_open
        return {
            "position": position,
            "total": total,
            "estimate_minutes": estimate,
            "language_only": language_only,
            "open": is_open,
            "offer_callback": places.offers_callback(self.settings, estimate) or not is_open,
        }

    async def position_for(self, association_id: int, entry_id: str) -> dict[str, Any] | None:
        """One waiting page's current position (on connect and for the page itself)."""
        volunteers = await self.presence.volunteers(association_id)
        async with self.sessionmaker() as db:
            facts = await self.facts(db, association_id)
            place = await places.place_of(db, association_id, entry_id)
            if place is None:
                return None
            position, total, language = place
            speakers = await self._speakers(db, volunteers, {language} if language else set())
        return self.position_view(
            position,
            total,
            len(volunteers),
            facts,
            language,
            speakers.get(language, 0) if language else 0,
        )

    async def estimate_for_newcomer(self, db: AsyncSession, association_id: int) -> int:
        """The wait someone joining now should expect."""
        waiting = await places.count_waiting(db, association_id)
        handling = await places.handling_minutes(db, self.settings, association_id)
        volunteers = len(await self.presence.volunteers(association_id))
        return places.estimate_minutes(waiting + 1, volunteers, handling)


# -- Deltas of the volunteers' view -------------------------------------------------------------

# Header fields of the `queue` payload a `queue_delta` carries only when they changed.
DELTA_HEADER = ("open", "next_change", "handling_minutes", "volunteers")
# A person's field that moves with the clock, not with the queue: never a reason to resend them.
CLOCK_FIELD = "waited_seconds"


def _same_person(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(key) == value for key, value in new.items() if key != CLOCK_FIELD)


def queue_delta(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The `queue_delta` (PROTOCOL.md) that turns the view ``old`` into ``new``: who left the
    shown list, who is new or changed there (with their fields), the new order only when
    appending the newcomers to what stays would not give it, the header fields that changed.
    ``version`` and ``base`` are taken from the two views."""
    before = {person["id"]: person for person in old["waiting"]}
    after_ids = [person["id"] for person in new["waiting"]]
    kept = set(after_ids)
    removed = [person_id for person_id in before if person_id not in kept]
    upserted = [
        person
        for person in new["waiting"]
        if person["id"] not in before or not _same_person(before[person["id"]], person)
    ]
    delta: dict[str, Any] = {
        "version": new["version"],
        "base": old["version"],
        "server_time": new["server_time"],
        "total": new["total"],
        "removed": removed,
        "upserted": upserted,
    }
    appended = [person_id for person_id in before if person_id in kept]
    appended += [person_id for person_id in after_ids if person_id not in before]
    if appended != after_ids:
        delta["order"] = after_ids
    for key in DELTA_HEADER:
        if old.get(key) != new.get(key):
            delta[key] = new[key]
    return delta


def apply_queue_delta(view: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """The view after ``delta`` (the rule every client follows; web/static/js/queue.js does the
    same). ``view`` must be at version ``delta["base"]``: a client with another version has
    missed a delta and asks for the whole list (`queue_sync`) instead."""
    if view.get("version") != delta["base"]:
        raise ValueError(f"delta from version {delta['base']} on view {view.get('version')}")
    gone = set(delta["removed"])
    people = {p["id"]: p for p in view["waiting"] if p["id"] not in gone}
    order = [person_id for person_id in people]
    for person in delta["upserted"]:
        if person["id"] not in people:
            order.append(person["id"])
        people[person["id"]] = person
    if "order" in delta:
        order = list(delta["order"])
    result = {key: value for key, value in view.items() if key != "waiting"}
    for key in ("version", "server_time", "total", *DELTA_HEADER):
        if key in delta:
            result[key] = delta[key]
    result["waiting"] = [people[person_id] for person_id in order]
    return result
