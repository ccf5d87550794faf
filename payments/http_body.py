"""Reading a webhook's body: capped, and never a 500 when its framing lies.

Every webhook (STK and C2B callbacks, Telegram, WhatsApp) reads through ``read_limited``,
so a body too large, sent with a false ``Content-Encoding``, or cut short by a sender
that hangs up is answered with a 4xx instead of an unhandled error.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

MAX_CALLBACK_BYTES = 64 * 1024  # Daraja's callbacks are under 1 KiB


class ReadBody(NamedTuple):
    data: bytes  # at most ``limit`` bytes of what arrived
    oversized: bool  # there was more
    broken: str | None  # why the body could not be read whole (a lie in its framing)


async def read_limited(request: web.Request, limit: int = MAX_CALLBACK_BYTES) -> ReadBody:
    """Read at most ``limit`` bytes. A body that cannot be read (a false Content-Encoding,
    a sender that hangs up mid-body) is what arrived, with the reason."""
    chunks: list[bytes] = []
    size = 0
    try:
        # In chunks until the end, not readexactly(Content-Length): with a Content-Encoding
        # the declared length is of the encoded bytes, not of what aiohttp hands us.
        while size <= limit:
            chunk = await request.content.read(limit + 1 - size)
            if not chunk:
                return ReadBody(b"".join(chunks), False, None)
            chunks.append(chunk)
            size += len(chunk)
    except (RequestPayloadError, ConnectionResetError, asyncio.IncompleteReadError) as exc:
        # A declared length over the limit is oversized whether or not it could be decoded.
        oversized = max(size, request.content_length or 0) > limit
        return ReadBody(b"".join(chunks)[:limit], oversized, type(exc).__name__)
    return ReadBody(b"".join(chunks)[:limit], True, None)


def storable_text(body: bytes) -> str:
    """Text a database accepts whatever arrived: PostgreSQL refuses NUL characters."""
    return body.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
