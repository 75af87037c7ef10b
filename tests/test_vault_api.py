"""The vault's server (issue 15) through its HTTP API, against the real app and database (SQLite,
and PostgreSQL when reachable) and both blob storages: the client side is done here in Python
exactly as server/vault/DESIGN.md says (tests/vault_client.py), so the server only ever sees what
a browser would send. What it stores must never contain a document's bytes in clear."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, update

from server.settings import Settings
from server.stats.events import EventKind
from server.store.models import (
    AssistanceSession,
    Base,
    QueueEntry,
    StatEvent,
    Vault,
    VaultBlobChunk,
    VaultDocument,
    VaultEvent,
    utcnow,
)
from server.vault import storage as vault_storage
from server.vault.context import session_of_token, vault_context_token
from tests.conftest import Account, Running
from tests.test_bad_input import UNPARSEABLE, Body
from tests.vault_client import (
    Answer,
    EncryptedDocument,
    NewVault,
    RecoveryCode,
    VaultHttp,
    VaultKeys,
    b64u,
    challenge,
    create_vault,
    creation_body,
    decrypt_meta,
    encrypt_document,
    encrypt_meta,
    recover,
    solved,
)

MARKER = b"VP-MARQUEUR-EN-CLAIR-7f3a9c"
FULL = "Votre coffre-fort est plein (1 Mo). Supprimez un document pour en ajouter un autre."
KB = 1024


@pytest.fixture
def vault_settings() -> dict[str, Any]:
    """Settings of the vault under test (tests override it with parametrize)."""
    return {}


@pytest.fixture
def settings(settings: Settings, vault_settings: dict[str, Any]) -> Settings:
    """Behind a trusted proxy (tests choose their client address), small proofs of work."""
    return settings.model_copy(
        update={"trust_proxy": True, "pow_max_counter": 20, **vault_settings}
    )


async def new_vault(running: Running, http: aiohttp.ClientSession, **kwargs: Any) -> VaultHttp:
    """A vault made through the API, as one device."""
    made = await create_vault(http, running.base_url, **kwargs)
    assert made.answer.status == 201, made.answer
    return VaultHttp(http, running.base_url, made.keys)


def document_with(size: int) -> bytes:
    """``size`` bytes of a fake PDF (the same for the same size) with the marker in the middle."""
    filler = random.Random(size).randbytes(size)
    middle = size // 2
    return (b"%PDF-1.4\n" + filler[: middle - 9] + MARKER + filler[middle:])[:size]


async def stored_files(settings: Settings) -> list[Path]:
    root = vault_storage.files_root(settings)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def count(running: Running, model: Any) -> int:
    async with running.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def nothing_stored(running: Running) -> None:
    """No document row, no blob (file or chunk) anywhere."""
    assert await count(running, VaultDocument) == 0
    assert await count(running, VaultBlobChunk) == 0
    assert await stored_files(running.settings) == []


async def something_stored(running: Running) -> bool:
    return bool(await stored_files(running.settings) or await count(running, VaultBlobChunk))


async def nothing_left(running: Running) -> bool:
    return not await something_stored(running)


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Wait for what the server does on its own (no event of ours to await: it is disk state)."""
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def everything_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


CONFIG_RE = re.compile(r'<script type="application/json" id="vp-config">(.*?)</script>', re.S)


async def page_config(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The page config of the vault page."""
    async with http.get(url) as resp:
        assert resp.status == 200
        match = CONFIG_RE.search(await resp.text())
    assert match, "the page has no config"
    config: dict[str, Any] = json.loads(unescape(match.group(1)))
    return config


def sqlite_files(path: Path) -> bytes:
    """The SQLite database file with its WAL and shared-memory files."""
    files = (Path(str(path) + suffix) for suffix in ("", "-wal", "-shm"))
    return b"".join(f.read_bytes() for f in files if f.exists())


async def database_bytes(running: Running, backend: str) -> bytes:
    """Every byte the database holds of the vault: the SQLite file (+ WAL, SHM), or the rows of
    the vault tables on PostgreSQL."""
    if backend == "sqlite":
        return sqlite_files(Path(running.settings.database_url.split("///", 1)[1]))
    parts: list[bytes] = []
    async with running.sessionmaker() as db:
        for name in ("vault_blobs", "vault_documents", "vaults", "vault_events", "stat_events"):
            for row in (await db.execute(select(Base.metadata.tables[name]))).all():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        parts.append(bytes(value))
                    elif value is not None:
                        parts.append(str(value).encode())
    return b"\x00".join(parts)


# -- The round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vault_settings",
    [{"vault_storage": "files"}, {"vault_storage": "database"}],
    ids=["files", "database"],
)
async def test_document_is_stored_encrypted_and_recovered_byte_identical(
    running: Running, http: aiohttp.ClientSession, backend: str, vault_settings: dict[str, Any]
) -> None:
    """Create → upload a document holding a marker → the marker's bytes are nowhere in the
    database nor the storage folder → a new device recovers with the typed code → same bytes."""
    made = await create_vault(http, running.base_url)
    assert made.answer.status == 201, made.answer
    assert made.answer.headers["Cache-Control"] == "no-store"
    device = VaultHttp(http, running.base_url, made.keys)
    # Three chunks of the database storage, and more than the app's client_max_size (256 KiB):
    # the upload is streamed, never read whole.
    data = document_with(600 * KB)
    document = encrypt_document(made.keys, data, name=f"{MARKER.decode()}.pdf", category="caf")
    answer = await device.upload(document)
    assert answer.status == 201, answer
    assert answer.body["document"]["size"] == len(document.blob)
    assert answer.body["document"]["category"] == "caf"
    assert answer.body["usage"]["bytes"] == len(document.blob)
    assert answer.body["usage"]["documents"] == 1

    storage = vault_settings["vault_storage"]
    files = await stored_files(running.settings)
    if storage == "files":
        assert [p.name for p in files] == [document.id]
        assert files[0].parent.name == document.id[:2]
        assert files[0].read_bytes() == document.blob
        assert await count(running, VaultBlobChunk) == 0
    else:
        assert files == []
        assert await count(running, VaultBlobChunk) == 3
    async with running.sessionmaker() as db:
        row = await db.get_one(VaultDocument, document.id)
    assert row.storage == storage

    # The marker (in the file and in its name) is stored nowhere in clear.
    assert MARKER not in await database_bytes(running, backend)
    assert MARKER not in everything_under(running.settings.data_dir)
    assert data[:4096] not in everything_under(running.settings.data_dir)

    # A new device: the code typed with spaces and lower case, as a person would.
    other = await aiohttp.ClientSession().__aenter__()
    try:
        typed = made.code.text.replace("-", " ").lower()
        answer, keys = await recover(other, running.base_url, typed)
        assert answer.status == 200, answer
        assert keys is not None and keys.access == made.keys.access
        restored = VaultHttp(other, running.base_url, keys)
        assert await restored.read(document.id) == data
        listing = await restored.overview()
        [shown] = listing.body["documents"]
        meta = decrypt_meta(keys, document.id, shown["meta"])
        assert meta["name"] == f"{MARKER.decode()}.pdf" and meta["size"] == len(data)
        assert [e["kind"] for e in listing.body["events"]] == ["recovered", "created"]
    finally:
        await other.close()


async def test_blob_answer_is_the_stored_ciphertext_with_no_store(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """The blob comes back as uploaded, application/octet-stream, not cached anywhere."""
    device = await new_vault(running, http)
    document = encrypt_document(device.keys, document_with(10 * KB))
    assert (await device.upload(document)).status == 201
    async with http.get(
        running.url(f"/coffre/api/documents/{document.id}/blob"), headers=device.keys.headers
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Cache-Control"] == "no-store"
        assert int(resp.headers["Content-Length"]) == len(document.blob)
        assert await resp.read() == document.blob


async def test_head_of_a_blob_gives_its_length_without_the_bytes(
    running: Running, http: aiohttp.ClientSession
) -> None:
    device = await new_vault(running, http)
    document = encrypt_document(device.keys, document_with(3 * KB))
    assert (await device.upload(document)).status == 201
    async with http.head(
        running.url(f"/coffre/api/documents/{document.id}/blob"), headers=device.keys.headers
    ) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(document.blob)
        assert await resp.read() == b""


async def test_a_json_body_over_the_apps_size_limit_is_a_french_413(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """JSON bodies stay under aiohttp's client_max_size (256 KiB): past it, a French 413."""
    device = await new_vault(running, http)
    answer = await device.request("PUT", "/coffre/api/vault/contact", data=b"{" + b" " * 300_000)
    assert answer.status == 413 and answer.error["message"] == "Ce que vous envoyez est trop gros."


# -- Who may do what ------------------------------------------------------------------------------


async def test_unknown_recovery_lookup_gets_one_404_whatever_the_cause(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """A code that opens nothing, a malformed lookup, no body: the same 404 and message."""
    await new_vault(running, http)
    answer, keys = await recover(http, running.base_url, RecoveryCode.new().text)
    assert answer.status == 404 and keys is None
    message = answer.error["message"]
    assert "Aucun coffre-fort ne correspond à ce code" in message
    bodies: list[Any] = [{"recovery_lookup": "not b64u!"}, {"recovery_lookup": b64u(b"x")}, {}, []]
    for body in bodies:
        async with http.post(running.url("/coffre/api/recover"), json=body) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == message
            assert resp.headers["Cache-Control"] == "no-store"
    async with http.post(running.url("/coffre/api/recover"), data=b"{not json") as resp:
        assert resp.status == 404


@pytest.mark.parametrize(
    "header",
    [None, "Bearer abc", "Vault", "Vault not-base64!", f"Vault {b64u(b'x' * 31)}", "random"],
)
async def test_missing_or_invalid_authorization_is_401(
    running: Running, http: aiohttp.ClientSession, header: str | None
) -> None:
    """Without the vault's capability, nothing opens: 401 in the JSON error shape."""
    await new_vault(running, http)
    headers = {"Authorization": header} if header is not None else {}
    for method, path in (
        ("GET", "/coffre/api/vault"),
        ("DELETE", "/coffre/api/vault"),
        ("POST", "/coffre/api/documents"),
        ("GET", f"/coffre/api/documents/{uuid.uuid4()}/blob"),
    ):
        async with http.request(method, running.url(path), headers=headers) as resp:
            assert resp.status == 401, (method, path)
            error = (await resp.json())["error"]
            assert error["code"] == "unknown_vault"
            assert "pas reconnu" in error["message"]
            assert resp.headers["Cache-Control"] == "no-store"
    assert await count(running, Vault) == 1


async def test_an_unknown_capability_of_the_right_shape_is_401(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """A well-formed capability of no vault (a deleted one, a guess) opens nothing."""
    stranger = VaultHttp(http, running.base_url, VaultKeys.new())
    answer = await stranger.overview()
    assert answer.status == 401 and answer.error["code"] == "unknown_vault"


async def test_another_vaults_document_is_404(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """Vault B knows the id of A's document: it can neither read, rename nor delete it."""
    alice = await new_vault(running, http)
    bob = await new_vault(running, http)
    document = encrypt_document(alice.keys, document_with(2 * KB))
    assert (await alice.upload(document)).status == 201
    status, _ = await bob.blob(document.id)
    assert status == 404
    meta = encrypt_meta(bob.keys, document.id, {"name": "x"})
    renamed = await bob.request("PUT", f"/coffre/api/documents/{document.id}", json={"meta": meta})
    assert renamed.status == 404 and "n'existe plus" in renamed.error["message"]
    deleted = await bob.request("DELETE", f"/coffre/api/documents/{document.id}")
    assert deleted.status == 404
    # A's document is untouched.
    assert await alice.read(document.id) == document_with(2 * KB)
    async with running.sessionmaker() as db:
        row = await db.get_one(VaultDocument, document.id)
        assert row.meta == document.meta


# -- Limits ---------------------------------------------------------------------------------------


SMALL = {"vault_max_mb": 1, "vault_max_documents": 2, "vault_max_document_mb": 1}


@pytest.mark.parametrize("vault_settings", [SMALL], ids=["small"])
async def test_quota_by_size_and_by_count_in_french(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """Past the vault's space, then past its number of documents: 413, a French message with
    the real numbers, nothing stored for the refused upload."""
    device = await new_vault(running, http)
    first = encrypt_document(device.keys, document_with(600 * KB))
    assert (await device.upload(first)).status == 201
    too_much = encrypt_document(device.keys, document_with(500 * KB))
    answer = await device.upload(too_much)
    assert answer.status == 413
    assert answer.error["message"] == FULL and answer.error["code"] == "vault_full"
    small = encrypt_document(device.keys, document_with(10 * KB))
    assert (await device.upload(small)).status == 201
    third = encrypt_document(device.keys, document_with(1 * KB))
    answer = await device.upload(third)
    assert answer.status == 413 and answer.error["code"] == "too_many_documents"
    assert answer.error["message"] == (
        "Votre coffre-fort contient déjà 2 documents, le maximum. "
        "Supprimez un document pour en ajouter un autre."
    )
    assert await count(running, VaultDocument) == 2
    usage = (await device.overview()).body["vault"]["usage"]
    assert usage == {
        "bytes": len(first.blob) + len(small.blob),
        "documents": 2,
        "max_bytes": 1024 * 1024,
        "max_documents": 2,
        "max_document_bytes": 1024 * 1024,
    }
    files = {p.name for p in await stored_files(running.settings)}
    async with running.sessionmaker() as db:
        chunks = set(await db.scalars(select(VaultBlobChunk.document_id).distinct()))
    assert files | chunks == {first.id, small.id}


@pytest.mark.parametrize(
    "vault_settings",
    [
        {"vault_max_document_mb": 1, "vault_storage": "files"},
        {"vault_max_document_mb": 1, "vault_storage": "database"},
    ],
    ids=["files", "database"],
)
@pytest.mark.parametrize("stream", [True, False], ids=["chunked", "sized"])
async def test_document_over_the_limit_is_stopped_with_nothing_left(
    running: Running, http: aiohttp.ClientSession, stream: bool
) -> None:
    """A 3 MB document against a 1 MB limit: refused mid-stream (chunked upload) or from its
    Content-Length, 413 in French, no file, no chunk, no row, no usage."""
    device = await new_vault(running, http)
    document = encrypt_document(device.keys, document_with(3 * 1024 * KB))
    answer = await device.upload(document, stream=stream)
    assert answer.status == 413, answer
    assert answer.error["code"] == "document_too_large"
    # Sized: refused from its Content-Length before a byte is read; chunked: once the stream
    # passes the limit (its whole size is unknown then).
    assert answer.error["message"] == (
        "Ce document est trop lourd. La limite est de 1 Mo."
        if stream
        else "Ce document est trop lourd (3 Mo). La limite est de 1 Mo."
    )
    await nothing_stored(running)
    assert (await device.overview()).body["vault"]["usage"]["bytes"] == 0
    # The same vault still takes a document under the limit.
    fine = encrypt_document(device.keys, document_with(100 * KB))
    assert (await device.upload(fine, stream=stream)).status == 201


@pytest.mark.parametrize(
    "vault_settings",
    [{"vault_storage": "files"}, {"vault_storage": "database"}],
    ids=["files", "database"],
)
async def test_an_upload_cut_off_mid_stream_leaves_nothing(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """The phone loses its network halfway through the blob: no row, no file (not even the
    temporary one), no chunk, no usage."""
    device = await new_vault(running, http)
    document = encrypt_document(device.keys, document_with(900 * KB))
    boundary = "vpcut"
    head = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in (("id", document.id), ("key", document.key), ("meta", document.meta))
        ).encode()
        + (
            f'--{boundary}\r\nContent-Disposition: form-data; name="blob"; filename="blob"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
    )
    sent = head + document.blob[: 600 * KB]  # two chunks' worth, then the line drops
    port = int(running.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "POST /coffre/api/documents HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: Vault {b64u(device.keys.access)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    for start in range(0, len(sent), 64 * KB):
        piece = sent[start : start + 64 * KB]
        writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        await writer.drain()
    # The server is writing the blob (a temporary file, or chunks) when the line drops.
    await until(lambda: something_stored(running))
    writer.transport.abort()  # no FIN: a lost network
    await until(lambda: nothing_left(running))  # once the server notices the lost connection
    await nothing_stored(running)
    usage = (await device.overview()).body["vault"]["usage"]
    assert usage["bytes"] == 0 and usage["documents"] == 0
    del reader


@pytest.mark.parametrize("vault_settings", [{"vault_max_mb": 1}], ids=["1MB"])
async def test_concurrent_uploads_do_not_overshoot_the_quota(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """Six uploads of 300 KB at once into 1 MB: exactly three fit; the others are refused and
    leave nothing behind; the usage counts exactly the stored ones."""
    device = await new_vault(running, http)
    documents = [encrypt_document(device.keys, document_with(300 * KB)) for _ in range(6)]
    answers = await asyncio.gather(*(device.upload(d) for d in documents))
    statuses = sorted(a.status for a in answers)
    assert statuses == [201, 201, 201, 413, 413, 413], [a.body for a in answers]
    stored = [d for d, a in zip(documents, answers, strict=True) if a.status == 201]
    async with running.sessionmaker() as db:
        vault = await db.scalar(select(Vault))
        assert vault is not None
        assert vault.used_bytes == sum(len(d.blob) for d in stored)
        assert vault.document_count == 3
        ids = set(await db.scalars(select(VaultDocument.id)))
    assert ids == {d.id for d in stored}
    files = {p.name for p in await stored_files(running.settings)}
    async with running.sessionmaker() as db:
        chunk_ids = set(await db.scalars(select(VaultBlobChunk.document_id).distinct()))
    assert (files | chunk_ids) == ids


# -- Changing and deleting ------------------------------------------------------------------------


async def test_rename_replaces_meta_and_category(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """A new name (encrypted metadata) and category; the blob is unchanged."""
    device = await new_vault(running, http)
    document = encrypt_document(device.keys, document_with(5 * KB), name="avis.pdf")
    assert (await device.upload(document)).status == 201
    meta = encrypt_meta(device.keys, document.id, {"name": "Avis d'impôt 2026.pdf"})
    answer = await device.request(
        "PUT",
        f"/coffre/api/documents/{document.id}",
        json={"meta": meta, "category": "impots"},
    )
    assert answer.status == 200, answer
    assert answer.body["document"]["meta"] == meta
    assert answer.body["document"]["category"] == "impots"
    listing = await device.overview()
    [shown] = listing.body["documents"]
    assert decrypt_meta(device.keys, document.id, shown["meta"])["name"] == "Avis d'impôt 2026.pdf"
    bad = await device.request(
        "PUT", f"/coffre/api/documents/{document.id}", json={"meta": meta, "category": "x"}
    )
    assert bad.status == 400 and bad.error["field"] == "category"


async def test_categories_stay_encrypted_without_share_facts(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """A person who did not agree to share facts: no category kept in clear, the statistics
    count the document as non_precise."""
    device = await new_vault(running, http, share_facts=False)
    document = encrypt_document(device.keys, document_with(2 * KB), category="sante")
    answer = await device.upload(document)
    assert answer.status == 201 and answer.body["document"]["category"] is None
    async with running.sessionmaker() as db:
        row = await db.get_one(VaultDocument, document.id)
        assert row.category is None
        themes = list(
            await db.scalars(
                select(StatEvent.theme).where(
                    StatEvent.kind == EventKind.VAULT_DOCUMENT_ADDED.value
                )
            )
        )
    assert themes == ["non_precise"]


async def test_delete_one_document_removes_row_and_blob_and_frees_usage(
    running: Running, http: aiohttp.ClientSession
) -> None:
    device = await new_vault(running, http)
    kept = encrypt_document(device.keys, document_with(3 * KB))
    gone = encrypt_document(device.keys, document_with(4 * KB))
    for document in (kept, gone):
        assert (await device.upload(document)).status == 201
    answer = await device.request("DELETE", f"/coffre/api/documents/{gone.id}")
    assert answer.status == 204 and answer.headers["Cache-Control"] == "no-store"
    files = {p.name for p in await stored_files(running.settings)}
    async with running.sessionmaker() as db:
        chunks = set(await db.scalars(select(VaultBlobChunk.document_id).distinct()))
    assert files | chunks == {kept.id}
    status, _ = await device.blob(gone.id)
    assert status == 404
    usage = (await device.overview()).body["vault"]["usage"]
    assert usage["bytes"] == len(kept.blob) and usage["documents"] == 1
    again = await device.request("DELETE", f"/coffre/api/documents/{gone.id}")
    assert again.status == 404


@pytest.mark.parametrize(
    "vault_settings",
    [{"vault_storage": "files"}, {"vault_storage": "database"}],
    ids=["files", "database"],
)
async def test_delete_the_vault_removes_rows_and_blobs_at_once(
    running: Running, http: aiohttp.ClientSession
) -> None:
    device = await new_vault(running, http)
    other = await new_vault(running, http)
    keep = encrypt_document(other.keys, document_with(2 * KB))
    assert (await other.upload(keep)).status == 201
    for _ in range(2):
        assert (
            await device.upload(encrypt_document(device.keys, document_with(300 * KB)))
        ).status == 201
    answer = await device.request("DELETE", "/coffre/api/vault")
    assert answer.status == 204
    async with running.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(Vault)) == 1
        assert list(await db.scalars(select(VaultDocument.id))) == [keep.id]
        assert await db.scalar(select(func.count()).select_from(VaultEvent)) == 1  # other's
        remaining = set(await db.scalars(select(VaultBlobChunk.document_id).distinct()))
        deleted = await db.scalar(
            select(func.count())
            .select_from(StatEvent)
            .where(StatEvent.kind == EventKind.VAULT_DELETED.value, StatEvent.reason == "person")
        )
    assert deleted == 1
    assert remaining | {p.name for p in await stored_files(running.settings)} == {keep.id}
    assert (await device.overview()).status == 401
    assert await other.read(keep.id) == document_with(2 * KB)


# -- Hostile internet -----------------------------------------------------------------------------


async def test_recover_is_rate_limited_per_client(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """Ten tries an hour from one client key; then 429 with Retry-After; another client (here
    another IPv6 /64) still has its own tries."""
    made = await create_vault(http, running.base_url)
    home = {"X-Forwarded-For": "2001:db8:1:2::10"}
    for attempt in range(10):
        # Another address of the same /64 counts for the same home.
        headers = {"X-Forwarded-For": f"2001:db8:1:2::{attempt + 10:x}"}
        answer, _ = await recover(http, running.base_url, RecoveryCode.new().text, headers)
        assert answer.status == 404
    answer, _ = await recover(http, running.base_url, made.code.text, home)
    assert answer.status == 429 and answer.headers["Retry-After"] == "60"
    assert answer.error["code"] == "rate_limited"
    elsewhere = {"X-Forwarded-For": "2001:db8:9:9::1"}
    answer, keys = await recover(http, running.base_url, made.code.text, elsewhere)
    assert answer.status == 200 and keys is not None


async def test_failed_authentications_are_rate_limited_per_client(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """Thirty wrong capabilities in ten minutes from one client, then 429 even with the right
    one from there; the vault still opens from elsewhere."""
    device = await new_vault(running, http)
    here = {"X-Forwarded-For": "198.51.100.7"}
    for _ in range(30):
        stranger = VaultHttp(http, running.base_url, VaultKeys.new())
        assert (await stranger.request("GET", "/coffre/api/vault", headers=here)).status == 401
    answer = await device.request("GET", "/coffre/api/vault", headers=here)
    assert answer.status == 429 and answer.error["code"] == "rate_limited"
    elsewhere = {"X-Forwarded-For": "198.51.100.8"}
    assert (await device.request("GET", "/coffre/api/vault", headers=elsewhere)).status == 200


async def test_creation_needs_a_fresh_proof_of_work(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """No solution, a wrong one, a replayed one: 400 and no vault; a fresh one: 201."""
    body = creation_body(VaultKeys.new(), RecoveryCode.new(), share_facts=True)

    async def post(**extra: Any) -> Answer:
        async with http.post(running.url("/coffre/api/vault"), json={**body, **extra}) as resp:
            return Answer(resp.status, await resp.json(), dict(resp.headers))

    missing = await post()
    assert missing.status == 400 and missing.error["code"] == "pow_missing"
    wrong = await post(altcha="eyJub3QiOiAiYSBzb2x1dGlvbiJ9")
    assert wrong.status == 400 and wrong.error["code"] == "pow_invalid"
    assert await count(running, Vault) == 0
    payload = solved(await challenge(http, running.base_url))
    assert (await post(altcha=payload)).status == 201
    other = VaultKeys.new()
    replayed = await post(altcha=payload, access=b64u(other.access))
    assert replayed.status == 400 and replayed.error["code"] == "pow_replayed"
    assert await count(running, Vault) == 1


async def test_unparseable_bodies_get_a_json_400_on_every_vault_route(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """The unreadable bodies of tests/test_bad_input.py (charsets, codecs, broken multipart)
    and JSON in strange charsets, sent to every vault route that reads a body, with a valid
    capability: never a 5xx, a JSON 400 (404 for recovery, whatever the cause), nothing
    stored."""
    device = await new_vault(running, http)
    document = encrypt_document(device.keys, document_with(1 * KB))
    assert (await device.upload(document)).status == 201
    bodies = [
        *UNPARSEABLE,
        Body("JSON, claimed rot13", "application/json; charset=rot13", b'{"phone": 7, "meta": 7}'),
        Body("JSON, unknown charset", "application/json; charset=nope", b'{"email": []}'),
        Body("JSON, invalid UTF-8", "application/json", b'{"meta": "\xff"}'),
        Body("JSON array", "application/json", b"[]"),
    ]
    routes = [
        ("POST", "/coffre/api/vault", 400),
        ("POST", "/coffre/api/recover", 404),
        ("POST", "/coffre/api/documents", 400),
        ("PUT", "/coffre/api/vault/contact", 400),
        ("PUT", f"/coffre/api/documents/{document.id}", 400),
    ]
    failures = []
    for n, ((method, path, expected), body) in enumerate(itertools.product(routes, bodies)):
        headers = {"Content-Type": body.content_type, "X-Forwarded-For": f"192.0.2.{n}"}
        answer = await device.request(method, path, data=body.data, headers=headers)
        if answer.status != expected or not answer.error.get("message"):
            failures.append(f"{method} {path} ({body.name}): {answer.status} {answer.body}")
    assert not failures, "\n".join(failures)
    assert await count(running, Vault) == 1
    assert await count(running, VaultDocument) == 1


def _vault_body(**changes: Any) -> dict[str, Any]:
    keys = VaultKeys.new()
    code = RecoveryCode.new()
    body: dict[str, Any] = {
        "access": b64u(keys.access),
        "recovery_lookup": b64u(code.lookup),
        "recovery_box": code.box(keys.key),
        "share_facts": False,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"access": "!!!not-base64url!!!"}, "access"),
        ({"access": b64u(os.urandom(31))}, "access"),
        ({"access": None}, "access"),
        ({"recovery_lookup": b64u(os.urandom(33))}, "recovery_lookup"),
        ({"recovery_box": b64u(os.urandom(59))}, "recovery_box"),
        ({"recovery_box": b64u(os.urandom(61))}, "recovery_box"),
        ({"recovery_box": b64u(os.urandom(60)) + "="}, "recovery_box"),
        ({"share_facts": "yes"}, "share_facts"),
    ],
)
async def test_malformed_creation_is_400_with_nothing_stored(
    running: Running, http: aiohttp.ClientSession, changes: dict[str, Any], field: str
) -> None:
    body = _vault_body(**changes, altcha=solved(await challenge(http, running.base_url)))
    async with http.post(running.url("/coffre/api/vault"), json=body) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["field"] == field
    assert "Rechargez la page" in error["message"]
    assert await count(running, Vault) == 0


async def test_creation_body_must_be_a_json_object(
    running: Running, http: aiohttp.ClientSession
) -> None:
    for data in (b"not json", b"[1, 2]", b'"text"'):
        async with http.post(running.url("/coffre/api/vault"), data=data) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid_json"
    assert await count(running, Vault) == 0


def _parts(*parts: tuple[str, Any]) -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in parts:
        part = writer.append(value)
        part.set_content_disposition("form-data", name=name)
    return writer


def _fields(document: EncryptedDocument, **changes: Any) -> list[tuple[str, Any]]:
    values: dict[str, Any] = {"id": document.id, "key": document.key, "meta": document.meta}
    values.update(changes)
    return [(k, v) for k, v in values.items() if v is not None]


BAD_UPLOADS: dict[str, tuple[str, Any]] = {
    # name: (field named in the error, how to build the parts from a good document)
    "non-uuid id": ("id", lambda d: [*_fields(d, id="1234"), ("blob", d.blob)]),
    "uuid1 id": ("id", lambda d: [*_fields(d, id=str(uuid.uuid1())), ("blob", d.blob)]),
    "upper-case id": ("id", lambda d: [*_fields(d, id=d.id.upper()), ("blob", d.blob)]),
    "short key": ("key", lambda d: [*_fields(d, key=b64u(os.urandom(32))), ("blob", d.blob)]),
    "bad b64u key": ("key", lambda d: [*_fields(d, key="a+b/c=="), ("blob", d.blob)]),
    "long meta": ("meta", lambda d: [*_fields(d, meta="A" * 5000), ("blob", d.blob)]),
    "empty meta": ("meta", lambda d: [*_fields(d, meta=""), ("blob", d.blob)]),
    "unknown category": (
        "category",
        lambda d: [*_fields(d), ("category", "passeport"), ("blob", d.blob)],
    ),
    "missing meta": ("meta", lambda d: [*_fields(d, meta=None), ("blob", d.blob)]),
    "blob before fields": ("id", lambda d: [("blob", d.blob), *_fields(d)]),
    "no blob": ("blob", lambda d: _fields(d)),
    "part after blob": ("blob", lambda d: [*_fields(d), ("blob", d.blob), ("category", "caf")]),
    "repeated id": ("id", lambda d: [*_fields(d), ("id", d.id), ("blob", d.blob)]),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS), ids=list(BAD_UPLOADS))
async def test_malformed_upload_is_400_with_nothing_stored(
    running: Running, http: aiohttp.ClientSession, case: str
) -> None:
    device = await new_vault(running, http)
    document = encrypt_document(device.keys, document_with(20 * KB))
    field, build = BAD_UPLOADS[case]
    answer = await device.request("POST", "/coffre/api/documents", data=_parts(*build(document)))
    assert answer.status == 400, answer
    assert answer.error["field"] == field
    assert "Rechargez la page" in answer.error["message"]
    await nothing_stored(running)
    assert (await device.overview()).body["vault"]["usage"]["documents"] == 0


async def test_upload_that_is_not_multipart_is_400(
    running: Running, http: aiohttp.ClientSession
) -> None:
    device = await new_vault(running, http)
    answer = await device.request("POST", "/coffre/api/documents", json={"id": "x"})
    assert answer.status == 400 and answer.error["code"] == "not_multipart"
    answer = await device.request(
        "POST",
        "/coffre/api/documents",
        data=b"--x\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=y"},
    )
    assert answer.status == 400
    await nothing_stored(running)


async def test_a_document_id_cannot_be_reused(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """Uploading under an id that exists (this vault's or another's) is refused and the stored
    blob is untouched."""
    alice = await new_vault(running, http)
    bob = await new_vault(running, http)
    document = encrypt_document(alice.keys, document_with(3 * KB))
    assert (await alice.upload(document)).status == 201
    copy = encrypt_document(bob.keys, document_with(4 * KB), document_id=document.id)
    answer = await bob.upload(copy)
    assert answer.status == 409 and answer.error["code"] == "document_exists"
    status, blob = await alice.blob(document.id)
    assert status == 200 and blob == document.blob


# -- Statistics, context, activity ----------------------------------------------------------------


async def test_vault_made_from_a_room_counts_under_its_association_and_departement(
    running: Running, http: aiohttp.ClientSession, session_id: str, volunteer: Account
) -> None:
    """The room's signed token carries the session: the vault counts under its association and
    the département of the postal code given for it; a forged token counts nothing."""
    token = vault_context_token(running.settings, session_id)
    assert session_of_token(running.settings, token) == session_id
    assert session_of_token(running.settings, token[:-2] + "AA") is None
    expired = vault_context_token(running.settings, session_id, utcnow() - timedelta(days=3))
    assert session_of_token(running.settings, expired) is None

    assert (await page_config(http, running.url(f"/coffre?depuis={token}")))["context"] == token
    assert (await page_config(http, running.url(f"/coffre?depuis={expired}")))["context"] is None

    device = await new_vault(running, http, context=token)
    await new_vault(running, http, context=expired)
    document = encrypt_document(device.keys, document_with(1 * KB), category="logement")
    assert (await device.upload(document)).status == 201
    async with running.sessionmaker() as db:
        events = list(
            await db.scalars(
                select(StatEvent).where(StatEvent.kind.like("vault_%")).order_by(StatEvent.id)
            )
        )
    kinds = [(e.kind, e.association_id, e.theme) for e in events]
    association = volunteer.user.association_id
    assert kinds == [
        ("vault_created", association, None),
        # The only association of the instance, without a valid context.
        ("vault_created", association, None),
        ("vault_document_added", association, "logement"),
    ]


async def test_vault_context_departement_comes_from_the_sessions_postal_code(
    running: Running, http: aiohttp.ClientSession, session_id: str
) -> None:
    async with running.sessionmaker.begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        db.add(
            QueueEntry(
                association_id=session.association_id,
                token_hash="t" * 64,
                postal_code="13008",
                assistance_session_id=session_id,
            )
        )
    await new_vault(running, http, context=vault_context_token(running.settings, session_id))
    async with running.sessionmaker() as db:
        vault = await db.scalar(select(Vault))
        assert vault is not None and vault.departement == "13"
        created = await db.scalar(
            select(StatEvent).where(StatEvent.kind == EventKind.VAULT_CREATED.value)
        )
        assert created is not None and created.departement == "13"


async def test_use_resets_the_retention_clock_at_most_hourly(
    running: Running, http: aiohttp.ClientSession
) -> None:
    device = await new_vault(running, http)
    long_ago = utcnow() - timedelta(days=400)
    async with running.sessionmaker.begin() as db:
        await db.execute(update(Vault).values(last_used_at=long_ago, notices_sent=2))
    assert (await device.overview()).status == 200
    async with running.sessionmaker() as db:
        vault = await db.scalar(select(Vault))
        assert vault is not None
        assert vault.last_used_at > utcnow() - timedelta(minutes=1)
        assert vault.notices_sent == 0
        touched = vault.last_used_at
    assert (await device.overview()).status == 200
    async with running.sessionmaker() as db:
        assert (await db.scalar(select(Vault.last_used_at))) == touched


async def test_contact_is_kept_and_removed(running: Running, http: aiohttp.ClientSession) -> None:
    device = await new_vault(running, http)
    answer = await device.request(
        "PUT", "/coffre/api/vault/contact", json={"phone": "06 12 34 56 78"}
    )
    assert answer.status == 200 and answer.body["vault"]["has_contact"] is True
    async with running.sessionmaker() as db:
        vault = await db.scalar(select(Vault))
        assert vault is not None and vault.contact_phone == "+33612345678"
    landline = await device.request(
        "PUT", "/coffre/api/vault/contact", json={"phone": "01 44 55 66 77"}
    )
    assert landline.status == 400 and landline.error["code"] == "no_reachable_contact"
    both = await device.request(
        "PUT",
        "/coffre/api/vault/contact",
        json={"phone": "01 44 55 66 77", "email": "Camille@Exemple.fr"},
    )
    assert both.status == 200
    async with running.sessionmaker() as db:
        vault = await db.scalar(select(Vault))
        assert vault is not None and vault.contact_email == "Camille@exemple.fr"
    bad = await device.request("PUT", "/coffre/api/vault/contact", json={"email": "nope"})
    assert bad.status == 400 and bad.error["field"] == "email"
    answer = await device.request("PUT", "/coffre/api/vault/contact", json={})
    assert answer.status == 200 and answer.body["vault"]["has_contact"] is False


async def test_page_config_names_the_api_and_limits(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """The page hands its script the API's URLs (from the route names), the limits, the
    categories with their French labels and the base of the recovery sheet's QR code."""
    config = await page_config(http, running.url("/coffre"))
    assert config["api"] == {
        "challenge": "/coffre/api/challenge",
        "vault": "/coffre/api/vault",
        "contact": "/coffre/api/vault/contact",
        "recover": "/coffre/api/recover",
        "documents": "/coffre/api/documents",
        "document": "/coffre/api/documents/{document_id}",
        "blob": "/coffre/api/documents/{document_id}/blob",
    }
    assert config["limits"]["max_document_bytes"] == 10 * 1024 * 1024
    assert config["limits"]["max_bytes"] == 200 * 1024 * 1024
    assert {"code": "impots", "label": "Impôts"} in config["categories"]
    assert len(config["categories"]) == 8
    assert config["qr_base"] == f"{running.base_url}/coffre"
    assert config["context"] is None


# -- Orphans --------------------------------------------------------------------------------------


async def test_orphan_blobs_older_than_a_day_are_removed(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """Chunks and files with no document row (a crashed upload) go after a day; a document's
    blob and a fresh upload in progress stay."""
    device = await new_vault(running, http)
    kept = encrypt_document(device.keys, document_with(2 * KB))
    assert (await device.upload(kept)).status == 201
    storages = vault_storage.Storages(running.settings, running.sessionmaker)

    async def chunks() -> Any:
        yield b"x" * 1000

    old_file, new_file, old_chunk = (str(uuid.uuid4()) for _ in range(3))
    await storages.files.write(old_file, chunks(), 10_000)
    await storages.files.write(new_file, chunks(), 10_000)
    await storages.database.write(old_chunk, chunks(), 10_000)
    stale = (utcnow() - timedelta(days=2)).timestamp()
    os.utime(storages.files.path(old_file), (stale, stale))
    if storages.files.path(kept.id).exists():  # a document's blob stays, however old
        os.utime(storages.files.path(kept.id), (stale, stale))
    temp = storages.files.path(old_file).parent / f".tmp-{old_file}-dead"
    temp.write_bytes(b"partial")
    os.utime(temp, (stale, stale))
    async with running.sessionmaker.begin() as db:
        await db.execute(
            update(VaultBlobChunk)
            .where(VaultBlobChunk.document_id == old_chunk)
            .values(created_at=utcnow() - timedelta(days=2))
        )
    async with running.sessionmaker.begin() as db:
        removed = await vault_storage.remove_orphans(db, running.settings)
    assert removed == 3
    names = {p.name for p in await stored_files(running.settings)}
    assert old_file not in names and temp.name not in names and new_file in names
    async with running.sessionmaker() as db:
        assert old_chunk not in set(await db.scalars(select(VaultBlobChunk.document_id)))
    assert await device.read(kept.id) == document_with(2 * KB)


def test_auto_storage_is_the_database_on_postgresql_and_files_on_sqlite(
    settings: Settings,
) -> None:
    """VAULT_STORAGE=auto follows the database; an explicit choice wins."""
    pg = settings.model_copy(update={"database_url": "postgresql+asyncpg://u@h/db"})
    lite = settings.model_copy(update={"database_url": "sqlite+aiosqlite:///x.sqlite3"})
    assert vault_storage.current_name(pg) == "database"
    assert vault_storage.current_name(lite) == "files"
    forced = lite.model_copy(update={"vault_storage": "database"})
    assert vault_storage.current_name(forced) == "database"


def test_recovery_code_parsing_catches_typing_mistakes() -> None:
    """Spaces, dashes and case are ignored, O/I/L read as 0/1; the check character catches a
    wrong character (31 times in 32: it has 5 bits), so most single typos are caught."""
    code = RecoveryCode.new()
    assert RecoveryCode.parse(code.text).raw == code.raw
    assert RecoveryCode.parse(code.text.lower().replace("-", " ")).raw == code.raw
    fixed = RecoveryCode(bytes(range(15)))
    # What the vault page's formatCode (web/static/js/vault-core.js) writes for these bytes.
    assert fixed.text == "000G4-0R40M-30E20-9185G-R38EG"
    assert RecoveryCode.parse("OOOg4 oR4Om 3Oe2O 9I85g r38eg").raw == fixed.raw
    typos = 0
    caught = 0
    for position in range(24):
        chars = list(fixed.text.replace("-", ""))
        chars[position] = "Z" if chars[position] != "Z" else "Y"
        typos += 1
        try:
            RecoveryCode.parse("".join(chars))
        except ValueError:
            caught += 1
    assert caught >= typos - 2, (caught, typos)


async def test_new_vault_helper(running: Running, http: aiohttp.ClientSession) -> None:
    made: NewVault = await create_vault(http, running.base_url)
    assert made.answer.body["vault"]["usage"]["documents"] == 0
    assert made.answer.body["vault"]["share_facts"] is True
    assert made.answer.body["vault"]["expires_after_months"] == 24


@pytest.mark.parametrize("vault_settings", [{"budget_vault_upload_mb": "3/day"}])
async def test_past_the_global_upload_budget_new_documents_wait_and_stored_ones_stay(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """BUDGET_VAULT_UPLOAD_MB counts MB stored by every client together (each document costs at
    least 1 MB of it): once spent, an upload is refused with a French 503 before a byte is
    stored, and the documents already kept are still read."""
    first = await new_vault(running, http)
    second = await new_vault(running, http)
    kept = []
    for device in (first, second, first):
        document = encrypt_document(device.keys, document_with(50 * KB))
        assert (await device.upload(document)).status == 201
        kept.append((device, document))
    answer = await second.upload(encrypt_document(second.keys, document_with(50 * KB)))
    assert answer.status == 503, answer
    assert answer.error["code"] == "vault_busy"
    assert answer.error["message"].startswith("Le coffre-fort reçoit beaucoup de documents")
    assert await count(running, VaultDocument) == 3
    for device, document in kept:
        assert await device.read(document.id) == document_with(50 * KB)
