"""Rate limits (login, code guessing, socket floods) on the `limits` library.

In memory by default; shared between server processes through Redis when REDIS_URL is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from server.runtime import SETTINGS_KEY


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


class RateLimiter:
    """Counts hits per rule and identifier; ``hit`` answers False once the limit is passed."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._exact = MovingWindowRateLimiter(storage)
        self._fast = SlidingWindowCounterRateLimiter(storage)

    def _strategy(self, rule: Rule) -> MovingWindowRateLimiter | SlidingWindowCounterRateLimiter:
        return self._exact if rule.exact else self._fast

    async def hit(self, rule: Rule, *identifiers: str) -> bool:
        """Record one attempt; True while under the limit."""
        return await self._strategy(rule).hit(rule.item, rule.name, *identifiers)

    async def allowed(self, rule: Rule, *identifiers: str) -> bool:
        """Whether one more attempt would pass, without counting it."""
        return await self._strategy(rule).test(rule.item, rule.name, *identifiers)

    async def reset(self) -> None:
        """Forget every counter (tests, and `permanence` admin use)."""
        await self._storage.reset()


RATELIMIT_KEY = web.AppKey("ratelimit", RateLimiter)


def make_storage(redis_url: str) -> Storage:
    """Memory storage, or Redis when a URL is configured."""
    uri = "async+memory://"
    if redis_url:
        uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
    storage = storage_from_string(uri)
    assert isinstance(storage, Storage)
    return storage


async def ratelimit_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: create the limiter inside the running loop."""
    app[RATELIMIT_KEY] = RateLimiter(make_storage(app[SETTINGS_KEY].redis_url))
    yield
