"""Operational metrics (prometheus-client), scraped at ``/metrics`` with METRICS_TOKEN.

Counters only count events, never who: no address, phone, e-mail or token is ever a label.
Each server process has its own counters (Prometheus sums the nodes). A counter that an alert
watches is named in SECURITY.md.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["CONTENT_TYPE", "REGISTRY", "exposition"]

REGISTRY = CollectorRegistry(auto_describe=True)

BUDGET_EXCEEDED = Counter(
    "permanence_budget_exceeded",
    "Public actions refused or slowed because a family's global budget was spent.",
    ["family"],
    registry=REGISTRY,
)
BUDGET_SLOW_MODE = Gauge(
    "permanence_budget_slow_mode",
    "1 while a family's global budget is spent (its slower mode is on), as last seen here.",
    ["family"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "permanence_rate_limited",
    "Requests refused by a per-client rate limit.",
    ["rule"],
    registry=REGISTRY,
)
DATABASE_UNAVAILABLE = Counter(
    "permanence_database_unavailable",
    "Requests (layer=http) and socket events or connections (layer=socket) answered 'try again "
    "later' because the database could not be reached.",
    ["layer"],
    registry=REGISTRY,
)
RATELIMIT_FALLBACK = Counter(
    "permanence_ratelimit_storage_fallback",
    "Times this process's rate limits left Redis (unreachable) for its own memory.",
    registry=REGISTRY,
)
RATELIMIT_LOCAL = Gauge(
    "permanence_ratelimit_storage_local",
    "1 while this process counts its rate limits in its own memory because Redis is unreachable.",
    registry=REGISTRY,
)
SMS_WITHHELD = Counter(
    "permanence_sms_withheld",
    "SMS not sent on purpose: reason recipient_cap (SMS_PER_RECIPIENT_PER_DAY), budget "
    "(BUDGET_SMS spent) or region (a number outside PHONE_REGIONS).",
    ["reason"],
    registry=REGISTRY,
)

POW_CHECKED = Counter(
    "permanence_pow_checked",
    "Proofs of work checked on the public forms under pressure, by family and result "
    "(ok, pow_missing, pow_invalid, pow_replayed).",
    ["family", "result"],
    registry=REGISTRY,
)
CLIENT_CAP_REFUSED = Counter(
    "permanence_client_cap_refused",
    "Public actions refused because one client or one phone already holds its share "
    "(too_many_places, too_many_bookings, too_many_bookings_phone).",
    ["cap"],
    registry=REGISTRY,
)
QUEUE_REMOVED_IN_BULK = Counter(
    "permanence_queue_removed_in_bulk",
    'Waiting people removed by a volunteer\'s bulk "retirer", by reason.',
    ["reason"],
    registry=REGISTRY,
)
LOGIN_FAILURES = Counter(
    "permanence_login_failures",
    "Login attempts with a wrong e-mail or password (a hash was computed).",
    registry=REGISTRY,
)
LOGINS_BUSY = Counter(
    "permanence_logins_busy",
    "Login attempts refused with 503 because LOGIN_MAX_CONCURRENT logins were in progress.",
    registry=REGISTRY,
)
PASSWORD_HASH_SECONDS = Counter(
    "permanence_password_hash_seconds",
    "Wall time spent computing argon2 hashes in the password pool (verify and hash).",
    registry=REGISTRY,
)
SOCKETS_REVOKED = Counter(
    "permanence_sockets_revoked",
    "Sockets disconnected because their account or login session lost its access.",
    ["namespace", "reason"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """The text exposition of every metric of this process."""
    return generate_latest(REGISTRY)
