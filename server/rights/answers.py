"""The answers of a rights check: what the volunteer types with the person, checked, and the
OpenFisca-France situation they make.

The form (``web/static/js/rights.js``) asks, with skip logic: alone or in a couple; each adult's
age, activity, average monthly resources over the last three months (net salary, unemployment
benefit, pension) and recognised disability rate; the children's ages; the housing (tenant,
social housing, owner, hosted free, homeless), the rent, the postal code and commune; the
benefits the household already receives. A person alone without children answers 12 questions
(the commune is chosen by itself when the postal code has one); a couple adds the partner's six,
and each child its age.

Amounts are euros per month, net. Ages are whole years. Nothing here is stored beyond the check
(``server/rights/checks.py`` says for how long).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date

from server import geo
from server.errors import DomainError, Kind
from server.i18n import _
from server.rights.benefits import BENEFITS

ACTIVITIES = ("salarie", "chomeur", "retraite", "etudiant", "inactif")
# OpenFisca-France's `activite` enum for each of our answers.
OPENFISCA_ACTIVITY = {
    "salarie": "actif",
    "chomeur": "chomeur",
    "retraite": "retraite",
    "etudiant": "etudiant",
    "inactif": "inactif",
}
DISABILITIES = ("none", "lt50", "50_79", "80_plus")
# The rate given to the model for each band: the AAH reads `taux_incapacite` against 50 % and 80 %.
DISABILITY_RATE = {"none": 0.0, "lt50": 0.3, "50_79": 0.6, "80_plus": 0.8}
HOUSINGS = ("tenant", "social_tenant", "owner", "hosted", "homeless")
OPENFISCA_HOUSING = {
    "tenant": "locataire_vide",
    "social_tenant": "locataire_hlm",
    "owner": "proprietaire",
    "hosted": "loge_gratuitement",
    "homeless": "sans_domicile",
}
TENANTS = ("tenant", "social_tenant")

MIN_ADULT_AGE = 16
MAX_AGE = 120
MAX_CHILD_AGE = 24
MAX_CHILDREN = 10
# Above these a monthly amount is surely a typo (a yearly figure, a gross salary with cents
# typed as euros): the form says so rather than compute nonsense.
MAX_SALARY = 20_000
MAX_BENEFIT = 10_000
MAX_RENT = 5_000
# Months of resources given to the model: the RSA and the prime d'activité read the three
# months before the month checked, the complémentaire santé solidaire the last twelve, the
# family benefits and the chèque énergie the tax income of two years before (N-2), hence
# resources "as now" over 36 months.
RESOURCE_MONTHS = 36


class AnswersInvalid(DomainError):
    """Some answers are missing or impossible: French messages by field path (``errors``),
    e.g. ``adults.0.age``, ``rent``, ``commune``."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(
            "invalid",
            _("Certaines réponses sont à corriger : elles sont indiquées en rouge."),
            kind=Kind.INVALID,
            errors=errors,
        )


@dataclass(frozen=True)
class Adult:
    age: int
    activity: str
    salary: float
    unemployment: float
    pension: float
    disability: str


@dataclass(frozen=True)
class Answers:
    adults: tuple[Adult, ...]
    children: tuple[int, ...]  # ages
    housing: str
    rent: float | None
    postal_code: str
    commune: str  # INSEE code
    received: tuple[str, ...]  # benefit codes the household already receives

    @property
    def couple(self) -> bool:
        return len(self.adults) == 2

    @property
    def departement(self) -> str:
        """The INSEE département of the commune (``"2A"``, ``"974"``…)."""
        return self.commune[:3] if self.commune.startswith("97") else self.commune[:2]

    def to_json(self) -> dict[str, object]:
        """The answers as the form sends them (stored with the check, shown again to edit)."""
        return {
            "couple": self.couple,
            "adults": [asdict(adult) for adult in self.adults],
            "children": list(self.children),
            "housing": self.housing,
            "rent": self.rent,
            "postal_code": self.postal_code,
            "commune": self.commune,
            "received": list(self.received),
        }


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 4:
        return int(value.strip())
    return None


def _amount(value: object) -> float | None:
    """Euros as a number; "" and None are 0 (the form leaves a field empty for none)."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip().replace("\u202f", "").replace(" ", "").replace(",", ".")
        if len(value) > 12:
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return round(float(value), 2)
    return None


def _check_amount(errors: dict[str, str], path: str, value: object, limit: int) -> float:
    amount = _amount(value)
    if amount is None:
        errors[path] = _("Écrivez un montant en euros, par exemple 450 ou 450,50.")
        return 0.0
    if amount < 0:
        errors[path] = _("Un montant ne peut pas être négatif.")
    elif amount > limit:
        errors[path] = _("Plus de %(n)s € par mois : vérifiez le montant (par mois, en net).") % {
            "n": f"{limit:,}".replace(",", "\u202f")
        }
    return amount


def _adult(errors: dict[str, str], index: int, raw: object) -> Adult | None:
    path = f"adults.{index}"
    if not isinstance(raw, Mapping):
        errors[path] = _("Répondez aux questions sur cette personne.")
        return None
    age = _int(raw.get("age"))
    if age is None:
        errors[f"{path}.age"] = _("Écrivez l'âge en années, par exemple 42.")
    elif not MIN_ADULT_AGE <= age <= MAX_AGE:
        errors[f"{path}.age"] = _("L'âge d'un adulte va de %(low)d à %(high)d ans.") % {
            "low": MIN_ADULT_AGE,
            "high": MAX_AGE,
        }
    activity = raw.get("activity")
    if activity not in ACTIVITIES:
        errors[f"{path}.activity"] = _("Choisissez ce que fait la personne en ce moment.")
    disability = raw.get("disability") or "none"
    if disability not in DISABILITIES:
        errors[f"{path}.disability"] = _("Choisissez le taux de handicap reconnu, ou « aucun ».")
    salary = _check_amount(errors, f"{path}.salary", raw.get("salary"), MAX_SALARY)
    unemployment = _check_amount(
        errors, f"{path}.unemployment", raw.get("unemployment"), MAX_BENEFIT
    )
    pension = _check_amount(errors, f"{path}.pension", raw.get("pension"), MAX_BENEFIT)
    if age is None or activity not in ACTIVITIES or disability not in DISABILITIES:
        return None
    return Adult(age, str(activity), salary, unemployment, pension, str(disability))


def parse_answers(raw: object) -> Answers:
    """Checked answers, or AnswersInvalid naming every wrong field in French."""
    if not isinstance(raw, Mapping):
        raise AnswersInvalid({"": _("Les réponses n'ont pas pu être lues. Réessayez.")})
    errors: dict[str, str] = {}
    couple = raw.get("couple")
    if not isinstance(couple, bool):
        errors["couple"] = _("Dites si la personne vit seule ou en couple.")
        couple = False
    raw_adults = raw.get("adults")
    if not isinstance(raw_adults, list) or len(raw_adults) != (2 if couple else 1):
        errors["adults"] = _("Répondez aux questions sur chaque adulte du foyer.")
        raw_adults = []
    adults = [_adult(errors, i, item) for i, item in enumerate(raw_adults)]

    raw_children = raw.get("children", [])
    children: list[int] = []
    if not isinstance(raw_children, list) or len(raw_children) > MAX_CHILDREN:
        errors["children"] = _("Indiquez au plus %(n)d enfants à charge.") % {"n": MAX_CHILDREN}
    else:
        for i, item in enumerate(raw_children):
            age = _int(item)
            if age is None or not 0 <= age <= MAX_CHILD_AGE:
                errors[f"children.{i}"] = _(
                    "L'âge d'un enfant à charge va de 0 à %(n)d ans (0 avant un an)."
                ) % {"n": MAX_CHILD_AGE}
            else:
                children.append(age)

    housing = raw.get("housing")
    if housing not in HOUSINGS:
        errors["housing"] = _("Choisissez où vit la personne.")
    rent: float | None = None
    if housing in TENANTS:
        if raw.get("rent") in (None, ""):
            errors["rent"] = _("Écrivez le loyer payé par mois, sans les charges.")
        else:
            rent = _check_amount(errors, "rent", raw.get("rent"), MAX_RENT)
            if rent == 0 and "rent" not in errors:
                errors["rent"] = _("Un locataire paie un loyer : écrivez son montant par mois.")

    postal_raw = raw.get("postal_code")
    postal_code = (
        geo.normalize_postal_code(postal_raw[:20]) if isinstance(postal_raw, str) else None
    )
    commune = raw.get("commune")
    if postal_code is None:
        errors["postal_code"] = _("Le code postal a 5 chiffres, par exemple 13008.")
    elif not geo.communes_for(postal_code):
        errors["postal_code"] = _("Ce code postal n'existe pas. Vérifiez-le sur un courrier.")
    elif not isinstance(commune, str) or not geo.is_commune_of(postal_code, commune):
        errors["commune"] = _("Choisissez la commune dans la liste.")

    raw_received = raw.get("received", [])
    received: list[str] = []
    if not isinstance(raw_received, list) or not all(
        isinstance(code, str) and code in BENEFITS for code in raw_received
    ):
        errors["received"] = _("Cochez les aides déjà perçues dans la liste.")
    else:
        received = sorted(set(raw_received))

    if errors:
        raise AnswersInvalid(errors)
    assert postal_code is not None and isinstance(commune, str) and isinstance(housing, str)
    return Answers(
        adults=tuple(adult for adult in adults if adult is not None),
        children=tuple(children),
        housing=housing,
        rent=rent,
        postal_code=postal_code,
        commune=commune,
        received=tuple(received),
    )


def _month(period: date, back: int) -> str:
    index = period.year * 12 + period.month - 1 - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _birth(period: date, age: int) -> str:
    """A birth date giving ``age`` in the month checked: the middle of the year of age."""
    index = period.year * 12 + period.month - 1 - age * 12 - 6
    return f"{index // 12:04d}-{index % 12 + 1:02d}-01"


def situation(answers: Answers, period: date) -> dict[str, object]:
    """The OpenFisca-France situation (its JSON "entities" form) of these answers, for the month
    of ``period``: resources repeated over RESOURCE_MONTHS months (the person gives an average
    of the last three; the model reads past months), the housing and commune for each month."""
    months = [_month(period, back) for back in range(RESOURCE_MONTHS + 1)]
    individus: dict[str, dict[str, object]] = {}
    adults = [f"adulte{i + 1}" for i in range(len(answers.adults))]
    children = [f"enfant{i + 1}" for i in range(len(answers.children))]
    for name, adult in zip(adults, answers.adults, strict=True):
        person: dict[str, object] = {
            "date_naissance": {"ETERNITY": _birth(period, adult.age)},
            "activite": {month: OPENFISCA_ACTIVITY[adult.activity] for month in months},
        }
        for variables, amount in (
            (("salaire_net", "salaire_imposable"), adult.salary),
            (("chomage_net", "chomage_imposable"), adult.unemployment),
            (("retraite_nette", "retraite_imposable"), adult.pension),
        ):
            if amount:
                for variable in variables:
                    person[variable] = {month: amount for month in months}
        if adult.disability != "none":
            # Every month: the RSA of the month reads the AAH of the three before.
            person["handicap"] = {month: True for month in months}
            person["taux_incapacite"] = {
                month: DISABILITY_RATE[adult.disability] for month in months
            }
            # Between 50 and 79 %, the AAH needs a "restriction substantielle et durable pour
            # l'accès à l'emploi" that only the MDPH recognises: assumed here, and the result
            # says "à vérifier" (server/rights/results.py).
            person["aah_restriction_substantielle_durable_acces_emploi"] = {
                month: adult.disability == "50_79" for month in months
            }
        individus[name] = person
    for name, age in zip(children, answers.children, strict=True):
        individus[name] = {"date_naissance": {"ETERNITY": _birth(period, age)}}
    menage: dict[str, object] = {
        "personne_de_reference": adults[:1],
        "conjoint": adults[1:],
        "enfants": children,
        "depcom": {month: answers.commune for month in months},
        "statut_occupation_logement": {
            month: OPENFISCA_HOUSING[answers.housing] for month in months
        },
    }
    if answers.rent:
        menage["loyer"] = {month: answers.rent for month in months}
    return {
        "individus": individus,
        "familles": {"famille": {"parents": adults, "enfants": children}},
        "foyers_fiscaux": {"foyer": {"declarants": adults, "personnes_a_charge": children}},
        "menages": {"menage": menage},
    }
