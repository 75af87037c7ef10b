"""gettext through Babel. Message ids are the French texts users read; catalogues under
``server/locale`` let other languages follow (``make messages`` extracts, ``make compile``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).parent / "locale"
DEFAULT_LOCALE = "fr"


@cache
def translations(locale: str = DEFAULT_LOCALE) -> NullTranslations:
    """The compiled catalogue for a locale, or the identity when none is compiled."""
    return Translations.load(str(LOCALE_DIR), [locale], domain="messages")


def gettext(message: str) -> str:
    """Translate a user-facing message into the default locale."""
    return translations().gettext(message)


def N_(message: str) -> str:
    """Mark a message for extraction; it is translated later, where it is shown."""
    return message


_ = gettext
