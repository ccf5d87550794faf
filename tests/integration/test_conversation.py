"""The conversation in the running app, on SQLite and PostgreSQL, with the Daraja simulator."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy import Connection, func, select

from bot.app import CONVERSATION, DATABASE
from bot.catalog import ProductSpec, sync_catalog
from bot.channels.terminal import TerminalChannel
from bot.chat.model import Button, Inbound, Reply
from bot.texts import say
from payments.simulator import rules
from storage.orders import (
    OrderItemRecord,
    OrderRecord,
    customer_by_chat,
    get_order_items,
    recent_orders,
)
from storage.schema import orders, products
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.helpers import order_status, payment_rows, wait_for_payment_status

SUKUMA_TOML = """
[[catalog.products]]
sku = "sukuma"
name = "Sukuma wiki"
price = 30
category = "Vegetables"
"""
STAPLES_TOML = """
[[catalog.products]]
sku = "unga"
name = "Unga 2kg"
price = 210
category = "Staples"
[[catalog.products]]
sku = "sukari"
name = "Sukari 1kg"
price = 160
category = "Staples"
"""
CATALOG = SUKUMA_TOML + STAPLES_TOML
WITHOUT_SUKUMA = STAPLES_TOML  # the same shop after the merchant stopped selling sukuma
STAPLES = [
    ProductSpec("unga", "Unga 2kg", 210, "Staples"),
    ProductSpec("sukari", "Sukari 1kg", 160, "Staples"),
]
HINT = say("en", "hint")
NOT_YOURS = say("en", "not_your_order")


async def open_shop(
    database_url: str, tmp_path: Path, catalog: str = CATALOG
) -> tuple[RunningDuka, web.AppRunner]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = make_config(database_url, sock.getsockname()[1], tmp_path, toml=TEST_TOML + catalog)
    return await start_duka(config, sock)


@dataclass(frozen=True)
class Customer:
    """A terminal chat that types text and presses buttons (any data, as a forger could)."""

    duka: RunningDuka
    chat_id: str

    async def says(self, text: str) -> list[Reply]:
        return await self._handle(Inbound("terminal", self.chat_id, "Wanjiru", text=text))

    async def pays_from(self, number: str) -> list[Reply]:
        """Type an M-Pesa number and confirm it, as a typed number must be."""
        [question] = await self.says(number)
        assert question.text.startswith("Pay KES"), question.text
        return await self.presses("phone:typed")

    async def presses(self, data: str) -> list[Reply]:
        return await self._handle(Inbound("terminal", self.chat_id, "Wanjiru", button=data))

    async def shares_contact(self, phone: str) -> list[Reply]:
        event = Inbound(
            "terminal", self.chat_id, "Wanjiru", contact_phone=phone, contact_is_own=True
        )
        return await self._handle(event)

    async def _handle(self, event: Inbound) -> list[Reply]:
        return await self.duka.app[CONVERSATION].handle(event)

    async def orders(self) -> list[OrderRecord]:
        """The customer's orders, newest first."""
        return await self.duka.app[DATABASE].transaction(_orders_of, self.chat_id)

    async def adds(self, sku: str, quantity: int) -> Reply:
        """Opens the product, sets the quantity and taps Add to cart: the "added" answer."""
        await self.presses(f"prod:{sku}")
        if quantity != 1:
            await self.presses(f"qty:{sku}:{quantity}")
        [added] = await self.presses(f"add:{sku}:{quantity}")
        return added

    async def confirms_an_order(self, *items: str) -> OrderRecord:
        """Adds ``sku:quantity`` items and confirms; the phone question is on screen."""
        for item in items or ("sukuma:2", "unga:1"):
            sku, quantity = item.split(":")
            await self.adds(sku, int(quantity))
        [question] = await self.presses("confirm")
        assert question.text.startswith("Which M-Pesa number should pay")
        return (await self.orders())[0]


def _orders_of(conn: Connection, chat_id: str) -> list[OrderRecord]:
    customer = customer_by_chat(conn, "terminal", chat_id)
    return [] if customer is None else recent_orders(conn, customer.id)


def datas(reply: Reply) -> list[str]:
    return [button.data for row in reply.buttons for button in row]


def labels(reply: Reply) -> list[str]:
    return [button.label for row in reply.buttons for button in row]


async def count_orders(duka: RunningDuka) -> int:
    async with duka.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(orders))).scalar_one())


# --- catalog changes ----------------------------------------------------------------------


async def test_removed_product_is_hidden_but_an_old_order_keeps_its_line(
    database_url: str, tmp_path: Path
) -> None:
    """Restarted with a smaller catalog, the shop hides the product; the old order keeps it."""
    duka, runner = await open_shop(database_url, tmp_path)
    try:
        order = await Customer(duka, "1001").confirms_an_order("sukuma:2", "unga:1")
    finally:
        await runner.cleanup()

    duka, runner = await open_shop(database_url, tmp_path, WITHOUT_SUKUMA)
    try:
        customer = Customer(duka, "1001")
        [menu] = await customer.says("/start")
        assert datas(menu) == ["prod:unga", "prod:sukari", "cart", "menu"]
        [gone] = await customer.presses("prod:sukuma:1")
        assert gone.text.startswith("Sorry, that product is no longer available.")
        items = await duka.app[DATABASE].transaction(get_order_items, order.id)
        assert items == [
            OrderItemRecord("sukuma", "Sukuma wiki", 30, 2),
            OrderItemRecord("unga", "Unga 2kg", 210, 1),
        ]
        [listing] = await customer.says("/orders")
        assert f"{order.reference} — KES 270 — waiting for payment" in listing.text
        async with duka.engine.connect() as conn:
            hidden = (await conn.execute(select(products.c.sku, products.c.active))).all()
        assert sorted(map(tuple, hidden)) == [("sukari", True), ("sukuma", False), ("unga", True)]
    finally:
        await runner.cleanup()


async def test_cart_forgets_products_removed_from_the_catalog(shop: RunningDuka) -> None:
    """A product hidden by sync_catalog leaves the cart: no line, total, count or KES 0 checkout."""
    customer = Customer(shop, "1001")
    await customer.adds("sukuma", 2)
    await customer.adds("unga", 1)
    await shop.app[DATABASE].transaction(sync_catalog, STAPLES)
    [cart] = await customer.presses("cart")
    assert "Sukuma" not in cart.text
    assert cart.text.endswith("Total: KES 210")
    [cart] = await customer.presses("rm:unga")
    assert cart.text == say("en", "cart_empty")
    assert datas(cart) == ["menu"]
    [menu] = await customer.says("/start")
    assert "Cart" in labels(menu)  # no count: nothing orderable is in the cart


# --- the cart -----------------------------------------------------------------------------


async def test_cart_buttons_increase_decrease_remove_and_empty(shop: RunningDuka) -> None:
    """+/− change a line, − at one and ✕ remove it, Empty cart clears all; a line stops at 50."""
    customer = Customer(shop, "1001")
    added = await customer.adds("sukuma", 2)
    assert added.text == "Added 2 × Sukuma wiki. Your cart: KES 60."
    await customer.adds("unga", 1)

    [cart] = await customer.presses("inc:sukuma")
    assert "• 3 × Sukuma wiki @ KES 30 = KES 90" in cart.text
    assert cart.text.endswith("Total: KES 300")
    [cart] = await customer.presses("dec:sukuma")
    assert "• 2 × Sukuma wiki @ KES 30 = KES 60" in cart.text
    [cart] = await customer.presses("dec:unga")
    assert "Unga" not in cart.text
    assert cart.text.endswith("Total: KES 60")
    assert "dec:unga" not in datas(cart)
    [cart] = await customer.presses("rm:sukuma")
    assert cart.text == say("en", "cart_empty")

    await customer.adds("sukari", 3)
    await customer.adds("unga", 1)
    [cart] = await customer.presses("empty")
    assert cart.text == say("en", "cart_empty")
    [cart] = await customer.says("/cart")
    assert cart.text == say("en", "cart_empty")  # the emptied cart was saved

    await customer.adds("unga", 40)
    await customer.adds("unga", 40)
    [cart] = await customer.presses("inc:unga")
    assert "• 50 × Unga 2kg @ KES 210 = KES 10,500" in cart.text  # MAX_QUANTITY


# --- language -----------------------------------------------------------------------------


async def test_language_command_switches_replies_to_swahili(shop: RunningDuka) -> None:
    """/language, then Kiswahili: the answers and buttons are in Swahili from then on."""
    channel = TerminalChannel(show=lambda _: None)
    conversation = shop.app[CONVERSATION]

    async def send(text: str | None = None, button: str | None = None) -> None:
        event = Inbound("terminal", "1001", "Wanjiru", text=text, button=button)
        await conversation.reply_through(channel, event)

    await send(text="/language")
    assert [(b.label, b.data) for b in channel.buttons["1001"]] == [
        ("English", "lang:en"),
        ("Kiswahili", "lang:sw"),
    ]
    await send(button="lang:sw")
    assert channel.messages["1001"][-1] == "Lugha: Kiswahili."
    assert channel.buttons["1001"] == [Button("Menyu", "menu")]
    await send(text="/start")
    assert channel.messages["1001"][-1] == (
        "Karibu! Hapa ni Test Duka. Ungependa kununua nini leo?\n\nChagua aina ya bidhaa:"
    )
    assert channel.buttons["1001"][-1] == Button("Kikapu", "cart")
    await send(text="nataka kitu kizuri sana leo")  # a sentence, not a product search
    assert channel.messages["1001"][-1] == say("sw", "hint")

    [menu] = await Customer(shop, "1002").says("/start")
    assert menu.text.endswith("\n\nPick a category:")  # the language belongs to one customer

    await send(button="lang:en")
    assert channel.messages["1001"][-1] == "Language: English."
    assert channel.buttons["1001"] == [Button("Menu", "menu")]


SWAHILI_SHOP_TOML = (
    TEST_TOML.replace('name = "Test Duka"\n', 'name = "Test Duka"\nname_sw = "Duka la Majaribio"\n')
    + """
[[catalog.products]]
sku = "sukuma"
name = "Sukuma wiki (bunch)"
name_sw = "Sukuma wiki (fungu)"
price = 30
category = "Vegetables"
category_sw = "Mboga"
description = "Fresh from Limuru."
description_sw = "Mbichi kutoka Limuru."
[[catalog.products]]
sku = "sukari"
name = "Sugar 1kg"
price = 160
category = "Staples"
"""
)


async def test_a_kiswahili_customer_sees_the_catalogs_swahili_names(
    database_url: str, tmp_path: Path
) -> None:
    """name_sw, category_sw, description_sw and [shop] name_sw, from the welcome to the
    phone question; English where the catalog gives no Swahili, and for English customers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = make_config(database_url, sock.getsockname()[1], tmp_path, toml=SWAHILI_SHOP_TOML)
    duka, runner = await start_duka(config, sock)
    try:
        conversation = duka.app[CONVERSATION]  # as the app wires it, with the catalog's texts

        async def answer(chat_id: str, text: str | None = None, button: str | None = None) -> Reply:
            event = Inbound("terminal", chat_id, "Wanjiru", text=text, button=button)
            [reply] = await conversation.handle(event)
            return reply

        await answer("1001", button="lang:sw")
        menu = await answer("1001", "/start")
        assert menu.text.startswith("Karibu! Hapa ni Duka la Majaribio. ")
        assert [(b.label, b.data) for row in menu.buttons[:2] for b in row] == [
            ("Mboga", "cat:Vegetables"),
            ("Staples", "cat:Staples"),  # no category_sw: the English name
        ]
        shelf = await answer("1001", button="cat:Vegetables")
        assert shelf.text == "Mboga: chagua bidhaa."
        assert labels(shelf)[0] == "Sukuma wiki (fungu) — KES 30"
        product = await answer("1001", button="prod:sukuma")
        assert product.text.startswith("Sukuma wiki (fungu) — KES 30\nMbichi kutoka Limuru.")
        added = await answer("1001", button="add:sukuma:1")
        assert added.text == "Umeweka 1 × Sukuma wiki (fungu) kikapuni. Jumla ya kikapu: KES 30."
        assert labels(added)[0] == "Endelea kulipa"
        await answer("1001", button="prod:sukari")
        await answer("1001", button="add:sukari:1")
        cart = await answer("1001", "/cart")
        assert "• 1 × Sukuma wiki (fungu) @ KES 30 = KES 30" in cart.text
        assert "• 1 × Sugar 1kg @ KES 160 = KES 160" in cart.text  # no name_sw
        question = await answer("1001", button="confirm")
        assert question.text.startswith("Ulipe KES 190 kwa namba gani ya M-Pesa?")
        assert question.ask_contact == "Tuma namba yangu"

        english = await answer("1002", button="cat:Vegetables")
        assert labels(english)[0] == "Sukuma wiki (bunch) — KES 30"
    finally:
        await runner.cleanup()


# --- orders -------------------------------------------------------------------------------


async def test_orders_command_lists_only_the_customers_own_orders(shop: RunningDuka) -> None:
    """Each customer sees their own references; a new customer has none."""
    mine = await Customer(shop, "1001").confirms_an_order("sukuma:2")
    theirs = await Customer(shop, "1002").confirms_an_order("unga:3")

    [listing] = await Customer(shop, "1001").says("/orders")
    assert listing.text == f"Your recent orders:\n• {mine.reference} — KES 60 — waiting for payment"
    [listing] = await Customer(shop, "1002").says("/orders")
    assert theirs.reference in listing.text
    assert mine.reference not in listing.text
    [listing] = await Customer(shop, "1003").says("/orders")
    assert listing.text == "You have no orders yet."


async def test_forged_buttons_for_another_customers_order_are_refused(shop: RunningDuka) -> None:
    """retry/other/cancel with someone else's order id: "not one of yours", no STK push."""
    victim = await Customer(shop, "1001").confirms_an_order()
    forger = Customer(shop, "1002")
    own = await forger.confirms_an_order("unga:1")
    await forger.pays_from("0712345678")  # the forger now has a number a retry would push to
    await wait_for_payment_status(shop.engine, own.id, "paid")
    assert len(shop.simulator.push_requests) == 1

    for action in ("retry", "other", "cancel"):
        assert await forger.presses(f"{action}:{victim.id}") == [Reply(NOT_YOURS)], action
    assert len(shop.simulator.push_requests) == 1
    assert await payment_rows(shop.engine, victim.id) == []
    assert await order_status(shop.engine, victim.id) == "awaiting_payment"


async def answer_or_error(customer: Customer, data: str) -> list[Reply] | str:
    """What pressing ``data`` answers, or the error it raised (to compare many at once)."""
    try:
        return await customer.presses(data)
    except Exception as exc:
        return f"raised {exc!r}"


FORGED_ORDER_BUTTONS = [
    "retry:",
    "retry:abc",
    "retry:-1",
    "retry:0",
    "other:99999",
    "retry:99999999999999999999",  # beyond a database integer
    "cancel:99999999999999999999",
    "retry:²",  # str.isdigit() is true for a superscript two; int() refuses it
    "other:²",
]


async def test_forged_order_button_that_names_no_order_is_refused(shop: RunningDuka) -> None:
    """retry:/other:/cancel: with anything but an own order id answer "not one of yours"."""
    customer = Customer(shop, "1001")
    await customer.confirms_an_order()
    answers = {data: await answer_or_error(customer, data) for data in FORGED_ORDER_BUTTONS}
    assert answers == {data: [Reply(NOT_YOURS)] for data in FORGED_ORDER_BUTTONS}
    assert shop.simulator.push_requests == []


def last_line(answer: list[Reply] | str) -> str:
    return answer if isinstance(answer, str) else answer[0].text.splitlines()[-1]


async def test_forged_quantity_that_is_not_a_count_means_one(shop: RunningDuka) -> None:
    """``qty:`` and ``add:`` with a quantity that is not a positive count use 1, never fail."""
    customer = Customer(shop, "1001")
    quantities = ["", "x", "0", "-3", "²"]
    shown, added = {}, {}
    for quantity in quantities:
        shown[quantity] = last_line(await answer_or_error(customer, f"qty:unga:{quantity}"))
        added[quantity] = last_line(await answer_or_error(customer, f"add:unga:{quantity}"))
        await customer.presses("empty")
    assert shown == dict.fromkeys(quantities, "Quantity: 1 (KES 210)")
    assert added == dict.fromkeys(quantities, "Added 1 × Unga 2kg. Your cart: KES 210.")


# --- cancelling and confirming ------------------------------------------------------------


async def test_cancel_button_cancels_an_own_order_awaiting_payment(shop: RunningDuka) -> None:
    """The order becomes cancelled; trying to pay it afterwards pushes nothing."""
    customer = Customer(shop, "1001")
    order = await customer.confirms_an_order()
    [answer] = await customer.presses(f"cancel:{order.id}")
    assert answer.text == f"Order {order.reference} is cancelled; its items are back in your cart."
    assert await order_status(shop.engine, order.id) == "cancelled"

    [again] = await customer.presses(f"retry:{order.id}")
    assert again.text == say("en", "retry_cancelled", reference=order.reference)
    await customer.says("0712345678")
    assert shop.simulator.push_requests == []


async def test_order_with_a_payment_under_way_cannot_be_cancelled(shop: RunningDuka) -> None:
    """While the PIN prompt is open, Cancel order says it cannot be cancelled now."""
    customer = Customer(shop, "1001")
    order = await customer.confirms_an_order()
    shop.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    [pushed] = await customer.pays_from("0712345678")
    assert pushed.text.startswith("Check your phone")
    [answer] = await customer.presses(f"cancel:{order.id}")
    assert answer.text == f"Order {order.reference} cannot be cancelled now."
    assert await order_status(shop.engine, order.id) == "awaiting_payment"


async def test_double_tap_on_confirm_creates_one_order(shop: RunningDuka) -> None:
    """Two Confirm taps at once, and a third later: one order; every tap sees its phone
    question (not "your cart is empty", while the order waits for payment)."""
    customer = Customer(shop, "1001")
    await customer.adds("unga", 2)
    first, second = await asyncio.gather(customer.presses("confirm"), customer.presses("confirm"))
    answers = [r.text for r in [*first, *second]]
    assert answers == [say("en", "ask_phone", total="KES 420")] * 2
    [third] = await customer.presses("confirm")
    assert third.text == say("en", "ask_phone", total="KES 420")
    assert await count_orders(shop) == 1
    assert [o.total for o in await customer.orders()] == [420]


# --- text and the phone step --------------------------------------------------------------


async def test_text_the_shop_does_not_understand_gets_the_hint(shop: RunningDuka) -> None:
    """Outside the phone step, free text, unknown commands and numbers get the hint."""
    customer = Customer(shop, "1001")
    for text in ["where is my order", "/frobnicate", "0712345678"]:
        assert await customer.says(text) == [Reply(HINT, ((Button("Menu", "menu"),),))], text
    assert shop.simulator.push_requests == []


async def test_a_greeting_opens_the_shop(shop: RunningDuka) -> None:
    """WhatsApp customers say hello rather than /start."""
    for text in ["Hi", "habari!", "Menu"]:
        [menu] = await Customer(shop, "1001").says(text)
        assert menu.text.startswith("Karibu to Test Duka!"), text


async def test_cancel_command_in_the_phone_step_returns_to_browsing(shop: RunningDuka) -> None:
    """/cancel at the phone question cancels the order and puts its items back in the cart;
    a number typed later gets the hint."""
    customer = Customer(shop, "1001")
    order = await customer.confirms_an_order("sukuma:2", "unga:1")
    [stopped] = await customer.says("/cancel")
    assert stopped.text == (
        f"Order {order.reference} is cancelled; its items are back in your cart."
    )
    assert await order_status(shop.engine, order.id) == "cancelled"
    [cart] = await customer.says("/cart")
    assert cart.text.endswith("Total: KES 270")
    [later] = await customer.says("0712345678")
    assert later.text == HINT
    [contact] = await customer.shares_contact("+254712345678")
    assert contact.text == HINT
    assert shop.simulator.push_requests == []


async def test_refused_push_explains_why_and_offers_the_ways_on(shop: RunningDuka) -> None:
    """A push refused (phone …008) gives the reason and Try again / Other number / Cancel."""
    customer = Customer(shop, "1001")
    order = await customer.confirms_an_order()
    [refused] = await customer.pays_from("0712 345 008")
    assert refused.text == (
        "M-Pesa did not start the payment. M-Pesa is busy. Please try again in a minute."
    )
    assert [(b.label, b.data) for row in refused.buttons for b in row] == [
        ("Try again", f"retry:{order.id}"),
        ("Use another number", f"other:{order.id}"),
        ("Cancel order", f"cancel:{order.id}"),
    ]
    assert [p.status for p in await payment_rows(shop.engine, order.id)] == ["failed"]
    assert await order_status(shop.engine, order.id) == "awaiting_payment"

    [question] = await customer.presses(f"other:{order.id}")
    assert question.text == say("en", "ask_phone", total="KES 270")
    [pushed] = await customer.pays_from("0712345678")
    assert pushed.text.startswith("Check your phone: M-Pesa will ask for your PIN to pay KES 270")
    await wait_for_payment_status(shop.engine, order.id, "paid")
    assert len(shop.simulator.push_requests) == 2
