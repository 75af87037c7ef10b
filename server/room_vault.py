"""The vault in an assistance session (issue 15): what the server learns when the person shows
a document of their vault to the volunteer.

The document itself goes peer to peer over the session's data channel, decrypted on the
person's device (``signaling/PROTOCOL.md``, ``web/static/js/room-vault.js``); the server never
sees it. The person's page only tells the server that a document was shown, and whether a copy
was given, for the statistics: one ``vault_document_shown`` event with the session's association
and département, never which document nor its category.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.handoff import subject_of_session
from server.stats.events import EventKind, record
from server.store.models import AssistanceSession, StatEvent

# A page reporting in a loop must not grow the events table without bound: past this many per
# session the reports are still acknowledged, and no longer recorded.
MAX_RECORDED_PER_SESSION = 20
COPY_REASON = "copy"


async def document_shown(
    db: AsyncSession, session: AssistanceSession, sid: str, *, gave_copy: bool
) -> bool:
    """Record that the beneficiary's socket ``sid`` showed a vault document (``gave_copy``: the
    person chose "Donner une copie"). False, and nothing recorded, when that socket does not
    hold the beneficiary's seat of this live session."""
    if not session.is_live or session.beneficiary_sid != sid:
        return False
    recorded = await db.scalar(
        select(func.count())
        .select_from(StatEvent)
        .where(
            StatEvent.session_id == session.id,
            StatEvent.kind == EventKind.VAULT_DOCUMENT_SHOWN.value,
        )
    )
    if (recorded or 0) >= MAX_RECORDED_PER_SESSION:
        return True
    # Where the person lives, as they gave it when booking, queueing or asking to be called.
    subject = await subject_of_session(db, session)
    await record(
        db,
        EventKind.VAULT_DOCUMENT_SHOWN,
        session,
        postal_code=subject.postal_code,
        reason=COPY_REASON if gave_copy else None,
    )
    return True
