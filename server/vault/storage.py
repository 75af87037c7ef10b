"""Where the vault's ciphertext lives: files under DATA_DIR/vault, or rows of ``vault_blobs``.

``VAULT_STORAGE`` picks the backend new documents are written to (``auto``: ``database`` on
PostgreSQL, where several nodes share it, ``files`` on SQLite, a single node). Each document row
records the backend that holds its blob (``VaultDocument.storage``), so that changing the setting
keeps older documents readable; reads and deletes go to the document's own backend.

Both backends stream: a write takes the upload chunk by chunk and stops as soon as it passes its
limit, leaving nothing behind; a read hands out one chunk at a time. A blob is never replaced:
writing an id that already has one fails (``BlobExists``), so a client cannot overwrite another
document by reusing its id. What a crash leaves (a temporary file, chunks of an upload whose row
never committed) is removed by ``remove_orphans`` a day later.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from sqlalchemy import delete, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.settings import Settings
from server.store.models import VaultBlobChunk, VaultDocument, utcnow

StorageName = Literal["files", "database"]
STORAGE_NAMES: tuple[StorageName, ...] = ("files", "database")
CHUNK_BYTES = 256 * 1024  # one row of vault_blobs; one read of a file
ORPHAN_AGE = timedelta(days=1)  # an upload in progress is never that old
_TEMP_PREFIX = ".tmp-"


class BlobTooLarge(Exception):
    """The upload passed its limit; nothing of it was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"blob larger than {limit} bytes")
        self.limit = limit


class BlobExists(Exception):
    """A blob is already stored under this document id; it was left untouched."""


class BlobMissing(Exception):
    """No blob is stored under this document id."""


class Storage(Protocol):
    """A backend for the ciphertext of documents."""

    name: StorageName

    async def write(self, document_id: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """Store the blob of ``document_id`` from ``chunks``; its size. ``BlobTooLarge`` past
        ``limit`` bytes, ``BlobExists`` if the id has one: nothing is left behind either way."""
        ...

    def read(self, document_id: str) -> AsyncGenerator[bytes, None]:
        """The blob, chunk by chunk (``BlobMissing`` before the first chunk if there is none)."""
        ...

    async def delete(self, document_ids: Iterable[str]) -> None:
        """Remove these blobs (those already gone are ignored)."""
        ...


# -- Files ----------------------------------------------------------------------------------------


class FileStorage:
    """One file per document under ``root/<first 2 hex chars of the id>/<id>``, written to a
    temporary file in the same folder, flushed to disk, then linked into place (atomic, and
    never over an existing blob) so that a reader sees a whole blob or none."""

    name: StorageName = "files"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, document_id: str) -> Path:
        """Where the blob of a document lives (ids are UUIDs: checked by the caller)."""
        return self.root / document_id[:2] / document_id

    async def write(self, document_id: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """See ``Storage.write``."""
        final = self.path(document_id)
        folder = final.parent
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        if await asyncio.to_thread(final.exists):
            raise BlobExists(document_id)
        temp = folder / f"{_TEMP_PREFIX}{document_id}-{secrets.token_hex(4)}"
        handle = await asyncio.to_thread(open, temp, "xb")
        size = 0
        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise BlobTooLarge(limit)
                    # A write into the page cache takes microseconds: no thread hop per chunk.
                    handle.write(chunk)
                await asyncio.to_thread(_flush_to_disk, handle)
            finally:
                handle.close()
            try:
                # link() fails if the name exists, where rename() would replace another blob.
                await asyncio.to_thread(os.link, temp, final)
            except FileExistsError:
                raise BlobExists(document_id) from None
            await asyncio.to_thread(_sync_folder, folder)
        finally:
            await asyncio.to_thread(temp.unlink, missing_ok=True)
        return size

    async def read(self, document_id: str) -> AsyncGenerator[bytes, None]:
        """See ``Storage.read``."""
        try:
            handle = await asyncio.to_thread(open, self.path(document_id), "rb")
        except FileNotFoundError:
            raise BlobMissing(document_id) from None
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    async def delete(self, document_ids: Iterable[str]) -> None:
        """See ``Storage.delete``."""
        paths = [self.path(document_id) for document_id in document_ids]
        if paths:
            await asyncio.to_thread(_unlink_all, paths)

    async def remove_orphans(self, db: AsyncSession, before: datetime) -> int:
        """Remove files older than ``before`` that no document row names (and temporary files
        of uploads that never finished); how many."""
        candidates = await asyncio.to_thread(_old_files, self.root, before.timestamp())
        if not candidates:
            return 0
        orphans: list[Path] = []
        names = list(candidates)
        for start in range(0, len(names), 500):
            batch = names[start : start + 500]
            kept = set(
                await db.scalars(select(VaultDocument.id).where(VaultDocument.id.in_(batch)))
            )
            orphans.extend(path for name in batch if name not in kept for path in candidates[name])
        await asyncio.to_thread(_unlink_all, orphans)
        return len(orphans)


def _flush_to_disk(handle: object) -> None:
    handle.flush()  # type: ignore[attr-defined]
    os.fsync(handle.fileno())  # type: ignore[attr-defined]


def _sync_folder(folder: Path) -> None:
    """Make the new name durable too (the folder's entry), not only the file's bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _old_files(root: Path, before: float) -> dict[str, list[Path]]:
    """Files under ``root`` last changed before ``before``, by the document id they belong to."""
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            try:
                if path.stat().st_mtime >= before:
                    continue
            except FileNotFoundError:
                continue
            name = path.name
            if name.startswith(_TEMP_PREFIX):  # ".tmp-<id>-<random>": never a finished blob
                found.setdefault("", []).append(path)
                continue
            found.setdefault(name, []).append(path)
    return found


# -- Database -------------------------------------------------------------------------------------


class DatabaseStorage:
    """Rows of ``vault_blobs`` of ``CHUNK_BYTES`` each, for deployments of several nodes.

    Each chunk is written in its own short transaction: an upload from a slow phone may take
    minutes, and no transaction (nor SQLite's single writer lock) is held meanwhile. The document
    row is inserted afterwards by the caller; until then the chunks are orphans that the upload
    removes itself on failure, or ``remove_orphans`` after a crash."""

    name: StorageName = "database"

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def write(self, document_id: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """See ``Storage.write``."""
        size = 0
        seq = 0
        buffer = bytearray()
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise BlobTooLarge(limit)
                buffer += chunk
                while len(buffer) >= CHUNK_BYTES:
                    await self._insert(document_id, seq, bytes(buffer[:CHUNK_BYTES]))
                    del buffer[:CHUNK_BYTES]
                    seq += 1
            if buffer or seq == 0:
                await self._insert(document_id, seq, bytes(buffer))
        except BlobExists:
            raise  # chunk 0 belongs to another upload: leave it alone
        except BaseException:
            if seq > 0 or buffer:
                await asyncio.shield(self.delete([document_id]))
            raise
        return size

    async def _insert(self, document_id: str, seq: int, data: bytes) -> None:
        try:
            async with self.sessionmaker.begin() as db:
                db.add(VaultBlobChunk(document_id=document_id, seq=seq, data=data))
        except IntegrityError:
            if seq == 0:  # the id has a blob already (only its first chunk can collide)
                raise BlobExists(document_id) from None
            raise

    async def read(self, document_id: str) -> AsyncGenerator[bytes, None]:
        """See ``Storage.read``: one chunk per query, no connection held between chunks."""
        seq = 0
        while True:
            async with self.sessionmaker() as db:
                data = await db.scalar(
                    select(VaultBlobChunk.data).where(
                        VaultBlobChunk.document_id == document_id, VaultBlobChunk.seq == seq
                    )
                )
            if data is None:
                if seq == 0:
                    raise BlobMissing(document_id)
                return
            if data:
                yield bytes(data)
            seq += 1

    async def delete(self, document_ids: Iterable[str]) -> None:
        """See ``Storage.delete`` (its own transaction)."""
        ids = list(document_ids)
        if ids:
            async with self.sessionmaker.begin() as db:
                await delete_chunks(db, ids)


async def delete_chunks(db: AsyncSession, document_ids: list[str]) -> None:
    """Delete the chunks of these documents in the caller's transaction."""
    for start in range(0, len(document_ids), 500):
        batch = document_ids[start : start + 500]
        await db.execute(delete(VaultBlobChunk).where(VaultBlobChunk.document_id.in_(batch)))


# -- Choosing, deleting, cleaning -----------------------------------------------------------------


def files_root(settings: Settings) -> Path:
    """The folder of the ``files`` backend."""
    return settings.data_dir / "vault"


def current_name(settings: Settings) -> StorageName:
    """The backend new documents go to: VAULT_STORAGE, ``auto`` resolved by the database."""
    if settings.vault_storage != "auto":
        return settings.vault_storage
    backend = make_url(settings.database_url).get_backend_name()
    return "database" if backend == "postgresql" else "files"


class Storages:
    """Both backends of a deployment: ``current`` for new documents, ``of`` for existing ones."""

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.files = FileStorage(files_root(settings))
        self.database = DatabaseStorage(sessionmaker)
        self.current: Storage = self.of(current_name(settings))

    def of(self, name: str) -> Storage:
        """The backend a document row names."""
        if name == "files":
            return self.files
        if name == "database":
            return self.database
        raise ValueError(f"unknown vault storage {name!r}")


async def delete_blobs(
    db: AsyncSession, settings: Settings, blobs: Iterable[tuple[str, str]]
) -> None:
    """Delete the blobs of (document id, storage name) pairs: chunks in the caller's transaction,
    files at once. Called after the rows' DELETE ran, so a failed delete keeps the files; if the
    commit then fails, the person's deletion is simply done again (missing files are ignored)."""
    by_storage: dict[str, list[str]] = {}
    for document_id, storage in blobs:
        by_storage.setdefault(storage, []).append(document_id)
    if by_storage.get("database"):
        await delete_chunks(db, by_storage["database"])
    if by_storage.get("files"):
        await FileStorage(files_root(settings)).delete(by_storage["files"])
    unknown = set(by_storage) - set(STORAGE_NAMES)
    if unknown:
        raise ValueError(f"unknown vault storage {sorted(unknown)!r}")


async def remove_orphans(db: AsyncSession, settings: Settings, now: datetime | None = None) -> int:
    """Blobs of both backends that no document row names, older than a day (crashed uploads,
    a node stopped mid-write): removed, in the caller's transaction for chunks. How many (files,
    and documents' worth of chunks). For the retention purge."""
    before = (now or utcnow()) - ORPHAN_AGE
    orphan_ids = list(
        await db.scalars(
            select(VaultBlobChunk.document_id)
            .where(VaultBlobChunk.created_at < before)
            .where(~VaultBlobChunk.document_id.in_(select(VaultDocument.id)))
            .distinct()
        )
    )
    await delete_chunks(db, orphan_ids)
    files = await FileStorage(files_root(settings)).remove_orphans(db, before)
    return len(orphan_ids) + files
