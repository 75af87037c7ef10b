"""gettext through Babel. Message ids are the French texts users read; catalogues under
``server/locale`` carry the other languages of the beneficiary's side (``make messages``
extracts, ``make compile-messages`` compiles).

The language of the text being written is a context variable: the web layer sets it for the
pages a helped person sees (from their choice or their browser), the notification code sets it
to the language a booking, a queue place or a call-back was made in. Everything else, the
volunteers' and coordinators' pages included, reads French."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).parent / "locale"


def N_(message: str) -> str:
    """Mark a message for extraction; it is translated later, where it is shown."""
    return message


DEFAULT_LOCALE = "fr"


@dataclass(frozen=True, slots=True)
class Language:
    """One language of the beneficiary's side. ``code`` is what we store, put in URLs and in
    ``lang`` (BCP 47); ``catalogue`` names the Babel/CLDR locale (its directory under
    ``server/locale``); ``name`` is the language named in itself, as the switch shows it;
    ``french`` its French name, as volunteers' and coordinators' pages say it (through gettext)."""

    code: str
    catalogue: str
    name: str
    french: str
    rtl: bool = False

    @property
    def dir(self) -> str:
        """The document's direction, for ``dir=``."""
        return "rtl" if self.rtl else "ltr"


# The order of the language switch. Dari is Afghan Persian: CLDR has no "prs" locale, so its
# catalogue and dates are fa_AF, and pages say lang="fa-AF" (what screen readers and fonts know).
LANGUAGES: tuple[Language, ...] = (
    Language("fr", "fr", "Français", N_("français")),
    Language("en", "en", "English", N_("anglais")),
    Language("ar", "ar", "العربية", N_("arabe"), rtl=True),
    Language("fa-AF", "fa_AF", "دری", N_("dari"), rtl=True),
    Language("uk", "uk", "Українська", N_("ukrainien")),
    Language("ro", "ro", "Română", N_("roumain")),
    Language("es", "es", "Español", N_("espagnol")),
)
BY_CODE: dict[str, Language] = {language.code: language for language in LANGUAGES}
CODES: tuple[str, ...] = tuple(BY_CODE)
FRENCH = BY_CODE[DEFAULT_LOCALE]
# Stored codes are short: the longest is "fa-AF".
CODE_MAX_CHARS = 8

# The switch's cookie: the person's choice, which wins over their browser's preference.
LANGUAGE_COOKIE = "lang"

_current: ContextVar[Language] = ContextVar("language", default=FRENCH)


def language(code: str | None) -> Language | None:
    """The language for a code as stored, sent in a form or a cookie (case and ``_`` forgiven);
    None when it is not one of ours."""
    if not code or len(code) > CODE_MAX_CHARS:
        return None
    wanted = code.strip().replace("_", "-").lower()
    for candidate in LANGUAGES:
        if candidate.code.lower() == wanted:
            return candidate
    return None


def stored_language(code: str | None) -> Language:
    """The language of a stored row (booking, queue place…): French when unset or unknown."""
    return language(code) or FRENCH


_TAG = re.compile(r"[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*")
# Browsers set a handful of entries; a hostile header is cut short instead of parsed whole.
_ACCEPT_MAX_ITEMS = 20
_ACCEPT_MAX_CHARS = 1000


def negotiate(accept_language: str | None) -> Language:
    """The best of our languages for an ``Accept-Language`` header (RFC 9110 §12.5.4): by
    quality, then order; an exact tag first (``fa-AF``), then its primary language (``en-GB``
    → English, ``fa`` and ``prs`` → Dari); French when nothing matches. An entry with a
    malformed tag or quality counts for nothing."""
    if not accept_language:
        return FRENCH
    ranked: list[tuple[float, int, str]] = []
    items = accept_language[:_ACCEPT_MAX_CHARS].split(",")[:_ACCEPT_MAX_ITEMS]
    for position, item in enumerate(items):
        tag, *parameters = (part.strip() for part in item.split(";"))
        quality = _quality(parameters)
        if quality and _TAG.fullmatch(tag):
            ranked.append((-quality, position, tag.replace("_", "-").lower()))
    for _quality_rank, _position, tag in sorted(ranked):
        found = _match_tag(tag)
        if found is not None:
            return found
    return FRENCH


def _quality(parameters: list[str]) -> float | None:
    """An entry's ``q`` (1 when absent), None when malformed or out of 0–1."""
    for parameter in parameters:
        name, _sep, value = parameter.partition("=")
        if name.strip().lower() != "q":
            continue
        if not re.fullmatch(r"[01](?:\.[0-9]{0,3})?", value.strip()):
            return None
        quality = float(value)
        return quality if quality <= 1 else None
    return 1.0


def preferred(chosen: str | None, accept_language: str | None) -> Language:
    """A helped person's language: the one they chose (the switch's cookie), else the best for
    their browser's ``Accept-Language``."""
    return language(chosen) or negotiate(accept_language)


# Primary subtags that name one of our languages under another code.
_ALIASES = {"fa": "fa-AF", "prs": "fa-AF"}


def _match_tag(tag: str) -> Language | None:
    exact = language(tag)
    if exact is not None:
        return exact
    primary = tag.split("-", 1)[0]
    return language(_ALIASES.get(primary, primary))


@cache
def translations(catalogue: str = DEFAULT_LOCALE) -> NullTranslations:
    """The compiled catalogue for a Babel locale, or the identity when none is compiled."""
    return Translations.load(str(LOCALE_DIR), [catalogue], domain="messages")


def current() -> Language:
    """The language of the text being written now."""
    return _current.get()


def babel_locale() -> str:
    """The Babel locale for dates and numbers in the current language."""
    return _current.get().catalogue


def activate(lang: Language) -> None:
    """Write in ``lang`` for the rest of this task (a request's handler, set by the web layer)."""
    _current.set(lang)


@contextmanager
def use_language(lang: Language | str | None) -> Iterator[Language]:
    """Write in ``lang`` inside the block (a stored code is accepted; unknown means French),
    then back to what it was: messages composed for a person in the language they used."""
    chosen = lang if isinstance(lang, Language) else stored_language(lang)
    token = _current.set(chosen)
    try:
        yield chosen
    finally:
        _current.reset(token)


def gettext(message: str) -> str:
    """Translate a user-facing message into the current language."""
    return translations(_current.get().catalogue).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """Translate a message with a plural form into the current language."""
    return translations(_current.get().catalogue).ngettext(singular, plural, n)


_ = gettext
