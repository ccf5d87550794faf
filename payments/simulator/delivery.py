"""POSTs callbacks to merchants' URLs, once per call, never retrying.

Daraja documents no retry policy and the field reports agree on "at most once, sometimes
twice" (daraja.md §3.5), so a refused connection, a timeout or a non-2xx answer is reported to
the caller as a failed delivery and that is the end of it. C2B validation is the one POST
whose answer matters (daraja.md §8), so ``exchange`` also returns the answer's text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostAnswer:
    """The receiver's HTTP status and body text; both None when the POST did not complete."""

    status: int | None
    text: str | None


_NO_ANSWER = PostAnswer(None, None)


class CallbackPoster:
    """Owns the client session; created lazily because it must be made inside the event loop."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, json_text: str) -> int | None:
        """The HTTP status the receiver answered, or None when the POST did not complete."""
        return (await self.exchange(url, json_text)).status

    async def exchange(
        self, url: str, json_text: str, timeout_seconds: float | None = None
    ) -> PostAnswer:
        """POST ``json_text`` and read the answer; ``timeout_seconds`` overrides the default."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        timeout = (
            self._timeout
            if timeout_seconds is None
            else aiohttp.ClientTimeout(total=timeout_seconds)
        )
        try:
            async with self._session.post(
                url,
                data=json_text.encode(),
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            ) as response:
                # Undecodable bytes are the receiver's mistake, not a failed delivery.
                text = (await response.read()).decode("utf-8", errors="replace")
                return PostAnswer(response.status, text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Only the URL's host: the path of a callback URL often carries a secret.
            log.info("callback to %s failed: %s", _host(url), type(exc).__name__)
            return _NO_ANSWER

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"
