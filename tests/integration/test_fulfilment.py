"""After payment (issue 12): the merchant moves a paid order on (/ready, /out, /delivered,
/collected) and the customer is told each step, in their language, and sees it in
/orders. SQLite and PostgreSQL; the table of steps is checked exhaustively."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.app import DATABASE
from bot.fulfilment import FINAL, TRANSITIONS, Fulfilment
from bot.merchant import MerchantDesk
from bot.texts import say
from storage.orders import OrderRecord
from storage.schema import outbox
from tests.conftest import RunningDuka
from tests.helpers import wait_for_payment_status
from tests.integration.test_catalog_edits import MERCHANT, merchant
from tests.integration.test_conversation import Customer


async def paid_order(duka: RunningDuka, customer: Customer) -> OrderRecord:
    order = await customer.confirms_an_order("unga:1")
    await customer.pays_from("0712345678")
    await wait_for_payment_status(duka.engine, order.id, "paid")
    return order


async def progress_messages(duka: RunningDuka, order_id: int) -> list[str]:
    async with duka.engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.payload)
            .where(outbox.c.order_id == order_id, outbox.c.kind == "order_progress")
            .order_by(outbox.c.id)
        )
        return [json.loads(r.payload)["fulfilment"] for r in rows]


def test_every_step_goes_forward_only_and_the_final_ones_end_it() -> None:
    order = list(Fulfilment)
    for was, to in itertools.product(Fulfilment, Fulfilment):
        allowed = to in TRANSITIONS[was]
        if was in FINAL:
            assert not allowed, f"{was} -> {to}"
        elif to is Fulfilment.NEW or order.index(to) <= order.index(was):
            assert not allowed, f"{was} -> {to}"  # never back, never stay
        elif was is Fulfilment.ON_ITS_WAY:
            assert allowed is (to is Fulfilment.DELIVERED), f"{was} -> {to}"
        else:
            assert allowed, f"{was} -> {to}"


async def test_ready_on_its_way_delivered_each_told_once_and_shown_in_orders(
    shop: RunningDuka,
) -> None:
    customer = Customer(shop, "6001")
    order = await paid_order(shop, customer)
    reference = order.reference
    assert await merchant(shop, f"/ready {reference}") == (
        f"Order {reference} is now ready. The customer is told."
    )
    [listed] = await customer.says("/orders")
    assert f"{reference} — KES 210 — paid, ready" in listed.text
    await merchant(shop, f"/out {reference.lower()}")  # typed any way, as /order takes it
    assert await merchant(shop, f"/delivered {reference}") == (
        f"Order {reference} is now delivered. The customer is told."
    )
    assert await progress_messages(shop, order.id) == ["ready", "on_its_way", "delivered"]
    [listed] = await customer.says("/orders")
    assert f"{reference} — KES 210 — delivered" in listed.text
    again = await merchant(shop, f"/delivered {reference}")
    assert again == say("en", "m_not_moved", why=f"order {reference} is already delivered")
    assert await progress_messages(shop, order.id) == ["ready", "on_its_way", "delivered"]


async def test_a_swahili_customer_reads_it_in_swahili(shop: RunningDuka) -> None:
    customer = Customer(shop, "6001")
    await customer.presses("lang:sw")
    await customer.adds("unga", 1)
    await customer.presses("confirm")
    [order] = await customer.orders()
    await customer.says("0712345678")
    await customer.presses("phone:typed")  # "Ndiyo, lipa"
    await wait_for_payment_status(shop.engine, order.id, "paid")
    await merchant(shop, f"/collected {order.reference}")
    [listed] = await customer.says("/orders")
    assert f"{order.reference} — KES 210 — limechukuliwa" in listed.text


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("/ready DK-NOSUCH", "there is no order DK-NOSUCH"),
        ("/out {unpaid}", "order {unpaid} is not paid (awaiting_payment)"),
    ],
)
async def test_an_order_that_cannot_move_on_is_explained_and_nobody_is_told(
    shop: RunningDuka, command: str, why: str
) -> None:
    unpaid = await Customer(shop, "6001").confirms_an_order("unga:1")
    text = command.format(unpaid=unpaid.reference)
    assert await merchant(shop, text) == say(
        "en", "m_not_moved", why=why.format(unpaid=unpaid.reference)
    )
    assert await progress_messages(shop, unpaid.id) == []


async def test_bare_commands_get_the_usage_and_customers_get_no_merchant_answer(
    shop: RunningDuka,
) -> None:
    assert await merchant(shop, "/ready") == say("en", "m_move_usage")
    desk = MerchantDesk(shop.app[DATABASE], {MERCHANT}, lambda: datetime.now(UTC))
    order = await paid_order(shop, Customer(shop, "6001"))
    assert await desk.handle("telegram:6001", f"/delivered {order.reference}") is None
    assert await progress_messages(shop, order.id) == []
