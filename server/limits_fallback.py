"""A `limits` storage that survives a Redis outage: counters live in Redis (shared by every
server process) while it answers, and in this process's memory while it does not.

When a Redis call fails (refused, reset, or no answer within ``timeout`` seconds), the storage
logs a WARNING, counts the switch (``permanence_ratelimit_storage_fallback``), sets
``permanence_ratelimit_storage_local`` to 1 and answers from memory; every ``retry_seconds`` one
call tries Redis again, and the first that succeeds switches back (an INFO line, the gauge back
to 0). Rate limiting never stops and never makes a request wait on a dead Redis for more than
``timeout`` once per ``retry_seconds``.

What an outage costs (SECURITY.md): while in memory each process counts on its own, so a client
spread over N processes gets up to N times a per-client limit; counts made in memory are not
copied to Redis when it returns (Redis's own counters resume where they were, minus what
expired meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from limits.aio.storage import MemoryStorage, MovingWindowSupport, SlidingWindowCounterSupport
from limits.aio.storage import Storage as BaseStorage
from limits.errors import StorageError

from server.metrics import RATELIMIT_FALLBACK, RATELIMIT_LOCAL

log = logging.getLogger(__name__)

T = TypeVar("T")
TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 5.0
# What a failing Redis raises: limits' wrapper, or the socket error itself (refused, reset,
# timed out: all OSError).
FAILURES = (StorageError, OSError)


class Storage(BaseStorage, MovingWindowSupport, SlidingWindowCounterSupport):
    """``primary`` (Redis) while it answers, else this process's memory; see the module."""

    # Not registered under a URI scheme: make_storage builds it around the configured Redis.
    STORAGE_SCHEME = None

    def __init__(
        self,
        primary: BaseStorage,
        *,
        timeout: float = TIMEOUT_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.primary = primary
        self.local = MemoryStorage()
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._retry_at: float | None = None  # None while Redis is in use
        RATELIMIT_LOCAL.set(0)

    @property
    def using_primary(self) -> bool:
        """Whether counters currently go to Redis."""
        return self._retry_at is None

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return FAILURES  # never raised from here: a failure switches to memory instead

    async def _call(
        self, primary: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        """``primary()`` while Redis answers (or when it is time to try it again), else
        ``local()``."""
        if self._retry_at is not None:
            now = self._clock()
            if now < self._retry_at:
                return await local()
            # One probe per period: the calls meanwhile stay local instead of all waiting.
            self._retry_at = now + self.retry_seconds
        try:
            async with asyncio.timeout(self.timeout):
                result = await primary()
        except FAILURES as exc:
            self._failed(exc)
            return await local()
        if self._retry_at is not None:
            self._retry_at = None
            RATELIMIT_LOCAL.set(0)
            log.info("rate limits: Redis answers again, counting there again")
        return result

    def _failed(self, exc: BaseException) -> None:
        if self._retry_at is None:
            RATELIMIT_FALLBACK.inc()
            RATELIMIT_LOCAL.set(1)
            log.warning(
                "rate limits: Redis unreachable (%s), counting in this process's memory; "
                "trying Redis again every %.0f s",
                type(exc).__name__,
                self.retry_seconds,
            )
        self._retry_at = self._clock() + self.retry_seconds

    # -- Storage -------------------------------------------------------------------------------

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return await self._call(
            lambda: self.primary.incr(key, expiry, amount),
            lambda: self.local.incr(key, expiry, amount),
        )

    async def get(self, key: str) -> int:
        return await self._call(lambda: self.primary.get(key), lambda: self.local.get(key))

    async def get_expiry(self, key: str) -> float:
        return await self._call(
            lambda: self.primary.get_expiry(key), lambda: self.local.get_expiry(key)
        )

    async def check(self) -> bool:
        """Healthy as long as one of the two answers: memory always does."""
        return True

    async def reset(self) -> int | None:
        """Forget every counter, in memory and (if it answers) in Redis."""
        await self.local.reset()
        try:
            async with asyncio.timeout(self.timeout):
                return await self.primary.reset()
        except FAILURES as exc:
            self._failed(exc)
            return None

    async def clear(self, key: str) -> None:
        await self.local.clear(key)
        await self._call(lambda: self.primary.clear(key), _nothing)

    # -- MovingWindowSupport -------------------------------------------------------------------

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        primary = self._moving(self.primary)
        return await self._call(
            lambda: primary.acquire_entry(key, limit, expiry, amount),
            lambda: self.local.acquire_entry(key, limit, expiry, amount),
        )

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        primary = self._moving(self.primary)
        return await self._call(
            lambda: primary.get_moving_window(key, limit, expiry),
            lambda: self.local.get_moving_window(key, limit, expiry),
        )

    # -- SlidingWindowCounterSupport -------------------------------------------------------------

    async def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        primary = self._sliding(self.primary)
        return await self._call(
            lambda: primary.acquire_sliding_window_entry(key, limit, expiry, amount),
            lambda: self.local.acquire_sliding_window_entry(key, limit, expiry, amount),
        )

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        primary = self._sliding(self.primary)
        return await self._call(
            lambda: primary.get_sliding_window(key, expiry),
            lambda: self.local.get_sliding_window(key, expiry),
        )

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        primary = self._sliding(self.primary)
        await self.local.clear_sliding_window(key, expiry)
        await self._call(lambda: primary.clear_sliding_window(key, expiry), _nothing)

    @staticmethod
    def _moving(storage: BaseStorage) -> MovingWindowSupport:
        assert isinstance(storage, MovingWindowSupport)
        return storage

    @staticmethod
    def _sliding(storage: BaseStorage) -> SlidingWindowCounterSupport:
        assert isinstance(storage, SlidingWindowCounterSupport)
        return storage


async def _nothing() -> None:
    return None
