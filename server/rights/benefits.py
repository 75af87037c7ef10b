"""The benefits a rights check covers: their codes (stored, counted), French labels, the
OpenFisca-France variables that compute them (checked against the installed model:
``server/rights/DESIGN.md``), where to apply, and how a computed value becomes a verdict.

This module imports nothing from OpenFisca: the web process reads it; only the pool's worker
processes (``server/rights/compute.py``) load the model.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from server.i18n import N_


class Period(enum.StrEnum):
    """The period a variable is computed on: the month checked, or its calendar year."""

    MONTH = "month"
    YEAR = "year"


class Verdict(enum.StrEnum):
    """What the check says of one benefit."""

    LIKELY = "likely"  # probablement éligible
    UNLIKELY = "unlikely"  # probablement pas
    CHECK = "check"  # à vérifier: the model alone cannot say (see the reason)


@dataclass(frozen=True)
class Benefit:
    """One benefit: ``variable`` is the OpenFisca-France variable, of ``entity`` over
    ``period``; ``boolean`` when the model gives an eligibility rather than an amount."""

    code: str
    label: str
    variable: str
    entity: str  # individu | famille | menage
    period: Period
    organisation: str  # server/taxonomy.py ORGANISATIONS code: whom the sheet sends the person to
    apply_at: str  # the official place to apply
    apply_label: str
    boolean: bool = False


BENEFITS: dict[str, Benefit] = {
    b.code: b
    for b in (
        Benefit(
            "rsa",
            N_("Revenu de solidarité active (RSA)"),
            "rsa",
            "famille",
            Period.MONTH,
            "caf",
            "https://www.caf.fr/allocataires/aides-et-demarches/droits-et-prestations/vie-personnelle/le-revenu-de-solidarite-active-rsa",
            N_("Demander sur caf.fr (ou msa.fr pour le régime agricole)"),
        ),
        Benefit(
            "ppa",
            N_("Prime d'activité"),
            "ppa",
            "famille",
            Period.MONTH,
            "caf",
            "https://www.caf.fr/allocataires/aides-et-demarches/droits-et-prestations/emploi-formation/la-prime-d-activite",
            N_("Demander sur caf.fr (ou msa.fr)"),
        ),
        Benefit(
            "aide_logement",
            N_("Aide au logement (APL, ALF ou ALS)"),
            "aide_logement",
            "famille",
            Period.MONTH,
            "caf",
            "https://www.caf.fr/allocataires/aides-et-demarches/droits-et-prestations/logement/les-aides-personnelles-au-logement",
            N_("Demander sur caf.fr (ou msa.fr)"),
        ),
        Benefit(
            "aah",
            N_("Allocation aux adultes handicapés (AAH)"),
            "aah",
            "individu",
            Period.MONTH,
            "mdph",
            "https://www.service-public.gouv.fr/particuliers/vosdroits/F12242",
            N_("Demander à la MDPH du département (formulaire Cerfa 15692)"),
        ),
        Benefit(
            "aspa",
            N_("Allocation de solidarité aux personnes âgées (ASPA, minimum vieillesse)"),
            "aspa",
            "famille",
            Period.MONTH,
            "cnav",
            "https://www.lassuranceretraite.fr/portail-info/sites/pub/home/retraite/aspa.html",
            N_("Demander à sa caisse de retraite (lassuranceretraite.fr)"),
        ),
        Benefit(
            "css_gratuite",
            N_("Complémentaire santé solidaire gratuite"),
            "cmu_c",
            "famille",
            Period.MONTH,
            "cpam",
            "https://www.ameli.fr/assure/droits-demarches/difficultes-acces-droits-soins/complementaire-sante",
            N_("Demander sur ameli.fr (compte ameli, rubrique Mes démarches)"),
            boolean=True,
        ),
        Benefit(
            "css_participation",
            N_(
                "Complémentaire santé solidaire avec participation (moins de 1 € par jour "
                "et par personne)"
            ),
            "css_participation_forfaitaire",
            "famille",
            Period.MONTH,
            "cpam",
            "https://www.ameli.fr/assure/droits-demarches/difficultes-acces-droits-soins/complementaire-sante",
            N_("Demander sur ameli.fr (compte ameli, rubrique Mes démarches)"),
        ),
        Benefit(
            "af",
            N_("Allocations familiales"),
            "af",
            "famille",
            Period.MONTH,
            "caf",
            "https://www.caf.fr/allocataires/aides-et-demarches/droits-et-prestations/vie-personnelle/les-allocations-familiales-af",
            N_("Demander sur caf.fr"),
        ),
        Benefit(
            "cf",
            N_("Complément familial"),
            "cf",
            "famille",
            Period.MONTH,
            "caf",
            "https://www.caf.fr/allocataires/aides-et-demarches/droits-et-prestations/vie-personnelle/le-complement-familial",
            N_("Demander sur caf.fr"),
        ),
        Benefit(
            "asf",
            N_("Allocation de soutien familial (ASF)"),
            "asf",
            "famille",
            Period.MONTH,
            "caf",
            "https://www.caf.fr/allocataires/aides-et-demarches/droits-et-prestations/vie-personnelle/l-allocation-de-soutien-familial-asf",
            N_("Demander sur caf.fr"),
        ),
        Benefit(
            "paje_base",
            N_("Allocation de base de la PAJE (enfant de moins de 3 ans)"),
            "paje_base",
            "famille",
            Period.MONTH,
            "caf",
            "https://www.caf.fr/allocataires/aides-et-demarches/droits-et-prestations/bebe/la-prestation-d-accueil-du-jeune-enfant-paje",
            N_("Demander sur caf.fr"),
        ),
        Benefit(
            "ars",
            N_("Allocation de rentrée scolaire (versée en août)"),
            "ars",
            "famille",
            Period.YEAR,
            "caf",
            "https://www.caf.fr/allocataires/aides-et-demarches/droits-et-prestations/vie-personnelle/l-allocation-de-rentree-scolaire-ars",
            N_("Demander sur caf.fr"),
        ),
        Benefit(
            "cheque_energie",
            N_("Chèque énergie (envoyé une fois par an)"),
            "cheque_energie",
            "menage",
            Period.YEAR,
            "energie",
            "https://chequeenergie.gouv.fr/",
            N_(
                "Vérifier sur chequeenergie.gouv.fr (envoyé sans demande, d'après la "
                "déclaration d'impôts)"
            ),
        ),
    )
}

# Bands of an estimated monthly amount (yearly benefits count for a twelfth): what a statistics
# event may carry instead of an amount. (code, lower bound included, upper bound excluded).
AMOUNT_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("lt50", 0, 50),
    ("50_100", 50, 100),
    ("100_200", 100, 200),
    ("200_400", 200, 400),
    ("400_800", 400, 800),
    ("800_plus", 800, None),
)
# The value the statistics add up for a band (its middle; 1,000 for the open band).
BAND_ESTIMATE: dict[str, int] = {
    "lt50": 25,
    "50_100": 75,
    "100_200": 150,
    "200_400": 300,
    "400_800": 600,
    "800_plus": 1000,
}
# Below this a computed monthly amount is "probably not": the CAF pays no prime d'activité
# under 15 €, nor an aide au logement under 10 €; a few euros of rounding are not a right.
MIN_MONTHLY = {"ppa": 15.0, "aide_logement": 10.0}
DEFAULT_MIN_MONTHLY = 1.0


def amount_band(monthly: float) -> str:
    """The band code of an estimated monthly amount (never negative)."""
    for code, low, high in AMOUNT_BANDS:
        if monthly >= low and (high is None or monthly < high):
            return code
    return AMOUNT_BANDS[0][0]


def monthly_amount(benefit: Benefit, value: float) -> float:
    """A computed value as euros per month (a yearly benefit counts for a twelfth)."""
    return value / 12 if benefit.period is Period.YEAR else value
