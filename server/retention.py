"""Retention: personal data is purged RETENTION_MONTHS after the person's last contact.

Run by the worker once a day (``server/worker.py``) and by ``permanence purge [--dry-run]``.
A record is purged when every date that marks a contact with the person is older than the
cutoff (``now`` minus RETENTION_MONTHS calendar months). What happens, table by table:

- ``appointments`` (last contact: starts_at, cancelled_at, created_at): **anonymised**, the row
  stays (its volunteer, motif, times, status and channel feed the agenda history and no-show
  counts). ``first_name`` (NOT NULL) becomes ``""``; phone, e-mail, postal code and description
  become NULL; ``needs`` (interpreter language, hearing, first time on a computer: health-related)
  becomes ``{}``; ``client_key_hash`` (keyed hash of the booking client's address) becomes NULL.
- ``waitlist`` (created_at, notified_at, earlier_than): **deleted**. An entry is nothing but a
  name and a way to reach the person; the ``waitlist_joined`` event already counts it.
- ``outbox`` (created_at, send_after, sent_at): **deleted**, except messages being sent
  (``sending``, a worker holds them). Recipient, subject, body and attachments are all personal;
  what remains (a status and a count of attempts) has no use a year later.
- ``queue_entries`` (created_at, ended_at): **anonymised**: ``first_name``, ``postal_code`` and
  ``client_key_hash`` become NULL; status, motif, times and end reason stay.
- ``callback_requests`` (created_at, closed_at): **anonymised**: ``phone`` (NOT NULL) becomes
  ``""``; first name, e-mail, postal code and message become NULL; status, outcome, windows and
  attempt count stay. ``callback_attempts`` hold no personal data (volunteer, outcome code, time)
  and are kept.
- ``assistance_sessions`` (created_at, ended_at): **anonymised**: ``beneficiary_name`` and
  ``verified_person_key`` (a keyed hash of the contact the person proved) become NULL; the
  rest is technical (times, media, pauses, data used).
- ``handoff_sheets`` (updated_at, follow_up_on: a follow-up date not yet past the cutoff keeps
  the sheet): **anonymised**: actions done, orientation partner and contact, next steps, postal
  code and ``person_key`` become NULL, sharing with later volunteers is withdrawn, ``purged_at``
  is set. Themes, organisations, autonomy and outcome (taxonomy codes) stay.
- Notification files written by the ``file`` back-ends (``DATA_DIR/mail/*.eml``,
  ``DATA_DIR/sms/*.txt``) older than the cutoff are **deleted**.
- ``vaults`` (last_used_at, VAULT_RETENTION_MONTHS, not RETENTION_MONTHS): notices 30 and 7
  days before when the person left a contact, then **deleted** with their documents, blobs,
  events and grants; expired trustee codes and recovery requests and orphan blobs are
  **deleted** too (``server/vault/retention.py``).
- ``stat_events`` and the statistics rollups hold no personal data: **never touched**.

Each table is processed in chunks of CHUNK_SIZE rows, one short transaction each (a single
``UPDATE``/``DELETE … WHERE id IN (SELECT id … LIMIT n)``), so that a first purge of a large
database never holds SQLite's write lock (or PostgreSQL row locks) for long. A purged row no
longer matches its table's condition, so the purge is idempotent and can be interrupted and run
again at any time. The same statements run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Delete, Update

from server.notify.deliver import SmsBudget
from server.rights import checks as rights_checks
from server.settings import Settings
from server.store.engine import begin_write
from server.store.models import (
    Appointment,
    AssistanceSession,
    CallbackRequest,
    HandoffSheet,
    OutboxMessage,
    OutboxStatus,
    QueueEntry,
    WaitlistEntry,
)
from server.vault import retention as vault_retention

log = logging.getLogger(__name__)

CHUNK_SIZE = 1000
SPOOL_FOLDERS = (("mail", ".eml"), ("sms", ".txt"))


@dataclass
class PurgeReport:
    """How many rows each table had purged (or would have, for a dry run)."""

    cutoff: datetime
    dry_run: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Rows and files purged in all (the vaults' notices are not purges)."""
        return sum(
            n
            for name, n in self.counts.items()
            if name not in (vault_retention.NOTICES, rights_checks.SETTLED)
        )


@dataclass(frozen=True)
class _Target:
    """One table: its rows past the cutoff and still holding personal data, and what to do."""

    name: str
    model: Any
    pending: Callable[[datetime, datetime], ColumnElement[bool]]  # (cutoff, now) -> condition
    values: Callable[[datetime], dict[str, Any]] | None  # None: delete the rows


def months_before(moment: datetime, months: int) -> datetime:
    """``moment`` minus whole calendar months (31 March − 1 month = 28 or 29 February)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def cutoff_for(settings: Settings, now: datetime) -> datetime:
    """Records whose last contact is before this moment are purged."""
    return months_before(now, settings.retention_months)


def _before(column: Any, cutoff: Any) -> ColumnElement[bool]:
    """A nullable contact date: absent, or before the cutoff."""
    return or_(column.is_(None), column < cutoff)


def _appointments(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    a = Appointment
    return and_(
        a.starts_at < cutoff,
        a.created_at < cutoff,
        _before(a.cancelled_at, cutoff),
        or_(
            a.first_name != "",
            a.phone.is_not(None),
            a.email.is_not(None),
            a.postal_code.is_not(None),
            a.description.is_not(None),
            a.client_key_hash.is_not(None),
        ),
    )


def _waitlist(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    w = WaitlistEntry
    return and_(
        w.created_at < cutoff, _before(w.notified_at, cutoff), _before(w.earlier_than, cutoff)
    )


def _outbox(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    o = OutboxMessage
    return and_(
        o.status != OutboxStatus.SENDING,
        o.created_at < cutoff,
        o.send_after < cutoff,
        _before(o.sent_at, cutoff),
    )


def _queue_entries(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    q = QueueEntry
    return and_(
        q.created_at < cutoff,
        _before(q.ended_at, cutoff),
        or_(q.first_name.is_not(None), q.postal_code.is_not(None), q.client_key_hash.is_not(None)),
    )


def _callbacks(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    c = CallbackRequest
    return and_(
        c.created_at < cutoff,
        _before(c.closed_at, cutoff),
        or_(
            c.phone != "",
            c.first_name.is_not(None),
            c.email.is_not(None),
            c.postal_code.is_not(None),
            c.message.is_not(None),
        ),
    )


def _sessions(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    s = AssistanceSession
    return and_(
        s.created_at < cutoff,
        _before(s.ended_at, cutoff),
        or_(s.beneficiary_name.is_not(None), s.verified_person_key.is_not(None)),
    )


def _sheets(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    h = HandoffSheet
    return and_(
        h.purged_at.is_(None),
        h.updated_at < cutoff,
        # A follow-up planned after the cutoff (in the future, say) is a contact to come.
        _before(h.follow_up_on, cutoff.date()),
    )


TARGETS: tuple[_Target, ...] = (
    _Target(
        "appointments",
        Appointment,
        _appointments,
        lambda _now: {
            "first_name": "",
            "phone": None,
            "email": None,
            "postal_code": None,
            "description": None,
            "needs": {},
            "client_key_hash": None,
        },
    ),
    _Target("waitlist", WaitlistEntry, _waitlist, None),
    _Target("outbox", OutboxMessage, _outbox, None),
    _Target(
        "queue_entries",
        QueueEntry,
        _queue_entries,
        lambda _now: {"first_name": None, "postal_code": None, "client_key_hash": None},
    ),
    _Target(
        "callback_requests",
        CallbackRequest,
        _callbacks,
        lambda _now: {
            "first_name": None,
            "phone": "",
            "email": None,
            "postal_code": None,
            "message": None,
        },
    ),
    _Target(
        "assistance_sessions",
        AssistanceSession,
        _sessions,
        lambda _now: {"beneficiary_name": None, "verified_person_key": None},
    ),
    _Target(
        "handoff_sheets",
        HandoffSheet,
        _sheets,
        lambda now: {
            "actions_done": None,
            "orientation_partner": None,
            "orientation_contact": None,
            "next_steps": None,
            "postal_code": None,
            "person_key": None,
            "shared_with_volunteers": False,
            "purged_at": now,
        },
    ),
)
SPOOL_FILES = "notification_files"


async def purge(
    db: AsyncSession,
    settings: Settings,
    now: datetime,
    *,
    dry_run: bool = False,
    chunk_size: int = CHUNK_SIZE,
    sms_budget: SmsBudget | None = None,
) -> PurgeReport:
    """Purge the personal data of records past the retention period; how many per table.

    Commits after each chunk, so ``db`` must not be inside ``begin()``. A dry run only counts.
    ``sms_budget``: the global SMS budget the vaults' retention notices spend (the worker passes
    the app's rate limiter; ``permanence purge``, run by hand, has none).
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    if db.in_transaction():
        raise ValueError("purge() commits chunk by chunk: give it a session outside begin()")
    cutoff = cutoff_for(settings, now)
    report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
    for target in TARGETS:
        condition = target.pending(cutoff, now)
        if dry_run:
            count = await db.scalar(select(func.count()).select_from(target.model).where(condition))
            await db.rollback()
            report.counts[target.name] = int(count or 0)
            continue
        report.counts[target.name] = await _purge_table(db, target, condition, now, chunk_size)
    report.counts[SPOOL_FILES] = await asyncio.to_thread(
        _purge_spool, settings.data_dir, cutoff, dry_run
    )
    report.counts.update(
        await vault_retention.purge_vaults(
            db,
            settings,
            now,
            dry_run=dry_run,
            chunk_size=min(chunk_size, vault_retention.CHUNK_SIZE),
            sms_budget=sms_budget,
        )
    )
    if dry_run:
        report.counts.update(await rights_checks.pending(db, now, cutoff))
        await db.rollback()
    else:
        async with db.begin():
            report.counts.update(await rights_checks.purge(db, now, cutoff))
    if report.total and not dry_run:
        log.info("retention purge (before %s): %s", cutoff.isoformat(), report.counts)
    return report


async def _purge_table(
    db: AsyncSession,
    target: _Target,
    condition: ColumnElement[bool],
    now: datetime,
    chunk_size: int,
) -> int:
    """Purge ``target`` chunk by chunk, one transaction each; how many rows in all."""
    model = target.model
    chunk = select(model.id).where(condition).limit(chunk_size).scalar_subquery()
    statement: Update | Delete
    if target.values is None:
        statement = delete(model).where(model.id.in_(chunk))
    else:
        statement = update(model).where(model.id.in_(chunk)).values(**target.values(now))
    statement = statement.execution_options(synchronize_session=False)
    done = 0
    while True:
        try:
            await begin_write(db)
            result = await db.execute(statement)
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        done += count
        if count < chunk_size:
            return done


def _purge_spool(data_dir: Path, cutoff: datetime, dry_run: bool) -> int:
    """Delete (or count) notification files written by the file back-ends before the cutoff."""
    limit = cutoff.timestamp()
    count = 0
    for folder, suffix in SPOOL_FOLDERS:
        directory = data_dir / folder
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            try:
                if path.suffix != suffix or not path.is_file() or path.stat().st_mtime >= limit:
                    continue
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:
                continue  # removed meanwhile
            count += 1
    return count


# French labels for the CLI: (table, label, feminine, verb for deletions or anonymisation).
LABELS: tuple[tuple[str, str, bool, bool], ...] = (
    ("appointments", "Rendez-vous", False, False),
    ("waitlist", "Inscriptions en liste d'attente", True, True),
    ("outbox", "Messages (e-mails, SMS)", False, True),
    ("queue_entries", "Passages dans la file d'attente", False, False),
    ("callback_requests", "Demandes de rappel", True, False),
    ("assistance_sessions", "Assistances", True, False),
    ("handoff_sheets", "Fiches navette", True, False),
    (SPOOL_FILES, "Fichiers d'e-mails et de SMS", False, True),
    (rights_checks.DELETED, "Vérifications de droits (réponses et résultats)", True, True),
    (rights_checks.FORGOTTEN, "Réponses de vérifications de droits effacées", True, True),
    (vault_retention.VAULTS, "Coffres-forts inutilisés (avec leurs documents)", False, True),
    (vault_retention.CODES, "Codes de personne de confiance expirés", False, True),
    (vault_retention.REQUESTS, "Demandes d'accès à un coffre-fort expirées", True, True),
    (vault_retention.ORPHANS, "Fichiers chiffrés sans document", False, True),
)


def describe(report: PurgeReport) -> list[str]:
    """The report in French, one line per table, for ``permanence purge``."""
    when = report.cutoff.strftime("%d/%m/%Y")
    lines = [
        f"Données personnelles dont le dernier contact est antérieur au {when} :"
        if not report.dry_run
        else f"Simulation (rien n'est modifié) — dernier contact antérieur au {when} :"
    ]
    for name, label, feminine, deleted in LABELS:
        count = report.counts.get(name, 0)
        if report.dry_run:
            verb = "à supprimer" if deleted else "à anonymiser"
        else:
            verb = "supprimé" if deleted else "anonymisé"
            verb += "e" if feminine else ""
            verb += "s" if count > 1 else ""
        lines.append(f"  {label} : {count} {verb}")
    notices = report.counts.get(vault_retention.NOTICES, 0)
    lines.append(
        f"  Avis avant suppression d'un coffre-fort : {notices} "
        + ("à écrire" if report.dry_run else ("écrits" if notices > 1 else "écrit"))
    )
    lines.append("Les événements statistiques (sans donnée personnelle) sont conservés.")
    return lines
