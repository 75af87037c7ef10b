"""The one error type of the domain: a rule refused an action.

Domain modules raise ``DomainError`` (or a subclass named for their concept, which adds
nothing but the name) with a stable English ``code`` for developers, a French ``message`` for
the person who asked, and the form ``field`` it concerns, if any. ``kind`` says what sort of
refusal it is; the web layer turns it into an HTTP status in one place
(``server/web/middlewares.py``), as a French page or, under ``/api/``, as JSON. The socket layer
answers with ``{"ok": false, "code", "message"}``. A view only catches it to show the form again
with the message beside the field.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class Kind(enum.StrEnum):
    """What sort of refusal an error is (the web layer maps each to one HTTP status)."""

    INVALID = "invalid"  # the input breaks a rule: 400
    UNAUTHENTICATED = "unauthenticated"  # no valid credentials (an API token): 401
    FORBIDDEN = "forbidden"  # not allowed for this account: 403
    NOT_FOUND = "not_found"  # nothing there, or nothing this caller may see: 404
    CONFLICT = "conflict"  # the state changed or does not allow it now: 409
    GONE = "gone"  # it existed and no longer does (cancelled, purged): 410
    TOO_LARGE = "too_large"  # over a size or space limit (a vault's document, its quota): 413
    RATE_LIMITED = "rate_limited"  # too many attempts: 429
    UNAVAILABLE = "unavailable"  # no capacity right now (a full queue): 503


class DomainError(Exception):
    """A refused action: ``code`` (stable, English), ``message`` (French, for people), the form
    ``field`` it is about, and for a form with several problems ``errors`` (field → message)."""

    default_kind: Kind = Kind.INVALID

    def __init__(
        self,
        code: str,
        message: str,
        field: str | None = None,
        *,
        kind: Kind | None = None,
        errors: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.kind = kind or self.default_kind
        self.errors: dict[str, str] = dict(errors or {})
        if field is not None and field not in self.errors:
            self.errors[field] = message

    def __str__(self) -> str:
        return self.message

    def as_json(self) -> dict[str, object]:
        """The ``error`` object of a JSON answer."""
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.errors and set(self.errors) != {self.field}:
            body["errors"] = dict(self.errors)
        return body
