"""The vaults' retention notices spend the global SMS budget (BUDGET_SMS) when the worker runs
the daily purge: past the budget, the SMS notice is withheld and the e-mail still goes. A
botnet that left phone numbers in thousands of vaults cannot make us pay for thousands of SMS
two years later."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import select

from server.ratelimit import RATELIMIT_KEY
from server.settings import Settings
from server.store.models import OutboxMessage, OutboxStatus, utcnow
from server.vault.retention import add_months
from server.web.app import WORKER_KEY
from tests.conftest import Running
from tests.test_vault_retention import make, set_last_used


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"budget_sms": "1/day", "pow_max_counter": 20})


async def test_the_workers_purge_withholds_the_sms_notice_once_the_sms_budget_is_spent(
    running: Running, http: aiohttp.ClientSession
) -> None:
    made = await make(running, http)
    await set_last_used(running, made, add_months(utcnow(), -24) + timedelta(days=20))
    limiter = running.app[RATELIMIT_KEY]
    assert await limiter.spend("sms")  # the day's only SMS went to someone else
    report = await running.app[WORKER_KEY].purge()
    assert report is not None and report.counts["vault_notices"] == 1
    async with running.sessionmaker() as db:
        rows = list(
            await db.scalars(
                select(OutboxMessage).where(OutboxMessage.idempotency_key.startswith("vault:"))
            )
        )
    by_channel = {row.channel: row for row in rows}
    assert by_channel["sms"].status == OutboxStatus.WITHHELD
    assert by_channel["email"].status != OutboxStatus.WITHHELD
