"""The simulated merchant's C2B account: its registered URLs, its payments, what was POSTed.

``DarajaSimulator`` owns one and routes ``registerurl`` and ``simulate`` here after the token
check. A payment is accepted at once (validated, given its TransID, recorded PENDING) and
settled in the background: the ValidationURL is asked, then the confirmation is POSTed
(see the diagram in ``c2b``). ``pay_bill`` runs the same path and waits for the end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from payments.credentials import daraja_timestamp
from payments.simulator.c2b import (
    NO_VALIDATION,
    C2BPayment,
    C2BStatus,
    Verdict,
    confirmation_payload,
    judge_validation_answer,
    registered_body,
    shillings,
    simulate_accepted_body,
    validation_payload,
)
from payments.simulator.c2b_validation import (
    C2BRegistration,
    expected_command_id,
    validate_pay_request,
    validate_registration,
)
from payments.simulator.config import SimulatorConfig
from payments.simulator.delivery import CallbackPoster
from payments.simulator.errors import (
    C2B_URLS_NOT_REGISTERED,
    URLS_ALREADY_REGISTERED,
    RequestRejectedError,
)
from payments.simulator.rules import CallbackMode
from payments.simulator.state import IdFactory

# The sandbox's simulate API takes no name; Daraja's samples show upper-case first names.
DEFAULT_FIRST_NAME = "JOHN"

Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class SentC2BValidation(NamedTuple):
    """One validation POST: ``status`` and ``answer`` are None when there was no answer."""

    url: str
    body: dict[str, str]
    status: int | None
    answer: dict[str, Any] | None


class SentC2BConfirmation(NamedTuple):
    """One confirmation POST (``status`` None: it failed), or one that was dropped."""

    url: str
    body: dict[str, str]
    status: int | None


class C2BService:
    """C2B for the one merchant the simulator plays; ``spawn`` and ``notify`` are the
    simulator's, so its ``aclose`` cancels settlements and its waiters see every change."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        ids: IdFactory,
        poster: CallbackPoster,
        clock: Callable[[], datetime],
        spawn: Spawn,
        notify: Callable[[], None],
    ) -> None:
        self._config = config
        self._ids = ids
        self._poster = poster
        self._clock = clock
        self._spawn = spawn
        self._notify = notify
        self._registration: C2BRegistration | None = None
        self._balance = 0
        self._next_confirmation: CallbackMode | None = None
        self.payments: dict[str, C2BPayment] = {}
        self.validations_sent: list[SentC2BValidation] = []
        self.confirmations_sent: list[SentC2BConfirmation] = []
        self.confirmations_dropped: list[SentC2BConfirmation] = []

    @property
    def registration(self) -> C2BRegistration | None:
        return self._registration

    def register(self, body: Mapping[str, Any]) -> dict[str, str]:
        """Keep the URLs; a second registration is refused unless re-registration is allowed."""
        registration = validate_registration(body, self._config)
        if self._registration is not None and not self._config.c2b_allow_reregistration:
            raise RequestRejectedError(URLS_ALREADY_REGISTERED)
        self._registration = registration
        return registered_body(self._ids.originator_conversation_id())

    def simulate(self, body: Mapping[str, Any]) -> dict[str, str]:
        """Accept a payment and settle it in the background, as the sandbox answers at once."""
        payment, registration = self._accept(body, DEFAULT_FIRST_NAME)
        self._spawn(self._settle(payment, registration))
        return simulate_accepted_body(payment.originator_conversation_id)

    async def pay_bill(self, msisdn: str, account: str, amount: int, first_name: str) -> C2BPayment:
        """The simulate body a customer's menu payment amounts to, settled before returning."""
        body = {
            "ShortCode": self._config.short_code,
            "CommandID": expected_command_id(self._config),
            "Amount": amount,
            "Msisdn": msisdn,
            "BillRefNumber": account,
        }
        payment, registration = self._accept(body, first_name)
        # A task of the simulator's, not a plain await, so that aclose() cancels it too.
        await self._spawn(self._settle(payment, registration))
        return payment

    def duplicate_next_confirmation(self) -> None:
        self._next_confirmation = CallbackMode.TWICE

    def drop_next_confirmation(self) -> None:
        self._next_confirmation = CallbackMode.DROPPED

    def _accept(
        self, body: Mapping[str, Any], first_name: str
    ) -> tuple[C2BPayment, C2BRegistration]:
        request = validate_pay_request(body, self._config)
        # The URLs at acceptance are the ones used, even if they are replaced meanwhile.
        registration = self._registration
        if registration is None:
            raise RequestRejectedError(C2B_URLS_NOT_REGISTERED)
        payment = C2BPayment(
            trans_id=self._ids.receipt_number(),
            originator_conversation_id=self._ids.originator_conversation_id(),
            request=request,
            first_name=first_name,
            trans_time=daraja_timestamp(self._clock()),
        )
        self.payments[payment.trans_id] = payment
        return payment, registration

    async def _settle(self, payment: C2BPayment, registration: C2BRegistration) -> None:
        verdict = NO_VALIDATION
        if self._config.c2b_validation_active:
            verdict = await self._ask_validation(payment, registration)
        payment.decided_by = verdict.decided_by
        payment.result_code = verdict.result_code
        if not verdict.accepted:
            payment.status = C2BStatus.REJECTED  # no money moves, no confirmation
            self._notify()
            return
        self._complete(payment, verdict)
        await self._confirm(payment, registration.confirmation_url)

    async def _ask_validation(self, payment: C2BPayment, registration: C2BRegistration) -> Verdict:
        url, body = registration.validation_url, validation_payload(payment)
        answer = await self._poster.exchange(
            url, json.dumps(body), timeout_seconds=self._config.c2b_validation_timeout_seconds
        )
        parsed = _json_object(answer.text)
        self.validations_sent.append(SentC2BValidation(url, body, answer.status, parsed))
        self._notify()
        return judge_validation_answer(answer.status, parsed, registration.response_type)

    def _complete(self, payment: C2BPayment, verdict: Verdict) -> None:
        self._balance += payment.request.amount
        payment.org_account_balance = shillings(self._balance)
        payment.third_party_trans_id = verdict.third_party_trans_id
        payment.status = C2BStatus.COMPLETED
        mode, self._next_confirmation = self._next_confirmation, None
        payment.confirmation = mode if mode is not None else CallbackMode.ONCE
        self._notify()

    async def _confirm(self, payment: C2BPayment, url: str) -> None:
        body = confirmation_payload(payment)
        if payment.confirmation is CallbackMode.DROPPED:
            self.confirmations_dropped.append(SentC2BConfirmation(url, body, None))
            self._notify()
            return
        copies = 2 if payment.confirmation is CallbackMode.TWICE else 1
        text = json.dumps(body)
        # Sequential on purpose: a duplicate arrives after the first, as with STK callbacks.
        for _ in range(copies):
            status = await self._poster.post(url, text)
            self.confirmations_sent.append(SentC2BConfirmation(url, dict(body), status))
            self._notify()


def _json_object(text: str | None) -> dict[str, Any] | None:
    """The merchant's answer as a JSON object; None when there was none or it is not one."""
    if text is None:
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
