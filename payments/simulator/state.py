"""The simulator's memory: transactions, the access token, and Daraja-looking identifiers.

Only the latest access token is valid: Daraja's FAQ says each token request invalidates the
previous token (daraja.md §1.2), which is why Duka's workers must share one cached token. The
simulator enforces that so a client that fetches a token per request fails its tests.
"""

from __future__ import annotations

import secrets
import string
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from payments.simulator.rules import Outcome
from payments.simulator.validation import StkPushRequest

_UPPER_ALNUM = string.ascii_uppercase + string.digits
_TOKEN_ALPHABET = string.ascii_letters + string.digits


@dataclass
class SimTransaction:
    """One accepted push and how it ended (``resolved_at`` None while pending)."""

    checkout_request_id: str
    merchant_request_id: str
    push: StkPushRequest
    outcome: Outcome
    requested_at: datetime
    resolved_at: datetime | None = None
    receipt: str | None = None  # MpesaReceiptNumber, successes only

    @property
    def pending(self) -> bool:
        return self.resolved_at is None

    @property
    def paid_amount(self) -> int:
        """The Amount the callback reports (differs from the push for the mismatch rule)."""
        override = self.outcome.paid_amount
        return self.push.amount if override is None else override


class TokenStore:
    """Issues opaque access tokens; only the newest one is valid, and only for its lifetime."""

    def __init__(
        self, lifetime_seconds: int, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._lifetime = lifetime_seconds
        self._monotonic = monotonic
        self._current: str | None = None
        self._expires_at = 0.0

    def issue(self) -> str:
        token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(28))
        self._current = token
        self._expires_at = self._monotonic() + self._lifetime
        return token

    def is_valid(self, token: str | None) -> bool:
        if token is None or self._current is None or self._monotonic() >= self._expires_at:
            return False
        return secrets.compare_digest(token.encode(), self._current.encode())

    def expire_all(self) -> None:
        self._current = None


class IdFactory:
    """Unique IDs in the shapes Daraja uses (clients must treat them as opaque anyway)."""

    def __init__(self) -> None:
        self._checkout_ids: set[str] = set()
        self._receipts: set[str] = set()

    def checkout_request_id(self, now: datetime, msisdn: str) -> str:
        """``ws_CO_`` + DDMMYYYYHHMMSS + milliseconds + the phone's last 9 digits."""
        base = f"ws_CO_{now:%d%m%Y%H%M%S}{now.microsecond // 1000:03d}{msisdn[-9:]}"
        candidate, extra = base, 0
        # Two pushes from one phone in the same millisecond happen in tests; keep IDs unique.
        while candidate in self._checkout_ids:
            extra += 1
            candidate = f"{base}{extra}"
        self._checkout_ids.add(candidate)
        return candidate

    @staticmethod
    def merchant_request_id() -> str:
        """The v3 shape, e.g. ``2654-4b64-97ff-b827b542881d3130``."""
        hexed = uuid.uuid4().hex
        return f"{hexed[:4]}-{hexed[4:8]}-{hexed[8:12]}-{hexed[12:28]}"

    @staticmethod
    def originator_conversation_id() -> str:
        """The C2B answers' ``OriginatorCoversationID``; Daraja's samples use the same shape."""
        return IdFactory.merchant_request_id()

    @staticmethod
    def request_id() -> str:
        """The ``requestId`` of an error answer, e.g. ``16813-1590513-1``."""
        return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(9 * 10**7) + 10**7}-1"

    def receipt_number(self) -> str:
        """Ten uppercase letters and digits, starting with a letter, never repeated."""
        while True:
            receipt = secrets.choice(string.ascii_uppercase) + "".join(
                secrets.choice(_UPPER_ALNUM) for _ in range(9)
            )
            if receipt not in self._receipts:
                self._receipts.add(receipt)
                return receipt
