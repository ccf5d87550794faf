"""Stock (issue 12): counted products are held for an order at confirmation, sold when it
is paid, given back when it is cancelled or abandoned; nobody buys what is not there. On
SQLite and PostgreSQL, through the running app and the Daraja simulator."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select

from bot.app import DATABASE
from bot.catalog import CatalogError, ProductSpec, parse_products, sync_catalog
from bot.chat.model import Reply
from bot.merchant import MerchantDesk
from bot.texts import say
from payments.simulator import rules
from storage import stock
from storage.schema import outbox, products, stock_holds
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.helpers import order_status, wait_for_payment_status, wait_until
from tests.integration.test_conversation import Customer

CATALOG = """
[[catalog.products]]
sku = "sukari"
name = "Sukari 1kg"
price = 160
category = "Staples"
stock = {sukari}
low_stock = 2
[[catalog.products]]
sku = "unga"
name = "Unga 2kg"
price = 210
category = "Staples"
"""
PAYS = "0712345678"  # the simulator pays this one


async def open_shop(
    database_url: str, tmp_path: Path, sukari: int, *, reconciler: bool = False
) -> tuple[RunningDuka, web.AppRunner]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    toml = TEST_TOML + CATALOG.format(sukari=sukari)
    config = make_config(database_url, sock.getsockname()[1], tmp_path, toml=toml)
    return await start_duka(config, sock, run_reconciler=reconciler)


@pytest.fixture
async def five(database_url: str, tmp_path: Path) -> AsyncIterator[RunningDuka]:
    """A shop with 5 Sukari counted (unga is not counted)."""
    duka, runner = await open_shop(database_url, tmp_path, 5)
    try:
        yield duka
    finally:
        await runner.cleanup()


async def left(duka: RunningDuka, sku: str = "sukari") -> int | None:
    async with duka.engine.connect() as conn:
        query = select(products.c.stock).where(products.c.sku == sku)
        value: int | None = (await conn.execute(query)).scalar_one()
        return value


async def holds(duka: RunningDuka) -> list[tuple[int, str, int, str]]:
    async with duka.engine.connect() as conn:
        rows = await conn.execute(
            select(
                stock_holds.c.order_id,
                stock_holds.c.sku,
                stock_holds.c.quantity,
                stock_holds.c.status,
            ).order_by(stock_holds.c.id)
        )
        return [(r.order_id, r.sku, r.quantity, r.status) for r in rows]


async def confirm(customer: Customer) -> Reply:
    [answer] = await customer.presses("confirm")
    return answer


# --- nobody buys what is not there ------------------------------------------------------------


async def test_two_customers_racing_for_the_last_one_one_gets_it(
    database_url: str, tmp_path: Path
) -> None:
    duka, runner = await open_shop(database_url, tmp_path, 1)
    try:
        wanjiru, kamau = Customer(duka, "3001"), Customer(duka, "3002")
        for customer in (wanjiru, kamau):
            await customer.adds("sukari", 1)
            await customer.adds("unga", 1)
        answers = await asyncio.gather(confirm(wanjiru), confirm(kamau))
        won = [a for a in answers if a.text.startswith("Which M-Pesa number")]
        lost = [a for a in answers if not a.text.startswith("Which M-Pesa number")]
        assert len(won) == 1
        [told] = lost
        assert told.text.startswith(say("en", "ran_out", name="Sukari 1kg", left=0))
        assert say("en", "cart_updated") in told.text
        assert "Unga 2kg" in told.text  # the rest of the cart is kept
        assert "Sukari" not in told.text.split(say("en", "cart_updated"))[1]
        assert await left(duka) == 0
        assert [(h[1], h[2], h[3]) for h in await holds(duka)] == [("sukari", 1, "held")]
    finally:
        await runner.cleanup()


async def test_fifty_customers_for_ten_items_ten_orders_and_nothing_oversold(
    database_url: str, tmp_path: Path
) -> None:
    duka, runner = await open_shop(database_url, tmp_path, 10)
    try:
        customers = [Customer(duka, str(4000 + n)) for n in range(50)]
        for customer in customers:
            await customer.adds("sukari", 1)
        answers = await asyncio.gather(*(confirm(c) for c in customers))
        confirmed = sum(a.text.startswith("Which M-Pesa number") for a in answers)
        ran_out = sum(a.text.startswith("Sorry, Sukari 1kg ran out") for a in answers)
        assert (confirmed, ran_out) == (10, 40)
        assert await left(duka) == 0
        assert sum(h[2] for h in await holds(duka)) == 10
    finally:
        await runner.cleanup()


async def test_a_sold_out_product_says_so_and_cannot_be_added(
    database_url: str, tmp_path: Path
) -> None:
    duka, runner = await open_shop(database_url, tmp_path, 0)
    try:
        customer = Customer(duka, "3001")
        [menu] = await customer.says("/start")
        labels = [b.label for row in menu.buttons for b in row]
        assert "Sukari 1kg — KES 160 (sold out)" in labels
        [screen] = await customer.presses("prod:sukari")
        assert screen.text == say("en", "sold_out", name="Sukari 1kg")
        assert not any(b.data.startswith("add:") for row in screen.buttons for b in row)
        [forged] = await customer.presses("add:sukari:1")  # an old or forged button
        assert forged.text == say("en", "sold_out", name="Sukari 1kg")
        [cart] = await customer.presses("cart")
        assert cart.text == say("en", "cart_empty")
    finally:
        await runner.cleanup()


async def test_adding_stops_at_what_is_left(five: RunningDuka) -> None:
    customer = Customer(five, "3001")
    await customer.presses("prod:sukari")
    [screen] = await customer.presses("qty:sukari:9")
    assert "Quantity: 5 (KES 800)" in screen.text
    assert say("en", "stock_left", left=5, name="Sukari 1kg") in screen.text
    await customer.presses("add:sukari:5")
    [again] = await customer.presses("inc:sukari")
    assert again.text.startswith(say("en", "stock_left", left=5, name="Sukari 1kg"))
    [cart] = await customer.presses("cart")
    assert "5 × Sukari 1kg" in cart.text


# --- held, sold, given back -------------------------------------------------------------------


async def test_paying_turns_the_hold_into_a_sale(five: RunningDuka) -> None:
    customer = Customer(five, "3001")
    order = await customer.confirms_an_order("sukari:2")
    assert await left(five) == 3
    await customer.pays_from(PAYS)
    await wait_for_payment_status(five.engine, order.id, "paid")
    assert await left(five) == 3
    assert await holds(five) == [(order.id, "sukari", 2, "sold")]


async def test_cancelling_gives_the_stock_back(five: RunningDuka) -> None:
    customer = Customer(five, "3001")
    order = await customer.confirms_an_order("sukari:2", "unga:1")
    assert await left(five) == 3
    await customer.says("/cancel")
    assert await order_status(five.engine, order.id) == "cancelled"
    assert await left(five) == 5
    assert await holds(five) == [(order.id, "sukari", 2, "released")]
    assert await left(five, "unga") is None  # never counted


async def test_an_abandoned_order_gives_its_stock_back_and_takes_it_again_to_pay(
    database_url: str, tmp_path: Path
) -> None:
    """The hold lasts a payment attempt's life (1 s in the tests); the reconciler gives
    it back; paying later takes it again."""
    duka, runner = await open_shop(database_url, tmp_path, 5, reconciler=True)
    try:
        customer = Customer(duka, "3001")
        order = await customer.confirms_an_order("sukari:2")
        assert await left(duka) == 3

        async def given_back() -> bool:
            return await left(duka) == 5

        await wait_until(given_back, timeout=10, what="the abandoned hold given back")
        assert await holds(duka) == [(order.id, "sukari", 2, "released")]
        await customer.pays_from(PAYS)
        await wait_for_payment_status(duka.engine, order.id, "paid")
        assert await left(duka) == 3
        assert await holds(duka) == [(order.id, "sukari", 2, "sold")]
    finally:
        await runner.cleanup()


async def test_an_abandoned_order_whose_stock_is_gone_cannot_be_paid_and_can_be_cancelled(
    five: RunningDuka,
) -> None:
    wanjiru, kamau = Customer(five, "3001"), Customer(five, "3002")
    order = await wanjiru.confirms_an_order("sukari:5")
    # Wanjiru walked away: her hold ended, and Kamau bought all five.
    await five.app[DATABASE].transaction(stock.release, [order.id])
    await kamau.confirms_an_order("sukari:5")
    [answer] = await wanjiru.pays_from(PAYS)
    assert answer.text == say("en", "order_ran_out", name="Sukari 1kg", reference=order.reference)
    assert [b.data for row in answer.buttons for b in row] == [f"cancel:{order.id}", "menu"]
    assert five.simulator.push_requests == []
    [cancelled] = await wanjiru.presses(f"cancel:{order.id}")
    assert cancelled.text.startswith(f"Order {order.reference} is cancelled")
    assert await left(five) == 0


async def test_money_for_an_order_whose_hold_was_given_back_still_buys_the_goods(
    five: RunningDuka,
) -> None:
    """The customer paid: the goods are theirs even if the count goes below zero, and the
    merchant's /stock shows the shortfall."""
    wanjiru, kamau = Customer(five, "3001"), Customer(five, "3002")
    order = await wanjiru.confirms_an_order("sukari:5")
    database = five.app[DATABASE]
    await database.transaction(stock.release, [order.id])
    await kamau.confirms_an_order("sukari:5")
    await database.transaction(stock.sell, [order.id])  # as a late payment would
    assert await left(five) == -5
    desk = MerchantDesk(database, {"terminal:merchant"}, lambda: datetime.now(UTC))
    listed = await desk.handle("terminal:merchant", "/stock")
    assert listed is not None
    assert "• sukari Sukari 1kg: -5 (short: paid for, not in stock)" in listed.text


async def test_the_merchant_is_told_once_when_a_product_falls_to_its_low_mark(
    five: RunningDuka,
) -> None:
    """5 Sukari, low mark 2: the order that takes it to 2 alerts; the next one does not."""
    await Customer(five, "3001").confirms_an_order("sukari:3")
    await Customer(five, "3002").confirms_an_order("sukari:1")
    async with five.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.kind, outbox.c.audience, outbox.c.payload).where(
                    outbox.c.kind == "low_stock"
                )
            )
        ).all()
    assert [(r.kind, r.audience) for r in rows] == [("low_stock", "merchant")]
    assert json.loads(rows[0].payload) == {
        "sku": "sukari",
        "name": "Sukari 1kg",
        "left": 2,
        "low": 2,
    }


# --- the merchant's /stock --------------------------------------------------------------------


async def test_merchant_sets_lists_and_stops_counting_stock(five: RunningDuka) -> None:
    desk = MerchantDesk(five.app[DATABASE], {"terminal:merchant"}, lambda: datetime.now(UTC))

    async def merchant(text: str) -> str:
        reply = await desk.handle("terminal:merchant", text)
        assert reply is not None
        return reply.text

    assert await merchant("/stock sukari 2") == "Sukari 1kg (sukari): 2 left."
    assert await merchant("/stock") == (
        "Stock, fewest first:\n• sukari Sukari 1kg: 2 (low: at or under 2)"
    )
    assert await merchant("/stock unga 40") == "Unga 2kg (unga): 40 left."
    assert await merchant("/stock mango 3") == say("en", "m_stock_unknown", sku="mango")
    for bad in ("/stock sukari", "/stock sukari -1", "/stock sukari lots", "/stock sukari ²"):
        assert await merchant(bad) == say("en", "m_stock_usage")
    assert await merchant("/stock sukari off") == "Sukari 1kg (sukari) is no longer counted."
    assert await left(five) is None
    assert await desk.handle("telegram:999", "/stock sukari 9") is None  # not a merchant
    assert await left(five, "unga") == 40


async def test_a_restart_keeps_the_count_and_counts_a_newly_counted_product(
    five: RunningDuka,
) -> None:
    customer = Customer(five, "3001")
    await customer.confirms_an_order("sukari:2")
    configured = [
        ProductSpec("sukari", "Sukari 1kg", 160, "Staples", stock=5, low_stock=2),
        ProductSpec("unga", "Unga 2kg", 210, "Staples", stock=7),
    ]
    await five.app[DATABASE].transaction(sync_catalog, configured)  # what start-up does
    assert await left(five) == 3
    assert await left(five, "unga") == 7


@pytest.mark.parametrize("value", [-1, 1.5, "5", True, 1_000_001])
def test_a_stock_that_is_not_a_whole_count_is_refused_with_the_fix(value: object) -> None:
    entry = {"sku": "sukari", "name": "Sukari 1kg", "price": 160, "stock": value}
    with pytest.raises(CatalogError) as refused:
        parse_products([entry], "catalog.products")
    assert refused.value.key == "catalog.products[1]"
    assert "whole number from 0 to 1,000,000" in str(refused.value)


async def test_holds_of_an_order_with_an_open_prompt_are_kept_past_their_time(
    five: RunningDuka,
) -> None:
    """A customer entering their PIN keeps the goods, however long the hold said."""
    customer = Customer(five, "3001")
    order = await customer.confirms_an_order("sukari:2")
    five.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await customer.pays_from(PAYS)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await five.app[DATABASE].transaction(stock.release_expired, later) == 0
    assert await holds(five) == [(order.id, "sukari", 2, "held")]
