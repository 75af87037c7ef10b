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


def exposition() -> bytes:
    """The text exposition of every metric of this process."""
    return generate_latest(REGISTRY)
