"""The screens of the shop (menu, products, cart, order summary): pure functions of the
catalog, the cart and the language, returning ``Reply`` objects.

Names are shown in the customer's language; button data always carries the English
category and the sku, so a button stays valid whatever language the chat switches to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.catalog import ProductSpec
from bot.chat.buttons import (
    AddToCart,
    Category,
    ChangeCart,
    Checkout,
    ConfirmOrder,
    DropProduct,
    EmptyCart,
    Menu,
    OnOrder,
    SetQuantity,
    ShowCart,
    ShowProduct,
    encode,
)
from bot.chat.model import Button, Reply
from bot.texts import kes, say, status_text
from payments.states import OrderStatus
from storage.orders import OrderRecord

MAX_QUANTITY = 50


def most_in_cart(spec: ProductSpec) -> int:
    """The most of ``spec`` one cart may hold: the per-order cap, or what is left."""
    if spec.stock is None:
        return MAX_QUANTITY
    return max(0, min(MAX_QUANTITY, spec.stock))


def product_label(lang: str, spec: ProductSpec) -> str:
    label = f"{spec.name_in(lang)} — {kes(spec.price)}"
    return f"{label} ({say(lang, 'sold_out_tag')})" if spec.sold_out else label


def cart_total(cart: Mapping[str, int], catalog: Mapping[str, ProductSpec]) -> int:
    return sum(catalog[sku].price * qty for sku, qty in cart.items() if sku in catalog)


def cart_count(cart: Mapping[str, int]) -> int:
    return sum(cart.values())


def _cart_button(lang: str, cart: Mapping[str, int]) -> Button:
    count = cart_count(cart)
    label = say(lang, "btn_cart") + (f" ({count})" if count else "")
    return Button(label, encode(ShowCart()))


def menu_buttons(lang: str) -> tuple[tuple[Button, ...], ...]:
    """The least next step any message offers: back to the Menu."""
    return ((Button(say(lang, "btn_menu"), encode(Menu())),),)


def menu_below_buttons(lang: str) -> tuple[tuple[Button, ...], ...]:
    """Menu under a message worth keeping (a receipt): the menu comes as a new message."""
    return ((Button(say(lang, "btn_menu"), encode(Menu(new=True))),),)


def cart_and_menu_buttons(lang: str, cart: Mapping[str, int]) -> tuple[tuple[Button, ...], ...]:
    return ((_cart_button(lang, cart), Button(say(lang, "btn_menu"), encode(Menu()))),)


def category_label(lang: str, products: Sequence[ProductSpec], name: str) -> str:
    """The category's name in ``lang``: any of its products may carry the Swahili one."""
    labels = (p.category_in(lang) for p in products if p.category == name)
    return next((label for label in labels if label != name), name) or say(lang, "category_other")


def menu(
    lang: str, products: Sequence[ProductSpec], cart: Mapping[str, int], *, edit: bool = False
) -> Reply:
    """Categories as buttons; with a single (or no) category, the products straight away."""
    if not products:
        return Reply(say(lang, "no_products"), edit=edit)
    categories = list(dict.fromkeys(p.category for p in products))
    if len(categories) == 1:
        return category(lang, products, categories[0], cart, edit=edit)
    rows = [
        (Button(category_label(lang, products, name), encode(Category(name))),)
        for name in categories
    ]
    rows.append((_cart_button(lang, cart),))
    return Reply(say(lang, "choose_category"), tuple(rows), edit=edit)


def category(
    lang: str,
    products: Sequence[ProductSpec],
    name: str,
    cart: Mapping[str, int],
    *,
    edit: bool = True,
) -> Reply:
    rows: list[tuple[Button, ...]] = [
        (Button(product_label(lang, p), encode(ShowProduct(p.sku))),)
        for p in products
        if p.category == name
    ]
    rows.append((_cart_button(lang, cart), Button(say(lang, "btn_menu"), encode(Menu()))))
    label = category_label(lang, products, name)
    title = say(lang, "category_products", category=label) if name else say(lang, "btn_menu")
    return Reply(title, tuple(rows), edit=edit)


def product(lang: str, spec: ProductSpec, quantity: int, cart: Mapping[str, int]) -> Reply:
    back = Button(say(lang, "btn_back"), encode(Category(spec.category)))
    if spec.sold_out:
        text = f"{say(lang, 'sold_out', name=spec.name_in(lang))}\n{spec.description_in(lang)}"
        return Reply(text.strip(), ((_cart_button(lang, cart), back),), edit=True)
    text = say(
        lang,
        "product",
        name=spec.name_in(lang),
        price=kes(spec.price),
        description=spec.description_in(lang),
    )
    text += "\n" + say(lang, "quantity", quantity=quantity, total=kes(quantity * spec.price))
    most = most_in_cart(spec)
    if quantity >= most:
        if most < MAX_QUANTITY:
            text += "\n" + say(lang, "stock_left", left=most, name=spec.name_in(lang))
        else:
            text += "\n" + say(lang, "quantity_cap", count=MAX_QUANTITY, name=spec.name_in(lang))
    # "−" at 1 cannot go lower: it offers to leave the product out (or remove it) instead.
    less = SetQuantity(spec.sku, quantity - 1) if quantity > 1 else DropProduct(spec.sku)
    more = min(most, quantity + 1)
    rows = (
        (Button("−", encode(less)), Button("+", encode(SetQuantity(spec.sku, more)))),
        (Button(say(lang, "btn_add"), encode(AddToCart(spec.sku, quantity))),),
        (_cart_button(lang, cart), back),
    )
    return Reply(text, rows, edit=True)


def cart_lines(lang: str, cart: Mapping[str, int], catalog: Mapping[str, ProductSpec]) -> str:
    return "\n".join(
        say(
            lang,
            "cart_line",
            quantity=qty,
            name=catalog[sku].name_in(lang),
            price=kes(catalog[sku].price),
            line_total=kes(qty * catalog[sku].price),
        )
        for sku, qty in cart.items()
        if sku in catalog
    )


def cart(
    lang: str, cart: Mapping[str, int], catalog: Mapping[str, ProductSpec], *, edit: bool = True
) -> Reply:
    if not cart:
        return Reply(say(lang, "cart_empty"), menu_buttons(lang), edit=edit)
    text = say(
        lang, "cart", lines=cart_lines(lang, cart, catalog), total=kes(cart_total(cart, catalog))
    )
    rows: list[tuple[Button, ...]] = [
        (
            # Each label names its product: WhatsApp shows these as one flat list.
            Button(f"− {catalog[sku].name_in(lang)}"[:24], encode(ChangeCart("dec", sku))),
            Button(f"+ {catalog[sku].name_in(lang)}"[:24], encode(ChangeCart("inc", sku))),
            Button(f"✕ {catalog[sku].name_in(lang)}"[:24], encode(ChangeCart("rm", sku))),
        )
        for sku in cart
        if sku in catalog
    ]
    rows.append((Button(say(lang, "btn_checkout"), encode(Checkout())),))
    rows.append(
        (
            Button(say(lang, "btn_menu"), encode(Menu())),
            Button(say(lang, "btn_empty"), encode(EmptyCart())),
        )
    )
    return Reply(text, tuple(rows), edit=edit)


def summary(lang: str, cart: Mapping[str, int], catalog: Mapping[str, ProductSpec]) -> Reply:
    text = say(
        lang, "summary", lines=cart_lines(lang, cart, catalog), total=kes(cart_total(cart, catalog))
    )
    rows = (
        (Button(say(lang, "btn_confirm"), encode(ConfirmOrder())),),
        (Button(say(lang, "btn_edit_cart"), encode(ShowCart())),),
    )
    return Reply(text, rows, edit=True)


def orders(lang: str, listed: Sequence[OrderRecord]) -> Reply:
    """/orders: one line per order; each order awaiting payment can be paid or cancelled
    from here, so none is left stranded. Menu always comes last."""
    if not listed:
        return Reply(say(lang, "orders_none"), menu_buttons(lang))
    lines = "\n".join(
        say(
            lang,
            "order_line",
            reference=o.reference,
            total=kes(o.total),
            # A paid order shows how far it got to the customer, once it is moving (one the
            # shop called off since says so instead).
            status=status_text(
                lang, o.fulfilment if o.fulfilment and o.status == OrderStatus.PAID else o.status
            ),
        )
        for o in listed
    )
    rows = [
        (
            Button(say(lang, "btn_pay_order", reference=o.reference), encode(OnOrder("pay", o.id))),
            Button(
                say(lang, "btn_cancel_this_order", reference=o.reference),
                encode(OnOrder("cancel", o.id)),
            ),
        )
        for o in listed
        if o.status == OrderStatus.AWAITING_PAYMENT
    ]
    return Reply(say(lang, "orders", lines=lines), (*rows, *menu_buttons(lang)))


def failed_payment_buttons(
    lang: str, order_id: int, *, paybill: bool = False
) -> tuple[tuple[Button, ...], ...]:
    rows = [
        (Button(say(lang, "btn_try_again"), encode(OnOrder("retry", order_id))),),
        (Button(say(lang, "btn_other_number"), encode(OnOrder("other", order_id))),),
    ]
    if paybill:
        # For what a new prompt cannot fix: no STK on the SIM, a phone that never answers.
        rows.append((Button(say(lang, "btn_paybill"), encode(OnOrder("paybill", order_id))),))
    rows.append((Button(say(lang, "btn_cancel_order"), encode(OnOrder("cancel", order_id))),))
    return tuple(rows)


def unconfirmed_payment_buttons(lang: str, order_id: int) -> tuple[tuple[Button, ...], ...]:
    """After an attempt nobody could confirm: paying again is possible, but named as such."""
    return (
        (Button(say(lang, "btn_pay_again"), encode(OnOrder("retry", order_id))),),
        (Button(say(lang, "btn_cancel_order"), encode(OnOrder("cancel", order_id))),),
    )


def search_results(
    lang: str,
    typed: str,
    found: Sequence[ProductSpec],
    cart: Mapping[str, int],
    quantity: int | None = None,
) -> Reply:
    """The products typed words found, as buttons (with the typed quantity, if any)."""
    bottom = (_cart_button(lang, cart), Button(say(lang, "btn_menu"), encode(Menu())))
    if not found:
        return Reply(say(lang, "search_none", typed=typed), (bottom,))
    count = max(1, min(MAX_QUANTITY, quantity)) if quantity else None
    rows = [
        (
            Button(
                product_label(lang, p),
                encode(SetQuantity(p.sku, count) if count else ShowProduct(p.sku)),
            ),
        )
        for p in found
    ]
    return Reply(say(lang, "search_results", typed=typed), (*rows, bottom))


def drop_offer(lang: str, spec: ProductSpec, cart: Mapping[str, int]) -> Reply:
    """ "−" at quantity 1: remove the product from the cart, or leave it out if not in it."""
    name = spec.name_in(lang)
    if spec.sku in cart:
        rows = (
            (
                Button(say(lang, "btn_remove"), encode(ChangeCart("rm", spec.sku))),
                Button(say(lang, "btn_keep"), encode(ShowProduct(spec.sku))),
            ),
        )
        return Reply(say(lang, "remove_offer", name=name), rows, edit=True)
    rows = (
        (
            Button(say(lang, "btn_leave_out"), encode(Category(spec.category))),
            Button(say(lang, "btn_add"), encode(AddToCart(spec.sku, 1))),
        ),
    )
    return Reply(say(lang, "leave_out_offer", name=name), rows, edit=True)
