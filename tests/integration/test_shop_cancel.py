"""The shop calls off a paid order (/cancel REF reason): the customer is told why and that
their money comes back, /review and /report keep it in view until /refunded REF, and
nothing is done twice. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.app import DATABASE
from bot.merchant import MerchantDesk
from bot.texts import say
from payments.credentials import NAIROBI
from storage.schema import payments
from tests.conftest import RunningDuka
from tests.helpers import order_status, outbox_rows
from tests.integration.test_catalog_edits import MERCHANT, merchant
from tests.integration.test_conversation import Customer
from tests.integration.test_fulfilment import paid_order

REFUND_KINDS = ("order_cancelled_by_shop", "order_refunded")


async def refund_messages(duka: RunningDuka, order_id: int) -> list[tuple[str, dict[str, str]]]:
    rows = await outbox_rows(duka.engine, order_id)
    return [(r["kind"], r["payload"]) for r in rows if r["kind"] in REFUND_KINDS]


async def test_cancel_tells_the_customer_and_review_lists_it_until_refunded(
    shop: RunningDuka,
) -> None:
    customer = Customer(shop, "8001")
    order = await paid_order(shop, customer)
    ref = order.reference
    await merchant(shop, f"/delivered {ref}")  # delivered goods can come back too
    async with shop.engine.connect() as conn:
        receipt = await conn.scalar(select(payments.c.mpesa_receipt))

    before = datetime.now(NAIROBI)
    cancelled = await merchant(shop, f"/cancel {ref.lower()} the unga was spoilt")
    assert cancelled == (
        f"Done: order {ref} is cancelled and the customer is told; send KES 210 back to "
        f"07XX XXX 678, receipt {receipt}, then /refunded {ref}."
    )
    assert await order_status(shop.engine, order.id) == "refund_pending"
    told = {"order_reference": ref, "amount": 210, "reason": "the unga was spoilt"}
    assert await refund_messages(shop, order.id) == [("order_cancelled_by_shop", told)]
    [listed] = await customer.says("/orders")
    assert f"{ref} — KES 210 — cancelled by the shop, to be refunded" in listed.text

    review = await merchant(shop, "/review")
    assert review in {
        f"To review:\n• {ref} refund KES 210 to 07XX XXX 678, receipt {receipt}; "
        f"cancelled {at:%d %b %H:%M}: the unga was spoilt"
        for at in (before, datetime.now(NAIROBI))
    }
    today = datetime.now(NAIROBI).date()
    assert await merchant(shop, "/report") == (
        f"No order was paid {today} (Nairobi time).\n"
        "Cancelled by you after payment, not counted above: 1, KES 210.\n"
        "Refunds to send (any day): 1, KES 210 in all; /review lists them."
    )

    again = await merchant(shop, f"/cancel {ref} changed my mind")
    assert again == (
        f"Not done: order {ref} is already cancelled and waiting for its refund; "
        f"send /refunded {ref} once the money is sent back"
    )
    assert len(await refund_messages(shop, order.id)) == 1

    refunded = await merchant(shop, f"/refunded {ref} reversal QKX9Z8Y7W6")
    assert refunded == f"Done: order {ref} is marked refunded (KES 210) and the customer is told."
    sent = {"order_reference": ref, "amount": 210, "note": "reversal QKX9Z8Y7W6"}
    assert (await refund_messages(shop, order.id))[1] == ("order_refunded", sent)
    assert await merchant(shop, "/review") == say("en", "m_review_none")
    assert (await merchant(shop, "/report")).splitlines()[1:] == [
        "Cancelled by you after payment, not counted above: 1, KES 210."
    ]
    [listed] = await customer.says("/orders")
    assert f"{ref} — KES 210 — cancelled by the shop, refunded" in listed.text
    twice = await merchant(shop, f"/refunded {ref}")
    assert twice == f"Not done: order {ref} is already marked refunded"
    assert len(await refund_messages(shop, order.id)) == 2


async def test_the_report_keeps_refunds_out_of_the_takings(shop: RunningDuka) -> None:
    kept = await paid_order(shop, Customer(shop, "8001"))
    called_off = await paid_order(shop, Customer(shop, "8002"))
    await merchant(shop, f"/cancel {called_off.reference} out of stock")
    report = (await merchant(shop, "/report")).splitlines()
    assert report[0].endswith("KES 210.")  # the order kept, only
    assert report[-2:] == [
        "Cancelled by you after payment, not counted above: 1, KES 210.",
        "Refunds to send (any day): 1, KES 210 in all; /review lists them.",
    ]
    assert await order_status(shop.engine, kept.id) == "paid"


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ("/cancel DK-NOSUCH wrong", "Not done: no order DK-NOSUCH"),
        ("/cancel {unpaid}", say("en", "m_refused", why=say("en", "m_cancel_usage"))),
        (
            "/cancel {unpaid} no stock",
            "Not done: order {unpaid} is not paid; an unpaid order is called off with "
            "/resolve {unpaid} cancel",
        ),
        ("/refunded", say("en", "m_refused", why=say("en", "m_refunded_usage"))),
        (
            "/refunded {unpaid}",
            "Not done: order {unpaid} is not waiting for a refund; a paid order is called "
            "off first with /cancel {unpaid} <reason>",
        ),
    ],
)
async def test_what_cannot_be_cancelled_or_refunded_is_explained_and_nobody_is_told(
    shop: RunningDuka, command: str, answer: str
) -> None:
    unpaid = await Customer(shop, "8001").confirms_an_order("unga:1")
    ref = unpaid.reference
    assert await merchant(shop, command.format(unpaid=ref)) == answer.format(unpaid=ref)
    assert await order_status(shop.engine, unpaid.id) == "awaiting_payment"
    assert await refund_messages(shop, unpaid.id) == []


async def test_only_a_merchant_cancels_and_a_bare_cancel_stays_the_customers(
    shop: RunningDuka,
) -> None:
    desk = MerchantDesk(shop.app[DATABASE], {MERCHANT}, lambda: datetime.now(UTC))
    order = await paid_order(shop, Customer(shop, "8001"))
    assert await desk.handle("terminal:8001", f"/cancel {order.reference} fraud") is None
    assert await desk.handle(MERCHANT, "/cancel") is None  # the chat's "stop", as for anyone
    assert await order_status(shop.engine, order.id) == "paid"
    assert await refund_messages(shop, order.id) == []
