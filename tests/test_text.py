"""The one rule for free text (server/text.py), as the form check, the API schema and the
socket layer apply it."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, Field, ValidationError

from server import text

ACCEPTED = [
    "",
    "Bonjour, j'ai besoin d'aide pour la CAF.",
    "می\u200cخواهم",  # Persian: zero-width non-joiner inside the word
    "👨\u200d👩\u200d👧",  # an emoji family, joined by zero-width joiners
    "\U0001fae8",  # Unicode 15, newer than Python 3.11's tables
    "\u20f9",  # not assigned yet: a future character, not a harmful one
    "\u00a0insécable\u202f!",  # French typography's spaces
    "\ue000",  # private use (a logo some phones show)
]
REFUSED_EVERYWHERE = [
    *("\x00", "\x07", "\x0b", "\x0c", "\x1b[31m", "\x7f", "\x85"),  # controls
    *("\u2028", "\u2029"),  # line and paragraph separators
    *("\u202a", "\u202e", "\u2066", "\u2069"),  # bidirectional embeddings, overrides, isolates
    *("\ufffe", "\uffff"),  # non-characters
]
LINE_ENDS = ["a\nb", "a\r\nb", "a\tb"]


class _Line(BaseModel):
    value: str = Field(pattern=text.LINE_PATTERN)


class _Lines(BaseModel):
    value: str = Field(pattern=text.LINES_PATTERN)


def _schema_accepts(model: type[BaseModel], value: str) -> bool:
    try:
        model(value=value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("value", ACCEPTED)
def test_any_script_and_newer_characters_are_accepted(value: str) -> None:
    assert text.is_line(value) and text.is_lines(value)
    assert _schema_accepts(_Line, value) and _schema_accepts(_Lines, value)
    assert text.without_harmful(value) == value


@pytest.mark.parametrize("value", REFUSED_EVERYWHERE)
def test_controls_separators_and_bidi_overrides_are_refused(value: str) -> None:
    typed = f"avant{value}après"
    assert not text.is_line(typed) and not text.is_lines(typed)
    # pydantic's Rust engine reads the pattern as Python's re does.
    assert not _schema_accepts(_Line, typed) and not _schema_accepts(_Lines, typed)
    cleaned = text.without_harmful(typed)
    assert text.is_lines(cleaned) and cleaned.startswith("avant") and cleaned.endswith("après")


@pytest.mark.parametrize("value", LINE_ENDS)
def test_line_ends_only_where_text_has_lines(value: str) -> None:
    assert not text.is_line(value) and text.is_lines(value)
    assert not _schema_accepts(_Line, value) and _schema_accepts(_Lines, value)
    assert text.without_harmful(value) == value


def test_the_patterns_name_code_points_only() -> None:
    # No Unicode category (\p{…}): what a category holds depends on the engine's Unicode version,
    # which is how the API schema and the server once disagreed about U+20F9.
    for pattern in (text.LINE_PATTERN, text.LINES_PATTERN):
        assert "\\p" not in pattern
        assert re.fullmatch(r"\^\[\^(?:\\u[0-9A-F]{4}(?:-\\u[0-9A-F]{4})?)+\]\*\$", pattern)
