"""From the model's values to what the volunteer reads: for each benefit "probablement éligible —
environ N € par mois", "probablement pas" or "à vérifier", with a one-line reason.

The reasons are codes (stored with the check, so that a sheet read later, or in another language,
says them in the reader's language); ``REASONS`` holds their French text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from server.i18n import N_
from server.rights.answers import TENANTS, Answers
from server.rights.benefits import (
    BENEFITS,
    DEFAULT_MIN_MONTHLY,
    MIN_MONTHLY,
    Benefit,
    Period,
    Verdict,
    monthly_amount,
)

REASONS: dict[str, str] = {
    "likely": N_("Les ressources et la situation indiquées ouvrent probablement ce droit."),
    "rsa_likely": N_("Les ressources du foyer sont sous le montant garanti par le RSA."),
    "rsa_age": N_(
        "Le RSA est réservé aux 25 ans et plus, sauf pour les parents et les jeunes qui ont "
        "assez travaillé."
    ),
    "ppa_likely": N_("Les revenus du travail du foyer ouvrent probablement ce droit."),
    "ppa_no_work": N_(
        "La prime d'activité complète des revenus du travail : aucun salaire indiqué."
    ),
    "housing_likely": N_("Le loyer et les ressources indiqués ouvrent probablement ce droit."),
    "housing_not_tenant": N_("Les aides au logement vont aux personnes qui paient un loyer."),
    "aah_likely": N_(
        "Le taux d'incapacité et les ressources indiqués ouvrent probablement ce droit."
    ),
    "aah_no_rate": N_("La MDPH doit reconnaître un taux d'incapacité d'au moins 50 %."),
    "aah_rsdae": N_(
        "Entre 50 et 79 %, la MDPH doit aussi reconnaître une difficulté durable d'accès à "
        "l'emploi."
    ),
    "aspa_age": N_(
        "L'ASPA est versée à partir de 65 ans (62 ans en cas d'inaptitude au travail ou de "
        "handicap)."
    ),
    "css_free": N_("Les ressources sont sous le plafond de la complémentaire santé gratuite."),
    "css_participation": N_(
        "Les ressources ouvrent la complémentaire santé avec une petite participation : environ "
        "%(n)s € par mois pour le foyer."
    ),
    "css_free_instead": N_("La complémentaire santé solidaire gratuite convient mieux."),
    "no_children": N_("Pour les familles avec des enfants à charge."),
    "af_one_child": N_("Les allocations familiales commencent au deuxième enfant (en métropole)."),
    "asf_couple": N_("Pour un parent qui élève seul son enfant."),
    "asf_check": N_("Si l'autre parent ne verse pas de pension alimentaire, ou pas entièrement."),
    "paje_age": N_("Pour un enfant de moins de 3 ans."),
    "cf_children": N_("Pour les familles d'au moins trois enfants de 3 ans ou plus."),
    "ars_age": N_("Pour les enfants de 6 à 18 ans qui vont à l'école."),
    "ars_likely": N_("Versée en août pour chaque enfant de 6 à 18 ans scolarisé."),
    "energy_tax": N_(
        "Envoyé sans demande à partir de la déclaration de revenus : il faut l'avoir faite, "
        "même sans revenus."
    ),
    "resources_high": N_("Avec les réponses données, les ressources dépassent le plafond."),
    "conditions": N_("Avec les réponses données, les conditions ne sont pas remplies."),
}


@dataclass(frozen=True)
class BenefitResult:
    """One line of the result. ``amount`` is what the person would receive over the benefit's
    period (per month, or per year for a yearly one), rounded to the euro; ``detail`` a figure
    the reason quotes (the participation to the complémentaire santé)."""

    code: str
    verdict: Verdict
    amount: int | None
    reason: str
    received: bool = False
    detail: int | None = None

    @property
    def benefit(self) -> Benefit:
        return BENEFITS[self.code]

    @property
    def monthly(self) -> float | None:
        """The estimated amount per month (a yearly benefit counts for a twelfth)."""
        if self.amount is None:
            return None
        return monthly_amount(self.benefit, self.amount)

    @property
    def unclaimed(self) -> bool:
        """Probably due and not received: what the statistics count and the sheet lists."""
        return self.verdict is Verdict.LIKELY and not self.received

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "verdict": self.verdict.value,
            "amount": self.amount,
            "reason": self.reason,
            "received": self.received,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> BenefitResult:
        return cls(
            code=str(item["code"]),
            verdict=Verdict(item["verdict"]),
            amount=item.get("amount"),
            reason=str(item["reason"]),
            received=bool(item.get("received")),
            detail=item.get("detail"),
        )


def period_of(benefit: Benefit, month: date) -> str:
    """The OpenFisca period string of ``benefit`` for the month checked."""
    return f"{month.year:04d}" if benefit.period is Period.YEAR else f"{month:%Y-%m}"


def variables(month: date) -> list[tuple[str, str]]:
    """What to ask the model: every benefit's variable and period."""
    return [(b.variable, period_of(b, month)) for b in BENEFITS.values()]


def _total(values: Mapping[str, Sequence[float | bool]], benefit: Benefit) -> float:
    return float(sum(float(v) for v in values.get(benefit.variable, [0.0])))


def _flag(values: Mapping[str, Sequence[float | bool]], benefit: Benefit) -> bool:
    return any(bool(v) for v in values.get(benefit.variable, [False]))


def interpret(
    answers: Answers, values: Mapping[str, Sequence[float | bool]]
) -> list[BenefitResult]:
    """The verdict, amount and reason of every benefit, from the model's ``values`` (variable →
    one value per entity of the situation) and the answers they came from."""
    ages = [adult.age for adult in answers.adults]
    children = answers.children
    salaried = any(adult.salary > 0 for adult in answers.adults)
    results: list[BenefitResult] = []

    def add(
        code: str, verdict: Verdict, amount: float | None, reason: str, detail: float | None = None
    ) -> None:
        results.append(
            BenefitResult(
                code=code,
                verdict=verdict,
                amount=None if amount is None else round(amount),
                reason=reason,
                received=code in answers.received,
                detail=None if detail is None else round(detail),
            )
        )

    for code, benefit in BENEFITS.items():
        if code == "css_gratuite":
            if _flag(values, benefit):
                add(code, Verdict.LIKELY, None, "css_free")
            else:
                add(code, Verdict.UNLIKELY, None, "resources_high")
            continue
        if code == "css_participation":
            cost = _total(values, benefit)
            if _flag(values, BENEFITS["css_gratuite"]):
                add(code, Verdict.UNLIKELY, None, "css_free_instead")
            elif cost > 0:
                add(code, Verdict.LIKELY, None, "css_participation", detail=cost)
            else:
                add(code, Verdict.UNLIKELY, None, "resources_high")
            continue
        value = _total(values, benefit)
        due = monthly_amount(benefit, value) >= MIN_MONTHLY.get(code, DEFAULT_MIN_MONTHLY)
        if due:
            verdict, reason = Verdict.LIKELY, "likely"
            if code == "rsa":
                reason = "rsa_likely"
            elif code == "ppa":
                reason = "ppa_likely"
            elif code == "aide_logement":
                reason = "housing_likely"
            elif code == "aah":
                reason = "aah_likely"
                if any(adult.disability == "50_79" for adult in answers.adults):
                    verdict, reason = Verdict.CHECK, "aah_rsdae"
            elif code == "asf":
                verdict, reason = Verdict.CHECK, "asf_check"
            elif code == "ars":
                reason = "ars_likely"
            elif code == "cheque_energie":
                verdict, reason = Verdict.CHECK, "energy_tax"
            add(code, verdict, value, reason)
            continue
        # Why not, in the words that fit the answers.
        reason = "resources_high"
        if code == "rsa" and all(age < 25 for age in ages) and not children:
            reason = "rsa_age"
        elif code == "ppa" and not salaried:
            reason = "ppa_no_work"
        elif code == "aide_logement" and answers.housing not in TENANTS:
            reason = "housing_not_tenant"
        elif code == "aah" and all(
            adult.disability in ("none", "lt50") for adult in answers.adults
        ):
            reason = "aah_no_rate"
        elif code == "aspa" and all(age < 62 for age in ages):
            reason = "aspa_age"
        elif code in ("af", "cf", "asf", "paje_base", "ars") and not children:
            reason = "no_children"
        elif code == "af" and len([age for age in children if age < 20]) < 2:
            reason = "af_one_child"
        elif code == "asf" and answers.couple:
            reason = "asf_couple"
        elif code == "paje_base" and not any(age < 3 for age in children):
            reason = "paje_age"
        elif code == "cf" and len([age for age in children if 3 <= age < 21]) < 3:
            reason = "cf_children"
        elif code == "ars" and not any(6 <= age <= 18 for age in children):
            reason = "ars_age"
        elif code in ("asf", "cheque_energie"):
            reason = "conditions"
        add(code, Verdict.UNLIKELY, None, reason)
    return results
