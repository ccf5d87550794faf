"""``DarajaSimulator``: a stateful stand-in for Daraja's OAuth, STK push, STK query and C2B.

It validates like Daraja (``validation``), decides endings by rule (``rules``), keeps
transactions and the token (``state``), and POSTs callbacks after a delay (``delivery``). The
aiohttp routes in ``app`` only translate HTTP to the ``handle_*`` methods, so everything here
answers with a ``WireReply`` (status + JSON body) and can be driven without a server.

Tests steer it with ``force_next_outcome``, ``fail_next_push``, ``expire_tokens`` and
``resolve``, and observe it through the recorded lists and the ``wait_for_*`` helpers. C2B
(registerurl, simulate, ``pay_bill``) lives in ``c2b_service``; the ``c2b_*`` names here are
its public face.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from payments.credentials import NAIROBI, daraja_timestamp
from payments.simulator.app import build_app
from payments.simulator.c2b import C2BPayment
from payments.simulator.c2b_service import (
    DEFAULT_FIRST_NAME,
    C2BService,
    SentC2BConfirmation,
    SentC2BValidation,
)
from payments.simulator.c2b_validation import C2BRegistration, parse_c2b_body
from payments.simulator.config import SimulatorConfig
from payments.simulator.delivery import CallbackPoster
from payments.simulator.errors import (
    INTERNAL_SERVER_ERROR,
    INVALID_ACCESS_TOKEN,
    DarajaError,
    RequestRejectedError,
    bad_request,
)
from payments.simulator.payloads import (
    being_processed_body,
    callback_json,
    error_body,
    push_accepted_body,
    query_result_body,
    token_body,
)
from payments.simulator.rules import CallbackMode, Outcome, choose_outcome
from payments.simulator.state import IdFactory, SimTransaction, TokenStore
from payments.simulator.validation import (
    StkPushRequest,
    bearer_token,
    check_basic_auth,
    check_content_type,
    check_grant_type,
    parse_json_object,
    validate_push,
    validate_query,
)

log = logging.getLogger(__name__)

SentCallback = tuple[str, dict[str, Any], int | None]
_COPIES = {CallbackMode.ONCE: 1, CallbackMode.TWICE: 2, CallbackMode.DROPPED: 0}


@dataclass(frozen=True)
class WireReply:
    """What to answer on the wire: an HTTP status and a JSON object."""

    status: int
    body: dict[str, str]


@dataclass(frozen=True)
class _PushFault:
    status: int
    delay_seconds: float


class DarajaSimulator:
    """Daraja's STK endpoints in memory; ``app()`` serves them over HTTP."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self._clock = clock if clock is not None else _nairobi_now
        self._tokens = TokenStore(self.config.token_lifetime_seconds, monotonic)
        self._ids = IdFactory()
        self._poster = CallbackPoster(self.config.callback_timeout_seconds)
        self.oauth_calls = 0
        self.push_requests: list[dict[str, Any]] = []
        self.query_requests: list[dict[str, Any]] = []
        self.callbacks_sent: list[SentCallback] = []
        self.transactions: dict[str, SimTransaction] = {}
        self._next_outcome: Outcome | None = None
        self._next_push_fault: _PushFault | None = None
        self._token_faults: list[int] = []  # HTTP statuses for the next token requests
        self._callback_before_next_answer = False
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._c2b = C2BService(
            self.config,
            ids=self._ids,
            poster=self._poster,
            clock=self._clock,
            spawn=self._spawn,
            notify=self._notify,
        )
        self.c2b_register_requests: list[dict[str, Any]] = []
        self.c2b_simulate_requests: list[dict[str, Any]] = []
        # The service's own containers, shared, so they stay current.
        self.c2b_payments: dict[str, C2BPayment] = self._c2b.payments
        self.c2b_validations_sent: list[SentC2BValidation] = self._c2b.validations_sent
        self.c2b_confirmations_sent: list[SentC2BConfirmation] = self._c2b.confirmations_sent
        self.c2b_confirmations_dropped: list[SentC2BConfirmation] = self._c2b.confirmations_dropped

    def app(self) -> web.Application:
        """A new aiohttp application serving this simulator (its cleanup calls ``aclose``)."""
        return build_app(self)

    # --- steering, for tests and demos -------------------------------------------------

    def force_next_outcome(self, outcome: Outcome) -> None:
        """The next push that passes validation ends this way, whatever the rules say."""
        self._next_outcome = outcome

    def fail_next_push(self, status: int = 500, delay_seconds: float = 0.0) -> None:
        """The next push with a valid token is processed as usual (the customer gets the
        prompt and the callback still comes), but is answered ``status`` with Daraja's
        Internal Server Error body after ``delay_seconds``: the case where the client must
        not push again because it cannot know the first push did nothing."""
        self._next_push_fault = _PushFault(status, delay_seconds)

    def fail_next_token(self, status: int = 503, times: int = 1) -> None:
        """The next ``times`` token requests are answered ``status`` (an outage, or 429
        from a gateway in front) with Daraja's Internal Server Error body; no token."""
        self._token_faults.extend([status] * times)

    def answer_next_push_after_callback(self) -> None:
        """The next accepted push resolves at once, and its callback is delivered before the
        push is answered: the race where the callback beats the push response."""
        self._callback_before_next_answer = True

    def expire_tokens(self) -> None:
        """Every issued token stops working (404.001.03) until a new one is fetched."""
        self._tokens.expire_all()

    def duplicate_next_c2b_confirmation(self) -> None:
        """The next C2B confirmation is POSTed twice, one after the other, same TransID."""
        self._c2b.duplicate_next_confirmation()

    def drop_next_c2b_confirmation(self) -> None:
        """The next C2B confirmation is not POSTed; it goes to ``c2b_confirmations_dropped``."""
        self._c2b.drop_next_confirmation()

    async def pay_bill(
        self, msisdn: str, account: str, amount: int, *, first_name: str = DEFAULT_FIRST_NAME
    ) -> C2BPayment:
        """A customer pays the paybill from the menu: what ``c2b/v1/simulate`` does, but
        returning once validation and the confirmation POSTs are done. On a simulator with a
        ``till_number`` it pays the till, and ``account`` must be "". Raises
        ``RequestRejectedError`` where the endpoint would answer an error."""
        return await self._c2b.pay_bill(msisdn, account, amount, first_name)

    def resolve(self, checkout_request_id: str) -> SimTransaction:
        """End a pending transaction now (even a never-resolving one) and send its callback.

        Raises ``KeyError`` for an unknown ID; a resolved transaction is left as it is.
        """
        transaction = self.transactions[checkout_request_id]
        if not transaction.pending:
            return transaction
        timer = self._timers.pop(checkout_request_id, None)
        if timer is not None:
            timer.cancel()
        now = self._clock()
        transaction.resolved_at = now
        if transaction.outcome.succeeded:
            transaction.receipt = self._ids.receipt_number()
        copies = _COPIES[transaction.outcome.callback]
        if copies:
            text = callback_json(transaction, transaction_date=daraja_timestamp(now))
            self._spawn(self._deliver(transaction.push.callback_url, text, copies))
        self._notify()
        return transaction

    # A default timeout (not the caller's asyncio.timeout) so a test that waits for a
    # callback that never comes fails in seconds instead of hanging: hence the noqa.
    async def wait_for_callbacks(
        self,
        count: int,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[SentCallback]:
        """Wait until ``count`` callback POSTs have completed (or failed); TimeoutError if not."""
        await self._wait_until(lambda: len(self.callbacks_sent) >= count, timeout)
        return list(self.callbacks_sent)

    async def wait_for_c2b_confirmations(
        self,
        count: int,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[SentC2BConfirmation]:
        """Wait until ``count`` C2B confirmation POSTs have completed (or failed)."""
        await self._wait_until(lambda: len(self.c2b_confirmations_sent) >= count, timeout)
        return list(self.c2b_confirmations_sent)

    async def wait_c2b_settled(
        self,
        trans_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> C2BPayment:
        """Wait until the payment is completed or rejected (confirmations may be in flight)."""
        await self._wait_until(lambda: self.c2b_payments[trans_id].settled, timeout)
        return self.c2b_payments[trans_id]

    async def wait_resolved(
        self,
        checkout_request_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> SimTransaction:
        """Wait until the transaction has ended (its callbacks may still be in flight)."""
        await self._wait_until(lambda: not self.transactions[checkout_request_id].pending, timeout)
        return self.transactions[checkout_request_id]

    async def aclose(self) -> None:
        """Cancel pending resolutions and deliveries, and close the callback client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()
        await self._poster.aclose()

    # --- the three endpoints -------------------------------------------------------------

    def handle_token(self, *, grant_type: str | None, authorization: str | None) -> WireReply:
        self.oauth_calls += 1
        if self._token_faults:
            status = self._token_faults.pop(0)
            return WireReply(status, error_body(INTERNAL_SERVER_ERROR, self._ids.request_id()))
        try:
            check_grant_type(grant_type)
            check_basic_auth(authorization, self.config)
        except RequestRejectedError as exc:
            return self.error_reply(exc.error)
        # Issuing replaces the previous token: Daraja's FAQ says a new token invalidates it.
        token = self._tokens.issue()
        return WireReply(200, token_body(token, self.config.token_lifetime_seconds))

    async def handle_push(
        self, *, authorization: str | None, content_type: str, raw_body: str
    ) -> WireReply:
        self.push_requests.append(_as_record(raw_body))
        if not self._tokens.is_valid(bearer_token(authorization)):
            return self.error_reply(INVALID_ACCESS_TOKEN)
        fault, self._next_push_fault = self._next_push_fault, None
        callback_first, self._callback_before_next_answer = self._callback_before_next_answer, False
        reply = self._process_push(content_type, raw_body)
        if callback_first and reply.status == 200:
            delivered = len(self.callbacks_sent)
            self.resolve(reply.body["CheckoutRequestID"])
            await self._wait_until(lambda: len(self.callbacks_sent) > delivered, 5.0)
        if fault is None:
            return reply
        # The push has been processed (a transaction may exist) before the answer fails.
        await asyncio.sleep(fault.delay_seconds)
        return WireReply(fault.status, error_body(INTERNAL_SERVER_ERROR, self._ids.request_id()))

    def handle_query(
        self, *, authorization: str | None, content_type: str, raw_body: str
    ) -> WireReply:
        self.query_requests.append(_as_record(raw_body))
        if not self._tokens.is_valid(bearer_token(authorization)):
            return self.error_reply(INVALID_ACCESS_TOKEN)
        try:
            check_content_type(content_type)
            query = validate_query(parse_json_object(raw_body), self.config, self._clock())
        except RequestRejectedError as exc:
            return self.error_reply(exc.error)
        transaction = self.transactions.get(query.checkout_request_id)
        if transaction is None:
            return self.error_reply(bad_request("CheckoutRequestID"))
        if transaction.pending:
            return WireReply(500, being_processed_body(transaction.checkout_request_id))
        return WireReply(200, query_result_body(transaction))

    @property
    def c2b_registration(self) -> C2BRegistration | None:
        """The registered C2B URLs and ResponseType, or None before any registration."""
        return self._c2b.registration

    def handle_c2b_register(
        self, *, authorization: str | None, content_type: str, raw_body: str
    ) -> WireReply:
        """``c2b/v1/registerurl`` and ``c2b/v2/registerurl``."""
        self.c2b_register_requests.append(_as_record(raw_body))
        return self._c2b_reply(
            authorization, lambda: self._c2b.register(parse_c2b_body(content_type, raw_body))
        )

    def handle_c2b_simulate(
        self, *, authorization: str | None, content_type: str, raw_body: str
    ) -> WireReply:
        """``c2b/v1/simulate``: answered at once; validation and confirmation follow."""
        self.c2b_simulate_requests.append(_as_record(raw_body))
        return self._c2b_reply(
            authorization, lambda: self._c2b.simulate(parse_c2b_body(content_type, raw_body))
        )

    def error_reply(self, error: DarajaError) -> WireReply:
        return WireReply(error.http_status, error_body(error, self._ids.request_id()))

    # --- internals -------------------------------------------------------------------------

    def _process_push(self, content_type: str, raw_body: str) -> WireReply:
        try:
            check_content_type(content_type)
            push = validate_push(parse_json_object(raw_body), self.config, self._clock())
        except RequestRejectedError as exc:
            return self.error_reply(exc.error)
        outcome = self._take_outcome(push)
        if outcome.sync_error is not None:
            return self.error_reply(outcome.sync_error)
        transaction = self._open_transaction(push, outcome)
        return WireReply(
            200,
            push_accepted_body(transaction.merchant_request_id, transaction.checkout_request_id),
        )

    def _c2b_reply(
        self, authorization: str | None, answer: Callable[[], dict[str, str]]
    ) -> WireReply:
        if not self._tokens.is_valid(bearer_token(authorization)):
            return self.error_reply(INVALID_ACCESS_TOKEN)
        try:
            return WireReply(200, answer())
        except RequestRejectedError as exc:
            return self.error_reply(exc.error)

    def _take_outcome(self, push: StkPushRequest) -> Outcome:
        forced, self._next_outcome = self._next_outcome, None
        if forced is not None:
            return forced
        prior = sum(1 for t in self.transactions.values() if t.push.party_a == push.party_a)
        return choose_outcome(
            push, till_number=self.config.till_number, prior_pushes_from_phone=prior
        )

    def _open_transaction(self, push: StkPushRequest, outcome: Outcome) -> SimTransaction:
        now = self._clock()
        transaction = SimTransaction(
            checkout_request_id=self._ids.checkout_request_id(now, push.phone_number),
            merchant_request_id=self._ids.merchant_request_id(),
            push=push,
            outcome=outcome,
            requested_at=now,
        )
        self.transactions[transaction.checkout_request_id] = transaction
        if not outcome.never_resolves:
            checkout_id = transaction.checkout_request_id
            self._timers[checkout_id] = self._spawn(self._resolve_later(checkout_id))
        return transaction

    async def _resolve_later(self, checkout_request_id: str) -> None:
        await asyncio.sleep(self.config.callback_delay_seconds)
        self._timers.pop(checkout_request_id, None)  # so resolve() does not cancel this task
        self.resolve(checkout_request_id)

    async def _deliver(self, url: str, json_text: str, copies: int) -> None:
        # Sequential on purpose: a duplicate arrives after the first, as in the field reports.
        for _ in range(copies):
            status = await self._poster.post(url, json_text)
            self.callbacks_sent.append((url, json.loads(json_text, parse_float=Decimal), status))
            self._notify()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._forget_task)
        return task

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("simulator background task failed", exc_info=exc)

    def _notify(self) -> None:
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,  # noqa: ASYNC109
    ) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()


def _nairobi_now() -> datetime:
    return datetime.now(NAIROBI)


def _as_record(raw_body: str) -> dict[str, Any]:
    """The body as received, for the request logs; non-objects are kept as ``_unparsed`` text."""
    try:
        body = json.loads(raw_body)
    except ValueError:
        return {"_unparsed": raw_body}
    return body if isinstance(body, dict) else {"_unparsed": raw_body}
