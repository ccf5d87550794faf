"""How a paid order reaches the customer: picked up at the shop, or delivered to a zone
for a fee. The shop's choices come from ``[shop]`` in config.toml; an order records the
customer's (``orders.handover`` and the delivery columns).

A delivery fee is a line on the order (sku ``DELIVERY_SKU``), so that it is part of the
order's total, its M-Pesa amount, its receipt and the reports, like any other line.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.texts import say
from storage.orders import OrderHandover


class Handover(StrEnum):
    PICKUP = "pickup"
    DELIVERY = "delivery"


# Not a valid catalog sku (bot.catalog.SKU has no "@"): no product can be mistaken for it.
DELIVERY_SKU = "@delivery"
MAX_ADDRESS = 200  # characters of a typed address or landmark
MAX_DELIVERY_FEE = 10_000  # KES: more is a typo for a shop's own rider
MAX_ZONE_NAME = 20  # a zone is a button: WhatsApp's reply button titles stop at 20


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    fee: int  # whole KES


@dataclass(frozen=True, slots=True)
class HandoverOptions:
    """What the shop offers. No offers at all: checkout asks nothing (as before there
    was a choice), and the order records none."""

    offers: tuple[Handover, ...] = ()
    pickup_point: str = ""
    pickup_hours: str = ""
    zones: tuple[Zone, ...] = ()

    @property
    def asks(self) -> bool:
        """Whether checkout records a handover (it asks only when there is a choice)."""
        return bool(self.offers)

    def zone(self, name: str | None) -> Zone | None:
        return next((z for z in self.zones if z.name == name), None)


def map_link(location: tuple[float, float]) -> str:
    """A link any phone opens in its maps app."""
    latitude, longitude = location
    return f"https://maps.google.com/?q={latitude:.5f},{longitude:.5f}"


def for_merchant(handover: OrderHandover | None) -> str:
    """Where the order goes, for the merchant's messages ("" when the shop asks nothing)."""
    if handover is None:
        return ""
    if handover.way == Handover.PICKUP:
        return say("en", "m_pickup")
    where = handover.address or say("en", "m_pin_only")
    lines = [say("en", "m_delivery", zone=handover.zone or "-", address=where)]
    if handover.location is not None:
        lines.append(say("en", "m_map", link=map_link(handover.location)))
    return "\n".join(lines)
