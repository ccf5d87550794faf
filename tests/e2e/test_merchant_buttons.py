"""The buttons under the merchant's paid-order notification, on Telegram and WhatsApp: a tap
does what /ready, /out, /delivered or /collected REF does, for a configured merchant only;
outside WhatsApp's 24-hour window the template says how many paid orders wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.schema import orders
from tests.e2e import test_telegram_shop as tg
from tests.e2e import test_whatsapp_shop as wa
from tests.e2e.test_merchant_review import (
    MERCHANT_USER,
    REPLY_STARTS,
    ChatSide,
    TelegramSide,
    WhatsAppSide,
    a_moment_later,
    side,
)
from tests.e2e.test_order_progress import paid_reference
from tests.fakes.graph_api import FakeGraph
from tests.helpers import payment_rows, wait_until

__all__ = ["side"]


def notification_buttons(side: ChatSide) -> list[tuple[str, str]]:
    """(label, data) of the buttons on the merchant's latest message."""
    if isinstance(side, TelegramSide):
        [message, *_] = reversed(side.fake.messages_to(tg.MERCHANT))
        rows = message.get("reply_markup", {}).get("inline_keyboard", [])
        return [(b["text"], b["callback_data"]) for row in rows for b in row]
    assert isinstance(side, WhatsAppSide)
    interactive = side.graph.last_interactive(MERCHANT_USER) or {}
    return [(title, data) for _, data, title in wa.choices(interactive)]


async def merchant_taps(side: ChatSide, data: str) -> str:
    """The merchant taps the notification's button carrying ``data``; the desk's answer."""
    before = len(side.merchant_notices())
    if isinstance(side, TelegramSide):
        side.fake.user_presses_button(tg.MERCHANT, data, first_name="Mama Mboga")
    else:
        assert isinstance(side, WhatsAppSide)
        payload = side.graph.button_reply(MERCHANT_USER, data)
        assert await side.graph.post_webhook(side.shop.webhook, payload) == 200

    def answers() -> list[str]:
        return [t for t in side.merchant_notices()[before:] if t.startswith(REPLY_STARTS)]

    await wait_until(lambda: bool(answers()), what=f"the answer to the {data!r} button")
    return answers()[0]


async def customer_forges(side: ChatSide, data: str) -> None:
    """The customer's client sends a merchant button's data from their own chat. The Bot API
    warns that callback data may name no button on the message; the Telegram fake presses
    only buttons on screen, so a real one is pressed and its data replaced before the update
    is polled. On WhatsApp a tap is a webhook naming any message (``context_id``)."""
    if isinstance(side, TelegramSide):
        _, real = tg.buttons(side.fake, tg.CUSTOMER)[0]
        update = side.fake.user_presses_button(tg.CUSTOMER, real)
        update["callback_query"]["data"] = data  # nothing awaited since: not yet polled
    else:
        assert isinstance(side, WhatsAppSide)
        last = side.graph.sent_to(wa.WANJIRU)[-1].message_id
        payload = side.graph.button_reply(wa.WANJIRU, data, "Delivered", context_id=last)
        assert await side.graph.post_webhook(side.shop.webhook, payload) == 200


async def fulfilment_of(side: ChatSide, reference: str) -> str | None:
    async with side.duka.engine.connect() as conn:
        query = select(orders.c.fulfilment).where(orders.c.reference == reference)
        value: str | None = (await conn.execute(query)).scalar_one()
    return value


async def test_the_merchant_taps_ready_and_the_customer_hears_it(side: ChatSide) -> None:
    """Four buttons on Telegram; WhatsApp's three leave "On its way" to /out, and say so."""
    await side.merchant_sends("/pending")  # a merchant who wrote today: WhatsApp's window is open
    reference = await paid_reference(side)
    notice = await side.merchant_sees("New paid order", reference)
    assert "Paid orders not moved on yet: 1." in notice
    steps = [("Ready", "/ready"), ("Delivered", "/delivered"), ("Collected", "/collected")]
    if isinstance(side, TelegramSide):
        steps.insert(1, ("On its way", "/out"))
    else:
        assert f"On its way? Send /out {reference}." in notice
    assert notification_buttons(side) == [(label, f"{cmd} {reference}") for label, cmd in steps]

    answer = await merchant_taps(side, f"/ready {reference}")
    assert answer == f"Order {reference} is now ready. The customer is told."
    await side.customer_sees(f"Your order {reference} is ready.")
    assert await fulfilment_of(side, reference) == "ready"


async def test_a_customer_sending_a_merchant_buttons_data_moves_nothing(side: ChatSide) -> None:
    """Forged data from anyone not configured as a merchant is unknown data: the menu."""
    reference = await paid_reference(side)
    await side.merchant_sees(reference)
    answered = side.customer_deliveries("")  # every message so far
    await customer_forges(side, f"/delivered {reference}")
    await wait_until(lambda: side.customer_deliveries("") > answered, what="an answer")
    assert "Pick a category:" in side.customer_texts()[-1]  # the menu: unknown data
    await a_moment_later()
    assert await fulfilment_of(side, reference) is None
    assert side.customer_deliveries("has been delivered") == 0
    assert not any(t.startswith(REPLY_STARTS) for t in side.customer_texts())


@pytest.fixture
async def wa_side(database_url: str, tmp_path: Path) -> AsyncIterator[WhatsAppSide]:
    async with FakeGraph() as graph:
        shop = await wa.open_shop(database_url, tmp_path, graph)
        try:
            yield WhatsAppSide(shop)
        finally:
            await shop.runner.cleanup()


async def test_outside_the_window_the_template_says_how_many_orders_wait(
    wa_side: WhatsAppSide,
) -> None:
    """A merchant who has not written for a day: duka_order_paid, the count last."""
    reference = await paid_reference(wa_side)
    graph = wa_side.graph
    await graph.wait_for(lambda g: bool(g.templates_to(MERCHANT_USER)))
    [template] = graph.templates_to(MERCHANT_USER)
    assert template["name"] == "duka_order_paid"
    values = [p["text"] for p in template["components"][0]["parameters"]]
    [paid] = await payment_rows(wa_side.duka.engine, 1)
    assert values == [reference, "KES 60", paid.mpesa_receipt, "Wanjiru", "1"]
