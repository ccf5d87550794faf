"""The shared OAuth token: one request for many callers, refreshed before it expires."""

from __future__ import annotations

import asyncio

from payments.token_cache import TokenCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingFetch:
    def __init__(self, lifetime: float = 3599.0) -> None:
        self.calls = 0
        self.lifetime = lifetime

    async def __call__(self) -> tuple[str, float]:
        self.calls += 1
        await asyncio.sleep(0.01)  # let the other callers pile up behind the lock
        return f"token-{self.calls}", self.lifetime


async def test_concurrent_first_calls_make_one_request() -> None:
    fetch = CountingFetch()
    cache = TokenCache(fetch, FakeClock())
    tokens = await asyncio.gather(*(cache.get() for _ in range(50)))
    assert fetch.calls == 1
    assert set(tokens) == {"token-1"}


async def test_token_is_refreshed_five_minutes_before_expiry() -> None:
    fetch, clock = CountingFetch(), FakeClock()
    cache = TokenCache(fetch, clock)
    assert await cache.get() == "token-1"
    clock.now += 3599 - 301
    assert await cache.get() == "token-1"
    clock.now += 2
    assert await cache.get() == "token-2"


async def test_short_lifetimes_refresh_at_half_life() -> None:
    fetch, clock = CountingFetch(lifetime=60), FakeClock()
    cache = TokenCache(fetch, clock)
    await cache.get()
    clock.now += 29
    assert await cache.get() == "token-1"
    clock.now += 2
    assert await cache.get() == "token-2"


async def test_invalidate_drops_only_the_token_that_failed() -> None:
    fetch = CountingFetch()
    cache = TokenCache(fetch, FakeClock())
    stale = await cache.get()
    cache.invalidate(stale)
    fresh = await cache.get()
    cache.invalidate(stale)  # a second caller reporting the same old token changes nothing
    assert await cache.get() == fresh == "token-2"
    assert fetch.calls == 2
