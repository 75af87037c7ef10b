"""Time-limited TURN credentials for coturn's REST API mode (``use-auth-secret``).

coturn checks them without any database: the username is ``"<unix expiry>:<session id>"`` and
the password is ``base64(HMAC-SHA1(static-auth-secret, username))``. SHA-1 is imposed by coturn;
as an HMAC it is still sound, and the credentials expire anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from server.settings import Settings


@dataclass(frozen=True)
class TurnCredentials:
    """A username/password pair coturn accepts until ``expires_at`` (unix seconds)."""

    username: str
    password: str = field(repr=False)
    ttl: int
    expires_at: int


def turn_credentials(
    secret: str, session_id: str, ttl_seconds: int, now: float | None = None
) -> TurnCredentials:
    """Derive the TURN credentials of one assistance session, valid for ``ttl_seconds``."""
    if not secret:
        raise ValueError("the TURN secret is empty")
    if not session_id:
        raise ValueError("the session id is empty")
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    issued = int(time.time() if now is None else now)
    expires_at = issued + ttl_seconds
    username = f"{expires_at}:{session_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    password = base64.b64encode(digest).decode("ascii")
    return TurnCredentials(
        username=username, password=password, ttl=ttl_seconds, expires_at=expires_at
    )


def ice_servers(
    stun_urls: Sequence[str], turn_urls: Sequence[str], credentials: TurnCredentials | None
) -> list[dict[str, object]]:
    """The ``iceServers`` list for RTCPeerConnection; empty when no STUN or TURN is configured."""
    if isinstance(stun_urls, str) or isinstance(turn_urls, str):
        raise TypeError("stun_urls and turn_urls must be sequences of URLs, not one string")
    servers: list[dict[str, object]] = []
    if stun_urls:
        servers.append({"urls": list(stun_urls)})
    if turn_urls:
        if credentials is None:
            raise ValueError("TURN URLs are configured but no TURN credentials were given")
        servers.append(
            {
                "urls": list(turn_urls),
                "username": credentials.username,
                "credential": credentials.password,
            }
        )
    return servers


def session_ice_servers(settings: Settings, session_id: str) -> dict[str, object]:
    """``{"iceServers": [...], "ttl": seconds}`` for one session: what `GET /api/ice-servers`
    answers and what the room pages carry from the start (one round trip less before the first
    offer; they ask the endpoint again before the TURN credentials expire)."""
    credentials = (
        turn_credentials(
            settings.turn_secret.get_secret_value(), session_id, settings.turn_ttl_seconds
        )
        if settings.turn_urls
        else None
    )
    servers = ice_servers(settings.stun_urls, settings.turn_urls, credentials)
    return {"iceServers": servers, "ttl": settings.turn_ttl_seconds}
