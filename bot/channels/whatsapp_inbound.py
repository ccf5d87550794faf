"""Reading WhatsApp Cloud API webhooks: signature, and what customers did.

Pure functions (they only log what they skip): the channel checks the signature over the
raw bytes, then turns every entry, change and message of one POST into ``WaMessage``
objects (statuses become ``WaStatus``). Customers are keyed on the business-scoped
``user_id`` where Meta sends one, else on ``wa_id``; the phone number is never assumed to
be the M-Pesa number.

Everything read is text a database can store: NUL (PostgreSQL refuses it) and lone
surrogates (not UTF-8: SQLite refuses them) are cleaned out of texts and names, and a
message whose id or sender holds them is skipped, since a changed id is another's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)


def signature_matches(app_secret: str, body: bytes, header: str) -> bool:
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    given = header.removeprefix("sha256=").encode("utf-8", "replace")  # any bytes compare
    return hmac.compare_digest(expected.encode(), given)


@dataclass(frozen=True, slots=True)
class WaMessage:
    id: str  # wamid: Meta redelivers, so this is the key for "already handled"
    chat_id: str  # user_id (BSUID) when present, else wa_id
    wa_id: str | None
    name: str
    kind: str  # text | button | contact | location | unsupported
    text: str | None = None
    button: str | None = None
    contact_phone: str | None = None
    contact_is_own: bool = False
    latitude: float | None = None  # a shared location
    longitude: float | None = None
    place: str = ""  # its name and address, when the customer picked a place


@dataclass(frozen=True, slots=True)
class WaStatus:
    message_id: str
    status: str  # sent | delivered | read | failed
    error_codes: tuple[int, ...] = ()


def read_webhook(payload: Any) -> tuple[list[WaMessage], list[WaStatus]]:
    """Everything one POST carries; parts it cannot read are skipped, never fatal."""
    messages: list[WaMessage] = []
    statuses: list[WaStatus] = []
    if not isinstance(payload, dict):
        return messages, statuses
    for entry in _list(payload.get("entry")):
        for change in _list(entry.get("changes")):
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            contacts = _list(value.get("contacts"))
            for message in _list(value.get("messages")):
                try:
                    parsed = _message(message, contacts)
                except _UnstorableId:
                    # Not the id itself in the log: it is what could not be handled.
                    log.warning("skipped a WhatsApp message: its id or sender is not storable")
                    continue
                if parsed is not None:
                    messages.append(parsed)
            for status in _list(value.get("statuses")):
                statuses.append(
                    WaStatus(
                        _text(status.get("id")) or "",
                        _text(status.get("status")) or "",
                        tuple(
                            e["code"]
                            for e in _list(status.get("errors"))
                            if isinstance(e.get("code"), int)
                        ),
                    )
                )
    return messages, statuses


def _message(message: dict[str, Any], contacts: list[dict[str, Any]]) -> WaMessage | None:
    wa_id = _id(message.get("from"))
    user_id = _id(message.get("from_user_id"))
    profile = next(
        (
            c
            for c in contacts
            if (wa_id and c.get("wa_id") == wa_id) or (user_id and c.get("user_id") == user_id)
        ),
        # Without a sender field, the only contact is the sender; with several, nobody is.
        contacts[0] if len(contacts) == 1 and not (wa_id or user_id) else {},
    )
    user_id = user_id or _id(profile.get("user_id"))
    wa_id = wa_id or _id(profile.get("wa_id"))
    chat_id = user_id or wa_id
    message_id = _id(message.get("id"))
    if not chat_id or not message_id:
        return None
    name = _text(_dict(profile.get("profile")).get("name")) or ""
    base = WaMessage(message_id, chat_id, wa_id, name, kind="unsupported")
    kind = message.get("type")
    if kind == "text":
        return replace(base, kind="text", text=_text(_dict(message.get("text")).get("body")))
    if kind == "interactive":
        interactive = _dict(message.get("interactive"))
        reply = _dict(interactive.get("button_reply")) or _dict(interactive.get("list_reply"))
        pressed = _text(reply.get("id"))
        if pressed:
            return replace(base, kind="button", button=pressed)
    if kind == "button":  # a template's quick-reply button
        payload = _text(_dict(message.get("button")).get("payload"))
        if payload:
            return replace(base, kind="button", button=payload)
    if kind == "contacts":
        return _contact(base, message, wa_id)
    if kind == "location":
        return _location(base, _dict(message.get("location")))
    if kind == "reaction":
        return None  # a 👍 on our message needs no answer (and answers cost rate limit)
    return base


def _contact(base: WaMessage, message: dict[str, Any], sender_wa_id: str | None) -> WaMessage:
    found: list[tuple[bool, bool, str]] = []  # (the sender's WhatsApp number, own, number)
    for card in _list(message.get("contacts")):
        for phone in _list(card.get("phones")):
            number = _text(phone.get("phone")) or _text(phone.get("wa_id"))
            if not number:
                continue
            # The customer's own number: the answer to our request_contact_info, or a card
            # whose WhatsApp id is the sender's. Any other card may be anyone's.
            senders = sender_wa_id is not None and phone.get("wa_id") == sender_wa_id
            found.append((senders, senders or card.get("origin") == "contact_request", number))
    if not found:
        return base
    # Prefer the phone that is the sender's WhatsApp number (a card can list a landline first).
    _, own, number = max(found, key=lambda f: (f[0], f[1]))
    return replace(base, kind="contact", contact_phone=number, contact_is_own=own)


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _location(base: WaMessage, location: dict[str, Any]) -> WaMessage:
    latitude, longitude = (
        _degrees(location.get("latitude"), 90),
        _degrees(location.get("longitude"), 180),
    )
    if latitude is None or longitude is None:
        return base  # not a place on Earth: unsupported, like a sticker
    place = ", ".join(t for t in (_text(location.get("name")), _text(location.get("address"))) if t)
    return replace(base, kind="location", latitude=latitude, longitude=longitude, place=place)


def _degrees(value: Any, most: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if -most <= value <= most else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A text as the customer sent it, made storable (NUL dropped, lone surrogates "?")."""
    if not isinstance(value, str):
        return None
    return _storable(value).strip() or None


class _UnstorableId(ValueError):
    """An id or sender no database stores as sent: the message cannot be keyed on it."""


def _id(value: Any) -> str | None:
    """An identifier as sent; cleaning it would make it another one, so it is refused."""
    if not isinstance(value, str):
        return None
    if _storable(value) != value:
        raise _UnstorableId()
    return value.strip() or None


def _storable(text: str) -> str:
    return text.replace("\x00", "").encode("utf-8", "replace").decode()
