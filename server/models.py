"""SQLAlchemy 2 typed models. Datetimes are timezone-aware and stored in UTC."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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

    association: Mapped[Association] = relationship(lazy="raise_on_sql")


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

    The join link token and the 6-digit code are derived from a per-session salt with the secret
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    beneficiary_joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    first_media_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    end_reason: Mapped[str | None] = mapped_column(String(20), default=None)
    media_kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    pause_count: Mapped[int] = mapped_column(Integer, default=0)
    reconnect_count: Mapped[int] = mapped_column(Integer, default=0)
    # Socket.IO sids currently holding each role, so that any server node can route and replace.
    beneficiary_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    volunteer_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    observer_sid: Mapped[str | None] = mapped_column(String(64), default=None)

    volunteer: Mapped[User] = relationship(foreign_keys=[volunteer_id], lazy="raise_on_sql")
    observer: Mapped[User | None] = relationship(foreign_keys=[observer_id], lazy="raise_on_sql")

    __table_args__ = (Index("ix_assistance_sessions_volunteer_status", "volunteer_id", "status"),)

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
