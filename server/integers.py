"""Whole numbers read from text that people type or programs send: ASCII digits, within bounds.

``str.isdigit()`` is true for "²" or "①", which ``int()`` refuses (a crash, then a 500), and
``int()`` itself accepts " 7", "+7", "7_000" and "٧" (an Arabic-Indic seven): neither is a test
of input. Every place that turns a query, form or path value into an integer calls
``parse_int``; the codes people type go through ``typed_digits``.
"""

from __future__ import annotations

import re
import unicodedata

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
# Longer than any bound below 10**20: refused before ``int()`` reads it.
_DIGITS = re.compile(r"[0-9]{1,20}")


def parse_int(value: object, low: int = 0, high: int = MAX_ID) -> int | None:
    """``value`` as an integer if it is text of ASCII digits between ``low`` and ``high``
    (inclusive), else None."""
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if low <= number <= high else None


def typed_digits(text: str, limit: int) -> str:
    """The decimal digits among the first ``limit`` characters of ``text``, as ASCII: what
    someone meant by a code typed with spaces or dashes, or on a keyboard that writes "٣" or
    "३" (a superscript "²" is no digit of a code)."""
    return "".join(
        str(unicodedata.decimal(char))
        for char in text[:limit]
        if unicodedata.decimal(char, -1) >= 0
    )
