"""SQLAlchemy 2 typed models. Datetimes are timezone-aware and stored in UTC."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    Time,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from server.settings import DEFAULT_TIMEZONE

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random UUID4 string, used as primary key for rows reachable from URLs."""
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (naive storage) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention so that Alembic names constraints stably."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Role(enum.StrEnum):
    """What an account may do."""

    VOLUNTEER = "volunteer"
    COORDINATOR = "coordinator"
    REFERRER = "referrer"


class SessionStatus(enum.StrEnum):
    """Lifecycle of an assistance session as both sides see it."""

    WAITING = "waiting"
    CONNECTED = "connected"
    PAUSED = "paused"
    RECONNECTING = "reconnecting"
    ENDED = "ended"


class Association(Base):
    """An association running permanences; every account belongs to one."""

    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Partner(Base):
    """A partner structure whose social workers (referrers) book on behalf of beneficiaries."""

    __tablename__ = "partners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("association_id", "name"),)


class User(Base):
    """A volunteer or a coordinator. Beneficiaries never have an account."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])
    )
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Referrers belong to a partner structure (CCAS, CAF, France Services, association…).
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"), default=None)

    association: Mapped[Association] = relationship(lazy="raise_on_sql")


class UserLanguage(Base):
    """A language a volunteer speaks besides French (server/i18n.py codes), as they declared it
    on their profile: the queue and the booking match people who asked for it."""

    __tablename__ = "user_languages"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    language: Mapped[str] = mapped_column(String(8), primary_key=True)

    # "Who speaks Arabic here": the booking's slot filter and the wait estimate read it.
    __table_args__ = (Index("ix_user_languages_language_user", "language", "user_id"),)


class LoginSession(Base):
    """A logged-in browser. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    user: Mapped[User] = relationship(lazy="raise_on_sql")


class Invitation(Base):
    """A one-time link for an invited volunteer to choose a password."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class AssistanceSession(Base):
    """One remote assistance: a volunteer, at most one beneficiary, optionally an observer.

    The join link token and the join code are derived from a per-session salt with the secret
    key (so the volunteer's page can show them again) and only their hashes are stored for lookup.
    """

    __tablename__ = "assistance_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"), index=True)
    volunteer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    observer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    channel: Mapped[str] = mapped_column(String(20), default="link")

    token_salt: Mapped[str] = mapped_column(String(32))
    join_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_salt: Mapped[str | None] = mapped_column(String(32), default=None)
    code_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    status: Mapped[SessionStatus] = mapped_column(
        Enum(
            SessionStatus,
            native_enum=False,
            length=20,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=SessionStatus.WAITING,
    )
    beneficiary_name: Mapped[str | None] = mapped_column(String(40), default=None)
    # The language the beneficiary's page was in when they entered (server/i18n.py code): the
    # handoff sheet's link is sent in it.
    language: Mapped[str | None] = mapped_column(String(8), default=None)
    # The person_key (server/handoff.py) of the contact the beneficiary proved they read: they
    # came through the join link marked for that phone (SMS) or address (e-mail). Only then are
    # their earlier sheets linked: anyone can book with someone else's number.
    verified_person_key: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    beneficiary_joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    first_media_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    end_reason: Mapped[str | None] = mapped_column(String(20), default=None)
    media_kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    pause_count: Mapped[int] = mapped_column(Integer, default=0)
    reconnect_count: Mapped[int] = mapped_column(Integer, default=0)
    # Bytes the beneficiary's device spent on the session's peer connections, as its page last
    # reported them (server/data_used.py); only ever grows. None: nothing reported.
    data_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Socket.IO sids currently holding each role, so that any server node can route and replace.
    beneficiary_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    volunteer_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    observer_sid: Mapped[str | None] = mapped_column(String(64), default=None)

    volunteer: Mapped[User] = relationship(foreign_keys=[volunteer_id], lazy="raise_on_sql")
    observer: Mapped[User | None] = relationship(foreign_keys=[observer_id], lazy="raise_on_sql")

    __table_args__ = (
        Index("ix_assistance_sessions_volunteer_status", "volunteer_id", "status"),
        # The codes that still hold a slot, by expiry: each new session frees the expired ones
        # (server/assist.py) without reading every session ever made.
        Index(
            "ix_assistance_sessions_code_expires_at",
            "code_expires_at",
            sqlite_where=text("code_hash IS NOT NULL"),
            postgresql_where=text("code_hash IS NOT NULL"),
        ),
    )

    @property
    def is_live(self) -> bool:
        """True while the session can still be joined."""
        return self.status != SessionStatus.ENDED and self.expires_at > utcnow()


class StatEvent(Base):
    """One meaningful step, with a UTC timestamp and no personal data, for the statistics."""

    __tablename__ = "stat_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    association_id: Mapped[int | None] = mapped_column(Integer, default=None)
    session_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    channel: Mapped[str | None] = mapped_column(String(20), default=None)
    media: Mapped[str | None] = mapped_column(String(20), default=None)
    duration_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    motif_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # A short code from a fixed list (why someone left, a call-back's outcome), never free text.
    reason: Mapped[str | None] = mapped_column(String(20), default=None)
    # Where demand comes from: the INSEE département of the person's postal code ("99" for a
    # postal code we could not place), never the postal code itself.
    departement: Mapped[str | None] = mapped_column(String(3), default=None)
    # Handoff sheet facts (taxonomy codes), on `sheet_filed` events.
    theme: Mapped[str | None] = mapped_column(String(30), default=None)
    themes: Mapped[list[str]] = mapped_column(JSON, default=list)
    organisations: Mapped[list[str]] = mapped_column(JSON, default=list)
    outcome: Mapped[str | None] = mapped_column(String(20), default=None)
    autonomy: Mapped[str | None] = mapped_column(String(20), default=None)
    # The volunteer who helped (volunteers' load); volunteers are staff, not beneficiaries.
    volunteer_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # The language a person used (server/i18n.py code) on demand events (queued, booked, call-back
    # asked) and their outcomes; `language_wanted` when they asked for a volunteer speaking it.
    language: Mapped[str | None] = mapped_column(String(8), default=None)
    language_wanted: Mapped[bool | None] = mapped_column(Boolean, default=None)


# -- Booking ------------------------------------------------------------------------------------


class AppointmentStatus(enum.StrEnum):
    """Life of an appointment."""

    BOOKED = "booked"
    CANCELLED = "cancelled"
    DONE = "done"
    NO_SHOW = "no_show"


class VisitKind(enum.StrEnum):
    """First visit (longer) or follow-up."""

    FIRST = "first"
    FOLLOW_UP = "follow_up"


class Motif(Base):
    """Why people book (CAF, ameli, impôts…), managed by the coordinator, with slot lengths."""

    __tablename__ = "motifs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str | None] = mapped_column(String(300), default=None)
    first_visit_minutes: Mapped[int] = mapped_column(Integer, default=60)
    follow_up_minutes: Mapped[int] = mapped_column(Integer, default=30)
    position: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A code of taxonomy.THEMES, so that unmet demand on this motif counts under a theme.
    theme: Mapped[str | None] = mapped_column(String(30), default=None)

    __table_args__ = (UniqueConstraint("association_id", "name"),)


class Availability(Base):
    """A recurring weekly permanence of a volunteer, in the volunteer's own time zone."""

    __tablename__ = "availabilities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    volunteer_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    weekday: Mapped[int] = mapped_column(Integer)  # 0 = Monday … 6 = Sunday
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    valid_from: Mapped[date | None] = mapped_column(Date, default=None)
    valid_until: Mapped[date | None] = mapped_column(Date, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AvailabilityException(Base):
    """An absence (holiday, sick day) during which a volunteer takes no appointment."""

    __tablename__ = "availability_exceptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    volunteer_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(String(120), default=None)


class Appointment(Base):
    """A booked visio appointment. Personal data here is purged after the retention period."""

    __tablename__ = "appointments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"), index=True)
    volunteer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    motif_id: Mapped[int] = mapped_column(ForeignKey("motifs.id"))
    kind: Mapped[VisitKind] = mapped_column(
        Enum(
            VisitKind, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]
        )
    )
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[AppointmentStatus] = mapped_column(
        Enum(
            AppointmentStatus,
            native_enum=False,
            length=20,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=AppointmentStatus.BOOKED,
    )
    first_name: Mapped[str] = mapped_column(String(40))
    phone: Mapped[str | None] = mapped_column(String(20), default=None)  # E.164
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    postal_code: Mapped[str | None] = mapped_column(String(5), default=None)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    needs: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    display_timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    # The language the booking was made in (server/i18n.py code): its messages are written in
    # it. `language_wanted`: the person asked for a volunteer who speaks it.
    language: Mapped[str] = mapped_column(String(8), default="fr", server_default="fr")
    language_wanted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    booked_via: Mapped[str] = mapped_column(String(20), default="public")  # public|referrer|api
    referrer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    manage_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Keyed hash of the booking client's address key (IPv4, or IPv6 /64), never the address:
    # live public bookings per client are capped (server/fair_use.py). Purged with the rest.
    client_key_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    assistance_session_id: Mapped[str | None] = mapped_column(
        ForeignKey("assistance_sessions.id"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Set when the appointment was moved: this row is closed, the booking lives on there.
    moved_to_id: Mapped[str | None] = mapped_column(
        ForeignKey("appointments.id", ondelete="SET NULL"), default=None
    )

    __table_args__ = (
        Index("ix_appointments_volunteer_starts", "volunteer_id", "starts_at"),
        Index("ix_appointments_client_key_hash", "client_key_hash"),
        Index("ix_appointments_phone", "phone"),
    )


class AppointmentUnit(Base):
    """Capacity units: one row per volunteer per grid step an appointment (plus its buffer)
    occupies. The primary key makes double booking impossible on every database."""

    __tablename__ = "appointment_units"

    volunteer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    unit_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    appointment_id: Mapped[str] = mapped_column(
        ForeignKey("appointments.id", ondelete="CASCADE"), index=True
    )


class OutboxStatus(enum.StrEnum):
    """Delivery state of a notification."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Never sent on purpose (an SMS past a cap, outside the allowed regions): kept so that the
    # person can be told and an operator can see what was held back.
    WITHHELD = "withheld"


class OutboxMessage(Base):
    """A notification to send (e-mail or SMS), written in the same transaction as its cause."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(10))  # email | sms
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str | None] = mapped_column(String(200), default=None)
    body: Mapped[str] = mapped_column(Text)
    attachments: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    send_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[OutboxStatus] = mapped_column(
        Enum(
            OutboxStatus,
            native_enum=False,
            length=20,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=OutboxStatus.PENDING,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    appointment_id: Mapped[str | None] = mapped_column(
        ForeignKey("appointments.id", ondelete="SET NULL"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    __table_args__ = (
        Index("ix_outbox_status_send_after", "status", "send_after"),
        # The per-recipient SMS cap counts one number's messages of one day.
        Index("ix_outbox_recipient_send_after", "recipient", "send_after"),
    )


class WaitlistEntry(Base):
    """Someone who wants to be told when an earlier slot frees up."""

    __tablename__ = "waitlist"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"), index=True)
    motif_id: Mapped[int] = mapped_column(ForeignKey("motifs.id"))
    appointment_id: Mapped[str | None] = mapped_column(
        ForeignKey("appointments.id", ondelete="CASCADE"), default=None
    )
    first_name: Mapped[str] = mapped_column(String(40))
    phone: Mapped[str | None] = mapped_column(String(20), default=None)
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    earlier_than: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    language: Mapped[str] = mapped_column(String(8), default="fr", server_default="fr")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ApiToken(Base):
    """A referrer's token for partner software calling /api/v1 (only its SHA-256 is stored)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class UsedChallenge(Base):
    """A proof-of-work challenge already spent on a form: refused if sent again, until its
    expiry (then the signature check refuses it anyway and the row is deleted)."""

    __tablename__ = "used_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the challenge's signature
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# -- Drop-in queue and call-backs ------------------------------------------------------------


class QueueStatus(enum.StrEnum):
    """Life of a place in the drop-in queue."""

    WAITING = "waiting"
    TAKEN = "taken"  # a volunteer took the person: an assistance session exists
    LEFT = "left"  # the person left, or their grace time after a disconnection ran out
    GONE = "gone"  # a volunteer marked them gone (not there when called)


class QueueEntry(Base):
    """Someone waiting for the next free volunteer. The browser holds a random token (cookie);
    only its SHA-256 is stored. First name and postal code are purged after the retention time."""

    __tablename__ = "queue_entries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"))
    motif_id: Mapped[int | None] = mapped_column(ForeignKey("motifs.id"), default=None)
    first_name: Mapped[str | None] = mapped_column(String(40), default=None)
    postal_code: Mapped[str | None] = mapped_column(String(5), default=None)
    # The language of the person's pages (server/i18n.py code); `language_wanted`: they asked
    # for a volunteer who speaks it (server/dropin/places.py says how "take next" uses it).
    language: Mapped[str] = mapped_column(String(8), default="fr", server_default="fr")
    language_wanted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Keyed hash of the client's address key (IPv4, or IPv6 /64), never the address: live
    # places per client are capped (server/fair_use.py), across server nodes.
    client_key_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[QueueStatus] = mapped_column(
        Enum(
            QueueStatus,
            native_enum=False,
            length=20,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=QueueStatus.WAITING,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Order in the queue: the join time, kept when a volunteer puts the person back.
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Presence: the waiting page's socket, else the last time the browser was seen (grace time).
    waiting_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A transfer reserves the person for one volunteer until they take them.
    reserved_for_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    taken_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    assistance_session_id: Mapped[str | None] = mapped_column(
        ForeignKey("assistance_sessions.id"), default=None
    )
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    end_reason: Mapped[str | None] = mapped_column(String(20), default=None)

    __table_args__ = (
        # The queue order (queued_at, id) within an association's waiting people: the next
        # person to take, the list volunteers see and the positions are read in this order,
        # without sorting the whole queue.
        Index(
            "ix_queue_entries_association_status_queued_id",
            "association_id",
            "status",
            "queued_at",
            "id",
        ),
        Index("ix_queue_entries_client_key_hash", "client_key_hash"),
        # The people reserved for a volunteer (a transfer) come first in their next take: found
        # in queue order without reading the others (a handful of rows, hence partial).
        Index(
            "ix_queue_entries_reserved_for",
            "reserved_for_id",
            "status",
            "queued_at",
            "id",
            sqlite_where=text("reserved_for_id IS NOT NULL"),
            postgresql_where=text("reserved_for_id IS NOT NULL"),
        ),
    )


class CallbackStatus(enum.StrEnum):
    """Life of a call-back request."""

    OPEN = "open"  # in the list, nobody on it
    CLAIMED = "claimed"  # a volunteer is calling
    RESOLVED = "resolved"
    CANCELLED = "cancelled"  # by the person, from the link in their acknowledgement
    EXPIRED = "expired"


class CallbackRequest(Base):
    """ "Rappelez-moi": left at any hour. Phone, e-mail, first name and message are personal data,
    purged after the retention time; the statistics events keep only what happened."""

    __tablename__ = "callback_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"))
    motif_id: Mapped[int | None] = mapped_column(ForeignKey("motifs.id"), default=None)
    first_name: Mapped[str | None] = mapped_column(String(40), default=None)
    phone: Mapped[str] = mapped_column(String(20))  # E.164
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    postal_code: Mapped[str | None] = mapped_column(String(5), default=None)
    # Preferred times, codes from a fixed list (callbacks.WINDOWS).
    windows: Mapped[list[str]] = mapped_column(JSON, default=list)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    display_timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    # The language the request was made in: its acknowledgement and visio link are written in it.
    language: Mapped[str] = mapped_column(String(8), default="fr", server_default="fr")
    cancel_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[CallbackStatus] = mapped_column(
        Enum(
            CallbackStatus,
            native_enum=False,
            length=20,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=CallbackStatus.OPEN,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # helped, appointment, visio_link, wrong_number, unreachable, too_old, cancelled…
    outcome: Mapped[str | None] = mapped_column(String(20), default=None)
    assistance_session_id: Mapped[str | None] = mapped_column(
        ForeignKey("assistance_sessions.id"), default=None
    )

    __table_args__ = (
        Index(
            "ix_callback_requests_association_status_created",
            "association_id",
            "status",
            "created_at",
        ),
    )


class CallbackAttempt(Base):
    """One try at calling someone back, by whom and with what result (a code, no free text)."""

    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    callback_id: Mapped[str] = mapped_column(
        ForeignKey("callback_requests.id", ondelete="CASCADE"), index=True
    )
    volunteer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    outcome: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# -- Handoff sheets (fiche navette) ------------------------------------------------------------


class HandoffSheet(Base):
    """What was done in one session, what is left, where the person was sent. The beneficiary
    reads it through their own link (only the token's SHA-256 is stored); free text and contact
    details are purged after the retention time, the coded facts stay (no personal data)."""

    __tablename__ = "handoff_sheets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"), index=True)
    volunteer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assistance_session_id: Mapped[str | None] = mapped_column(
        ForeignKey("assistance_sessions.id"), unique=True, default=None
    )
    callback_id: Mapped[str | None] = mapped_column(
        ForeignKey("callback_requests.id", ondelete="SET NULL"), unique=True, default=None
    )
    channel: Mapped[str] = mapped_column(String(20))  # link | appointment | drop_in | callback
    themes: Mapped[list[str]] = mapped_column(JSON, default=list)  # taxonomy.THEMES codes
    organisations: Mapped[list[str]] = mapped_column(JSON, default=list)  # taxonomy.ORGANISATIONS
    autonomy: Mapped[str] = mapped_column(String(20))  # taxonomy.AUTONOMY
    outcome: Mapped[str] = mapped_column(String(20))  # taxonomy.OUTCOMES
    actions_done: Mapped[str | None] = mapped_column(Text, default=None)
    orientation_partner: Mapped[str | None] = mapped_column(String(200), default=None)
    orientation_contact: Mapped[str | None] = mapped_column(String(300), default=None)
    next_steps: Mapped[str | None] = mapped_column(Text, default=None)
    follow_up_on: Mapped[date | None] = mapped_column(Date, default=None)
    postal_code: Mapped[str | None] = mapped_column(String(5), default=None)
    # The beneficiary agreed that later volunteers read this sheet (they can withdraw it).
    shared_with_volunteers: Mapped[bool] = mapped_column(Boolean, default=False)
    # Keyed hash of the person's phone or e-mail: finds their earlier shared sheets without
    # storing the contact again. Purged with the rest.
    person_key: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    read_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class RightsCheck(Base):
    """A rights check (server/rights/): the answers the volunteer typed with the person, the
    results OpenFisca-France gave, in one session or from one handoff sheet. The answers are
    forgotten when the session ends unless the person agreed to keep them with the sheet; the
    check goes with its sheet's retention purge, or at the session's end when it was not put
    on a sheet (server/rights/checks.py)."""

    __tablename__ = "rights_checks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    association_id: Mapped[int] = mapped_column(ForeignKey("associations.id"), index=True)
    volunteer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assistance_session_id: Mapped[str | None] = mapped_column(
        ForeignKey("assistance_sessions.id", ondelete="CASCADE"), unique=True, default=None
    )
    handoff_sheet_id: Mapped[str | None] = mapped_column(
        ForeignKey("handoff_sheets.id", ondelete="CASCADE"), unique=True, default=None
    )
    period: Mapped[str] = mapped_column(String(7))  # the month checked, "2026-12"
    model_version: Mapped[str] = mapped_column(String(20))  # openfisca-france's version
    departement: Mapped[str] = mapped_column(String(3))  # of the commune checked
    answers: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    keep_answers: Mapped[bool] = mapped_column(Boolean, default=False)  # the person agreed
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    on_sheet: Mapped[bool] = mapped_column(Boolean, default=False)  # next steps of the sheet
    show_amounts: Mapped[bool] = mapped_column(Boolean, default=False)  # the person agreed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # When its statistics events were recorded (once: server/rights/checks.py settle()).
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


# -- Statistics rollups -------------------------------------------------------------------------


class _RollupTable(Base):
    """The key and counters shared by both rollup tiers (server/stats/rollups.py explains the
    keys). ``'*'`` in channel or theme means "all"; ``''`` means "none given". Rebuilt from
    stat_events by ``server.stats.rebuild.rebuild_rollups``."""

    __abstract__ = True

    association_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dim: Mapped[str] = mapped_column(String(10), primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    theme: Mapped[str] = mapped_column(String(30), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_sum: Mapped[int] = mapped_column(BigInteger, default=0)

    # The primary key is the only index the queries need; on SQLite the table is stored in it.
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy reads it once


class StatRollup(_RollupTable):
    """Daily counts of statistics events, kept up to date in the same transaction as each
    event."""

    __tablename__ = "stat_rollups"


class StatRollupMonthly(_RollupTable):
    """The same counts as ``StatRollup`` summed by calendar month (``day`` is the month's first
    local day): long periods read whole months here and only their edge days in the daily table."""

    __tablename__ = "stat_rollups_monthly"


class WorkerHeartbeat(Base):
    """When the notification worker of a node last went round its loop: /readyz of any node
    reads it, with or without Redis (one row per node name, written at most every few seconds)."""

    __tablename__ = "worker_heartbeats"

    node: Mapped[str] = mapped_column(String(100), primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)


# -- Vault (coffre-fort numérique, server/vault/DESIGN.md) -----------------------------------------
# The server holds ciphertext and the hashes of capabilities only: no column below can be read
# as a document, a name or a key without a secret that only the person's devices (or their
# personne de confiance) hold.


class Vault(Base):
    """A person's vault, found by the hash of its access capability, never by its id."""

    __tablename__ = "vaults"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    access_hash: Mapped[str] = mapped_column(String(64), unique=True)
    recovery_lookup_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # b64u(iv ‖ AES-GCM(recovery key, vault key)): 60 bytes, 80 characters.
    recovery_box: Mapped[str] = mapped_column(String(100))
    # The person agreed that document categories are kept in clear for the statistics.
    share_facts: Mapped[bool] = mapped_column(Boolean, default=False)
    # Where the vault was made from, when the person came from a room: for the statistics only.
    association_id: Mapped[int | None] = mapped_column(Integer, default=None)
    departement: Mapped[str | None] = mapped_column(String(3), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # Optional, given by the person only so that they are told before a retention deletion.
    contact_phone: Mapped[str | None] = mapped_column(String(20), default=None)
    contact_email: Mapped[str | None] = mapped_column(String(254), default=None)
    # The language of the page the contact was given on: the retention notices are written in it.
    contact_language: Mapped[str | None] = mapped_column(String(8), default=None)
    # Retention notices already sent for the current period of inactivity (0, 1 or 2), and
    # when the last one was written: the vault is kept at least 7 days after it.
    notices_sent: Mapped[int] = mapped_column(Integer, default=0)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Totals kept in the same transaction as the documents, so that a quota check reads one row.
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    document_count: Mapped[int] = mapped_column(Integer, default=0)


class VaultDocument(Base):
    """One encrypted document: its wrapped key, encrypted metadata and where its blob lives."""

    __tablename__ = "vault_documents"

    # Made by the browser (UUID4) and bound into the ciphertext's additional data.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    wrapped_key: Mapped[str] = mapped_column(String(64))
    meta: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(20), default=None)
    # "files" or "database": where the blob was written (server/vault/storage.py).
    storage: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VaultBlobChunk(Base):
    """A piece of a document's ciphertext, for the `database` storage (several nodes). No foreign
    key: chunks are written before the document row commits; orphans are removed by the purge."""

    __tablename__ = "vault_blobs"

    document_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VaultEvent(Base):
    """Something that happened to a vault, shown to the person (who named or used a trustee)."""

    __tablename__ = "vault_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The trustee's name and association as shown when it happened (staff, not the person).
    trustee_name: Mapped[str | None] = mapped_column(String(200), default=None)


class TrusteeKey(Base):
    """A staff account's public key as personne de confiance; the private key never leaves the
    browser that made it. A new key replaces the old one (``replaced_at``)."""

    __tablename__ = "trustee_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    replaced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class TrusteeCode(Base):
    """A short-lived code a trustee gives a person so that they can name them."""

    __tablename__ = "trustee_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    trustee_key_id: Mapped[int] = mapped_column(
        ForeignKey("trustee_keys.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class VaultGrant(Base):
    """The vault key wrapped for a trustee with the person's consent; revoking erases it."""

    __tablename__ = "vault_grants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    trustee_key_id: Mapped[int] = mapped_column(
        ForeignKey("trustee_keys.id", ondelete="CASCADE"), index=True
    )
    wrapped_key: Mapped[str | None] = mapped_column(Text, default=None)
    label: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class VaultRecoveryRequest(Base):
    """A new device asking a trustee for the vault key: its public key, then the answer."""

    __tablename__ = "vault_recovery_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    public_key: Mapped[str] = mapped_column(Text)
    poll_token_hash: Mapped[str] = mapped_column(String(64))
    pairing_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    wrapped_key: Mapped[str | None] = mapped_column(Text, default=None)
    grant_id: Mapped[str | None] = mapped_column(
        ForeignKey("vault_grants.id", ondelete="CASCADE"), default=None
    )
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
