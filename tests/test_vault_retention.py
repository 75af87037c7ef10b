"""Retention of vaults through the real purge (``server/retention.py``), on both databases and
so both blob storages (``auto``: files on SQLite, database chunks on PostgreSQL): notices 30
and 7 days before the deadline into the outbox, then real deletion; activity resets the clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import func, select, update

from server import retention
from server.store.models import (
    OutboxMessage,
    StatEvent,
    TrusteeCode,
    TrusteeKey,
    Vault,
    VaultBlobChunk,
    VaultDocument,
    VaultEvent,
    VaultRecoveryRequest,
    utcnow,
)
from server.vault.retention import add_months
from tests.conftest import Running, make_account
from tests.vault_client import VaultHttp, create_vault, encrypt_document

PHONE = "06 12 34 56 78"
EMAIL = "awa.diallo@example.org"
MARKER = b"%PDF-1.4 avis d'imposition 2026 marker-retention"


@dataclass
class Made:
    """A vault made through the API, with one document."""

    vault_id: str
    device: VaultHttp
    document_id: str


async def make(running: Running, http: aiohttp.ClientSession, contact: bool = True) -> Made:
    new = await create_vault(http, running.base_url)
    assert new.answer.status == 201, new.answer
    device = VaultHttp(http, running.base_url, new.keys)
    document = encrypt_document(new.keys, MARKER, category="impots")
    uploaded = await device.upload(document)
    assert uploaded.status == 201, uploaded
    if contact:
        answer = await device.request(
            "PUT", "/coffre/api/vault/contact", json={"phone": PHONE, "email": EMAIL}
        )
        assert answer.status == 200, answer
    async with running.sessionmaker() as db:
        vault_id = await db.scalar(
            select(VaultDocument.vault_id).where(VaultDocument.id == document.id)
        )
    assert vault_id is not None
    return Made(vault_id, device, document.id)


async def set_last_used(running: Running, made: Made, when: datetime) -> None:
    async with running.sessionmaker.begin() as db:
        await db.execute(update(Vault).where(Vault.id == made.vault_id).values(last_used_at=when))


async def purge(running: Running, now: datetime, dry_run: bool = False) -> retention.PurgeReport:
    async with running.sessionmaker() as db:
        return await retention.purge(db, running.settings, now, dry_run=dry_run)


async def notices(running: Running) -> list[OutboxMessage]:
    async with running.sessionmaker() as db:
        rows = await db.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.idempotency_key.startswith("vault:"))
            .order_by(OutboxMessage.id)
        )
        return list(rows)


def blob_files(running: Running) -> list[Path]:
    root = running.settings.data_dir / "vault"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def stored(running: Running, made: Made) -> dict[str, int]:
    """What is left of the vault: rows of each table, blob files and chunks."""
    async with running.sessionmaker() as db:

        async def count(model: type, *where: object) -> int:
            found = await db.scalar(select(func.count()).select_from(model).where(*where))
            return int(found or 0)

        return {
            "vaults": await count(Vault, Vault.id == made.vault_id),
            "documents": await count(VaultDocument, VaultDocument.vault_id == made.vault_id),
            "events": await count(VaultEvent, VaultEvent.vault_id == made.vault_id),
            "chunks": await count(VaultBlobChunk),
            "files": len(blob_files(running)),
        }


def local_day(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo("Europe/Paris")).strftime("%d/%m/%Y")


async def test_notices_30_and_7_days_before_then_real_deletion(
    running: Running, http: aiohttp.ClientSession
) -> None:
    made = await make(running, http)
    before = await stored(running, made)
    assert before["vaults"] == before["documents"] == 1
    assert before["chunks"] + before["files"] >= 1  # one of the two storages holds the blob
    last_used = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    await set_last_used(running, made, last_used)
    deadline = add_months(last_used, running.settings.vault_retention_months)
    assert deadline == datetime(2027, 3, 10, 9, 0, tzinfo=UTC)

    report = await purge(running, deadline - timedelta(days=31))
    assert report.counts["vault_notices"] == 0 and report.counts["vaults"] == 0
    assert await notices(running) == []

    report = await purge(running, deadline - timedelta(days=29))
    assert report.counts["vault_notices"] == 1
    first = await notices(running)
    assert sorted(m.channel for m in first) == ["email", "sms"]
    assert {m.recipient for m in first} == {"+33612345678", EMAIL}
    for message in first:
        assert local_day(deadline) in message.body
        assert running.settings.base_url + "/coffre" in message.body
        assert MARKER.decode() not in message.body
    email = next(m for m in first if m.channel == "email")
    assert email.subject == "Votre coffre-fort numérique sera bientôt supprimé"
    assert "24 mois" in email.body
    # The same day again: nothing more.
    assert (await purge(running, deadline - timedelta(days=28))).counts["vault_notices"] == 0

    # Six days before (the purge missed the seventh): the last notice gives 7 full days.
    last_at = deadline - timedelta(days=6)
    report = await purge(running, last_at)
    assert report.counts["vault_notices"] == 1
    second = (await notices(running))[2:]
    assert len(second) == 2
    kept_until = last_at + timedelta(days=7)
    assert all(local_day(kept_until) in m.body for m in second)
    async with running.sessionmaker() as db:
        vault = await db.get_one(Vault, made.vault_id)
        assert vault.notices_sent == 2 and vault.notified_at == last_at

    report = await purge(running, deadline + timedelta(hours=12))
    assert report.counts["vaults"] == 0  # past the deadline, but the notice is 6.5 days old
    assert (await stored(running, made))["vaults"] == 1

    report = await purge(running, kept_until + timedelta(minutes=1))
    assert report.counts["vaults"] == 1 and report.counts["vault_notices"] == 0
    assert await stored(running, made) == {
        "vaults": 0,
        "documents": 0,
        "events": 0,
        "chunks": 0,
        "files": 0,
    }
    async with running.sessionmaker() as db:
        reasons = list(
            await db.scalars(select(StatEvent.reason).where(StatEvent.kind == "vault_deleted"))
        )
    assert reasons == ["retention"]
    lines = retention.describe(report)
    assert "  Coffres-forts inutilisés (avec leurs documents) : 1 supprimé" in lines
    # The device's capability opens nothing any more.
    gone = await made.device.overview()
    assert gone.status == 401


async def test_a_vault_without_contact_is_deleted_at_its_deadline_without_notice(
    running: Running, http: aiohttp.ClientSession
) -> None:
    made = await make(running, http, contact=False)
    last_used = datetime(2025, 1, 31, 22, 0, tzinfo=UTC)
    await set_last_used(running, made, last_used)
    deadline = add_months(last_used, 24)
    report = await purge(running, deadline - timedelta(minutes=1))
    assert report.counts["vaults"] == 0 and report.counts["vault_notices"] == 0
    report = await purge(running, deadline)
    assert report.counts["vaults"] == 1
    assert await notices(running) == []
    assert (await stored(running, made))["documents"] == 0
    assert blob_files(running) == []


async def test_using_the_vault_resets_the_clock_and_the_notices(
    running: Running, http: aiohttp.ClientSession
) -> None:
    made = await make(running, http)
    now = utcnow()
    last_used = add_months(now, -24) + timedelta(days=20)  # deadline in 20 days
    await set_last_used(running, made, last_used)
    assert (await purge(running, now)).counts["vault_notices"] == 1
    # The person opens their vault: its last use is now, the notices start again from zero.
    assert (await made.device.overview()).status == 200
    async with running.sessionmaker() as db:
        vault = await db.get_one(Vault, made.vault_id)
        assert vault.notices_sent == 0 and vault.last_used_at > now - timedelta(minutes=1)
    report = await purge(running, add_months(last_used, 24) + timedelta(days=8))
    assert report.counts["vaults"] == 0 and report.counts["vault_notices"] == 0
    assert (await stored(running, made))["documents"] == 1


async def test_dry_run_counts_what_is_due_and_changes_nothing(
    running: Running, http: aiohttp.ClientSession
) -> None:
    noticed = await make(running, http)
    silent = await make(running, http, contact=False)
    now = utcnow()
    await set_last_used(running, noticed, add_months(now, -24) + timedelta(days=10))
    await set_last_used(running, silent, add_months(now, -24) - timedelta(days=1))
    trustee = await make_account(running, "tiers@example.org")
    async with running.sessionmaker.begin() as db:
        key = TrusteeKey(user_id=trustee.user.id, public_key="x", fingerprint="0" * 64)
        db.add(key)
        await db.flush()
        db.add(TrusteeCode(code_hash="a" * 64, trustee_key_id=key.id, expires_at=now))
        db.add(
            VaultRecoveryRequest(
                public_key="x",
                poll_token_hash="b" * 64,
                pairing_code_hash="c" * 64,
                expires_at=now - timedelta(minutes=1),
            )
        )
    report = await purge(running, now, dry_run=True)
    assert report.counts["vault_notices"] == 1
    assert report.counts["vaults"] == 1
    assert report.counts["trustee_codes"] == 1
    assert report.counts["vault_recovery_requests"] == 1
    lines = retention.describe(report)
    assert "  Coffres-forts inutilisés (avec leurs documents) : 1 à supprimer" in lines
    assert "  Avis avant suppression d'un coffre-fort : 1 à écrire" in lines
    assert await notices(running) == []
    assert (await stored(running, silent))["vaults"] == 1

    report = await purge(running, now)
    assert report.counts["vaults"] == 1 and report.counts["vault_notices"] == 1
    assert report.counts["trustee_codes"] == 1 and report.counts["vault_recovery_requests"] == 1
    async with running.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(TrusteeCode)) == 0
        assert await db.scalar(select(func.count()).select_from(VaultRecoveryRequest)) == 0
    again = await purge(running, now)
    assert again.counts["vaults"] == 0 and again.counts["vault_notices"] == 0


@pytest.mark.parametrize("months", [1, 24])
def test_add_months_clamps_to_the_end_of_the_month(months: int) -> None:
    moment = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    moved = add_months(moment, months)
    assert moved.day in (28, 29, 31) and moved.month in (2, 1)
    assert add_months(moved, -months) <= moment
