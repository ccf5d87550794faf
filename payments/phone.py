"""Kenyan M-Pesa phone numbers: parsing with ``phonenumbers``, Daraja's 12-digit form, masking.

Daraja wants ``254`` + 9 national digits (``2547…`` and ``2541…``). Number portability
means the prefix only hints at the network, so a non-Safaricom prefix is a warning,
never a refusal (daraja.md §9).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType

_SEPARATORS = re.compile(r"[\s\-.()]")


class InvalidPhoneNumber(ValueError):
    """The text is not a Kenyan mobile number; ``str(exc)`` says why, in English, and
    ``problem`` names the case (not_a_number | not_kenyan_mobile | not_mobile) so that a
    chat can say it in the customer's language."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class MpesaNumber:
    msisdn: str  # "2547XXXXXXXX" or "2541XXXXXXXX"
    carrier: str  # libphonenumber's carrier name by prefix, "" when unknown

    @property
    def is_safaricom_prefix(self) -> bool:
        return self.carrier == "Safaricom"

    @property
    def warning(self) -> str | None:
        """A friendly note when the prefix belongs to another network (it may have been ported)."""
        if self.is_safaricom_prefix:
            return None
        network = self.carrier or "another network"
        return (
            f"{display_msisdn(self.msisdn)} is in the {network} number range. "
            "M-Pesa needs a Safaricom line; if you moved this number to Safaricom, carry on."
        )


def normalize_msisdn(text: str) -> MpesaNumber:
    """Accept ``07..``, ``01..``, ``+254..``, ``254..``, ``00254..``, ``7..``/``1..``.

    Spaces, dashes, dots and brackets are ignored.
    """
    compact = _SEPARATORS.sub("", text.strip())
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    elif compact.startswith("254"):
        compact = "+" + compact
    elif len(compact) == 9 and compact[:1] in {"7", "1"}:
        compact = "0" + compact
    if not compact or not re.fullmatch(r"\+?\d+", compact):
        raise InvalidPhoneNumber(
            f"{_shown(text)!r} is not a phone number. Send it like 0712 345 678.", "not_a_number"
        )
    try:
        parsed = phonenumbers.parse(compact, "KE")
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(
            f"{_shown(text)!r} is not a phone number. Send it like 0712 345 678.", "not_a_number"
        ) from exc
    if parsed.country_code != 254 or not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(
            f"{_shown(text)!r} is not a Kenyan mobile number. Send a number like 0712 345 678.",
            "not_kenyan_mobile",
        )
    if phonenumbers.number_type(parsed) != PhoneNumberType.MOBILE:
        raise InvalidPhoneNumber(
            f"{_shown(text)!r} is not a mobile number. "
            "M-Pesa needs a mobile line like 0712 345 678.",
            "not_mobile",
        )
    msisdn = f"254{parsed.national_number}"
    return MpesaNumber(msisdn=msisdn, carrier=_carrier_name(parsed))


def _carrier_name(parsed: phonenumbers.PhoneNumber) -> str:
    # Imported on first use: the carrier tables cover every country and keep about 9 MB
    # resident, which a server that has not yet been given a number does not need.
    from phonenumbers import carrier

    return str(carrier.name_for_number(parsed, "en"))


def _shown(text: str) -> str:
    """The input as echoed in an error: short, whatever was pasted."""
    text = text.strip()
    return text if len(text) <= 20 else text[:20] + "…"


def display_msisdn(msisdn: str) -> str:
    """``254712345678`` -> ``0712 345 678``, the way Kenyans write it."""
    national = "0" + msisdn[3:]
    return f"{national[:4]} {national[4:7]} {national[7:]}"


def mask_msisdn(msisdn: str | None) -> str:
    """``254712345678`` -> ``07XX XXX 678``: enough to recognise one's own number. The one
    style for customers, merchants and logs alike."""
    if not msisdn or len(msisdn) < 6:
        return "***"
    national = "0" + msisdn[3:] if msisdn.startswith("254") else msisdn
    return f"{national[:2]}XX XXX {national[-3:]}"


def mask_checkout_id(checkout_request_id: str | None) -> str:
    """A CheckoutRequestID for logs: Daraja ends it with the payer's last 9 digits
    (``ws_CO_…712345678``), so those are masked like a phone number (``…XXXXXX678``)."""
    if not checkout_request_id:
        return "-"
    found = re.fullmatch(r"(.*?)\d{6}(\d{3})", checkout_request_id)
    return f"{found[1]}XXXXXX{found[2]}" if found else checkout_request_id


def mask_masked(shown: str) -> str | None:
    """M-Pesa's own mask (``2547 ***** 126``, C2B v2) in our style (``07XX XXX 126``);
    None if ``shown`` is not in M-Pesa's form."""
    found = re.fullmatch(r"254(\d)\d*\s*\*+\s*(\d{3})", shown.strip())
    return f"0{found[1]}XX XXX {found[2]}" if found else None
