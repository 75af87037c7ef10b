"""Statistics events: one row per meaningful step, UTC timestamp, no personal data."""

from __future__ import annotations

import enum

from sqlalchemy.ext.asyncio import AsyncSession

from server.geo import departement_for
from server.store.models import AssistanceSession, StatEvent, utcnow


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
    # Drop-in queue. `duration_seconds` is the wait; `reason` why someone left (LEFT_REASONS).
    QUEUE_JOINED = "queue_joined"
    QUEUE_LEFT = "queue_left"
    QUEUE_TAKEN = "queue_taken"
    QUEUE_REQUEUED = "queue_requeued"
    QUEUE_TRANSFERRED = "queue_transferred"
    # Call-backs. `reason` holds an attempt's or a closing's outcome code; `duration_seconds` the
    # age of the request when it was closed.
    CALLBACK_REQUESTED = "callback_requested"
    CALLBACK_ATTEMPTED = "callback_attempted"
    CALLBACK_RESOLVED = "callback_resolved"
    CALLBACK_CANCELLED = "callback_cancelled"
    CALLBACK_EXPIRED = "callback_expired"
    # A handoff sheet was filed at the end of a session: its coded facts (themes, organisations,
    # outcome, autonomy), the helping volunteer, the person's département.
    SHEET_FILED = "sheet_filed"
    # Vault (coffre-fort). `departement` where known (the room the vault was made from); `theme`
    # the document's category code, or `non_precise` when the person keeps it encrypted;
    # `reason` of a deletion: `person` or `retention`.
    VAULT_CREATED = "vault_created"
    VAULT_DOCUMENT_ADDED = "vault_document_added"
    VAULT_DELETED = "vault_deleted"
    # A document of the person's vault shown to the volunteer during a session (over the data
    # channel, never through the server): `reason` is `copy` when "Donner une copie" was chosen.
    VAULT_DOCUMENT_SHOWN = "vault_document_shown"
    # Rights check (server/rights/), counted once per check when it is settled (added to the
    # handoff sheet, or its session over): `departement` of the commune the check was made for,
    # never the session nor the person (server/rights/tally.py record_check writes them).
    # RIGHTS_CHECKED: one per check, `reason` "found" when it found at least one benefit below,
    # else "none" (server/stats/rollups.py CHECK_FOUND, CHECK_NONE). RIGHTS_UNCLAIMED: one per
    # benefit found probably due and not already received; `theme` the benefit's code
    # (server/rights/benefits.py BENEFITS), `reason` the band of its estimated monthly amount
    # (server/rights/benefits.py AMOUNT_BANDS; None for a benefit without an amount such as the
    # free complémentaire santé solidaire).
    RIGHTS_CHECKED = "rights_checked"
    RIGHTS_UNCLAIMED = "rights_unclaimed"


UNKNOWN_DEPARTEMENT = "99"  # a postal code was given but could not be placed (foreign, invalid)


def departement_of(postal_code: str | None) -> str | None:
    """The département to count a person under: None when no postal code was given."""
    if not postal_code:
        return None
    return departement_for(postal_code) or UNKNOWN_DEPARTEMENT


async def record(
    db: AsyncSession,
    kind: EventKind,
    session: AssistanceSession | None = None,
    *,
    media: str | None = None,
    duration_seconds: int | None = None,
    association_id: int | None = None,
    channel: str | None = None,
    motif_id: int | None = None,
    reason: str | None = None,
    postal_code: str | None = None,
    departement: str | None = None,
    theme: str | None = None,
    themes: list[str] | None = None,
    organisations: list[str] | None = None,
    outcome: str | None = None,
    autonomy: str | None = None,
    volunteer_id: int | None = None,
    language: str | None = None,
    language_wanted: bool | None = None,
) -> StatEvent:
    """Add one event in the caller's transaction. Without a session, the caller says which
    association and channel it belongs to. The département comes from a postal code, or is
    given as one when the caller already has it (never both). ``language`` is the code of the
    language the person used (server/i18n.py), ``language_wanted`` whether they asked for a
    volunteer speaking it: on demand events and their outcomes. The rollups
    (server/stats/rollups.py) are updated when the event is flushed, in the same transaction
    (``maintain_rollups``)."""
    if reason is not None and len(reason) > 20:
        raise ValueError(f"a statistics reason is a short code, got {reason!r}")
    event = StatEvent(
        occurred_at=utcnow(),
        kind=kind.value,
        association_id=session.association_id if session else association_id,
        session_id=session.id if session else None,
        channel=session.channel if session else channel,
        media=media,
        duration_seconds=duration_seconds,
        motif_id=motif_id,
        reason=reason,
        departement=departement_of(postal_code) if postal_code else departement,
        theme=theme,
        themes=list(themes or []),
        organisations=list(organisations or []),
        outcome=outcome,
        autonomy=autonomy,
        volunteer_id=volunteer_id,
        language=language,
        language_wanted=language_wanted,
    )
    db.add(event)
    return event
