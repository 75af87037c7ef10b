"""The vault in the assistance session (issue 15), in real headless Chromium against the real
server: the person (Pixel 7) shows a document of their vault to the volunteer (desktop) over the
data channel; the volunteer's page gets it byte for byte, offers a download only when the person
gave a copy, and never asks the vault's API for anything; the server sees no plaintext; a
tampered document is refused with the French message and nothing is sent. The volunteer
suggests keeping a photo the person sent, and the person adds it to their vault."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Download, Locator, Page, expect
from sqlalchemy import select, text, update

from server import assist
from server.ratelimit import RATELIMIT_KEY
from server.runtime import SESSIONMAKER_KEY
from server.store.models import (
    AssistanceSession,
    Base,
    User,
    VaultBlobChunk,
    VaultDocument,
)
from tests.browser import Chromium, assert_accessible, chromium_with_devices
from tests.conftest import PG_UNREACHABLE, Account, Running, make_account
from tests.test_browser import consent, join_link, log_in, open_assistance, wait_status
from tests.test_room_vault import shown_events
from tests.test_vault_browser import pdf_with

pytestmark = pytest.mark.browser

WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)

# In the person's page: a vault made with vault-core.js (the proof of work solved by the
# vendored ALTCHA worker), kept on this device like the vault page keeps it.
CREATE_VAULT_JS = """async ({ urls, worker }) => {
  const core = await import('/static/js/vault-core.js');
  const challenge = await core.fetchChallenge(urls);
  const altcha = challenge ? await core.solveChallenge(challenge, worker) : null;
  await core.createVault(urls, { altcha, shareFacts: true });
  return Boolean(await core.loadDevice());
}"""
# In the person's page: a document added to this device's vault; its id.
ADD_DOCUMENT_JS = """async ({ urls, data, name, mime, category }) => {
  const core = await import('/static/js/vault-core.js');
  const client = new core.VaultClient(await core.loadDevice(), urls);
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const details = { name, mime, category, expires_on: null };
  return (await client.add(new Blob([bytes], { type: mime }), details)).id;
}"""
# In the person's page: every document of the vault, decrypted: [{name, category, data}].
READ_VAULT_JS = """async ({ urls }) => {
  const core = await import('/static/js/vault-core.js');
  const client = new core.VaultClient(await core.loadDevice(), urls);
  const out = [];
  for (const doc of await client.list()) {
    const { meta, bytes } = await client.read(doc.id);
    let text = '';
    for (const byte of bytes) text += String.fromCharCode(byte);
    out.push({ name: meta.name, category: meta.category, mime: meta.mime, data: btoa(text) });
  }
  return out;
}"""
# In the volunteer's page: save what an object URL holds (the page's CSP keeps fetch() off
# blob: URLs; a download is how a person would get the bytes).
SAVE_URL_JS = """(url) => {
  const link = Object.assign(document.createElement('a'), { href: url, download: 'saved' });
  document.body.append(link);
  link.click();
  link.remove();
}"""
# An init script: the object URLs the page revokes, in `window.vpRevoked`.
RECORD_REVOKED_JS = """(() => {
  const revoke = URL.revokeObjectURL.bind(URL);
  window.vpRevoked = [];
  URL.revokeObjectURL = (url) => {
    window.vpRevoked.push(url);
    revoke(url);
  };
})()"""


@pytest.fixture(autouse=True)
def postgres_is_required(backend: str) -> None:
    """A browser test never skips: an unreachable PostgreSQL fails its variants instead."""
    if backend == "postgresql" and PG_UNREACHABLE:
        pytest.fail(PG_UNREACHABLE)


@pytest.fixture
async def chrome() -> AsyncIterator[Chromium]:
    """A fresh Chromium per test."""
    async with chromium_with_devices() as launched:
        yield launched


def vault_urls(running: Running) -> dict[str, str]:
    """The API addresses vault-core.js needs, from the route names."""
    router = running.app.router
    return {
        name: str(router[route].url_for())
        for name, route in (
            ("challenge", "vault-challenge"),
            ("vault", "vault-api"),
            ("documents", "vault-documents"),
            ("recover", "vault-recover"),
        )
    }


async def person_without_vault(
    chrome: Chromium, running: Running, session_id: str, errors: list[str], requests: list[str]
) -> Page:
    """The person's phone in the room, without a vault: the room offers the link to make one,
    in a new tab, signed with the session."""
    ben = await chrome.page("Pixel 7", errors=errors, requests=requests)
    await ben.goto(await join_link(running, session_id))
    await ben.wait_for_url("**/b")
    await consent(ben)
    link = ben.get_by_role("link", name="Mon coffre-fort")
    await expect(link).to_be_visible()
    await expect(ben.get_by_role("button", name="Montrer un document")).to_be_hidden()
    href = urlsplit(await link.get_attribute("href") or "")
    assert href.path == "/coffre" and parse_qs(href.query)["depuis"][0]
    assert await link.get_attribute("target") == "_blank"
    return ben


async def make_vault(ben: Page, running: Running) -> None:
    """A vault made on this phone, as the vault page makes it."""
    worker = "/static/vendor/altcha/pbkdf2.js"
    made = await ben.evaluate(CREATE_VAULT_JS, {"urls": vault_urls(running), "worker": worker})
    assert made is True


async def person_with_vault(
    chrome: Chromium, running: Running, session_id: str, errors: list[str], requests: list[str]
) -> Page:
    """The person's phone in the room, first without a vault, then with one made on this
    phone: after a reload, the room offers "Montrer un document"."""
    ben = await person_without_vault(chrome, running, session_id, errors, requests)
    await make_vault(ben, running)
    await ben.reload()
    await consent(ben)
    await expect(ben.get_by_role("button", name="Montrer un document")).to_be_visible()
    await expect(ben.get_by_role("link", name="Mon coffre-fort")).to_be_hidden()
    return ben


async def show_document(ben: Page, name: str, copy: bool) -> None:
    """The person picks `name` in the picker and chooses how to show it."""
    await ben.get_by_role("button", name="Montrer un document").click()
    dialog = ben.get_by_role("dialog", name="Montrer un document")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label(name).check()
    how = "Donner une copie" if copy else "Montrer seulement"
    if copy:
        await dialog.get_by_label(how).check()
    else:
        await expect(dialog.get_by_label(how)).to_be_checked()  # the default
    await dialog.get_by_role("button", name="Montrer", exact=True).click()
    await expect(dialog).to_be_hidden()


def read_bytes(path: Path) -> bytes:
    """A small file's bytes (a download, a database file)."""
    return path.read_bytes()


def files_holding(needle: bytes, *roots: Path) -> list[Path]:
    """The files under `roots` (or the roots themselves, when files) whose bytes hold `needle`."""
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and needle in path.read_bytes():
                found.append(path)
    return found


async def saved(page: Page, url: str | None = None, link: Locator | None = None) -> Download:
    """The download of an object URL of the page (or of clicking `link`)."""
    async with page.expect_download() as started:
        if link is not None:
            await link.click()
        else:
            await page.evaluate(SAVE_URL_JS, url)
    download = await started.value
    assert await download.failure() is None
    return download


async def saved_bytes(page: Page, url: str | None = None, link: Locator | None = None) -> bytes:
    """What an object URL of the page holds, as a download gives it."""
    download = await saved(page, url, link)
    return read_bytes(await download.path())


async def send_photo(ben: Page, png: bytes) -> None:
    """The person sends a photo (a PNG, sent as the JPEG the page makes of it)."""
    await ben.locator("#photo-input").set_input_files(
        files=[{"name": "carte.png", "mimeType": "image/png", "buffer": png}]
    )
    await expect(ben.locator("#notice")).to_have_text("Photo envoyée.")


async def database_holds(running: Running, needle: bytes) -> bool:
    """Whether any row of any table, read as text, holds `needle` (both databases)."""
    async with running.sessionmaker() as db:
        for table in Base.metadata.sorted_tables:
            for row in await db.execute(select(table)):
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    if needle in raw:
                        return True
    return False


async def tamper(running: Running, document_id: str) -> None:
    """Change one byte of a document's ciphertext where the server keeps it."""
    blob = running.settings.data_dir / "vault" / document_id[:2] / document_id
    if blob.exists():  # `files` storage (SQLite)
        data = bytearray(blob.read_bytes())
        data[-1] ^= 0x01
        blob.write_bytes(bytes(data))
        return
    async with running.sessionmaker.begin() as db:  # `database` storage (PostgreSQL)
        chunk = await db.scalar(
            select(VaultBlobChunk)
            .where(VaultBlobChunk.document_id == document_id)
            .order_by(VaultBlobChunk.seq.desc())
        )
        assert chunk is not None
        data = bytearray(chunk.data)
        data[-1] ^= 0x01
        await db.execute(
            update(VaultBlobChunk)
            .where(VaultBlobChunk.document_id == document_id, VaultBlobChunk.seq == chunk.seq)
            .values(data=bytes(data))
        )


async def test_a_document_shown_reaches_the_volunteer_peer_to_peer_and_never_the_server(
    running: Running,
    volunteer: Account,
    chrome: Chromium,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    vol_requests: list[str] = []
    ben_requests: list[str] = []
    vol = await chrome.page(
        errors=errors, requests=vol_requests, viewport={"width": 1400, "height": 1000}
    )
    await vol.add_init_script(RECORD_REVOKED_JS)
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)
    ben = await person_with_vault(chrome, running, session_id, errors, ben_requests)
    await wait_status(ben, "connected")
    await wait_status(vol, "connected")

    marker = f"MARQUEUR-{secrets.token_hex(12)}"
    pdf = pdf_with(marker)
    urls = vault_urls(running)
    name = "Avis d'impôt 2026"
    document_id = await ben.evaluate(
        ADD_DOCUMENT_JS,
        {
            "urls": urls,
            "data": base64.b64encode(pdf).decode(),
            "name": name,
            "mime": "application/pdf",
            "category": "impots",
        },
    )

    # The picker lists the decrypted name and category; axe finds nothing with it open.
    await ben.get_by_role("button", name="Montrer un document").click()
    dialog = ben.get_by_role("dialog", name="Montrer un document")
    await expect(dialog.get_by_label(name)).to_be_visible()
    await expect(dialog).to_contain_text("(Impôts)")
    await assert_accessible(ben, "room, vault picker open")
    await dialog.get_by_role("button", name="Annuler").click()
    await expect(dialog).to_be_hidden()

    # "Montrer seulement": the volunteer sees it, byte for byte, with no download.
    await show_document(ben, name, copy=False)
    await expect(ben.locator("#notice")).to_have_text("Document montré.")
    card = vol.locator("#photos li.received-doc")
    await expect(card).to_have_count(1)
    await expect(card).to_contain_text(name)
    await expect(card).to_contain_text("Montré pour cette assistance seulement.")
    await expect(vol.get_by_role("heading", name="Photos et documents reçus")).to_be_visible()
    opened = card.get_by_role("link", name="Ouvrir")
    assert await opened.get_attribute("target") == "_blank"
    href = await opened.get_attribute("href")
    assert href and href.startswith("blob:")
    assert await saved_bytes(vol, href) == pdf
    await expect(card.get_by_role("link", name="Enregistrer une copie")).to_have_count(0)
    await assert_accessible(vol, "room, document received")

    # "Donner une copie": now the volunteer's page offers to save it, under its name.
    await running.app[RATELIMIT_KEY].reset()  # one vault-shown a socket every 10 s
    await show_document(ben, name, copy=True)
    await expect(ben.locator("#notice")).to_have_text("Document montré. Le bénévole a une copie.")
    await expect(card).to_have_count(2)
    save = card.first.get_by_role("link", name="Enregistrer une copie")
    await expect(save).to_be_visible()
    download = await saved(vol, link=save)
    assert download.suggested_filename == "Avis d'impôt 2026.pdf"
    assert read_bytes(await download.path()) == pdf
    copy_href = await save.get_attribute("href")

    # Counted twice, under the session's association, the second time as a copy given.
    # Counted by the server when the message passes: poll, the page may say it first.
    for _ in range(100):
        events = await shown_events(running, session_id)
        if len(events) >= 2:
            break
        await asyncio.sleep(0.05)
    assert [event.reason for event in events] == [None, "copy"]
    assert {event.association_id for event in events} == {volunteer.user.association_id}

    # A changed byte of the ciphertext: the French message, nothing sent.
    await running.app[RATELIMIT_KEY].reset()
    await tamper(running, document_id)
    await show_document(ben, name, copy=False)
    await expect(ben.locator("#notice")).to_have_text(
        "Ce document est abîmé. Il ne peut pas être ouvert. Rien n'a été envoyé."
    )
    await expect(card).to_have_count(2)
    assert len(await shown_events(running, session_id)) == 2

    # The volunteer's browser never asked the vault's API; the person's asked for the blob
    # three times (two shows and the tampered one), nothing else did.
    assert not [url for url in vol_requests if "/coffre" in url], vol_requests
    blob_path = f"/coffre/api/documents/{document_id}/blob"
    assert len([url for url in ben_requests if urlsplit(url).path == blob_path]) == 3

    # The marker is nowhere on the server: not in its logs, its database, its storage.
    needle = marker.encode()
    assert marker not in caplog.text
    assert not await database_holds(running, needle)
    roots = [running.settings.data_dir]  # the storage (files), the SQLite database if there
    if running.settings.database_url.startswith("sqlite"):
        database = Path(running.settings.database_url.split("///", 1)[1])
        roots += [path for path in (database, Path(f"{database}-wal")) if path.exists()]
    assert files_holding(needle, *roots) == []

    # The session ends while the volunteer's page stays open (here: it expires): the page
    # shows nothing more, and every object URL it made is revoked.
    async with running.app[SESSIONMAKER_KEY].begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        await assist.end_session(db, session, "expired")
    await wait_status(vol, "ended")
    await expect(vol.locator("#photos-empty")).to_have_text(
        "L'assistance est terminée : les photos et documents reçus ne sont plus affichés."
    )
    await expect(card).to_have_count(0)
    revoked = await vol.evaluate("() => window.vpRevoked")
    assert href in revoked and copy_href in revoked
    assert errors == []


# The suggestion is browser-side: one database is enough (the show test covers both).
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_volunteer_suggests_keeping_a_photo_and_the_person_adds_it_to_the_vault(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    errors: list[str] = []
    vol = await chrome.page(errors=errors, viewport={"width": 1400, "height": 1000})
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)
    ben = await person_without_vault(chrome, running, session_id, errors, [])
    await wait_status(vol, "connected")
    photos = vol.locator("#photos li.received-photo")
    offer = ben.get_by_role("region", name="Garder cette photo ?")
    suggest = "Proposer de l'ajouter à son coffre-fort"

    # No vault on this phone yet: the suggestion offers to open the vault page.
    await send_photo(ben, await vol.screenshot())
    await expect(photos).to_have_count(1)
    await photos.first.get_by_role("button", name=suggest).click()
    await expect(photos.first.get_by_role("button", name="Proposé à la personne")).to_be_disabled()
    await expect(offer).to_be_visible()
    opening = offer.get_by_role("link", name="Ouvrir mon coffre-fort")
    await expect(opening).to_be_visible()
    assert urlsplit(await opening.get_attribute("href") or "").path == "/coffre"
    await expect(offer.get_by_role("button", name="Ajouter à mon coffre-fort")).to_be_hidden()
    await offer.get_by_role("button", name="Non merci").click()
    await expect(offer).to_be_hidden()

    # With a vault (made meanwhile, in another tab as far as the room knows): added.
    await make_vault(ben, running)
    await send_photo(ben, await vol.screenshot(full_page=True))
    await expect(photos).to_have_count(2)
    photo = photos.first
    sent = await saved_bytes(vol, await photo.locator("img").get_attribute("src"))
    assert sent.startswith(b"\xff\xd8\xff")  # the JPEG the person's page made

    await photo.get_by_role("button", name=suggest).click()
    await expect(photo.get_by_role("button", name="Proposé à la personne")).to_be_disabled()
    await expect(offer).to_be_visible()
    await expect(offer).to_contain_text(
        "Le bénévole vous propose de garder cette photo dans votre coffre-fort."
    )
    await assert_accessible(ben, "room, photo suggested for the vault")
    await offer.get_by_label("Type de document").select_option(label="Identité")
    await offer.get_by_role("button", name="Ajouter à mon coffre-fort").click()
    await expect(ben.locator("#notice")).to_have_text("Photo ajoutée à votre coffre-fort.")
    await expect(offer).to_be_hidden()

    [kept] = await ben.evaluate(READ_VAULT_JS, {"urls": vault_urls(running)})
    assert kept["category"] == "identite" and kept["mime"] == "image/jpeg"
    assert kept["name"].startswith("Photo du ")
    assert base64.b64decode(kept["data"]) == sent  # the same JPEG, byte for byte
    async with running.sessionmaker() as db:
        assert await db.scalar(select(text("count(*)")).select_from(VaultDocument)) == 1
    assert errors == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_document_goes_to_the_volunteer_and_not_to_an_invited_observer(
    running: Running, volunteer: Account, chrome: Chromium
) -> None:
    """An observer sees the photos the person sends (as before), not the documents of their
    vault, and cannot suggest keeping a photo."""
    errors: list[str] = []
    observer = await make_account(running, "sacha@example.org")
    vol = await chrome.page(errors=errors, viewport={"width": 1400, "height": 1000})
    await log_in(vol, running, volunteer)
    session_id = await open_assistance(vol)
    async with running.app[SESSIONMAKER_KEY].begin() as db:
        session = await db.get_one(AssistanceSession, session_id)
        owner = await db.get_one(User, volunteer.user.id)
        await assist.invite_observer(db, session, owner, observer.email)
    obs = await chrome.page(errors=errors, viewport={"width": 1400, "height": 1000})
    await log_in(obs, running, observer)
    await obs.goto(running.url(f"/assistance/{session_id}"))
    ben = await person_with_vault(chrome, running, session_id, errors, [])
    await wait_status(vol, "connected")
    await wait_status(obs, "connected")
    name = "Attestation CAF"
    await ben.evaluate(
        ADD_DOCUMENT_JS,
        {
            "urls": vault_urls(running),
            "data": base64.b64encode(pdf_with("CAF")).decode(),
            "name": name,
            "mime": "application/pdf",
            "category": "caf",
        },
    )

    await show_document(ben, name, copy=True)
    await expect(ben.locator("#notice")).to_have_text("Document montré. Le bénévole a une copie.")
    await expect(vol.locator("#photos li.received-doc")).to_have_count(1)
    await send_photo(ben, await vol.screenshot())
    await expect(vol.locator("#photos li.received-photo")).to_have_count(1)
    observed = obs.locator("#photos li.received-photo")
    await expect(observed).to_have_count(1)  # sent after the document, received after it too
    await expect(obs.locator("#photos li.received-doc")).to_have_count(0)
    await expect(observed.get_by_role("button", name=re.compile("coffre-fort"))).to_have_count(0)
    assert errors == []
