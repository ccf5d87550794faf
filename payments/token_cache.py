"""One shared, cached Daraja OAuth token.

Daraja's FAQ says each new token invalidates the previous one, so every caller must
share one token: N concurrent first calls make a single request (single flight).
The token is refreshed ahead of its expiry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

REFRESH_MARGIN_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_at: float  # on the cache's monotonic clock


class TokenCache:
    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[str, float]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``fetch`` returns (token, lifetime in seconds)."""
        self._fetch = fetch
        self._clock = clock
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        token = self._token
        if token is not None and self._clock() < token.expires_at:
            return token.value
        async with self._lock:
            # Whoever waited on the lock finds the token the first caller fetched.
            token = self._token
            if token is not None and self._clock() < token.expires_at:
                return token.value
            value, lifetime = await self._fetch()
            margin = min(REFRESH_MARGIN_SECONDS, lifetime / 2)
            self._token = AccessToken(value, self._clock() + lifetime - margin)
            return value

    def invalidate(self, value: str) -> None:
        """Drop ``value`` if it is still the cached token (a newer one is kept)."""
        if self._token is not None and self._token.value == value:
            self._token = None
