"""The merchant edits the catalog from the chat (issue 12): /price, /hide, /show take
effect at once; an order already confirmed keeps its price. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.app import DATABASE
from bot.merchant import MerchantDesk
from bot.texts import say
from tests.conftest import RunningDuka
from tests.helpers import wait_for_payment_status
from tests.integration.test_conversation import Customer

MERCHANT = "terminal:merchant"


def desk_of(duka: RunningDuka) -> MerchantDesk:
    return MerchantDesk(duka.app[DATABASE], {MERCHANT}, lambda: datetime.now(UTC))


async def merchant(duka: RunningDuka, text: str) -> str:
    reply = await desk_of(duka).handle(MERCHANT, text)
    assert reply is not None, text
    return reply.text


async def test_a_new_price_is_shown_and_charged_but_a_confirmed_order_keeps_its_own(
    shop: RunningDuka,
) -> None:
    early, late = Customer(shop, "5001"), Customer(shop, "5002")
    confirmed = await early.confirms_an_order("unga:1")
    answer = await merchant(shop, "/price unga 250")
    assert answer.startswith("Unga 2kg (unga) now costs KES 250.")
    [menu] = await late.presses("cat:Staples")
    assert "Unga 2kg — KES 250" in [b.label for row in menu.buttons for b in row]
    newer = await late.confirms_an_order("unga:1")
    assert (confirmed.total, newer.total) == (210, 250)
    await early.pays_from("0712345678")
    await wait_for_payment_status(shop.engine, confirmed.id, "paid")
    [push] = shop.simulator.push_requests
    assert int(push["Amount"]) == 210


async def test_a_hidden_product_leaves_the_shop_and_the_carts_and_comes_back(
    shop: RunningDuka,
) -> None:
    customer = Customer(shop, "5001")
    await customer.adds("sukari", 2)
    await customer.adds("unga", 1)
    hidden = await merchant(shop, "/hide sukari")
    assert hidden == say("en", "m_hidden", name="Sukari 1kg", sku="sukari")
    [staples] = await customer.presses("cat:Staples")
    labels = [b.label for row in staples.buttons for b in row]
    assert not any("Sukari" in label for label in labels)
    [cart] = await customer.presses("cart")
    assert "Sukari" not in cart.text
    assert "Unga 2kg" in cart.text
    assert await merchant(shop, "/show sukari") == "Sukari 1kg (sukari) is on sale again."
    [staples] = await customer.presses("cat:Staples")
    assert "Sukari 1kg — KES 160" in [b.label for row in staples.buttons for b in row]


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ("/price unga", say("en", "m_price_usage")),
        ("/price unga 0", say("en", "m_price_usage")),
        ("/price unga 250001", say("en", "m_price_usage")),
        ("/price unga 12.50", say("en", "m_price_usage")),
        ("/price mango 100", say("en", "m_no_product", sku="mango")),
        ("/hide", say("en", "m_show_usage")),
        ("/show mango", say("en", "m_no_product", sku="mango")),
    ],
)
async def test_a_bad_edit_is_explained_and_changes_nothing(
    shop: RunningDuka, command: str, answer: str
) -> None:
    assert await merchant(shop, command) == answer
    [staples] = await Customer(shop, "5001").presses("cat:Staples")
    labels = [b.label for row in staples.buttons for b in row]
    assert labels[:2] == ["Unga 2kg — KES 210", "Sukari 1kg — KES 160"]


async def test_only_a_merchant_edits_the_catalog(shop: RunningDuka) -> None:
    desk = desk_of(shop)
    for command in ("/price unga 1", "/hide unga", "/show unga", "/stock unga 0"):
        assert await desk.handle("telegram:1001", command) is None
    [staples] = await Customer(shop, "5001").presses("cat:Staples")
    assert "Unga 2kg — KES 210" in [b.label for row in staples.buttons for b in row]
