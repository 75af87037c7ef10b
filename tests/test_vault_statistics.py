"""The vault's section of /stats (coffre-fort numérique) on both databases: counts by month,
category and département from the rollups kept at every flush, the same after a rebuild in
SQL, small counts suppressed in the CSV files, and the real vault API feeding them."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import delete

from server import taxonomy
from server.stats.events import EventKind, record
from server.stats.filters import parse_filters
from server.stats.queries import build_report
from server.stats.rebuild import rebuild_rollups
from server.store.models import StatRollup, StatRollupMonthly, User
from tests.conftest import Account, Running, login
from tests.vault_client import VaultHttp, create_vault, encrypt_document

MARCH = datetime(2025, 3, 12, 10, 0, tzinfo=UTC)
APRIL = datetime(2025, 4, 3, 10, 0, tzinfo=UTC)
PERIOD = {"from": "2025-01-01", "to": "2025-12-31"}


def _specs() -> list[tuple[datetime, EventKind, dict[str, Any]]]:
    """Two months of vault steps: Paris (75) busy, Marseille (13) small, some unknown."""
    specs: list[tuple[datetime, EventKind, dict[str, Any]]] = []
    specs += [(MARCH, EventKind.VAULT_CREATED, {"departement": "75"})] * 7
    specs += [(APRIL, EventKind.VAULT_CREATED, {"departement": "13"})] * 2
    specs += [(APRIL, EventKind.VAULT_CREATED, {})]
    specs += [(MARCH, EventKind.VAULT_DOCUMENT_ADDED, {"departement": "75", "theme": "impots"})] * 6
    specs += [(APRIL, EventKind.VAULT_DOCUMENT_ADDED, {"departement": "13", "theme": "caf"})] * 2
    specs += [(APRIL, EventKind.VAULT_DOCUMENT_ADDED, {"theme": "non_precise"})] * 3
    specs += [(MARCH, EventKind.VAULT_DOCUMENT_SHOWN, {"departement": "75"})] * 5
    specs += [(APRIL, EventKind.VAULT_DOCUMENT_SHOWN, {"departement": "13", "reason": "copy"})]
    specs += [(APRIL, EventKind.VAULT_DELETED, {"departement": "13", "reason": "retention"})]
    return specs


async def _record(running: Running, association_id: int) -> None:
    async with running.sessionmaker.begin() as db:
        for i, (when, kind, extra) in enumerate(_specs()):
            event = await record(db, kind, association_id=association_id, channel="vault", **extra)
            event.occurred_at = when + timedelta(minutes=i)


def _filters(**query: str) -> Any:
    return parse_filters({**PERIOD, **query}, date(2025, 12, 31))


async def _figures(running: Running, association_id: int, **query: str) -> Any:
    async with running.sessionmaker() as db:
        return (await build_report(db, association_id, _filters(**query))).vault


async def test_vault_steps_are_counted_by_month_category_and_departement(
    running: Running, coordinator: Account
) -> None:
    association_id = coordinator.user.association_id
    await _record(running, association_id)
    vault = await _figures(running, association_id)
    assert vault.totals == Counter(
        {
            "vault_created": 10,
            "vault_document_added": 11,
            "vault_document_shown": 6,
            "vault_deleted": 1,
        }
    )
    march, april = date(2025, 3, 1), date(2025, 4, 1)
    assert vault.volumes[march] == Counter(
        {"vault_created": 7, "vault_document_added": 6, "vault_document_shown": 5}
    )
    assert vault.volumes[april]["vault_created"] == 3
    assert vault.categories == Counter({"impots": 6, "non_precise": 3, "caf": 2})
    assert vault.departements["75"]["vault_created"] == 7
    assert vault.departements["13"]["vault_document_shown"] == 1
    assert vault.departements[""]["vault_created"] == 1
    # The channel and theme filters are about sessions: the vault's section ignores them.
    filtered = await _figures(running, association_id, channel="link", theme="logement")
    assert filtered.totals == vault.totals
    # A period without vault steps, another association: nothing.
    assert (await _figures(running, association_id, **{"from": "2025-05-01"})).is_empty
    assert (await _figures(running, association_id + 1000)).is_empty
    # Weeks read the daily rollups.
    weekly = await _figures(running, association_id, step="week")
    assert sum(c["vault_created"] for c in weekly.volumes.values()) == 10

    # Rebuilding the rollups in SQL gives the same figures.
    async with running.sessionmaker.begin() as db:
        await db.execute(delete(StatRollup))
        await db.execute(delete(StatRollupMonthly))
    assert (await _figures(running, association_id)).is_empty
    async with running.sessionmaker.begin() as db:
        await rebuild_rollups(db, ZoneInfo(running.settings.timezone), association_id)
    rebuilt = await _figures(running, association_id)
    assert rebuilt.totals == vault.totals
    assert rebuilt.categories == vault.categories
    assert rebuilt.departements == vault.departements
    assert rebuilt.volumes == vault.volumes


async def test_the_page_and_the_csv_files_show_the_vault_with_small_counts_hidden(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    await _record(running, coordinator.user.association_id)
    await login(http, running, coordinator)
    async with http.get(running.url("/stats"), params=PERIOD) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "Coffre-fort numérique" in page
    assert '<dd id="vault-created">10</dd>' in page
    assert '<dd id="vault-shown">6</dd>' in page
    assert "Non précisé (gardé chiffré)" in page

    async def table(name: str) -> list[dict[str, str]]:
        async with http.get(running.url("/stats.csv"), params={**PERIOD, "table": name}) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            return list(csv.DictReader(io.StringIO(await resp.text())))

    by_period = {row["period"]: row for row in await table("vault")}
    assert by_period["2025-03"]["vaults_created"] == "7"
    assert by_period["2025-03"]["documents_shown"] == "5"
    assert by_period["2025-04"]["vaults_created"] == "< 5"
    assert by_period["2025-05"]["vaults_created"] == "0"
    categories = {row["category"]: row for row in await table("vault_categories")}
    assert list(categories)[: len(taxonomy.VAULT_CATEGORIES)] == list(taxonomy.VAULT_CATEGORIES)
    assert categories["impots"]["documents_added"] == "6"
    assert categories["caf"]["documents_added"] == "< 5"
    assert categories["non_precise"]["documents_added"] == "< 5"
    assert categories["sante"]["documents_added"] == "0"
    deps = {row["departement"]: row for row in await table("vault_departements")}
    assert deps["75"]["name"] == "Paris" and deps["75"]["vaults_created"] == "7"
    assert deps["13"]["documents_shown"] == "< 5"
    assert deps["inconnu"]["vaults_created"] == "< 5"


async def test_the_vault_api_feeds_the_statistics(
    running: Running, coordinator: Account, http: aiohttp.ClientSession
) -> None:
    """A vault made and filled through the real API is counted in the only association."""
    shared = await create_vault(http, running.base_url, share_facts=True)
    secret = await create_vault(http, running.base_url, share_facts=False)
    assert shared.answer.status == secret.answer.status == 201
    for made, category in ((shared, "caf"), (secret, "sante")):
        device = VaultHttp(http, running.base_url, made.keys)
        uploaded = await device.upload(encrypt_document(made.keys, b"x" * 100, category=category))
        assert uploaded.status == 201, uploaded
    today = datetime.now(UTC).date()
    async with running.sessionmaker() as db:
        user = await db.get_one(User, coordinator.user.id)
        report = await build_report(
            db, user.association_id, parse_filters({}, today + timedelta(days=1))
        )
    assert report.vault.totals["vault_created"] == 2
    # The category is counted only when the person agreed; otherwise "non précisé".
    assert report.vault.categories == Counter({"caf": 1, "non_precise": 1})
