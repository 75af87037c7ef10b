"""A person's vault and its documents (server/vault/DESIGN.md): create, recover, open with the
access capability, keep its usage, store, list, rename and delete documents, delete it all.

The server holds ciphertext, wrapped keys and hashes only; what it checks here is the shape of
what the browser sends (base64url, exact sizes, a UUID4 id, a known category) and the limits. The
quota is enforced by the database in the statement that counts a new document, so two uploads at
once cannot both pass the last free megabytes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import i18n, taxonomy
from server.contact import (
    ContactError,
    can_receive_sms,
    check_phone_region,
    normalize_email,
    normalize_phone,
)
from server.errors import DomainError, Kind
from server.i18n import N_, _
from server.settings import Settings
from server.stats.events import EventKind, record
from server.store.engine import begin_write
from server.store.models import (
    Vault,
    VaultDocument,
    VaultEvent,
    utcnow,
)
from server.vault import trustees
from server.vault.access import (
    access_from_header,
    b64u_decode,
    capability,
    capability_hash,
    vault_for_access,
)
from server.vault.context import Origin
from server.vault.storage import (
    BlobExists,
    BlobTooLarge,
    Storages,
    delete_blobs,
)

MB = 1024 * 1024
GCM_OVERHEAD = 12 + 16  # IV and tag around every AES-GCM ciphertext
RECOVERY_BOX_BYTES = 12 + 32 + 16  # iv ‖ AES-GCM(Kr, K)
DOCUMENT_KEY_BYTES = 40  # AES-KW of a 256-bit key
META_MAX_CHARS = 4096
TOUCH_EVERY = timedelta(hours=1)  # last_used_at is written at most this often
EVENTS_SHOWN = 50
# The document categories (code → French label) live in the taxonomy, with the statistics'
# other codes; a document whose category stays encrypted is counted as NON_PRECISE.
NON_PRECISE = taxonomy.VAULT_NON_PRECISE
CATEGORIES = taxonomy.VAULT_CATEGORIES
# What the browser makes with crypto.randomUUID(): lower-case UUID version 4.
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

UNKNOWN_VAULT = N_(
    "Ce coffre-fort n'est pas reconnu. Il a peut-être été supprimé. "
    "Ouvrez-le avec votre code de secours."
)
RECOVERY_NOT_FOUND = N_(
    "Aucun coffre-fort ne correspond à ce code. Vérifiez le code de secours et réessayez."
)
DOCUMENT_NOT_FOUND = N_("Ce document n'existe plus dans votre coffre-fort.")
BAD_DATA = N_(
    "Les données envoyées par la page ne sont pas valides. Rechargez la page et réessayez."
)


class VaultError(DomainError):
    """A refused vault action (French message for the person)."""


def _bad(code: str, field: str, message: str = BAD_DATA) -> VaultError:
    return VaultError(code, _(message), field)


# -- Limits and usage -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """A vault's limits in bytes and documents (settings VAULT_MAX_*)."""

    max_bytes: int
    max_documents: int
    max_document_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits the settings give."""
        return cls(
            max_bytes=settings.vault_max_mb * MB,
            max_documents=settings.vault_max_documents,
            max_document_bytes=settings.vault_max_document_mb * MB,
        )


def _megabytes(count: int) -> str:
    """Bytes as French megabytes: "12", "0,5" (one decimal below 10, none when it is 0)."""
    value = round(count / MB, 1 if count < 10 * MB else 0)
    return f"{value:g}".replace(".", ",")


def vault_full(limits: Limits) -> VaultError:
    """The refusal of a document that would pass the vault's space."""
    return VaultError(
        "vault_full",
        _(
            "Votre coffre-fort est plein (%(max)s Mo). "
            "Supprimez un document pour en ajouter un autre."
        )
        % {"max": _megabytes(limits.max_bytes)},
        "blob",
        kind=Kind.TOO_LARGE,
    )


def too_many_documents(limits: Limits) -> VaultError:
    """The refusal of a document past the vault's count."""
    return VaultError(
        "too_many_documents",
        _(
            "Votre coffre-fort contient déjà %(max)d documents, le maximum. "
            "Supprimez un document pour en ajouter un autre."
        )
        % {"max": limits.max_documents},
        "blob",
        kind=Kind.TOO_LARGE,
    )


def document_too_large(limits: Limits, size: int | None = None) -> VaultError:
    """The refusal of one document over the per-document limit."""
    limit = _megabytes(limits.max_document_bytes)
    if size is None:
        message = _("Ce document est trop lourd. La limite est de %(max)s Mo.") % {"max": limit}
    else:
        message = _("Ce document est trop lourd (%(size)s Mo). La limite est de %(max)s Mo.") % {
            "size": _megabytes(max(size, MB // 10)),
            "max": limit,
        }
    return VaultError("document_too_large", message, "blob", kind=Kind.TOO_LARGE)


def usage_json(vault: Vault, limits: Limits) -> dict[str, int]:
    """The ``usage`` object of DESIGN.md."""
    return {
        "bytes": vault.used_bytes,
        "documents": vault.document_count,
        "max_bytes": limits.max_bytes,
        "max_documents": limits.max_documents,
        "max_document_bytes": limits.max_document_bytes,
    }


def vault_json(vault: Vault, settings: Settings) -> dict[str, Any]:
    """The ``vault`` object of DESIGN.md."""
    return {
        "created_at": vault.created_at.isoformat(),
        "last_used_at": vault.last_used_at.isoformat(),
        "share_facts": vault.share_facts,
        "has_contact": bool(vault.contact_phone or vault.contact_email),
        "usage": usage_json(vault, Limits.of(settings)),
        "expires_after_months": settings.vault_retention_months,
    }


def document_json(document: VaultDocument) -> dict[str, Any]:
    """The ``document`` object of DESIGN.md."""
    return {
        "id": document.id,
        "size": document.size,
        "key": document.wrapped_key,
        "meta": document.meta,
        "category": document.category,
        "created_at": document.created_at.isoformat(),
        "updated_at": document.updated_at.isoformat(),
    }


# -- The vault ------------------------------------------------------------------------------------


async def create(
    db: AsyncSession,
    *,
    access: object,
    recovery_lookup: object,
    recovery_box: object,
    share_facts: object,
    origin: Origin,
) -> Vault:
    """A new vault from the browser's capabilities (hashes kept) and recovery box, counted under
    ``origin``; VaultError for a malformed value."""
    access_bytes = capability(access)
    if access_bytes is None:
        raise _bad("invalid_access", "access")
    lookup_bytes = capability(recovery_lookup)
    if lookup_bytes is None:
        raise _bad("invalid_recovery_lookup", "recovery_lookup")
    box = b64u_decode(recovery_box, 80)
    if box is None or len(box) != RECOVERY_BOX_BYTES:
        raise _bad("invalid_recovery_box", "recovery_box")
    if not isinstance(share_facts, bool):
        raise _bad("invalid_share_facts", "share_facts")
    await begin_write(db)
    now = utcnow()
    vault = Vault(
        access_hash=capability_hash(access_bytes),
        recovery_lookup_hash=capability_hash(lookup_bytes),
        recovery_box=recovery_box,
        share_facts=share_facts,
        association_id=origin.association_id,
        departement=origin.departement,
        created_at=now,
        last_used_at=now,
        notices_sent=0,
        used_bytes=0,
        document_count=0,
    )
    try:
        async with db.begin_nested():
            db.add(vault)
    except IntegrityError:
        # 256 random bits collide only when the same request is sent twice.
        raise VaultError(
            "vault_exists",
            _("Ce coffre-fort existe déjà. Rechargez la page."),
            "access",
            kind=Kind.CONFLICT,
        ) from None
    db.add(VaultEvent(vault_id=vault.id, kind="created", at=now))
    await record(
        db,
        EventKind.VAULT_CREATED,
        association_id=origin.association_id,
        channel="vault",
        departement=origin.departement,
    )
    return vault


async def recover(db: AsyncSession, recovery_lookup: object) -> str | None:
    """The recovery box of the vault a recovery lookup finds (the use is recorded and shown to
    the person, and counts as activity), or None whatever the reason."""
    lookup = capability(recovery_lookup)
    if lookup is None:
        return None
    await begin_write(db)
    vault = await db.scalar(
        select(Vault).where(Vault.recovery_lookup_hash == capability_hash(lookup))
    )
    if vault is None:
        return None
    now = utcnow()
    db.add(VaultEvent(vault_id=vault.id, kind="recovered", at=now))
    vault.last_used_at = now
    vault.notices_sent = 0
    return vault.recovery_box


async def authenticate(db: AsyncSession, header: str | None) -> Vault:
    """The vault an ``Authorization: Vault <b64u>`` header opens; VaultError (401) otherwise."""
    access = access_from_header(header)
    vault = await vault_for_access(db, access) if access is not None else None
    if vault is None:
        raise VaultError("unknown_vault", _(UNKNOWN_VAULT), kind=Kind.UNAUTHENTICATED)
    return vault


def touch_due(vault: Vault, now: datetime) -> bool:
    """Whether the vault's last use is worth writing again (at most once an hour)."""
    return vault.last_used_at <= now - TOUCH_EVERY


async def touch(db: AsyncSession, vault_id: str, now: datetime) -> None:
    """Record that the person used the vault (resets the retention clock and its notices)."""
    await begin_write(db)
    await db.execute(
        update(Vault)
        .where(Vault.id == vault_id, Vault.last_used_at <= now - TOUCH_EVERY)
        .values(last_used_at=now, notices_sent=0)
        .execution_options(synchronize_session=False)
    )


async def overview(db: AsyncSession, settings: Settings, vault: Vault) -> dict[str, Any]:
    """What the vault page shows: the vault, its documents, its trustees and its events."""
    documents = await list_documents(db, vault)
    grants = await trustees.grants_of(db, vault)
    events = await db.scalars(
        select(VaultEvent)
        .where(VaultEvent.vault_id == vault.id)
        .order_by(VaultEvent.at.desc(), VaultEvent.id.desc())
        .limit(EVENTS_SHOWN)
    )
    return {
        "vault": vault_json(vault, settings),
        "documents": [document_json(d) for d in documents],
        "trustees": [grant.as_json() for grant in grants],
        "events": [
            {"kind": e.kind, "at": e.at.isoformat()}
            | ({"trustee": e.trustee_name} if e.trustee_name else {})
            for e in events
        ],
    }


async def set_contact(
    db: AsyncSession,
    settings: Settings,
    vault: Vault,
    phone: object,
    email: object,
    language: str | None = None,
) -> Vault:
    """Keep (or, both empty, forget) the phone and e-mail the retention notices go to, and the
    language they are written in (the page's)."""
    for value, field in ((phone, "phone"), (email, "email")):
        if value is not None and not isinstance(value, str):
            raise _bad(f"invalid_{field}", field)
    phone_text = (phone or "").strip() if isinstance(phone, str) else ""
    email_text = (email or "").strip() if isinstance(email, str) else ""
    clean_phone = (
        check_phone_region(normalize_phone(phone_text, settings.timezone), settings.phone_regions)
        if phone_text
        else None
    )
    clean_email = normalize_email(email_text) if email_text else None
    if clean_email is None and clean_phone is not None and not can_receive_sms(clean_phone):
        # The notices go by SMS: a landline alone would never be told.
        raise ContactError(
            "no_reachable_contact",
            _("Ce numéro est un fixe : il ne reçoit pas de SMS. Donnez un portable ou un e-mail."),
            "phone",
        )
    await begin_write(db)
    vault.contact_phone = clean_phone
    vault.contact_email = clean_email
    has_contact = clean_phone is not None or clean_email is not None
    vault.contact_language = i18n.stored_language(language).code if has_contact else None
    return vault


async def delete_vault(db: AsyncSession, settings: Settings, vault: Vault, reason: str) -> None:
    """Delete a vault now: its rows (documents, events, grants) and its blobs, and count it
    (``vault_deleted``, ``reason`` = ``person`` or ``retention``)."""
    await begin_write(db)
    blobs = (
        await db.execute(
            select(VaultDocument.id, VaultDocument.storage).where(
                VaultDocument.vault_id == vault.id
            )
        )
    ).all()
    await db.execute(delete(VaultDocument).where(VaultDocument.vault_id == vault.id))
    # Events, grants and their recovery requests go with the vault (ON DELETE CASCADE).
    await db.execute(delete(Vault).where(Vault.id == vault.id))
    await delete_blobs(db, settings, [(row.id, row.storage) for row in blobs])
    await record(
        db,
        EventKind.VAULT_DELETED,
        association_id=vault.association_id,
        channel="vault",
        departement=vault.departement,
        reason=reason,
    )


# -- Documents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewDocument:
    """A document's fields, checked, before its blob is stored."""

    id: str
    key: str
    meta: str
    category: str | None


def document_id(value: object) -> str:
    """A document id as the browser makes it (a lower-case UUID4); VaultError otherwise."""
    if not isinstance(value, str) or not _UUID4.fullmatch(value):
        raise _bad("invalid_id", "id")
    return value


def _meta(value: object) -> str:
    data = b64u_decode(value, META_MAX_CHARS)
    if data is None or len(data) <= GCM_OVERHEAD:
        raise _bad("invalid_meta", "meta")
    assert isinstance(value, str)
    return value


def _category(vault: Vault, value: object) -> str | None:
    """A known category code, kept only when the person agreed to share facts."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in CATEGORIES:
        raise _bad("invalid_category", "category")
    return value if vault.share_facts else None


def new_document(vault: Vault, fields: Mapping[str, object]) -> NewDocument:
    """Check a new document's fields (``id``, ``key``, ``meta``, ``category``)."""
    key = fields.get("key")
    data = b64u_decode(key, 64)
    if data is None or len(data) != DOCUMENT_KEY_BYTES:
        raise _bad("invalid_key", "key")
    assert isinstance(key, str)
    return NewDocument(
        id=document_id(fields.get("id")),
        key=key,
        meta=_meta(fields.get("meta")),
        category=_category(vault, fields.get("category")),
    )


def upload_limit(vault: Vault, limits: Limits) -> int:
    """How many bytes a new document of this vault may have now; VaultError when it is full."""
    if vault.document_count >= limits.max_documents:
        raise too_many_documents(limits)
    room = limits.max_bytes - vault.used_bytes
    if room <= 0:
        raise vault_full(limits)
    return min(limits.max_document_bytes, room)


async def store_document(
    sessionmaker: async_sessionmaker[AsyncSession],
    storages: Storages,
    settings: Settings,
    vault: Vault,
    document: NewDocument,
    chunks: AsyncIterator[bytes],
) -> tuple[VaultDocument, Vault]:
    """Stream a document's ciphertext to storage, then count it and insert its row in one
    transaction (the database refuses it past the quota). Nothing is left of a refused upload."""
    limits = Limits.of(settings)
    limit = upload_limit(vault, limits)
    async with sessionmaker() as db:
        if await db.get(VaultDocument, document.id) is not None:
            raise _document_exists()
    storage = storages.current
    try:
        size = await storage.write(document.id, chunks, limit)
    except BlobTooLarge:
        if limit < limits.max_document_bytes:
            raise vault_full(limits) from None
        raise document_too_large(limits) from None
    except BlobExists:
        raise _document_exists() from None
    try:
        async with sessionmaker.begin() as db:
            await begin_write(db)
            stored = await _count_and_insert(db, settings, vault, document, size, storage.name)
            fresh = await db.get_one(Vault, vault.id, populate_existing=True)
    except BaseException:
        await storage.delete([document.id])
        raise
    return stored, fresh


def _document_exists() -> VaultError:
    return VaultError(
        "document_exists",
        _("Ce document est déjà dans votre coffre-fort. Rechargez la page."),
        "id",
        kind=Kind.CONFLICT,
    )


async def _count_and_insert(
    db: AsyncSession,
    settings: Settings,
    vault: Vault,
    document: NewDocument,
    size: int,
    storage: str,
) -> VaultDocument:
    limits = Limits.of(settings)
    now = utcnow()
    counted = await db.execute(
        update(Vault)
        .where(
            Vault.id == vault.id,
            Vault.used_bytes + size <= limits.max_bytes,
            Vault.document_count < limits.max_documents,
        )
        .values(
            used_bytes=Vault.used_bytes + size,
            document_count=Vault.document_count + 1,
            last_used_at=now,
            notices_sent=0,
        )
        .execution_options(synchronize_session=False)
    )
    if counted.rowcount != 1:  # type: ignore[attr-defined]
        current = await db.get(Vault, vault.id, populate_existing=True)
        if current is None:
            raise VaultError("unknown_vault", _(UNKNOWN_VAULT), kind=Kind.UNAUTHENTICATED)
        if current.document_count >= limits.max_documents:
            raise too_many_documents(limits)
        raise vault_full(limits)
    row = VaultDocument(
        id=document.id,
        vault_id=vault.id,
        size=size,
        wrapped_key=document.key,
        meta=document.meta,
        category=document.category,
        storage=storage,
        created_at=now,
        updated_at=now,
    )
    try:
        async with db.begin_nested():
            db.add(row)
    except IntegrityError:
        raise _document_exists() from None
    await record(
        db,
        EventKind.VAULT_DOCUMENT_ADDED,
        association_id=vault.association_id,
        channel="vault",
        departement=vault.departement,
        theme=document.category or NON_PRECISE,
    )
    return row


async def list_documents(db: AsyncSession, vault: Vault) -> list[VaultDocument]:
    """The vault's documents, oldest first."""
    found = await db.scalars(
        select(VaultDocument)
        .where(VaultDocument.vault_id == vault.id)
        .order_by(VaultDocument.created_at, VaultDocument.id)
    )
    return list(found)


async def get_document(db: AsyncSession, vault: Vault, raw_id: object) -> VaultDocument:
    """One of the vault's documents; VaultError (404) for any other id."""
    found = None
    if isinstance(raw_id, str) and _UUID4.fullmatch(raw_id):
        found = await db.scalar(
            select(VaultDocument).where(
                VaultDocument.id == raw_id, VaultDocument.vault_id == vault.id
            )
        )
    if found is None:
        raise VaultError("unknown_document", _(DOCUMENT_NOT_FOUND), kind=Kind.NOT_FOUND)
    return found


async def update_document(
    db: AsyncSession, vault: Vault, raw_id: object, meta: object, category: object
) -> VaultDocument:
    """Replace a document's encrypted metadata (a new name, date…) and its category."""
    new_meta = _meta(meta)
    new_category = _category(vault, category)
    await begin_write(db)
    document = await get_document(db, vault, raw_id)
    document.meta = new_meta
    document.category = new_category
    document.updated_at = utcnow()
    return document


async def delete_document(
    db: AsyncSession, settings: Settings, vault: Vault, raw_id: object
) -> None:
    """Delete one document: its row, its blob, and its share of the vault's usage."""
    await begin_write(db)
    document = await get_document(db, vault, raw_id)
    removed = await db.execute(
        delete(VaultDocument)
        .where(VaultDocument.id == document.id, VaultDocument.vault_id == vault.id)
        .execution_options(synchronize_session=False)
    )
    if removed.rowcount != 1:  # type: ignore[attr-defined]  # deleted meanwhile
        raise VaultError("unknown_document", _(DOCUMENT_NOT_FOUND), kind=Kind.NOT_FOUND)
    await db.execute(
        update(Vault)
        .where(Vault.id == vault.id)
        .values(
            used_bytes=Vault.used_bytes - document.size,
            document_count=Vault.document_count - 1,
        )
        .execution_options(synchronize_session=False)
    )
    await delete_blobs(db, settings, [(document.id, document.storage)])
