"""The personne de confiance page in real Chromium: the key pair made by WebCrypto in the page
(private key non-extractable in IndexedDB), the code given to a person, a new device's request
answered; the person and the device are played by Python (tests/test_vault_trustees.py)."""

from __future__ import annotations

import hashlib
import re

import aiohttp
import pytest
from playwright.async_api import Page, expect
from sqlalchemy import select

from server.store.models import VaultEvent, VaultGrant
from server.vault.access import b64u_decode
from tests.browser import assert_accessible, chromium_with_devices
from tests.conftest import Account, Running
from tests.test_vault_trustees import make_vault, name_trustee, new_device, poll, spki, unseal

pytestmark = [pytest.mark.browser]


async def _log_in(page: Page, running: Running, account: Account) -> None:
    await page.goto(running.url("/login"))
    await page.get_by_label("Adresse e-mail").fill(account.email)
    await page.get_by_label("Mot de passe").fill(account.password)
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url(lambda url: not url.endswith("/login"))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_trustee_makes_a_key_gives_a_code_and_reopens_a_vault_from_the_page(
    running: Running, volunteer: Account, http: aiohttp.ClientSession
) -> None:
    errors: list[str] = []
    async with chromium_with_devices() as chrome:
        page = await chrome.page(viewport={"width": 1280, "height": 900}, errors=errors)
        await _log_in(page, running, volunteer)
        await page.get_by_role("link", name="Personne de confiance").click()
        make_key = page.get_by_role("button", name="Créer ma clé sur cet appareil")
        await expect(make_key).to_be_enabled()
        await assert_accessible(page, "trustee page, no key yet")
        await make_key.click()
        await expect(page.locator("#key-status")).to_have_text(re.compile("Votre clé est créée"))
        # The private key stays in this browser, and cannot be read out of it.
        stored = await page.evaluate(
            """() => new Promise((resolve, reject) => {
                const open = indexedDB.open("vp-trustee");
                open.onsuccess = () => {
                  const get = open.result.transaction("keys").objectStore("keys").get("trustee");
                  get.onsuccess = () => resolve({
                    extractable: get.result.privateKey.extractable,
                    type: get.result.privateKey.type,
                    spki: get.result.spki,
                  });
                  get.onerror = () => reject(get.error);
                };
                open.onerror = () => reject(open.error);
            })"""
        )
        assert stored["extractable"] is False and stored["type"] == "private"

        await page.get_by_role("button", name="Obtenir un code à donner à la personne").click()
        code_text = page.locator("#trustee-code")
        await expect(code_text).to_have_text(re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}$"))
        code = await code_text.inner_text()
        await assert_accessible(page, "trustee page, code shown")

        # The person names this account; their browser encrypts for the key the page made.
        person = await make_vault(running)
        named = await name_trustee(http, running, person, code, "Mme Awa Diallo")
        assert named["info"]["public_key"] == stored["spki"]
        device, request = await new_device(http, running)
        device_spki = b64u_decode(spki(device), 1000) or b""
        digest = hashlib.sha256(device_spki).digest()
        expected_check = " ".join(f"{b % 100:02d}" for b in digest[:3])

        # A reload finds the key in IndexedDB: ready at once.
        await page.reload()
        await expect(page.locator("#key-status")).to_have_text(
            "Votre clé est prête sur cet appareil."
        )
        await page.get_by_label("Code affiché sur l'appareil de la personne").fill(
            request["pairing_code"]
        )
        await page.get_by_role("button", name="Chercher la demande").click()
        await expect(page.locator("#check-digits")).to_have_text(expected_check)
        choice = page.get_by_label(re.compile("Mme Awa Diallo"))
        await expect(choice).to_be_visible()
        await assert_accessible(page, "trustee page, a request to answer")
        await choice.check()
        await page.get_by_role("button", name="Rouvrir son coffre-fort").click()
        await expect(page.locator("#answer-done")).to_contain_text("C'est fait")

        status, ready = await poll(http, running, request)
        assert status == 200 and ready["status"] == "ready"
        assert unseal(device, ready["wrapped_key"]) == person.key
        await assert_accessible(page, "trustee page, answered")

        # A wrong pairing code: a clear French message, nothing else.
        await page.get_by_label("Code affiché sur l'appareil de la personne").fill("000 000")
        await page.get_by_role("button", name="Chercher la demande").click()
        await expect(page.locator("#trustee-error")).to_contain_text("aucune demande en cours")
        await assert_accessible(page, "trustee page, unknown pairing code")
    async with running.sessionmaker() as db:
        grant = await db.get_one(VaultGrant, named["trustee"]["id"])
        assert grant.last_used_at is not None
        kinds = list(await db.scalars(select(VaultEvent.kind)))
    assert kinds.count("trustee_used") == 1
    # The wrong pairing code's 404 is the only console line.
    assert all("404" in line for line in errors), errors
