"""Daraja's synchronous error answers, as values, and the exception that carries one.

Daraja answers a refused request with ``{"requestId", "errorCode", "errorMessage"}`` and an
HTTP status (daraja.md §2.6). ``500.001.1001`` alone means several different things
(unknown merchant, wrong password, subscriber locked, still processing), which is why each
error here is the triple of status, code and message rather than a code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DarajaError:
    """One Daraja error answer: HTTP status, ``errorCode`` and ``errorMessage``."""

    http_status: int
    error_code: str
    error_message: str


class RequestRejectedError(Exception):
    """Raised by the validation functions; ``error`` is what the simulator answers."""

    def __init__(self, error: DarajaError) -> None:
        super().__init__(f"{error.error_code} {error.error_message}")
        self.error = error


def bad_request(field: str) -> DarajaError:
    """``400.002.02 "Bad Request - Invalid <field>"``: the text after "Invalid" names the field."""
    return DarajaError(400, "400.002.02", f"Bad Request - Invalid {field}")


INVALID_GRANT_TYPE = DarajaError(400, "400.008.02", "Invalid grant type passed")
INVALID_AUTHENTICATION = DarajaError(400, "400.008.01", "Invalid Authentication passed")
INVALID_ACCESS_TOKEN = DarajaError(404, "404.001.03", "Invalid Access Token")
INVALID_PAYLOAD = DarajaError(400, "400.002.05", "Invalid Request Payload")
MERCHANT_DOES_NOT_EXIST = DarajaError(500, "500.001.1001", "Merchant does not exist")
WRONG_CREDENTIALS = DarajaError(500, "500.001.1001", "[MerchantValidate] - Wrong credentials")
SUBSCRIBER_LOCKED = DarajaError(
    500,
    "500.001.1001",
    "Unable to lock subscriber, a transaction is already in process for the current subscriber",
)
BEING_PROCESSED = DarajaError(500, "500.001.1001", "The transaction is being processed")
INTERNAL_SERVER_ERROR = DarajaError(500, "500.003.1001", "Internal Server Error")
RESOURCE_NOT_FOUND = DarajaError(404, "404.001.01", "Resource not found")
METHOD_NOT_ALLOWED = DarajaError(405, "405.001", "Method Not Allowed")
# C2B (daraja.md §8). Production refuses a second registerurl until the old URLs are deleted.
URLS_ALREADY_REGISTERED = DarajaError(500, "500.003.1001", "Urls are already registered")
# Daraja documents no answer for a C2B payment to a short code without URLs; this wording is
# the simulator's own, so that a test which forgot to register fails with a clear message.
C2B_URLS_NOT_REGISTERED = DarajaError(
    500, "500.003.1001", "C2B URLs are not registered for this ShortCode"
)
