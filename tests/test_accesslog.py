"""Secrets in URLs never reach the access log."""

from __future__ import annotations

import pytest

from server.web.accesslog import redact


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/j/FufYSvBTQn8IwD_dAxA4gFUQxQm0o0DF", "/j/<redacted>"),
        ("/invitation/abc123", "/invitation/<redacted>"),
        ("/rendez-vous/gerer/tok/annuler", "/rendez-vous/gerer/<redacted>/annuler"),
        ("/code?c=123456", "/code?<redacted>"),
        ("/login?next=/tableau", "/login?<redacted>"),
        ("/static/js/common.js", "/static/js/common.js"),
        ("/rendez-vous/motif/3", "/rendez-vous/motif/3"),
    ],
)
def test_secret_segments_and_query_strings_are_redacted(path: str, logged: str) -> None:
    assert redact(path) == logged
