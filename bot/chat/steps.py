"""The conversation's decisions: ``step(state, event, facts) -> Outcome``, with no I/O.

A step reads only its arguments and returns the chat's next state, the replies, and the
effects to carry out (``bot.chat.effects``). ``bot.chat.turn`` loads the facts and
writes the effects in one transaction; the steps can be tested with plain values.

This module routes and keeps the shop's browsing and cart screens; checking out and
paying are in ``bot.chat.checkout``.
"""

from __future__ import annotations

from dataclasses import replace

from bot.catalog import ProductSpec
from bot.chat import checkout, handover_steps, screens
from bot.chat.buttons import (
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
    SetQuantity,
    ShowCart,
    ShowProduct,
    encode,
)
from bot.chat.effects import CancelOrder, Outcome, SetLanguage
from bot.chat.events import (
    ChatEvent,
    Command,
    Pressed,
    SharedContact,
    SharedLocation,
    Typed,
    Unsupported,
)
from bot.chat.facts import Facts
from bot.chat.model import Button, ChatState, Reply, Step
from bot.chat.typed import TypedOrder, TypedQuantity, TypedSearch, read_typed
from bot.texts import kes, say, status_text

GREETINGS = frozenset(
    {"hi", "hello", "hey", "start", "menu", "habari", "jambo", "mambo", "sasa", "menyu", "niaje"}
)
SEARCH_WORDS = 3  # more words than this, matching nothing, is a sentence, not a search


def step(state: ChatState, event: ChatEvent, facts: Facts) -> Outcome:
    # Products taken off the catalog leave every saved cart.
    state = replace(state, cart={s: q for s, q in state.cart.items() if s in facts.catalog})
    state = handover_steps.leave_if_elsewhere(state, event)
    match event:
        case Unsupported():
            return Outcome(state, (Reply(say(facts.lang, "only_text"), _menu_row(facts)),))
        case SharedContact():
            return checkout.contact(state, event, facts)
        case SharedLocation():
            return handover_steps.address(state, event, facts)
        case Pressed(action=action):
            return _pressed(state, action, facts)
        case Command(name=name):
            return _command(state, name, facts)
        case Typed(text=text):
            if text.lower().strip("!.? ") in GREETINGS and state.step is not Step.AWAITING_PHONE:
                return _command(state, "/start", facts)  # WhatsApp customers just say hello
            if state.step is Step.AWAITING_PHONE and text:
                return checkout.typed_number(state, text, facts)
            if state.step is Step.AWAITING_ADDRESS:
                return handover_steps.address(state, event, facts)
            return _typed(state, text, facts)


def _menu_row(facts: Facts) -> tuple[tuple[Button, ...], ...]:
    return screens.menu_buttons(facts.lang)


# --- commands ------------------------------------------------------------------------------


def _command(state: ChatState, command: str, facts: Facts) -> Outcome:
    lang = facts.lang
    if command == "/start":
        state = replace(state, step=Step.BROWSING, picking=None)
        # One message, not two: WhatsApp allows about one message in six seconds per user.
        shown = checkout.menu(state, facts)
        text = f"{say(lang, 'welcome', shop=facts.shop.name_in(lang))}\n\n{shown.text}"
        return Outcome(state, (replace(shown, text=text),))
    if command == "/cart":
        return Outcome(state, (screens.cart(lang, state.cart, facts.catalog, edit=False),))
    if command == "/orders":
        return Outcome(state, (screens.orders(lang, facts.order_list),))
    if command == "/help":
        return Outcome(state, (Reply(say(lang, "help"), _menu_row(facts)),))
    if command == "/cancel":
        return _cancel_step(state, facts)
    if command == "/language":
        rows = (
            (
                Button("English", encode(ChooseLanguage("en"))),
                Button("Kiswahili", encode(ChooseLanguage("sw"))),
            ),
        )
        return Outcome(state, (Reply(say(lang, "choose_language"), rows),))
    return Outcome(state, (Reply(say(lang, "hint"), _menu_row(facts)),))


def _cancel_step(state: ChatState, facts: Facts) -> Outcome:
    """/cancel: leaving the phone step drops its order (unless a payment is under way),
    and the reply says which of the two happened."""
    lang = facts.lang
    order = None
    if state.step is Step.AWAITING_PHONE and state.order_id is not None:
        order = facts.orders.get(state.order_id)
    state = replace(checkout.leave_phone_step(state), picking=None)
    if order is None:
        return Outcome(state, (Reply(say(lang, "cancelled_step"), _menu_row(facts)),))
    if order.cancellable:
        state = checkout.items_back_in_cart(state, order, facts)
        text = say(lang, "order_cancelled_to_cart", reference=order.reference)
        reply = Reply(text, screens.cart_and_menu_buttons(lang, state.cart))
        return Outcome(state, (reply,), (CancelOrder(order.id),))
    status = status_text(lang, order.status)
    text = say(lang, "cancel_kept_order", reference=order.reference, status=status)
    return Outcome(state, (Reply(text, _menu_row(facts)),))


# --- buttons -------------------------------------------------------------------------------


def _pressed(state: ChatState, action: Action | None, facts: Facts) -> Outcome:
    lang = facts.lang
    match action:
        case Menu(new=new):
            state = replace(state, picking=None)
            return Outcome(state, (checkout.menu(state, facts, edit=not new),))
        case Category(name=name):
            return Outcome(state, (screens.category(lang, facts.products, name, state.cart),))
        case ShowProduct() | SetQuantity() | AddToCart() | DropProduct():
            return _product(state, action, facts)
        case ShowCart() | ChangeCart() | EmptyCart():
            return _cart(state, action, facts)
        case Checkout():
            if not state.cart:
                return Outcome(state, (screens.cart(lang, state.cart, facts.catalog),))
            if over := checkout.over_limit(state, facts):
                return Outcome(state, (over,))
            return Outcome(state, (screens.summary(lang, state.cart, facts.catalog),))
        case ConfirmOrder():
            return handover_steps.confirm(state, facts)
        case ChooseHandover():
            return handover_steps.chosen(state, action, facts)
        case ChooseZone():
            return handover_steps.zone_chosen(state, action, facts)
        case ChoosePhone(answer=answer):
            return checkout.phone_choice(state, answer, facts)
        case OnOrder():
            return checkout.on_order(state, action, facts)
        case ChooseLanguage(language=new):
            reply = Reply(say(new, "language_set"), screens.menu_buttons(new))
            return Outcome(state, (reply,), (SetLanguage(new),))
        case None:
            # Buttons can be forged (any data may arrive): unknown ones get the menu.
            return Outcome(state, (checkout.menu(state, facts),))


def _product(
    state: ChatState, action: ShowProduct | SetQuantity | AddToCart | DropProduct, facts: Facts
) -> Outcome:
    lang = facts.lang
    spec = facts.catalog.get(action.sku)
    if spec is None:
        shown = checkout.menu(state, facts)
        text = f"{say(lang, 'product_gone')}\n\n{shown.text}"
        return Outcome(state, (replace(shown, text=text, edit=False),))
    if isinstance(action, DropProduct):
        return Outcome(state, (screens.drop_offer(lang, spec, state.cart),))
    wanted = 1 if isinstance(action, ShowProduct) else action.quantity
    quantity = max(1, min(screens.most_in_cart(spec), wanted))
    if not isinstance(action, AddToCart):
        state = replace(state, picking=(spec.sku, quantity))
        return Outcome(state, (screens.product(lang, spec, quantity, state.cart),))
    if state.picking != (spec.sku, quantity):
        # A second tap on the same "Add" (or a stale screen): already added once.
        return Outcome(state, (screens.cart(lang, state.cart, facts.catalog),))
    return _add(state, spec, quantity, facts)


def _add(state: ChatState, spec: ProductSpec, quantity: int, facts: Facts) -> Outcome:
    lang = facts.lang
    before = state.cart.get(spec.sku, 0)
    most = screens.most_in_cart(spec)
    state = replace(state, picking=None)
    if most == 0:
        text = say(lang, "sold_out", name=spec.name_in(lang))
        return Outcome(state, (Reply(text, screens.cart_and_menu_buttons(lang, state.cart)),))
    cart = {**state.cart, spec.sku: min(most, before + quantity)}
    state = replace(state, cart=cart)
    values = {
        "name": spec.name_in(lang),
        "total": kes(screens.cart_total(cart, facts.catalog)),
        "count": most,
    }
    added = cart[spec.sku] - before
    by_stock = most < screens.MAX_QUANTITY  # what is left stops it, not the per-order cap
    # What "Add to cart" did: never a count that was not added (a cap stops it).
    if added == quantity:
        text = say(lang, "added", quantity=added, **values)
    elif added == 0:
        text = say(lang, "nothing_added_stock" if by_stock else "nothing_added", **values)
    else:
        text = say(lang, "added_all_left" if by_stock else "added_capped", quantity=added, **values)
    rows = (
        (Button(say(lang, "btn_checkout"), encode(Checkout())),),
        (
            Button(say(lang, "btn_cart"), encode(ShowCart())),
            Button(say(lang, "btn_menu"), encode(Menu())),
        ),
    )
    return Outcome(state, (Reply(text, rows, edit=True),))


def _typed(state: ChatState, text: str, facts: Facts) -> Outcome:
    """Text while shopping: a quantity for the product on screen ("3"), an order ("2
    maziwa"), or words to find products by ("sukari")."""
    lang = facts.lang
    match read_typed(text, facts.products):
        case TypedQuantity(quantity=quantity) if state.picking is not None:
            return _product(state, SetQuantity(state.picking[0], quantity), facts)
        case TypedQuantity():
            return Outcome(state, (Reply(say(lang, "quantity_needs_product"), _menu_row(facts)),))
        case TypedOrder(sku=sku, quantity=quantity):
            quantity = max(1, min(screens.MAX_QUANTITY, quantity))
            return _add(state, facts.catalog[sku], quantity, facts)
        case TypedSearch(skus=()) if len(text.split()) > SEARCH_WORDS:
            # A sentence, not a search: "no product matches" would answer the wrong thing.
            return Outcome(state, (Reply(say(lang, "hint"), _menu_row(facts)),))
        case TypedSearch(skus=skus, quantity=quantity):
            found = [facts.catalog[sku] for sku in skus]
            return Outcome(
                state, (screens.search_results(lang, text, found, state.cart, quantity),)
            )
        case None:
            return Outcome(state, (Reply(say(lang, "hint"), _menu_row(facts)),))


def _cart(state: ChatState, action: ShowCart | ChangeCart | EmptyCart, facts: Facts) -> Outcome:
    cart = dict(state.cart)
    capped = False
    if isinstance(action, EmptyCart):
        cart.clear()
    elif isinstance(action, ChangeCart) and action.sku in cart:
        sku = action.sku
        if action.change == "inc":
            most = screens.most_in_cart(facts.catalog[sku])
            capped = cart[sku] >= most
            cart[sku] = max(1, min(most, cart[sku] + 1))
        elif action.change == "dec":
            cart[sku] -= 1
        if action.change == "rm" or cart[sku] < 1:
            del cart[sku]
    state = replace(state, cart=cart)
    reply = screens.cart(facts.lang, cart, facts.catalog)
    if capped and isinstance(action, ChangeCart):
        spec = facts.catalog[action.sku]
        most, name = screens.most_in_cart(spec), spec.name_in(facts.lang)
        if most < screens.MAX_QUANTITY:
            cap = say(facts.lang, "stock_left", left=most, name=name)
        else:
            cap = say(facts.lang, "quantity_cap", count=screens.MAX_QUANTITY, name=name)
        reply = replace(reply, text=f"{cap}\n\n{reply.text}")
    return Outcome(state, (reply,))
