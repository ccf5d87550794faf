"""Errors of the Daraja client. Every one carries Daraja's ``errorCode`` and ``errorMessage``.

    DarajaError
    ├── DarajaConfigError      our credentials or setup are wrong; retrying will not help
    │   └── C2BAlreadyRegistered  C2B URLs exist for the short code (500.003.1001)
    ├── PushRefused            Daraja refused the push: no prompt was shown, nothing to settle
    │   └── SubscriberBusy     "Unable to lock subscriber": the customer may retry in a minute
    ├── DarajaUnavailable      could not reach Daraja, or it is shedding load: nothing was sent
    └── PushOutcomeUnknown     the push may have reached Daraja (timeout, 5xx): NEVER resend it

``reason`` says what the customer should be told (see ``result_codes.FailureReason``).
"""

from __future__ import annotations

from payments.result_codes import FailureReason


class DarajaError(Exception):
    reason: FailureReason = FailureReason.OTHER

    def __init__(
        self,
        message: str,
        *,
        error_code: str = "",
        http_status: int | None = None,
        reason: FailureReason | None = None,
    ) -> None:
        super().__init__(f"{error_code} {message}".strip() if error_code else message)
        self.error_code = error_code
        self.error_message = message
        self.http_status = http_status
        if reason is not None:
            self.reason = reason


class DarajaConfigError(DarajaError):
    reason = FailureReason.SHOP_SETUP


class C2BAlreadyRegistered(DarajaConfigError):
    """Production Daraja keeps the first C2B URLs registered for a short code."""


class PushRefused(DarajaError):
    reason = FailureReason.OTHER


class SubscriberBusy(PushRefused):
    reason = FailureReason.MPESA_BUSY


class DarajaUnavailable(DarajaError):
    reason = FailureReason.UNREACHABLE


class PushOutcomeUnknown(DarajaError):
    reason = FailureReason.OTHER


class QueryFailed(DarajaError):
    """An STK query got no usable answer; the reconciler simply tries again later."""
