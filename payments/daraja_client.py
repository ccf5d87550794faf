"""Daraja's STK push and STK query over httpx, with one shared OAuth token.

A push is a PIN prompt on a real phone, so it is sent at most once: when the request
may have reached Daraja (a timeout or a 5xx), ``PushOutcomeUnknown`` is raised and the
caller must not resend it. The only automatic retry is after ``404.001.03`` (invalid
token), which Daraja answers before processing anything.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from payments.credentials import NAIROBI, daraja_timestamp, stk_password
from payments.errors import (
    C2BAlreadyRegistered,
    DarajaConfigError,
    DarajaError,
    DarajaUnavailable,
    PushOutcomeUnknown,
    PushRefused,
    QueryFailed,
    SubscriberBusy,
)
from payments.metrics import Metrics
from payments.phone import mask_msisdn
from payments.result_codes import FailureReason
from payments.results import MalformedCallback, StkResult, parse_query_answer
from payments.settings import DarajaSettings
from payments.shared_token import app_digest, token_provider
from storage.engine import Database

log = logging.getLogger(__name__)

OAUTH_PATH = "/oauth/v1/generate"
STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"
C2B_REGISTER_PATH = "/mpesa/c2b/v2/registerurl"
C2B_SIMULATE_PATH = "/mpesa/c2b/v1/simulate"  # sandbox (and our simulator) only
ALREADY_REGISTERED = "500.003.1001"
MAX_AMOUNT = 250_000
# Invalid or expired token; and "no API product match", which a stale token can also cause.
TOKEN_REFUSED = frozenset({"404.001.03", "401.003.01"})
# How each path is named in duka_daraja_request_seconds{endpoint}.
ENDPOINTS = {
    OAUTH_PATH: "oauth",
    STK_PUSH_PATH: "stk_push",
    STK_QUERY_PATH: "stk_query",
    C2B_REGISTER_PATH: "c2b_register",
    C2B_SIMULATE_PATH: "c2b_simulate",
}
_MSISDN = re.compile(r"254[17]\d{8}")
_REFERENCE = re.compile(r"[A-Za-z0-9 -]{1,12}")


class InvalidPushRequest(ValueError):
    """The push would break one of Daraja's field rules; refused before sending."""


@dataclass(frozen=True, slots=True)
class StkPushRequest:
    msisdn: str  # 12 digits, see payments.phone.normalize_msisdn
    amount: int  # whole KES
    account_reference: str  # at most 12 characters; shown in the prompt
    callback_url: str | None = None  # this attempt's own URL; None: the configured one

    def validate(self) -> None:
        if not _MSISDN.fullmatch(self.msisdn):
            raise InvalidPushRequest("the phone number must be 254 followed by 9 digits")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise InvalidPushRequest("the amount must be whole shillings")
        if not 1 <= self.amount <= MAX_AMOUNT:
            raise InvalidPushRequest(f"the amount must be KES 1 to {MAX_AMOUNT:,}")
        if not _REFERENCE.fullmatch(self.account_reference):
            raise InvalidPushRequest(
                "the account reference must be 1-12 letters, digits, - or space"
            )


@dataclass(frozen=True, slots=True)
class PushAccepted:
    checkout_request_id: str
    merchant_request_id: str
    customer_message: str
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    raw: dict[str, Any]  # kept for the audit trail
    result: StkResult | None  # None: "The transaction is being processed" (pending, not failed)

    @property
    def pending(self) -> bool:
        return self.result is None


class DarajaClient:
    def __init__(
        self,
        settings: DarajaSettings,
        http: httpx.AsyncClient,
        now: Callable[[], datetime] = lambda: datetime.now(NAIROBI),
        *,
        metrics: Metrics | None = None,
        database: Database | None = None,
    ) -> None:
        """``database``: on PostgreSQL, where several processes may run, the token is shared
        through it (``payments.shared_token``); on SQLite, or without one, kept in memory."""
        self._settings = settings
        self._http = http
        self._metrics = metrics or Metrics()
        self._now = now
        self._tokens = token_provider(
            self._fetch_token,
            database,
            app_digest(settings.base_url, settings.consumer_key),
            # Longer than the refreshing process's OAuth request may take.
            lock_wait_seconds=2 * settings.request_timeout_seconds + 5,
        )

    @property
    def callback_url(self) -> str:
        """The configured STK callback URL (the base of each attempt's own URL)."""
        return self._settings.callback_url

    def push_body(self, request: StkPushRequest, timestamp: str) -> dict[str, Any]:
        """The STK push body; ``timestamp`` is used for both Timestamp and Password."""
        s = self._settings
        return {
            "BusinessShortCode": s.short_code,
            "Password": stk_password(s.short_code, s.passkey, timestamp),
            "Timestamp": timestamp,
            "TransactionType": s.transaction_type,
            "Amount": request.amount,
            "PartyA": request.msisdn,
            "PartyB": s.party_b,
            "PhoneNumber": request.msisdn,
            "CallBackURL": request.callback_url or s.callback_url,
            "AccountReference": request.account_reference,
            "TransactionDesc": s.transaction_desc,
        }

    async def stk_push(self, request: StkPushRequest) -> PushAccepted:
        request.validate()
        # One timestamp for both fields: two calls can straddle a second (daraja.md §2.2).
        body = self.push_body(request, daraja_timestamp(self._now()))
        log.info(
            "STK push: %s KES %d ref %s",
            mask_msisdn(request.msisdn),
            request.amount,
            request.account_reference,
        )
        response = await self._post(STK_PUSH_PATH, body, sent_may_matter=True)
        data = _json(response)
        if response.status_code == 200 and str(data.get("ResponseCode")) == "0":
            checkout_id = data.get("CheckoutRequestID")
            if not isinstance(checkout_id, str) or not checkout_id:
                raise PushOutcomeUnknown(
                    "accepted without a CheckoutRequestID", http_status=response.status_code
                )
            return PushAccepted(
                checkout_request_id=checkout_id,
                merchant_request_id=str(data.get("MerchantRequestID", "")),
                customer_message=str(data.get("CustomerMessage", "")),
                raw=data,
            )
        raise _push_error(response.status_code, data)

    async def stk_query(self, checkout_request_id: str) -> QueryAnswer:
        s = self._settings
        timestamp = daraja_timestamp(self._now())
        body = {
            "BusinessShortCode": s.short_code,
            "Password": stk_password(s.short_code, s.passkey, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        }
        try:
            response = await self._post(STK_QUERY_PATH, body, sent_may_matter=False)
        except DarajaError as exc:
            raise QueryFailed(exc.error_message, error_code=exc.error_code) from exc
        data = _json(response)
        message = str(data.get("errorMessage", ""))
        if "being processed" in message.lower():
            return QueryAnswer(data, None)
        if response.status_code == 200 and "ResultCode" in data:
            try:
                return QueryAnswer(data, parse_query_answer(data))
            except MalformedCallback as exc:
                raise QueryFailed(str(exc), http_status=200) from exc
        raise QueryFailed(
            message or "unexpected STK query answer",
            error_code=str(data.get("errorCode", "")),
            http_status=response.status_code,
        )

    async def register_c2b_urls(self) -> str:
        """Register the C2B confirmation and validation URLs for our short code; Daraja's
        ``ResponseDescription``. ``C2BAlreadyRegistered`` when production Daraja already has
        URLs for it (it never replaces them: they must be deleted first)."""
        s = self._settings
        if not s.c2b_confirmation_url:
            raise DarajaConfigError("MPESA_C2B_CONFIRMATION_URL is not set")
        body = {
            "ShortCode": s.short_code,
            # When our validation URL cannot be reached, Daraja completes the payment: money
            # the customer meant to pay is better recorded (maybe as unmatched) than refused.
            "ResponseType": "Completed",
            "ConfirmationURL": s.c2b_confirmation_url,
            "ValidationURL": s.c2b_validation_url,
        }
        response = await self._post(C2B_REGISTER_PATH, body, sent_may_matter=False)
        data = _json(response)
        if response.status_code == 200 and str(data.get("ResponseCode")) == "0":
            return str(data.get("ResponseDescription", "Success"))
        code = str(data.get("errorCode", ""))
        message = str(data.get("errorMessage", "")) or f"HTTP {response.status_code}"
        if code == ALREADY_REGISTERED:
            raise C2BAlreadyRegistered(message, error_code=code, http_status=response.status_code)
        raise DarajaConfigError(message, error_code=code, http_status=response.status_code)

    async def simulate_c2b(self, msisdn: str, amount: int, account: str) -> str:
        """Daraja sandbox's "customer pays the Paybill" (the demo's ``paybill`` command)."""
        s = self._settings
        body = {
            "ShortCode": s.short_code,
            "CommandID": "CustomerPayBillOnline",
            "Amount": amount,
            "Msisdn": msisdn,
            "BillRefNumber": account,
        }
        response = await self._post(C2B_SIMULATE_PATH, body, sent_may_matter=False)
        data = _json(response)
        if response.status_code == 200 and str(data.get("ResponseCode")) == "0":
            return str(data.get("ResponseDescription", ""))
        raise PushRefused(
            str(data.get("errorMessage", "")) or f"HTTP {response.status_code}",
            error_code=str(data.get("errorCode", "")),
            http_status=response.status_code,
        )

    async def _post(
        self, path: str, body: dict[str, Any], *, sent_may_matter: bool
    ) -> httpx.Response:
        token = await self._tokens.get()
        response = await self._send(path, body, token, sent_may_matter=sent_may_matter)
        if _json(response).get("errorCode") not in TOKEN_REFUSED:
            return response
        # Refused at the gateway before any processing: safe to send again, once.
        log.warning("Daraja refused the access token; fetching a new one")
        self._tokens.invalidate(token)
        token = await self._tokens.get()
        response = await self._send(path, body, token, sent_may_matter=sent_may_matter)
        code = _json(response).get("errorCode")
        if code in TOKEN_REFUSED:
            raise DarajaConfigError(
                "Daraja refuses a fresh access token: check that the app has the M-Pesa Express "
                "product and that the keys match MPESA_ENVIRONMENT",
                error_code=str(code),
                http_status=response.status_code,
            )
        return response

    async def _send(
        self, path: str, body: dict[str, Any], token: str, *, sent_may_matter: bool
    ) -> httpx.Response:
        url = self._settings.base_url + path
        headers = {"Authorization": f"Bearer {token}"}
        timeout = self._settings.request_timeout_seconds
        try:
            with self._metrics.daraja_request(ENDPOINTS.get(path, path)):
                return await self._http.post(url, json=body, headers=headers, timeout=timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise DarajaUnavailable(f"could not connect to Daraja ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            if sent_may_matter:
                raise PushOutcomeUnknown(
                    f"no answer from Daraja after sending ({type(exc).__name__})"
                ) from exc
            raise DarajaUnavailable(f"no answer from Daraja ({type(exc).__name__})") from exc

    async def _fetch_token(self) -> tuple[str, float]:
        s = self._settings
        url = f"{s.base_url}{OAUTH_PATH}"
        try:
            with self._metrics.daraja_request(ENDPOINTS[OAUTH_PATH]):
                response = await self._http.get(
                    url,
                    params={"grant_type": "client_credentials"},
                    auth=(s.consumer_key, s.consumer_secret),
                    timeout=s.request_timeout_seconds,
                )
        except httpx.TransportError as exc:
            raise DarajaUnavailable(f"could not get a Daraja token ({type(exc).__name__})") from exc
        data = _json(response)
        token = data.get("access_token")
        if response.status_code == 429 or response.status_code >= 500:
            # Daraja (or a gateway before it) is down or busy: our keys may well be right.
            raise DarajaUnavailable(f"Daraja could not issue a token (HTTP {response.status_code})")
        if response.status_code != 200 or not isinstance(token, str) or not token:
            code = str(data.get("errorCode", ""))
            detail = data.get("errorMessage", response.status_code)
            raise DarajaConfigError(
                f"Daraja refused our credentials ({detail});"
                " check MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET",
                error_code=code,
                http_status=response.status_code,
            )
        try:
            lifetime = float(int(data.get("expires_in", 3599)))  # a number or the string "3599"
        except (TypeError, ValueError):
            lifetime = 3599.0
        return token, lifetime


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def refuses_the_number(error_code: str, message: str) -> bool:
    """Daraja refused the push for its phone number (not an M-Pesa number, malformed):
    that number should not be offered again as it is."""
    lowered = message.lower()
    return error_code.startswith("400.002") and ("phonenumber" in lowered or "partya" in lowered)


def _push_error(status: int, data: dict[str, Any]) -> DarajaError:
    code = str(data.get("errorCode", ""))
    message = str(data.get("errorMessage", "")) or f"HTTP {status} without an error body"
    lowered = message.lower()
    if "unable to lock subscriber" in lowered:
        return SubscriberBusy(message, error_code=code, http_status=status)
    if "wrong credentials" in lowered or "merchant does not exist" in lowered:
        return DarajaConfigError(message, error_code=code, http_status=status)
    if code.startswith("401.") or code == "404.001.04":
        return DarajaConfigError(message, error_code=code, http_status=status)
    if code.startswith("400.002"):
        if refuses_the_number(code, message):
            return PushRefused(
                message, error_code=code, http_status=status, reason=FailureReason.INVALID_NUMBER
            )
        return DarajaConfigError(message, error_code=code, http_status=status)
    if code in {"500.003.02", "500.003.03"}:
        # Spike arrest, quota, "system is busy": refused at the gateway.
        return DarajaUnavailable(
            message, error_code=code, http_status=status, reason=FailureReason.MPESA_BUSY
        )
    if code == "500.001.1001":
        return PushRefused(message, error_code=code, http_status=status)
    if status >= 500 or status == 200:
        return PushOutcomeUnknown(message, error_code=code, http_status=status)
    return PushRefused(message, error_code=code, http_status=status)
