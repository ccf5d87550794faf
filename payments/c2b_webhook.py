"""The C2B endpoints: Daraja's confirmation (and optional validation) of Paybill payments.

Like the STK callback, each URL ends in its own long secret, compared in constant time;
a wrong one is a plain 404. The confirmation's raw body is stored (with what it did) in
the same transaction that pays the order or records unmatched money, and Daraja is
answered ``{"ResultCode": 0, "ResultDesc": "Success"}`` only after that commit. A bad
body gets a 4xx with the reason and is kept for audit; nothing here answers 500.

Where a request came from is judged as for the STK callback (``callback_sources``, the
same ``DUKA_CALLBACK_IP_MODE``): every stored confirmation keeps its source address; in
``enforce`` an unlisted sender gets 403 (a confirmation's body is kept, nothing paid).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from payments.c2b import (
    Verdict,
    apply_confirmation,
    judge,
    parse_c2b,
    store_failed,
    store_rejected,
)
from payments.callback_sources import CallbackSources, IpMode
from payments.http_body import (
    MAX_BODY_READ_SECONDS,
    MAX_CALLBACK_BYTES,
    not_received_within,
    read_limited,
    storable_text,
)
from payments.results import MalformedCallback
from payments.webhook import CallbackPath
from storage.engine import Database

log = logging.getLogger(__name__)

VALIDATION_SUFFIX = "/validate"
SUCCESS = {"ResultCode": 0, "ResultDesc": "Success"}
# Daraja's C2B validation answers (daraja.md §8).
ACCEPT = {"ResultCode": "0", "ResultDesc": "Accepted"}
_REJECT_CODES = {
    Verdict.UNKNOWN_ACCOUNT: "C2B00012",  # invalid account number
    Verdict.ORDER_NOT_PAYABLE: "C2B00012",
    Verdict.WRONG_AMOUNT: "C2B00013",  # invalid amount
}
OTHER_ERROR = "C2B00016"


@dataclass(frozen=True, slots=True)
class C2BIntake:
    """What the C2B routes need, made at start-up (the routes exist before the database)."""

    database: Database
    clock: Callable[[], datetime]
    on_applied: Callable[[], None]


INTAKE = web.AppKey("c2b_intake", C2BIntake)


def c2b_paths(confirmation_url: str, validation_url: str) -> tuple[CallbackPath, CallbackPath]:
    """(confirmation, validation) paths; validation defaults to the confirmation URL plus
    ``/validate``, under the same secret."""
    confirmation = CallbackPath(confirmation_url)
    if validation_url == confirmation_url + VALIDATION_SUFFIX:
        return confirmation, CallbackPath(confirmation_url, VALIDATION_SUFFIX)
    return confirmation, CallbackPath(validation_url)


def c2b_routes(
    confirmation: CallbackPath,
    validation: CallbackPath,
    sources: CallbackSources | None = None,
    *,
    read_seconds: float = MAX_BODY_READ_SECONDS,
) -> list[web.RouteDef]:
    """``sources``: the STK callback's own (off when not given); ``read_seconds``: how long
    a body has to arrive whole (``http_body``)."""
    sources = sources or CallbackSources(IpMode.OFF, frozenset())

    async def confirm(request: web.Request) -> web.Response:
        if not confirmation.matches(request.match_info["token"]):
            raise web.HTTPNotFound()
        intake = request.config_dict[INTAKE]
        read = await read_limited(request, read_seconds=read_seconds)
        body, oversized, broken = read
        raw = storable_text(body)
        source = sources.sender(request)
        if read.timed_out and not oversized:
            return await _refuse(intake, raw, not_received_within(read_seconds), 408, source)
        if broken is not None and not oversized:
            reason = f"the body could not be read ({broken})"
            return await _refuse(intake, raw, reason, 400, source)
        if not sources.admits(source, "C2B confirmation"):
            return await _refuse(intake, raw, f"source {source} is not listed", 403, source)
        if oversized:
            reason = f"body is larger than {MAX_CALLBACK_BYTES} bytes"
            return await _refuse(intake, raw, reason, 413, source)
        try:
            payment = parse_c2b(body)
        except MalformedCallback as exc:
            return await _refuse(intake, raw, str(exc), 400, source)
        except Exception as exc:  # a parser bug must not become a 500 or lose the body
            log.exception("unexpected error parsing a C2B confirmation")
            reason = f"unreadable body ({type(exc).__name__})"
            return await _refuse(intake, raw, reason, 400, source)
        try:
            outcome = await intake.database.transaction(
                apply_confirmation, payment, raw, intake.clock(), source_ip=source
            )
        except Exception as exc:
            log.exception("C2B confirmation %s could not be stored", payment.trans_id)
            # Keep the body for a person if anything can still be written (e.g. a bug in
            # applying it rather than a database that is down).
            with contextlib.suppress(Exception):
                await intake.database.transaction(
                    store_failed,
                    raw,
                    f"not applied: {type(exc).__name__}",
                    intake.clock(),
                    source_ip=source,
                )
            return web.json_response(
                {"ResultCode": 1, "ResultDesc": "Temporarily unable to store the payment"},
                status=503,
            )
        log.info("C2B confirmation %s: %s", payment.trans_id, outcome)
        intake.on_applied()
        return web.json_response(SUCCESS)

    async def validate(request: web.Request) -> web.Response:
        if not validation.matches(request.match_info["token"]):
            raise web.HTTPNotFound()
        intake = request.config_dict[INTAKE]
        read = await read_limited(request, read_seconds=read_seconds)
        body, oversized, broken = read
        if read.timed_out and not oversized:
            why = not_received_within(read_seconds)
            return web.json_response(_rejection(OTHER_ERROR, why), status=408)
        if not sources.admits(sources.sender(request), "C2B validation"):
            return web.json_response(_rejection(OTHER_ERROR, "source not listed"), status=403)
        try:
            if oversized or broken:
                raise MalformedCallback("body too large or unreadable")
            payment = parse_c2b(body)
            target = await intake.database.transaction(judge, payment)
        except MalformedCallback as exc:
            return web.json_response(_rejection(OTHER_ERROR, str(exc)))
        except Exception:
            # Refusing costs the customer a retry; accepting blind could take money for
            # nothing. Daraja's own timeout rule would apply ResponseType instead.
            log.exception("C2B validation failed")
            return web.json_response(_rejection(OTHER_ERROR, "try again"))
        if target.verdict is Verdict.PAYS_ORDER:
            return web.json_response(ACCEPT)
        log.info("C2B validation for %s refused: %s", payment.trans_id, target.verdict)
        return web.json_response(_rejection(_REJECT_CODES[target.verdict], str(target.verdict)))

    return [web.post(confirmation.route, confirm), web.post(validation.route, validate)]


def _rejection(code: str, why: str) -> dict[str, str]:
    return {"ResultCode": code, "ResultDesc": f"Rejected: {why}"[:100]}


async def _refuse(
    intake: C2BIntake, raw: str, reason: str, status: int, source: str | None
) -> web.Response:
    log.warning("rejected a C2B confirmation: %s", reason)
    try:
        await intake.database.transaction(
            store_rejected, raw, reason, intake.clock(), source_ip=source
        )
    except Exception:
        log.exception("a rejected C2B confirmation could not be stored for audit")
    return web.json_response({"ResultCode": 1, "ResultDesc": f"Rejected: {reason}"}, status=status)
