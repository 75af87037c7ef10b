"""Rights checks: compute (through the engine), keep for as long as the person needs, settle into
the statistics once, forget.

A check belongs to one assistance session (made in the room) or one handoff sheet (made from
the sheet after the session); a session's check follows it onto its sheet. Doing the check again
replaces it. How long each part lives:

- **The answers** (ages, resources, rent, commune) are personal data: they are forgotten when
  the session ends, unless the person agreed to keep them with their sheet (``keep_answers``);
  then they go with the sheet.
- **The results** (benefit, verdict, amount) stay while the volunteer may still put them on
  the sheet: a check that is not on a sheet is deleted ``UNFILED_HOURS`` after its last change.
  On a sheet they follow the sheet's retention: deleted when the sheet is purged.
- **The statistics** are recorded once per check, when it is settled (put on the sheet, its
  session over, or ``SETTLE_AFTER`` without change): coded facts only
  (``server/rights/tally.py``). Doing it again after that does not count twice.

Calling the model takes seconds: ``evaluate`` runs it outside any database transaction, and the
``save_*`` functions then store what it gave.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.rights import tally
from server.rights.answers import Answers, parse_answers, situation
from server.rights.benefits import amount_band
from server.rights.engine import RightsEngine
from server.rights.results import BenefitResult, interpret, variables
from server.store.models import AssistanceSession, HandoffSheet, RightsCheck, utcnow

SETTLE_AFTER = timedelta(hours=1)
UNFILED_HOURS = 24
# Names in the retention report (server/retention.py).
SETTLED = "rights_checks_settled"  # counted into the statistics: not a purge
FORGOTTEN = "rights_answers_forgotten"
DELETED = "rights_checks"


@dataclass(frozen=True)
class Evaluation:
    """What the model said of some answers, not stored yet."""

    answers: Answers
    results: list[BenefitResult]
    period: str
    model_version: str


async def evaluate(engine: RightsEngine, raw_answers: object, today: date) -> Evaluation:
    """Check the answers (AnswersInvalid, in French), then compute every benefit for the
    current month in the engine's pool (EngineUnavailable, in French)."""
    answers = parse_answers(raw_answers)
    month = today.replace(day=1)
    out = await engine.calculate(situation(answers, month), variables(month))
    return Evaluation(
        answers=answers,
        results=interpret(answers, out["values"]),
        period=f"{month:%Y-%m}",
        model_version=engine.version,
    )


def results_of(check: RightsCheck) -> list[BenefitResult]:
    return [BenefitResult.from_json(item) for item in check.results]


def _fill(check: RightsCheck, evaluation: Evaluation, keep_answers: bool, now: datetime) -> None:
    check.period = evaluation.period
    check.model_version = evaluation.model_version[:20]
    check.departement = evaluation.answers.departement
    check.answers = evaluation.answers.to_json()
    check.keep_answers = keep_answers
    check.results = [result.to_json() for result in evaluation.results]
    check.updated_at = now


async def check_of_session(db: AsyncSession, session_id: str) -> RightsCheck | None:
    return await db.scalar(
        select(RightsCheck).where(RightsCheck.assistance_session_id == session_id)
    )


async def check_of_sheet(db: AsyncSession, sheet: HandoffSheet) -> RightsCheck | None:
    """The sheet's check: made from the sheet, or in the sheet's session."""
    condition = RightsCheck.handoff_sheet_id == sheet.id
    if sheet.assistance_session_id is not None:
        condition = or_(condition, RightsCheck.assistance_session_id == sheet.assistance_session_id)
    return await db.scalar(select(RightsCheck).where(condition).limit(1))


async def save_for_session(
    db: AsyncSession,
    session: AssistanceSession,
    volunteer_id: int,
    evaluation: Evaluation,
    *,
    keep_answers: bool,
    now: datetime | None = None,
) -> RightsCheck:
    """Store the check made in ``session`` (replacing an earlier one of the same session).
    The caller has checked that the volunteer holds this session."""
    now = now or utcnow()
    check = await check_of_session(db, session.id)
    if check is None:
        check = RightsCheck(
            association_id=session.association_id,
            volunteer_id=volunteer_id,
            assistance_session_id=session.id,
            created_at=now,
        )
        db.add(check)
    check.volunteer_id = volunteer_id
    _fill(check, evaluation, keep_answers, now)
    if not session.is_live and not keep_answers:
        check.answers = None
    await db.flush()
    return check


async def save_for_sheet(
    db: AsyncSession,
    sheet: HandoffSheet,
    volunteer_id: int,
    evaluation: Evaluation,
    *,
    keep_answers: bool,
    now: datetime | None = None,
) -> RightsCheck:
    """Store a check made from ``sheet`` after its session (replacing the sheet's check). The
    person is not in a live session: the answers are kept only if they agreed."""
    now = now or utcnow()
    check = await check_of_sheet(db, sheet)
    if check is None:
        check = RightsCheck(
            association_id=sheet.association_id,
            volunteer_id=volunteer_id,
            handoff_sheet_id=sheet.id,
            created_at=now,
        )
        db.add(check)
    check.handoff_sheet_id = sheet.id
    check.volunteer_id = volunteer_id
    _fill(check, evaluation, keep_answers, now)
    if not keep_answers:
        check.answers = None
    await db.flush()
    return check


async def set_on_sheet(
    db: AsyncSession,
    check: RightsCheck,
    *,
    on_sheet: bool,
    show_amounts: bool,
    now: datetime | None = None,
) -> None:
    """Put the benefits to claim on the sheet as next steps (with their amounts if the person
    agreed), or take them off; putting them on settles the check."""
    now = now or utcnow()
    check.on_sheet = on_sheet
    check.show_amounts = show_amounts and on_sheet
    check.updated_at = now
    if on_sheet:
        if check.handoff_sheet_id is None and check.assistance_session_id is not None:
            sheet_id = await db.scalar(
                select(HandoffSheet.id).where(
                    HandoffSheet.assistance_session_id == check.assistance_session_id
                )
            )
            check.handoff_sheet_id = sheet_id
        await settle(db, check, now)
    await db.flush()


async def sheet_filed(db: AsyncSession, sheet: HandoffSheet) -> None:
    """A sheet was filed for a session: its session's check now belongs to it too."""
    if sheet.assistance_session_id is None:
        return
    await db.execute(
        update(RightsCheck)
        .where(
            RightsCheck.assistance_session_id == sheet.assistance_session_id,
            RightsCheck.handoff_sheet_id.is_(None),
        )
        .values(handoff_sheet_id=sheet.id)
    )


async def settle(db: AsyncSession, check: RightsCheck, now: datetime | None = None) -> bool:
    """Record the check's statistics if not done yet; True if this call did."""
    if check.settled_at is not None:
        return False
    check.settled_at = now or utcnow()
    unclaimed = [
        (result.code, amount_band(result.monthly) if result.monthly is not None else None)
        for result in results_of(check)
        if result.unclaimed
    ]
    channel = None
    if check.assistance_session_id is not None:
        channel = await db.scalar(
            select(AssistanceSession.channel).where(
                AssistanceSession.id == check.assistance_session_id
            )
        )
    await tally.record_check(
        db,
        association_id=check.association_id,
        departement=check.departement,
        channel=channel,
        unclaimed=unclaimed,
    )
    return True


async def session_ended(db: AsyncSession, session_id: str, now: datetime | None = None) -> None:
    """The session is over: forget the answers the person did not agree to keep, and count the
    check in the statistics."""
    check = await check_of_session(db, session_id)
    if check is None:
        return
    if not check.keep_answers:
        check.answers = None
    await settle(db, check, now)


async def purge(db: AsyncSession, now: datetime, cutoff: datetime) -> dict[str, int]:
    """The retention pass (``server/retention.py``, in its own transaction): settle checks left
    alone for SETTLE_AFTER, forget the answers of checks whose session is over, delete checks
    never put on a sheet after UNFILED_HOURS, and checks whose sheet was purged or that are
    older than the retention ``cutoff``. Counts by what was done."""
    counts: dict[str, int] = {}
    stale = (
        await db.scalars(
            select(RightsCheck).where(
                RightsCheck.settled_at.is_(None), RightsCheck.updated_at < now - SETTLE_AFTER
            )
        )
    ).all()
    for check in stale:
        await settle(db, check, now)
    counts[SETTLED] = len(stale)
    forgotten = await db.execute(
        update(RightsCheck)
        .where(_to_forget(now))
        .values(answers=None)
        .execution_options(synchronize_session=False)
    )
    counts[FORGOTTEN] = int(getattr(forgotten, "rowcount", 0) or 0)
    deleted = await db.execute(
        delete(RightsCheck)
        .where(_to_delete(now, cutoff))
        .execution_options(synchronize_session=False)
    )
    counts[DELETED] = int(getattr(deleted, "rowcount", 0) or 0)
    return counts


def _to_forget(now: datetime) -> ColumnElement[bool]:
    """Answers the person did not agree to keep, once their session is over (or, made from a
    sheet, an hour after)."""
    ended = select(AssistanceSession.id).where(AssistanceSession.ended_at.is_not(None))
    return and_(
        RightsCheck.answers.is_not(None),
        RightsCheck.keep_answers.is_(False),
        or_(
            RightsCheck.assistance_session_id.in_(ended),
            and_(
                RightsCheck.assistance_session_id.is_(None),
                RightsCheck.updated_at < now - SETTLE_AFTER,
            ),
        ),
    )


def _to_delete(now: datetime, cutoff: datetime) -> ColumnElement[bool]:
    """Checks never put on a sheet, those of purged sheets, those past the retention."""
    purged_sheets = select(HandoffSheet.id).where(HandoffSheet.purged_at.is_not(None))
    return or_(
        and_(
            RightsCheck.on_sheet.is_(False),
            RightsCheck.updated_at < now - timedelta(hours=UNFILED_HOURS),
        ),
        RightsCheck.handoff_sheet_id.in_(purged_sheets),
        RightsCheck.updated_at < cutoff,
    )


async def pending(db: AsyncSession, now: datetime, cutoff: datetime) -> dict[str, int]:
    """What ``purge`` would do (``permanence purge --dry-run``)."""

    async def count(condition: ColumnElement[bool]) -> int:
        return int(
            await db.scalar(select(func.count()).select_from(RightsCheck).where(condition)) or 0
        )

    return {
        SETTLED: await count(
            and_(RightsCheck.settled_at.is_(None), RightsCheck.updated_at < now - SETTLE_AFTER)
        ),
        FORGOTTEN: await count(_to_forget(now)),
        DELETED: await count(_to_delete(now, cutoff)),
    }


def check_json(check: RightsCheck) -> dict[str, Any]:
    """What the volunteer's form shows of a stored check (labels come with the page)."""
    return {
        "id": check.id,
        "period": check.period,
        "model_version": check.model_version,
        "answers": check.answers,
        "keep_answers": check.keep_answers,
        "results": check.results,
        "on_sheet": check.on_sheet,
        "show_amounts": check.show_amounts,
    }
