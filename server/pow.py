"""Proof of work (ALTCHA) asked on the public forms while their family's global budget is spent.

No third party is contacted: the challenge is made here, signed with a key derived from the
app's secret key, solved by the visitor's browser (the ALTCHA widget, npm `altcha`, served from
our origin: its PBKDF2-SHA-256 Worker runs on WebCrypto) and checked here. The challenge is
pre-solved ("deterministic mode"): the server picks a counter in [max/2, max) and keeps the
derived key's first half as the prefix to find, so the browser tries on average three quarters
of POW_MAX_COUNTER derivations while the server checks a solution with two HMACs (the derived
key is signed too), never re-deriving it.

A solution counts once: its challenge's signature is stored in ``used_challenges`` until the
challenge expires, and a second use is refused (across server nodes, by the primary key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from altcha import create_challenge, verify_solution
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import DomainError, Kind
from server.i18n import N_, _
from server.settings import Settings
from server.store.engine import begin_write
from server.store.models import UsedChallenge

ALGORITHM = "PBKDF2/SHA-256"
ITERATIONS = 1000  # PBKDF2 iterations per try: the cost of one derivation
LIFETIME = timedelta(minutes=20)  # a slow phone on a long form still makes it
FIELD = "altcha"  # the form field carrying the solution (the ALTCHA widget's name too)
MAX_PAYLOAD = 4096  # a real payload is about 600 characters
MISSING = N_(
    "Beaucoup de demandes arrivent en ce moment. Votre navigateur doit faire une petite "
    "vérification automatique avant d'envoyer : attendez qu'elle soit finie, puis envoyez."
)
INVALID = N_(
    "La vérification automatique n'a pas marché ou a expiré. Rechargez la page et réessayez."
)
REPLAYED = N_("Cette vérification a déjà servi. Rechargez la page et réessayez.")


class ProofOfWorkError(DomainError):
    """A form sent under pressure without a valid, unused proof of work."""

    default_kind = Kind.INVALID


@dataclass(frozen=True)
class Keys:
    """The two HMAC keys: the challenge's signature and the derived key's signature."""

    challenge: bytes
    derived_key: bytes


def keys(settings: Settings) -> Keys:
    """Keys derived from the app's secret key (one purpose each, never the key itself)."""
    secret = settings.secret_key.get_secret_value().encode()
    return Keys(
        challenge=hmac.new(secret, b"altcha-challenge", hashlib.sha256).digest(),
        derived_key=hmac.new(secret, b"altcha-derived-key", hashlib.sha256).digest(),
    )


def new_challenge(settings: Settings, now: datetime) -> dict[str, Any]:
    """A signed challenge for one form (JSON-ready, in ALTCHA's v2 format)."""
    top = settings.pow_max_counter
    counter = top // 2 + secrets.randbelow(top - top // 2)
    k = keys(settings)
    challenge = create_challenge(
        algorithm=ALGORITHM,
        cost=ITERATIONS,
        counter=counter,
        expires_at=now + LIFETIME,
        hmac_secret=k.challenge,
        hmac_key_secret=k.derived_key,
    )
    data: dict[str, Any] = challenge.to_dict()
    return data


def _verified(settings: Settings, payload: str) -> str | None:
    """The challenge's signature if ``payload`` solves a challenge of ours in time, else None."""
    try:
        signature = json.loads(base64.b64decode(payload, validate=True))["challenge"]["signature"]
    except (ValueError, KeyError, TypeError):  # not even a payload
        return None
    if not isinstance(signature, str) or len(signature) != 64:
        return None
    k = keys(settings)
    try:
        result = verify_solution(payload, k.challenge, hmac_key_secret=k.derived_key)
    except (ValueError, KeyError, TypeError, AttributeError):  # fields of the wrong types
        return None
    return signature if result.verified else None


async def check(db: AsyncSession, settings: Settings, payload: object, now: datetime) -> None:
    """Accept a form's proof of work once, in the caller's transaction; ProofOfWorkError (a
    French message) when it is missing, wrong, expired or already used."""
    text = payload if isinstance(payload, str) else ""
    if not text:
        raise ProofOfWorkError("pow_missing", _(MISSING), FIELD)
    if len(text) > MAX_PAYLOAD:
        raise ProofOfWorkError("pow_invalid", _(INVALID), FIELD)
    signature = _verified(settings, text)
    if signature is None:
        raise ProofOfWorkError("pow_invalid", _(INVALID), FIELD)
    await begin_write(db)  # on SQLite, before the savepoint (see begin_write)
    await db.execute(delete(UsedChallenge).where(UsedChallenge.expires_at < now))
    try:
        async with db.begin_nested():
            db.add(UsedChallenge(id=signature, expires_at=now + LIFETIME))
    except IntegrityError:
        raise ProofOfWorkError("pow_replayed", _(REPLAYED), FIELD) from None
