"""Retention of vaults: a vault nobody opened for VAULT_RETENTION_MONTHS is deleted for real
(rows and blobs), after two notices when the person left a phone or an e-mail.

Called by the retention purge (``server/retention.py``: ``permanence purge`` and the worker's
daily run), which reports the counts. The clock is ``last_used_at`` (any use of the vault moves
it and resets ``notices_sent``, ``server/vault/vaults.py``); the *deadline* is ``last_used_at``
plus VAULT_RETENTION_MONTHS calendar months.

- 30 days before the deadline, a vault with a contact gets the first notice (SMS and/or
  e-mail, through the outbox), ``notices_sent`` = 1.
- 7 days before, the second one, ``notices_sent`` = 2, ``notified_at`` = now. A purge that
  runs late (the server was stopped) sends only this one, and its date is never less than 7
  days away: the vault is kept until ``max(deadline, notified_at + 7 days)``, the date both
  notices announce.
- At the deadline, a vault without contact is deleted; one with a contact once its second
  notice is 7 days old. ``vault_deleted`` (reason ``retention``) is counted.

The same pass deletes expired trustee codes and recovery requests, and the blobs no document
row names (``server/vault/storage.py``). Each step works in chunks, one short transaction
each; a processed vault no longer matches its step's condition, so the pass is idempotent.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import links
from server.i18n import _, use_language
from server.notify.deliver import SmsBudget, SmsGate, deliver
from server.settings import Settings
from server.store.engine import begin_write
from server.store.models import Vault
from server.vault import storage, trustees, vaults

log = logging.getLogger(__name__)

NOTICE_DAYS = (30, 7)  # days before the deadline; the last one also keeps the vault 7 days
LAST_NOTICE = timedelta(days=NOTICE_DAYS[-1])
CHUNK_SIZE = 200

# Keys of the purge report (server/retention.py), in the order ``describe`` lists them.
VAULTS = "vaults"
NOTICES = "vault_notices"
CODES = "trustee_codes"
REQUESTS = "vault_recovery_requests"
ORPHANS = "vault_orphan_blobs"


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus (or minus) whole calendar months, the day clamped to the month's end."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def deadline_of(vault: Vault, settings: Settings) -> datetime:
    """When the vault is deleted if nobody opens it (and no notice is pending)."""
    return add_months(vault.last_used_at, settings.vault_retention_months)


def deletion_date(vault: Vault, settings: Settings, now: datetime, last: bool) -> datetime:
    """The date a notice announces: the deadline, and for the last notice at least 7 days
    from now."""
    deadline = deadline_of(vault, settings)
    return max(deadline, now + LAST_NOTICE) if last else deadline


def _used_before(settings: Settings, moment: datetime) -> ColumnElement[bool]:
    """Vaults whose deadline is at or before ``moment`` (last used before moment − months)."""
    return Vault.last_used_at <= add_months(moment, -settings.vault_retention_months)


def _has_contact() -> ColumnElement[bool]:
    return or_(Vault.contact_phone.is_not(None), Vault.contact_email.is_not(None))


def _first_notice_due(settings: Settings, now: datetime) -> ColumnElement[bool]:
    first, last = NOTICE_DAYS
    return and_(
        _has_contact(),
        Vault.notices_sent == 0,
        _used_before(settings, now + timedelta(days=first)),
        # Closer than the last notice's delay: only the last notice goes (below).
        ~_used_before(settings, now + timedelta(days=last)),
    )


def _last_notice_due(settings: Settings, now: datetime) -> ColumnElement[bool]:
    return and_(
        _has_contact(),
        Vault.notices_sent < len(NOTICE_DAYS),
        _used_before(settings, now + LAST_NOTICE),
    )


def _deletion_due(settings: Settings, now: datetime) -> ColumnElement[bool]:
    notified = and_(
        Vault.notices_sent >= len(NOTICE_DAYS),
        Vault.notified_at.is_not(None),
        Vault.notified_at <= now - LAST_NOTICE,
    )
    return and_(_used_before(settings, now), or_(~_has_contact(), notified))


async def _notify(
    db: AsyncSession, settings: Settings, gate: SmsGate, vault: Vault, now: datetime, last: bool
) -> None:
    """Write one retention notice (the first, or the last) to the outbox, in the language the
    contact was given in; mark it on the vault."""
    with use_language(vault.contact_language):
        when = deletion_date(vault, settings, now, last)
        day = when.astimezone(ZoneInfo(settings.timezone)).strftime("%d/%m/%Y")
        months = settings.vault_retention_months
        link = links.VAULT.url(settings)
        stage = NOTICE_DAYS[-1] if last else NOTICE_DAYS[0]
        values = {"date": day, "link": link}
        unused = _("Votre coffre-fort numérique n'a pas été ouvert depuis %(months)d mois.") % {
            "months": months
        }
        body = (
            _("Bonjour,")
            + "\n\n"
            + unused
            + " "
            + _(
                "Il sera supprimé le %(date)s, avec tous vos documents.\n\n"
                "Pour le garder, ouvrez-le avant cette date, sur votre appareil habituel "
                "ou avec votre code de secours :\n%(link)s\n\n"
                "Si vous n'en avez plus besoin, vous n'avez rien à faire."
            )
            % values
            + "\n"
        )
        sms = (
            _(
                "Votre coffre-fort numérique sera supprimé le %(date)s avec vos documents. "
                "Pour le garder, ouvrez-le avant : %(link)s"
            )
            % values
        )
        await deliver(
            db,
            gate=gate,
            phone=vault.contact_phone,
            email=vault.contact_email,
            # One key per notice of one period of inactivity: a new period gets new keys.
            key=lambda channel: (
                f"vault:{vault.id}:retention:{vault.last_used_at:%Y%m%dT%H%M%S}:{stage}:{channel.value}"
            ),
            subject=_("Votre coffre-fort numérique sera bientôt supprimé"),
            body=body,
            sms=sms,
            send_after=now,
        )
        vault.notices_sent = len(NOTICE_DAYS) if last else 1
        vault.notified_at = now


async def _in_chunks(
    db: AsyncSession,
    condition: ColumnElement[bool],
    act: Callable[[Vault], Any],
    chunk_size: int,
) -> int:
    """Apply ``act`` to every vault matching ``condition``, ``chunk_size`` per transaction."""
    done = 0
    while True:
        try:
            await begin_write(db)
            chunk = list(
                await db.scalars(
                    select(Vault).where(condition).order_by(Vault.last_used_at).limit(chunk_size)
                )
            )
            for vault in chunk:
                await act(vault)
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        done += len(chunk)
        if len(chunk) < chunk_size:
            return done


async def _count(db: AsyncSession, condition: ColumnElement[bool]) -> int:
    count = await db.scalar(select(func.count()).select_from(Vault).where(condition))
    await db.rollback()
    return int(count or 0)


async def purge_vaults(
    db: AsyncSession,
    settings: Settings,
    now: datetime,
    *,
    dry_run: bool = False,
    chunk_size: int = CHUNK_SIZE,
    sms_budget: SmsBudget | None = None,
) -> dict[str, int]:
    """Notices, deletions of unused vaults, expired trustee codes and recovery requests, orphan
    blobs: how many of each (for a dry run, how many are due). Commits as it goes: ``db`` must
    not be inside ``begin()``."""
    first = _first_notice_due(settings, now)
    last = _last_notice_due(settings, now)
    deletion = _deletion_due(settings, now)
    if dry_run:
        counts = {
            NOTICES: await _count(db, first) + await _count(db, last),
            VAULTS: await _count(db, deletion),
        }
        codes, requests = await trustees.count_expired(db, now)
        await db.rollback()
        return {**counts, CODES: codes, REQUESTS: requests, ORPHANS: 0}
    gate = SmsGate.of(settings, sms_budget)

    async def notify_first(vault: Vault) -> None:
        await _notify(db, settings, gate, vault, now, last=False)

    async def notify_last(vault: Vault) -> None:
        await _notify(db, settings, gate, vault, now, last=True)

    async def remove(vault: Vault) -> None:
        await vaults.delete_vault(db, settings, vault, "retention")

    notices = await _in_chunks(db, first, notify_first, chunk_size)
    notices += await _in_chunks(db, last, notify_last, chunk_size)
    deleted = await _in_chunks(db, deletion, remove, chunk_size)
    try:
        await begin_write(db)
        codes, requests = await trustees.purge_expired(db, now)
        orphans = await storage.remove_orphans(db, settings, now)
        await db.commit()
    except BaseException:
        await db.rollback()
        raise
    counts = {NOTICES: notices, VAULTS: deleted, CODES: codes, REQUESTS: requests, ORPHANS: orphans}
    if notices or deleted:
        log.info("vault retention: %d notice(s) written, %d vault(s) deleted", notices, deleted)
    return counts
