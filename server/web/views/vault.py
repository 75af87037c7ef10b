"""The person's vault (coffre-fort): the page ``/coffre`` and its JSON API under ``/coffre/api/``
(server/vault/DESIGN.md, "HTTP API", beneficiary side; the trustee routes live in
``vault_trustees.py``).

No cookie is involved: a vault is opened by ``Authorization: Vault <b64u(A)>``, so there is no
CSRF token either. Every answer is JSON (errors ``{"error": {"code", "message", "field"}}``, the
message in French) and ``Cache-Control: no-store``. The open internet may call any of it: creation
asks a proof of work (ALTCHA), recovery answers one 404 whatever the cause, and each costly or
guessable action is rate-limited per client (IPv4 address or IPv6 prefix) and per vault.

An upload streams the multipart ``blob`` part to storage as it arrives (never the whole body in
memory; ``client_max_size`` only bounds ``request.read()``, which is not used here), refused with
413 as soon as it passes a limit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web
from limits import parse

from server import links, pow
from server.errors import Kind
from server.i18n import N_, _
from server.ratelimit import RATELIMIT_KEY, Rule
from server.runtime import SESSIONMAKER_KEY, SETTINGS_KEY
from server.store.models import Vault, utcnow
from server.vault import vaults
from server.vault.context import origin_of, session_of_token
from server.vault.storage import BlobMissing, Storages
from server.vault.vaults import VaultError
from server.web.language import request_language
from server.web.request import client_key, render, url_for

routes = web.RouteTableDef()

# Rate limits (per client key: an IPv4 address or an IPv6 /64; per vault: its internal id).
CREATE_PER_IP = (
    Rule("vault-create-ip-hour", parse("10/hour")),
    Rule("vault-create-ip-day", parse("30/day")),
)
# A recovery code has 120 bits and its lookup 256: guessing is hopeless, and each try is a
# database read; a person types their code a few times at most.
RECOVER_PER_IP = (
    Rule("vault-recover-ip-hour", parse("10/hour")),
    Rule("vault-recover-ip-day", parse("30/day")),
)
AUTH_FAILURES_PER_IP = Rule("vault-auth-fail-ip", parse("30/10 minutes"))
UPLOADS_PER_VAULT = Rule("vault-upload-vault", parse("60/hour"))
UPLOADS_PER_IP = Rule("vault-upload-ip", parse("200/hour"))
# Bytes stored per client a day, in MB (an association's computer, behind one address, may add
# documents for many people); all clients together: the BUDGET_VAULT_UPLOAD_MB family.
UPLOAD_MB_PER_IP = Rule("vault-upload-mb-ip", parse("2000/day"))
MB = 1_000_000
# Reading every document (the zip export, a new device) is 100 reads at most.
READS_PER_VAULT = Rule("vault-read-vault", parse("600/hour"))
READS_PER_IP = Rule("vault-read-ip", parse("1200/hour"))
CHANGES_PER_VAULT = Rule("vault-change-vault", parse("300/hour"))

TOO_MANY = N_("Trop d'essais. Attendez quelques minutes puis réessayez.")
BUSY = N_(
    "Le coffre-fort reçoit beaucoup de documents en ce moment. Réessayez dans quelques heures. "
    "Vos documents déjà gardés restent accessibles."
)
BODY_TOO_LARGE = N_("Ce que vous envoyez est trop gros.")
INTERRUPTED = N_("L'envoi du document a été interrompu. Vérifiez votre connexion et réessayez.")
FIELD_PARTS = ("id", "key", "meta", "category")
FIELD_MAX_BYTES = vaults.META_MAX_CHARS + 64
# Multipart framing and the fields around the blob, over the blob's own limit.
MULTIPART_OVERHEAD = 16 * 1024
READ_CHUNK = 64 * 1024


def _no_store(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Cache-Control"] = "no-store"
    return response


def _json(data: dict[str, Any], status: int = 200) -> web.StreamResponse:
    return _no_store(web.json_response(data, status=status))


def _no_content() -> web.StreamResponse:
    return _no_store(web.Response(status=204))


def too_many() -> VaultError:
    return VaultError("rate_limited", _(TOO_MANY), kind=Kind.RATE_LIMITED)


async def _within(request: web.Request, rules: tuple[Rule, ...], identifier: str) -> None:
    """Count one action under each rule; VaultError (429) once one is passed."""
    limiter = request.app[RATELIMIT_KEY]
    for rule in rules:
        if not await limiter.hit(rule, identifier):
            raise too_many()


def _storages(request: web.Request) -> Storages:
    return Storages(request.app[SETTINGS_KEY], request.app[SESSIONMAKER_KEY])


async def json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a request; VaultError (400) for anything else."""
    try:
        # JSON is UTF-8 (RFC 8259): whatever charset the request claims is not used.
        body = json.loads(await request.read())
    except ValueError:  # not JSON, not UTF-8
        body = None
    except web.HTTPRequestEntityTooLarge:  # over client_max_size: aiohttp's text is English
        raise VaultError("body_too_large", _(BODY_TOO_LARGE), kind=Kind.TOO_LARGE) from None
    if not isinstance(body, dict):
        raise VaultError("invalid_json", _(vaults.BAD_DATA))
    return body


async def request_vault(request: web.Request) -> Vault:
    """The vault the request's capability opens (its last use recorded, at most hourly);
    VaultError 401 otherwise, failures counted per client."""
    limiter = request.app[RATELIMIT_KEY]
    client = client_key(request)
    if not await limiter.allowed(AUTH_FAILURES_PER_IP, client):
        raise too_many()
    try:
        async with request.app[SESSIONMAKER_KEY]() as db:
            vault = await vaults.authenticate(db, request.headers.get("Authorization"))
    except VaultError:
        await limiter.hit(AUTH_FAILURES_PER_IP, client)
        raise
    now = utcnow()
    if vaults.touch_due(vault, now):
        async with request.app[SESSIONMAKER_KEY].begin() as db:
            await vaults.touch(db, vault.id, now)
    return vault


# -- The page -------------------------------------------------------------------------------------


@routes.get(links.VAULT.path, name=links.VAULT.name)
async def page(request: web.Request) -> web.StreamResponse:
    """The person's vault page; ``?depuis=<token>`` names the room it was opened from."""
    settings = request.app[SETTINGS_KEY]
    token = request.query.get("depuis")
    context = token if token and session_of_token(settings, token) else None
    limits = vaults.Limits.of(settings)
    config = {
        "api": {
            "challenge": url_for(request, "vault-challenge"),
            "vault": url_for(request, "vault-api"),
            "contact": url_for(request, "vault-contact"),
            "recover": url_for(request, "vault-recover"),
            "documents": url_for(request, "vault-documents"),
            # Paths with a "{document_id}" placeholder for the page to fill.
            "document": request.app.router["vault-document"].canonical,
            "blob": request.app.router["vault-document-blob"].canonical,
        },
        "limits": {
            "max_bytes": limits.max_bytes,
            "max_documents": limits.max_documents,
            "max_document_bytes": limits.max_document_bytes,
            "meta_max_chars": vaults.META_MAX_CHARS,
        },
        "categories": [
            {"code": code, "label": _(label)} for code, label in vaults.CATEGORIES.items()
        ],
        # The QR code of the recovery sheet opens <qr_base>#code=<code>.
        "qr_base": settings.url(url_for(request, "vault")),
        "context": context,
        "retention_months": settings.vault_retention_months,
    }
    return render(request, "vault/vault.html", {"config": config})


# -- Recovering, creating, the vault ---------------------------------------------------------------


@routes.get("/coffre/api/challenge", name="vault-challenge")
async def challenge(request: web.Request) -> web.StreamResponse:
    """A proof-of-work challenge (ALTCHA) for creating a vault."""
    return _json(pow.new_challenge(request.app[SETTINGS_KEY], utcnow()))


@routes.post("/coffre/api/recover", name="vault-recover")
async def recover(request: web.Request) -> web.StreamResponse:
    """The recovery box of the vault a recovery lookup finds; one 404 whatever the cause."""
    await _within(request, RECOVER_PER_IP, client_key(request))
    try:
        body = await json_body(request)
    except VaultError:
        body = {}
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        box = await vaults.recover(db, body.get("recovery_lookup"))
    if box is None:
        raise VaultError("not_found", _(vaults.RECOVERY_NOT_FOUND), kind=Kind.NOT_FOUND)
    return _json({"recovery_box": box})


@routes.post("/coffre/api/vault", name="vault-api")
async def create(request: web.Request) -> web.StreamResponse:
    """Create a vault from the browser's capabilities and recovery box (201 ``{vault}``)."""
    await _within(request, CREATE_PER_IP, client_key(request))
    body = await json_body(request)
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        # The proof of work is spent in the same transaction: a refused vault does not use it.
        await pow.check(db, settings, body.get(pow.FIELD), utcnow())
        origin = await origin_of(db, settings, body.get("context"))
        vault = await vaults.create(
            db,
            access=body.get("access"),
            recovery_lookup=body.get("recovery_lookup"),
            recovery_box=body.get("recovery_box"),
            share_facts=body.get("share_facts"),
            origin=origin,
        )
    return _json({"vault": vaults.vault_json(vault, settings)}, status=201)


@routes.get("/coffre/api/vault", name="vault-api")
async def show(request: web.Request) -> web.StreamResponse:
    """The vault, its documents, its personnes de confiance and what happened to it."""
    vault = await request_vault(request)
    async with request.app[SESSIONMAKER_KEY]() as db:
        vault = await db.get_one(Vault, vault.id)
        return _json(await vaults.overview(db, request.app[SETTINGS_KEY], vault))


@routes.delete("/coffre/api/vault", name="vault-api")
async def delete_vault(request: web.Request) -> web.StreamResponse:
    """Delete the vault now, documents and all (204)."""
    vault = await request_vault(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        await vaults.delete_vault(db, request.app[SETTINGS_KEY], vault, "person")
    return _no_content()


@routes.put("/coffre/api/vault/contact", name="vault-contact")
async def contact(request: web.Request) -> web.StreamResponse:
    """Keep or forget the phone / e-mail for retention notices."""
    vault = await request_vault(request)
    await _within(request, (CHANGES_PER_VAULT,), vault.id)
    body = await json_body(request)
    settings = request.app[SETTINGS_KEY]
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        vault = await db.get_one(Vault, vault.id)
        await vaults.set_contact(
            db,
            settings,
            vault,
            body.get("phone"),
            body.get("email"),
            request_language(request).code,
        )
    return _json({"vault": vaults.vault_json(vault, settings)})


# -- Documents ------------------------------------------------------------------------------------


async def _field(part: BodyPartReader) -> str:
    """A small text part, read with a cap."""
    data = bytearray()
    while chunk := await part.read_chunk(4096):
        data += chunk
        if len(data) > FIELD_MAX_BYTES:
            raise VaultError(f"invalid_{part.name}", _(vaults.BAD_DATA), part.name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise VaultError(f"invalid_{part.name}", _(vaults.BAD_DATA), part.name) from None


async def _blob_chunks(reader: MultipartReader, part: BodyPartReader) -> AsyncIterator[bytes]:
    """The blob part as it arrives; then make sure it was the last part (else the upload is
    refused and storage drops what it wrote)."""
    while chunk := await part.read_chunk(READ_CHUNK):
        yield chunk
    if await reader.next() is not None:
        raise VaultError("blob_not_last", _(vaults.BAD_DATA), "blob")


@routes.post("/coffre/api/documents", name="vault-documents")
async def add_document(request: web.Request) -> web.StreamResponse:
    """Store one encrypted document: fields first, then the ``blob`` part, streamed (201)."""
    settings = request.app[SETTINGS_KEY]
    vault = await request_vault(request)
    await _within(request, (UPLOADS_PER_VAULT,), vault.id)
    client = client_key(request)
    await _within(request, (UPLOADS_PER_IP,), client)
    limiter = request.app[RATELIMIT_KEY]
    if await limiter.under_pressure("vault_upload_mb"):
        raise VaultError("vault_busy", _(BUSY), kind=Kind.UNAVAILABLE)
    if not await limiter.allowed(UPLOAD_MB_PER_IP, client):
        raise too_many()
    limits = vaults.Limits.of(settings)
    vaults.upload_limit(vault, limits)  # full already: say so before reading anything
    length = request.content_length
    if length is not None and length > limits.max_document_bytes + MULTIPART_OVERHEAD:
        raise vaults.document_too_large(limits, length - MULTIPART_OVERHEAD)
    if request.content_type != "multipart/form-data":
        raise VaultError("not_multipart", _(vaults.BAD_DATA))
    try:
        reader = await request.multipart()
        fields: dict[str, str] = {}
        while True:
            part = await reader.next()
            if part is None:
                raise VaultError("missing_blob", _(vaults.BAD_DATA), "blob")
            if not isinstance(part, BodyPartReader) or part.name not in (*FIELD_PARTS, "blob"):
                raise VaultError("unknown_part", _(vaults.BAD_DATA))
            if part.name == "blob":
                break
            if part.name in fields:
                raise VaultError(f"repeated_{part.name}", _(vaults.BAD_DATA), part.name)
            fields[part.name] = await _field(part)
        missing = [name for name in ("id", "key", "meta") if name not in fields]
        if missing:  # the blob came before a field it needs
            raise VaultError(f"missing_{missing[0]}", _(vaults.BAD_DATA), missing[0])
        document = vaults.new_document(vault, fields)
        stored, fresh = await vaults.store_document(
            request.app[SESSIONMAKER_KEY],
            _storages(request),
            settings,
            vault,
            document,
            _blob_chunks(reader, part),
        )
    except (ValueError, AssertionError) as exc:  # aiohttp's multipart parser: a broken body
        raise VaultError("invalid_multipart", _(vaults.BAD_DATA)) from exc
    except ConnectionError as exc:  # the phone lost its network mid-upload: nothing was kept
        raise VaultError("upload_interrupted", _(INTERRUPTED), "blob") from exc
    megabytes = -(-stored.size // MB)  # rounded up: a 1 kB document costs 1 MB of the budgets
    await limiter.hit(UPLOAD_MB_PER_IP, client, cost=megabytes)
    await limiter.spend("vault_upload_mb", cost=megabytes)
    return _json(
        {"document": vaults.document_json(stored), "usage": vaults.usage_json(fresh, limits)},
        status=201,
    )


@routes.get("/coffre/api/documents/{document_id}/blob", name="vault-document-blob")
async def blob(request: web.Request) -> web.StreamResponse:
    """A document's ciphertext, streamed as stored."""
    vault = await request_vault(request)
    await _within(request, (READS_PER_VAULT,), vault.id)
    await _within(request, (READS_PER_IP,), client_key(request))
    async with request.app[SESSIONMAKER_KEY]() as db:
        document = await vaults.get_document(db, vault, request.match_info["document_id"])
    chunks = _storages(request).of(document.storage).read(document.id)
    try:
        first = await anext(chunks, b"")
    except BlobMissing:
        raise VaultError(
            "unknown_document", _(vaults.DOCUMENT_NOT_FOUND), kind=Kind.NOT_FOUND
        ) from None
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = document.size
    _no_store(response)
    await response.prepare(request)
    if request.method == "HEAD":  # the length only: a body would break the connection's framing
        await chunks.aclose()
        await response.write_eof()
        return response
    try:
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    finally:
        await chunks.aclose()
    await response.write_eof()
    return response


@routes.put("/coffre/api/documents/{document_id}", name="vault-document")
async def update_document(request: web.Request) -> web.StreamResponse:
    """New encrypted metadata (a rename) and category for a document."""
    vault = await request_vault(request)
    await _within(request, (CHANGES_PER_VAULT,), vault.id)
    body = await json_body(request)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        document = await vaults.update_document(
            db, vault, request.match_info["document_id"], body.get("meta"), body.get("category")
        )
    return _json({"document": vaults.document_json(document)})


@routes.delete("/coffre/api/documents/{document_id}", name="vault-document")
async def delete_document(request: web.Request) -> web.StreamResponse:
    """Delete one document, its blob with it (204)."""
    vault = await request_vault(request)
    await _within(request, (CHANGES_PER_VAULT,), vault.id)
    async with request.app[SESSIONMAKER_KEY].begin() as db:
        await vaults.delete_document(
            db, request.app[SETTINGS_KEY], vault, request.match_info["document_id"]
        )
    return _no_content()
