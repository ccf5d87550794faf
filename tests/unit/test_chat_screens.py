"""The shop's screens and chat state: pure functions of the catalog, the cart and the language."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.catalog import CatalogError, ProductSpec, parse_products
from bot.chat import screens
from bot.chat.model import Button, ChatState, Reply, Step
from bot.texts import kes, say
from payments.phone import mask_msisdn
from storage.orders import OrderRecord

SUKUMA = ProductSpec("sukuma", "Sukuma wiki", 100, "Vegetables", "A fresh bunch")
SPINACH = ProductSpec("spinach", "Spinach", 40, "Vegetables")
UNGA = ProductSpec("unga", "Unga 2kg", 210, "Staples", "Maize flour")
ONE_CATEGORY = [SUKUMA, SPINACH]
TWO_CATEGORIES = [SUKUMA, UNGA, SPINACH]
CATALOG = {p.sku: p for p in TWO_CATEGORIES}
CART = {"sukuma": 2, "unga": 5}  # 200 + 1,050 = 1,250


def datas(reply: Reply) -> list[str]:
    return [button.data for row in reply.buttons for button in row]


def labels(reply: Reply) -> list[str]:
    return [button.label for row in reply.buttons for button in row]


def button_with(reply: Reply, data: str) -> Button:
    return next(b for row in reply.buttons for b in row if b.data == data)


# --- chat state ---------------------------------------------------------------------------


def test_chat_state_survives_a_json_round_trip() -> None:
    """Step, cart, order and the product being picked all come back as they were."""
    state = ChatState(Step.AWAITING_PHONE, {"sukuma": 2, "unga": 1}, 17, ("sukuma", 3))
    assert ChatState.from_json(state.to_json()) == state


def test_empty_chat_state_survives_a_json_round_trip() -> None:
    """A fresh state (browsing, empty cart, nothing picked) round-trips unchanged."""
    assert ChatState.from_json(ChatState().to_json()) == ChatState()


@pytest.mark.parametrize(
    ("saved", "expected"),
    [
        ("{}", ChatState()),
        ('{"step": "awaiting_phone", "order_id": 4}', ChatState(Step.AWAITING_PHONE, {}, 4, None)),
        ('{"cart": {"unga": 2}}', ChatState(Step.BROWSING, {"unga": 2}, None, None)),
        ('{"cart": null, "picking": null}', ChatState()),
        ('{"step": "browsing", "cart": {"unga": "3"}}', ChatState(Step.BROWSING, {"unga": 3})),
    ],
)
def test_older_or_partial_state_json_gets_defaults(saved: str, expected: ChatState) -> None:
    """State saved by an older version (missing keys, nulls) loads with the defaults."""
    assert ChatState.from_json(saved) == expected


# --- menu and categories ------------------------------------------------------------------


def test_menu_with_one_category_lists_its_products_directly() -> None:
    """A single category skips the category step: the product buttons show at once."""
    reply = screens.menu("en", ONE_CATEGORY, {})
    assert reply.text == "Vegetables: pick a product."
    assert datas(reply) == ["prod:sukuma", "prod:spinach", "cart", "menu"]
    assert labels(reply)[:2] == ["Sukuma wiki — KES 100", "Spinach — KES 40"]


def test_menu_with_several_categories_lists_them_and_a_cart_button_with_the_count() -> None:
    """Categories in catalog order, then a Cart button counting every item in the cart."""
    reply = screens.menu("en", TWO_CATEGORIES, CART)
    assert reply.text == "Pick a category:"
    assert datas(reply) == ["cat:Vegetables", "cat:Staples", "cart"]
    assert labels(reply) == ["Vegetables", "Staples", "Cart (7)"]
    assert reply.edit is False


def test_cart_button_has_no_count_when_the_cart_is_empty() -> None:
    """An empty cart shows a plain Cart label."""
    assert button_with(screens.menu("en", TWO_CATEGORIES, {}), "cart").label == "Cart"


def test_menu_without_products_says_so() -> None:
    """No products listed: a polite message and no buttons."""
    reply = screens.menu("en", [], {})
    assert reply.text == say("en", "no_products")
    assert reply.buttons == ()


def test_menu_in_swahili_uses_swahili_labels() -> None:
    """Button labels follow the customer's language."""
    reply = screens.menu("sw", ONE_CATEGORY, {"sukuma": 1})
    assert labels(reply)[-2:] == ["Kikapu (1)", "Menyu"]


# --- product ------------------------------------------------------------------------------


def test_product_quantity_buttons_step_by_one() -> None:
    """The minus and plus buttons carry the quantity one less and one more."""
    reply = screens.product("en", SUKUMA, 3, {})
    assert datas(reply)[:3] == ["qty:sukuma:2", "qty:sukuma:4", "add:sukuma:3"]
    assert "Quantity: 3 (KES 300)" in reply.text


def test_product_quantity_does_not_go_below_one() -> None:
    """At quantity 1 the minus button offers to leave the product out instead."""
    reply = screens.product("en", SUKUMA, 1, {})
    assert datas(reply)[:2] == ["drop:sukuma", "qty:sukuma:2"]


def test_product_quantity_does_not_go_above_the_maximum() -> None:
    """At MAX_QUANTITY the plus button stays at MAX_QUANTITY."""
    top = screens.MAX_QUANTITY
    reply = screens.product("en", SUKUMA, top, {})
    assert datas(reply)[:2] == [f"qty:sukuma:{top - 1}", f"qty:sukuma:{top}"]


def test_product_back_button_returns_to_its_category() -> None:
    """Back leads to the product's own category; the Cart button shows the count."""
    reply = screens.product("en", UNGA, 1, {"sukuma": 2})
    assert datas(reply)[-2:] == ["cart", "cat:Staples"]
    assert labels(reply)[-2:] == ["Cart (2)", "Back"]


# --- cart and summary ---------------------------------------------------------------------


def test_cart_lists_lines_and_the_total_in_shillings() -> None:
    """Each line shows quantity, name, unit price and line total; the total has a comma."""
    reply = screens.cart("en", CART, CATALOG)
    assert reply.text == (
        "Your cart:\n"
        "• 2 × Sukuma wiki @ KES 100 = KES 200\n"
        "• 5 × Unga 2kg @ KES 210 = KES 1,050\n"
        "\n"
        "Total: KES 1,250"
    )
    assert datas(reply) == [
        "dec:sukuma",
        "inc:sukuma",
        "rm:sukuma",
        "dec:unga",
        "inc:unga",
        "rm:unga",
        "checkout",
        "menu",
        "empty",
    ]


def test_empty_cart_offers_only_the_menu() -> None:
    """An empty cart says so and offers the menu, no checkout."""
    reply = screens.cart("en", {}, CATALOG)
    assert reply.text == "Your cart is empty. Tap Menu to pick products."
    assert datas(reply) == ["menu"]


def test_summary_shows_the_order_and_asks_to_confirm() -> None:
    """The summary repeats the lines and total, with Confirm and Edit cart."""
    reply = screens.summary("en", CART, CATALOG)
    assert reply.text.startswith("Your order:\n• 2 × Sukuma wiki @ KES 100 = KES 200\n")
    assert "Total: KES 1,250" in reply.text
    assert "Confirm to pay with M-Pesa." in reply.text
    assert [(b.label, b.data) for row in reply.buttons for b in row] == [
        ("Confirm order", "confirm"),
        ("Edit cart", "cart"),
    ]
    assert reply.edit is True


def test_failed_payment_buttons_offer_retry_other_number_and_cancel() -> None:
    """Each button names the order it acts on."""
    rows = screens.failed_payment_buttons("en", 42)
    assert [(b.label, b.data) for row in rows for b in row] == [
        ("Try again", "retry:42"),
        ("Use another number", "other:42"),
        ("Cancel order", "cancel:42"),
    ]


def _order(order_id: int, reference: str, status: str) -> OrderRecord:
    return OrderRecord(order_id, reference, 1, status, 270, datetime(2026, 1, 1, tzinfo=UTC), None)


def test_orders_screen_gives_each_unpaid_order_pay_and_cancel_and_ends_with_menu() -> None:
    listed = [
        _order(9, "DK-9AAAAA", "paid"),
        _order(8, "DK-8BBBBB", "awaiting_payment"),
        _order(7, "DK-7CCCCC", "cancelled"),
        _order(6, "DK-6DDDDD", "awaiting_payment"),
    ]
    reply = screens.orders("sw", listed)
    assert reply.text.splitlines() == [
        say("sw", "orders", lines="").rstrip("\n"),
        "• DK-9AAAAA — KES 270 — limelipwa",
        "• DK-8BBBBB — KES 270 — linasubiri malipo",
        "• DK-7CCCCC — KES 270 — limeghairiwa",
        "• DK-6DDDDD — KES 270 — linasubiri malipo",
    ]
    assert [[(b.label, b.data) for b in row] for row in reply.buttons] == [
        [("Lipa DK-8BBBBB", "pay:8"), ("Ghairi DK-8BBBBB", "cancel:8")],
        [("Lipa DK-6DDDDD", "pay:6"), ("Ghairi DK-6DDDDD", "cancel:6")],
        [("Menyu", "menu")],
    ]


def test_orders_screen_without_orders_offers_the_menu() -> None:
    assert screens.orders("en", []) == Reply("You have no orders yet.", screens.menu_buttons("en"))


# --- Telegram's 64-byte callback_data -----------------------------------------------------

LONG_ASCII_CATEGORY = "Matunda na mboga mpya kutoka shambani kwetu Kiambu kila asubuhi ya leo"
LONG_SWAHILI_CATEGORY = "Vinywaji — chai, kahawa, soda na juisi za matunda ya msimu huu"
LONG_SKU = "maharagwe-ya-kijani-kilo-2-pack-1-ya-leo"


def longest_accepted(key: str, text: str) -> str:
    """The longest start of ``text`` that ``parse_products`` accepts as a product's ``key``."""
    # Screens only ever see what the catalog let through, so that is what they must fit.
    for end in range(len(text), 0, -1):
        entry = {"sku": "embe", "name": "Embe", "price": 20, key: text[:end]}
        try:
            parse_products([entry], source="catalog.products")
        except CatalogError:
            continue
        return text[:end]
    raise AssertionError(f"the catalog accepts no {key} starting like {text!r}")


def loaded(sku: str, category: str) -> ProductSpec:
    entry = {"sku": sku, "name": "Embe", "price": 20, "category": category}
    [spec] = parse_products([entry], source="catalog.products")
    return spec


def every_screen(products: list[ProductSpec]) -> list[Reply]:
    catalog = {p.sku: p for p in products}
    cart = dict.fromkeys(catalog, screens.MAX_QUANTITY)
    replies = [screens.menu("en", products, cart), screens.cart("en", cart, catalog)]
    replies += [screens.summary("en", cart, catalog)]
    for p in products:
        replies += [screens.category("en", products, p.category, cart)]
        replies += [screens.product("en", p, q, cart) for q in (1, screens.MAX_QUANTITY)]
    return replies


@pytest.mark.parametrize(
    "category", [LONG_ASCII_CATEGORY, LONG_SWAHILI_CATEGORY], ids=["ascii", "non-ascii"]
)
def test_every_button_fits_telegrams_64_bytes(category: str) -> None:
    """The longest category and sku a catalog accepts give button data of at most 64 bytes."""
    products = [
        loaded(longest_accepted("sku", LONG_SKU), longest_accepted("category", category)),
        ProductSpec("unga", "Unga 2kg", 210, "Staples"),
    ]
    too_long = {
        data for reply in every_screen(products) for data in datas(reply) if len(data.encode()) > 64
    }
    assert too_long == set()


@pytest.mark.parametrize(
    "category", [LONG_ASCII_CATEGORY, LONG_SWAHILI_CATEGORY], ids=["ascii", "non-ascii"]
)
def test_category_button_of_a_long_name_opens_that_category(category: str) -> None:
    """The menu's button for the longest accepted category name leads to its products."""
    products = [
        loaded("embe", longest_accepted("category", category)),
        ProductSpec("unga", "Unga 2kg", 210, "Staples"),
    ]
    data = datas(screens.menu("en", products, {}))[0]
    opened = screens.category("en", products, data.removeprefix("cat:"), {})
    assert "prod:embe" in datas(opened)


# --- texts --------------------------------------------------------------------------------


def test_swahili_falls_back_to_english_for_a_missing_key() -> None:
    """``cart_line`` has no Swahili text: the English one is used instead of failing."""
    values = {"quantity": 2, "name": "Unga", "price": "KES 210", "line_total": "KES 420"}
    assert say("sw", "cart_line", **values) == say("en", "cart_line", **values)
    assert say("sw", "cart_line", **values) == "• 2 × Unga @ KES 210 = KES 420"


def test_swahili_text_is_used_where_it_exists() -> None:
    """Keys translated to Swahili are said in Swahili."""
    assert say("sw", "btn_menu") == "Menyu"
    assert say("en", "btn_menu") == "Menu"


def test_money_is_shown_as_kes_with_thousands_separator() -> None:
    """Amounts read ``KES 1,250``."""
    assert kes(1250) == "KES 1,250"
    assert kes(30) == "KES 30"
    assert kes(250_000) == "KES 250,000"


def test_masked_phone_shows_only_the_last_three_digits() -> None:
    """Enough of the number to recognise it, not enough to read it out."""
    assert mask_msisdn("254712345678") == "07XX XXX 678"
