"""What free text a person may type: any character but the invisible ones that do harm.

One rule for every free-text field (a booking's message, an interpreter's language, a motif, an
absence's reason, a partner's name, a handoff sheet), stated once so that the form check, the API
schema and the socket layer agree.

Refused: control characters (the line ends and tab only where text has lines), the line and
paragraph separators, the bidirectional embeddings, overrides and isolates (they reorder what the
reader sees, "Trojan source"), and the two non-characters U+FFFE and U+FFFF. Everything else is
accepted, on purpose:

- the zero-width joiner and non-joiner (Persian and Indic scripts need them inside words, emoji
  sequences join with them), which ``str.isprintable()`` refuses;
- characters newer than this server's Unicode tables (a recent emoji typed on a new phone): the
  server does not know them yet, the person's phone does. A rule by Unicode category would refuse
  them, and would disagree with whatever Unicode version the API client validates against.

The ranges are written as code points, so the pattern means the same in Python, in pydantic's
Rust engine and in any JSON Schema validator.
"""

from __future__ import annotations

import re

# (first, last) code points, inclusive.
_REFUSED_ALWAYS = (
    (0x00, 0x08),  # C0 controls before the tab
    (0x0B, 0x0C),  # vertical tab, form feed
    (0x0E, 0x1F),  # the other C0 controls
    (0x7F, 0x9F),  # delete and the C1 controls
    (0x2028, 0x2029),  # line and paragraph separators
    (0x202A, 0x202E),  # bidirectional embeddings and overrides
    (0x2066, 0x2069),  # bidirectional isolates
    (0xFFFE, 0xFFFF),  # non-characters
)
_LINE_CONTROLS = ((0x09, 0x0A), (0x0D, 0x0D))  # tab, line feed, carriage return


def _class(ranges: tuple[tuple[int, int], ...]) -> str:
    parts = []
    for first, last in ranges:
        start = f"\\u{first:04X}"
        parts.append(start if first == last else f"{start}-\\u{last:04X}")
    return "".join(parts)


# JSON Schema / ECMA-262 patterns (also valid for Python's re and Rust's regex).
LINE_PATTERN = f"^[^{_class(_REFUSED_ALWAYS + _LINE_CONTROLS)}]*$"
"""One line of free text."""
LINES_PATTERN = f"^[^{_class(_REFUSED_ALWAYS)}]*$"
"""Free text over several lines (tab, line feed and carriage return allowed)."""

_LINE = re.compile(LINE_PATTERN)
_LINES = re.compile(LINES_PATTERN)
_HARMFUL_IN_LINES = re.compile(f"[{_class(_REFUSED_ALWAYS)}]")


def is_line(value: str) -> bool:
    """Whether ``value`` is acceptable as one line of free text."""
    return _LINE.fullmatch(value) is not None


def is_lines(value: str) -> bool:
    """Whether ``value`` is acceptable as free text over several lines."""
    return _LINES.fullmatch(value) is not None


def without_harmful(value: str) -> str:
    """``value`` with the refused characters (but line ends and tabs) taken out."""
    return _HARMFUL_IN_LINES.sub("", value)
