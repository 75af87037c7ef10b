"""The fixed lists a handoff sheet (fiche navette) and the statistics share: themes aligned with
the activity report of La Coop de la médiation numérique, the organisations people deal with,
autonomy and outcome. Codes are stored; labels are French through gettext."""

from __future__ import annotations

from server.i18n import N_, _

# Themes of the La Coop de la médiation numérique activity report ("thématiques
# administratives" of an accompaniment).
THEMES: dict[str, str] = {
    "papiers": N_("Papiers, citoyenneté"),
    "famille": N_("Famille, scolarité"),
    "social_sante": N_("Social, santé"),
    "travail": N_("Travail, formation"),
    "logement": N_("Logement"),
    "transports": N_("Transports, mobilité"),
    "argent_impots": N_("Argent, impôts"),
    "justice": N_("Justice"),
    "etrangers": N_("Étrangers"),
    "loisirs": N_("Loisirs, sports, culture"),
    "associations": N_("Associations"),
}

ORGANISATIONS: dict[str, str] = {
    "caf": N_("CAF"),
    "cpam": N_("CPAM / ameli"),
    "dgfip": N_("Impôts (DGFiP)"),
    "france_travail": N_("France Travail"),
    "cnav": N_("Retraite (CNAV, Carsat)"),
    "msa": N_("MSA"),
    "ants": N_("ANTS (titres)"),
    "prefecture": N_("Préfecture (titres de séjour)"),
    "mdph": N_("MDPH"),
    "energie": N_("Énergie (chèque énergie, fournisseur)"),
    "bailleur": N_("Bailleur, logement social"),
    "banque": N_("Banque, La Poste"),
    "mairie": N_("Mairie, CCAS"),
    "ecole": N_("École, université, Crous"),
    "autre": N_("Autre organisme"),
}

AUTONOMY: dict[str, str] = {
    "alone": N_("La personne a fait seule"),
    "with_help": N_("La personne a fait avec de l'aide"),
    "done_for": N_("Fait pour la personne"),
}

OUTCOMES: dict[str, str] = {
    "resolved": N_("Démarche terminée"),
    "partial": N_("En partie faite"),
    "follow_up": N_("À suivre (un autre rendez-vous)"),
    "oriented": N_("Orientée vers une autre structure"),
}

# Document categories of the vault (coffre-fort, server/vault/DESIGN.md): the codes the page
# sends and the statistics count; ``non_precise`` when the person keeps the category encrypted.
VAULT_CATEGORIES: dict[str, str] = {
    "identite": N_("Identité"),
    "caf": N_("CAF"),
    "impots": N_("Impôts"),
    "sante": N_("Santé"),
    "logement": N_("Logement"),
    "emploi": N_("Emploi"),
    "retraite": N_("Retraite"),
    "autre": N_("Autre"),
}
VAULT_NON_PRECISE = "non_precise"
VAULT_NON_PRECISE_LABEL = N_("Non précisé (gardé chiffré)")

# The theme of each default motif (server/motifs.py), so that demand that never became a session
# (people who left the queue, call-backs unanswered) still counts under a theme.
DEFAULT_MOTIF_THEMES: dict[str, str] = {
    "CAF": "social_sante",
    "ameli / CPAM": "social_sante",
    "Impôts": "argent_impots",
    "France Travail": "travail",
    "Retraite": "social_sante",
    "Logement": "logement",
    "ANTS / titres": "papiers",
    "Énergie": "logement",
    "Banque": "argent_impots",
}


def label(table: dict[str, str], code: str | None) -> str:
    """The French label of a code, or the code itself if unknown (never an error)."""
    if code is None:
        return ""
    message = table.get(code)
    return _(message) if message is not None else code


def clean_codes(table: dict[str, str], values: object, limit: int = 20) -> list[str]:
    """The known codes among ``values``, in the table's order, without duplicates."""
    if not isinstance(values, list | tuple | set | frozenset):
        return []
    wanted = {value for value in list(values)[:100] if isinstance(value, str)}
    return [code for code in table if code in wanted][:limit]
