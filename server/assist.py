"""Assistance sessions: creation, join link and code, access rules, lifecycle state.

All state lives in the database (not in process memory) so that a second server node can be
added: which Socket.IO sid holds each role is stored on the session row.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server import links
from server.accounts import AccountError, account_email
from server.events import PeerRevoked, RoomEnded, publish
from server.i18n import _
from server.rights import checks as rights_checks
from server.settings import Settings
from server.stats.events import EventKind, record
from server.store.models import (
    Appointment,
    AssistanceSession,
    Role,
    SessionStatus,
    User,
    new_id,
    utcnow,
)
from server.tokens import code_hash, join_code, join_token, new_salt, sha256_hex

CODE_ATTEMPTS = 20
# Pauses and reconnections are statistics events, one row each; a script toggling pause (or
# reconnecting) in a loop would grow the events table without bound. Past this many per session
# only the session's counters (pause_count, reconnect_count) go on counting.
MAX_RECORDED_PER_SESSION = 20


class PeerRole(enum.StrEnum):
    """Who a connected peer is in a session."""

    BENEFICIARY = "beneficiary"
    VOLUNTEER = "volunteer"
    OBSERVER = "observer"


class MediaKind(enum.StrEnum):
    """What the beneficiary shows."""

    SCREEN = "screen"
    CAMERA = "camera"
    PHOTO = "photo"


def link_for(settings: Settings, session: AssistanceSession) -> str:
    """The absolute `/j/<token>` link of a session."""
    return links.JOIN.url(
        settings,
        token=join_token(settings.secret_key.get_secret_value(), session.id, session.token_salt),
    )


# An appointment's join link and code let the beneficiary in from this long before its start.
JOIN_OPENS_BEFORE = timedelta(minutes=15)

# A beneficiary's pass still shows the handoff sheet this long after the session ended (the
# volunteer writes it then); later the sheet is read through its own link, sent to them.
PASS_AFTER_END = timedelta(hours=1)


def pass_honoured(session: AssistanceSession, now: datetime) -> bool:
    """Whether a beneficiary's pass for this session still opens anything: its room while it
    lives, its handoff sheet for PASS_AFTER_END after it ended."""
    if session.ended_at is not None:
        return now < session.ended_at + PASS_AFTER_END
    return now < session.expires_at


def pass_seconds_left(session: AssistanceSession, now: datetime) -> int:
    """The pass cookie's lifetime: it expires with the session (plus the sheet's hour)."""
    return max(0, int((session.expires_at + PASS_AFTER_END - now).total_seconds()))


def current_code(settings: Settings, session: AssistanceSession) -> str | None:
    """The session's join code while it is valid."""
    if session.code_salt is None or session.code_expires_at is None:
        return None
    if session.code_expires_at <= utcnow() or not session.is_live:
        return None
    return join_code(
        settings.secret_key.get_secret_value(), session.id, session.code_salt, settings.code_digits
    )


async def _release_expired_codes(db: AsyncSession) -> None:
    """Free the unique code slots of expired codes so they can be handed out again."""
    await db.execute(
        update(AssistanceSession)
        .where(AssistanceSession.code_expires_at <= utcnow())
        .where(AssistanceSession.code_hash.is_not(None))
        .values(code_hash=None)
    )


@dataclass(frozen=True)
class _Code:
    """A freshly drawn join code and the columns that hold it (valid CODE_TTL_MINUTES)."""

    code: str
    salt: str
    digest: str
    expires_at: datetime


def _fresh_code(settings: Settings, session_id: str) -> _Code:
    secret = settings.secret_key.get_secret_value()
    salt = new_salt()
    code = join_code(secret, session_id, salt, settings.code_digits)
    expires_at = utcnow() + timedelta(minutes=settings.code_ttl_minutes)
    return _Code(code, salt, code_hash(secret, code), expires_at)


async def assign_new_code(db: AsyncSession, settings: Settings, session: AssistanceSession) -> str:
    """Give the session a fresh code of CODE_DIGITS digits valid CODE_TTL_MINUTES, unique among
    live codes."""
    await _release_expired_codes(db)
    session_id = session.id  # read once: a rolled-back savepoint expires the object
    for _attempt in range(CODE_ATTEMPTS):
        fresh = _fresh_code(settings, session_id)
        try:
            async with db.begin_nested():
                session.code_salt = fresh.salt
                session.code_hash = fresh.digest
                session.code_expires_at = fresh.expires_at
                await db.flush()
        except IntegrityError:
            await db.refresh(session)  # the code is held by another live session: draw again
            continue
        return fresh.code
    raise RuntimeError("could not find a free join code; too many live sessions?")


async def create_session(
    db: AsyncSession,
    settings: Settings,
    volunteer: User,
    channel: str = "link",
    *,
    record_created: bool = True,
    beneficiary_name: str | None = None,
) -> AssistanceSession:
    """Open a new assistance for this volunteer with a join link and a join code.

    The session is written by one INSERT, its code included (a code another session holds
    makes that INSERT fail in its savepoint: the expired codes are freed and a new code is
    drawn). Appointments pass ``record_created=False``: their booking is counted by the
    booking events, and a booking that is moved or cancelled is not an assistance."""
    session_id, salt = new_id(), new_salt()
    token_hash = sha256_hex(join_token(settings.secret_key.get_secret_value(), session_id, salt))
    expires_at = utcnow() + timedelta(hours=settings.session_ttl_hours)
    for attempt in range(CODE_ATTEMPTS):
        if attempt == 1:
            # Expired codes keep their slot (find_by_code ignores them) until a new code meets
            # one: freed then, not on every session (that UPDATE was a statement per session).
            await _release_expired_codes(db)
        fresh = _fresh_code(settings, session_id)
        session = AssistanceSession(
            id=session_id,
            association_id=volunteer.association_id,
            volunteer_id=volunteer.id,
            channel=channel,
            token_salt=salt,
            join_token_hash=token_hash,
            expires_at=expires_at,
            media_kinds=[],
            beneficiary_name=beneficiary_name,
            code_salt=fresh.salt,
            code_hash=fresh.digest,
            code_expires_at=fresh.expires_at,
        )
        try:
            async with db.begin_nested():
                db.add(session)
                await db.flush()
        except IntegrityError:
            continue  # the code is held by another session (the rollback dropped the row)
        if record_created:
            await record(db, EventKind.SESSION_CREATED, session)
        return session
    raise RuntimeError("could not find a free join code; too many live sessions?")


def _live_clause() -> list[ColumnElement[bool]]:
    """Conditions of a session that can still be joined."""
    return [
        AssistanceSession.status != SessionStatus.ENDED,
        AssistanceSession.expires_at > utcnow(),
    ]


async def find_by_token(db: AsyncSession, token: str) -> AssistanceSession | None:
    """The live session behind a join link token, or None (expired, ended or unknown alike)."""
    if not token or len(token) > 128:
        return None
    return await db.scalar(
        select(AssistanceSession).where(
            AssistanceSession.join_token_hash == sha256_hex(token), *_live_clause()
        )
    )


def _code_clause(settings: Settings, code: str) -> ColumnElement[bool]:
    return AssistanceSession.code_hash == code_hash(settings.secret_key.get_secret_value(), code)


async def find_by_code(db: AsyncSession, settings: Settings, code: str) -> AssistanceSession | None:
    """The session this code lets in NOW, or None. A code not usable now (an appointment whose
    join window has not opened, an expired or ended one) is not in the live code space: the
    same one query answers None, as for a code nobody holds."""
    if len(code) != settings.code_digits or not code.isascii() or not code.isdigit():
        return None
    now = utcnow()
    return await db.scalar(
        select(AssistanceSession)
        .outerjoin(Appointment, Appointment.assistance_session_id == AssistanceSession.id)
        .where(
            _code_clause(settings, code),
            AssistanceSession.code_expires_at > now,
            or_(
                Appointment.id.is_(None),  # an assistance started now
                Appointment.starts_at <= now + JOIN_OPENS_BEFORE,  # the join window is open
                AssistanceSession.volunteer_sid.is_not(None),  # the volunteer let them in early
            ),
            *_live_clause(),
        )
    )


async def find_by_booked_code(
    db: AsyncSession, settings: Settings, code: str
) -> AssistanceSession | None:
    """The session holding this code even before its window opens (a lost manage link is
    recovered with the code AND the phone; see booking.recover_manage_link)."""
    if len(code) != settings.code_digits or not code.isascii() or not code.isdigit():
        return None
    return await db.scalar(
        select(AssistanceSession).where(
            _code_clause(settings, code),
            AssistanceSession.code_expires_at > utcnow(),
            *_live_clause(),
        )
    )


async def get_live(db: AsyncSession, session_id: str) -> AssistanceSession | None:
    """A session by id if it can still be joined."""
    return await db.scalar(
        select(AssistanceSession).where(AssistanceSession.id == session_id, *_live_clause())
    )


def role_of(session: AssistanceSession, user: User) -> PeerRole | None:
    """The volunteer-side role this account has in the session, if any (never a referrer's)."""
    if user.role not in (Role.VOLUNTEER, Role.COORDINATOR):
        return None
    if session.volunteer_id == user.id:
        return PeerRole.VOLUNTEER
    if session.observer_id is not None and session.observer_id == user.id:
        return PeerRole.OBSERVER
    return None


async def get_for_user(
    db: AsyncSession, session_id: str, user: User
) -> tuple[AssistanceSession, PeerRole] | None:
    """The session if this account is its volunteer or its invited observer."""
    if len(session_id) > 36:
        return None
    session = await db.get(AssistanceSession, session_id)
    if session is None:
        return None
    role = role_of(session, user)
    return None if role is None else (session, role)


async def list_for_user(db: AsyncSession, user: User) -> list[AssistanceSession]:
    """Live sessions this account runs or observes, newest first."""
    rows = await db.scalars(
        select(AssistanceSession)
        .where(
            or_(
                AssistanceSession.volunteer_id == user.id, AssistanceSession.observer_id == user.id
            ),
            *_live_clause(),
        )
        .order_by(AssistanceSession.created_at.desc())
    )
    return list(rows)


async def invite_observer(
    db: AsyncSession, session: AssistanceSession, owner: User, email: str
) -> User:
    """Let another active volunteer of the same association watch this session (shadowing);
    an observer it replaces stops watching at once."""
    target = await db.scalar(
        select(User).where(
            User.email == account_email(email),
            User.association_id == owner.association_id,
            User.is_active.is_(True),
            User.role.in_((Role.VOLUNTEER, Role.COORDINATOR)),
        )
    )
    if target is None:
        raise AccountError(
            "unknown_volunteer",
            _("Aucun bénévole actif de votre association n'a cette adresse."),
            "email",
        )
    if target.id == owner.id:
        raise AccountError(
            "already_in_session", _("Vous êtes déjà dans cette assistance."), "email"
        )
    if session.observer_id is not None and session.observer_id != target.id:
        publish(db, PeerRevoked(session.id, session.observer_id, "revoked"))
    session.observer_id = target.id
    await record(db, EventKind.OBSERVER_INVITED, session)
    return target


async def end_session(
    db: AsyncSession, session: AssistanceSession, reason: str, *, told: str | None = None
) -> bool:
    """End a session once; True if this call ended it. Records the duration; after commit
    everyone in the room is told ``told`` (default: ``reason``) and disconnected."""
    if session.status == SessionStatus.ENDED:
        return False
    publish(db, RoomEnded(session.id, told or reason))
    now = utcnow()
    session.status = SessionStatus.ENDED
    session.ended_at = now
    session.end_reason = reason[:20]
    session.code_hash = None
    session.beneficiary_sid = session.volunteer_sid = session.observer_sid = None
    started = session.first_media_at or session.beneficiary_joined_at
    duration = int((now - started).total_seconds()) if started else None
    kind = EventKind.SESSION_ENDED if started else EventKind.SESSION_ABANDONED
    await record(db, kind, session, duration_seconds=duration)
    await rights_checks.session_ended(db, session.id, now)
    return True


def sid_of(session: AssistanceSession, role: PeerRole) -> str | None:
    """The Socket.IO sid currently holding a role."""
    return {
        PeerRole.BENEFICIARY: session.beneficiary_sid,
        PeerRole.VOLUNTEER: session.volunteer_sid,
        PeerRole.OBSERVER: session.observer_sid,
    }[role]


def set_sid(session: AssistanceSession, role: PeerRole, sid: str | None) -> None:
    """Record which sid holds a role."""
    if role is PeerRole.BENEFICIARY:
        session.beneficiary_sid = sid
    elif role is PeerRole.VOLUNTEER:
        session.volunteer_sid = sid
    else:
        session.observer_sid = sid


async def peer_joined(
    db: AsyncSession,
    session: AssistanceSession,
    role: PeerRole,
    sid: str,
    beneficiary_name: str | None = None,
    *,
    language: str | None = None,
) -> str | None:
    """Mark a peer as present; returns the sid it replaces (a reload or another device). The
    beneficiary's language is kept: their handoff sheet's link is sent in it."""
    previous = sid_of(session, role)
    set_sid(session, role, sid)
    if role is PeerRole.BENEFICIARY:
        if beneficiary_name:
            session.beneficiary_name = beneficiary_name
        if language:
            session.language = language
        if session.beneficiary_joined_at is None:
            session.beneficiary_joined_at = utcnow()
            await record(db, EventKind.BENEFICIARY_JOINED, session)
        else:
            session.reconnect_count += 1
            if session.reconnect_count <= MAX_RECORDED_PER_SESSION:
                await record(db, EventKind.RECONNECTED, session)
    both_present = session.beneficiary_sid and session.volunteer_sid
    if both_present and session.status in (SessionStatus.WAITING, SessionStatus.RECONNECTING):
        session.status = SessionStatus.CONNECTED
    return previous


async def peer_left(db: AsyncSession, session: AssistanceSession, role: PeerRole, sid: str) -> bool:
    """Mark a peer as gone if it still held its role; True if it did (not already replaced)."""
    if sid_of(session, role) != sid:
        return False
    set_sid(session, role, None)
    if session.status != SessionStatus.ENDED and session.beneficiary_joined_at is not None:
        session.status = SessionStatus.RECONNECTING
    return True


async def media_state(
    db: AsyncSession, session: AssistanceSession, state: str, media: str | None
) -> None:
    """Record what the beneficiary shares: first media, media kinds used, pauses."""
    if session.status == SessionStatus.ENDED:
        return
    if state == "sharing" and media:
        if session.first_media_at is None:
            session.first_media_at = utcnow()
        if media not in session.media_kinds:
            session.media_kinds = [*session.media_kinds, media]
            await record(db, EventKind.MEDIA_SHARED, session, media=media)
        session.status = SessionStatus.CONNECTED
    elif state == "paused":
        if session.status != SessionStatus.PAUSED:  # state is re-sent on every (re)join
            session.pause_count += 1
            if session.pause_count <= MAX_RECORDED_PER_SESSION:
                await record(db, EventKind.PAUSED, session, media=media)
        session.status = SessionStatus.PAUSED
    elif state in ("stopped", "waiting") and session.beneficiary_sid:
        session.status = SessionStatus.CONNECTED


async def forget_presence(db: AsyncSession) -> int:
    """Drop the sids left by a previous run of this server: at its start nobody is connected
    yet. Called by the socket layer when it starts; this assumes one server node (the embedded
    and documented deployment); with several nodes presence moves to Redis instead."""
    result = await db.execute(
        update(AssistanceSession)
        .where(
            or_(
                AssistanceSession.beneficiary_sid.is_not(None),
                AssistanceSession.volunteer_sid.is_not(None),
                AssistanceSession.observer_sid.is_not(None),
            )
        )
        .values(beneficiary_sid=None, volunteer_sid=None, observer_sid=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def withdraw_user(db: AsyncSession, user_id: int) -> int:
    """A deactivated account leaves every live session at once (an open socket outlives the
    login): the sessions it ran end, its observer seats are freed. Returns how many sessions
    it left."""
    rows = await db.scalars(
        select(AssistanceSession)
        .where(
            or_(
                AssistanceSession.volunteer_id == user_id, AssistanceSession.observer_id == user_id
            ),
            *_live_clause(),
        )
        .with_for_update()
    )
    left = 0
    for session in rows:
        left += 1
        if session.volunteer_id == user_id:
            await end_session(db, session, "deactivated", told="volunteer")
        else:
            publish(db, PeerRevoked(session.id, user_id, "revoked"))
            session.observer_id = None
            session.observer_sid = None
    return left
