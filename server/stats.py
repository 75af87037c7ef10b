"""Statistics events: one row per meaningful step, UTC timestamp, no personal data."""

from __future__ import annotations

import enum

from sqlalchemy.ext.asyncio import AsyncSession

from server.models import AssistanceSession, StatEvent, utcnow


class EventKind(enum.StrEnum):
    """Every step we count. Never add a field that could identify a person."""

    SESSION_CREATED = "session_created"
    BENEFICIARY_JOINED = "beneficiary_joined"
    MEDIA_SHARED = "media_shared"
    PAUSED = "paused"
    RECONNECTED = "reconnected"
    OBSERVER_INVITED = "observer_invited"
    SESSION_ENDED = "session_ended"
    SESSION_ABANDONED = "session_abandoned"
    # Booking. `channel` holds how it was booked (public, referrer, api) for APPOINTMENT_BOOKED.
    APPOINTMENT_BOOKED = "appointment_booked"
    APPOINTMENT_CANCELLED = "appointment_cancelled"
    APPOINTMENT_RESCHEDULED = "appointment_rescheduled"
    NO_SLOT_FOUND = "no_slot_found"
    WAITLIST_JOINED = "waitlist_joined"
    NO_SHOW = "no_show"


async def record(
    db: AsyncSession,
    kind: EventKind,
    session: AssistanceSession | None = None,
    *,
    media: str | None = None,
    duration_seconds: int | None = None,
) -> StatEvent:
    """Add one event in the caller's transaction."""
    event = StatEvent(
        occurred_at=utcnow(),
        kind=kind.value,
        association_id=session.association_id if session else None,
        session_id=session.id if session else None,
        channel=session.channel if session else None,
        media=media,
        duration_seconds=duration_seconds,
    )
    db.add(event)
    return event
