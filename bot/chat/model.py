"""What a channel hands the conversation (``Inbound``) and what it gets back (``Reply``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class Location:
    latitude: float
    longitude: float
    place: str = ""  # the place's name and address, when the customer picked one


@dataclass(frozen=True, slots=True)
class Inbound:
    """One thing the customer did: typed text (commands start with /), pressed a button,
    or shared a contact."""

    channel: str  # telegram | whatsapp | terminal
    chat_id: str
    user_name: str = ""
    text: str | None = None
    button: str | None = None  # the button's data, e.g. "add:unga-2kg:2"
    contact_phone: str | None = None
    contact_is_own: bool = False  # the shared contact is the sender's own number
    location: Location | None = None  # a shared location (Telegram, WhatsApp)
    unsupported: bool = False  # a sticker, photo, voice note...: we read text and buttons


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    data: str  # at most 64 bytes (Telegram's callback_data limit)


@dataclass(frozen=True, slots=True)
class Document:
    """A file that goes with a reply (the merchant's CSV export), sent as the platform's
    document message."""

    filename: str  # what the recipient sees and saves it as
    content: bytes = field(repr=False)
    mime_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()  # rows of buttons under the message
    ask_contact: str | None = None  # label of a "share my number" button, where supported
    edit: bool = False  # replace the message whose button was pressed, where possible
    tag: str | None = None  # remember this message, to edit it later (e.g. payment:<id>)
    close_keyboard: bool = False  # take away a "share my number" keyboard, where there is one
    document: Document | None = None  # a file to send; the text goes with it as its caption
    ask_location: str | None = None  # label of a "send my location" button, where supported


PAYMENT_TAG = "payment:"  # the tag of a payment's "check your phone", which its result edits


def payment_tag(payment_id: object) -> str:
    return f"{PAYMENT_TAG}{payment_id}"


class Step(StrEnum):
    BROWSING = "browsing"
    AWAITING_PHONE = "awaiting_phone"  # an order waits for the number to pay it from
    # Before the order exists (the cart is still the cart): how it reaches the customer.
    CHOOSING_HANDOVER = "choosing_handover"  # delivery or pickup?
    CHOOSING_ZONE = "choosing_zone"  # which delivery zone?
    AWAITING_ADDRESS = "awaiting_address"  # a location or typed address in ``zone``


@dataclass(frozen=True, slots=True)
class ChatState:
    """A chat's place in the conversation; stored as JSON so it survives restarts.

    Frozen: a step returns a new state (``dataclasses.replace``), never changes this one.
    """

    step: Step = Step.BROWSING
    cart: Mapping[str, int] = field(default_factory=dict)  # sku -> quantity
    order_id: int | None = None  # the order being paid (awaiting_phone)
    picking: tuple[str, int] | None = None  # (sku, quantity) on the product screen
    typed_msisdn: str | None = None  # a typed number waiting for the customer's "yes"
    zone: str | None = None  # the delivery zone chosen (awaiting_address)

    def to_json(self) -> str:
        return json.dumps(
            {
                "step": str(self.step),
                "cart": dict(self.cart),
                "order_id": self.order_id,
                "picking": list(self.picking) if self.picking else None,
                "typed_msisdn": self.typed_msisdn,
                "zone": self.zone,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ChatState:
        data: dict[str, Any] = json.loads(text)
        picking = data.get("picking")
        step = str(data.get("step", Step.BROWSING))
        return cls(
            step=Step(step) if step in {s.value for s in Step} else Step.BROWSING,
            cart={str(k): int(v) for k, v in dict(data.get("cart") or {}).items()},
            order_id=data.get("order_id"),
            picking=(str(picking[0]), int(picking[1])) if picking else None,
            typed_msisdn=data.get("typed_msisdn"),
            zone=data.get("zone"),
        )
