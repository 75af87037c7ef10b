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
Family = Literal[
    "wrong_codes", "bookings", "callback_requests", "queue_joins", "sms", "vault_upload_mb"
]
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
    # Counts that a success may forget (``RateLimiter.forget``): they carry an epoch that
    # forgetting moves on, and the old counts simply expire.
    forgettable: bool = False
    # Counts of something only this process sees (a socket lives on one node): kept in its
    # memory even with Redis, which spares a Redis round trip per socket event.
    local: bool = False

    def __post_init__(self) -> None:
        if self.local and (self.exact or self.forgettable):
            raise ValueError(f"rule {self.name}: a local rule is approximate, never forgotten")


# Every login attempt of a client, counted before any hash is computed.
LOGIN_PER_IP = Rule("login-ip", parse("20/minute"), forgettable=True)  # tests forget it
# Failed logins of one account from one client key, in tiers that make the wait grow: after 5
# failures within 5 minutes the next try waits up to 5 minutes, after 10 within an hour up to an
# hour, after 20 within a day up to a day. A success from that client forgets them. Keyed on the
# account AND the client, a stranger's failures never lock the account's owner out elsewhere.
LOGIN_FAILURES_PER_ACCOUNT = (
    Rule("login-fail-account-5min", parse("5/5 minutes"), forgettable=True),
    Rule("login-fail-account-hour", parse("10/hour"), forgettable=True),
    Rule("login-fail-account-day", parse("20/day"), forgettable=True),
)
# Failed logins of one client key across accounts (credential stuffing); never forgotten early.
LOGIN_FAILURES_PER_IP = (
    Rule("login-fail-ip-hour", parse("30/hour")),
    Rule("login-fail-ip-day", parse("100/day")),
)
CODE_PER_IP = Rule("code-ip", parse("10/minute"))
CODE_PER_IP_HOURLY = Rule("code-ip-hour", parse("60/hour"))
CODE_PER_CODE = Rule("code-code", parse("5/15 minutes"))
# While the global budget of wrong codes is spent: each client's tries, right or wrong, a day.
CODE_SLOW_PER_IP = Rule("code-ip-slow", parse("2/day"))
# A wrong code is counted against the budget after it was checked: requests already past the
# test when the budget runs out are still checked. Twice the budget bounds them (SECURITY.md).
CODE_BUDGET_OVERSHOOT = 2
CONTINUE_PER_SESSION = Rule("continue-session", parse("10/hour"))
SOCKET_CONNECTS_PER_SESSION = Rule("socket-connect-session", parse("30/minute"), exact=False)
SOCKET_EVENTS_PER_PEER = Rule("socket-peer", parse("600/minute"), exact=False, local=True)
SOCKET_ERRORS_PER_PEER = Rule("socket-errors", parse("50/minute"), exact=False, local=True)
# The beneficiary's data-used reports (one every 30 s is enough; each is a database write).
SOCKET_USAGE_PER_PEER = Rule("socket-usage", parse("1/10 seconds"), exact=False, local=True)
# "Document montré" reports (issue 15), each a statistics row: picking and sending a document
# takes longer than this anyway.
SOCKET_VAULT_SHOWN_PER_PEER = Rule(
    "socket-vault-shown", parse("1/10 seconds"), exact=False, local=True
)


def budget_items(settings: Settings) -> dict[Family, RateLimitItem]:
    """Each family's global budget, from its ``BUDGET_<FAMILY>`` setting."""
    return {family: parse(getattr(settings, f"budget_{family}")) for family in FAMILIES}


class LocalWindows:
    """Sliding-window counters in this process's memory, for the ``local`` rules (a socket's own
    events, thousands a second on one node): ``limits``' sliding-window counter (the previous
    window's count, weighted by how much of it still overlaps the last ``expiry`` seconds, plus
    the current window's), kept as one small list per key.

    Synchronous: a dict lookup and a few additions per hit. ``limits``' memory storage took
    ~25 µs a hit at 1,000 events/s, most of it an expiry task, scheduled again on every hit, that
    walks every key (BENCHMARKS.md). Here keys idle for two windows are dropped by a sweep that
    runs at most once per ``SWEEP_SECONDS``.
    """

    SWEEP_SECONDS = 60.0

    def __init__(self) -> None:
        # key -> [window number, previous window's count, current window's count, window length]
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._swept = time.time()

    def _entry(self, item: RateLimitItem, key: tuple[str, ...], now: float) -> list[int]:
        expiry = item.get_expiry()
        window = int(now // expiry)
        entry = self._counts.get(key)
        if entry is None or entry[0] < window - 1:
            entry = self._counts[key] = [window, 0, 0, expiry]
        elif entry[0] == window - 1:
            entry[0], entry[1], entry[2] = window, entry[2], 0
        return entry

    @staticmethod
    def _weighted(entry: list[int], now: float) -> int:
        expiry = entry[3]
        overlap = expiry - now % expiry  # of the previous window, still in the last `expiry` s
        return int(entry[1] * overlap / expiry + entry[2])

    def hit(self, item: RateLimitItem, key: tuple[str, ...], cost: int = 1) -> bool:
        """Count ``cost`` for ``key``; False (nothing counted) once the limit would be passed."""
        now = time.time()
        if now - self._swept >= self.SWEEP_SECONDS:
            self._sweep(now)
        entry = self._entry(item, key, now)
        if self._weighted(entry, now) + cost > item.amount:
            return False
        entry[2] += cost
        return True

    def test(self, item: RateLimitItem, key: tuple[str, ...], cost: int = 1) -> bool:
        """Whether ``cost`` more would pass, uncounted."""
        now = time.time()
        return self._weighted(self._entry(item, key, now), now) + cost <= item.amount

    @staticmethod
    def reset_time(item: RateLimitItem) -> float:
        """When the current window ends (what ``limits`` reports as a sliding window's reset)."""
        expiry = item.get_expiry()
        return (time.time() // expiry + 1) * expiry

    def _sweep(self, now: float) -> None:
        """Drop the keys whose both windows are over: they count nothing any more."""
        self._swept = now
        idle = [key for key, e in self._counts.items() if (e[0] + 2) * e[3] <= now]
        for key in idle:
            del self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)

    def reset(self) -> None:
        """Forget every count."""
        self._counts.clear()


class RateLimiter:
    """Counts hits per rule and identifier; ``hit`` answers False once the limit is passed.
    ``spend`` counts a family's global budget."""

    def __init__(
        self, storage: Storage, budgets: Mapping[Family, RateLimitItem] | None = None
    ) -> None:
        self._storage = storage
        self._exact = MovingWindowRateLimiter(storage)
        self._fast = SlidingWindowCounterRateLimiter(storage)
        self._local = LocalWindows()
        self._budgets: dict[Family, RateLimitItem] = dict(budgets or {})
        self._alerted: dict[Family, float] = {}

    def _strategy(self, rule: Rule) -> MovingWindowRateLimiter | SlidingWindowCounterRateLimiter:
        return self._exact if rule.exact else self._fast

    async def hit(self, rule: Rule, *identifiers: str, cost: int = 1) -> bool:
        """Record one attempt (``cost`` units of it: MB for byte rules); True while under the
        limit."""
        if rule.local:
            if cost != 1:
                raise ValueError(f"rule {rule.name}: a local rule counts one at a time")
            passed = self._local.hit(rule.item, (rule.name, *identifiers))
        else:
            identifiers = await self._with_epoch(rule, identifiers)
            strategy = self._strategy(rule)
            passed = await strategy.hit(rule.item, rule.name, *identifiers, cost=cost)
        if passed:
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
                "global budget %s (BUDGET_%s = %s) is spent: slower mode on",
                family,
                family.upper(),
                self._budgets[family],
            )

    async def allowed(self, rule: Rule, *identifiers: str) -> bool:
        """Whether one more attempt would pass, without counting it."""
        if rule.local:
            return self._local.test(rule.item, (rule.name, *identifiers))
        identifiers = await self._with_epoch(rule, identifiers)
        return await self._strategy(rule).test(rule.item, rule.name, *identifiers)

    async def forget(self, rule: Rule, *identifiers: str) -> None:
        """Forget one identifier's count under a rule (a success after failures)."""
        # Not the strategy's clear(): on the memory storage it races the storage's own expiry
        # task (a KeyError that kills that task, seen under a login flood), and on Redis it
        # would be one more round trip per key. Moving the epoch on abandons the old counts.
        if not rule.forgettable:
            raise ValueError(f"rule {rule.name} is not forgettable")
        await self._storage.incr(self._epoch_key(rule, identifiers), rule.item.get_expiry())

    async def retry_after(self, rule: Rule, *identifiers: str) -> int:
        """Seconds until one more attempt passes under a rule (at least 1)."""
        if rule.local:
            return max(1, int(self._local.reset_time(rule.item) - time.time()) + 1)
        identifiers = await self._with_epoch(rule, identifiers)
        stats = await self._strategy(rule).get_window_stats(rule.item, rule.name, *identifiers)
        return max(1, int(stats.reset_time - time.time()) + 1)

    @staticmethod
    def _epoch_key(rule: Rule, identifiers: tuple[str, ...]) -> str:
        return "/".join(("epoch", rule.name, *identifiers))

    async def _with_epoch(self, rule: Rule, identifiers: tuple[str, ...]) -> tuple[str, ...]:
        """The identifiers of a count, with its epoch for a forgettable rule."""
        if not rule.forgettable:
            return identifiers
        epoch = await self._storage.get(self._epoch_key(rule, identifiers))
        return (*identifiers, str(epoch))

    async def reset(self) -> None:
        """Forget every counter (tests, and `permanence` admin use)."""
        await self._storage.reset()
        self._local.reset()


RATELIMIT_KEY = web.AppKey("ratelimit", RateLimiter)


async def code_try_allowed(limiter: RateLimiter, client: str, code: str) -> bool:
    """Count one try of a join code by ``client`` (a client key): per client and per code and,
    while the wrong-code budget is spent, against the client's small daily allowance."""
    if await limiter.under_pressure("wrong_codes") and not await limiter.hit(
        CODE_SLOW_PER_IP, client
    ):
        return False
    return (
        await limiter.hit(CODE_PER_IP, client)
        and await limiter.hit(CODE_PER_IP_HOURLY, client)
        and await limiter.hit(CODE_PER_CODE, code or "empty")
    )


async def wrong_code(limiter: RateLimiter) -> None:
    """Count a wrong (or not yet usable) code against the global budget."""
    await limiter.spend("wrong_codes")


def per_day(item: RateLimitItem) -> float:
    """How many hits a limit allows in a day."""
    return item.amount * 86_400 / item.get_expiry()


def days_to_first_code_hit(settings: Settings, live_codes: int, clients: int) -> float:
    """Expected days before random guesses from ``clients`` client keys (IPv4 addresses and
    IPv6 prefixes) first hit one of ``live_codes`` codes, at these limits.

    Each guess hits with probability live / 10**digits. The attacker's checked guesses a day are
    at most the wrong-code budget (times the overshoot of requests in flight) while it lasts,
    plus each client's slow-mode allowance once it is spent; per-client limits in normal mode
    are higher than the budget and do not bind. Expected time = 1 / (p × guesses a day)."""
    hit = live_codes / float(10**settings.code_digits)
    budget = CODE_BUDGET_OVERSHOOT * per_day(parse(settings.budget_wrong_codes))
    guesses = budget + clients * per_day(CODE_SLOW_PER_IP.item)
    return 1.0 / (hit * guesses)


def _memory_storage() -> Storage:
    storage = storage_from_string("async+memory://")
    assert isinstance(storage, Storage)
    return storage


def make_storage(redis_url: str) -> Storage:
    """Memory storage, or Redis when a URL is configured — with this process's memory taking
    over while Redis is unreachable (``server/limits_fallback.py``)."""
    if not redis_url:
        return _memory_storage()
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
