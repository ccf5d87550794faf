"""The conversation's pure steps: ``step(state, event, facts) -> Outcome``, with no database.

Each test builds a chat state, an event and the facts a turn would have loaded, and checks
the next state, the replies (texts built with ``say``, button data) and the effects asked
for. ``run`` also checks that a step never changes the state it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest

from bot.catalog import ProductSpec
from bot.chat import buttons, checkout
from bot.chat.buttons import (
    NO_ORDER,
    Action,
    AddToCart,
    Category,
    ChangeCart,
    Checkout,
    ChooseHandover,
    ChooseLanguage,
    ChoosePhone,
    ChooseZone,
    ConfirmOrder,
    DropProduct,
    EmptyCart,
    Menu,
    OnOrder,
    OrderVerb,
    SetQuantity,
    ShowCart,
    ShowProduct,
)
from bot.chat.effects import CancelOrder, CreateOrder, Outcome, SetLanguage, StartPayment
from bot.chat.events import (
    ChatEvent,
    Command,
    Pressed,
    SharedContact,
    Typed,
    Unsupported,
    read_event,
)
from bot.chat.facts import Facts, OrderView, Shop
from bot.chat.model import Button, ChatState, Inbound, Reply, Step
from bot.chat.steps import step
from bot.handover import Handover
from bot.texts import kes, minutes, reason_text, say, status_text
from payments.daraja_client import MAX_AMOUNT
from payments.limits import LimitHit, LimitKind
from payments.phone import mask_msisdn
from payments.result_codes import FailureReason
from payments.service import (
    OrderNotPayable,
    PaymentInProgress,
    PaymentNotStarted,
    PaymentStarted,
    TooManyPrompts,
)
from payments.states import OrderStatus, PaymentStatus
from storage.orders import NewOrderItem, OrderItemRecord, OrderRecord

# --- the shop --------------------------------------------------------------------------------

UNGA = ProductSpec(
    "unga",
    "Unga 2kg",
    210,
    "Staples",
    "Maize flour",
    name_sw="Unga wa mahindi 2kg",
    category_sw="Vyakula vikuu",
)
SUKARI = ProductSpec("sukari", "Sukari 1kg", 160, "Staples", "White sugar")
SUKUMA = ProductSpec("sukuma", "Sukuma wiki", 30, "Vegetables", category_sw="Mboga")
CATALOG: dict[str, ProductSpec] = {p.sku: p for p in (UNGA, SUKARI, SUKUMA)}

SHOP = Shop("Mama Njeri's Duka", "Duka la Mama Njeri")
SAVED = "254712345678"  # the number the customer last paid from (Safaricom)
AIRTEL = "254733123456"  # a number in Airtel's range
MAX = 50  # the most of one product a cart takes

# Order 7: 2 × Unga (420) + 3 × Sukuma (90) = 510.
ITEMS = (
    OrderItemRecord("unga", "Unga 2kg", 210, 2),
    OrderItemRecord("sukuma", "Sukuma wiki", 30, 3),
)


# --- builders --------------------------------------------------------------------------------


def facts(
    *orders: OrderView,
    lang: str = "en",
    saved: str | None = None,
    paybill: str | None = None,
    waiting_for_pin: str | None = None,
    catalog: Mapping[str, ProductSpec] = CATALOG,
    order_list: Sequence[OrderRecord] = (),
) -> Facts:
    return Facts(
        shop=replace(SHOP, paybill=paybill),
        lang=lang,
        saved_msisdn=saved,
        catalog=catalog,
        orders={o.id: o for o in orders},
        waiting_for_pin=waiting_for_pin,
        order_list=order_list,
    )


def order(
    order_id: int = 7,
    status: OrderStatus = OrderStatus.AWAITING_PAYMENT,
    *,
    total: int = 510,
    paying: bool = False,
    items: tuple[OrderItemRecord, ...] = ITEMS,
) -> OrderView:
    return OrderView(order_id, f"DK-{order_id}", total, status, paying=paying, items=items)


def browsing(
    cart: Mapping[str, int] | None = None, *, picking: tuple[str, int] | None = None
) -> ChatState:
    return ChatState(Step.BROWSING, dict(cart or {}), None, picking)


def awaiting(
    order_id: int = 7, cart: Mapping[str, int] | None = None, *, typed: str | None = None
) -> ChatState:
    return ChatState(Step.AWAITING_PHONE, dict(cart or {}), order_id, None, typed)


def press(action: Action | None) -> Pressed:
    return Pressed(action)


def run(state: ChatState, event: ChatEvent, f: Facts) -> Outcome:
    """``step``, checking that it leaves the state it was given (and its cart) alone."""
    copy = replace(state, cart=dict(state.cart))
    outcome = step(state, event, f)
    assert state == copy
    assert dict(state.cart) == dict(copy.cart)
    return outcome


def only(outcome: Outcome) -> Reply:
    assert len(outcome.replies) == 1, outcome.replies
    return outcome.replies[0]


def datas(reply: Reply) -> list[str]:
    return [b.data for row in reply.buttons for b in row]


# --- expected replies, built from the texts ---------------------------------------------------


def menu_row(lang: str = "en") -> tuple[tuple[Button, ...], ...]:
    return ((Button(say(lang, "btn_menu"), "menu"),),)


def cart_label(lang: str, count: int) -> str:
    return say(lang, "btn_cart") + (f" ({count})" if count else "")


def menu_reply(lang: str = "en", count: int = 0, *, edit: bool = False) -> Reply:
    staples = "Vyakula vikuu" if lang == "sw" else "Staples"
    vegetables = "Mboga" if lang == "sw" else "Vegetables"
    rows = (
        (Button(staples, "cat:Staples"),),
        (Button(vegetables, "cat:Vegetables"),),
        (Button(cart_label(lang, count), "cart"),),
    )
    return Reply(say(lang, "choose_category"), rows, edit=edit)


def cart_line(sku: str, quantity: int, lang: str = "en") -> str:
    p = CATALOG[sku]
    price, total = kes(p.price), kes(p.price * quantity)
    return say(
        lang, "cart_line", quantity=quantity, name=p.name_in(lang), price=price, line_total=total
    )


def cart_text(cart: Mapping[str, int], lang: str = "en") -> str:
    lines = "\n".join(cart_line(sku, q, lang) for sku, q in cart.items())
    total = sum(CATALOG[sku].price * q for sku, q in cart.items())
    return say(lang, "cart", lines=lines, total=kes(total))


def cart_datas(cart: Mapping[str, int]) -> list[str]:
    rows = [d for sku in cart for d in (f"dec:{sku}", f"inc:{sku}", f"rm:{sku}")]
    return [*rows, "checkout", "menu", "empty"]


def ask_phone(total: int, lang: str = "en") -> Reply:
    return Reply(
        say(lang, "ask_phone", total=kes(total)), ask_contact=say(lang, "btn_share_number")
    )


def yes_or_other(answer: str, lang: str = "en") -> tuple[tuple[Button, ...], ...]:
    return (
        (
            Button(say(lang, "btn_yes_pay"), f"phone:{answer}"),
            Button(say(lang, "btn_other_number"), "phone:other"),
        ),
    )


def saved_question(total: int, lang: str = "en") -> Reply:
    text = say(lang, "confirm_phone", total=kes(total), phone=mask_msisdn(SAVED))
    return Reply(text, yes_or_other("yes", lang))


def in_progress(reference: str = "DK-7", lang: str = "en") -> Reply:
    return Reply(say(lang, "payment_in_progress", reference=reference), menu_row(lang))


def cancelled_to_cart(cart_count: int, *, edit: bool, reference: str = "DK-7") -> Reply:
    rows = ((Button(cart_label("en", cart_count), "cart"), Button(say("en", "btn_menu"), "menu")),)
    return Reply(say("en", "order_cancelled_to_cart", reference=reference), rows, edit=edit)


def failed_buttons(order_id: int, *, paybill: bool) -> list[str]:
    tail = [f"paybill:{order_id}"] if paybill else []
    return [f"retry:{order_id}", f"other:{order_id}", *tail, f"cancel:{order_id}"]


# --- commands and plain messages ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "shop_name"),
    [("en", "Mama Njeri's Duka"), ("sw", "Duka la Mama Njeri")],
    ids=["english", "swahili"],
)
def test_start_welcomes_with_the_shop_name_and_shows_the_categories(
    lang: str, shop_name: str
) -> None:
    before = browsing({"unga": 2, "sukuma": 1}, picking=("unga", 3))
    outcome = run(before, Command("/start"), facts(lang=lang))
    menu = menu_reply(lang, count=3)
    welcome = say(lang, "welcome", shop=shop_name)
    assert shop_name in welcome
    assert outcome == Outcome(
        replace(before, picking=None), (replace(menu, text=f"{welcome}\n\n{menu.text}"),)
    )


def test_start_leaves_the_phone_step() -> None:
    outcome = run(awaiting(7, {"unga": 1}), Command("/start"), facts(order()))
    assert outcome.state.step is Step.BROWSING
    assert outcome.state.cart == {"unga": 1}
    assert outcome.effects == ()


def test_cart_command_lists_the_cart_in_a_new_message() -> None:
    cart = {"unga": 2, "sukuma": 3}
    reply = only(run(browsing(cart), Command("/cart"), facts()))
    assert reply.text == cart_text(cart)
    assert "KES 510" in reply.text
    assert datas(reply) == cart_datas(cart)
    assert reply.edit is False


def test_cart_command_with_an_empty_cart() -> None:
    outcome = run(browsing(), Command("/cart"), facts())
    assert outcome == Outcome(browsing(), (Reply(say("en", "cart_empty"), menu_row()),))


@pytest.mark.parametrize(
    ("event", "key"),
    [
        (Command("/help"), "help"),
        (Command("/frobnicate"), "hint"),
        (Unsupported(), "only_text"),
    ],
    ids=["help", "unknown-command", "unsupported"],
)
@pytest.mark.parametrize("lang", ["en", "sw"])
def test_messages_answered_with_a_text_and_the_menu_button(
    event: ChatEvent, key: str, lang: str
) -> None:
    before = browsing({"unga": 1})
    outcome = run(before, event, facts(lang=lang))
    assert outcome == Outcome(before, (Reply(say(lang, key), menu_row(lang)),))


def test_language_command_offers_both_languages() -> None:
    outcome = run(browsing(), Command("/language"), facts())
    rows = ((Button("English", "lang:en"), Button("Kiswahili", "lang:sw")),)
    assert outcome == Outcome(browsing(), (Reply(say("en", "choose_language"), rows),))


def test_orders_command_lists_orders_with_pay_and_cancel_for_the_unpaid_ones() -> None:
    when = datetime(2025, 1, 2, tzinfo=UTC)
    listed = [
        OrderRecord(9, "DK-9", 1, OrderStatus.AWAITING_PAYMENT, 510, when, None),
        OrderRecord(8, "DK-8", 1, OrderStatus.PAID, 160, when, when),
    ]
    reply = only(run(browsing(), Command("/orders"), facts(order_list=listed)))
    lines = "\n".join(
        [
            say(
                "en", "order_line", reference="DK-9", total="KES 510", status="waiting for payment"
            ),
            say("en", "order_line", reference="DK-8", total="KES 160", status="paid"),
        ]
    )
    assert reply.text == say("en", "orders", lines=lines)
    assert datas(reply) == ["pay:9", "cancel:9", "menu"]


@pytest.mark.parametrize("text", ["hi", "Hello!", "habari", "JAMBO?", "menu", "niaje."])
def test_a_greeting_while_browsing_is_start(text: str) -> None:
    before = browsing({"sukuma": 2})
    outcome = run(before, Typed(text), facts())
    assert outcome == run(before, Command("/start"), facts())
    assert only(outcome).text.startswith(say("en", "welcome", shop=SHOP.name))


@pytest.mark.parametrize("text", ["hi", "Hello!", "menu"])
def test_a_greeting_while_awaiting_the_phone_is_read_as_a_bad_number(text: str) -> None:
    before = awaiting(7)
    outcome = run(before, Typed(text), facts(order()))
    reply = Reply(say("en", "phone_not_a_number"), ask_contact=say("en", "btn_share_number"))
    assert outcome == Outcome(before, (reply,))


def test_empty_text_while_awaiting_the_phone_gets_the_hint() -> None:
    outcome = run(awaiting(7), Typed(""), facts(order()))
    assert outcome == Outcome(awaiting(7), (Reply(say("en", "hint"), menu_row()),))


# --- menu, categories, products ----------------------------------------------------------------


@pytest.mark.parametrize(("new", "edit"), [(False, True), (True, False)], ids=["edit", "new"])
def test_menu_button_shows_the_categories_and_forgets_the_picking(new: bool, edit: bool) -> None:
    before = browsing({"unga": 1}, picking=("sukari", 4))
    outcome = run(before, press(Menu(new=new)), facts())
    assert outcome == Outcome(browsing({"unga": 1}), (menu_reply(count=1, edit=edit),))


def test_menu_with_a_single_category_shows_its_products() -> None:
    staples = {"unga": UNGA, "sukari": SUKARI}
    reply = only(run(browsing(), press(Menu()), facts(catalog=staples)))
    assert reply.text == say("en", "category_products", category="Staples")
    assert datas(reply) == ["prod:unga", "prod:sukari", "cart", "menu"]


@pytest.mark.parametrize(
    ("lang", "name", "label", "products"),
    [
        ("en", "Staples", "Staples", [("Unga 2kg", "unga", 210), ("Sukari 1kg", "sukari", 160)]),
        (
            "sw",
            "Staples",
            "Vyakula vikuu",
            [("Unga wa mahindi 2kg", "unga", 210), ("Sukari 1kg", "sukari", 160)],
        ),
        ("en", "Vegetables", "Vegetables", [("Sukuma wiki", "sukuma", 30)]),
        ("sw", "Vegetables", "Mboga", [("Sukuma wiki", "sukuma", 30)]),
    ],
    ids=["staples-en", "staples-sw", "vegetables-en", "vegetables-sw"],
)
def test_category_lists_its_products(
    lang: str, name: str, label: str, products: list[tuple[str, str, int]]
) -> None:
    outcome = run(browsing({"sukuma": 2}), press(Category(name)), facts(lang=lang))
    rows: tuple[tuple[Button, ...], ...] = tuple(
        (Button(f"{n} — {kes(price)}", f"prod:{sku}"),) for n, sku, price in products
    )
    rows += ((Button(cart_label(lang, 2), "cart"), Button(say(lang, "btn_menu"), "menu")),)
    expected = Reply(say(lang, "category_products", category=label), rows, edit=True)
    assert outcome == Outcome(browsing({"sukuma": 2}), (expected,))


def product_text(quantity: int, lang: str = "en") -> str:
    text = say(
        lang,
        "product",
        name=UNGA.name_in(lang),
        price="KES 210",
        description=UNGA.description_in(lang),
    )
    return text + "\n" + say(lang, "quantity", quantity=quantity, total=kes(210 * quantity))


def test_product_screen_starts_at_one_with_a_drop_button() -> None:
    outcome = run(browsing(), press(ShowProduct("unga")), facts())
    assert outcome.state == browsing(picking=("unga", 1))
    reply = only(outcome)
    assert reply.text == product_text(1)
    assert datas(reply) == ["drop:unga", "qty:unga:2", "add:unga:1", "cart", "cat:Staples"]
    assert reply.edit is True


@pytest.mark.parametrize(
    ("wanted", "shown"),
    [(-5, 1), (0, 1), (1, 1), (7, 7), (49, 49), (50, 50), (51, 50), (10**9, 50)],
)
def test_quantity_is_clamped_to_one_to_fifty(wanted: int, shown: int) -> None:
    outcome = run(browsing(), press(SetQuantity("unga", wanted)), facts())
    assert outcome.state == browsing(picking=("unga", shown))
    reply = only(outcome)
    less = f"qty:unga:{shown - 1}" if shown > 1 else "drop:unga"
    more = f"qty:unga:{min(MAX, shown + 1)}"
    assert datas(reply) == [less, more, f"add:unga:{shown}", "cart", "cat:Staples"]
    cap = say("en", "quantity_cap", count=MAX, name="Unga 2kg")
    expected_text = product_text(shown) + (f"\n{cap}" if shown == MAX else "")
    assert reply.text == expected_text


@pytest.mark.parametrize(
    ("before", "quantity", "after", "key", "added"),
    [
        (0, 3, 3, "added", 3),
        (2, 1, 3, "added", 1),
        (48, 2, 50, "added", 2),
        (45, 10, 50, "added_capped", 5),
        (50, 5, 50, "nothing_added", None),
    ],
    ids=["new", "more", "up-to-cap", "capped", "nothing"],
)
def test_add_puts_the_picked_quantity_in_the_cart_up_to_the_cap(
    before: int, quantity: int, after: int, key: str, added: int | None
) -> None:
    cart = {"sukuma": 1, **({"unga": before} if before else {})}
    start = browsing(cart, picking=("unga", quantity))
    outcome = run(start, press(AddToCart("unga", quantity)), facts())
    assert outcome.state == browsing({**cart, "unga": after})
    total = kes(30 + 210 * after)
    values = {"name": "Unga 2kg", "total": total, "count": MAX}
    text = say("en", key, **values) if added is None else say("en", key, quantity=added, **values)
    rows = (
        (Button(say("en", "btn_checkout"), "checkout"),),
        (Button(say("en", "btn_cart"), "cart"), Button(say("en", "btn_menu"), "menu")),
    )
    assert outcome == Outcome(outcome.state, (Reply(text, rows, edit=True),))


def test_nothing_added_says_so_in_swahili() -> None:
    start = browsing({"unga": 50}, picking=("unga", 1))
    reply = only(run(start, press(AddToCart("unga", 1)), facts(lang="sw")))
    name = "Unga wa mahindi 2kg"
    assert reply.text == say("sw", "nothing_added", name=name, total=kes(50 * 210), count=MAX)


def test_a_forged_quantity_is_clamped_before_it_is_added() -> None:
    start = browsing(picking=("unga", 50))
    outcome = run(start, press(AddToCart("unga", 999)), facts())
    assert outcome.state == browsing({"unga": 50})


@pytest.mark.parametrize(
    "picking",
    [None, ("unga", 2), ("sukari", 3)],
    ids=["second-tap", "other-quantity", "other-product"],
)
def test_a_stale_add_shows_the_cart_and_adds_nothing(picking: tuple[str, int] | None) -> None:
    start = browsing({"unga": 3}, picking=picking)
    outcome = run(start, press(AddToCart("unga", 3)), facts())
    assert outcome.state == start
    reply = only(outcome)
    assert reply.text == cart_text({"unga": 3})
    assert datas(reply) == cart_datas({"unga": 3})


def test_add_twice_adds_once() -> None:
    first = run(browsing(picking=("unga", 2)), press(AddToCart("unga", 2)), facts())
    second = run(first.state, press(AddToCart("unga", 2)), facts())
    assert second.state.cart == {"unga": 2}


def test_minus_at_one_offers_to_leave_out_a_product_not_in_the_cart() -> None:
    start = browsing({"sukuma": 1}, picking=("unga", 1))
    outcome = run(start, press(DropProduct("unga")), facts())
    rows = (
        (
            Button(say("en", "btn_leave_out"), "cat:Staples"),
            Button(say("en", "btn_add"), "add:unga:1"),
        ),
    )
    text = say("en", "leave_out_offer", name="Unga 2kg")
    assert outcome == Outcome(start, (Reply(text, rows, edit=True),))
    # Its "Add to cart" still adds the one being picked.
    added = run(outcome.state, press(buttons.decode("add:unga:1")), facts())
    assert added.state == browsing({"sukuma": 1, "unga": 1})


def test_minus_at_one_offers_to_remove_a_product_in_the_cart() -> None:
    start = browsing({"unga": 4}, picking=("unga", 1))
    outcome = run(start, press(DropProduct("unga")), facts())
    rows = (
        (Button(say("en", "btn_remove"), "rm:unga"), Button(say("en", "btn_keep"), "prod:unga")),
    )
    text = say("en", "remove_offer", name="Unga 2kg")
    assert outcome == Outcome(start, (Reply(text, rows, edit=True),))


@pytest.mark.parametrize(
    "action",
    [
        ShowProduct("maziwa"),
        SetQuantity("maziwa", 2),
        AddToCart("maziwa", 1),
        DropProduct("maziwa"),
    ],
    ids=["show", "quantity", "add", "drop"],
)
def test_a_product_off_the_catalog_is_gone(action: Action) -> None:
    start = browsing({"unga": 1}, picking=("maziwa", 1))
    outcome = run(start, press(action), facts())
    menu = menu_reply(count=1)
    text = f"{say('en', 'product_gone')}\n\n{menu.text}"
    assert outcome == Outcome(start, (replace(menu, text=text),))


def test_a_cart_holding_a_product_off_the_catalog_is_cleaned() -> None:
    start = browsing({"unga": 1, "maziwa": 3, "sukuma": 2})
    outcome = run(start, Command("/cart"), facts())
    assert outcome.state == browsing({"unga": 1, "sukuma": 2})
    assert only(outcome).text == cart_text({"unga": 1, "sukuma": 2})


def test_an_unknown_button_shows_the_menu() -> None:
    outcome = run(browsing({"unga": 2}), press(None), facts())
    assert outcome == Outcome(browsing({"unga": 2}), (menu_reply(count=2),))


# --- the cart ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "after"),
    [
        (ShowCart(), {"unga": 2, "sukuma": 1}),
        (ChangeCart("inc", "unga"), {"unga": 3, "sukuma": 1}),
        (ChangeCart("dec", "unga"), {"unga": 1, "sukuma": 1}),
        (ChangeCart("dec", "sukuma"), {"unga": 2}),
        (ChangeCart("rm", "unga"), {"sukuma": 1}),
        (ChangeCart("inc", "sukari"), {"unga": 2, "sukuma": 1}),
        (ChangeCart("rm", "maziwa"), {"unga": 2, "sukuma": 1}),
        (EmptyCart(), {}),
    ],
    ids=["show", "inc", "dec", "dec-at-one", "rm", "inc-not-in-cart", "rm-unknown", "empty"],
)
def test_cart_buttons(action: Action, after: dict[str, int]) -> None:
    outcome = run(browsing({"unga": 2, "sukuma": 1}), press(action), facts())
    assert outcome.state == browsing(after)
    reply = only(outcome)
    if after:
        assert reply == Reply(cart_text(after), reply.buttons, edit=True)
        assert datas(reply) == cart_datas(after)
    else:
        assert reply == Reply(say("en", "cart_empty"), menu_row(), edit=True)


def test_inc_at_the_cap_says_so_and_keeps_fifty() -> None:
    outcome = run(browsing({"unga": MAX}), press(ChangeCart("inc", "unga")), facts())
    assert outcome.state == browsing({"unga": MAX})
    cap = say("en", "quantity_cap", count=MAX, name="Unga 2kg")
    assert only(outcome).text == f"{cap}\n\n{cart_text({'unga': MAX})}"


# --- checking out ----------------------------------------------------------------------------


def test_checkout_with_an_empty_cart_shows_the_empty_cart() -> None:
    outcome = run(browsing(), press(Checkout()), facts())
    assert outcome == Outcome(browsing(), (Reply(say("en", "cart_empty"), menu_row(), edit=True),))


def test_checkout_shows_the_summary() -> None:
    cart = {"unga": 2, "sukuma": 3}
    outcome = run(browsing(cart), press(Checkout()), facts())
    lines = "\n".join([cart_line("unga", 2), cart_line("sukuma", 3)])
    rows = (
        (Button(say("en", "btn_confirm"), "confirm"),),
        (Button(say("en", "btn_edit_cart"), "cart"),),
    )
    expected = Reply(say("en", "summary", lines=lines, total="KES 510"), rows, edit=True)
    assert outcome == Outcome(browsing(cart), (expected,))


JIKO_OVER = ProductSpec("jiko", "Jiko", MAX_AMOUNT // 2 + 1, "Kitchen")
JIKO_AT = ProductSpec("jiko", "Jiko", MAX_AMOUNT // 2, "Kitchen")


@pytest.mark.parametrize("action", [Checkout(), ConfirmOrder()], ids=["checkout", "confirm"])
def test_a_cart_over_the_mpesa_limit_is_refused(action: Action) -> None:
    f = facts(catalog={"jiko": JIKO_OVER, **CATALOG})
    outcome = run(browsing({"jiko": 2}), press(action), f)
    text = say("en", "over_limit", limit=kes(MAX_AMOUNT), total=kes(MAX_AMOUNT + 2))
    assert outcome.state == browsing({"jiko": 2})
    assert outcome.effects == ()
    reply = only(outcome)
    assert reply.text == text
    assert datas(reply) == cart_datas({"jiko": 2})


def test_a_cart_at_exactly_the_mpesa_limit_can_be_ordered() -> None:
    f = facts(catalog={"jiko": JIKO_AT, **CATALOG})
    outcome = run(browsing({"jiko": 2}), press(ConfirmOrder()), f)
    assert outcome.effects == (CreateOrder((NewOrderItem("jiko", "Jiko", MAX_AMOUNT // 2, 2),)),)


@pytest.mark.parametrize(
    ("lang", "saved", "question"),
    [
        ("en", None, ask_phone(510)),
        ("en", SAVED, saved_question(510)),
        ("sw", None, ask_phone(510, "sw")),
        ("sw", SAVED, saved_question(510, "sw")),
    ],
    ids=["ask-en", "saved-en", "ask-sw", "saved-sw"],
)
def test_confirm_turns_the_cart_into_an_order_and_asks_for_the_number(
    lang: str, saved: str | None, question: Reply
) -> None:
    start = ChatState(Step.BROWSING, {"unga": 2, "sukuma": 3}, None, ("unga", 2), "254700000000")
    outcome = run(start, press(ConfirmOrder()), facts(lang=lang, saved=saved))
    items = (
        NewOrderItem("unga", "Unga 2kg", 210, 2),  # the English name, whatever the language
        NewOrderItem("sukuma", "Sukuma wiki", 30, 3),
    )
    expected_state = ChatState(Step.AWAITING_PHONE, {}, None, ("unga", 2), None)
    assert outcome == Outcome(expected_state, (question,), (CreateOrder(items),))


def test_the_saved_number_question_names_amount_and_masked_number() -> None:
    reply = only(run(browsing({"unga": 2, "sukuma": 3}), press(ConfirmOrder()), facts(saved=SAVED)))
    assert reply.text == "Pay KES 510 from 07XX XXX 678?"
    assert datas(reply) == ["phone:yes", "phone:other"]


@pytest.mark.parametrize(
    ("saved", "question"),
    [(None, ask_phone(510)), (SAVED, saved_question(510))],
    ids=["ask", "saved"],
)
def test_a_second_confirm_repeats_the_phone_question(saved: str | None, question: Reply) -> None:
    f = facts(order(), saved=saved, waiting_for_pin="DK-3")
    outcome = run(awaiting(7), press(ConfirmOrder()), f)
    assert outcome == Outcome(awaiting(7), (question,))


def test_a_confirm_after_paying_says_the_payment_is_waiting_for_the_pin() -> None:
    outcome = run(browsing(), press(ConfirmOrder()), facts(waiting_for_pin="DK-7"))
    assert outcome == Outcome(browsing(), (in_progress("DK-7"),))


def test_a_confirm_with_nothing_to_confirm_shows_the_empty_cart() -> None:
    outcome = run(browsing(), press(ConfirmOrder()), facts())
    assert outcome == Outcome(browsing(), (Reply(say("en", "cart_empty"), menu_row(), edit=True),))


def test_a_second_confirm_for_an_order_paid_meanwhile_shows_the_empty_cart() -> None:
    outcome = run(awaiting(7), press(ConfirmOrder()), facts(order(status=OrderStatus.PAID)))
    assert outcome.replies == (Reply(say("en", "cart_empty"), menu_row(), edit=True),)
    assert outcome.effects == ()
    # The order is paid: the chat leaves its phone step.
    assert outcome.state == browsing()


# --- choosing the number -----------------------------------------------------------------------


def test_yes_pays_from_the_saved_number() -> None:
    outcome = run(
        awaiting(7, {"sukari": 1}), press(ChoosePhone("yes")), facts(order(), saved=SAVED)
    )
    assert outcome == Outcome(
        browsing({"sukari": 1}), (), (StartPayment(order_id=7, msisdn=SAVED, warn_network=True),)
    )


def test_yes_to_a_typed_number_pays_from_it_without_warning_again() -> None:
    start = awaiting(7, typed=AIRTEL)
    outcome = run(start, press(ChoosePhone("typed")), facts(order(), saved=SAVED))
    assert outcome == Outcome(browsing(), (), (StartPayment(7, AIRTEL, warn_network=False),))
    assert outcome.state.typed_msisdn is None


@pytest.mark.parametrize(
    ("answer", "saved", "typed"),
    [
        ("other", SAVED, AIRTEL),
        ("yes", None, None),
        ("typed", SAVED, None),
    ],
    ids=["other", "yes-without-saved", "typed-without-typed"],
)
def test_asks_for_a_number_when_there_is_none_to_pay_from(
    answer: str, saved: str | None, typed: str | None
) -> None:
    choice = buttons.decode(f"phone:{answer}")
    outcome = run(awaiting(7, typed=typed), press(choice), facts(order(), saved=saved))
    assert outcome == Outcome(awaiting(7), (ask_phone(510),))


@pytest.mark.parametrize(
    ("start", "f", "reply"),
    [
        (browsing(), facts(saved=SAVED, waiting_for_pin="DK-7"), in_progress("DK-7")),
        (browsing(), facts(saved=SAVED), menu_reply()),
        (awaiting(7), facts(order(status=OrderStatus.PAID), saved=SAVED), menu_reply()),
        (awaiting(7), facts(saved=SAVED), menu_reply()),
    ],
    ids=["waiting-for-pin", "nothing-waiting", "order-paid", "order-not-ours"],
)
def test_a_stale_yes_starts_no_payment(start: ChatState, f: Facts, reply: Reply) -> None:
    outcome = run(start, press(ChoosePhone("yes")), f)
    assert outcome == Outcome(browsing(), (reply,))


def test_a_typed_number_goes_with_its_phone_step_so_a_stale_yes_pays_nothing_else() -> None:
    """Leaving the phone step (/cancel here) drops the typed number: the "Yes, pay" under
    "Pay KES 510 from 0733 123 456?" (order 7, now cancelled) cannot pay order 8 from it."""
    eight = order(8, total=160, items=(OrderItemRecord("sukari", "Sukari 1kg", 160, 1),))
    f = facts(order(7), eight)
    typed = run(awaiting(7), Typed("0733123456"), f)
    assert typed.state.typed_msisdn == AIRTEL
    cancelled = run(typed.state, Command("/cancel"), f)
    assert cancelled.effects == (CancelOrder(7),)
    assert cancelled.state.typed_msisdn is None
    paying_eight = run(cancelled.state, press(OnOrder("pay", 8)), f)
    assert paying_eight.replies == (ask_phone(160),)
    stale_yes = run(paying_eight.state, press(ChoosePhone("typed")), f)
    assert stale_yes.effects == ()
    assert stale_yes.replies == (ask_phone(160),)


@pytest.mark.parametrize("answer", ["yes", "typed"])
def test_yes_while_a_prompt_is_open_says_so_and_starts_no_payment(answer: str) -> None:
    f = facts(order(paying=True), saved=SAVED)
    outcome = run(awaiting(7, typed=AIRTEL), press(buttons.decode(f"phone:{answer}")), f)
    assert outcome.replies == (in_progress("DK-7"),)
    assert outcome.effects == ()
    assert outcome.state.step is Step.BROWSING
    assert outcome.state.order_id is None


# --- a typed or shared number ------------------------------------------------------------------


def test_a_typed_safaricom_number_is_confirmed_first() -> None:
    outcome = run(awaiting(7), Typed("0712345678"), facts(order()))
    text = say("en", "confirm_typed_phone", total="KES 510", phone="0712 345 678")
    reply = Reply(text, yes_or_other("typed"), close_keyboard=True)
    assert outcome == Outcome(awaiting(7, typed=SAVED), (reply,))


@pytest.mark.parametrize("typed", ["0733123456", "0733 123 456", "+254733123456"])
def test_a_typed_number_of_another_network_is_warned_about(typed: str) -> None:
    outcome = run(awaiting(7), Typed(typed), facts(order()))
    warning = say("en", "phone_other_network", phone="0733 123 456", network="Airtel")
    confirm = say("en", "confirm_typed_phone", total="KES 510", phone="0733 123 456")
    reply = Reply(f"{warning}\n\n{confirm}", yes_or_other("typed"), close_keyboard=True)
    assert outcome == Outcome(awaiting(7, typed=AIRTEL), (reply,))
    assert outcome.effects == ()


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("call me", "not_a_number"),
        ("07-12-ab", "not_a_number"),
        ("020 1234567", "not_mobile"),
        ("+447911123456", "not_kenyan_mobile"),
        ("12", "not_kenyan_mobile"),
    ],
)
@pytest.mark.parametrize("lang", ["en", "sw"])
def test_a_typed_text_that_is_no_mpesa_number_says_why(typed: str, problem: str, lang: str) -> None:
    outcome = run(awaiting(7), Typed(typed), facts(order(), lang=lang))
    reply = Reply(say(lang, f"phone_{problem}"), ask_contact=say(lang, "btn_share_number"))
    assert outcome == Outcome(awaiting(7), (reply,))


def test_a_typed_number_for_an_order_paid_meanwhile_shows_the_menu() -> None:
    outcome = run(awaiting(7), Typed("0712345678"), facts(order(status=OrderStatus.PAID)))
    assert outcome == Outcome(browsing(), (menu_reply(),))


@pytest.mark.parametrize("phone", ["+254 712 345 678", "0712345678", "254712345678"])
def test_a_shared_own_contact_pays_straight_away(phone: str) -> None:
    outcome = run(awaiting(7), SharedContact(phone, own=True), facts(order()))
    assert outcome == Outcome(browsing(), (), (StartPayment(7, SAVED, warn_network=True),))


def test_a_shared_contact_that_is_not_ones_own_is_refused() -> None:
    outcome = run(awaiting(7), SharedContact("0712345678", own=False), facts(order()))
    reply = Reply(say("en", "contact_not_own"), ask_contact=say("en", "btn_share_number"))
    assert outcome == Outcome(awaiting(7), (reply,))


def test_a_shared_contact_with_a_foreign_number_says_why() -> None:
    outcome = run(awaiting(7), SharedContact("+447911123456", own=True), facts(order()))
    reply = Reply(say("en", "phone_not_kenyan_mobile"), ask_contact=say("en", "btn_share_number"))
    assert outcome == Outcome(awaiting(7), (reply,))


def test_a_contact_while_browsing_gets_the_hint() -> None:
    outcome = run(browsing(), SharedContact("0712345678", own=True), facts(order()))
    assert outcome == Outcome(browsing(), (Reply(say("en", "hint"), menu_row()),))


# --- buttons about one order --------------------------------------------------------------------

VERBS: list[OrderVerb] = ["retry", "other", "cancel", "paybill", "pay"]


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("order_id", [8, NO_ORDER])
def test_a_button_for_an_order_that_is_not_ours(verb: OrderVerb, order_id: int) -> None:
    start = awaiting(7, {"unga": 1})
    outcome = run(
        start, press(OnOrder(verb, order_id)), facts(order(7), saved=SAVED, paybill="600100")
    )
    assert outcome == Outcome(start, (Reply(say("en", "not_your_order")),))


def test_cancel_puts_the_items_back_in_the_cart_up_to_the_cap() -> None:
    items = (
        OrderItemRecord("unga", "Unga 2kg", 210, 10),
        OrderItemRecord("sukuma", "Sukuma wiki", 30, 2),
        OrderItemRecord("maziwa", "Maziwa", 60, 1),  # taken off the catalog since
    )
    start = browsing({"unga": 45, "sukari": 1})
    outcome = run(start, press(OnOrder("cancel", 7)), facts(order(items=items)))
    cart = {"unga": MAX, "sukari": 1, "sukuma": 2}
    assert outcome == Outcome(
        browsing(cart), (cancelled_to_cart(MAX + 3, edit=True),), (CancelOrder(7),)
    )


def test_cancel_of_the_order_at_the_phone_step_leaves_the_step() -> None:
    outcome = run(awaiting(7), press(OnOrder("cancel", 7)), facts(order()))
    assert outcome.state == browsing({"unga": 2, "sukuma": 3})
    assert outcome.effects == (CancelOrder(7),)


def test_cancel_of_another_order_keeps_the_phone_step() -> None:
    outcome = run(awaiting(8), press(OnOrder("cancel", 7)), facts(order(7), order(8)))
    assert outcome.state == awaiting(8, {"unga": 2, "sukuma": 3})
    assert outcome.effects == (CancelOrder(7),)


@pytest.mark.parametrize(
    "view",
    [
        order(paying=True),
        order(status=OrderStatus.PAID),
        order(status=OrderStatus.NEEDS_REVIEW),
        order(status=OrderStatus.CANCELLED),
    ],
    ids=["paying", "paid", "in-review", "cancelled"],
)
def test_an_order_that_cannot_be_cancelled_is_kept(view: OrderView) -> None:
    start = browsing({"sukari": 1})
    outcome = run(start, press(OnOrder("cancel", 7)), facts(view))
    reply = Reply(say("en", "cannot_cancel", reference="DK-7"), menu_row(), edit=True)
    assert outcome == Outcome(start, (reply,))


@pytest.mark.parametrize("verb", ["retry", "other", "paybill", "pay"])
def test_paying_a_cancelled_order_is_refused(verb: OrderVerb) -> None:
    start = browsing({"sukari": 1})
    f = facts(order(status=OrderStatus.CANCELLED), saved=SAVED, paybill="600100")
    outcome = run(start, press(OnOrder(verb, 7)), f)
    rows = ((Button(cart_label("en", 1), "cart"), Button(say("en", "btn_menu"), "menu")),)
    reply = Reply(say("en", "retry_cancelled", reference="DK-7"), rows)
    assert outcome == Outcome(start, (reply,))


@pytest.mark.parametrize("verb", ["retry", "other", "paybill", "pay"])
@pytest.mark.parametrize("status", [OrderStatus.PAID, OrderStatus.NEEDS_REVIEW])
def test_paying_a_settled_order_shows_its_line(verb: OrderVerb, status: OrderStatus) -> None:
    f = facts(order(status=status), saved=SAVED, paybill="600100")
    outcome = run(browsing(), press(OnOrder(verb, 7)), f)
    line = say(
        "en", "order_line", reference="DK-7", total="KES 510", status=status_text("en", status)
    )
    assert outcome == Outcome(browsing(), (Reply(line, menu_row()),))
    assert outcome.effects == ()


def test_paybill_gives_the_paybill_and_the_reference() -> None:
    outcome = run(awaiting(7), press(OnOrder("paybill", 7)), facts(order(), paybill="600100"))
    text = say("en", "paybill", paybill="600100", reference="DK-7", amount="KES 510")
    reply = Reply(text, ((Button(say("en", "btn_cancel_order"), "cancel:7"),),))
    assert outcome == Outcome(browsing(), (reply,))


def test_paybill_when_the_shop_has_none_asks_for_a_number() -> None:
    outcome = run(browsing(), press(OnOrder("paybill", 7)), facts(order(), saved=SAVED))
    assert outcome == Outcome(awaiting(7), (ask_phone(510),))


@pytest.mark.parametrize(
    ("saved", "question"),
    [(None, ask_phone(510)), (SAVED, saved_question(510))],
    ids=["ask", "saved"],
)
def test_pay_from_the_orders_list_resumes_at_the_phone_question(
    saved: str | None, question: Reply
) -> None:
    outcome = run(browsing({"sukari": 1}), press(OnOrder("pay", 7)), facts(order(), saved=saved))
    assert outcome == Outcome(awaiting(7, {"sukari": 1}), (question,))


def test_retry_with_a_saved_number_pays_again() -> None:
    outcome = run(browsing(), press(OnOrder("retry", 7)), facts(order(), saved=SAVED))
    assert outcome == Outcome(browsing(), (), (StartPayment(7, SAVED, warn_network=True),))


@pytest.mark.parametrize(("verb", "saved"), [("retry", None), ("other", SAVED), ("other", None)])
def test_retry_without_a_saved_number_or_other_asks_for_one(
    verb: OrderVerb, saved: str | None
) -> None:
    outcome = run(browsing(), press(OnOrder(verb, 7)), facts(order(), saved=saved))
    assert outcome == Outcome(awaiting(7), (ask_phone(510),))


def test_retry_while_a_prompt_is_open_starts_no_payment() -> None:
    outcome = run(browsing(), press(OnOrder("retry", 7)), facts(order(paying=True), saved=SAVED))
    assert outcome == Outcome(browsing(), (in_progress("DK-7"),))


# --- /cancel -----------------------------------------------------------------------------------


def test_cancel_at_the_phone_step_cancels_the_order_and_refills_the_cart() -> None:
    outcome = run(awaiting(7, {"unga": 1}, typed=None), Command("/cancel"), facts(order()))
    cart = {"unga": 3, "sukuma": 3}
    assert outcome == Outcome(
        browsing(cart), (cancelled_to_cart(6, edit=False),), (CancelOrder(7),)
    )


def test_cancel_at_the_phone_step_keeps_an_order_being_paid() -> None:
    outcome = run(awaiting(7, {"unga": 1}), Command("/cancel"), facts(order(paying=True)))
    text = say("en", "cancel_kept_order", reference="DK-7", status="waiting for payment")
    assert outcome == Outcome(browsing({"unga": 1}), (Reply(text, menu_row()),))


@pytest.mark.parametrize(
    ("start", "f"),
    [
        (browsing({"unga": 1}, picking=("unga", 2)), facts(order())),
        (awaiting(7, {"unga": 1}), facts()),
    ],
    ids=["browsing", "order-not-ours"],
)
def test_cancel_with_no_order_to_cancel_just_stops(start: ChatState, f: Facts) -> None:
    outcome = run(start, Command("/cancel"), f)
    assert outcome == Outcome(
        browsing({"unga": 1}), (Reply(say("en", "cancelled_step"), menu_row()),)
    )


# --- language ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), [("en", "sw"), ("sw", "en")])
def test_choosing_a_language_sets_it_and_answers_in_it(old: str, new: str) -> None:
    choice = buttons.decode(f"lang:{new}")
    outcome = run(browsing({"unga": 1}), press(choice), facts(lang=old))
    reply = Reply(say(new, "language_set"), menu_row(new))
    assert outcome == Outcome(browsing({"unga": 1}), (reply,), (SetLanguage(new),))


def test_the_swahili_language_reply_is_in_swahili() -> None:
    reply = only(run(browsing(), press(ChooseLanguage("sw")), facts()))
    assert reply.text == "Lugha: Kiswahili."
    assert reply.buttons == ((Button("Menyu", "menu"),),)


# --- after the payment was asked for -------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "view", "text"),
    [
        (PaymentInProgress(), order(), say("en", "payment_in_progress", reference="DK-7")),
        (
            OrderNotPayable(),
            order(status=OrderStatus.PAID),
            say("en", "order_not_payable", reference="DK-7", status="paid"),
        ),
        (
            OrderNotPayable(),
            order(status=OrderStatus.CANCELLED),
            say("en", "order_not_payable", reference="DK-7", status="cancelled"),
        ),
    ],
    ids=["in-progress", "paid", "cancelled"],
)
def test_not_started_says_why_with_the_menu(
    exc: PaymentNotStarted, view: OrderView | None, text: str
) -> None:
    assert checkout.not_started(facts(), view, exc) == Reply(text, menu_row())


@pytest.mark.parametrize(
    ("kind", "wait", "said"),
    [
        (LimitKind.PHONE, timedelta(minutes=7, seconds=1), "8 minutes"),
        (LimitKind.CUSTOMER, timedelta(seconds=5), "1 minute"),
        (LimitKind.RULE_LIMITED, timedelta(minutes=2), "2 minutes"),
    ],
)
@pytest.mark.parametrize("paybill", [None, "600100"])
def test_too_many_prompts_leaves_other_ways_open(
    kind: LimitKind, wait: timedelta, said: str, paybill: str | None
) -> None:
    exc = TooManyPrompts(LimitHit(kind, wait))
    reply = checkout.not_started(facts(paybill=paybill), order(), exc)
    assert reply.text == say("en", f"limit_{kind}", wait=said)
    assert datas(reply) == failed_buttons(7, paybill=paybill is not None)


def test_too_many_prompts_in_swahili() -> None:
    exc = TooManyPrompts(LimitHit(LimitKind.PHONE, timedelta(minutes=3)))
    reply = checkout.not_started(facts(lang="sw"), order(), exc)
    assert reply.text == say("sw", "limit_phone", wait=minutes("sw", 3))


@pytest.mark.parametrize("reason", [FailureReason.WRONG_PIN, FailureReason.UNREACHABLE])
@pytest.mark.parametrize("paybill", [None, "600100"])
def test_a_refused_push_says_why_and_offers_the_ways_on(
    reason: FailureReason, paybill: str | None
) -> None:
    reply = checkout.after_push(facts(paybill=paybill), 7, reason, warn=True)
    assert reply.text == say("en", "payment_refused", reason=reason_text("en", reason))
    assert datas(reply) == failed_buttons(7, paybill=paybill is not None)
    assert reply.tag is None


def started(status: PaymentStatus, msisdn: str = SAVED) -> PaymentStarted:
    return PaymentStarted(31, status, msisdn, 510, "DK-7", None)


@pytest.mark.parametrize(
    ("status", "key"),
    [(PaymentStatus.PENDING, "check_phone"), (PaymentStatus.UNKNOWN, "push_unknown")],
)
@pytest.mark.parametrize(("lang", "shop_name"), [("en", SHOP.name), ("sw", SHOP.name_sw)])
def test_a_sent_push_says_check_your_phone_or_that_it_may_not_have_arrived(
    status: PaymentStatus, key: str, lang: str, shop_name: str
) -> None:
    reply = checkout.after_push(facts(lang=lang), 7, started(status), warn=True)
    text = say(lang, key, total="KES 510", shop=shop_name)
    assert reply == Reply(text, tag="payment:31", close_keyboard=True)


@pytest.mark.parametrize(("warn", "warned"), [(True, True), (False, False)])
def test_a_push_to_another_network_warns_only_when_asked(warn: bool, warned: bool) -> None:
    reply = checkout.after_push(facts(), 7, started(PaymentStatus.PENDING, AIRTEL), warn=warn)
    check = say("en", "check_phone", total="KES 510", shop=SHOP.name)
    warning = say("en", "phone_other_network", phone="0733 123 456", network="Airtel")
    assert reply.text == (f"{warning}\n\n{check}" if warned else check)
    assert reply.tag == "payment:31"


# --- button data ----------------------------------------------------------------------------------

EVERY_ACTION: list[Action] = [
    Menu(),
    Menu(new=True),
    Category("Staples"),
    Category(""),
    ShowProduct("unga"),
    SetQuantity("unga", 3),
    AddToCart("sukuma-wiki_1.5", 50),
    DropProduct("unga"),
    ShowCart(),
    ChangeCart("inc", "unga"),
    ChangeCart("dec", "unga"),
    ChangeCart("rm", "unga"),
    EmptyCart(),
    Checkout(),
    ConfirmOrder(),
    ChoosePhone("yes"),
    ChoosePhone("typed"),
    ChoosePhone("other"),
    *(OnOrder(verb, 17) for verb in VERBS),
    OnOrder("retry", 2**31 - 1),
    ChooseHandover(Handover.PICKUP),
    ChooseHandover(Handover.DELIVERY),
    ChooseZone(0),
    ChooseZone(12),
    ChooseLanguage("en"),
    ChooseLanguage("sw"),
]


@pytest.mark.parametrize("action", EVERY_ACTION, ids=repr)
def test_every_action_survives_encode_and_decode(action: Action) -> None:
    data = buttons.encode(action)
    assert len(data.encode()) <= buttons.MAX_BYTES
    assert buttons.decode(data) == action


def test_every_action_type_is_in_the_round_trip() -> None:
    assert {type(a) for a in EVERY_ACTION} == set(get_args(Action))


@pytest.mark.parametrize(
    ("action", "data"),
    [
        (Menu(), "menu"),
        (Menu(new=True), "menu:new"),
        (AddToCart("unga", 2), "add:unga:2"),
        (ChangeCart("dec", "unga"), "dec:unga"),
        (OnOrder("retry", 17), "retry:17"),
        (ChoosePhone("typed"), "phone:typed"),
        (ChooseLanguage("sw"), "lang:sw"),
    ],
)
def test_encoded_data_keeps_the_version_one_format(action: Action, data: str) -> None:
    assert buttons.encode(action) == data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("menu:old", Menu()),
        ("cat:", Category("")),
        ("prod:unga:1", ShowProduct("unga")),
        ("qty:unga:²", SetQuantity("unga", 1)),
        ("qty:unga:0", SetQuantity("unga", 1)),
        ("qty:unga:123456789012", SetQuantity("unga", 1)),
        ("add:unga:-3", AddToCart("unga", 1)),
        ("add:unga", AddToCart("unga", 1)),
        ("retry:-1", OnOrder("retry", NO_ORDER)),
        ("retry:", OnOrder("retry", NO_ORDER)),
        ("cancel", OnOrder("cancel", NO_ORDER)),
        ("pay:0", OnOrder("pay", NO_ORDER)),
        ("pay:2147483648", OnOrder("pay", NO_ORDER)),
        ("paybill:٣", OnOrder("paybill", NO_ORDER)),
        ("other:7x", OnOrder("other", NO_ORDER)),
        ("lang:fr", None),
        ("lang:", None),
        ("phone:maybe", None),
        ("phone:", None),
        ("inc:", None),
        ("drop:", None),
        ("prod:", None),
        ("bogus", None),
        ("bogus:1", None),
        ("CART", None),
        ("", None),
        ("v2~menu", None),
    ],
)
def test_decode_never_trusts_forged_data(data: str, expected: Action | None) -> None:
    assert buttons.decode(data) == expected


def test_forged_data_leads_to_no_order_and_no_effect() -> None:
    f = facts(order(7), saved=SAVED)
    outcome = run(awaiting(7), press(buttons.decode("retry:-1")), f)
    assert outcome == Outcome(awaiting(7), (Reply(say("en", "not_your_order")),))


def test_encode_rejects_data_over_64_bytes() -> None:
    assert buttons.encode(ShowProduct("x" * 59)) == "prod:" + "x" * 59  # exactly 64
    with pytest.raises(ValueError, match="64 bytes"):
        buttons.encode(ShowProduct("x" * 60))
    assert buttons.encode(Category("é" * 30)) == "cat:" + "é" * 30  # 64 bytes, 34 characters
    with pytest.raises(ValueError, match="64 bytes"):
        buttons.encode(Category("é" * 31))


def inbound(**fields: str | bool | None) -> Inbound:
    return Inbound("telegram", "42", "Njeri", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "event"),
    [
        (inbound(text="/Start@DukaBot now"), Command("/start")),
        (inbound(text="  /CART  "), Command("/cart")),
        (inbound(text="  hi there "), Typed("hi there")),
        (inbound(text=None), Typed("")),
        (inbound(button="add:unga:2"), Pressed(AddToCart("unga", 2))),
        (inbound(button="retry:-1"), Pressed(OnOrder("retry", NO_ORDER))),
        (inbound(button="lang:fr"), Pressed(None)),
        (inbound(button="menu", text="hi"), Pressed(Menu())),
        (
            inbound(contact_phone="+254712345678", contact_is_own=True),
            SharedContact("+254712345678", True),
        ),
        (
            inbound(contact_phone="0712345678", button="menu"),
            SharedContact("0712345678", False),
        ),
        (inbound(unsupported=True, text="hi", button="menu"), Unsupported()),
    ],
    ids=[
        "command-with-bot-name",
        "command-upper-case",
        "text",
        "no-text",
        "button",
        "forged-order-button",
        "unknown-button",
        "button-over-text",
        "own-contact",
        "contact-over-button",
        "unsupported-over-all",
    ],
)
def test_read_event(given: Inbound, event: ChatEvent) -> None:
    assert read_event(given) == event


# --- purity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "event", "f"),
    [
        (
            browsing({"unga": 2, "maziwa": 1}, picking=("unga", 2)),
            press(AddToCart("unga", 2)),
            facts(),
        ),
        (browsing({"unga": 2}), press(ChangeCart("inc", "unga")), facts()),
        (browsing({"unga": 2}), press(EmptyCart()), facts()),
        (browsing({"unga": 2}), press(ConfirmOrder()), facts()),
        (awaiting(7, {"unga": 2}), Command("/cancel"), facts(order())),
        (browsing({"unga": 49}), press(OnOrder("cancel", 7)), facts(order())),
        (awaiting(7, typed=SAVED), press(ChoosePhone("typed")), facts(order())),
    ],
    ids=["add", "inc", "empty", "confirm", "cancel-command", "cancel-button", "typed-yes"],
)
def test_a_step_never_changes_the_state_it_was_given(
    start: ChatState, event: ChatEvent, f: Facts
) -> None:
    cart = start.cart
    snapshot = dict(cart)
    outcome = step(start, event, f)
    assert start.cart is cart
    assert dict(cart) == snapshot
    assert outcome.state != start
    assert outcome.state.cart is not cart


def test_chat_state_is_frozen() -> None:
    state = browsing({"unga": 1})
    with pytest.raises(FrozenInstanceError):
        state.step = Step.AWAITING_PHONE  # type: ignore[misc]
