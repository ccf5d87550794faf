"""Checking out and paying, as pure steps: confirming the order, choosing the number,
and the buttons about one order (try again, another number, Paybill, cancel, pay).

Starting a payment is an effect (``StartPayment``); what to say once the attempt is
refused (``not_started``) or once Daraja answered the push (``after_push``) is decided
here too, from plain values.
"""

from __future__ import annotations

from dataclasses import replace

from bot.chat import screens
from bot.chat.buttons import ChoosePhone, OnOrder, PhoneAnswer, encode
from bot.chat.effects import CancelOrder, CreateOrder, Outcome, StartPayment
from bot.chat.events import SharedContact
from bot.chat.facts import Facts, OrderView
from bot.chat.model import Button, ChatState, Reply, Step, payment_tag
from bot.handover import DELIVERY_SKU
from bot.texts import kes, minutes, reason_text, say, status_text
from payments.daraja_client import MAX_AMOUNT
from payments.phone import (
    InvalidPhoneNumber,
    MpesaNumber,
    display_msisdn,
    mask_msisdn,
    normalize_msisdn,
)
from payments.result_codes import FailureReason
from payments.service import PaymentInProgress, PaymentNotStarted, PaymentStarted, TooManyPrompts
from payments.states import OrderStatus, PaymentStatus
from storage.orders import NewOrderItem, OrderHandover


def over_limit(state: ChatState, facts: Facts, fee: int = 0) -> Reply | None:
    total = screens.cart_total(state.cart, facts.catalog) + fee
    if total <= MAX_AMOUNT:
        return None
    text = say(facts.lang, "over_limit", limit=kes(MAX_AMOUNT), total=kes(total))
    return Reply(text, screens.cart(facts.lang, state.cart, facts.catalog).buttons)


def cart_refused(state: ChatState, facts: Facts, fee: int = 0) -> Outcome | None:
    """Why the cart cannot become an order now (over M-Pesa's limit, or products ran
    out meanwhile): the answer to give instead; None when it can."""
    if over := over_limit(state, facts, fee):
        return Outcome(state, (over,))
    return _ran_out(state, facts)


def confirm(
    state: ChatState,
    facts: Facts,
    handover: OrderHandover | None = None,
    *,
    fee: int = 0,
    note: str = "",
) -> Outcome:
    """The cart becomes the order, delivered or picked up as ``handover`` says (a
    delivery ``fee`` is one more line), and the payment number is asked for."""
    if not state.cart:
        return _confirmed_already(state, facts)
    if refused := cart_refused(state, facts, fee):
        return refused
    items = tuple(
        NewOrderItem(sku, facts.catalog[sku].name, facts.catalog[sku].price, quantity)
        for sku, quantity in state.cart.items()
    )
    if fee and handover is not None:
        items += (NewOrderItem(DELIVERY_SKU, f"Delivery ({handover.zone})", fee, 1),)
    total = sum(item.line_total for item in items)
    # The cart becomes the order; CreateOrder puts the new order's id in the state.
    left = state.step
    state = replace(
        state, cart={}, step=Step.AWAITING_PHONE, order_id=None, typed_msisdn=None, zone=None
    )
    question = phone_question(facts, total)
    if note:
        question = replace(question, text=f"{note}\n\n{question.text}")
    if left is Step.AWAITING_ADDRESS and question.ask_contact is None:
        question = replace(question, close_keyboard=True)  # the "send my location" one
    return Outcome(state, (question,), (CreateOrder(items, handover),))


def _ran_out(state: ChatState, facts: Facts) -> Outcome | None:
    """Products that sold out, or ran low, while the customer shopped: the cart keeps
    what is left of them, and the customer looks again before confirming."""
    lang = facts.lang
    cart, lines = dict(state.cart), []
    for sku, quantity in state.cart.items():
        most = screens.most_in_cart(facts.catalog[sku])
        if quantity > most:
            lines.append(say(lang, "ran_out", name=facts.catalog[sku].name_in(lang), left=most))
            cart[sku] = most
    if not lines:
        return None
    state = replace(state, cart={sku: q for sku, q in cart.items() if q > 0})
    shown = screens.cart(lang, state.cart, facts.catalog, edit=False)
    text = "\n".join([*lines, say(lang, "cart_updated"), "", shown.text])
    return Outcome(state, (replace(shown, text=text),))


def _confirmed_already(state: ChatState, facts: Facts) -> Outcome:
    """A second tap on "Confirm order" (the cart became the order): the order's current
    step again, not "your cart is empty"."""
    if state.step is Step.AWAITING_PHONE:
        order, state = current_order(state, facts)
        if order is not None:
            return Outcome(state, (phone_question(facts, order.total),))
    reply = _waiting_reply(facts) or screens.cart(facts.lang, {}, facts.catalog)
    return Outcome(state, (reply,))


def menu(state: ChatState, facts: Facts, *, edit: bool = False) -> Reply:
    return screens.menu(facts.lang, facts.products, state.cart, edit=edit)


def _waiting_reply(facts: Facts) -> Reply | None:
    """ "Waiting for your PIN", when one of the customer's payment prompts is open."""
    if facts.waiting_for_pin is None:
        return None
    text = say(facts.lang, "payment_in_progress", reference=facts.waiting_for_pin)
    return Reply(text, screens.menu_buttons(facts.lang))


def current_order(state: ChatState, facts: Facts) -> tuple[OrderView | None, ChatState]:
    """The order of the phone step, while it can still be paid; else the step is left."""
    order = facts.orders.get(state.order_id) if state.order_id is not None else None
    if order is None or not order.payable:
        return None, leave_phone_step(state)
    return order, state


def leave_phone_step(state: ChatState) -> ChatState:
    """Back to browsing; a typed number awaiting its "yes" goes too, so that a stale
    "Yes, pay" cannot pay another order from it."""
    return replace(state, step=Step.BROWSING, order_id=None, typed_msisdn=None)


def at_phone_step(state: ChatState, order: OrderView) -> ChatState:
    return replace(state, step=Step.AWAITING_PHONE, order_id=order.id, typed_msisdn=None)


def ask_phone(facts: Facts, total: int) -> Reply:
    text = say(facts.lang, "ask_phone", total=kes(total))
    return Reply(text, ask_contact=say(facts.lang, "btn_share_number"))


def phone_question(facts: Facts, total: int) -> Reply:
    """Pay from the saved number (with the amount, as for a typed one), or ask for one."""
    if facts.saved_msisdn is None:
        return ask_phone(facts, total)
    lang = facts.lang
    text = say(lang, "confirm_phone", total=kes(total), phone=mask_msisdn(facts.saved_msisdn))
    return Reply(text, _yes_or_other(lang, "yes"))


def _yes_or_other(lang: str, answer: PhoneAnswer) -> tuple[tuple[Button, ...], ...]:
    return (
        (
            Button(say(lang, "btn_yes_pay"), encode(ChoosePhone(answer))),
            Button(say(lang, "btn_other_number"), encode(ChoosePhone("other"))),
        ),
    )


def phone_choice(state: ChatState, answer: PhoneAnswer, facts: Facts) -> Outcome:
    order, state = current_order(state, facts)
    if order is None:
        # A stale "Yes, pay" (the prompt went out already): say what it is waiting for.
        return Outcome(state, (_waiting_reply(facts) or menu(state, facts),))
    if answer == "yes" and facts.saved_msisdn:
        return pay(state, facts, order, facts.saved_msisdn)
    if answer == "typed" and state.typed_msisdn:
        number = state.typed_msisdn
        return pay(replace(state, typed_msisdn=None), facts, order, number, warn=False)
    state = replace(state, typed_msisdn=None)
    return Outcome(state, (ask_phone(facts, order.total),))


def contact(state: ChatState, event: SharedContact, facts: Facts) -> Outcome:
    if state.step is not Step.AWAITING_PHONE:
        return Outcome(state, (Reply(say(facts.lang, "hint"), screens.menu_buttons(facts.lang)),))
    if not event.own:
        share = say(facts.lang, "btn_share_number")
        return Outcome(state, (Reply(say(facts.lang, "contact_not_own"), ask_contact=share),))
    return typed_number(state, event.phone, facts, typed=False)


def typed_number(state: ChatState, text: str, facts: Facts, *, typed: bool = True) -> Outcome:
    lang = facts.lang
    order, state = current_order(state, facts)
    if order is None:
        return Outcome(state, (menu(state, facts),))
    try:
        number = normalize_msisdn(text)
    except InvalidPhoneNumber as exc:
        reply = Reply(say(lang, f"phone_{exc.problem}"), ask_contact=say(lang, "btn_share_number"))
        return Outcome(state, (reply,))
    if not typed:  # the platform vouches that a shared contact is the sender's own
        return pay(state, facts, order, number.msisdn)
    # A typo would send a PIN prompt to a stranger: the customer confirms first.
    state = replace(state, typed_msisdn=number.msisdn)
    phone = display_msisdn(number.msisdn)
    text = say(lang, "confirm_typed_phone", total=kes(order.total), phone=phone)
    if warning := network_warning(lang, number):
        text = f"{warning}\n\n{text}"
    return Outcome(state, (Reply(text, _yes_or_other(lang, "typed"), close_keyboard=True),))


def pay(
    state: ChatState, facts: Facts, order: OrderView, msisdn: str, *, warn: bool = True
) -> Outcome:
    """Push the prompt for ``order``: the replies come once Daraja answered (after_push)."""
    state = leave_phone_step(state)
    if order.paying:
        return Outcome(state, (not_started(facts, order, PaymentInProgress()),))
    return Outcome(state, (), (StartPayment(order.id, msisdn, warn),))


def network_warning(lang: str, number: MpesaNumber) -> str | None:
    """Number portability makes the prefix a hint only: a warning, never a refusal."""
    if number.is_safaricom_prefix:
        return None
    network = number.carrier or say(lang, "another_network")
    return say(lang, "phone_other_network", phone=display_msisdn(number.msisdn), network=network)


def not_started(facts: Facts, order: OrderView | None, exc: PaymentNotStarted) -> Reply:
    """No prompt was sent: why, and what the customer can do now."""
    lang = facts.lang
    reference = order.reference if order else ""
    if isinstance(exc, PaymentInProgress):
        text = say(lang, "payment_in_progress", reference=reference)
        return Reply(text, screens.menu_buttons(lang))
    if isinstance(exc, TooManyPrompts) and order is not None:
        text = say(lang, f"limit_{exc.hit.kind}", wait=minutes(lang, exc.minutes))
        # No dead end: another number, the Paybill, or cancelling stay open.
        paybill = facts.shop.paybill is not None
        return Reply(text, screens.failed_payment_buttons(lang, order.id, paybill=paybill))
    status = status_text(lang, order.status) if order else ""
    text = say(lang, "order_not_payable", reference=reference, status=status)
    return Reply(text, screens.menu_buttons(lang))


def ran_out_for_order(facts: Facts, order: OrderView | None, sku: str) -> Reply:
    """The order's stock was given back (it waited too long) and is gone now: no prompt.
    Cancelling puts the rest back in the cart."""
    lang = facts.lang
    spec = facts.catalog.get(sku)
    name = spec.name_in(lang) if spec else sku
    reference = order.reference if order else ""
    text = say(lang, "order_ran_out", name=name, reference=reference)
    rows: list[tuple[Button, ...]] = []
    if order is not None:
        rows.append((Button(say(lang, "btn_cancel_order"), encode(OnOrder("cancel", order.id))),))
    return Reply(text, (*rows, *screens.menu_buttons(lang)))


def after_push(
    facts: Facts, order_id: int, started: PaymentStarted | FailureReason, *, warn: bool
) -> Reply:
    """What to say once Daraja answered the push: check your phone, or why it failed."""
    lang = facts.lang
    if isinstance(started, FailureReason):
        text = say(lang, "payment_refused", reason=reason_text(lang, started))
        paybill = facts.shop.paybill is not None
        return Reply(text, screens.failed_payment_buttons(lang, order_id, paybill=paybill))
    key = "check_phone" if started.status is PaymentStatus.PENDING else "push_unknown"
    text = say(lang, key, total=kes(started.amount), shop=facts.shop.name_in(lang))
    number = normalize_msisdn(started.msisdn)
    if warn and (warning := network_warning(lang, number)):
        text = f"{warning}\n\n{text}"
    return Reply(text, tag=payment_tag(started.payment_id), close_keyboard=True)


def items_back_in_cart(state: ChatState, order: OrderView, facts: Facts) -> ChatState:
    """A cancelled order's items go back into the cart (a product taken off the catalog
    stays out), up to the quantity cap."""
    cart = dict(state.cart)
    for item in order.items:
        if item.sku in facts.catalog:
            cart[item.sku] = min(screens.MAX_QUANTITY, cart.get(item.sku, 0) + item.quantity)
    return replace(state, cart=cart)


def on_order(state: ChatState, action: OnOrder, facts: Facts) -> Outcome:
    """A button about one order: after a failed payment, or from /orders."""
    lang = facts.lang
    order = facts.orders.get(action.order_id)
    if order is None:
        return Outcome(state, (Reply(say(lang, "not_your_order")),))
    if action.verb == "cancel":
        if not order.cancellable:
            text = say(lang, "cannot_cancel", reference=order.reference)
            return Outcome(state, (Reply(text, screens.menu_buttons(lang), edit=True),))
        # As /cancel does: the order's items go back into the cart.
        state = items_back_in_cart(state, order, facts)
        if state.order_id == order.id:
            state = leave_phone_step(state)
        text = say(lang, "order_cancelled_to_cart", reference=order.reference)
        reply = Reply(text, screens.cart_and_menu_buttons(lang, state.cart), edit=True)
        return Outcome(state, (reply,), (CancelOrder(order.id),))
    if order.status is OrderStatus.CANCELLED:
        text = say(lang, "retry_cancelled", reference=order.reference)
        return Outcome(state, (Reply(text, screens.cart_and_menu_buttons(lang, state.cart)),))
    if not order.payable:
        status = status_text(lang, order.status)
        line = say(
            lang, "order_line", reference=order.reference, total=kes(order.total), status=status
        )
        return Outcome(state, (Reply(line, screens.menu_buttons(lang)),))
    if order.paying:
        # Its M-Pesa prompt is open: say so now, rather than ask for a number to push to.
        return Outcome(state, (not_started(facts, order, PaymentInProgress()),))
    if action.verb == "paybill" and facts.shop.paybill is not None:
        # Paying by hand: the order's reference is the account number; the C2B
        # confirmation pays the order like a callback would, and the result comes here.
        state = leave_phone_step(state)
        text = say(
            lang,
            "paybill",
            paybill=facts.shop.paybill,
            reference=order.reference,
            amount=kes(order.total),
        )
        cancel = encode(OnOrder("cancel", order.id))
        return Outcome(state, (Reply(text, ((Button(say(lang, "btn_cancel_order"), cancel),),)),))
    state = at_phone_step(state, order)
    if action.verb == "pay":  # from /orders: resume the order at its phone question
        return Outcome(state, (phone_question(facts, order.total),))
    if action.verb == "retry" and facts.saved_msisdn:
        return pay(state, facts, order, facts.saved_msisdn)
    return Outcome(state, (ask_phone(facts, order.total),))
