"""The person's vault page in real Chromium (Pixel 7), against the real server and database:
create a vault, add a PDF and a camera photo, check that nothing readable reached the server,
restore on other devices (typed code, the recovery sheet's QR URL), open and download byte for
byte, wrong codes, a tampered blob, a full vault, deletions, the zip export, axe-core on every
step (server/vault/DESIGN.md, issue 15)."""

from __future__ import annotations

import io
import json
import re
import secrets
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Download, FilePayload, Page, expect
from sqlalchemy import func, select

from bench.page_weight import GZIP, TARGET_BYTES, page_first_load
from bench.vault_page_upload import measure
from server.settings import Settings
from server.store.models import Base, Vault, VaultBlobChunk, VaultDocument
from tests.browser import Chromium, assert_accessible, chromium_with_devices
from tests.conftest import Account, Running, serve
from tests.test_browser import log_in
from tests.test_page_load import Held
from tests.vault_client import RecoveryCode

WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)
PHONE = "Pixel 7"
TAMPERED = "Ce document a été abîmé ou modifié : il ne peut pas être ouvert."
VAULT_TABLES = ("vaults", "vault_documents", "vault_blobs", "vault_events", "vault_grants")


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    async with chromium_with_devices() as launched:
        yield launched


# -- Files to add ---------------------------------------------------------------------------------


def pdf_with(marker: str) -> bytes:
    """A small valid PDF whose page shows `marker` (an uncompressed content stream: the
    marker's bytes are in the file as they are)."""
    content = f"BT /F1 24 Tf 72 720 Td ({marker}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def png(width: int = 320, height: int = 240) -> bytes:
    """A colourful PNG, as a phone's camera would hand a picture to the page."""
    rows = b"".join(
        b"\x00"
        + bytes(
            v for x in range(width) for v in (x * 255 // width, y * 255 // height, (x ^ y) & 255)
        )
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker."""
    at = 2
    while at < len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + length
    raise AssertionError("no start-of-frame marker")


# -- What the server holds ------------------------------------------------------------------------


def files_bytes(running: Running) -> list[bytes]:
    """The SQLite file with its WAL and SHM (when SQLite), and every file under DATA_DIR/vault."""
    parts: list[bytes] = []
    url = running.settings.database_url
    if url.startswith("sqlite"):
        db_file = Path(url.split("///", 1)[1])
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(f"{db_file}{suffix}")
            if path.exists():
                parts.append(path.read_bytes())
    return parts + [path.read_bytes() for path in blob_files(running)]


async def stored_bytes(running: Running) -> bytes:
    """Every byte the server keeps about vaults: the database (the SQLite files, or the vault
    tables' rows on PostgreSQL) and every file under DATA_DIR/vault."""
    parts = files_bytes(running)
    if not running.settings.database_url.startswith("sqlite"):
        async with running.sessionmaker() as db:
            for name in VAULT_TABLES:
                for row in (await db.execute(select(Base.metadata.tables[name]))).all():
                    for value in row:
                        if isinstance(value, bytes | bytearray | memoryview):
                            parts.append(bytes(value))
                        elif value is not None:
                            parts.append(str(value).encode())
    return b"\n".join(parts)


def blob_files(running: Running) -> list[Path]:
    vault_dir = running.settings.data_dir / "vault"
    return sorted(p for p in vault_dir.rglob("*") if p.is_file()) if vault_dir.exists() else []


async def counts(running: Running) -> dict[str, int]:
    async with running.sessionmaker() as db:
        return {
            "vaults": await db.scalar(select(func.count()).select_from(Vault)) or 0,
            "documents": await db.scalar(select(func.count()).select_from(VaultDocument)) or 0,
            "chunks": await db.scalar(select(func.count()).select_from(VaultBlobChunk)) or 0,
            "chunked": await db.scalar(
                select(func.count(func.distinct(VaultBlobChunk.document_id)))
            )
            or 0,
            "files": len(blob_files(running)),
        }


async def tamper(running: Running, document_id: str) -> None:
    """Flip one byte of a stored ciphertext, wherever the storage keeps it."""
    async with running.sessionmaker.begin() as db:
        document = await db.get_one(VaultDocument, document_id)
        storage = document.storage
        if storage == "database":
            chunk = await db.scalar(
                select(VaultBlobChunk).where(VaultBlobChunk.document_id == document_id).limit(1)
            )
            assert chunk is not None
            data = bytearray(chunk.data)
            data[40] ^= 0x01
            chunk.data = bytes(data)
            return
    flip_file_byte(running, document_id)


def flip_file_byte(running: Running, document_id: str) -> None:
    (path,) = [p for p in blob_files(running) if p.name == document_id]
    data = bytearray(path.read_bytes())
    data[40] ^= 0x01
    path.write_bytes(bytes(data))


# -- Driving the page -----------------------------------------------------------------------------


async def at_step(page: Page, step: str) -> None:
    await expect(page.locator("body")).to_have_attribute("data-vault-step", step)


async def open_page(
    chrome: Chromium, running: Running, errors: list[str], path: str = "/coffre"
) -> Page:
    page = await chrome.page(PHONE, errors=errors)
    await page.goto(running.url(path))
    return page


async def create_vault(page: Page, share_facts: bool = False, check: bool = True) -> str:
    """From the intro to the documents: warning, creation, recovery sheet, the group retyped,
    no personne de confiance. Returns the recovery code shown."""
    await at_step(page, "intro")
    if check:
        await assert_accessible(page, "intro")
    await page.click("#go-create")
    await at_step(page, "create")
    await expect(page.locator("#share-facts")).not_to_be_checked()
    if check:
        await assert_accessible(page, "create")
    if share_facts:
        await page.check("#share-facts")
    await page.click("#create-button")
    await at_step(page, "sheet")
    code = (await page.locator("#sheet-code").text_content() or "").strip()
    assert RecoveryCode.parse(code).text == code
    await expect(page.locator("#sheet-qr svg")).to_be_visible()
    if check:
        await assert_accessible(page, "recovery sheet")
    await page.click("#sheet-kept")
    await at_step(page, "check")
    label = await page.locator("#check-label").text_content() or ""
    group = int(label.split("n° ")[1].split(" ")[0])
    await page.fill("#check-group", "XXXXX")
    await page.click("#check-form button[type=submit]")
    await expect(page.locator("#check-error")).to_be_visible()
    if check:
        await assert_accessible(page, "code check, wrong group")
    await page.fill("#check-group", code.split("-")[group - 1].lower())
    await page.click("#check-form button[type=submit]")
    await at_step(page, "trustee")
    if check:
        await assert_accessible(page, "personne de confiance offer")
    await page.click("#trustee-skip")
    await at_step(page, "docs")
    await expect(page.locator("#docs-empty")).to_be_visible()
    if check:
        await assert_accessible(page, "documents, empty")
    return code


async def add_document(
    page: Page,
    name: str,
    data: bytes,
    mime: str,
    category: str,
    *,
    photo: bool = False,
    expires_on: str | None = None,
    expect_error: str | None = None,
) -> None:
    before = await page.locator("#docs-list > li").count()
    target = "#photo-input" if photo else "#file-input"
    file_name = "photo.png" if photo else f"{name}.pdf"
    await page.set_input_files(
        target, files=[FilePayload(name=file_name, mimeType=mime, buffer=data)]
    )
    await at_step(page, "add")
    await page.select_option("#add-category", category)
    await page.fill("#add-name", name)
    if expires_on:
        await page.fill("#add-expiry", expires_on)
    await page.click("#add-button")
    if expect_error:
        await expect(page.locator("#add-error")).to_have_text(expect_error)
        return
    await at_step(page, "docs")
    await expect(page.locator("#docs-list > li")).to_have_count(before + 1)


def doc_item(page: Page, name: str) -> Any:
    return page.locator("#docs-list > li", has=page.locator("h3", has_text=name))


async def opened_bytes(page: Page, name: str) -> bytes:
    """Open a document in the page and read what the page shows: the PDF link's or the
    image's blob URL, saved through the viewer's download link (the same URL: the page's CSP
    lets no script fetch a blob URL)."""
    await doc_item(page, name).get_by_role("button", name="Ouvrir").click()
    await expect(page.locator("#viewer")).to_be_visible()
    await expect(page.locator("#viewer-title")).to_have_text(name)
    pdf = page.locator("#viewer-pdf")
    if await pdf.count():
        url = await pdf.get_attribute("href")
    else:
        url = await page.locator("#viewer-body img").get_attribute("src")
    assert url and url.startswith("blob:")
    assert await page.locator("#viewer-download").get_attribute("href") == url
    async with page.expect_download() as info:
        await page.click("#viewer-download")
    return read(await (await info.value).path())


async def downloaded_bytes(page: Page, name: str) -> tuple[str, bytes]:
    async with page.expect_download() as info:
        await doc_item(page, name).get_by_role("button", name="Télécharger").click()
    download = await info.value
    return download.suggested_filename, read(await download.path())


def read(path: Path) -> bytes:
    return path.read_bytes()


# -- Tests ----------------------------------------------------------------------------------------


async def test_vault_created_filled_and_restored_with_the_server_holding_only_ciphertext(
    chrome: Chromium, running: Running
) -> None:
    """A phone creates a vault and adds a PDF holding a marker and a camera photo; the marker
    and the photo's bytes appear nowhere on the server; two other devices restore the vault,
    one with the typed code, one with the recovery sheet's QR URL, and get the same bytes."""
    errors: list[str] = []
    marker = f"VPMARK{secrets.token_hex(8).upper()}"
    pdf = pdf_with(marker)
    page = await open_page(chrome, running, errors, "/")
    await page.get_by_role("link", name="Mon coffre-fort").click()
    code = await create_vault(page)
    assert await page.locator("#sheet-code").text_content() == "", "the code left the page"

    await page.click("#choose-file")  # the button opens the file input (nothing else)
    await add_document(
        page, "Attestation CAF", pdf, "application/pdf", "caf", expires_on="2031-05-20"
    )
    item = doc_item(page, "Attestation CAF")
    await expect(item).to_contain_text("CAF")
    await expect(item).to_contain_text("Valable jusqu'au 20 mai 2031")
    await add_document(page, "Ma carte", png(), "image/png", "identite", photo=True)
    await assert_accessible(page, "documents, two")

    assert await opened_bytes(page, "Attestation CAF") == pdf
    await assert_accessible(page, "document open (PDF)")
    photo = await opened_bytes(page, "Ma carte")
    assert photo[:3] == b"\xff\xd8\xff", "the camera photo is sent as a JPEG"
    await assert_accessible(page, "document open (photo)")

    held = await stored_bytes(running)
    assert held, "the server stores the vault somewhere"
    for needle in (marker.encode(), marker.encode().hex().encode(), photo[200:264], pdf[:64]):
        assert needle not in held
    assert (await counts(running))["documents"] == 2

    # Another phone: the code typed in lower case with spaces instead of dashes.
    other = await open_page(chrome, running, errors)
    await at_step(other, "intro")
    await other.click("#go-restore")
    await at_step(other, "restore")
    await assert_accessible(other, "restore")
    await other.fill("#restore-code", code.replace("-", " ").lower())
    await other.click("#restore-button")
    await at_step(other, "docs")
    await expect(other.locator("#docs-list > li")).to_have_count(2)
    name, data = await downloaded_bytes(other, "Attestation CAF")
    assert (name, data) == ("Attestation CAF.pdf", pdf)
    assert await opened_bytes(other, "Ma carte") == photo

    # A third: the QR code's URL; the code is read from the fragment, then removed.
    third = await open_page(chrome, running, errors, f"/coffre#code={code}")
    await at_step(third, "docs")
    assert "#" not in third.url and code not in third.url
    assert await opened_bytes(third, "Attestation CAF") == pdf
    # The device keeps the vault: a reload opens it without the code.
    await third.reload()
    await at_step(third, "docs")
    await expect(third.locator("#docs-list > li")).to_have_count(2)

    # A borrowed computer forgets the vault: its keys leave the browser, the documents stay.
    await third.click("#go-settings")
    await third.click("#go-forget")
    await at_step(third, "forget")
    await assert_accessible(third, "forget on this device, confirmation")
    await third.click("#forget-yes")
    await at_step(third, "forgotten")
    await assert_accessible(third, "forgotten on this device")
    await third.reload()
    await at_step(third, "intro")
    assert (
        await third.evaluate(
            """() => new Promise((resolve) => {
          const open = indexedDB.open("vp-vault");
          open.onsuccess = () => {
            const db = open.result;
            const names = [...db.objectStoreNames];
            if (!names.length) { db.close(); resolve(0); return; }
            const count = db.transaction(names, "readonly").objectStore(names[0]).count();
            count.onsuccess = () => { db.close(); resolve(count.result); };
          };
        })"""
        )
        == 0
    ), "the keys are gone from this browser"
    assert (await counts(running))["documents"] == 2
    await other.reload()
    await at_step(other, "docs")
    await expect(other.locator("#docs-list > li")).to_have_count(2)
    assert errors == []


async def test_documents_renamed_tampered_deleted_exported_and_the_vault_erased(
    chrome: Chromium, running: Running
) -> None:
    """Rename; a flipped byte of a stored blob gives the French error and shows nothing; one
    document deleted (row and blob gone); the zip export holds every document byte for byte;
    the contact for notices; the vault deleted (rows and blobs gone, the device forgets it)."""
    errors: list[str] = []
    page = await open_page(chrome, running, errors)
    await create_vault(page, share_facts=True, check=False)
    first, second = pdf_with("first"), pdf_with("second")
    await add_document(page, "Avis impots", first, "application/pdf", "impots")
    await add_document(page, "Ordonnance", second, "application/pdf", "sante")
    await add_document(page, "Photo", png(2600, 40), "image/png", "autre", photo=True)
    photo = await opened_bytes(page, "Photo")
    assert jpeg_size(photo) == (2400, 37), "a camera photo is downscaled to 2400 px at most"
    async with running.sessionmaker() as db:
        rows = {d.category: d for d in await db.scalars(select(VaultDocument))}
    assert set(rows) == {"impots", "sante", "autre"}, "share_facts: categories in clear"

    # Offline: said plainly, nothing else changes; back online, the list comes back.
    await page.context.set_offline(True)
    await doc_item(page, "Photo").get_by_role("button", name="Ouvrir").click()
    await expect(page.locator("#docs-error")).to_contain_text("La connexion ne marche pas")
    await page.click("#go-settings")
    await (
        page.locator("#step-settings").get_by_role("button", name="Retour à mes documents").click()
    )
    await expect(page.locator("#docs-retry")).to_be_visible()
    await assert_accessible(page, "documents, offline")
    await page.context.set_offline(False)
    await page.click("#docs-retry")
    await expect(page.locator("#docs-retry")).to_be_hidden()
    await expect(page.locator("#docs-list > li")).to_have_count(3)
    errors[:] = [e for e in errors if "ERR_INTERNET_DISCONNECTED" not in e]

    # Rename, with a new type and a date.
    await doc_item(page, "Avis impots").get_by_role("button", name="Renommer").click()
    await at_step(page, "edit")
    await assert_accessible(page, "rename")
    await page.fill("#edit-name", "Avis d'impôt 2026")
    await page.fill("#edit-expiry", "2027-12-31")
    await page.click("#edit-form button[type=submit]")
    await at_step(page, "docs")
    await expect(doc_item(page, "Avis d'impôt 2026")).to_contain_text("31 décembre 2027")

    # Tampered: the error, and nothing shown or downloaded.
    await tamper(running, rows["sante"].id)
    await doc_item(page, "Ordonnance").get_by_role("button", name="Ouvrir").click()
    await expect(page.locator("#docs-error")).to_have_text(TAMPERED)
    await expect(page.locator("#viewer")).to_be_hidden()
    await expect(page.locator("#viewer-body > *")).to_have_count(0)
    await assert_accessible(page, "documents, tampered error")
    downloads: list[Download] = []
    page.on("download", lambda download: downloads.append(download))
    await doc_item(page, "Ordonnance").get_by_role("button", name="Télécharger").click()
    await expect(page.locator("#docs-error")).to_have_text(TAMPERED)

    # Delete one: asked first, then the row and its blob are gone.
    await doc_item(page, "Ordonnance").get_by_role("button", name="Supprimer").click()
    await at_step(page, "remove")
    await expect(page.locator("#remove-text")).to_contain_text("Ordonnance")
    await assert_accessible(page, "delete a document")
    await page.click("#remove-yes")
    await at_step(page, "docs")
    await expect(page.locator("#docs-list > li")).to_have_count(2)
    assert [d for d in downloads if "Ordonnance" in d.suggested_filename] == []
    async with running.sessionmaker() as db:
        assert await db.get(VaultDocument, rows["sante"].id) is None
        chunks = await db.scalar(
            select(func.count())
            .select_from(VaultBlobChunk)
            .where(VaultBlobChunk.document_id == rows["sante"].id)
        )
    assert chunks == 0
    assert not [p for p in blob_files(running) if p.name == rows["sante"].id]

    # Settings: usage, history, contact, export.
    await page.click("#go-settings")
    await at_step(page, "settings")
    await expect(page.locator("#usage-text")).to_contain_text("2 documents sur 100")
    await expect(page.locator("#events-list")).to_contain_text("vous avez créé votre coffre-fort")
    await assert_accessible(page, "settings")
    await page.fill("#contact-phone", "06 12 34 56 78")
    await page.click("#contact-form button[type=submit]")
    await expect(page.locator("#settings-status")).to_contain_text("C'est noté")
    async with running.sessionmaker() as db:
        vault = await db.scalar(select(Vault))
        assert vault is not None and vault.contact_phone
    async with page.expect_download() as info:
        await page.click("#export")
    download = await info.value
    assert download.suggested_filename.endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(read(await download.path()))) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    assert entries == {"Impôts/Avis d'impôt 2026.pdf": first, "Autre/Photo.jpg": photo}
    await expect(page.locator("#export-status")).to_contain_text("téléchargé")

    # The whole vault: asked first, then gone for everyone, and this device forgets it.
    await page.click("#go-erase")
    await at_step(page, "erase")
    await assert_accessible(page, "delete the vault")
    await page.click("#erase-yes")
    await at_step(page, "erased")
    await assert_accessible(page, "vault deleted")
    assert await counts(running) == dict.fromkeys(
        ("vaults", "documents", "chunks", "chunked", "files"), 0
    )
    await page.goto(running.url("/coffre"))
    await at_step(page, "intro")
    assert errors == []


async def test_wrong_codes_are_told_apart_and_a_typo_never_reaches_the_server(
    chrome: Chromium, running: Running
) -> None:
    """A typing mistake is said by the page without asking the server; an unknown code gets
    the server's 404 message; a browser without WebCrypto storage is told plainly."""
    errors: list[str] = []
    known = await open_page(chrome, running, errors)
    code = await create_vault(known, check=False)
    requests: list[str] = []
    page = await chrome.page(PHONE, errors=errors, requests=requests)
    await page.goto(running.url("/coffre"))
    await at_step(page, "intro")
    await page.click("#go-restore")
    await at_step(page, "restore")
    last = code[-1]
    typo = code[:-1] + ("0" if last != "0" else "1")
    await page.fill("#restore-code", typo)
    await page.click("#restore-button")
    await expect(page.locator("#restore-error")).to_have_text(
        "Il y a une faute de frappe dans le code. Vérifiez chaque caractère."
    )
    await page.fill("#restore-code", code[:12])
    await page.click("#restore-button")
    await expect(page.locator("#restore-error")).to_contain_text("25 caractères")
    assert not [url for url in requests if "/coffre/api/recover" in url]
    await assert_accessible(page, "restore, typing mistake")

    unknown = RecoveryCode.new().text
    await page.fill("#restore-code", unknown)
    await page.click("#restore-button")
    error = page.locator("#restore-error")
    await expect(error).to_be_visible()
    message = await error.text_content() or ""
    assert "faute de frappe" not in message and len(message) > 20
    assert [url for url in requests if "/coffre/api/recover" in url]
    await at_step(page, "restore")
    # The 404's console line is the one expected.
    errors[:] = [e for e in errors if "/coffre/api/recover" not in e and "404" not in e]

    # The QR code scanned in the page, where the browser has a BarcodeDetector (stood in for
    # here: headless Chromium on Linux has none; the camera is Chromium's fake one).
    scanner = await chrome.page(PHONE, errors=errors)
    qr_text = json.dumps(f"{running.url('/coffre')}#code={code}")
    await scanner.add_init_script(
        "window.BarcodeDetector = class { async detect(video) {"
        f" return video.videoWidth ? [{{ rawValue: {qr_text} }}] : []; }} }};"
    )
    await scanner.goto(running.url("/coffre"))
    await scanner.click("#go-restore")
    await scanner.click("#scan-qr")
    await at_step(scanner, "docs")
    await expect(scanner.locator("#docs-status")).to_have_text(
        "Votre coffre-fort est ouvert sur cet appareil."
    )

    # Before its script is there, the page says it is getting ready (nothing works yet).
    slow = await chrome.page(PHONE, errors=errors)
    held = await Held.on(slow, r"/static/js/vault\.js")
    await slow.goto(running.url("/coffre"), wait_until="commit")
    await held.requested.wait()
    await expect(slow.locator("#step-loading")).to_be_visible()
    await expect(slow.locator("#step-intro")).to_be_hidden()
    await assert_accessible(slow, "getting ready")
    held.release.set()
    await at_step(slow, "intro")

    bare = await chrome.page(PHONE, errors=errors)
    await bare.add_init_script("Object.defineProperty(window, 'indexedDB', { value: undefined });")
    await bare.goto(running.url("/coffre"))
    await at_step(bare, "unsupported")
    await assert_accessible(bare, "unsupported browser")
    assert errors == []


async def test_a_full_vault_and_a_too_large_document_are_refused_in_french(
    chrome: Chromium, settings: Settings
) -> None:
    """With 1 MB per vault and per document: a document over the limit is refused before it is
    sent; the one that does not fit any more gets the server's message; nothing is left."""
    small = settings.model_copy(update={"vault_max_mb": 1, "vault_max_document_mb": 1})
    async with serve(small) as running:
        errors: list[str] = []
        page = await open_page(chrome, running, errors)
        await create_vault(page, check=False)
        await add_document(
            page,
            "Trop gros",
            padded_pdf(1_200_000),
            "application/pdf",
            "autre",
            expect_error="Ce document est trop lourd (1,1 Mo). La limite est de 1 Mo.",
        )
        await assert_accessible(page, "add, too large")
        await page.click("#add-cancel")
        await at_step(page, "docs")
        await add_document(page, "Premier", padded_pdf(600_000), "application/pdf", "autre")
        await add_document(
            page,
            "Second",
            padded_pdf(600_000),
            "application/pdf",
            "autre",
            expect_error=(
                "Votre coffre-fort est plein (1 Mo). "
                "Supprimez un document pour en ajouter un autre."
            ),
        )
        await assert_accessible(page, "add, vault full")
        found = await counts(running)
        assert (found["documents"], found["files"] + found["chunked"]) == (1, 1)
        errors[:] = [e for e in errors if "413" not in e]
        assert errors == []


def padded_pdf(size: int) -> bytes:
    """A PDF of about `size` bytes (a comment of random text fills it)."""
    head = pdf_with("padded")
    return head + b"%" + secrets.token_hex(max(0, size - len(head)) // 2).encode() + b"\n"


def digits(text: str | None) -> str:
    return re.sub(r"\D", "", text or "")


async def test_a_personne_de_confiance_reopens_the_vault_on_a_new_phone_and_is_revoked(
    chrome: Chromium, running: Running, volunteer: Account
) -> None:
    """The person names a volunteer right after creating the vault (K still in memory); a new
    phone asks through them (the same check digits on both screens), gets the vault and the
    same document; the person sees the use, revokes, and names them again later, which asks
    the recovery code again."""
    errors: list[str] = []
    staff = await chrome.page(errors=errors)
    await log_in(staff, running, volunteer)
    await staff.goto(running.url("/coffre/confiance"))
    await staff.click("#make-key")
    await expect(staff.locator("#code-section")).to_be_visible()
    await staff.click("#make-code")
    await expect(staff.locator("#trustee-code")).not_to_be_empty()
    trustee_code = await staff.locator("#trustee-code").text_content() or ""

    person = await open_page(chrome, running, errors)
    await at_step(person, "intro")
    await person.click("#go-create")
    await person.click("#create-button")
    await at_step(person, "sheet")
    code = (await person.locator("#sheet-code").text_content() or "").strip()
    await person.click("#sheet-kept")
    label = await person.locator("#check-label").text_content() or ""
    group = int(label.split("n° ")[1].split(" ")[0])
    await person.fill("#check-group", code.split("-")[group - 1])
    await person.click("#check-form button[type=submit]")
    await at_step(person, "trustee")
    await expect(person.locator("#trustee-recovery-row")).to_be_hidden()
    await person.fill("#trustee-code", trustee_code)
    await person.click("#trustee-find")
    await expect(person.locator("#trustee-name")).to_have_text(volunteer.user.name)
    await assert_accessible(person, "personne de confiance, confirm")
    await person.fill("#trustee-label", "Mme Martin")
    await person.click("#trustee-give")
    await at_step(person, "docs")
    pdf = pdf_with("trusted")
    await add_document(person, "Titre de séjour", pdf, "application/pdf", "identite")

    phone = await open_page(chrome, running, errors)
    await phone.click("#go-restore")
    await phone.click("#go-pairing")
    await at_step(phone, "pairing")
    await expect(phone.locator("#pairing-code")).not_to_be_empty()
    await assert_accessible(phone, "pairing")
    pairing = digits(await phone.locator("#pairing-code").text_content())
    check = digits(await phone.locator("#pairing-check").text_content())
    assert len(pairing) == 6 and len(check) == 6
    # A reload while waiting keeps the same request (its private key stays on the phone).
    await phone.reload()
    await at_step(phone, "pairing")
    assert digits(await phone.locator("#pairing-code").text_content()) == pairing
    assert digits(await phone.locator("#pairing-check").text_content()) == check

    await staff.fill("#pairing-code", pairing)
    await staff.click("#find-request")
    await expect(staff.locator("#request-result")).to_be_visible()
    assert digits(await staff.locator("#check-digits").text_content()) == check
    await staff.get_by_label("Mme Martin").check()
    await staff.click("#answer")
    await expect(staff.locator("#answer-done")).to_be_visible()

    await at_step(phone, "docs")
    assert await opened_bytes(phone, "Titre de séjour") == pdf

    await person.click("#go-settings")
    await at_step(person, "settings")
    await expect(person.locator("#events-list")).to_contain_text(
        f"votre personne de confiance {volunteer.user.name}"
    )
    await person.get_by_role("button", name=f"Retirer l'accès de {volunteer.user.name}").click()
    await expect(person.locator("#settings-status")).to_have_text(
        "L'accès de cette personne est retiré."
    )
    await expect(person.locator("#trustees-list")).to_contain_text("accès retiré le")

    # Named again from the settings: K is no longer in memory, the code is asked.
    await staff.click("#make-code")
    await expect(staff.locator("#trustee-code")).not_to_have_text(trustee_code)
    second_code = await staff.locator("#trustee-code").text_content() or ""
    await person.click("#add-trustee")
    await at_step(person, "trustee")
    await expect(person.locator("#trustee-recovery-row")).to_be_visible()
    await assert_accessible(person, "personne de confiance, code asked again")
    await person.fill("#trustee-recovery", code)
    await person.fill("#trustee-code", second_code)
    await person.click("#trustee-find")
    await person.fill("#trustee-label", "Mme Martin")
    await person.click("#trustee-give")
    await at_step(person, "settings")
    await expect(
        person.get_by_role("button", name=f"Retirer l'accès de {volunteer.user.name}")
    ).to_be_visible()
    assert errors == []


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_vault_page_first_load_stays_under_60_kb_compressed(running: Running) -> None:
    """HTML, CSS and the scripts needed before the first tap, as gzip puts them on the wire
    (bench/page_weight.py); the QR code, export, restore and trustee parts load later."""
    loaded = await page_first_load(running.base_url, "/coffre", GZIP)
    assert "error" not in loaded, loaded.get("error")
    paths = [f.url.removeprefix(running.base_url).split("?")[0] for f in loaded["files"]]
    assert "/static/js/vault-core.js" in paths and "/static/js/vault.js" in paths
    assert not [p for p in paths if "uqr" in p or "fflate" in p or "vault-restore" in p]
    lazy = {url.removeprefix(running.base_url).split("?")[0] for url in loaded["lazy"]}
    assert {"/static/js/vault-sheet.js", "/static/js/vault-export.js"} <= lazy
    wire = sum(f.wire_bytes for f in loaded["files"])
    assert all(f.status == 200 for f in loaded["files"])
    assert wire <= TARGET_BYTES, f"{wire} bytes on the wire: {paths}"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_upload_benchmark_times_an_encrypted_and_a_plain_upload(
    running: Running,
) -> None:
    """bench/vault_page_upload.py against the real server: both uploads stored, then deleted."""
    found = await measure(running.base_url, 1)
    assert len(found["encrypted_ms"]) == len(found["plain_ms"]) == 1
    assert len(found["encrypted_ms_cpu4"]) == len(found["plain_ms_cpu4"]) == 1
    assert found["encrypted_median_ms"] > 0 and found["plain_median_ms"] > 0
    assert (await counts(running))["documents"] == 0
