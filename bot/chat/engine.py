"""The conversation: one ``Inbound`` in, the ``Reply`` list out, state kept in the database.

Each chat's events are handled one at a time (a lock per chat), so a double tap cannot
interleave two steps of the same conversation.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from bot.catalog import ProductSpec, active_products
from bot.channels.base import Channel
from bot.chat import screens
from bot.chat.model import Button, ChatState, Inbound, Reply
from bot.texts import LANGUAGES, kes, masked_phone, reason_text, say, status_text
from payments import ledger
from payments.daraja_client import InvalidPushRequest
from payments.errors import DarajaError
from payments.phone import InvalidPhoneNumber, MpesaNumber, normalize_msisdn
from payments.result_codes import FailureReason
from payments.service import PaymentNotStarted, PaymentService, utc_now
from payments.states import PaymentStatus
from storage.engine import Database
from storage.orders import (
    CustomerRecord,
    NewOrderItem,
    create_order,
    get_or_create_customer,
    get_order,
    load_chat_state,
    recent_orders,
    remember_message,
    save_chat_state,
    update_customer,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Chat:
    customer: CustomerRecord
    state: ChatState
    catalog: dict[str, ProductSpec]  # active products by sku, in catalog order

    @property
    def lang(self) -> str:
        return self.customer.language


def _load(conn: Connection, event: Inbound, now: datetime) -> _Chat:
    customer = get_or_create_customer(conn, event.channel, event.chat_id, event.user_name, now)
    saved = load_chat_state(conn, event.channel, event.chat_id)
    state = ChatState.from_json(saved) if saved else ChatState()
    catalog = {p.sku: p for p in active_products(conn)}
    return _Chat(customer, state, catalog)


class Conversation:
    def __init__(
        self,
        database: Database,
        payments: PaymentService,
        shop_name: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = database
        self._payments = payments
        self._shop = shop_name
        self._clock = clock
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    async def handle(self, event: Inbound) -> list[Reply]:
        async with self._locks[(event.channel, event.chat_id)]:
            chat = await self._db.transaction(_load, event, self._clock())
            replies = await self._route(chat, event)
            await self._db.transaction(
                save_chat_state, event.channel, event.chat_id, chat.state.to_json(), self._clock()
            )
            return replies

    async def reply_through(
        self, channel: Channel, event: Inbound, pressed_message: str | None = None
    ) -> None:
        """Handle ``event`` and send the replies back through ``channel``; a reply marked
        ``edit`` replaces ``pressed_message`` (the message whose button was pressed)."""
        for reply in await self.handle(event):
            replace = pressed_message if reply.edit else None
            message_id = await channel.send(event.chat_id, reply, replace=replace)
            if reply.tag:
                await self.remember(channel.name, event.chat_id, reply.tag, message_id)

    async def remember(self, channel: str, chat_id: str, tag: str, message_id: str) -> None:
        """Keep a sent message's id under ``tag`` so that it can be edited later."""
        await self._db.transaction(
            remember_message, channel, chat_id, tag, message_id, self._clock()
        )

    async def _route(self, chat: _Chat, event: Inbound) -> list[Reply]:
        if event.contact_phone is not None:
            return await self._contact(chat, event)
        if event.button is not None:
            return await self._button(chat, event.button)
        text = (event.text or "").strip()
        if text.startswith("/"):
            return await self._command(chat, text.split()[0].lower().split("@")[0])
        if chat.state.step == "awaiting_phone" and text:
            return await self._pay_with_text(chat, text)
        return [Reply(say(chat.lang, "hint"), ((Button(say(chat.lang, "btn_menu"), "menu"),),))]

    # --- commands ------------------------------------------------------------------------

    async def _command(self, chat: _Chat, command: str) -> list[Reply]:
        lang = chat.lang
        if command == "/start":
            chat.state.step, chat.state.picking = "browsing", None
            welcome = Reply(say(lang, "welcome", shop=self._shop))
            return [welcome, self._menu(chat)]
        if command == "/cart":
            return [screens.cart(lang, chat.state.cart, chat.catalog, edit=False)]
        if command == "/orders":
            return [await self._orders(chat)]
        if command == "/help":
            return [Reply(say(lang, "help"), ((Button(say(lang, "btn_menu"), "menu"),),))]
        if command == "/cancel":
            chat.state.step, chat.state.order_id, chat.state.picking = "browsing", None, None
            return [Reply(say(lang, "cancelled_step"), ((Button(say(lang, "btn_menu"), "menu"),),))]
        if command == "/language":
            rows = ((Button("English", "lang:en"), Button("Kiswahili", "lang:sw")),)
            return [Reply(say(lang, "choose_language"), rows)]
        return [Reply(say(lang, "hint"), ((Button(say(lang, "btn_menu"), "menu"),),))]

    def _menu(self, chat: _Chat, *, edit: bool = False) -> Reply:
        return screens.menu(chat.lang, list(chat.catalog.values()), chat.state.cart, edit=edit)

    async def _orders(self, chat: _Chat) -> Reply:
        found = await self._db.transaction(recent_orders, chat.customer.id)
        if not found:
            return Reply(say(chat.lang, "orders_none"))
        lines = "\n".join(
            say(
                chat.lang,
                "order_line",
                reference=o.reference,
                total=kes(o.total),
                status=status_text(chat.lang, o.status),
            )
            for o in found
        )
        return Reply(say(chat.lang, "orders", lines=lines))

    # --- buttons -------------------------------------------------------------------------

    async def _button(self, chat: _Chat, data: str) -> list[Reply]:
        name, _, arg = data.partition(":")
        state, lang = chat.state, chat.lang
        if name == "menu":
            state.picking = None
            return [self._menu(chat, edit=True)]
        if name == "cat":
            return [screens.category(lang, list(chat.catalog.values()), arg, state.cart)]
        if name in {"prod", "qty", "add"}:
            return self._product_button(chat, name, arg)
        if name in {"cart", "inc", "dec", "rm", "empty"}:
            return self._cart_button(chat, name, arg)
        if name == "checkout":
            if not state.cart:
                return [screens.cart(lang, state.cart, chat.catalog)]
            return [screens.summary(lang, state.cart, chat.catalog)]
        if name == "confirm":
            return await self._confirm(chat)
        if name == "phone":
            return await self._phone_choice(chat, arg)
        if name in {"retry", "other", "cancel"}:
            return await self._after_failure(chat, name, arg)
        if name == "lang" and arg in LANGUAGES:
            await self._db.transaction(update_customer, chat.customer.id, language=arg)
            return [Reply(say(arg, "language_set"), ((Button(say(arg, "btn_menu"), "menu"),),))]
        # Buttons can be forged (any data may arrive): unknown ones get the menu.
        return [self._menu(chat)]

    def _product_button(self, chat: _Chat, name: str, arg: str) -> list[Reply]:
        sku, _, qty_text = arg.partition(":")
        spec = chat.catalog.get(sku)
        if spec is None:
            return [Reply(say(chat.lang, "product_gone")), self._menu(chat)]
        quantity = int(qty_text) if qty_text.isdigit() else 1
        quantity = max(1, min(screens.MAX_QUANTITY, quantity))
        if name == "add":
            cart = chat.state.cart
            cart[sku] = min(screens.MAX_QUANTITY, cart.get(sku, 0) + quantity)
            chat.state.picking = None
            total = kes(screens.cart_total(cart, chat.catalog))
            text = say(chat.lang, "added", quantity=quantity, name=spec.name, total=total)
            rows = (
                (Button(say(chat.lang, "btn_checkout"), "checkout"),),
                (
                    Button(say(chat.lang, "btn_cart"), "cart"),
                    Button(say(chat.lang, "btn_menu"), "menu"),
                ),
            )
            return [Reply(text, rows, edit=True)]
        chat.state.picking = (sku, quantity)
        return [screens.product(chat.lang, spec, quantity, chat.state.cart)]

    def _cart_button(self, chat: _Chat, name: str, sku: str) -> list[Reply]:
        cart = chat.state.cart
        if name == "empty":
            cart.clear()
        elif sku in cart:
            if name == "inc":
                cart[sku] = min(screens.MAX_QUANTITY, cart[sku] + 1)
            elif name == "dec":
                cart[sku] -= 1
            if name == "rm" or cart[sku] < 1:
                del cart[sku]
        return [screens.cart(chat.lang, cart, chat.catalog)]

    # --- checkout and payment ------------------------------------------------------------

    async def _confirm(self, chat: _Chat) -> list[Reply]:
        cart = {sku: q for sku, q in chat.state.cart.items() if sku in chat.catalog}
        if not cart:
            return [screens.cart(chat.lang, {}, chat.catalog)]
        items = [
            NewOrderItem(sku, chat.catalog[sku].name, chat.catalog[sku].price, qty)
            for sku, qty in cart.items()
        ]
        order = await self._db.transaction(_create_order, chat.customer.id, items, self._clock())
        chat.state.cart.clear()
        chat.state.step, chat.state.order_id = "awaiting_phone", order.id
        return [self._phone_question(chat, order.total)]

    def _phone_question(self, chat: _Chat, total: int) -> Reply:
        lang = chat.lang
        if chat.customer.msisdn:
            rows = (
                (
                    Button(say(lang, "btn_yes"), "phone:yes"),
                    Button(say(lang, "btn_other_number"), "phone:other"),
                ),
            )
            return Reply(say(lang, "confirm_phone", phone=masked_phone(chat.customer.msisdn)), rows)
        return Reply(
            say(lang, "ask_phone", total=kes(total)), ask_contact=say(lang, "btn_share_number")
        )

    async def _phone_choice(self, chat: _Chat, choice: str) -> list[Reply]:
        order = await self._current_order(chat)
        if order is None:
            return [self._menu(chat)]
        if choice == "yes" and chat.customer.msisdn:
            return await self._pay(chat, order.id, normalize_msisdn(chat.customer.msisdn))
        return [
            Reply(
                say(chat.lang, "ask_phone", total=kes(order.total)),
                ask_contact=say(chat.lang, "btn_share_number"),
            )
        ]

    async def _contact(self, chat: _Chat, event: Inbound) -> list[Reply]:
        if chat.state.step != "awaiting_phone":
            return [Reply(say(chat.lang, "hint"))]
        if not event.contact_is_own:
            return [
                Reply(
                    say(chat.lang, "contact_not_own"),
                    ask_contact=say(chat.lang, "btn_share_number"),
                )
            ]
        return await self._pay_with_text(chat, event.contact_phone or "")

    async def _pay_with_text(self, chat: _Chat, text: str) -> list[Reply]:
        order = await self._current_order(chat)
        if order is None:
            chat.state.step = "browsing"
            return [self._menu(chat)]
        try:
            number = normalize_msisdn(text)
        except InvalidPhoneNumber as exc:
            return [
                Reply(
                    say(chat.lang, "phone_invalid", problem=str(exc)),
                    ask_contact=say(chat.lang, "btn_share_number"),
                )
            ]
        return await self._pay(chat, order.id, number)

    async def _current_order(self, chat: _Chat) -> _OrderView | None:
        if chat.state.order_id is None:
            return None
        return await self._own_order(chat, chat.state.order_id)

    async def _own_order(self, chat: _Chat, order_id: int) -> _OrderView | None:
        order = await self._db.transaction(get_order, order_id)
        if order is None or order.customer_id != chat.customer.id:
            return None
        return _OrderView(order.id, order.reference, order.total, order.status)

    async def _pay(self, chat: _Chat, order_id: int, number: MpesaNumber) -> list[Reply]:
        lang = chat.lang
        await self._db.transaction(update_customer, chat.customer.id, msisdn=number.msisdn)
        chat.customer = _with_msisdn(chat.customer, number.msisdn)
        try:
            started = await self._payments.start_payment(order_id, number)
        except PaymentNotStarted as exc:
            return [Reply(str(exc))]
        except (DarajaError, InvalidPushRequest) as exc:
            reason = exc.reason if isinstance(exc, DarajaError) else FailureReason.OTHER
            chat.state.step = "browsing"
            text = say(lang, "payment_refused", reason=reason_text(lang, reason))
            return [Reply(text, screens.failed_payment_buttons(lang, order_id))]
        chat.state.step, chat.state.order_id = "browsing", None
        total = kes(started.amount)
        key = "check_phone" if started.status is PaymentStatus.PENDING else "push_unknown"
        text = say(lang, key, total=total, shop=self._shop)
        if number.warning:
            text = f"{number.warning}\n\n{text}"
        return [Reply(text, tag=f"payment:{started.payment_id}", close_keyboard=True)]

    async def _after_failure(self, chat: _Chat, action: str, arg: str) -> list[Reply]:
        order = await self._own_order(chat, int(arg)) if arg.isdigit() else None
        if order is None:
            return [Reply(say(chat.lang, "not_your_order"))]
        if action == "cancel":
            cancelled = await self._db.transaction(ledger.cancel_order, order.id, self._clock())
            key = "order_cancelled" if cancelled else "cannot_cancel"
            return [Reply(say(chat.lang, key, reference=order.reference), edit=True)]
        if order.status != "awaiting_payment":
            status = status_text(chat.lang, order.status)
            line = say(
                chat.lang,
                "order_line",
                reference=order.reference,
                total=kes(order.total),
                status=status,
            )
            return [Reply(line)]
        chat.state.step, chat.state.order_id = "awaiting_phone", order.id
        if action == "retry" and chat.customer.msisdn:
            return await self._pay(chat, order.id, normalize_msisdn(chat.customer.msisdn))
        return [
            Reply(
                say(chat.lang, "ask_phone", total=kes(order.total)),
                ask_contact=say(chat.lang, "btn_share_number"),
            )
        ]


@dataclass(frozen=True, slots=True)
class _OrderView:
    id: int
    reference: str
    total: int
    status: str


def _with_msisdn(customer: CustomerRecord, msisdn: str) -> CustomerRecord:
    return CustomerRecord(
        customer.id,
        customer.channel,
        customer.chat_id,
        customer.name,
        msisdn,
        customer.language,
        customer.blocked,
    )


def _create_order(
    conn: Connection, customer_id: int, items: list[NewOrderItem], now: datetime
) -> _OrderView:
    order = create_order(conn, customer_id, items, now)
    return _OrderView(order.id, order.reference, order.total, order.status)
