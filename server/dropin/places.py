"""The live drop-in queue: people wait for the next free volunteer, volunteers take them.

Taking someone is an atomic claim in the database: a conditional ``UPDATE … WHERE status =
'waiting' RETURNING`` on the row picked by a subquery (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
the database write lock on SQLite), so two volunteers clicking together never get the same person
and nobody is skipped. The browser of a waiting person holds a random token (only its SHA-256 is
stored); their place is kept while their page is connected and for a grace time after it drops.

Matching by language ("Prendre le suivant", ``take_next``). A person whose page was in another
language than French may ask for a volunteer who speaks it (``language_wanted``). With N =
QUEUE_LANGUAGE_MINUTES:

- during their first N minutes of waiting, such a person is given by "Prendre le suivant" only to
  a volunteer who declared their language; after N minutes, to anyone. A volunteer may still
  take them from the list (``take``) at any time;
- volunteer V gets, in this order: someone transferred to V (as before); else, among the people
  V may take, whoever has waited N minutes or more, longest first (the starvation guard); else
  the person waiting longest who asked for a language V speaks; else the person waiting
  longest. So a match jumps ahead of earlier people only while they have waited less than N
  minutes: nobody waits more than N minutes behind people matched by language, and a volunteer
  without the language still gets everyone else, in order.
"""

from __future__ import annotations

import enum
import functools
import math
import secrets
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Update,
    and_,
    bindparam,
    case,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from server import assist, fair_use
from server.availability import Opening, opening
from server.errors import DomainError, Kind
from server.events import (
    PeerRevoked,
    PersonTransferred,
    PlaceCalled,
    PlaceClosed,
    QueueChanged,
    publish,
)
from server.i18n import _
from server.matching import FRENCH_ONLY, LanguageChoice, speaks
from server.settings import Settings
from server.stats.events import EventKind, record
from server.store.engine import begin_write
from server.store.models import (
    AssistanceSession,
    Motif,
    QueueEntry,
    QueueStatus,
    Role,
    SessionStatus,
    User,
    utcnow,
)
from server.tokens import sha256_hex

CHANNEL = "drop_in"
TOKEN_BYTES = 24
MAX_TOKEN_LENGTH = 64
CLAIM_ATTEMPTS = 5
# The wait estimate uses the handling times of the last drop-in sessions of the past month.
HANDLING_SAMPLE = 20
HANDLING_MIN_SAMPLES = 3
HANDLING_WINDOW = timedelta(days=30)
SHOWN_TO_VOLUNTEERS = 50
# One bulk removal touches at most this many people (the whole queue at the default size).
MAX_REMOVED_AT_ONCE = 500


class LeftReason(enum.StrEnum):
    """Why a waiting person is no longer waiting without being taken (statistics `reason`)."""

    LEFT = "left"  # they clicked "Quitter la file"
    LOST = "lost"  # their page stayed disconnected past the grace time
    GONE = "gone"  # a volunteer called them and they were not there
    REMOVED = "removed"  # a volunteer removed them (a flood of fake places, a duplicate)


class QueueError(DomainError):
    """A queue action that cannot be done now: the queue changed under the person who asked."""

    default_kind = Kind.CONFLICT


@dataclass(frozen=True)
class Joined:
    """A new place in the queue and the token the browser keeps."""

    entry: QueueEntry
    token: str


@dataclass(frozen=True)
class Waiting:
    """One person as volunteers see them."""

    id: str
    first_name: str | None
    motif: str | None
    queued_at: datetime
    reserved_for_id: int | None
    connected: bool
    # The language they asked a volunteer to speak (a code of server/i18n.py), or None.
    language: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """The queue of one association at one moment (the first SHOWN_TO_VOLUNTEERS people)."""

    waiting: list[Waiting]
    total: int


async def _count(
    db: AsyncSession,
    kind: EventKind,
    entry: QueueEntry,
    session: AssistanceSession | None = None,
    **facts: Any,
) -> None:
    """One statistics event about a queue place: motif, département and language, never who it
    was."""
    if session is None:
        facts.update(association_id=entry.association_id, channel=CHANNEL)
    await record(
        db,
        kind,
        session,
        motif_id=entry.motif_id,
        postal_code=entry.postal_code,
        language=entry.language,
        language_wanted=entry.language_wanted,
        **facts,
    )


def new_token() -> str:
    """A random queue token for the browser (192 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def waited_seconds(entry: QueueEntry, now: datetime) -> int:
    """How long the person has waited since they joined (a put-back keeps their join time)."""
    return max(0, int((now - entry.queued_at).total_seconds()))


async def count_waiting(db: AsyncSession, association_id: int) -> int:
    """How many people wait now."""
    return int(
        await db.scalar(
            select(func.count())
            .select_from(QueueEntry)
            .where(
                QueueEntry.association_id == association_id,
                QueueEntry.status == QueueStatus.WAITING,
            )
        )
        or 0
    )


async def join(
    db: AsyncSession,
    settings: Settings,
    association_id: int,
    motif_id: int | None,
    first_name: str | None,
    postal_code: str | None,
    now: datetime,
    *,
    client: str | None = None,
    language: LanguageChoice = FRENCH_ONLY,
) -> Joined:
    """Add someone at the end of the queue; refused when closed or full (a call-back is
    offered), or when their client (``client``: the keyed hash of its address key) already
    holds QUEUE_MAX_PER_CLIENT places waiting in this queue. ``language``: the language of
    their page and whether they asked for a volunteer speaking it."""
    await begin_write(db)  # the count and the insert see the same queue on SQLite too
    state = await opening(db, association_id, now)
    if not state.is_open:
        raise QueueError("closed", _("La permanence est fermée pour le moment."))
    if client is not None:
        await fair_use.serialise(db, f"queue:{association_id}", client)
        if await fair_use.live_places(db, association_id, client) >= settings.queue_max_per_client:
            raise QueueError(
                "too_many_places",
                _(
                    "Depuis cette connexion, %(n)d personnes attendent déjà. Attendez qu'un "
                    "bénévole les prenne, ou laissez votre numéro : on vous rappelle."
                )
                % {"n": settings.queue_max_per_client},
                kind=Kind.RATE_LIMITED,
            )
    if await count_waiting(db, association_id) >= settings.queue_max_waiting:
        raise QueueError(
            "full",
            _("Trop de personnes attendent déjà. Laissez votre numéro : on vous rappelle."),
            kind=Kind.UNAVAILABLE,
        )
    token = new_token()
    entry = QueueEntry(
        association_id=association_id,
        motif_id=motif_id,
        first_name=first_name,
        postal_code=postal_code,
        language=language.language,
        language_wanted=language.wanted,
        token_hash=sha256_hex(token),
        client_key_hash=client,
        status=QueueStatus.WAITING,
        created_at=now,
        queued_at=now,
        last_seen_at=now,
    )
    db.add(entry)
    await db.flush()
    await _count(db, EventKind.QUEUE_JOINED, entry)
    publish(db, QueueChanged(association_id))
    return Joined(entry, token)


async def find_by_token(db: AsyncSession, token: str | None) -> QueueEntry | None:
    """The place behind a browser token, whatever its status; None for a forged or old token."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return await db.scalar(select(QueueEntry).where(QueueEntry.token_hash == sha256_hex(token)))


async def _lock(db: AsyncSession, entry_id: str) -> QueueEntry | None:
    """The row, locked for this transaction, read fresh."""
    await begin_write(db)
    return await db.get(QueueEntry, entry_id, with_for_update=True, populate_existing=True)


async def seen(db: AsyncSession, entry_id: str, now: datetime, sid: str | None = None) -> None:
    """The waiting page (or its socket) is here: the grace time starts again from now."""
    values: dict[str, object] = {"last_seen_at": now}
    if sid is not None:
        values["waiting_sid"] = sid
    await db.execute(
        update(QueueEntry)
        .where(QueueEntry.id == entry_id, QueueEntry.status == QueueStatus.WAITING)
        .values(**values)
    )


async def disconnected(
    db: AsyncSession, association_id: int, entry_id: str, sid: str, now: datetime
) -> None:
    """The waiting page's socket dropped: the place is kept for the grace time from now
    (volunteers see "page fermée")."""
    await db.execute(
        update(QueueEntry)
        .where(QueueEntry.id == entry_id, QueueEntry.waiting_sid == sid)
        .values(waiting_sid=None, last_seen_at=now)
    )
    publish(db, QueueChanged(association_id))


async def _leave(db: AsyncSession, entry: QueueEntry, reason: LeftReason, now: datetime) -> None:
    sent_away = reason in (LeftReason.GONE, LeftReason.REMOVED)
    entry.status = QueueStatus.GONE if sent_away else QueueStatus.LEFT
    entry.ended_at = now
    entry.end_reason = reason.value
    entry.waiting_sid = None
    entry.reserved_for_id = None
    await _count(
        db,
        EventKind.QUEUE_LEFT,
        entry,
        reason=reason.value,
        duration_seconds=waited_seconds(entry, now),
    )
    publish(db, PlaceClosed(entry.id, reason.value))
    publish(db, QueueChanged(entry.association_id))


async def leave(db: AsyncSession, entry_id: str, now: datetime) -> bool:
    """The person gives up their place; True if they were waiting (a second click does nothing)."""
    entry = await _lock(db, entry_id)
    if entry is None or entry.status != QueueStatus.WAITING:
        return False
    await _leave(db, entry, LeftReason.LEFT, now)
    return True


async def expire_lost(db: AsyncSession, settings: Settings, now: datetime) -> list[QueueEntry]:
    """Close the places whose page has been away longer than the grace time."""
    await begin_write(db)
    limit = now - timedelta(seconds=settings.queue_grace_seconds)
    lost = list(
        await db.scalars(
            select(QueueEntry)
            .where(
                QueueEntry.status == QueueStatus.WAITING,
                QueueEntry.waiting_sid.is_(None),
                QueueEntry.last_seen_at < limit,
            )
            .with_for_update(skip_locked=True)
        )
    )
    for entry in lost:
        await _leave(db, entry, LeftReason.LOST, now)
    return lost


async def forget_presence(db: AsyncSession, now: datetime) -> None:
    """At start-up no page is connected yet: every waiting person gets a fresh grace time."""
    await db.execute(
        update(QueueEntry)
        .where(QueueEntry.status == QueueStatus.WAITING)
        .values(waiting_sid=None, last_seen_at=now)
    )


# -- Positions and estimates ---------------------------------------------------------------------


async def waiting_ids(db: AsyncSession, association_id: int) -> list[str]:
    """Ids of the people waiting, first in line first."""
    rows = await db.scalars(
        select(QueueEntry.id)
        .where(
            QueueEntry.association_id == association_id,
            QueueEntry.status == QueueStatus.WAITING,
        )
        .order_by(QueueEntry.queued_at, QueueEntry.id)
    )
    return list(rows)


def _wanted_language() -> ColumnElement[Any]:
    """SQL: the language a waiting person asked a volunteer to speak, NULL if none."""
    return case((QueueEntry.language_wanted, QueueEntry.language), else_=null())


async def waiting_order(db: AsyncSession, association_id: int) -> list[tuple[str, str | None]]:
    """The people waiting, first in line first: (id, the language they asked for or None)."""
    rows = await db.execute(
        select(QueueEntry.id, _wanted_language())
        .where(
            QueueEntry.association_id == association_id,
            QueueEntry.status == QueueStatus.WAITING,
        )
        .order_by(QueueEntry.queued_at, QueueEntry.id)
    )
    return [(entry_id, language) for entry_id, language in rows]


async def handling_minutes(db: AsyncSession, settings: Settings, association_id: int) -> float:
    """Typical minutes a volunteer spends per drop-in person: the median of the recent ones, or
    the configured assumption until there are enough."""
    since = utcnow() - HANDLING_WINDOW
    rows = await db.execute(
        select(QueueEntry.taken_at, AssistanceSession.ended_at)
        .join(AssistanceSession, AssistanceSession.id == QueueEntry.assistance_session_id)
        .where(
            QueueEntry.association_id == association_id,
            QueueEntry.status == QueueStatus.TAKEN,
            QueueEntry.taken_at >= since,
            AssistanceSession.status == SessionStatus.ENDED,
            AssistanceSession.ended_at.is_not(None),
        )
        .order_by(QueueEntry.taken_at.desc())
        .limit(HANDLING_SAMPLE)
    )
    minutes = [
        (ended - taken).total_seconds() / 60
        for taken, ended in rows
        if taken is not None and ended is not None and ended > taken
    ]
    if len(minutes) < HANDLING_MIN_SAMPLES:
        return float(settings.queue_handling_minutes)
    return max(1.0, statistics.median(minutes))


def estimate_minutes(position: int, volunteers: int, handling: float) -> int:
    """Expected wait of the person at `position` (1 = next) with this many volunteers taking
    people: each volunteer clears one person per handling time; rounded up to 5 minutes."""
    if position <= 0:
        return 0
    rounds = math.ceil(position / max(1, volunteers))
    raw = (rounds - 0.5) * handling  # on average the volunteers are halfway through someone
    return max(5, 5 * math.ceil(raw / 5))


def estimate_for_language(
    settings: Settings,
    position: int,
    speakers: int,
    volunteers: int,
    handling: float,
) -> tuple[int, bool]:
    """Expected wait of someone at ``position`` who asked for a language that ``speakers`` of
    the ``volunteers`` on duty speak: counted with those speakers only, and whether it was
    (True). It is capped by the starvation guard: after QUEUE_LANGUAGE_MINUTES anyone may take
    them, so they never wait much longer than that plus the wait of the queue itself (False:
    the cap was used, the estimate counts every volunteer)."""
    only_speakers = estimate_minutes(position, speakers, handling) if speakers else None
    guard = max(
        5 * math.ceil(settings.queue_language_minutes / 5),
        estimate_minutes(position, volunteers, handling),
    )
    if only_speakers is not None and only_speakers <= guard:
        return only_speakers, True
    return guard, False


def offers_callback(settings: Settings, estimate: int) -> bool:
    """Past the threshold, the waiting page offers to be called back instead."""
    return estimate > settings.queue_callback_minutes


async def snapshot(
    db: AsyncSession, association_id: int, limit: int = SHOWN_TO_VOLUNTEERS
) -> Snapshot:
    """What volunteers see: the first ``limit`` people waiting (with motif), and how many wait.

    Columns, not entities: a push reads this on every change, and building 50 ORM objects
    (identity map, instance state) cost more than the query itself. The count comes with the
    rows (a window over every waiting person, computed before the limit): one query."""
    rows = await db.execute(
        select(
            QueueEntry.id,
            QueueEntry.first_name,
            Motif.name,
            QueueEntry.queued_at,
            QueueEntry.reserved_for_id,
            QueueEntry.waiting_sid.is_not(None),
            _wanted_language(),
            func.count().over(),
        )
        .outerjoin(Motif, Motif.id == QueueEntry.motif_id)
        .where(
            QueueEntry.association_id == association_id,
            QueueEntry.status == QueueStatus.WAITING,
        )
        .order_by(QueueEntry.queued_at, QueueEntry.id)
        .limit(limit)
    )
    found = rows.all()
    waiting = [
        Waiting(
            id=entry_id,
            first_name=first_name,
            motif=motif,
            queued_at=queued_at,
            reserved_for_id=reserved_for_id,
            connected=bool(connected),
            language=language,
        )
        for (
            entry_id,
            first_name,
            motif,
            queued_at,
            reserved_for_id,
            connected,
            language,
            _total,
        ) in found
    ]
    total = found[0][-1] if found else 0
    return Snapshot(waiting, int(total))


async def place_of(
    db: AsyncSession, association_id: int, entry_id: str
) -> tuple[int, int, str | None] | None:
    """(position, total, the language they asked for or None) of one waiting person, or None
    if they no longer wait."""
    order = await waiting_order(db, association_id)
    for index, (waiting_id, language) in enumerate(order):
        if waiting_id == entry_id:
            return index + 1, len(order), language
    return None


async def state_of(db: AsyncSession, association_id: int, now: datetime) -> Opening:
    """Open or closed now, from the permanences."""
    return await opening(db, association_id, now)


# -- Volunteer actions ---------------------------------------------------------------------------


def _check_volunteer(volunteer: User) -> None:
    if volunteer.role not in (Role.VOLUNTEER, Role.COORDINATOR) or not volunteer.is_active:
        raise QueueError(
            "forbidden",
            _("Seuls les bénévoles prennent des personnes de la file."),
            kind=Kind.FORBIDDEN,
        )


class Tier(enum.Enum):
    """The groups "Prendre le suivant" looks in, in this order (see the module's docstring)."""

    RESERVED = "reserved"  # transferred to this volunteer
    OVERDUE = "overdue"  # waited QUEUE_LANGUAGE_MINUTES or more: anyone's, first
    MATCHED = "matched"  # asked for a language this volunteer speaks
    ANYONE = "anyone"  # everyone else this volunteer may take


def _they_speak_it() -> ColumnElement[bool]:
    """SQL: the taking volunteer (``p_volunteer``) declared the person's language."""
    return speaks(bindparam("p_volunteer", type_=QueueEntry.taken_by_id.type), QueueEntry.language)


def _tier_condition(tier: Tier) -> ColumnElement[bool]:
    unreserved = QueueEntry.reserved_for_id.is_(None)
    if tier is Tier.RESERVED:
        return QueueEntry.reserved_for_id == bindparam("p_volunteer")
    if tier is Tier.OVERDUE:
        return and_(unreserved, QueueEntry.queued_at <= bindparam("p_overdue"))
    if tier is Tier.MATCHED:
        return and_(unreserved, QueueEntry.language_wanted.is_(True), _they_speak_it())
    return and_(unreserved, or_(QueueEntry.language_wanted.is_(False), _they_speak_it()))


def _first_waiting(tier: Tier, dialect: str) -> Select[str]:
    """The id of the person waiting longest in one ``tier`` for the volunteer: rows read from
    an index in queue order, the first that fits (the language test is an index probe)."""
    query = (
        select(QueueEntry.id)
        .where(
            QueueEntry.association_id == bindparam("p_association"),
            QueueEntry.status == QueueStatus.WAITING,
            _tier_condition(tier),
        )
        .order_by(QueueEntry.queued_at, QueueEntry.id)
        .limit(1)
    )
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return query


@functools.cache
def _claim_statement(dialect: str, named: bool) -> Update:
    """The claiming UPDATE … RETURNING, built once per dialect with bound parameters
    (``p_association``, ``p_volunteer``, ``p_now``; ``p_entry`` when ``named``, else
    ``p_overdue``): building it on every take cost about 1 ms of the take's CPU."""
    if named:
        target: ColumnElement[Any] = bindparam("p_entry", type_=QueueEntry.id.type)
    else:
        # The first tier that has someone (COALESCE stops at the first non-NULL on both
        # databases, so a tier found locks nothing further down).
        target = func.coalesce(*(_first_waiting(tier, dialect).scalar_subquery() for tier in Tier))
    return (
        update(QueueEntry)
        .where(
            QueueEntry.id == target,
            QueueEntry.association_id == bindparam("p_association"),
            # Re-checked on the row itself: on PostgreSQL the subquery may have picked a row
            # another transaction took in between (READ COMMITTED re-evaluates this WHERE).
            QueueEntry.status == QueueStatus.WAITING,
            or_(
                QueueEntry.reserved_for_id.is_(None),
                QueueEntry.reserved_for_id == bindparam("p_volunteer"),
            ),
        )
        .values(
            status=QueueStatus.TAKEN,
            taken_by_id=bindparam("p_volunteer", type_=QueueEntry.taken_by_id.type),
            taken_at=bindparam("p_now", type_=QueueEntry.taken_at.type),
            waiting_sid=None,
            reserved_for_id=None,
        )
        .returning(QueueEntry)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


async def _claim(
    db: AsyncSession,
    volunteer: User,
    now: datetime,
    entry_id: str | None,
    overdue: datetime | None = None,
) -> QueueEntry | None:
    """Atomically mark one waiting person as taken by this volunteer, in one statement; their
    row (read by the same statement), or None."""
    params: dict[str, Any] = {
        "p_association": volunteer.association_id,
        "p_volunteer": volunteer.id,
        "p_now": now,
    }
    if entry_id is not None:
        params["p_entry"] = entry_id
    else:
        params["p_overdue"] = overdue
    statement = _claim_statement(db.get_bind().dialect.name, entry_id is not None)
    claimed: QueueEntry | None = await db.scalar(statement, params)
    return claimed


async def _open_room(
    db: AsyncSession, settings: Settings, volunteer: User, entry: QueueEntry, now: datetime
) -> QueueEntry:
    """The claimed person gets an assistance session with the volunteer who took them."""
    session = await assist.create_session(
        db, settings, volunteer, CHANNEL, beneficiary_name=entry.first_name
    )
    entry.assistance_session_id = session.id
    await _count(
        db, EventKind.QUEUE_TAKEN, entry, session, duration_seconds=waited_seconds(entry, now)
    )
    publish(db, PlaceCalled(entry.id))
    publish(db, QueueChanged(entry.association_id))
    return entry


async def take_next(
    db: AsyncSession, settings: Settings, volunteer: User, now: datetime
) -> QueueEntry | None:
    """The next person for this volunteer (the module's docstring gives the rule: transfers,
    then people who waited QUEUE_LANGUAGE_MINUTES, then a match of language, then the longest
    waiting); None if nobody waits that they may take now. One statement claims them: never
    the same person as another volunteer taking at the same moment, on any node."""
    _check_volunteer(volunteer)
    await begin_write(db)
    overdue = now - timedelta(minutes=settings.queue_language_minutes)
    for _attempt in range(CLAIM_ATTEMPTS):
        claimed = await _claim(db, volunteer, now, None, overdue)
        if claimed is not None:
            return await _open_room(db, settings, volunteer, claimed, now)
        # On PostgreSQL the row picked was taken by another transaction in between, or every
        # row was locked by other takes (SKIP LOCKED): try again while someone still waits.
        if not await _anyone_for(db, volunteer, overdue):
            return None
    return None


async def _anyone_for(db: AsyncSession, volunteer: User, overdue: datetime) -> bool:
    """Whether someone waits that this volunteer may take next (an index probe, not a
    count): reserved for them, or for nobody and not kept for speakers of another language."""
    return bool(
        await db.scalar(
            select(
                select(QueueEntry.id)
                .where(
                    QueueEntry.association_id == volunteer.association_id,
                    QueueEntry.status == QueueStatus.WAITING,
                    or_(
                        QueueEntry.reserved_for_id == volunteer.id,
                        and_(
                            QueueEntry.reserved_for_id.is_(None),
                            or_(
                                QueueEntry.language_wanted.is_(False),
                                QueueEntry.queued_at <= overdue,
                                speaks(volunteer.id, QueueEntry.language),
                            ),
                        ),
                    ),
                )
                .exists()
            )
        )
    )


async def take(
    db: AsyncSession, settings: Settings, volunteer: User, entry_id: str, now: datetime
) -> QueueEntry:
    """Take one given person; refused if someone else just did (or they left)."""
    _check_volunteer(volunteer)
    await begin_write(db)
    claimed = await _claim(db, volunteer, now, entry_id)
    if claimed is None:
        entry = await db.get(QueueEntry, entry_id, populate_existing=True)
        if entry is None or entry.association_id != volunteer.association_id:
            raise QueueError("not_found", _("Cette personne n'est plus dans la file."))
        if entry.status == QueueStatus.TAKEN:
            raise QueueError("taken", _("Un autre bénévole vient de prendre cette personne."))
        if entry.status == QueueStatus.WAITING:
            raise QueueError("reserved", _("Cette personne a été transférée à un autre bénévole."))
        raise QueueError("not_found", _("Cette personne n'est plus dans la file."))
    return await _open_room(db, settings, volunteer, claimed, now)


async def _mine(db: AsyncSession, volunteer: User, entry_id: str) -> QueueEntry:
    """A person this volunteer took, locked; QueueError otherwise."""
    entry = await _lock(db, entry_id)
    if entry is None or entry.association_id != volunteer.association_id:
        raise QueueError("not_found", _("Cette personne n'est plus dans la file."))
    if entry.status != QueueStatus.TAKEN or entry.taken_by_id != volunteer.id:
        raise QueueError("not_yours", _("Vous ne vous occupez pas de cette personne."))
    return entry


async def _session_of(db: AsyncSession, entry: QueueEntry) -> AssistanceSession | None:
    if entry.assistance_session_id is None:
        return None
    return await db.get(
        AssistanceSession,
        entry.assistance_session_id,
        with_for_update=True,
        populate_existing=True,
    )


async def requeue(db: AsyncSession, volunteer: User, entry_id: str, now: datetime) -> str | None:
    """Put a person back at their place in the queue (the volunteer has to stop); their
    assistance session ends. Returns that session's id, for the room to be told."""
    entry = await _mine(db, volunteer, entry_id)
    session = await _session_of(db, entry)
    entry.status = QueueStatus.WAITING
    entry.taken_by_id = None
    entry.taken_at = None
    entry.assistance_session_id = None
    entry.last_seen_at = now  # their page comes back to the waiting room: a fresh grace time
    await _count(db, EventKind.QUEUE_REQUEUED, entry)
    publish(db, QueueChanged(entry.association_id))
    if session is not None:
        await assist.end_session(db, session, "requeued")
        return session.id
    return None


async def _target(db: AsyncSession, volunteer: User, target_id: int) -> User:
    target = await db.get(User, target_id)
    if (
        target is None
        or target.association_id != volunteer.association_id
        or not target.is_active
        or target.role not in (Role.VOLUNTEER, Role.COORDINATOR)
    ):
        raise QueueError("no_target", _("Ce bénévole n'est pas disponible."))
    if target.id == volunteer.id:
        raise QueueError("no_target", _("Choisissez un autre bénévole."))
    return target


@dataclass(frozen=True)
class Transferred:
    """A transfer: to whom, and the assistance session that changed hands (if one did)."""

    entry: QueueEntry
    target: User
    session_id: str | None


async def transfer(
    db: AsyncSession, volunteer: User, entry_id: str, target_id: int, now: datetime
) -> Transferred:
    """Hand a person to another volunteer. Someone waiting is reserved for them (they come first
    in that volunteer's "Prendre le suivant"); someone this volunteer is helping keeps the same
    assistance session, now the target's (the beneficiary sees "reconnexion…" until they come)."""
    _check_volunteer(volunteer)
    entry = await _lock(db, entry_id)
    if entry is None or entry.association_id != volunteer.association_id:
        raise QueueError("not_found", _("Cette personne n'est plus dans la file."))
    target = await _target(db, volunteer, target_id)
    publish(db, QueueChanged(entry.association_id))
    if entry.status == QueueStatus.WAITING:
        entry.reserved_for_id = target.id
        await _count(db, EventKind.QUEUE_TRANSFERRED, entry)
        return Transferred(entry, target, None)
    if entry.status != QueueStatus.TAKEN or entry.taken_by_id != volunteer.id:
        raise QueueError("not_yours", _("Vous ne vous occupez pas de cette personne."))
    session = await _session_of(db, entry)
    if session is None or not session.is_live:
        raise QueueError("ended", _("Cette assistance est terminée."))
    entry.taken_by_id = target.id
    session.volunteer_id = target.id
    # The old volunteer's socket keeps its sid until it is kicked: its disconnection then tells
    # the beneficiary "reconnexion…" like any volunteer leaving.
    if session.observer_id == target.id:
        session.observer_id = None
        session.observer_sid = None
    await _count(db, EventKind.QUEUE_TRANSFERRED, entry, session)
    publish(db, PeerRevoked(session.id, volunteer.id, "transferred"))
    publish(
        db,
        PersonTransferred(
            entry.association_id, session.id, target.id, volunteer.name, entry.first_name
        ),
    )
    return Transferred(entry, target, session.id)


async def mark_gone(
    db: AsyncSession, volunteer: User, entry_id: str, now: datetime
) -> tuple[QueueEntry, str | None]:
    """The person was called and is not there: a waiting person (any volunteer may) or one this
    volunteer took (their room ends). Returns the entry and the ended session's id."""
    _check_volunteer(volunteer)
    entry = await _lock(db, entry_id)
    if entry is None or entry.association_id != volunteer.association_id:
        raise QueueError("not_found", _("Cette personne n'est plus dans la file."))
    ended: str | None = None
    if entry.status == QueueStatus.TAKEN and entry.taken_by_id == volunteer.id:
        session = await _session_of(db, entry)
        if session is not None and session.beneficiary_joined_at is not None:
            raise QueueError("joined", _("Cette personne est arrivée : terminez l'assistance."))
        if session is not None:
            await assist.end_session(db, session, "gone")
            ended = session.id
    elif entry.status != QueueStatus.WAITING:
        raise QueueError("not_found", _("Cette personne n'est plus dans la file."))
    await _leave(db, entry, LeftReason.GONE, now)
    return entry, ended


async def entry_for_session(db: AsyncSession, session_id: str) -> QueueEntry | None:
    """The queue place an assistance session was opened for, if any."""
    return await db.scalar(select(QueueEntry).where(QueueEntry.assistance_session_id == session_id))


async def remove(
    db: AsyncSession,
    volunteer: User,
    now: datetime,
    *,
    entry_ids: Sequence[str] = (),
    since: datetime | None = None,
    reason: LeftReason = LeftReason.REMOVED,
) -> int:
    """Take several waiting people out of the queue at once (a flood of fake places): the
    chosen ``entry_ids``, or everyone who joined at or after ``since``. People being helped
    stay; each page removed is told, like "absent(e)". How many were removed."""
    _check_volunteer(volunteer)
    if reason not in (LeftReason.GONE, LeftReason.REMOVED):
        raise ValueError(f"a volunteer removes with reason gone or removed, not {reason}")
    if not entry_ids and since is None:
        raise QueueError(
            "nothing_chosen", _("Cochez les personnes à retirer."), "entry_id", kind=Kind.INVALID
        )
    await begin_write(db)
    query = select(QueueEntry).where(
        QueueEntry.association_id == volunteer.association_id,
        QueueEntry.status == QueueStatus.WAITING,
    )
    if entry_ids:
        query = query.where(QueueEntry.id.in_(list(entry_ids)[:MAX_REMOVED_AT_ONCE]))
    if since is not None:
        query = query.where(QueueEntry.queued_at >= since)
    chosen = list(
        await db.scalars(
            query.order_by(QueueEntry.queued_at, QueueEntry.id)
            .limit(MAX_REMOVED_AT_ONCE)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    for entry in chosen:
        await _leave(db, entry, reason, now)
    return len(chosen)
