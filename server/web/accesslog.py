"""An access log that never writes secrets: join tokens, invitation and manage links, codes."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

# Path segments that are secrets (the URL is the credential), and every query string.
SECRET_PATHS = re.compile(r"^/(j|invitation|rendez-vous/gerer)/[^/?]+")


def redact(path: str) -> str:
    """The path with its secret segment and its query string replaced."""
    path, _sep, query = path.partition("?")
    path = SECRET_PATHS.sub(lambda m: f"/{m.group(1)}/<redacted>", path)
    return path + ("?<redacted>" if query else "")


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request: address, method, redacted path, status, size, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the access line (INFO on the aiohttp.access logger)."""
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            request.remote,
            request.method,
            redact(request.path_qs),
            response.status,
            response.body_length,
            time * 1000,
        )
