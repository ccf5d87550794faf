"""A paid order the shop calls off, on Telegram and WhatsApp: the merchant sends /cancel
and /refunded from their chat, and the customer reads both in theirs."""

from __future__ import annotations

from tests.e2e.test_merchant_review import ChatSide, side
from tests.e2e.test_order_progress import paid_reference

__all__ = ["side"]


async def test_the_customer_hears_why_and_then_that_the_money_was_sent(side: ChatSide) -> None:
    reference = await paid_reference(side)
    total = f"KES {side.total:,}"
    done = await side.merchant_sends(f"/cancel {reference} we are out of unga")
    assert done.startswith(f"Done: order {reference} is cancelled and the customer is told")
    told = await side.customer_sees(f"The shop has cancelled your order {reference}")
    assert told.startswith(
        f"The shop has cancelled your order {reference}: we are out of unga\n"
        f"The shop will send your payment of {total} back to your M-Pesa number."
    )
    assert (await side.merchant_sends("/review")).startswith(f"To review:\n• {reference} refund")
    await side.merchant_sends(f"/refunded {reference}")
    await side.customer_sees(f"The shop has sent your payment of {total} for order {reference}")
    assert side.customer_deliveries("The shop has cancelled your order") == 1
