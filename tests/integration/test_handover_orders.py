"""Orders that carry the customer's delivery or pickup choice (issue 12): the merchant's
/order shows where to go, and a step that does not fit the choice is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, update

from bot.app import DATABASE
from bot.handover import DELIVERY_SKU
from bot.texts import say
from storage.orders import (
    NewOrderItem,
    OrderHandover,
    create_order,
    get_or_create_customer,
)
from storage.schema import orders
from tests.conftest import RunningDuka
from tests.integration.test_catalog_edits import merchant

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
KENCOM = OrderHandover("delivery", "CBD", "Kencom House, Moi Avenue", (-1.28412, 36.82331))


def _paid_order(conn: Connection, handover: OrderHandover | None) -> str:
    customer = get_or_create_customer(conn, "telegram", "5001", "Wanjiru", NOW)
    items = [
        NewOrderItem("unga", "Unga 2kg", 210, 1),
        NewOrderItem(DELIVERY_SKU, "Delivery (CBD)", 100, 1),
    ]
    order = create_order(conn, customer.id, items, NOW, handover)
    # Paid, as a callback would leave it: what matters here is what comes after.
    conn.execute(update(orders).where(orders.c.id == order.id).values(status="paid", paid_at=NOW))
    return order.reference


async def paid(shop: RunningDuka, handover: OrderHandover | None) -> str:
    reference: str = await shop.app[DATABASE].transaction(_paid_order, handover)
    return reference


async def test_order_shows_the_delivery_address_and_a_map(shop: RunningDuka) -> None:
    reference = await paid(shop, KENCOM)
    text = await merchant(shop, f"/order {reference}")
    assert "🚚 Deliver to CBD: Kencom House, Moi Avenue" in text
    assert "Map: https://maps.google.com/?q=-1.28412,36.82331" in text
    assert "1 × Delivery (CBD) = KES 100" in text


async def test_order_shows_a_pickup(shop: RunningDuka) -> None:
    reference = await paid(shop, OrderHandover("pickup"))
    assert say("en", "m_pickup") in await merchant(shop, f"/order {reference}")


@pytest.mark.parametrize(
    ("handover", "command", "refused"),
    [
        (OrderHandover("pickup"), "/out", True),
        (OrderHandover("pickup"), "/delivered", True),
        (OrderHandover("pickup"), "/collected", False),
        (KENCOM, "/collected", True),
        (KENCOM, "/out", False),
        (None, "/collected", False),  # the shop asked nothing: any step fits
    ],
)
async def test_a_step_that_does_not_fit_the_customers_choice_is_refused(
    shop: RunningDuka, handover: OrderHandover | None, command: str, refused: bool
) -> None:
    reference = await paid(shop, handover)
    answer = await merchant(shop, f"{command} {reference}")
    assert answer.startswith("Not changed:") is refused, answer
