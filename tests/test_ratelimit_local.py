"""The in-memory counters of a node's own sockets (``local`` rules): the sliding-window
approximation of ``limits``, and idle keys forgotten."""

from __future__ import annotations

import pytest
from limits import parse

from server import ratelimit
from server.ratelimit import LocalWindows, RateLimiter, Rule, make_storage

RULE = Rule("test-local", parse("10/minute"), exact=False, local=True)


class Clock:
    """A settable ``time.time``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(6_000_000.0)  # the start of a one-minute window
    monkeypatch.setattr(ratelimit.time, "time", fake)
    return fake


async def test_a_local_rule_refuses_past_its_limit_and_counts_no_refused_hit(clock: Clock) -> None:
    limiter = RateLimiter(make_storage(""))
    for _ in range(10):
        assert await limiter.hit(RULE, "sid-a")
    assert not await limiter.hit(RULE, "sid-a")
    assert not await limiter.allowed(RULE, "sid-a")
    assert await limiter.hit(RULE, "sid-b")  # another socket counts apart
    assert await limiter.retry_after(RULE, "sid-a") == 61
    # Half a window later, half of the previous window's hits still count: 5 more pass.
    clock.now += 90
    for _ in range(5):
        assert await limiter.hit(RULE, "sid-a")
    assert not await limiter.hit(RULE, "sid-a")
    await limiter.reset()
    assert await limiter.hit(RULE, "sid-a")


def test_the_window_slides_like_limits_sliding_window_counter(clock: Clock) -> None:
    windows = LocalWindows()
    item = RULE.item
    for _ in range(8):
        assert windows.hit(item, ("k",))
    clock.now += 60 + 15  # next window, a quarter in: 8 x 3/4 = 6 still count
    assert windows.test(item, ("k",), cost=4)
    assert not windows.test(item, ("k",), cost=5)
    clock.now += 60  # two windows on: nothing counts
    assert windows.test(item, ("k",), cost=10)


def test_idle_keys_are_swept(clock: Clock) -> None:
    windows = LocalWindows()
    for index in range(100):
        assert windows.hit(RULE.item, ("sid", str(index)))
    assert len(windows) == 100
    clock.now += 30
    assert windows.hit(RULE.item, ("sid", "live"))
    clock.now += LocalWindows.SWEEP_SECONDS + 60  # the 100 are two windows old
    assert windows.hit(RULE.item, ("sid", "live"))
    assert len(windows) == 1
