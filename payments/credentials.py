"""Daraja's request credentials: the Nairobi-time timestamp and the STK password.

Daraja checks ``Password == base64(BusinessShortCode + Passkey + Timestamp)``. The
timestamp must be generated once and used for both fields: generating it twice can
straddle a second boundary and gives "Wrong credentials" (daraja.md §2.2).
"""

from __future__ import annotations

import base64
from datetime import datetime
from zoneinfo import ZoneInfo

NAIROBI = ZoneInfo("Africa/Nairobi")
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"


def daraja_timestamp(now: datetime | None = None) -> str:
    """The ``YYYYMMDDHHmmss`` timestamp in Nairobi time (an aware ``now`` is converted)."""
    moment = datetime.now(NAIROBI) if now is None else now.astimezone(NAIROBI)
    return moment.strftime(TIMESTAMP_FORMAT)


def parse_daraja_timestamp(value: str | int) -> datetime:
    """Read a Daraja ``YYYYMMDDHHmmss`` value (text, or a number in callbacks) as Nairobi time."""
    text = str(value)
    if len(text) != 14 or not text.isdigit():
        raise ValueError(f"not a YYYYMMDDHHmmss timestamp: {text!r}")
    # Slicing rather than strptime: this runs for every callback, and strptime is slow.
    parts = (text[0:4], text[4:6], text[6:8], text[8:10], text[10:12], text[12:14])
    year, month, day, hour, minute, second = (int(p) for p in parts)
    return datetime(year, month, day, hour, minute, second, tzinfo=NAIROBI)


def stk_password(business_short_code: str, passkey: str, timestamp: str) -> str:
    """``base64(shortcode + passkey + timestamp)``: plain concatenation, no hashing."""
    return base64.b64encode(f"{business_short_code}{passkey}{timestamp}".encode()).decode("ascii")
