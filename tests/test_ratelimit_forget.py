"""Forgetting a client's login failures after a success, without the storage's clear()."""

from __future__ import annotations

import asyncio

import pytest

from server import ratelimit
from server.ratelimit import RateLimiter, make_storage


async def test_a_success_forgets_the_failures_and_the_memory_storage_keeps_expiring(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """limits' memory storage expires keys in a task of its own; clear() racing it killed that
    task with a KeyError under a login flood (seen in the soak). Forgetting moves an epoch."""
    limiter = RateLimiter(make_storage(""))
    rule = ratelimit.LOGIN_FAILURES_PER_ACCOUNT[0]  # 5 in 5 minutes
    for _ in range(5):
        assert await limiter.hit(rule, "a@example.org", "192.0.2.1")
    assert not await limiter.allowed(rule, "a@example.org", "192.0.2.1")
    for round_ in range(20):  # forget while the storage's expiry task runs
        await limiter.forget(rule, "a@example.org", "192.0.2.1")
        assert await limiter.allowed(rule, "a@example.org", "192.0.2.1"), round_
        assert await limiter.hit(rule, "a@example.org", "192.0.2.1")
        await asyncio.sleep(0)
    # Another client's count is its own.
    assert await limiter.allowed(rule, "a@example.org", "192.0.2.2")
    with pytest.raises(ValueError):
        await limiter.forget(ratelimit.CODE_PER_IP, "192.0.2.1")
    assert "Task exception was never retrieved" not in caplog.text
