"""Caps on what one client holds at once: live queue places, appointments to come.

A client is its address key (an IPv4 address, or the IPv6 prefix one home owns: see
``server.ratelimit.address_key``). The database keeps only a keyed hash of it on the queue entry
or the appointment, so the caps hold across server nodes and no address is stored; the hash is
purged with the row's other personal data. Checks and inserts of one client are serialised: on
SQLite by the write lock the caller takes, on PostgreSQL by a transaction-scoped advisory lock
on the hash, so two racing requests never both pass a cap.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import DomainError, Kind
from server.i18n import _
from server.settings import Settings
from server.store.engine import begin_write
from server.store.models import Appointment, AppointmentStatus, QueueEntry, QueueStatus


class TooMany(DomainError):
    """One client (or one phone) already holds as many live things as it may."""

    default_kind = Kind.RATE_LIMITED


def client_hash(secret_key: str, client_key: str) -> str:
    """Keyed hash (HMAC-SHA-256, hex) of a client's address key: comparable, not reversible
    without the secret key."""
    return hmac.new(
        secret_key.encode(), b"client-key\x1f" + client_key.encode(), hashlib.sha256
    ).hexdigest()


async def serialise(db: AsyncSession, scope: str, key: str) -> None:
    """Hold, until the transaction ends, the lock that orders the checks of one client (or
    phone) in ``scope``: the SQLite write lock, or a PostgreSQL advisory lock on the key."""
    await begin_write(db)
    if db.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"{scope}\x1f{key}".encode()).digest()
        lock_id = int.from_bytes(digest[:8], "big", signed=True)
        await db.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


async def live_places(db: AsyncSession, association_id: int, key_hash: str) -> int:
    """Places of this client waiting in this association's queue (a person taken is with a
    volunteer, who sees a fake one; their place stays ``taken`` after the assistance)."""
    return int(
        await db.scalar(
            select(func.count())
            .select_from(QueueEntry)
            .where(
                QueueEntry.client_key_hash == key_hash,
                QueueEntry.association_id == association_id,
                QueueEntry.status == QueueStatus.WAITING,
            )
        )
        or 0
    )


async def live_bookings(
    db: AsyncSession,
    association_id: int,
    now: datetime,
    *,
    key_hash: str | None = None,
    phone: str | None = None,
) -> int:
    """Appointments still to come (or under way) in this association, booked by this client
    (``key_hash``) or for this phone."""
    column = Appointment.client_key_hash if key_hash is not None else Appointment.phone
    value = key_hash if key_hash is not None else phone
    if value is None:
        return 0
    return int(
        await db.scalar(
            select(func.count())
            .select_from(Appointment)
            .where(
                column == value,
                Appointment.association_id == association_id,
                Appointment.status == AppointmentStatus.BOOKED,
                Appointment.ends_at > now,
            )
        )
        or 0
    )


async def hold_booking(
    db: AsyncSession, settings: Settings, appointment: Appointment, key_hash: str, now: datetime
) -> None:
    """A public booking just made in this transaction: record its client on it, then refuse
    it (TooMany: the caller rolls back) if that client or that phone now holds more than
    BOOKING_MAX_PER_CLIENT / BOOKING_MAX_PER_PHONE appointments to come in the association.
    Call ``serialise(db, "booking", key_hash)`` before booking."""
    appointment.client_key_hash = key_hash
    await db.flush()
    association_id = appointment.association_id
    if await live_bookings(db, association_id, now, key_hash=key_hash) > (
        settings.booking_max_per_client
    ):
        raise TooMany(
            "too_many_bookings",
            _(
                "Depuis cette connexion, %(n)d rendez-vous sont déjà pris. Pour en prendre un "
                "autre, appelez l'association."
            )
            % {"n": settings.booking_max_per_client},
        )
    if appointment.phone is None:
        return
    await serialise(db, "booking-phone", appointment.phone)
    if await live_bookings(db, association_id, now, phone=appointment.phone) > (
        settings.booking_max_per_phone
    ):
        raise TooMany(
            "too_many_bookings_phone",
            _(
                "Ce numéro a déjà %(n)d rendez-vous à venir. Pour en prendre un autre, annulez "
                "d'abord un rendez-vous, ou appelez l'association."
            )
            % {"n": settings.booking_max_per_phone},
            "phone",
        )
