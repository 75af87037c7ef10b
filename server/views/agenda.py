"""Routes of this page family are registered by add_routes (being written)."""

from __future__ import annotations

from aiohttp import web


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this module's routes."""
