"""The cookies that let a browser in, and how to read them: one module for the web pages and the
Socket.IO namespaces alike.

- ``vp_session`` (``LOGIN_COOKIE``): a volunteer's, coordinator's or referrer's login token.
- ``vp_csrf`` (``CSRF_COOKIE``): the per-browser seed of the CSRF tokens.
- ``vp_benef`` (``BENEFICIARY_COOKIE``): the beneficiary's pass to one assistance session, set
  after a valid link or code: the session id, signed and timed (``SESSION_TTL_HOURS``).
- ``vp_queue`` (``QUEUE_COOKIE``): a waiting person's random place token in the drop-in queue.
"""

from __future__ import annotations

from collections.abc import Mapping

from itsdangerous import BadSignature, URLSafeTimedSerializer

from server.settings import Settings

LOGIN_COOKIE = "vp_session"
CSRF_COOKIE = "vp_csrf"
BENEFICIARY_COOKIE = "vp_benef"
QUEUE_COOKIE = "vp_queue"
MAX_LOGIN_TOKEN = 128  # longer is never one of ours: not even looked up


def login_token(cookies: Mapping[str, str]) -> str | None:
    """The login token the browser sent, if it can be one."""
    token = cookies.get(LOGIN_COOKIE)
    return token if token and len(token) <= MAX_LOGIN_TOKEN else None


def _beneficiary_serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt="beneficiary-pass")


def beneficiary_pass(settings: Settings, session_id: str) -> str:
    """The value of the pass cookie for one session."""
    return _beneficiary_serializer(settings).dumps(session_id)


def beneficiary_pass_seconds(settings: Settings) -> int:
    """How long a pass is honoured (and kept by the browser)."""
    return settings.session_ttl_hours * 3600


def beneficiary_session_id(settings: Settings, cookies: Mapping[str, str]) -> str | None:
    """The session id in a valid beneficiary pass cookie, if any."""
    raw = cookies.get(BENEFICIARY_COOKIE)
    if not raw:
        return None
    try:
        value = _beneficiary_serializer(settings).loads(
            raw, max_age=beneficiary_pass_seconds(settings)
        )
    except BadSignature:
        return None
    return value if isinstance(value, str) else None
