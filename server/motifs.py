"""Motifs: why people book (CAF, ameli, impôts…) and how long a visit lasts, per association."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server import text
from server.errors import DomainError
from server.i18n import _
from server.store.models import Motif, VisitKind
from server.taxonomy import DEFAULT_MOTIF_THEMES

MIN_MINUTES = 15
MAX_MINUTES = 180
STEP_MINUTES = 5  # the booking unit grid: every duration must fall on it
NAME_MAX = 80
DESCRIPTION_MAX = 300


class MotifError(DomainError):
    """A refused motif (name, description or visit length)."""


@dataclass(frozen=True)
class MotifSpec:
    """One default motif: a French label, a short description and the two visit lengths."""

    name: str
    description: str
    first_visit_minutes: int = 60
    follow_up_minutes: int = 30


DEFAULT_MOTIFS: tuple[MotifSpec, ...] = (
    MotifSpec("CAF", "Allocations familiales, aide au logement (APL), prime d'activité, RSA."),
    MotifSpec(
        "ameli / CPAM",
        "Assurance maladie : compte ameli, carte Vitale, remboursements, complémentaire santé.",
    ),
    MotifSpec("Impôts", "Déclaration de revenus, espace particulier, avis d'impôt."),
    MotifSpec("France Travail", "Inscription, actualisation, espace personnel, offres d'emploi."),
    MotifSpec("Retraite", "Demande de retraite en ligne, relevé de carrière."),
    MotifSpec("Logement", "Demande de logement social, dossier de location."),
    MotifSpec("ANTS / titres", "Carte d'identité, passeport, permis de conduire, carte grise."),
    MotifSpec("Énergie", "Chèque énergie, compte électricité ou gaz, factures."),
    MotifSpec("Banque", "Banque en ligne, virements, application de la banque."),
    MotifSpec("Autre", "Une autre démarche en ligne : messagerie, rendez-vous, FranceConnect…"),
)


def duration_for(motif: Motif, kind: VisitKind) -> timedelta:
    """How long a visit of this kind lasts for this motif."""
    minutes = motif.first_visit_minutes if kind is VisitKind.FIRST else motif.follow_up_minutes
    return timedelta(minutes=minutes)


async def ensure_default_motifs(db: AsyncSession, association_id: int) -> list[Motif]:
    """Give an association without any motif the default list; later calls change nothing."""
    has_any = await db.scalar(
        select(func.count()).select_from(Motif).where(Motif.association_id == association_id)
    )
    if not has_any:
        rows = [
            {
                "association_id": association_id,
                "name": spec.name,
                "description": spec.description,
                "first_visit_minutes": spec.first_visit_minutes,
                "follow_up_minutes": spec.follow_up_minutes,
                "position": position,
                "is_active": True,
                "theme": DEFAULT_MOTIF_THEMES.get(spec.name),
            }
            for position, spec in enumerate(DEFAULT_MOTIFS)
        ]
        # ON CONFLICT DO NOTHING: two first requests racing each other both end up with one list.
        conn = await db.connection()
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        await db.execute(insert(Motif).values(rows).on_conflict_do_nothing())
    return await list_motifs(db, association_id)


async def list_motifs(
    db: AsyncSession, association_id: int, *, active_only: bool = False
) -> list[Motif]:
    """The association's motifs in display order."""
    query = select(Motif).where(Motif.association_id == association_id)
    if active_only:
        query = query.where(Motif.is_active.is_(True))
    rows = await db.scalars(query.order_by(Motif.position, Motif.name, Motif.id))
    return list(rows)


async def get_motif(db: AsyncSession, association_id: int, motif_id: int) -> Motif | None:
    """A motif of this association (active or not), or None."""
    return await db.scalar(
        select(Motif).where(Motif.id == motif_id, Motif.association_id == association_id)
    )


def _clean_name(name: str) -> str:
    value = " ".join(name.split())
    if not value or len(value) > NAME_MAX or not text.is_line(value):
        raise MotifError(
            "invalid_name",
            _("Le nom du motif est obligatoire (%(n)d caractères au plus).") % {"n": NAME_MAX},
            "name",
        )
    return value


def _clean_description(description: str | None) -> str | None:
    value = " ".join((description or "").split())
    if len(value) > DESCRIPTION_MAX or not text.is_line(value):
        raise MotifError(
            "description_too_long",
            _("La description est trop longue (%(n)d caractères au plus).")
            % {"n": DESCRIPTION_MAX},
            "description",
        )
    return value or None


def validate_minutes(minutes: int) -> int:
    """A visit length: a multiple of 5 minutes between 15 and 180."""
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int)
        or not MIN_MINUTES <= minutes <= MAX_MINUTES
        or minutes % STEP_MINUTES
    ):
        raise MotifError(
            "invalid_minutes",
            _("La durée doit être un multiple de 5 minutes, entre %(min)d et %(max)d minutes.")
            % {"min": MIN_MINUTES, "max": MAX_MINUTES},
        )
    return minutes


async def _check_name_free(
    db: AsyncSession, association_id: int, name: str, motif_id: int | None = None
) -> None:
    query = select(Motif.id).where(
        Motif.association_id == association_id, func.lower(Motif.name) == name.lower()
    )
    if motif_id is not None:
        query = query.where(Motif.id != motif_id)
    if await db.scalar(query) is not None:
        raise MotifError("name_taken", _("Un motif porte déjà ce nom."), "name")


async def create_motif(
    db: AsyncSession,
    association_id: int,
    *,
    name: str,
    description: str | None = None,
    first_visit_minutes: int = 60,
    follow_up_minutes: int = 30,
) -> Motif:
    """Add a motif at the end of the list (the coordinator's form)."""
    name = _clean_name(name)
    await _check_name_free(db, association_id, name)
    last = await db.scalar(
        select(func.max(Motif.position)).where(Motif.association_id == association_id)
    )
    motif = Motif(
        association_id=association_id,
        name=name,
        description=_clean_description(description),
        first_visit_minutes=validate_minutes(first_visit_minutes),
        follow_up_minutes=validate_minutes(follow_up_minutes),
        position=0 if last is None else last + 1,
        is_active=True,
    )
    db.add(motif)
    await db.flush()
    return motif


async def update_motif(
    db: AsyncSession,
    association_id: int,
    motif_id: int,
    *,
    name: str,
    description: str | None,
    first_visit_minutes: int,
    follow_up_minutes: int,
    position: int | None = None,
) -> Motif | None:
    """Change a motif; booked appointments keep the length they were booked with."""
    motif = await get_motif(db, association_id, motif_id)
    if motif is None:
        return None
    name = _clean_name(name)
    await _check_name_free(db, association_id, name, motif_id)
    motif.name = name
    motif.description = _clean_description(description)
    motif.first_visit_minutes = validate_minutes(first_visit_minutes)
    motif.follow_up_minutes = validate_minutes(follow_up_minutes)
    if position is not None:
        motif.position = position
    await db.flush()
    return motif


async def set_motif_active(
    db: AsyncSession, association_id: int, motif_id: int, active: bool
) -> bool:
    """Hide a motif from booking (or show it again); existing appointments stay."""
    result = await db.execute(
        update(Motif)
        .where(Motif.id == motif_id, Motif.association_id == association_id)
        .values(is_active=active)
        .returning(Motif.id)
    )
    return result.scalar_one_or_none() is not None


async def deactivate_motif(db: AsyncSession, association_id: int, motif_id: int) -> bool:
    """Hide a motif from booking; existing appointments stay."""
    return await set_motif_active(db, association_id, motif_id, False)
