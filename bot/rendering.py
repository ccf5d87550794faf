"""The words of every outbox message, by kind: a pure table, no I/O.

Customer messages are in the customer's language; merchant messages in English. Each
carries its WhatsApp template parameters too, so that every kind can still be delivered
outside WhatsApp's 24-hour window (template parameters are single lines).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.chat import screens
from bot.chat.model import Button, Reply
from bot.fulfilment import Fulfilment
from bot.handover import Handover, for_merchant
from bot.merchant import move_command
from bot.texts import kes, reason_text, say, status_text
from payments.phone import mask_msisdn
from payments.settlement import MessageKind
from storage.orders import OrderHandover

Payload = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Rendered:
    """An outbox message's words, and the same facts as a platform template's parameters
    (single lines), for a channel that cannot always send free-form text."""

    reply: Reply
    parameters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CustomerFacts:
    """What a customer message needs besides its payload."""

    lang: str
    lines: str  # the order's item lines
    order_id: int
    order_status: str
    tag: str  # the message to edit in place ("check your phone"), by its tag
    paybill: str | None  # the Paybill number when the Paybill fallback is on


def _about_the_payment(
    f: CustomerFacts, text: str, buttons: tuple[tuple[Button, ...], ...], *parameters: str
) -> Rendered:
    """A message about one payment: it replaces that payment's "check your phone" (by tag)."""
    return Rendered(Reply(text, buttons, tag=f.tag), parameters)


def _paid(p: Payload, f: CustomerFacts) -> Rendered:
    reference = p["order_reference"]
    receipt = p.get("receipt") or say(f.lang, "paid_receipt_pending")
    amount = kes(p["paid_amount"])
    text = say(f.lang, "paid", amount=amount, reference=reference, receipt=receipt, lines=f.lines)
    # The receipt stays in the chat: Menu sends the menu below it.
    return _about_the_payment(
        f, text, screens.menu_below_buttons(f.lang), reference, amount, receipt
    )


def _failed(p: Payload, f: CustomerFacts) -> Rendered:
    reference = p["order_reference"]
    reason = reason_text(f.lang, str(p.get("reason", "")))
    text = say(f.lang, "failed", reference=reference, reason=reason)
    # Buttons only while the order can still be paid (not after another attempt paid it).
    payable = f.order_status == "awaiting_payment"
    buttons = screens.failed_payment_buttons(f.lang, f.order_id, paybill=f.paybill is not None)
    return _about_the_payment(
        f, text, buttons if payable else screens.menu_below_buttons(f.lang), reference, reason
    )


def _under_review(p: Payload, f: CustomerFacts) -> Rendered:
    reference, amount = p["order_reference"], kes(p["paid_amount"])
    text = say(f.lang, "under_review", amount=amount, reference=reference)
    return _about_the_payment(f, text, screens.menu_below_buttons(f.lang), reference, amount)


def _unconfirmed(p: Payload, f: CustomerFacts) -> Rendered:
    reference, amount = p["order_reference"], kes(p["amount"])
    text = say(f.lang, "unconfirmed", amount=amount, reference=reference)
    payable = f.order_status == "awaiting_payment"
    buttons = screens.unconfirmed_payment_buttons(f.lang, f.order_id)
    return _about_the_payment(
        f, text, buttons if payable else screens.menu_below_buttons(f.lang), reference, amount
    )


def _checking(p: Payload, f: CustomerFacts) -> Rendered:
    reference, amount = p["order_reference"], kes(p["amount"])
    text = say(f.lang, "checking", amount=amount, reference=reference)
    return _about_the_payment(f, text, screens.menu_below_buttons(f.lang), reference, amount)


def _resolved(p: Payload, f: CustomerFacts) -> Rendered:
    reference = p["order_reference"]
    outcome = say(f.lang, f"resolved_{p['action']}", amount=kes(p.get("paid_amount") or 0))
    note = str(p.get("note") or "")
    text = say(f.lang, "resolved", reference=reference, outcome=outcome)
    if note:
        text = f"{text}\n{say(f.lang, 'resolved_note', note=note)}"
    return Rendered(
        Reply(
            text,
            screens.menu_below_buttons(f.lang),
        ),
        (reference, outcome),
    )


def _progress(p: Payload, f: CustomerFacts) -> Rendered:
    reference, step = p["order_reference"], str(p["fulfilment"])
    text = say(f.lang, f"progress_{step}", reference=reference)
    # A message worth keeping (where the order is): Menu opens the shop below it.
    reply = Reply(text, screens.menu_below_buttons(f.lang))
    return Rendered(reply, (reference, status_text(f.lang, step)))


def _cancelled_by_shop(p: Payload, f: CustomerFacts) -> Rendered:
    reference, amount = p["order_reference"], kes(p["amount"])
    reason = " ".join(str(p["reason"]).split())  # a template parameter is one line
    text = say(f.lang, "shop_cancelled", reference=reference, amount=amount, note=reason)
    return Rendered(Reply(text, screens.menu_below_buttons(f.lang)), (reference, amount, reason))


def _refund_sent(p: Payload, f: CustomerFacts) -> Rendered:
    reference, amount, note = p["order_reference"], kes(p["amount"]), str(p.get("note") or "")
    text = say(f.lang, "refund_sent", reference=reference, amount=amount)
    if note:
        text = f"{text}\n{say(f.lang, 'resolved_note', note=note)}"
    return Rendered(Reply(text, screens.menu_below_buttons(f.lang)), (reference, amount))


def render_customer(kind: MessageKind, payload: Payload, facts: CustomerFacts) -> Rendered:
    """The customer's message, in their language (its template parameters too)."""
    return CUSTOMER_RENDERERS[kind](payload, facts)


CUSTOMER_RENDERERS: dict[MessageKind, Callable[[Payload, CustomerFacts], Rendered]] = {
    MessageKind.PAYMENT_PAID: _paid,
    MessageKind.PAYMENT_FAILED: _failed,
    MessageKind.PAYMENT_UNDER_REVIEW: _under_review,
    MessageKind.PAYMENT_UNCONFIRMED: _unconfirmed,
    MessageKind.PAYMENT_CHECKING: _checking,
    MessageKind.ORDER_RESOLVED: _resolved,
    MessageKind.ORDER_PROGRESS: _progress,
    MessageKind.ORDER_CANCELLED_BY_SHOP: _cancelled_by_shop,
    MessageKind.ORDER_REFUNDED: _refund_sent,
}


@dataclass(frozen=True, slots=True)
class MerchantFacts:
    lines: str  # the order's item lines ("" without an order)
    customer: str  # the customer's name ("-" when unknown)
    waiting: int  # paid orders not moved on yet (fulfilment NULL), the new one included
    button_room: int  # how many buttons the merchant's chat shows (0: none can be pressed)
    handover: OrderHandover | None = None  # delivery or pickup, when the shop asks


# The steps a paid order's buttons offer, in the order they happen. Where only three fit
# (WhatsApp's reply buttons), "On its way" is left to /out REF: Ready, Delivered and
# Collected still take an order from paid to done, whether it is delivered or collected.
_MOVES: tuple[Fulfilment, ...] = (
    Fulfilment.READY,
    Fulfilment.ON_ITS_WAY,
    Fulfilment.DELIVERED,
    Fulfilment.COLLECTED,
)


# When the customer chose, only the steps that fit the choice (bot.fulfilment refuses
# the others): they fit WhatsApp's three buttons.
_MOVES_FOR: dict[str, tuple[Fulfilment, ...]] = {
    Handover.PICKUP: (Fulfilment.READY, Fulfilment.COLLECTED),
    Handover.DELIVERY: (Fulfilment.READY, Fulfilment.ON_ITS_WAY, Fulfilment.DELIVERED),
}


def _move_buttons(reference: str, room: int, handover: OrderHandover | None) -> tuple[Button, ...]:
    moves = _MOVES_FOR[handover.way] if handover is not None else _MOVES
    if len(moves) > room:
        moves = tuple(m for m in _MOVES if m is not Fulfilment.ON_ITS_WAY)
    if len(moves) > room:
        return ()  # a chat that cannot show them (the terminal demo): commands still work
    return tuple(Button(say("en", f"m_button_{m}"), move_command(m, reference)) for m in moves)


def _order_paid(p: Payload, f: MerchantFacts) -> Rendered:
    reference, amount = p["order_reference"], kes(p["paid_amount"])
    receipt = p.get("receipt") or "pending"
    phone = p.get("masked_phone") or mask_msisdn(None)
    waiting = str(f.waiting)
    text = say(
        "en",
        "m_paid",
        reference=reference,
        amount=amount,
        lines=f.lines,
        receipt=receipt,
        customer=f.customer,
        phone=phone,
    )
    text = f"{text}\n{say('en', 'm_paid_waiting', count=waiting)}"
    if where := for_merchant(f.handover):
        text = f"{text}\n{where}"
    buttons = _move_buttons(reference, f.button_room, f.handover)
    if buttons and f.handover is None and len(buttons) < len(_MOVES):
        text = f"{text}\n{say('en', 'm_paid_by_command', reference=reference)}"
    rows = tuple(buttons[i : i + 2] for i in range(0, len(buttons), 2))  # two a row
    # Outside WhatsApp's window the template says how many paid orders wait.
    return Rendered(Reply(text, rows), (reference, amount, receipt, f.customer, waiting))


def _needs_review(p: Payload, f: MerchantFacts) -> Rendered:
    reference, amount = p["order_reference"], kes(p["paid_amount"])
    receipt = p.get("receipt") or "pending"
    why = say("en", f"why_{p.get('why', 'amount_mismatch')}")
    text = say(
        "en",
        "m_review",
        reference=reference,
        why=why,
        amount=amount,
        total=kes(p["order_total"]),
        receipt=receipt,
        customer=f.customer,
        phone=p.get("masked_phone") or mask_msisdn(None),
    )
    return Rendered(Reply(text), (reference, why, amount, receipt))


def _check(p: Payload, f: MerchantFacts) -> Rendered:
    reference, amount = p["order_reference"], kes(p["amount"])
    phone = p.get("masked_phone") or mask_msisdn(None)
    text = say(
        "en", "m_check", reference=reference, amount=amount, phone=phone, customer=f.customer
    )
    return Rendered(Reply(text), (reference, amount, phone))


def _not_confirmed(p: Payload, f: MerchantFacts) -> Rendered:
    reference, amount = p["order_reference"], kes(p["amount"])
    phone, answer = p.get("masked_phone") or mask_msisdn(None), str(p.get("answer", ""))
    text = say(
        "en",
        "m_not_confirmed",
        reference=reference,
        amount=amount,
        phone=phone,
        customer=f.customer,
        answer=answer,
    )
    return Rendered(Reply(text), (reference, amount, phone, answer))


def _unmatched(p: Payload, f: MerchantFacts) -> Rendered:
    amount, phone, receipt = kes(p["paid_amount"]), p["masked_phone"], p["receipt"]
    account = str(p.get("account") or "")
    why = say("en", f"unmatched_{p.get('reason', 'no_attempt')}", account=account)
    text = say("en", "m_unmatched", amount=amount, phone=phone, receipt=receipt, why=why)
    return Rendered(Reply(text), (amount, phone, receipt))


def _low_stock(p: Payload, f: MerchantFacts) -> Rendered:
    name, left, low = str(p["name"]), str(p["left"]), str(p["low"])
    text = say("en", "m_low_stock", name=name, sku=p["sku"], left=left, low=low)
    return Rendered(Reply(text), (name, left))


def _daily_summary(p: Payload, f: MerchantFacts) -> Rendered:
    day, count, total = str(p["date"]), str(p["count"]), kes(p["total"])
    text = say("en", "m_daily_summary", lines=p["report"])
    return Rendered(Reply(text), (day, count, total))


MERCHANT_RENDERERS: dict[MessageKind, Callable[[Payload, MerchantFacts], Rendered]] = {
    MessageKind.ORDER_PAID: _order_paid,
    MessageKind.PAYMENT_NEEDS_REVIEW: _needs_review,
    MessageKind.PAYMENT_CHECK: _check,
    MessageKind.PAYMENT_NOT_CONFIRMED: _not_confirmed,
    MessageKind.UNMATCHED_PAYMENT: _unmatched,
    MessageKind.LOW_STOCK: _low_stock,
    MessageKind.DAILY_SUMMARY: _daily_summary,
}

# Kinds that need the order (and its customer) to be rendered.
ORDERLESS_KINDS = frozenset(
    {MessageKind.UNMATCHED_PAYMENT, MessageKind.LOW_STOCK, MessageKind.DAILY_SUMMARY}
)

if set(CUSTOMER_RENDERERS) | set(MERCHANT_RENDERERS) != set(MessageKind):
    raise RuntimeError("every MessageKind needs a renderer")
