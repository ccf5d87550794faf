"""Reading a webhook's body: capped, and never a 500 when its framing lies.

Every webhook (STK and C2B callbacks, Telegram, WhatsApp) reads through ``read_limited``,
so a body too large, sent with a false ``Content-Encoding``, cut short by a sender that
hangs up, or not sent whole in time is answered with a 4xx instead of an unhandled error.

The time limit is on the whole body, not on each read: a sender that dribbles a byte a
second (slowloris) never leaves a read idle for long, yet would hold the handler for as
long as it liked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

log = logging.getLogger(__name__)
MAX_CALLBACK_BYTES = 64 * 1024  # Daraja's callbacks are under 1 KiB
# Daraja, Telegram and Meta send a whole body in well under a second.
MAX_BODY_READ_SECONDS = 10.0
READ_TIMED_OUT = "timeout"  # ReadBody.broken for a body not received in time


class ReadBody(NamedTuple):
    data: bytes  # at most ``limit`` bytes of what arrived
    oversized: bool  # there was more
    # Why the body could not be read whole: a lie in its framing (the exception's name),
    # or READ_TIMED_OUT.
    broken: str | None

    @property
    def timed_out(self) -> bool:
        """The body did not arrive whole within the deadline (answer 408)."""
        return self.broken == READ_TIMED_OUT


def chat_webhook_refusal(read: ReadBody, platform: str) -> web.Response | None:
    """The answer to a chat platform (Telegram, WhatsApp) whose body could not be read
    whole, or None when it was: it redelivers what it did not see acknowledged."""
    if read.oversized:
        return web.json_response({"error": "body too large"}, status=413)
    if read.timed_out:
        log.info("refused a %s webhook body not received in time", platform)
        return web.json_response({"error": "body not received in time"}, status=408)
    if read.broken is not None:  # a false Content-Encoding, or a sender that hung up
        log.info("refused a %s webhook body that cannot be read (%s)", platform, read.broken)
        return web.json_response({"error": "body cannot be read"}, status=400)
    return None


def not_received_within(seconds: float) -> str:
    """The reason a timed-out body is kept with."""
    return f"the body was not received within {seconds:g} seconds"


async def read_limited(
    request: web.Request,
    limit: int = MAX_CALLBACK_BYTES,
    read_seconds: float = MAX_BODY_READ_SECONDS,
) -> ReadBody:
    """Read at most ``limit`` bytes within ``read_seconds`` in all. A body that cannot be
    read (a false Content-Encoding, a sender that hangs up mid-body or is too slow) is
    what arrived, with the reason."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(read_seconds):
            # In chunks until the end, not readexactly(Content-Length): with a
            # Content-Encoding the declared length is of the encoded bytes, not of what
            # aiohttp hands us.
            while size <= limit:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    return ReadBody(b"".join(chunks), False, None)
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError:
        return _cut_short(request, chunks, size, limit, READ_TIMED_OUT)
    except (RequestPayloadError, ConnectionResetError, asyncio.IncompleteReadError) as exc:
        return _cut_short(request, chunks, size, limit, type(exc).__name__)
    return ReadBody(b"".join(chunks)[:limit], True, None)


def _cut_short(
    request: web.Request, chunks: list[bytes], size: int, limit: int, why: str
) -> ReadBody:
    # A declared length over the limit is oversized whether or not it could be read.
    oversized = max(size, request.content_length or 0) > limit
    return ReadBody(b"".join(chunks)[:limit], oversized, why)


def storable_text(body: bytes) -> str:
    """Text a database accepts whatever arrived: PostgreSQL refuses NUL characters."""
    return body.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
