"""What the customer did, read once from a channel's ``Inbound``: the step functions see
these typed events, never raw button data."""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat import buttons
from bot.chat.model import Inbound


@dataclass(frozen=True, slots=True)
class Pressed:
    action: buttons.Action | None  # None: data we do not know (stale or forged)


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # "/start", "/cart", ... lower case, without "@botname"


@dataclass(frozen=True, slots=True)
class Typed:
    text: str  # stripped; may be empty


@dataclass(frozen=True, slots=True)
class SharedContact:
    phone: str
    own: bool  # the platform vouches that it is the sender's own number


@dataclass(frozen=True, slots=True)
class SharedLocation:
    latitude: float
    longitude: float
    place: str  # the place's name and address ("" for a bare pin)


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A sticker, photo, voice note...: we read text and buttons."""


ChatEvent = Pressed | Command | Typed | SharedContact | SharedLocation | Unsupported


def read_event(inbound: Inbound) -> ChatEvent:
    if inbound.unsupported:
        return Unsupported()
    if inbound.contact_phone is not None:
        return SharedContact(inbound.contact_phone, inbound.contact_is_own)
    if inbound.location is not None:
        where = inbound.location
        return SharedLocation(where.latitude, where.longitude, where.place)
    if inbound.button is not None:
        return Pressed(buttons.decode(inbound.button))
    text = (inbound.text or "").strip()
    if text.startswith("/"):
        return Command(text.split()[0].lower().split("@")[0])
    return Typed(text)
