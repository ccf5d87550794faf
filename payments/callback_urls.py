"""Per-attempt callback URLs: ``<callback URL>/<attempt id>/<token>``.

Daraja signs nothing and CheckoutRequestIDs are not secret, so one path secret would be
all that stands between the internet and "paid". Each push therefore carries a URL of
its own: the configured base (with its secret) plus the attempt's id and a token only we
can make (an HMAC of the id keyed by the base secret). A callback is accepted only at the
URL of the attempt it concerns, so a leaked base secret no longer lets anyone settle
someone else's order. Hex tokens cannot spell a word Safaricom refuses in URLs.
"""

from __future__ import annotations

import hashlib
import hmac

TOKEN_LENGTH = 32  # hex characters: 128 bits


def attempt_token(secret: str, payment_id: int) -> str:
    digest = hmac.new(secret.encode(), f"duka-attempt:{payment_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:TOKEN_LENGTH]


def attempt_callback_url(callback_url: str, payment_id: int) -> str:
    """The URL that attempt ``payment_id``'s push sends Daraja (``callback_url``: the base)."""
    secret = callback_url.rsplit("/", 1)[-1]
    return f"{callback_url}/{payment_id}/{attempt_token(secret, payment_id)}"


def token_matches(secret: str, payment_id: int, token: str) -> bool:
    return hmac.compare_digest(token.encode(), attempt_token(secret, payment_id).encode())
