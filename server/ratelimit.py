"""Rate limits (login, code guessing, socket floods) and global budgets, on `limits`.

Per-client rules count per client key (``address_key``: an IPv4 address, or the IPv6 prefix a
single host owns, /64 by default). Global budgets count every client together per family of
public action (wrong codes, bookings, call-back requests, queue joins, SMS): once a family's
budget is spent, its owner switches to a slower mode (a proof of work, no SMS, …) and an alert
is raised (a WARNING log line and the ``permanence_budget_exceeded`` metric), instead of doing
unlimited work for a botnet. SECURITY.md gives every number.

In memory by default; shared between server processes through Redis when REDIS_URL is set.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from aiohttp import web
from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from server import limits_fallback
from server.metrics import BUDGET_EXCEEDED, BUDGET_SLOW_MODE, RATE_LIMITED
from server.runtime import SETTINGS_KEY
from server.settings import Settings

log = logging.getLogger(__name__)

# Families of public actions with a global budget (all clients together), each a setting
# ``BUDGET_<FAMILY>`` such as ``200/hour``.
Family = Literal["wrong_codes", "bookings", "callback_requests", "queue_joins", "sms"]
FAMILIES: tuple[Family, ...] = get_args(Family)
ALERT_EVERY_SECONDS = 60.0


def address_key(address: str, ipv6_prefix_length: int) -> str:
    """The rate-limit identity of a client address: a canonical IPv4 address, or the IPv6
    network of ``ipv6_prefix_length`` bits around it (one host usually owns a whole /64, and
    counting each address would give it 2**64 budgets). IPv4-mapped IPv6 counts as IPv4."""
    text = address.strip().strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return "invalid"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix_length), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Rule:
    """A named limit such as ``5/minute``, applied per identifier tuple.

    ``exact`` rules (logins, codes: few hits, security-relevant) use a moving window; the others
    (socket events: thousands per second) an approximate sliding-window counter, because the
    moving window's in-memory clean-up costs most of a core at 1,000 events/s (BENCHMARKS.md).
    """

    name: str
    item: RateLimitItem
    exact: bool = True


LOGIN_PER_IP = Rule("login-ip", parse("20/minute"))
LOGIN_PER_ACCOUNT = Rule("login-account", parse("5/minute"))
CODE_PER_IP = Rule("code-ip", parse("10/minute"))
CODE_PER_IP_HOURLY = Rule("code-ip-hour", parse("60/hour"))
CODE_PER_CODE = Rule("code-code", parse("5/15 minutes"))
CONTINUE_PER_SESSION = Rule("continue-session", parse("10/hour"))
SOCKET_CONNECTS_PER_SESSION = Rule("socket-connect-session", parse("30/minute"), exact=False)
SOCKET_EVENTS_PER_PEER = Rule("socket-peer", parse("600/minute"), exact=False)
SOCKET_ERRORS_PER_PEER = Rule("socket-errors", parse("50/minute"), exact=False)


def budget_items(settings: Settings) -> dict[Family, RateLimitItem]:
    """Each family's global budget, from its ``BUDGET_<FAMILY>`` setting."""
    return {family: parse(getattr(settings, f"budget_{family}")) for family in FAMILIES}


class RateLimiter:
    """Counts hits per rule and identifier; ``hit`` answers False once the limit is passed.
    ``spend`` counts a family's global budget."""

    def __init__(
        self, storage: Storage, budgets: Mapping[Family, RateLimitItem] | None = None
    ) -> None:
        self._storage = storage
        self._exact = MovingWindowRateLimiter(storage)
        self._fast = SlidingWindowCounterRateLimiter(storage)
        self._budgets: dict[Family, RateLimitItem] = dict(budgets or {})
        self._alerted: dict[Family, float] = {}

    def _strategy(self, rule: Rule) -> MovingWindowRateLimiter | SlidingWindowCounterRateLimiter:
        return self._exact if rule.exact else self._fast

    async def hit(self, rule: Rule, *identifiers: str) -> bool:
        """Record one attempt; True while under the limit."""
        if await self._strategy(rule).hit(rule.item, rule.name, *identifiers):
            return True
        RATE_LIMITED.labels(rule.name).inc()
        return False

    async def spend(self, family: Family, cost: int = 1) -> bool:
        """Count ``cost`` units of a family's global budget: True while it lasts; False (and
        an alert) once it is spent, when the caller switches to its slower mode."""
        item = self._budgets.get(family)
        if item is None:
            return True
        if await self._fast.hit(item, "budget", family, cost=cost):
            BUDGET_SLOW_MODE.labels(family).set(0)
            return True
        self._alert(family)
        return False

    async def under_pressure(self, family: Family) -> bool:
        """Whether a family's global budget is spent now (its slower mode is on), uncounted."""
        item = self._budgets.get(family)
        if item is None:
            return False
        spent = not await self._fast.test(item, "budget", family)
        BUDGET_SLOW_MODE.labels(family).set(1 if spent else 0)
        return spent

    def _alert(self, family: Family) -> None:
        """The metric on every refusal; a WARNING line at most once a minute per family."""
        BUDGET_EXCEEDED.labels(family).inc()
        BUDGET_SLOW_MODE.labels(family).set(1)
        now = time.monotonic()
        if now - self._alerted.get(family, -ALERT_EVERY_SECONDS) >= ALERT_EVERY_SECONDS:
            self._alerted[family] = now
            log.warning(
                "global budget %s (%s) is spent: slower mode on", family, self._budgets[family]
            )

    async def allowed(self, rule: Rule, *identifiers: str) -> bool:
        """Whether one more attempt would pass, without counting it."""
        return await self._strategy(rule).test(rule.item, rule.name, *identifiers)

    async def reset(self) -> None:
        """Forget every counter (tests, and `permanence` admin use)."""
        await self._storage.reset()


RATELIMIT_KEY = web.AppKey("ratelimit", RateLimiter)


def make_storage(redis_url: str) -> Storage:
    """Memory storage, or Redis when a URL is configured — with this process's memory taking
    over while Redis is unreachable (``server/limits_fallback.py``)."""
    if not redis_url:
        storage = storage_from_string("async+memory://")
        assert isinstance(storage, Storage)
        return storage
    uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
    redis = storage_from_string(
        uri,
        implementation="redispy",
        wrap_exceptions=True,  # every client error arrives as limits' StorageError
        socket_connect_timeout=limits_fallback.TIMEOUT_SECONDS,
        socket_timeout=limits_fallback.TIMEOUT_SECONDS,
    )
    assert isinstance(redis, Storage)
    return limits_fallback.Storage(redis)


async def ratelimit_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: create the limiter inside the running loop."""
    settings = app[SETTINGS_KEY]
    app[RATELIMIT_KEY] = RateLimiter(make_storage(settings.redis_url), budget_items(settings))
    yield
