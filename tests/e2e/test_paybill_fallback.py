"""The Paybill fallback as a customer lives it, on the whole product (``build_app``) with the
terminal chat as the channel, the embedded Daraja simulator and a real database: a push
fails, the failed message offers "Pay by Paybill", the customer pays by hand, and is told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Connection

from bot.app import CONVERSATION, DATABASE, MERCHANT_DESK
from bot.channels.terminal import MERCHANT_CHAT, TerminalChannel
from bot.chat.model import Button, Inbound, Reply
from storage.orders import OrderRecord, customer_by_chat, recent_orders
from tests.c2b_support import (
    SHOWN_PHONE,
    PaybillDuka,
    c2b_url,
    confirmation_body,
    post_json,
    post_raw,
    start_paybill_duka,
)
from tests.conftest import TEST_TOML
from tests.helpers import order_status, outbox_rows, payment_rows, wait_until

CATALOG = """
[[catalog.products]]
sku = "unga"
name = "Unga 2kg"
price = 210
category = "Staples"
"""
CHAT = "2001"
CANCELLED_PHONE = "0712000001"  # the simulator's rule: the customer cancels the PIN prompt
PAYBILL_LABEL = "Pay by Paybill"


@dataclass
class Shop:
    paybill: PaybillDuka
    terminal: TerminalChannel

    async def types(self, text: str) -> None:
        await self._through_terminal(Inbound("terminal", CHAT, "Wanjiru", text=text))

    async def taps(self, data: str) -> None:
        await self._through_terminal(Inbound("terminal", CHAT, "Wanjiru", button=data))

    async def _through_terminal(self, event: Inbound) -> None:
        """Replies go through the terminal, as in the demo, so that the "check your phone"
        message is remembered and later edited."""
        await self.paybill.duka.app[CONVERSATION].reply_through(self.terminal, event)

    async def presses(self, data: str) -> list[Reply]:
        """A button press answered directly (what the conversation returns)."""
        event = Inbound("terminal", CHAT, "Wanjiru", button=data)
        return await self.paybill.duka.app[CONVERSATION].handle(event)

    def buttons(self) -> list[Button]:
        return self.terminal.buttons.get(CHAT, [])

    def customer_saw(self, start: str) -> bool:
        return any(text.startswith(start) for text in self.terminal.messages.get(CHAT, []))

    def merchant_saw(self, start: str) -> bool:
        return any(t.startswith(start) for t in self.terminal.messages.get(MERCHANT_CHAT, []))

    async def order_fails_to_push(self) -> OrderRecord:
        """Orders one Unga, pays from a phone that cancels the prompt, and waits until the
        failed message has been delivered."""
        await self.taps("prod:unga")
        await self.taps("add:unga:1")
        await self.taps("confirm")
        await self.types(CANCELLED_PHONE)
        await self.taps("phone:typed")
        order = await self.paybill.duka.app[DATABASE].transaction(_latest_order, CHAT)
        await wait_until(
            lambda: self.customer_saw(f"The payment for order {order.reference} did not go"),
            what="the failed message to reach the customer",
        )
        return order


def _latest_order(conn: Connection, chat_id: str) -> OrderRecord:
    customer = customer_by_chat(conn, "terminal", chat_id)
    assert customer is not None
    return recent_orders(conn, customer.id)[0]


async def _open(database_url: str, tmp_path: Path, *, c2b: bool) -> Shop:
    terminal = TerminalChannel(show=lambda _line: None)
    paybill = await start_paybill_duka(
        database_url, tmp_path, c2b=c2b, toml=TEST_TOML + CATALOG, terminal=terminal
    )
    return Shop(paybill, terminal)


@pytest.fixture
async def shop(database_url: str, tmp_path: Path) -> AsyncIterator[Shop]:
    """The shop with MPESA_C2B_CONFIRMATION_URL set, on SQLite and on PostgreSQL."""
    running = await _open(database_url, tmp_path, c2b=True)
    try:
        yield running
    finally:
        await running.paybill.runner.cleanup()


@pytest.fixture
async def shop_without_c2b(database_url: str, tmp_path: Path) -> AsyncIterator[Shop]:
    """The same shop with the Paybill fallback off."""
    running = await _open(database_url, tmp_path, c2b=False)
    try:
        yield running
    finally:
        await running.paybill.runner.cleanup()


async def test_failed_push_message_offers_pay_by_paybill(shop: Shop) -> None:
    """The delivered payment_failed message carries the Paybill button for its order."""
    order = await shop.order_fails_to_push()
    assert [(b.label, b.data) for b in shop.buttons()] == [
        ("Try again", f"retry:{order.id}"),
        ("Use another number", f"other:{order.id}"),
        (PAYBILL_LABEL, f"paybill:{order.id}"),
        ("Cancel order", f"cancel:{order.id}"),
    ]

    # Shown first, then recorded as sent: the row may lag the screen by a moment.
    async def sent() -> bool:
        rows = await outbox_rows(shop.paybill.engine, order.id)
        return [(r["kind"], r["status"]) for r in rows] == [("payment_failed", "sent")]

    await wait_until(sent, what="the payment_failed message recorded as sent")


async def test_pressing_pay_by_paybill_gives_the_paybill_account_and_amount(
    shop: Shop,
) -> None:
    """The answer names the Paybill number, the order reference as account, and the total."""
    order = await shop.order_fails_to_push()
    [answer] = await shop.presses(f"paybill:{order.id}")
    assert "Paybill 174379" in answer.text
    assert f"Account {order.reference}" in answer.text
    assert "KES 210" in answer.text
    assert [(b.label, b.data) for row in answer.buttons for b in row] == [
        ("Cancel order", f"cancel:{order.id}")
    ]
    assert await order_status(shop.paybill.engine, order.id) == "awaiting_payment"


async def test_customer_who_pays_by_paybill_is_told_promptly(shop: Shop) -> None:
    """After the button, a Paybill payment pays the order and both sides hear within seconds."""
    order = await shop.order_fails_to_push()
    await shop.presses(f"paybill:{order.id}")
    paid = await shop.paybill.duka.simulator.pay_bill("254712345126", order.reference, 210)
    assert await order_status(shop.paybill.engine, order.id) == "paid"
    [failed, c2b] = await payment_rows(shop.paybill.engine, order.id)
    assert (failed.status, c2b.status, c2b.settled_by) == ("failed", "paid", "c2b")
    await wait_until(
        lambda: shop.merchant_saw(f"New paid order {order.reference}"),
        what="the merchant's paid message",
    )
    try:
        await wait_until(
            lambda: shop.customer_saw(f"Paid! KES 210 for order {order.reference}"),
            timeout=3.0,
            what="the customer's paid message",
        )
    except AssertionError:
        rows = await outbox_rows(shop.paybill.engine, order.id)
        [message] = [r for r in rows if r["kind"] == "payment_paid"]
        raise AssertionError(
            f"payment_paid not delivered within 3 s: {message['status']}, "
            f"attempts {message['attempts']}, last error {message['last_error']!r}"
        ) from None
    assert any(paid.trans_id in text for text in shop.terminal.messages[CHAT])


async def test_paybill_button_on_a_paid_order_only_shows_its_status(shop: Shop) -> None:
    """Pressed again after paying: no Paybill details for an order that is already paid."""
    order = await shop.order_fails_to_push()
    await shop.paybill.duka.simulator.pay_bill("254712345126", order.reference, 210)
    [answer] = await shop.presses(f"paybill:{order.id}")
    assert answer.text == f"• {order.reference} — KES 210 — paid"


async def test_refused_push_offers_pay_by_paybill_at_once(shop: Shop) -> None:
    """A push M-Pesa refuses outright (phone …008 busy) offers the Paybill in the reply."""
    await shop.taps("prod:unga")
    await shop.taps("add:unga:1")
    await shop.taps("confirm")
    await shop.types("0712345008")
    [refused] = await shop.presses("phone:typed")
    assert PAYBILL_LABEL in [b.label for row in refused.buttons for b in row]


async def test_without_c2b_the_failed_message_has_no_paybill_button(
    shop_without_c2b: Shop,
) -> None:
    """No MPESA_C2B_CONFIRMATION_URL: no button, and a forged press gives no Paybill."""
    shop = shop_without_c2b
    assert shop.paybill.duka.config.daraja.paybill_fallback is None
    order = await shop.order_fails_to_push()
    labels = [b.label for b in shop.buttons()]
    assert labels == ["Try again", "Use another number", "Cancel order"]
    replies = await shop.presses(f"paybill:{order.id}")
    assert all("Paybill" not in reply.text for reply in replies)


async def test_without_c2b_no_c2b_route_is_served(shop_without_c2b: Shop) -> None:
    """The confirmation path is an unknown path when the fallback is off."""
    port = int(shop_without_c2b.paybill.duka.base_url.rsplit(":", 1)[1])
    response = await post_raw(c2b_url(port), b"{}")
    assert response.status_code == 404
    assert shop_without_c2b.paybill.duka.simulator.c2b_registration is None


async def test_merchant_is_told_of_paybill_money_for_no_order_and_can_attach_it(
    shop: Shop,
) -> None:
    """A mistyped account: the merchant's alert names it, and /match pays the right order."""
    order = await shop.order_fails_to_push()
    typo = order.reference[:-1] + ("X" if order.reference[-1] != "X" else "Y")
    body = confirmation_body("RKL51ZDR4F", typo.lower(), "210.00")
    response = await post_json(shop.paybill.confirmation_url, body)
    assert response.status_code == 200
    alert = f"KES 210 received from {SHOWN_PHONE}, receipt RKL51ZDR4F, not matched"
    await wait_until(lambda: shop.merchant_saw(alert), what="the merchant's unmatched alert")
    [text] = [t for t in shop.terminal.messages[MERCHANT_CHAT] if t.startswith(alert)]
    assert f"Paybill account {typo.lower()} is no order" in text

    desk = shop.paybill.duka.app[MERCHANT_DESK]
    answer = await desk.handle(f"terminal:{MERCHANT_CHAT}", f"/match RKL51ZDR4F {order.reference}")
    assert answer is not None
    assert "attached to order" in answer.text
    assert await order_status(shop.paybill.engine, order.id) == "paid"
    [_, attached] = await payment_rows(shop.paybill.engine, order.id)
    assert (attached.mpesa_receipt, attached.settled_by) == ("RKL51ZDR4F", "match")
