"""API tokens for partner software: a referrer creates named tokens with scopes; only a hash
of each token is stored and the raw value is shown once."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import DomainError, Kind
from server.i18n import N_, _
from server.store.models import ApiToken, Role, User, utcnow
from server.tokens import sha256_hex

TOKEN_PREFIX = "vp_"  # noqa: S105 - a public prefix that makes leaked tokens recognisable
LAST_USED_PRECISION = timedelta(minutes=1)
SCOPES: dict[str, str] = {
    "motifs:read": N_("Lire les motifs"),
    "slots:read": N_("Lire les créneaux libres"),
    "bookings:read": N_("Lire ses propres réservations"),
    "bookings:write": N_("Réserver et annuler"),
}


class ApiTokenError(DomainError):
    """A refused token operation (French text for the page)."""


async def create_token(
    db: AsyncSession, user: User, name: str, scopes: Iterable[str]
) -> tuple[ApiToken, str]:
    """A new token for a referrer; returns the row and the raw token (shown once)."""
    if user.role != Role.REFERRER:
        raise ApiTokenError(
            "referrers_only",
            _("Seuls les référents peuvent créer des jetons d'accès."),
            kind=Kind.FORBIDDEN,
        )
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise ApiTokenError("scopes", _("Choisissez au moins une autorisation valable."), "scopes")
    name = name.strip()
    if not name or len(name) > 100:
        raise ApiTokenError("name", _("Donnez un nom au jeton (100 caractères au plus)."), "name")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name, token_hash=sha256_hex(raw), scopes=wanted)
    db.add(token)
    await db.flush()
    return token, raw


async def authenticate(db: AsyncSession, raw: str) -> tuple[ApiToken, User] | None:
    """The live token and its active referrer account, or None. Reads only: the caller records
    the use with ``stamp`` when ``stamp_due`` (the API folds it into a write request's own
    transaction instead of paying a write transaction of its own)."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 100:
        return None
    row = (
        await db.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(
                ApiToken.token_hash == sha256_hex(raw),
                ApiToken.revoked_at.is_(None),
                User.is_active.is_(True),
                User.role == Role.REFERRER,
            )
        )
    ).one_or_none()
    if row is None:
        return None
    token, user = row
    return token, user


def stamp_due(token: ApiToken, now: datetime) -> bool:
    """Whether the token's use at ``now`` should be recorded: at most once a minute, since a
    write on every request would serialise all API reads on SQLite's single writer."""
    return token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION


async def stamp(db: AsyncSession, token_id: int, now: datetime) -> None:
    """Record the token's use at ``now`` in ``db``'s transaction (one UPDATE, no read); a later
    stamp already written by a concurrent request is kept."""
    await db.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


async def list_tokens(db: AsyncSession, user: User) -> list[ApiToken]:
    """A user's tokens, newest first."""
    rows = await db.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at.desc())
    )
    return list(rows)


async def revoke(db: AsyncSession, user: User, token_id: int) -> bool:
    """Revoke one of the user's own tokens; False if there is no such live token."""
    result = await db.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(ApiToken.id)
    )
    return result.scalar_one_or_none() is not None
