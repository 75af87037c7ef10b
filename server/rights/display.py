"""A rights check as people read it: for each benefit its label, "Probablement éligible — environ
569 € par mois" / "Probablement pas" / "À vérifier", the one-line reason, where to apply; and
the lines a handoff sheet lists under "Aides à demander".

The stored check keeps codes (``server/rights/results.py``); the words are chosen here, at
reading time, in the reader's language. The person's sheet shows amounts only if they agreed
(``show_amounts``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from babel.dates import format_date
from sqlalchemy.ext.asyncio import AsyncSession

from server.i18n import N_, _, babel_locale
from server.rights import checks
from server.rights.benefits import BENEFITS, Period, Verdict
from server.rights.results import REASONS, BenefitResult
from server.store.models import HandoffSheet, RightsCheck

NOTICE = N_("C'est une estimation, pas une décision : seul l'organisme décide.")
VERDICTS = {
    Verdict.LIKELY: N_("Probablement éligible"),
    Verdict.UNLIKELY: N_("Probablement pas"),
    Verdict.CHECK: N_("À vérifier"),
}
PER_MONTH = N_("environ %(n)s € par mois")
PER_YEAR = N_("environ %(n)s € par an")
RECEIVED = N_("déjà perçue")
# What a sheet lists: the benefits to claim (probably due, or to check) not received yet.
TO_CLAIM = (Verdict.LIKELY, Verdict.CHECK)


@dataclass(frozen=True)
class Line:
    """One benefit of a check, in words."""

    code: str
    label: str
    verdict: str  # the Verdict value, for styling and tests
    verdict_text: str  # "Probablement éligible — environ 569 € par mois"
    amount_text: str | None  # "environ 569 € par mois", None when hidden or not an amount
    reason: str
    apply_url: str
    apply_label: str
    received: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckView:
    """A check in words: its lines, the month computed, the model's version, the notice."""

    period: str  # "décembre 2026"
    model_version: str
    lines: list[Line]
    notice: str
    source: str  # "Calcul pour décembre 2026 avec OpenFisca-France 176.1.8"
    show_amounts: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "model_version": self.model_version,
            "lines": [line.to_json() for line in self.lines],
            "notice": self.notice,
            "source": self.source,
            "show_amounts": self.show_amounts,
            "received_text": _(RECEIVED),
        }


def euros(amount: int) -> str:
    """An amount in euros the French way: 1 234 (narrow no-break space between thousands)."""
    return f"{amount:,}".replace(",", "\u202f")


def period_text(period: str) -> str:
    """ "2026-12" as "décembre 2026" ("" for what is not a month)."""
    try:
        month = date.fromisoformat(period + "-01")
    except ValueError:
        return ""
    return format_date(month, "MMMM y", locale=babel_locale())


def reason_text(result: BenefitResult) -> str:
    """The result's one-line reason, with the figure it quotes."""
    text = _(REASONS.get(result.reason, REASONS["conditions"]))
    if result.detail is not None and "%(n)s" in text:
        return text % {"n": euros(result.detail)}
    return text


def amount_text(result: BenefitResult) -> str | None:
    """ "environ 569 € par mois" (per year for a yearly benefit), None when there is no amount
    (an eligibility, or not due)."""
    if result.amount is None or result.amount <= 0 or result.verdict is Verdict.UNLIKELY:
        return None
    template = PER_YEAR if result.benefit.period is Period.YEAR else PER_MONTH
    return _(template) % {"n": euros(result.amount)}


def line(result: BenefitResult, *, amounts: bool = True) -> Line:
    """One result in words; ``amounts`` False leaves the amount out (the person did not agree
    that it shows on their sheet)."""
    benefit = BENEFITS[result.code]
    amount = amount_text(result) if amounts else None
    verdict = _(VERDICTS[result.verdict])
    return Line(
        code=result.code,
        label=_(benefit.label),
        verdict=result.verdict.value,
        verdict_text=f"{verdict} — {amount}" if amount else verdict,
        amount_text=amount,
        reason=reason_text(result),
        apply_url=benefit.apply_at,
        apply_label=_(benefit.apply_label),
        received=result.received,
    )


def _order(result: BenefitResult) -> int:
    """Probably due first, then to check, then the rest (the catalogue's order within)."""
    return {Verdict.LIKELY: 0, Verdict.CHECK: 1, Verdict.UNLIKELY: 2}[result.verdict]


def check_view(check: RightsCheck, *, amounts: bool = True, to_claim: bool = False) -> CheckView:
    """A stored check in words: every benefit (the volunteer's view), or with ``to_claim`` only
    those the person should ask for (a sheet's "Aides à demander")."""
    results = sorted(checks.results_of(check), key=_order)
    if to_claim:
        results = [r for r in results if r.verdict in TO_CLAIM and not r.received]
    period = period_text(check.period)
    return CheckView(
        period=period,
        model_version=check.model_version,
        lines=[line(result, amounts=amounts) for result in results],
        notice=_(NOTICE),
        source=_("Calcul pour %(period)s avec OpenFisca-France %(version)s")
        % {"period": period, "version": check.model_version},
        show_amounts=amounts,
    )


async def sheet_rights(db: AsyncSession, sheet: HandoffSheet) -> CheckView | None:
    """What a handoff sheet lists under "Aides à demander": the benefits of its check the
    volunteer put on it, with amounts only if the person agreed; None when there are none."""
    check = await checks.check_of_sheet(db, sheet)
    if check is None or not check.on_sheet:
        return None
    return check_view(check, amounts=check.show_amounts, to_claim=True)


def label_of(code: str) -> str:
    """A benefit's label (for the list of benefits already received)."""
    return _(BENEFITS[code].label)
