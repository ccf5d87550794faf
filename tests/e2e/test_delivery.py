"""Delivery or pickup at checkout, end to end on Telegram and WhatsApp (issue 12): the
zone's fee is a line of the order and part of the one M-Pesa amount, the location shared
from the chat is kept with the order (sealed at rest), and the merchant is told where."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from sqlalchemy import select, text

from storage.schema import order_items, orders, payments
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.e2e import test_telegram_shop as tg
from tests.e2e import test_whatsapp_shop as wa
from tests.e2e.test_telegram_shop import CATALOG
from tests.fakes.graph_api import FakeGraph, WaUser
from tests.fakes.telegram_api import FakeTelegram

HANDOVER = """
fulfilment = ["pickup", "delivery"]
pickup_point = "Shop 12, Kenyatta Market"
pickup_hours = "8:00-19:00"
[[shop.delivery_zones]]
name = "CBD"
fee = 100
[[shop.delivery_zones]]
name = "Westlands"
fee = 250
"""
# The test shop's [shop] table comes first in TEST_TOML: the keys go right under its name.
SHOP_TOML = TEST_TOML.replace('name = "Test Duka"\n', 'name = "Test Duka"\n' + HANDOVER, 1)
KENCOM = (-1.28412, 36.82331)
MERCHANT = WaUser(wa.MERCHANT_NUMBER, name="Mama Mboga")


class Customer(Protocol):
    duka: RunningDuka
    cart_total: int

    async def fill_cart_and_confirm(self) -> None: ...
    async def press(self, label: str) -> None: ...
    async def share_location(self, place: tuple[str, str]) -> None: ...
    async def pay_with(self, number: str) -> None: ...
    async def sees(self, words: str) -> None: ...
    def asked_for_location(self) -> bool: ...
    async def merchant_sees(self, words: str) -> None: ...


class TelegramCustomer:
    cart_total = 270  # 2 × Sukuma wiki + 1 × Unga 2kg

    def __init__(self, duka: RunningDuka, fake: FakeTelegram) -> None:
        self.duka, self.fake = duka, fake

    async def fill_cart_and_confirm(self) -> None:
        for step in ("/start",):
            await tg.says(self.fake, tg.CUSTOMER, step)
        for label in ("Vegetables", "Sukuma wiki", "+", "Add to cart", "Menu", "Staples"):
            await tg.press(self.fake, tg.CUSTOMER, label)
        for label in ("Unga 2kg", "Add to cart", "Checkout", "Confirm order"):
            await tg.press(self.fake, tg.CUSTOMER, label)

    async def press(self, label: str) -> None:
        await tg.press(self.fake, tg.CUSTOMER, label)

    async def share_location(self, place: tuple[str, str]) -> None:
        self.fake.user_shares_location(tg.CUSTOMER, *KENCOM, venue=place)

    async def pay_with(self, number: str) -> None:
        await tg.types_number(self.fake, tg.CUSTOMER, number)

    async def sees(self, words: str) -> None:
        await tg.sees(self.fake, tg.CUSTOMER, words)

    def asked_for_location(self) -> bool:
        markup = self.fake.last_markup(tg.CUSTOMER) or {}
        return any(b.get("request_location") for row in markup.get("keyboard", []) for b in row)

    async def merchant_sees(self, words: str) -> None:
        await tg.sees(self.fake, tg.MERCHANT, words)


class WhatsAppCustomer:
    cart_total = 60  # 2 × Sukuma wiki

    def __init__(self, shop: wa.Shop) -> None:
        self.shop, self.duka, self.graph = shop, shop.duka, shop.graph

    async def fill_cart_and_confirm(self) -> None:
        # The merchant wrote today: their window is open, the paid order comes as text
        # (outside it, a template with the reference; /order REF shows the address).
        await wa.writes(self.shop, MERCHANT, "/today")
        await wa.writes(self.shop, wa.WANJIRU, "Hi")
        for label in ("Vegetables", "Sukuma wiki", "+", "Add to cart", "Checkout"):
            await wa.taps(self.shop, wa.WANJIRU, label)
        await wa.taps(self.shop, wa.WANJIRU, "Confirm order")

    async def press(self, label: str) -> None:
        await wa.taps(self.shop, wa.WANJIRU, label)

    async def share_location(self, place: tuple[str, str]) -> None:
        await wa.deliver(self.shop, self.graph.location(wa.WANJIRU, *KENCOM, *place))

    async def pay_with(self, number: str) -> None:
        await wa.writes(self.shop, wa.WANJIRU, number)
        await wa.taps(self.shop, wa.WANJIRU, "Yes, pay")

    async def sees(self, words: str) -> None:
        await wa.sees(self.shop, wa.WANJIRU, words)

    def asked_for_location(self) -> bool:
        last = self.graph.last_interactive(wa.WANJIRU) or {}
        return last.get("type") == "location_request_message"

    async def merchant_sees(self, words: str) -> None:
        await wa.sees(self.shop, MERCHANT, words)


async def _open(
    database_url: str, tmp_path: Path, env: dict[str, str]
) -> tuple[RunningDuka, web.AppRunner]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = make_config(database_url, port, tmp_path, toml=SHOP_TOML + CATALOG, **env)
    return await start_duka(config, sock, dispatch_seconds=0.05)


@pytest.fixture(params=["telegram", "whatsapp"])
async def customer(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[Customer]:
    if request.param == "telegram":
        async with FakeTelegram() as fake:
            duka, runner = await _open(database_url, tmp_path, tg.telegram_env(fake))
            try:
                yield TelegramCustomer(duka, fake)
            finally:
                await runner.cleanup()
    else:
        async with FakeGraph() as graph:
            duka, runner = await _open(database_url, tmp_path, wa.whatsapp_env(graph))
            try:
                yield WhatsAppCustomer(wa.Shop(duka, graph, runner))
            finally:
                await runner.cleanup()


async def _the_order(duka: RunningDuka) -> Any:
    async with duka.engine.connect() as conn:
        return (await conn.execute(select(orders))).one()


async def test_delivery_to_a_shared_location_is_paid_with_its_fee_in_one_amount(
    customer: Customer,
) -> None:
    await customer.fill_cart_and_confirm()
    await customer.sees("How would you like to get your order")
    await customer.press("Delivery")
    await customer.sees("• Westlands: KES 250")
    await customer.press("Westlands")
    await customer.sees("Send your location")
    assert customer.asked_for_location()
    await customer.share_location(("Kencom House", "Moi Avenue"))
    total = customer.cart_total + 250
    await customer.sees("🚚 Delivery to Westlands (KES 250): Kencom House, Moi Avenue.")
    await customer.sees(f"Which M-Pesa number should pay KES {total:,}?")
    await customer.pay_with("0712345678")
    await customer.sees("Paid!")

    order = await _the_order(customer.duka)
    assert (order.total, order.status, order.handover) == (total, "paid", "delivery")
    assert order.delivery_zone == "Westlands"
    assert order.delivery_address == "Kencom House, Moi Avenue"
    assert order.delivery_location == "-1.284120,36.823310"
    async with customer.duka.engine.connect() as conn:
        pushed = (await conn.execute(select(payments.c.amount))).scalar_one()
        lines = (await conn.execute(select(order_items.c.name, order_items.c.unit_price))).all()
        stored = (await conn.execute(text("SELECT delivery_address FROM orders"))).scalar_one()
    assert pushed == total  # the fee is in the one STK amount
    assert ("Delivery (Westlands)", 250) in [tuple(line) for line in lines]
    assert "Kencom" not in stored  # sealed at rest, like phone numbers
    # The merchant's paid-order message says where to go.
    await customer.merchant_sees("🚚 Deliver to Westlands: Kencom House, Moi Avenue")
    await customer.merchant_sees("Map: https://maps.google.com/?q=-1.28412,36.82331")


async def test_pickup_is_paid_without_a_fee_and_says_where_to_collect(
    customer: Customer,
) -> None:
    await customer.fill_cart_and_confirm()
    await customer.press("Pick up")
    await customer.sees("🏪 Pick up at Shop 12, Kenyatta Market (8:00-19:00).")
    await customer.pay_with("0712345678")
    await customer.sees("Paid!")
    order = await _the_order(customer.duka)
    assert (order.total, order.handover, order.delivery_address) == (
        customer.cart_total,
        "pickup",
        None,
    )
    await customer.merchant_sees("🏪 Pickup: the customer collects it at the shop.")
