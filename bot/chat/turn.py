"""One chat event, one transaction: load the facts, run the step, write its effects.

Reading the facts and writing the effects in the same transaction means the step decided
on what is still true when its effects land. Where a fact changed anyway (a callback
paid the order between our read and our write on PostgreSQL), the effect raises
``StaleFacts`` and the caller runs the event again on fresh facts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection, exists, select, text

from bot.catalog import ProductSpec, active_products, with_translations
from bot.chat import checkout
from bot.chat.buttons import ChoosePhone, ConfirmOrder, OnOrder
from bot.chat.effects import CancelOrder, CreateOrder, Effect, SetLanguage, StartPayment
from bot.chat.events import ChatEvent, Command, Pressed
from bot.chat.facts import Facts, OrderView, Shop
from bot.chat.model import ChatState, Inbound, Reply
from bot.chat.steps import step
from bot.handover import DELIVERY_SKU
from payments import ledger
from payments.daraja_client import refuses_the_number
from payments.outbox import insert_outbox
from payments.service import Attempt, PaymentNotStarted
from payments.settlement import MessageKind, OutboxMessage
from payments.states import OrderStatus, PaymentStatus
from storage import stock
from storage.orders import (
    CustomerRecord,
    OrderRecord,
    create_order,
    get_or_create_customer,
    get_order,
    get_order_items,
    load_chat_state,
    recent_orders,
    save_chat_state,
    update_customer,
)
from storage.schema import OPEN_PAYMENT_STATUSES, orders, payments

OpenAttempt = Callable[[Connection, int, str, datetime], Attempt]


class StaleFacts(Exception):
    """An effect found the database no longer as the step saw it: decide again."""


@dataclass(frozen=True, slots=True)
class PushLater:
    """A payment attempt opened in the turn: the prompt goes out after the commit."""

    attempt: Attempt
    order_id: int
    warn_network: bool
    facts: Facts  # to word the answer in


@dataclass(frozen=True, slots=True)
class Turn:
    replies: tuple[Reply, ...]
    push: PushLater | None = None


def take_turn(
    conn: Connection,
    inbound: Inbound,
    event: ChatEvent,
    now: datetime,
    shop: Shop,
    configured: Sequence[ProductSpec],
    open_attempt: OpenAttempt,
    hold_for: timedelta,
) -> Turn:
    channel, chat_id = inbound.channel, inbound.chat_id
    _one_turn_per_chat(conn, channel, chat_id)
    customer = get_or_create_customer(conn, channel, chat_id, inbound.user_name, now)
    # Writing to us opens WhatsApp's 24-hour window, and means the bot is not blocked.
    update_customer(conn, customer.id, last_inbound_at=now, blocked_at=None)
    saved = load_chat_state(conn, channel, chat_id)
    before = ChatState.from_json(saved) if saved else ChatState()
    facts = load_facts(conn, customer, before, event, shop, configured)
    outcome = step(before, event, facts)
    state, replies, push = outcome.state, list(outcome.replies), None
    for effect in outcome.effects:
        state, reply, push_now = _carry_out(
            conn, effect, customer, state, facts, open_attempt, now + hold_for, now
        )
        replies.extend(reply)
        push = push_now or push
    if state != before or saved is None:
        save_chat_state(conn, channel, chat_id, state.to_json(), now)
    return Turn(tuple(replies), push)


# Held until the turn's transaction ends. The key is a hash (the chat id, on WhatsApp a
# phone number, is not stored in clear anywhere, pg_locks included).
_CHAT_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def _one_turn_per_chat(conn: Connection, channel: str, chat_id: str) -> None:
    """On PostgreSQL, wait for any other process's turn in this chat to commit, so that
    this one reads the state that turn left (one process keeps an in-memory lock per
    chat as well; SQLite has one writer anyway)."""
    if conn.dialect.name == "postgresql":
        key = hashlib.sha256(f"{channel}:{chat_id}".encode()).hexdigest()
        conn.execute(_CHAT_LOCK, {"key": f"chat:{key}"})


def _carry_out(
    conn: Connection,
    effect: Effect,
    customer: CustomerRecord,
    state: ChatState,
    facts: Facts,
    open_attempt: OpenAttempt,
    hold_until: datetime,
    now: datetime,
) -> tuple[ChatState, tuple[Reply, ...], PushLater | None]:
    match effect:
        case CreateOrder(items=items, handover=handover):
            order = create_order(conn, customer.id, list(items), now, handover)
            try:
                taken = ((i.sku, i.quantity) for i in items if i.sku != DELIVERY_SKU)
                crossings = stock.hold(conn, order.id, taken, hold_until)
            except stock.OutOfStock as exc:
                # Another customer took it after our facts were read: decide again.
                raise StaleFacts(str(exc)) from exc
            insert_outbox(conn, [low_stock_alert(c, order.id) for c in crossings], now)
            return replace(state, order_id=order.id), (), None
        case CancelOrder(order_id=order_id):
            if not ledger.cancel_order(conn, order_id, now):
                raise StaleFacts(f"order {order_id} can no longer be cancelled")
            return state, (), None
        case SetLanguage(language=language):
            update_customer(conn, customer.id, language=language)
            return state, (), None
        case StartPayment(order_id=order_id, msisdn=msisdn, warn_network=warn):
            if msisdn != customer.msisdn:  # the number to offer next time
                update_customer(conn, customer.id, msisdn=msisdn)
            shown = facts.orders.get(order_id)
            try:
                # The order's stock is kept for as long as its prompt may be answered.
                crossings = stock.renew(conn, order_id, hold_until)
            except stock.OutOfStock as exc:
                return state, (checkout.ran_out_for_order(facts, shown, exc.sku),), None
            insert_outbox(conn, [low_stock_alert(c, order_id) for c in crossings], now)
            try:
                attempt = open_attempt(conn, order_id, msisdn, now)
            except PaymentNotStarted as exc:
                return state, (checkout.not_started(facts, shown, exc),), None
            return state, (), PushLater(attempt, order_id, warn, facts)


def low_stock_alert(crossing: stock.Crossing, order_id: int) -> OutboxMessage:
    """The merchant's "low stock" message, once per order that took the count down."""
    return OutboxMessage(
        MessageKind.LOW_STOCK,
        payment_id=None,
        order_id=None,
        customer_id=None,
        payload={
            "sku": crossing.sku,
            "name": crossing.name,
            "left": crossing.left,
            "low": crossing.low,
        },
        subject=f"stock:{crossing.sku}:order:{order_id}",
    )


# --- the facts -----------------------------------------------------------------------------


def load_facts(
    conn: Connection,
    customer: CustomerRecord,
    state: ChatState,
    event: ChatEvent,
    shop: Shop,
    configured: Sequence[ProductSpec],
) -> Facts:
    """What ``step`` may read for this event: only what it can need, to keep the
    common screens at a few statements."""
    catalog = {p.sku: p for p in with_translations(active_products(conn), configured)}
    action = event.action if isinstance(event, Pressed) else None
    wanted = {state.order_id} if state.order_id is not None else set()
    if isinstance(action, OnOrder):
        wanted.add(action.order_id)
    cancelling = event == Command("/cancel") or (
        isinstance(action, OnOrder) and action.verb == "cancel"
    )
    asks_for_pin = isinstance(action, ConfirmOrder | ChoosePhone)
    saved = customer.msisdn
    if saved and (asks_for_pin or isinstance(action, OnOrder)) and _refused(conn, customer, saved):
        saved = None  # M-Pesa refused it last time: ask for a number instead of offering it
    return Facts(
        shop=shop,
        lang=customer.language,
        saved_msisdn=saved,
        catalog=catalog,
        orders=_own_orders(conn, customer.id, wanted, with_items=cancelling),
        waiting_for_pin=_waiting_for_pin(conn, customer.id) if asks_for_pin else None,
        order_list=_orders_to_list(conn, customer.id) if event == Command("/orders") else (),
    )


def _own_orders(
    conn: Connection, customer_id: int, ids: Collection[int], *, with_items: bool
) -> dict[int, OrderView]:
    if not ids:
        return {}
    paying = exists().where(
        payments.c.order_id == orders.c.id, payments.c.status.in_(OPEN_PAYMENT_STATUSES)
    )
    rows = conn.execute(
        select(orders.c.id, orders.c.reference, orders.c.total, orders.c.status, paying).where(
            orders.c.id.in_(sorted(ids)), orders.c.customer_id == customer_id
        )
    ).all()
    return {
        row.id: OrderView(
            row.id,
            row.reference,
            row.total,
            OrderStatus(row.status),
            paying=bool(row[4]),
            items=tuple(get_order_items(conn, row.id)) if with_items else (),
        )
        for row in rows
    }


def _refused(conn: Connection, customer: CustomerRecord, msisdn: str) -> bool:
    """Whether the customer's last payment from ``msisdn`` failed for the number itself
    (a wrong PIN or too little money are no reason to stop offering it)."""
    last = conn.execute(
        select(payments.c.status, payments.c.result_code, payments.c.result_desc)
        .join(orders, orders.c.id == payments.c.order_id)
        .where(orders.c.customer_id == customer.id, payments.c.msisdn == msisdn)
        .order_by(payments.c.id.desc())
        .limit(1)
    ).first()
    return (
        last is not None
        and last.status == PaymentStatus.FAILED
        and refuses_the_number(last.result_code or "", last.result_desc or "")
    )


def _waiting_for_pin(conn: Connection, customer_id: int) -> str | None:
    """The reference of the customer's order whose M-Pesa prompt is still open, if any."""
    return conn.execute(
        select(orders.c.reference)
        .join(payments, payments.c.order_id == orders.c.id)
        .where(
            orders.c.customer_id == customer_id,
            orders.c.status == OrderStatus.AWAITING_PAYMENT,
            payments.c.status.in_(OPEN_PAYMENT_STATUSES),
        )
        .order_by(payments.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _orders_to_list(conn: Connection, customer_id: int) -> list[OrderRecord]:
    """Every order still awaiting payment (each can be paid or cancelled from the list),
    with the most recent others; newest first."""
    unpaid = (
        conn.execute(
            select(orders.c.id).where(
                orders.c.customer_id == customer_id,
                orders.c.status == OrderStatus.AWAITING_PAYMENT,
            )
        )
        .scalars()
        .all()
    )
    listed = {o.id: o for o in recent_orders(conn, customer_id)}
    for order_id in unpaid:
        if order_id not in listed and (order := get_order(conn, order_id)) is not None:
            listed[order_id] = order
    return sorted(listed.values(), key=lambda o: o.id, reverse=True)
