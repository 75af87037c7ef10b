"""Matching a person with a volunteer who speaks their language (issue 17).

A person whose pages are in another language than French may tick "Je veux un bénévole qui parle
ma langue" on the drop-in form or in the booking. The queue (server/dropin/places.py, "Prendre
le suivant") and the booking (server/availability.py, server/booking.py) then prefer the
volunteers who declared that language on their profile (``user_languages``,
server/accounts.py). This module holds what both share: the cleaned choice, and the SQL test
"this volunteer speaks this language".
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, ColumnExpressionArgument, exists, select

from server import i18n
from server.store.models import UserLanguage

FRENCH = i18n.FRENCH.code


@dataclass(frozen=True, slots=True)
class LanguageChoice:
    """The language a person used (a code of server/i18n.py) and whether they asked for a
    volunteer who speaks it (never for French: everyone here speaks it)."""

    language: str = FRENCH
    wanted: bool = False

    @classmethod
    def of(cls, language: str | None, wanted: object = False) -> LanguageChoice:
        """The choice from what a page or a body gave: an unknown language counts as French, and
        asking for a French-speaking volunteer asks for nothing."""
        code = i18n.stored_language(language).code
        return cls(code, bool(wanted) and code != FRENCH)

    @property
    def wanted_language(self) -> str | None:
        """The language to match, or None when the person asked for nothing."""
        return self.language if self.wanted else None


FRENCH_ONLY = LanguageChoice()


def speaks(
    user_id: ColumnExpressionArgument[int] | int, language: ColumnExpressionArgument[str] | str
) -> ColumnElement[bool]:
    """SQL: the account ``user_id`` declared ``language`` (columns or values), read from the
    ``user_languages`` index in the caller's statement (one transaction, every node)."""
    return exists(
        select(UserLanguage.user_id).where(
            UserLanguage.user_id == user_id, UserLanguage.language == language
        )
    )
