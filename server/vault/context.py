"""Where a vault is made from, for the statistics only: the room's signed ``context`` token.

The room page links to ``/coffre?depuis=<token>``; the token names the assistance session,
signed with the secret key so that nobody can count their vault under another association. When
the vault is created with it, the vault is counted under the session's association and, where
the person gave a postal code for that session (booking, drop-in queue or call-back), its
département. Nothing else about the session is kept on the vault.

Without a (valid) token the vault is counted under the instance's association when there is
exactly one (a typical deployment), else under none (``association_id`` NULL: it appears in
the whole-instance totals, which count association 0, and in no association's own figures).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.settings import Settings
from server.stats.events import departement_of
from server.store.models import (
    Appointment,
    AssistanceSession,
    Association,
    CallbackRequest,
    QueueEntry,
    utcnow,
)
from server.vault.access import b64u_decode, b64u_encode

CONTEXT_LIFETIME = timedelta(days=2)  # the link is followed during the session, or soon after
_MAC_BYTES = 16
_TOKEN_BYTES = 16 + 4 + _MAC_BYTES  # session UUID, minutes since the epoch, MAC
TOKEN_CHARS = 48


@dataclass(frozen=True)
class Origin:
    """What the statistics count a vault under."""

    association_id: int | None = None
    departement: str | None = None


def _mac(settings: Settings, payload: bytes) -> bytes:
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, b"vault-context\x1f" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def vault_context_token(settings: Settings, session_id: str, now: datetime | None = None) -> str:
    """The signed token of an assistance session, for the room's "Mon coffre-fort" link
    (``/coffre?depuis=<token>``): 48 URL-safe characters, valid two days."""
    minutes = int((now or utcnow()).timestamp() // 60)
    payload = uuid.UUID(session_id).bytes + minutes.to_bytes(4, "big")
    return b64u_encode(payload + _mac(settings, payload))


def session_of_token(settings: Settings, token: object, now: datetime | None = None) -> str | None:
    """The session id a valid, unexpired token names, else None."""
    raw = b64u_decode(token, TOKEN_CHARS)
    if raw is None or len(raw) != _TOKEN_BYTES:
        return None
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(settings, payload)):
        return None
    issued = int.from_bytes(payload[16:20], "big") * 60
    age = (now or utcnow()).timestamp() - issued
    if not -300 <= age <= CONTEXT_LIFETIME.total_seconds():
        return None
    return str(uuid.UUID(bytes=payload[:16]))


async def _session_departement(db: AsyncSession, session_id: str) -> str | None:
    """The département of the postal code the person gave for this session, if any."""
    for model in (Appointment, QueueEntry, CallbackRequest):
        postal_code = await db.scalar(
            select(model.postal_code)
            .where(model.assistance_session_id == session_id, model.postal_code.is_not(None))
            .limit(1)
        )
        if postal_code:
            return departement_of(postal_code)
    return None


async def origin_of(
    db: AsyncSession, settings: Settings, token: object, now: datetime | None = None
) -> Origin:
    """What to count a new vault under: the token's session, else the only association."""
    session_id = session_of_token(settings, token, now) if token else None
    if session_id is not None:
        session = await db.get(AssistanceSession, session_id)
        if session is not None:
            return Origin(session.association_id, await _session_departement(db, session_id))
    if await db.scalar(select(func.count()).select_from(Association)) == 1:
        return Origin(await db.scalar(select(Association.id)))
    return Origin()
