"""Phone numbers sealed at rest: a database file or dump shows no number in clear.

The key is ``DUKA_DATA_KEY``: 32 random bytes in url-safe base64 (Fernet's key format;
``duka keygen`` prints one). From it HKDF derives an AES-SIV key. AES-SIV is
deterministic authenticated encryption: its synthetic IV is a keyed MAC (S2V, a CMAC) of
the number, so the same number always seals to the same text. That is what lets code
look a row up by phone (``payments.msisdn == x``, a WhatsApp chat id, a CheckoutRequestID,
which embeds the phone) through the ordinary index, with no separate hash column, while
nobody without the key can read or forge one.

Two column types do it, transparently, in the storage layer:

- ``SealedValue``: the whole value (phone numbers, chat ids, CheckoutRequestIDs, "channel:
  chat id" recipients). Equality and ``IN`` lookups keep working.
- ``SealedText``: free text and raw bodies (callbacks, C2B, inbound messages, outbox
  payloads). Only what looks like a phone number or a CheckoutRequestID is replaced, in
  place, by a token; the rest stays readable, so the audit trail keeps its structure.
  Reading it back restores the text byte for byte.

Rotation: ``DUKA_DATA_KEY_OLD`` is accepted for reading; ``rekey`` (``duka rekey``, and
``serve`` at start-up while the old key is set) re-seals every row with the new key.
Lookups use the new key only, which is why start-up re-seals before serving.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Dialect, String, Text
from sqlalchemy.types import TypeDecorator, TypeEngine

VALUE_PREFIX = "v1."  # a SealedValue
TOKEN_PREFIX = "enc."  # a token inside SealedText  # noqa: S105 - a marker, not a secret
_SIV_INFO = b"duka data sealing v1"
_REMEMBERED = 8192  # sealed values kept in memory, each way
_B64 = r"[A-Za-z0-9_-]+"

# What is sealed inside free text: Kenyan mobile numbers (07.., 01.., 2547.., +2547..,
# or the bare 9 digits) and CheckoutRequestIDs (ws_CO_ + a timestamp + the phone).
# ("enc." itself is sealed too, so that text never holds something that looks like a token.)
_SECRET_TEXT = re.compile(
    r"(?<![0-9A-Za-z_.])(?:\+?254|0)?[17][0-9]{8}(?![0-9A-Za-z_])"
    r"|ws_CO_[0-9A-Za-z_]+"
    r"|enc\."
)
# A cheap first look (the full pattern's lookbehind makes it slow where nothing matches,
# which is most text: outbox payloads, notes): a match of _SECRET_TEXT always contains one.
_CANDIDATE = re.compile(r"[0-9]{9}|ws_CO_|enc\.")
# A token is "enc." + base64 + ".", the last dot ending it whatever follows.
_TOKEN = re.compile(rf'"enc\.({_B64})\."|enc\.({_B64})\.')
# A token's first character says how it was written: inside a string as it stood, or
# in quotes (a JSON number such as Daraja's PhoneNumber), so that JSON stays JSON.
_AS_IS, _QUOTED = "b", "q"


class DataKeyError(ValueError):
    """``DUKA_DATA_KEY`` (or ``_OLD``) is not a key; ``str(exc)`` says why."""


class CannotUnseal(ValueError):
    """Sealed with a key we do not have (neither DUKA_DATA_KEY nor DUKA_DATA_KEY_OLD)."""


def generate_key() -> str:
    """A new data key, in the format ``DUKA_DATA_KEY`` takes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def parse_key(text: str, name: str = "DUKA_DATA_KEY") -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise DataKeyError(f"{name} is not url-safe base64") from None
    if len(raw) != 32:
        raise DataKeyError(f"{name} must be 32 bytes in url-safe base64 (got {len(raw)} bytes)")
    return raw


def _siv(key: bytes) -> AESSIV:
    derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_SIV_INFO).derive(key)
    return AESSIV(derived)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    """Seals with the current key; opens with it or the old one."""

    def __init__(self, key: bytes, old_key: bytes | None = None) -> None:
        self._ciphers = [_siv(key)] + ([_siv(old_key)] if old_key else [])
        self.rotating = old_key is not None
        # Sealing is deterministic, and one callback seals its CheckoutRequestID and phone
        # several times over (lookup, event, payment, messages): remembered, both ways, it
        # costs a dict lookup (bench/: about a quarter of the callback path's time otherwise).
        self._sealed: dict[str, str] = {}
        self._opened: dict[str, tuple[str, bool]] = {}

    def __repr__(self) -> str:
        return f"Sealer(rotating={self.rotating})"  # never the key

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Sealer | None:
        """From ``DUKA_DATA_KEY`` (and ``DUKA_DATA_KEY_OLD``); None when there is no key."""
        text = env.get("DUKA_DATA_KEY", "").strip()
        if not text:
            return None
        old = env.get("DUKA_DATA_KEY_OLD", "").strip()
        return cls(parse_key(text), parse_key(old, "DUKA_DATA_KEY_OLD") if old else None)

    def _seal(self, text: str) -> str:
        if (known := self._sealed.get(text)) is not None:
            return known
        sealed = _b64(self._ciphers[0].encrypt(text.encode("utf-8", "surrogatepass"), None))
        self._remember(text, sealed, old=False)
        return sealed

    def _remember(self, text: str, sealed: str, *, old: bool) -> None:
        if len(self._sealed) >= _REMEMBERED or len(self._opened) >= _REMEMBERED:
            self._sealed.clear()  # whole, rather than LRU bookkeeping on every call
            self._opened.clear()
        if not old:
            self._sealed[text] = sealed
        self._opened[sealed] = (text, old)

    def _open(self, token: str) -> tuple[str, bool]:
        """(plain text, whether it was sealed with the old key)."""
        if (known := self._opened.get(token)) is not None:
            return known
        try:
            data = _unb64(token)
        except (binascii.Error, ValueError):
            raise CannotUnseal("a damaged sealed value") from None
        for index, cipher in enumerate(self._ciphers):
            try:
                plain = cipher.decrypt(data, None).decode("utf-8", "surrogatepass")
            except InvalidTag:
                continue
            self._remember(plain, token, old=index > 0)
            return plain, index > 0
        raise CannotUnseal("sealed with a key that is neither DUKA_DATA_KEY nor its _OLD")

    # A whole value ------------------------------------------------------------------

    def seal_value(self, value: str) -> str:
        return VALUE_PREFIX + self._seal(value)

    def open_value(self, stored: str) -> str:
        """The value; a value stored before sealing (no prefix) is returned as it is."""
        if not stored.startswith(VALUE_PREFIX):
            return stored
        return self._open(stored[len(VALUE_PREFIX) :])[0]

    # Free text ------------------------------------------------------------------------

    def seal_text(self, text: str) -> str:
        """``text`` with every phone number and CheckoutRequestID replaced by a token."""
        if not _CANDIDATE.search(text):
            return text

        def token(match: re.Match[str]) -> str:
            found = match.group()
            if _is_json_number(text, match.start(), match.end()):
                return f'"{TOKEN_PREFIX}{self._seal(_QUOTED + found)}."'
            return f"{TOKEN_PREFIX}{self._seal(_AS_IS + found)}."

        return _SECRET_TEXT.sub(token, text)

    def open_text(self, stored: str) -> str:
        if TOKEN_PREFIX not in stored:
            return stored

        def plain(match: re.Match[str]) -> str:
            quoted, bare = match.group(1), match.group(2)
            opened = self._open(quoted or bare)[0]
            flag, value = opened[:1], opened[1:]
            if quoted is not None and flag == _AS_IS:
                return f'"{value}"'  # a whole JSON string: its quotes were its own
            return value

        return _TOKEN.sub(plain, stored)

    # Rotation ---------------------------------------------------------------------------

    def reseal_value(self, stored: str) -> str | None:
        """The value sealed with the current key, or None when it already is."""
        if not stored.startswith(VALUE_PREFIX):
            return self.seal_value(stored)  # stored before sealing existed
        plain, old = self._open(stored[len(VALUE_PREFIX) :])
        return self.seal_value(plain) if old else None

    def reseal_text(self, stored: str) -> str | None:
        """The text with every token sealed with the current key, or None when unchanged."""
        plain = self.open_text(stored)
        resealed = self.seal_text(plain)
        return None if resealed == stored else resealed


def _is_json_number(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] stands as a JSON number (Daraja's ``"Value":2547...``): a
    token there needs quotes to keep the body JSON. Inside a string it stands as it is."""
    before = text[:start].rstrip()[-1:]
    after = text[end:].lstrip()[:1]
    return text[start].isdigit() and before in (":", "[", ",") and after in (",", "}", "]", "")


def sealer_of(dialect: Dialect) -> Sealer:
    """The sealer of the engine this dialect belongs to (see ``install``)."""
    sealer: Sealer | None = getattr(dialect, "duka_sealer", None)
    if sealer is None:
        raise RuntimeError("this database engine has no data key: make engines with storage.engine")
    return sealer


def install(dialect: Dialect, sealer: Sealer) -> None:
    """Give an engine (by its dialect) the key its sealed columns use."""
    dialect.duka_sealer = sealer  # type: ignore[attr-defined]


class SealedValue(TypeDecorator[str]):
    """A whole value sealed (phone, chat id, CheckoutRequestID): lookups by equality work."""

    impl: TypeEngine[Any] | type[TypeEngine[Any]] = String(255)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else sealer_of(dialect).seal_value(str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else sealer_of(dialect).open_value(value)


class SealedLongValue(SealedValue):
    """A whole value too long for ``SealedValue``'s column (a delivery address)."""

    impl = Text
    cache_ok = True


class SealedText(TypeDecorator[str]):
    """Free text and raw bodies: only phone numbers and CheckoutRequestIDs are sealed."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else sealer_of(dialect).seal_text(str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else sealer_of(dialect).open_text(value)
