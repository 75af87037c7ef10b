"""Operational metrics (prometheus-client), scraped at ``/metrics`` (METRICS_TOKEN, or from
the same machine when no token is set).

Counters only count events, never who: no address, phone, e-mail or token is ever a label, and
every label has a small fixed set of values (a route's name, never its path). Each server
process has its own counters (Prometheus sums the nodes). A counter that an alert watches is
named in SECURITY.md.

Two kinds of figures:

- counters and histograms updated where things happen (``REGISTRY``);
- gauges read at scrape time (``Snapshot``): sockets and rooms of this node, the database
  pool, and what the database says of the queue and the outbox. The web layer gathers them
  (``server/web/observability.py``) with a time bound; a part it could not read is left out of
  the scrape and counted in ``permanence_scrape_errors_total{source}``, so that /metrics
  answers even while the database is down.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.models import OutboxMessage, OutboxStatus, QueueEntry, QueueStatus

__all__ = ["CONTENT_TYPE", "REGISTRY", "DatabaseState", "Snapshot", "exposition"]

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


HTTP_SECONDS = Histogram(
    "permanence_http_request_duration_seconds",
    "Time to answer an HTTP request, by the matched route's name (unmatched: no route; "
    "unnamed: Socket.IO polling). WebSocket upgrades are not timed.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
# Fine around the 10 ms goal of issue 13: "p99 <= 10 ms" reads off the 0.01 bucket exactly.
LOOP_LAG_BUCKETS = (
    *(0.0005, 0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.025),
    *(0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LOOP_LAG = Histogram(
    "permanence_event_loop_lag_seconds",
    "How late the event loop ran a timer that was due (sampled every 10 ms): time during which "
    "nothing else, sockets included, was served.",
    buckets=LOOP_LAG_BUCKETS,
    registry=REGISTRY,
)
LOOP_LAG_BUSY = Histogram(
    "permanence_event_loop_lag_busy_seconds",
    "The part of each loop-lag sample during which the loop's thread was running (at most its "
    "CPU time over the sample): lag this process caused itself, such as a long callback, as "
    "opposed to waiting for a CPU taken by other processes.",
    buckets=LOOP_LAG_BUCKETS,
    registry=REGISTRY,
)
LOOP_LAG_LAST = Gauge(
    "permanence_event_loop_lag_last_seconds",
    "The event loop's lag at its last sample.",
    registry=REGISTRY,
)
SIGNALING_RELAYED = Counter(
    "permanence_signaling_relayed",
    "Signalling messages (offer, answer, candidate) relayed from one peer to another on /assist.",
    ["event"],
    registry=REGISTRY,
)
NOTIFICATIONS_SENT = Counter(
    "permanence_notifications_sent",
    "Notifications handed over to their transport (SMTP server, SMS provider, file, console).",
    ["channel"],
    registry=REGISTRY,
)
NOTIFICATIONS_FAILED = Counter(
    "permanence_notifications_failed",
    "Attempts to send a notification that failed, by channel and whether retrying can help "
    "(permanent=true: refused for good, e.g. an address or number the provider rejects).",
    ["channel", "permanent"],
    registry=REGISTRY,
)
RIGHTS_CHECKS = Counter(
    "permanence_rights_checks",
    "Rights checks computed by this node's OpenFisca-France pool, by outcome (ok, failed: "
    "a worker died or the check timed out, busy: refused because the pool was full).",
    ["outcome"],
    registry=REGISTRY,
)
RIGHTS_CHECK_SECONDS = Histogram(
    "permanence_rights_check_seconds",
    "Time from asking the pool to the answer, for checks that succeeded.",
    buckets=(0.25, 0.5, 1, 1.5, 2, 3, 5, 8, 13, 30),
    registry=REGISTRY,
)
RIGHTS_POOL_RESTARTS = Counter(
    "permanence_rights_pool_restarts",
    "Times the rights check's process pool was replaced (a worker died or hung).",
    registry=REGISTRY,
)
SCRAPE_ERRORS = Counter(
    "permanence_scrape_errors",
    "Parts of a /metrics scrape that could not be read in time (source=database: the queue and "
    "outbox gauges were left out of that scrape).",
    ["source"],
    registry=REGISTRY,
)
SCRAPE_ERRORS.labels("database")  # shown at 0 from the start: alerts see the first one


@dataclass(frozen=True)
class DatabaseState:
    """What the database says of the queue and the outbox, all associations together."""

    queue_waiting: int
    queue_oldest_seconds: float
    outbox_pending: int
    outbox_failed: int
    outbox_oldest_pending_seconds: float


def _age(now: datetime, then: datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


async def database_state(db: AsyncSession, now: datetime) -> DatabaseState:
    """Three small aggregate queries on indexed columns (status first)."""
    waiting, oldest_queued = (
        await db.execute(
            select(func.count(), func.min(QueueEntry.queued_at)).where(
                QueueEntry.status == QueueStatus.WAITING
            )
        )
    ).one()
    pending, oldest_due = (
        await db.execute(
            select(func.count(), func.min(OutboxMessage.send_after)).where(
                OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.send_after <= now
            )
        )
    ).one()
    failed = await db.scalar(
        select(func.count()).where(OutboxMessage.status == OutboxStatus.FAILED)
    )
    return DatabaseState(
        queue_waiting=int(waiting or 0),
        queue_oldest_seconds=_age(now, oldest_queued),
        outbox_pending=int(pending or 0),
        outbox_failed=int(failed or 0),
        outbox_oldest_pending_seconds=_age(now, oldest_due),
    )


@dataclass(frozen=True)
class Snapshot:
    """The gauges read at scrape time; a part that could not be read is None (left out)."""

    node: str
    sockets: Mapping[str, int] = field(default_factory=dict)  # namespace → connected sockets
    rooms: Mapping[str, int] = field(default_factory=dict)  # namespace → rooms (not per-sid)
    engineio_connections: int | None = None
    pool_checked_out: int | None = None
    pool_size: int | None = None
    database: DatabaseState | None = None


class SnapshotCollector(Collector):
    """Exposes one ``Snapshot`` in Prometheus form."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges of the snapshot, each labelled with this node."""
        shot = self.snapshot
        sockets = GaugeMetricFamily(
            "permanence_sockets",
            "Socket.IO clients connected to this node, by namespace.",
            labels=["namespace", "node"],
        )
        for namespace, count in sorted(shot.sockets.items()):
            sockets.add_metric([namespace, shot.node], count)
        yield sockets
        rooms = GaugeMetricFamily(
            "permanence_socket_rooms",
            "Socket.IO rooms with at least one client on this node (assistances, associations' "
            "queues, waiting pages), by namespace.",
            labels=["namespace", "node"],
        )
        for namespace, count in sorted(shot.rooms.items()):
            rooms.add_metric([namespace, shot.node], count)
        yield rooms
        if shot.engineio_connections is not None:
            yield _gauge(
                "permanence_engineio_connections",
                "Engine.IO connections (WebSocket or long polling) open on this node.",
                shot.node,
                shot.engineio_connections,
            )
        if shot.pool_checked_out is not None:
            yield _gauge(
                "permanence_database_pool_checked_out",
                "Database connections in use by this node now.",
                shot.node,
                shot.pool_checked_out,
            )
        if shot.pool_size is not None:
            yield _gauge(
                "permanence_database_pool_size",
                "Connections this node's database pool keeps (overflow not counted).",
                shot.node,
                shot.pool_size,
            )
        state = shot.database
        if state is None:
            return
        yield _gauge(
            "permanence_queue_waiting",
            "People waiting in the drop-in queues (all associations).",
            None,
            state.queue_waiting,
        )
        yield _gauge(
            "permanence_queue_oldest_wait_seconds",
            "How long the person waiting longest in a drop-in queue has waited (0: nobody).",
            None,
            state.queue_oldest_seconds,
        )
        yield _gauge(
            "permanence_outbox_pending",
            "Notifications due and not sent yet (the worker is behind if this stays high).",
            None,
            state.outbox_pending,
        )
        yield _gauge(
            "permanence_outbox_failed",
            "Notifications given up after their last attempt (coordinators can retry them).",
            None,
            state.outbox_failed,
        )
        yield _gauge(
            "permanence_outbox_oldest_pending_seconds",
            "How long the oldest due notification has waited to be sent (0: none).",
            None,
            state.outbox_oldest_pending_seconds,
        )


def _gauge(name: str, documentation: str, node: str | None, value: float) -> GaugeMetricFamily:
    """A single-sample gauge, labelled with the node for figures of this process only (the
    database's figures are the same seen from every node)."""
    if node is None:
        return GaugeMetricFamily(name, documentation, value=value)
    gauge = GaugeMetricFamily(name, documentation, labels=["node"])
    gauge.add_metric([node], value)
    return gauge


def exposition(snapshot: Snapshot | None = None) -> bytes:
    """The text exposition of every metric of this process, and of a scrape-time snapshot."""
    body = generate_latest(REGISTRY)
    if snapshot is None:
        return body
    extra = CollectorRegistry(auto_describe=False)
    extra.register(SnapshotCollector(snapshot))
    return body + generate_latest(extra)
