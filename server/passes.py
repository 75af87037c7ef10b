"""The cookies that let a browser in, and how to read them: one module for the web pages and the
Socket.IO namespaces alike.

- ``vp_session`` (``LOGIN_COOKIE``): a volunteer's, coordinator's or referrer's login token.
- ``vp_csrf`` (``CSRF_COOKIE``): the per-browser seed of the CSRF tokens.
- ``vp_benef`` (``BENEFICIARY_COOKIE``): the beneficiary's pass to one assistance session, set
  after a valid link or code: the session id, signed and timed (``SESSION_TTL_HOURS``).
- ``vp_queue`` (``QUEUE_COOKIE``): a waiting person's random place token in the drop-in queue.

Under https (``Settings.secure_cookies``) each is named ``__Host-<name>``: the browser then only
accepts it Secure, for Path=/ and from this exact host, so neither a sibling subdomain nor a
plain-http response can plant or overwrite one. Read and write them through ``cookie_name`` and
``cookie``, never by the bare name.
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
HOST_PREFIX = "__Host-"


def secure_cookie_name(name: str, secure: bool) -> str:
    """``name``, ``__Host-`` prefixed when the site is served over https (``secure``)."""
    return HOST_PREFIX + name if secure else name


def cookie_name(settings: Settings, name: str) -> str:
    """The name a cookie is set and read under: ``__Host-`` prefixed under https."""
    return secure_cookie_name(name, settings.secure_cookies)


def cookie(settings: Settings, cookies: Mapping[str, str], name: str) -> str | None:
    """The value the browser sent for one of our cookies, under its real name."""
    return cookies.get(cookie_name(settings, name)) or None


def login_token(settings: Settings, cookies: Mapping[str, str]) -> str | None:
    """The login token the browser sent, if it can be one."""
    token = cookie(settings, cookies, LOGIN_COOKIE)
    return token if token and len(token) <= MAX_LOGIN_TOKEN else None


def has_beneficiary_pass(settings: Settings, cookies: Mapping[str, str]) -> bool:
    """Whether the browser sent a beneficiary pass cookie (valid or not)."""
    return cookie(settings, cookies, BENEFICIARY_COOKIE) is not None


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
    raw = cookie(settings, cookies, BENEFICIARY_COOKIE)
    if not raw:
        return None
    try:
        value = _beneficiary_serializer(settings).loads(
            raw, max_age=beneficiary_pass_seconds(settings)
        )
    except BadSignature:
        return None
    return value if isinstance(value, str) else None
