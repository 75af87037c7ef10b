"""The personne de confiance (trustee): a staff account that can give a person back access to
their vault on a new device (server/vault/DESIGN.md, "Trustee key pair").

The trustee's browser makes an RSA-OAEP key pair and registers the public key here; the
private key never leaves that browser. The person names the trustee by typing a short code the
trustee gives them; their browser then wraps the vault key ``K`` for the trustee's public key
(a *grant*). A new device asks for help with its own RSA-OAEP public key and shows a pairing
code; the trustee types that code, their browser decrypts ``K`` from the grant and re-encrypts
it for the device; the device collects it once. The server only ever holds public keys,
RSA ciphertexts and hashes of the codes; every use is recorded on the vault and shown to the
person (``VaultEvent``).

Codes are short (8 Crockford characters, 6 digits), so their stored form is a hash keyed by
the secret key (a plain hash of so few values would be reversible), and lookups are rate
limited by the web layer.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import DomainError, Kind
from server.i18n import _
from server.settings import Settings
from server.store.engine import begin_write
from server.store.models import (
    Association,
    TrusteeCode,
    TrusteeKey,
    User,
    Vault,
    VaultEvent,
    VaultGrant,
    VaultRecoveryRequest,
)
from server.tokens import code_hash, constant_time_equal
from server.vault.access import b64u_decode, b64u_encode, capability, capability_hash

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TRUSTEE_CODE_LENGTH = 8
PAIRING_DIGITS = 6
# RSA-OAEP keys we accept: 2048 bits (what the pages make) up to 4096. Ciphertexts for a key
# are exactly its modulus long: 256 bytes for the 2048-bit keys of DESIGN.md.
MIN_KEY_BITS = 2048
MAX_KEY_BITS = 4096
MAX_SPKI_CHARS = 1100  # a 4096-bit SPKI is 550 bytes, 734 characters of b64u
MAX_LABEL_BYTES = 60  # the plaintext label (DESIGN.md); its ciphertext is a whole RSA block
PAIRING_ATTEMPTS = 20  # fresh pairing codes tried before giving up (collisions with live ones)

# VaultEvent kinds written here (the person's history, DESIGN.md "events").
TRUSTEE_ADDED = "trustee_added"
TRUSTEE_REVOKED = "trustee_revoked"
TRUSTEE_USED = "trustee_used"


class TrusteeError(DomainError):
    """A refused trustee or recovery-request action (French message for the person or staff)."""


@dataclass(frozen=True)
class PublicKey:
    """A validated RSA-OAEP public key: its SPKI (as sent), fingerprint and size in bytes."""

    spki: bytes
    fingerprint: str
    block_bytes: int

    @property
    def b64u(self) -> str:
        """The SPKI as the browser sent it."""
        return b64u_encode(self.spki)


@dataclass(frozen=True)
class TrusteeInfo:
    """Whom a trustee code names: shown to the person before they choose."""

    key_id: int
    name: str
    association: str
    public_key: str
    fingerprint: str

    def as_json(self) -> dict[str, str]:
        """The answer of ``GET /coffre/api/trustee-key``."""
        return {
            "name": self.name,
            "association": self.association,
            "public_key": self.public_key,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class NewRequest:
    """A recovery request just made: what the device keeps (the poll token) and shows."""

    request: VaultRecoveryRequest
    poll_token: str  # b64u, 32 bytes: the device's proof when it polls
    pairing_code: str  # 6 digits, shown grouped "482 913"

    def as_json(self) -> dict[str, str]:
        """The answer of ``POST /coffre/api/recovery-requests``."""
        return {
            "id": self.request.id,
            "poll_token": self.poll_token,
            "pairing_code": grouped_pairing(self.pairing_code),
            "expires_at": self.request.expires_at.isoformat(),
        }


@dataclass(frozen=True)
class Poll:
    """What the device learns when it polls: pending, or the wrapped key (given once)."""

    ready: bool
    wrapped_key: str | None = None

    def as_json(self) -> dict[str, str]:
        """The answer of ``GET /coffre/api/recovery-requests/{id}``."""
        if not self.ready or self.wrapped_key is None:
            return {"status": "pending"}
        return {"status": "ready", "wrapped_key": self.wrapped_key}


# -- Keys and ciphertexts -----------------------------------------------------------------------


def _invalid(code: str, message: str, field: str) -> TrusteeError:
    return TrusteeError(code, message, field, kind=Kind.INVALID)


def parse_public_key(value: object, field: str = "public_key") -> PublicKey:
    """An RSA public key (SPKI, b64u) of 2048 to 4096 bits, as WebCrypto exports it; a
    TrusteeError (400) for anything else: garbage, another algorithm, a small key."""
    spki = b64u_decode(value, MAX_SPKI_CHARS)
    refused = _invalid(
        "invalid_public_key",
        _("Cette clé n'est pas valable. Rechargez la page et recommencez."),
        field,
    )
    if not spki:
        raise refused
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise refused from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise refused
    if not MIN_KEY_BITS <= key.key_size <= MAX_KEY_BITS or key.key_size % 8:
        raise refused
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != spki:
        raise refused  # the fingerprint both screens show must be of one single encoding
    return PublicKey(spki, hashlib.sha256(spki).hexdigest(), key.key_size // 8)


def fingerprint_of(spki_b64u: str) -> str:
    """sha256(spki) hex of a stored key."""
    return hashlib.sha256(b64u_decode(spki_b64u, MAX_SPKI_CHARS) or b"").hexdigest()


def block_bytes_of(spki_b64u: str) -> int:
    """The RSA block size of a stored (already validated) key."""
    return parse_public_key(spki_b64u).block_bytes


def check_digits(spki: bytes) -> str:
    """The device key's check digits both screens show: the first 3 bytes of sha256(spki),
    each ``% 100``, as "07 42 93" (DESIGN.md)."""
    digest = hashlib.sha256(spki).digest()
    return " ".join(f"{byte % 100:02d}" for byte in digest[:3])


def rsa_ciphertext(value: object, block_bytes: int, field: str) -> str:
    """An RSA-OAEP ciphertext for a key of ``block_bytes`` (b64u); refused otherwise."""
    data = b64u_decode(value, (block_bytes * 4 + 2) // 3)
    if data is None or len(data) != block_bytes:
        raise _invalid(
            "invalid_ciphertext",
            _("Les données chiffrées ne sont pas valables. Rechargez la page et recommencez."),
            field,
        )
    return b64u_encode(data)


# -- Codes --------------------------------------------------------------------------------------


def normalise_trustee_code(raw: object) -> str | None:
    """A trustee code as typed (spaces, dashes, lower case, O for 0, I or L for 1), or None."""
    if not isinstance(raw, str) or len(raw) > 40:
        return None
    text = raw.upper().replace(" ", "").replace("-", "")
    text = text.replace("O", "0").replace("I", "1").replace("L", "1")
    if len(text) != TRUSTEE_CODE_LENGTH or any(c not in CROCKFORD for c in text):
        return None
    return text


def grouped_trustee_code(code: str) -> str:
    """ "7K2M-9QXA": two groups of four, as the page shows it."""
    return f"{code[:4]}-{code[4:]}"


def normalise_pairing_code(raw: object) -> str | None:
    """A pairing code as typed ("482 913", "482913"), or None."""
    if not isinstance(raw, str) or len(raw) > 20:
        return None
    text = "".join(raw.split()).replace("-", "")
    if len(text) != PAIRING_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return text


def grouped_pairing(code: str) -> str:
    """ "482 913", as both screens show it."""
    return f"{code[:3]} {code[3:]}"


def _trustee_code_hash(settings: Settings, code: str) -> str:
    return code_hash(settings.secret_key.get_secret_value(), "vault-trustee:" + code)


def _pairing_hash(settings: Settings, code: str) -> str:
    return code_hash(settings.secret_key.get_secret_value(), "vault-pairing:" + code)


# -- The trustee's key and codes ----------------------------------------------------------------


async def current_key(db: AsyncSession, user: User) -> TrusteeKey | None:
    """The account's trustee key in use (not replaced), if any."""
    return await db.scalar(
        select(TrusteeKey)
        .where(TrusteeKey.user_id == user.id, TrusteeKey.replaced_at.is_(None))
        .order_by(TrusteeKey.id.desc())
        .limit(1)
    )


async def register_key(
    db: AsyncSession, user: User, public_key: object, now: datetime
) -> TrusteeKey:
    """Register this account's public key; an older key is marked replaced (its grants can no
    longer be answered: the browser that held its private key is not this one). Registering
    the same key again changes nothing."""
    await begin_write(db)
    key = parse_public_key(public_key)
    current = await current_key(db, user)
    if current is not None and current.fingerprint == key.fingerprint:
        return current
    await db.execute(
        update(TrusteeKey)
        .where(TrusteeKey.user_id == user.id, TrusteeKey.replaced_at.is_(None))
        .values(replaced_at=now)
    )
    # Codes of the old key would name a key nobody can use any more.
    if current is not None:
        await db.execute(delete(TrusteeCode).where(TrusteeCode.trustee_key_id == current.id))
    row = TrusteeKey(
        user_id=user.id, public_key=key.b64u, fingerprint=key.fingerprint, created_at=now
    )
    db.add(row)
    await db.flush()
    return row


async def _required_key(db: AsyncSession, user: User) -> TrusteeKey:
    key = await current_key(db, user)
    if key is None:
        raise TrusteeError(
            "no_trustee_key",
            _("Créez d'abord votre clé sur cet appareil."),
            kind=Kind.CONFLICT,
        )
    return key


async def make_code(
    db: AsyncSession, settings: Settings, user: User, now: datetime
) -> tuple[str, datetime]:
    """A fresh trustee code for this account's key (valid VAULT_TRUSTEE_CODE_MINUTES), to give
    to a person; only its keyed hash is stored."""
    await begin_write(db)
    key = await _required_key(db, user)
    code = "".join(secrets.choice(CROCKFORD) for _i in range(TRUSTEE_CODE_LENGTH))
    expires_at = now + timedelta(minutes=settings.vault_trustee_code_minutes)
    db.add(
        TrusteeCode(
            code_hash=_trustee_code_hash(settings, code),
            trustee_key_id=key.id,
            expires_at=expires_at,
        )
    )
    await db.flush()
    return code, expires_at


def _unknown_code() -> TrusteeError:
    return TrusteeError(
        "unknown_trustee_code",
        _(
            "Ce code ne marche pas. Vérifiez-le, ou demandez un nouveau code "
            "à votre personne de confiance."
        ),
        "trustee_code",
        kind=Kind.NOT_FOUND,
    )


async def trustee_for_code(
    db: AsyncSession, settings: Settings, raw_code: object, now: datetime
) -> TrusteeInfo:
    """Whom a trustee code names (its key still in use, the code not expired), or a
    TrusteeError (404) whatever the reason, so that a wrong code tells nothing."""
    code = normalise_trustee_code(raw_code)
    if code is None:
        raise _unknown_code()
    row = (
        await db.execute(
            select(TrusteeKey, User.name, Association.name)
            .join(TrusteeCode, TrusteeCode.trustee_key_id == TrusteeKey.id)
            .join(User, User.id == TrusteeKey.user_id)
            .join(Association, Association.id == User.association_id)
            .where(
                TrusteeCode.code_hash == _trustee_code_hash(settings, code),
                TrusteeCode.expires_at > now,
                TrusteeKey.replaced_at.is_(None),
                User.is_active.is_(True),
            )
        )
    ).first()
    if row is None:
        raise _unknown_code()
    key, name, association = row
    return TrusteeInfo(key.id, name, association, key.public_key, key.fingerprint)


# -- Grants (the person's side) -----------------------------------------------------------------


def _shown_name(name: str, association: str) -> str:
    return f"{name} ({association})"[:200]


def _event(vault_id: str, kind: str, now: datetime, trustee: str | None) -> VaultEvent:
    return VaultEvent(vault_id=vault_id, kind=kind, at=now, trustee_name=trustee)


async def add_grant(
    db: AsyncSession,
    settings: Settings,
    vault: Vault,
    raw_code: object,
    wrapped_key: object,
    label: object,
    now: datetime,
) -> VaultGrant:
    """Name the trustee of a code: store the vault key and the label the person chose, both
    encrypted for the trustee's key; the code is used up; the person's history says so."""
    await begin_write(db)
    trustee = await trustee_for_code(db, settings, raw_code, now)
    block = block_bytes_of(trustee.public_key)
    wrapped = rsa_ciphertext(wrapped_key, block, "wrapped_key")
    sealed_label = rsa_ciphertext(label, block, "label")
    existing = await db.scalar(
        select(VaultGrant.id).where(
            VaultGrant.vault_id == vault.id,
            VaultGrant.trustee_key_id == trustee.key_id,
            VaultGrant.revoked_at.is_(None),
        )
    )
    if existing is not None:
        raise TrusteeError(
            "trustee_already_named",
            _("Cette personne de confiance est déjà dans votre liste."),
            "trustee_code",
            kind=Kind.CONFLICT,
        )
    code = normalise_trustee_code(raw_code)
    assert code is not None  # trustee_for_code accepted it
    await db.execute(
        delete(TrusteeCode).where(TrusteeCode.code_hash == _trustee_code_hash(settings, code))
    )
    grant = VaultGrant(
        vault_id=vault.id,
        trustee_key_id=trustee.key_id,
        wrapped_key=wrapped,
        label=sealed_label,
        created_at=now,
    )
    db.add(grant)
    db.add(_event(vault.id, TRUSTEE_ADDED, now, _shown_name(trustee.name, trustee.association)))
    await db.flush()
    return grant


@dataclass(frozen=True)
class GrantView:
    """A grant as the person sees it (DESIGN.md ``trustee`` object)."""

    grant: VaultGrant
    name: str
    association: str
    fingerprint: str

    def as_json(self) -> dict[str, str | None]:
        """``{id, name, association, fingerprint, created_at, revoked_at}``."""
        return {
            "id": self.grant.id,
            "name": self.name,
            "association": self.association,
            "fingerprint": self.fingerprint,
            "created_at": self.grant.created_at.isoformat(),
            "revoked_at": self.grant.revoked_at.isoformat() if self.grant.revoked_at else None,
        }


async def grants_of(db: AsyncSession, vault: Vault) -> list[GrantView]:
    """The vault's trustees in the order they were named, revoked ones included (``GET
    /coffre/api/vault``)."""
    rows = await db.execute(
        select(VaultGrant, User.name, Association.name, TrusteeKey.fingerprint)
        .join(TrusteeKey, TrusteeKey.id == VaultGrant.trustee_key_id)
        .join(User, User.id == TrusteeKey.user_id)
        .join(Association, Association.id == User.association_id)
        .where(VaultGrant.vault_id == vault.id)
        .order_by(VaultGrant.created_at, VaultGrant.id)
    )
    return [GrantView(grant, name, assoc, fp) for grant, name, assoc, fp in rows]


async def revoke_grant(db: AsyncSession, vault: Vault, grant_id: str, now: datetime) -> None:
    """Revoke one of the vault's grants: the wrapped key and label are erased, requests it was
    answering are dropped, the event stays in the person's history. Revoking twice is fine."""
    await begin_write(db)
    grant = await db.scalar(
        select(VaultGrant).where(VaultGrant.id == grant_id, VaultGrant.vault_id == vault.id)
    )
    if grant is None:
        raise TrusteeError(
            "unknown_grant",
            _("Cette personne de confiance n'est pas dans votre liste."),
            kind=Kind.NOT_FOUND,
        )
    if grant.revoked_at is not None:
        return
    names = (
        await db.execute(
            select(User.name, Association.name)
            .join(TrusteeKey, TrusteeKey.user_id == User.id)
            .join(Association, Association.id == User.association_id)
            .where(TrusteeKey.id == grant.trustee_key_id)
        )
    ).first()
    grant.wrapped_key = None
    grant.label = None
    grant.revoked_at = now
    await db.execute(delete(VaultRecoveryRequest).where(VaultRecoveryRequest.grant_id == grant.id))
    db.add(_event(vault.id, TRUSTEE_REVOKED, now, _shown_name(*names) if names else None))
    await db.flush()


# -- Recovery requests (a new device) -----------------------------------------------------------


async def create_request(
    db: AsyncSession, settings: Settings, public_key: object, now: datetime
) -> NewRequest:
    """A new device asks for help: its public key, a pairing code unique among live requests
    (valid VAULT_RECOVERY_REQUEST_MINUTES), a poll token. Only hashes of both are kept."""
    await begin_write(db)
    key = parse_public_key(public_key)
    poll_token = secrets.token_bytes(32)
    for _attempt in range(PAIRING_ATTEMPTS):
        code = f"{secrets.randbelow(10**PAIRING_DIGITS):0{PAIRING_DIGITS}d}"
        digest = _pairing_hash(settings, code)
        # An expired request still holding this code (not purged yet) gives it up.
        await db.execute(
            delete(VaultRecoveryRequest).where(
                VaultRecoveryRequest.pairing_code_hash == digest,
                VaultRecoveryRequest.expires_at <= now,
            )
        )
        request = VaultRecoveryRequest(
            public_key=key.b64u,
            poll_token_hash=capability_hash(poll_token),
            pairing_code_hash=digest,
            created_at=now,
            expires_at=now + timedelta(minutes=settings.vault_recovery_request_minutes),
        )
        try:
            async with db.begin_nested():
                db.add(request)
                await db.flush()
        except IntegrityError:
            continue  # a live request holds this code: draw another
        return NewRequest(request, b64u_encode(poll_token), code)
    raise TrusteeError(
        "no_pairing_code",
        _("Le service est très demandé. Réessayez dans quelques minutes."),
        kind=Kind.UNAVAILABLE,
    )


def _unknown_request() -> TrusteeError:
    return TrusteeError(
        "unknown_request",
        _(
            "Ce code ne correspond à aucune demande en cours. Vérifiez-le avec la personne, "
            "ou demandez-lui de recommencer sur son appareil."
        ),
        "pairing_code",
        kind=Kind.NOT_FOUND,
    )


@dataclass(frozen=True)
class PendingGrant:
    """One of the trustee's grants, offered when answering a request (label still sealed)."""

    grant: VaultGrant

    def as_json(self) -> dict[str, str | None]:
        """``{id, label, created_at}``: the browser decrypts the label. The wrapped key is not
        here: the trustee gets it by opening one grant (``open_grant``), which the person sees."""
        return {
            "id": self.grant.id,
            "label": self.grant.label,
            "created_at": self.grant.created_at.isoformat(),
        }


async def grants_for_key(db: AsyncSession, key: TrusteeKey) -> list[VaultGrant]:
    """The grants a trustee key can still answer with (not revoked), newest first."""
    rows = await db.scalars(
        select(VaultGrant)
        .where(
            VaultGrant.trustee_key_id == key.id,
            VaultGrant.revoked_at.is_(None),
            VaultGrant.wrapped_key.is_not(None),
        )
        .order_by(VaultGrant.created_at.desc(), VaultGrant.id)
    )
    return list(rows)


async def request_for_pairing(
    db: AsyncSession, settings: Settings, user: User, raw_code: object, now: datetime
) -> tuple[VaultRecoveryRequest, list[PendingGrant]]:
    """The live, unanswered request of a pairing code, and this account's usable grants (of
    its current key, not revoked) for the trustee to pick the person from."""
    key = await _required_key(db, user)
    code = normalise_pairing_code(raw_code)
    if code is None:
        raise _unknown_request()
    request = await db.scalar(
        select(VaultRecoveryRequest).where(
            VaultRecoveryRequest.pairing_code_hash == _pairing_hash(settings, code),
            VaultRecoveryRequest.expires_at > now,
            VaultRecoveryRequest.answered_at.is_(None),
        )
    )
    if request is None:
        raise _unknown_request()
    return request, [PendingGrant(g) for g in await grants_for_key(db, key)]


def request_json(request: VaultRecoveryRequest) -> dict[str, str]:
    """``{id, public_key, check}`` of a request, for the trustee's page."""
    spki = b64u_decode(request.public_key, MAX_SPKI_CHARS) or b""
    return {"id": request.id, "public_key": request.public_key, "check": check_digits(spki)}


async def _live_request(db: AsyncSession, request_id: str, now: datetime) -> VaultRecoveryRequest:
    request = await db.scalar(
        select(VaultRecoveryRequest)
        .where(
            VaultRecoveryRequest.id == request_id,
            VaultRecoveryRequest.expires_at > now,
            VaultRecoveryRequest.answered_at.is_(None),
        )
        .with_for_update()
    )
    if request is None:
        raise _unknown_request()
    return request


async def _usable_grant(db: AsyncSession, key: TrusteeKey, grant_id: object) -> VaultGrant:
    grant = None
    if isinstance(grant_id, str) and len(grant_id) <= 36:
        grant = await db.scalar(
            select(VaultGrant).where(
                VaultGrant.id == grant_id,
                VaultGrant.trustee_key_id == key.id,
                VaultGrant.revoked_at.is_(None),
                VaultGrant.wrapped_key.is_not(None),
            )
        )
    if grant is None:
        raise TrusteeError(
            "unknown_grant",
            _(
                "Vous ne pouvez pas rouvrir ce coffre-fort : la personne a retiré son accord, "
                "ou il a été donné à une autre clé que celle de cet appareil."
            ),
            "grant_id",
            kind=Kind.FORBIDDEN,
        )
    return grant


async def open_grant(
    db: AsyncSession, user: User, request_id: str, grant_id: object, now: datetime
) -> str:
    """The trustee picked the person of a live request: the vault key wrapped for them, to
    decrypt in their browser. This is the use the person sees (``trustee_used``): a trustee
    never reads a wrapped key without it being recorded, and one request opens one grant."""
    await begin_write(db)
    key = await _required_key(db, user)
    request = await _live_request(db, request_id, now)
    grant = await _usable_grant(db, key, grant_id)
    if request.grant_id is not None and request.grant_id != grant.id:
        raise TrusteeError(
            "request_used",
            _(
                "Cette demande a déjà servi pour une autre personne. Demandez-lui d'en faire "
                "une nouvelle."
            ),
            "grant_id",
            kind=Kind.CONFLICT,
        )
    if request.grant_id is None:
        request.grant_id = grant.id
        grant.last_used_at = now
        names = (
            await db.execute(
                select(User.name, Association.name)
                .join(Association, Association.id == User.association_id)
                .where(User.id == user.id)
            )
        ).one()
        db.add(_event(grant.vault_id, TRUSTEE_USED, now, _shown_name(*names)))
        await db.flush()
    assert grant.wrapped_key is not None  # _usable_grant checked it
    return grant.wrapped_key


async def answer_request(
    db: AsyncSession,
    user: User,
    request_id: str,
    grant_id: object,
    wrapped_key: object,
    now: datetime,
) -> VaultRecoveryRequest:
    """The trustee answers a request with the grant they opened for it (``open_grant``, where
    the use was recorded): the vault key, decrypted in their browser and encrypted again for
    the device's key."""
    await begin_write(db)
    key = await _required_key(db, user)
    request = await _live_request(db, request_id, now)
    grant = await _usable_grant(db, key, grant_id)  # still usable: not revoked meanwhile
    if request.grant_id != grant.id:
        raise TrusteeError(
            "grant_not_opened",
            _("Choisissez d'abord la personne, puis validez."),
            "grant_id",
            kind=Kind.CONFLICT,
        )
    answer = rsa_ciphertext(wrapped_key, block_bytes_of(request.public_key), "wrapped_key")
    # One answer only: a concurrent answer to the same request finds answered_at set.
    done = await db.execute(
        update(VaultRecoveryRequest)
        .where(VaultRecoveryRequest.id == request.id, VaultRecoveryRequest.answered_at.is_(None))
        .values(wrapped_key=answer, answered_at=now)
        .execution_options(synchronize_session=False)
    )
    if not done.rowcount:  # type: ignore[attr-defined]
        raise _unknown_request()
    await db.refresh(request)
    return request


def poll_token_from_header(header: str | None) -> bytes | None:
    """The poll token of an ``Authorization: Recovery <b64u>`` header, or None."""
    if not header:
        return None
    scheme, _sep, value = header.partition(" ")
    if scheme != "Recovery":
        return None
    return capability(value.strip())


async def poll_request(
    db: AsyncSession, request_id: str, poll_token: bytes | None, now: datetime
) -> Poll:
    """The device asks whether its request was answered: pending, or the wrapped key, once
    (the request is deleted as it is given). 404 for an unknown id or a wrong token, 410 once
    expired."""
    request = await db.scalar(
        select(VaultRecoveryRequest).where(VaultRecoveryRequest.id == request_id)
    )
    if (
        request is None
        or poll_token is None
        or not constant_time_equal(request.poll_token_hash, capability_hash(poll_token))
    ):
        raise TrusteeError(
            "unknown_request",
            _("Cette demande n'existe pas ou plus. Recommencez depuis le début."),
            kind=Kind.NOT_FOUND,
        )
    if request.answered_at is None and request.expires_at <= now:
        await begin_write(db)
        await db.delete(request)
        raise TrusteeError(
            "request_expired",
            _(
                "Le temps est écoulé : votre personne de confiance n'a pas répondu à temps. "
                "Recommencez et donnez-lui le nouveau code."
            ),
            kind=Kind.GONE,
        )
    if request.answered_at is None or request.wrapped_key is None:
        return Poll(ready=False)
    await begin_write(db)
    deleted = await db.execute(
        delete(VaultRecoveryRequest)
        .where(VaultRecoveryRequest.id == request.id)
        .execution_options(synchronize_session=False)
    )
    if not deleted.rowcount:  # type: ignore[attr-defined]
        raise TrusteeError(
            "unknown_request",
            _("Cette demande n'existe pas ou plus. Recommencez depuis le début."),
            kind=Kind.NOT_FOUND,
        )
    return Poll(ready=True, wrapped_key=request.wrapped_key)


# -- Housekeeping (the retention purge) ---------------------------------------------------------


async def count_expired(db: AsyncSession, now: datetime) -> tuple[int, int]:
    """(trustee codes, recovery requests) past their expiry."""
    codes = await db.scalar(
        select(func.count()).select_from(TrusteeCode).where(TrusteeCode.expires_at <= now)
    )
    requests = await db.scalar(
        select(func.count())
        .select_from(VaultRecoveryRequest)
        .where(VaultRecoveryRequest.expires_at <= now)
    )
    return int(codes or 0), int(requests or 0)


async def purge_expired(db: AsyncSession, now: datetime) -> tuple[int, int]:
    """Delete expired trustee codes and recovery requests (answered or not); how many."""
    await begin_write(db)
    codes = await db.execute(
        delete(TrusteeCode)
        .where(TrusteeCode.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    requests = await db.execute(
        delete(VaultRecoveryRequest)
        .where(VaultRecoveryRequest.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    return int(codes.rowcount or 0), int(requests.rowcount or 0)  # type: ignore[attr-defined]
