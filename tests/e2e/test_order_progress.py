"""After payment, on Telegram and WhatsApp (issue 12): the merchant moves the order on
from their chat, and the customer hears each step in theirs."""

from __future__ import annotations

from sqlalchemy import select

from storage.schema import orders
from tests.e2e.test_merchant_review import ChatSide, side

__all__ = ["side"]


async def paid_reference(side: ChatSide) -> str:
    await side.confirm_order()
    await side.pay_with("0712345678")
    await side.customer_sees("Paid!")
    async with side.duka.engine.connect() as conn:
        reference: str = (await conn.execute(select(orders.c.reference))).scalar_one()
    return reference


async def test_the_merchant_moves_a_paid_order_on_and_the_customer_hears_each_step(
    side: ChatSide,
) -> None:
    reference = await paid_reference(side)
    ready = await side.merchant_sends(f"/ready {reference}")
    assert ready == f"Order {reference} is now ready. The customer is told."
    await side.customer_sees(f"Your order {reference} is ready.")
    await side.merchant_sends(f"/out {reference}")
    await side.customer_sees(f"Your order {reference} is on its way.")
    delivered = await side.merchant_sends(f"/delivered {reference}")
    assert delivered == f"Order {reference} is now delivered. The customer is told."
    await side.customer_sees(f"Your order {reference} has been delivered.")
    again = await side.merchant_sends(f"/collected {reference}")
    assert again == f"Not changed: order {reference} is already delivered."
    assert side.customer_deliveries("is on its way") == 1


async def test_a_customer_cannot_move_an_order_on(
    side: ChatSide,
) -> None:
    reference = await paid_reference(side)
    answer = await side.customer_sends(f"/delivered {reference}")
    assert answer.startswith("I did not understand that")
    assert side.customer_deliveries("has been delivered") == 0
