"""The site's public addresses that leave it: links in SMS, e-mails and calendar files, QR codes.

The domain writes these into messages before any page exists to ask a router, so each is
declared here once, by route name and path; the web layer registers its route with the very
same ``Link`` (``@routes.get(links.JOIN.path, name=links.JOIN.name)``) and a test checks that
every link is routed as declared. Pages link to each other with the router (``url()`` in
templates, ``url_for()`` in views), never with these.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from server.settings import Settings


@dataclass(frozen=True)
class Link:
    """A named route whose absolute URL is sent to people."""

    name: str
    path: str  # an aiohttp route path with plain ``{part}`` placeholders

    def url(
        self, settings: Settings, query: dict[str, str | int] | None = None, **parts: str
    ) -> str:
        """The absolute URL, on the public BASE_URL."""
        path = self.path.format(**parts)
        if query:
            path += "?" + urlencode(query)
        return settings.url(path)


HOME = Link("home", "/")
LOGIN = Link("login", "/login")
JOIN = Link("join-link", "/j/{token}")
CODE = Link("code", "/code")
BOOKING = Link("booking-motifs", "/rendez-vous")
BOOKING_SLOTS = Link("booking-slots", "/rendez-vous/motif/{motif_id}")
BOOKING_MANAGE = Link("booking-manage", "/rendez-vous/gerer/{token}")
DROP_IN = Link("dropin", "/aide")
CALLBACK_MANAGE = Link("callback-cancel-page", "/rappel/annuler/{token}")
SHEET = Link("handoff-read", "/fiche/{token}")
INVITATION = Link("invitation", "/invitation/{token}")
QUEUE = Link("queue", "/file")
CALLBACKS = Link("callbacks", "/rappels")
STATS = Link("stats", "/stats")
VAULT = Link("vault", "/coffre")
TRUSTEE = Link("vault-trustee-page", "/coffre/confiance")

ALL: tuple[Link, ...] = (
    HOME,
    LOGIN,
    JOIN,
    CODE,
    BOOKING,
    BOOKING_SLOTS,
    BOOKING_MANAGE,
    DROP_IN,
    CALLBACK_MANAGE,
    SHEET,
    INVITATION,
    QUEUE,
    CALLBACKS,
    STATS,
    VAULT,
    TRUSTEE,
)
