"""The Daraja callback endpoint: ``POST <callback path prefix>/<secret>``.

Daraja signs nothing, so the secret in the path is the credential: it is compared in
constant time, a wrong one looks exactly like any unknown path (404), and it never
reaches the logs. The raw body is stored before anything else; bad bodies get a 4xx
with the reason and are kept for audit; nothing here answers 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from urllib.parse import urlsplit

from aiohttp import web

from payments.inbox import CallbackInbox, InboxUnavailable
from payments.results import MalformedCallback, parse_callback
from payments.settings import split_callback_path

log = logging.getLogger(__name__)

MAX_CALLBACK_BYTES = 64 * 1024  # real callbacks are under 1 KiB
ACCEPTED_BODY = json.dumps({"ResultCode": 0, "ResultDesc": "Accepted"}).encode()
INBOX = web.AppKey("callback_inbox", CallbackInbox)


class CallbackPath:
    """Splits the configured callback URL into a public route prefix and its secret.

    The route is the URL's own path, byte for byte: ``bot.config`` normalises the URL once
    (no trailing slash), and Daraja posts to exactly the URL we sent it. A URL whose path
    the route would not match (a trailing slash, no secret) is refused here rather than
    served under a different path than the one Daraja calls.
    """

    def __init__(self, callback_url: str, suffix: str = "") -> None:
        path = urlsplit(callback_url).path
        self.prefix, secret = split_callback_path(callback_url)
        if not secret or path.endswith("/"):
            # The URL is not repeated: its path holds the secret.
            raise ValueError(
                "a callback URL's path must end in its secret, with no trailing slash "
                "(load it through bot.config, which normalises it)"
            )
        self._secret = secret.encode()
        self._suffix = suffix  # a fixed tail after the secret, e.g. "/validate"

    @property
    def route(self) -> str:
        return f"{self.prefix}/{{token}}{self._suffix}"

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._secret)

    def redact(self, path: str) -> str:
        """For access logs: the secret segment becomes ``***``."""
        if path.startswith(self.prefix + "/"):
            return self.prefix + "/***"
        return path


def callback_routes(callback_path: CallbackPath) -> list[web.RouteDef]:
    async def receive_callback(request: web.Request) -> web.Response:
        if not callback_path.matches(request.match_info["token"]):
            raise web.HTTPNotFound()
        inbox = request.config_dict[INBOX]
        body, oversized = await read_limited(request)
        raw = storable_text(body)
        if oversized:
            return await _reject(inbox, raw, f"body is larger than {MAX_CALLBACK_BYTES} bytes", 413)
        try:
            result = parse_callback(body)
        except MalformedCallback as exc:
            return await _reject(inbox, raw, str(exc), 400)
        except Exception as exc:  # a parser bug must not become a 500 or lose the body
            log.exception("unexpected error parsing a callback")
            return await _reject(inbox, raw, f"unreadable body ({type(exc).__name__})", 400)
        try:
            await inbox.submit(raw, result)
        except InboxUnavailable:
            log.exception("callback for %s could not be stored", result.checkout_request_id)
            return web.json_response(
                {"ResultCode": 1, "ResultDesc": "Temporarily unable to store the callback"},
                status=503,
            )
        return web.Response(body=ACCEPTED_BODY, content_type="application/json")

    return [web.post(callback_path.route, receive_callback)]


def storable_text(body: bytes) -> str:
    """Text a database accepts whatever arrived: PostgreSQL refuses NUL characters."""
    return body.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


async def read_limited(request: web.Request) -> tuple[bytes, bool]:
    """Read at most MAX_CALLBACK_BYTES; the flag says there was more."""
    length = request.content_length
    if length is not None and length <= MAX_CALLBACK_BYTES:
        try:
            return await request.content.readexactly(length), False
        except asyncio.IncompleteReadError as exc:
            return exc.partial, False
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_CALLBACK_BYTES:
        chunk = await request.content.read(MAX_CALLBACK_BYTES + 1 - size)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:MAX_CALLBACK_BYTES], True


async def _reject(inbox: CallbackInbox, raw: str, reason: str, status: int) -> web.Response:
    log.warning("rejected a callback: %s", reason)
    try:
        await inbox.submit(raw, None, rejection=reason)
    except InboxUnavailable:
        log.exception("a rejected callback could not be stored for audit")
    return web.json_response({"ResultCode": 1, "ResultDesc": f"Rejected: {reason}"}, status=status)
