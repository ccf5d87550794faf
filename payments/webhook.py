"""The Daraja callback endpoint: ``POST <callback path prefix>/<secret>``.

Daraja signs nothing, so the secret in the path is the credential: it is compared in
constant time, a wrong one looks exactly like any unknown path (404), and it never
reaches the logs. The raw body is stored before anything else; bad bodies get a 4xx
with the reason and are kept for audit; nothing here answers 500.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import replace
from urllib.parse import urlsplit

from aiohttp import web

from payments.callback_sources import CallbackSources, ConfirmPaid, IpMode
from payments.callback_urls import token_matches
from payments.http_body import (
    MAX_BODY_READ_SECONDS,
    MAX_CALLBACK_BYTES,
    not_received_within,
    read_limited,
    storable_text,
)
from payments.inbox import CallbackInbox, InboxUnavailable
from payments.phone import mask_checkout_id
from payments.results import MalformedCallback, parse_callback
from payments.settings import split_callback_path
from payments.settlement import EventStatus

log = logging.getLogger(__name__)

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
    def attempt_route(self) -> str:
        """Each attempt's own URL: the base plus its id and token (``callback_urls``)."""
        return f"{self.prefix}/{{token}}/{{attempt}}/{{attempt_token}}"

    def attempt_matches(self, attempt: str, token: str) -> int | None:
        """The attempt id this URL names, when its token is the one we made for it."""
        if not (attempt.isascii() and attempt.isdigit() and len(attempt) < 10):
            return None
        return int(attempt) if token_matches(self._secret.decode(), int(attempt), token) else None

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


def callback_routes(
    callback_path: CallbackPath,
    sources: CallbackSources | None = None,
    *,
    read_seconds: float = MAX_BODY_READ_SECONDS,
) -> list[web.RouteDef]:
    """``read_seconds``: how long a body has to arrive whole (``http_body``)."""
    sources = sources or CallbackSources(IpMode.OFF, frozenset(), confirm_paid=ConfirmPaid.NEVER)

    async def at_base(request: web.Request) -> web.Response:
        """The bare URL: only callbacks of pushes made before per-attempt URLs count here."""
        if not callback_path.matches(request.match_info["token"]):
            raise web.HTTPNotFound()
        return await _receive(request, None, sources, read_seconds)

    async def at_attempt(request: web.Request) -> web.Response:
        if not callback_path.matches(request.match_info["token"]):
            raise web.HTTPNotFound()  # not even the base secret: a stranger, nothing kept
        info = request.match_info
        attempt_id = callback_path.attempt_matches(info["attempt"], info["attempt_token"])
        if attempt_id is None:
            # The base secret leaked, the token is wrong: refused like a wrong path, and
            # kept (with where it came from) for whoever investigates.
            inbox = request.config_dict[INBOX]
            body = (await read_limited(request, read_seconds=read_seconds)).data
            source = sources.sender(request)
            await _store_refused(
                inbox, storable_text(body), "wrong attempt token", source, EventStatus.FORGED
            )
            raise web.HTTPNotFound()
        return await _receive(request, attempt_id, sources, read_seconds)

    return [
        web.post(callback_path.route, at_base),
        web.post(callback_path.attempt_route, at_attempt),
    ]


async def _receive(
    request: web.Request, attempt_id: int | None, sources: CallbackSources, read_seconds: float
) -> web.Response:
    inbox = request.config_dict[INBOX]
    read = await read_limited(request, read_seconds=read_seconds)
    body, oversized, broken = read
    raw = storable_text(body)
    source = sources.sender(request)
    if read.timed_out and not oversized:
        return await _reject(inbox, raw, not_received_within(read_seconds), 408, source)
    if broken is not None and not oversized:
        return await _reject(inbox, raw, f"the body could not be read ({broken})", 400, source)
    if not sources.admits(source, "callback"):
        return await _reject(inbox, raw, f"source {source} is not listed", 403, source)
    if oversized:
        reason = f"body is larger than {MAX_CALLBACK_BYTES} bytes"
        return await _reject(inbox, raw, reason, 413, source)
    try:
        result = replace(
            parse_callback(body),
            attempt_id=attempt_id,
            needs_confirmation=sources.needs_confirmation(source),
        )
    except MalformedCallback as exc:
        return await _reject(inbox, raw, str(exc), 400, source)
    except Exception as exc:  # a parser bug must not become a 500 or lose the body
        log.exception("unexpected error parsing a callback")
        return await _reject(inbox, raw, f"unreadable body ({type(exc).__name__})", 400, source)
    try:
        status = await inbox.submit(raw, result, source_ip=source)
    except InboxUnavailable as exc:
        # The database is away (a state /readyz reports), not a bug: one line, no traceback.
        log.warning(
            "callback for checkout %s could not be stored (%s); answered 503",
            mask_checkout_id(result.checkout_request_id),
            exc,
        )
        return web.json_response(
            {"ResultCode": 1, "ResultDesc": "Temporarily unable to store the callback"},
            status=503,
        )
    # Held and forged callbacks have their own line from the inbox (masked); the sender's
    # address is what it does not know.
    if status is EventStatus.HELD:
        log.warning("the held callback above came from %s", source)
    if status is EventStatus.FORGED:
        log.warning("the forged callback above came from %s; answered 404", source)
        raise web.HTTPNotFound()
    return web.Response(body=ACCEPTED_BODY, content_type="application/json")


async def _store_refused(
    inbox: CallbackInbox,
    raw: str,
    reason: str,
    source: str | None,
    refused_as: EventStatus = EventStatus.REJECTED,
) -> None:
    try:
        await inbox.submit(raw, None, rejection=reason, source_ip=source, refused_as=refused_as)
    except InboxUnavailable:
        log.exception("a refused callback could not be stored for audit")


async def _reject(
    inbox: CallbackInbox, raw: str, reason: str, status: int, source: str | None
) -> web.Response:
    log.warning("rejected a callback: %s", reason)
    await _store_refused(inbox, raw, reason, source)
    return web.json_response({"ResultCode": 1, "ResultDesc": f"Rejected: {reason}"}, status=status)
