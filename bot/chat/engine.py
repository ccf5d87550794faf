"""The conversation: one ``Inbound`` in, the ``Reply`` list out, state kept in the database.

Each chat's events are handled one at a time (a lock per chat), so a double tap cannot
interleave two steps of the same conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from bot.catalog import ProductSpec, active_products, with_translations
from bot.channels.base import Channel
from bot.chat import screens
from bot.chat.flood import FloodGate, Verdict
from bot.chat.model import Button, ChatState, Inbound, Reply
from bot.texts import LANGUAGES, kes, masked_phone, minutes, reason_text, say, status_text
from payments import ledger
from payments.daraja_client import MAX_AMOUNT, InvalidPushRequest
from payments.errors import DarajaError
from payments.phone import InvalidPhoneNumber, MpesaNumber, display_msisdn, normalize_msisdn
from payments.result_codes import FailureReason
from payments.service import (
    PaymentInProgress,
    PaymentNotStarted,
    PaymentService,
    TooManyPrompts,
    utc_now,
)
from payments.states import OrderStatus, PaymentStatus
from storage.engine import Database
from storage.orders import (
    CustomerRecord,
    NewOrderItem,
    OrderItemRecord,
    OrderRecord,
    create_order,
    get_or_create_customer,
    get_order,
    get_order_items,
    load_chat_state,
    recent_orders,
    remember_message,
    save_chat_state,
    update_customer,
)
from storage.schema import OPEN_PAYMENT_STATUSES, orders
from storage.schema import payments as payment_attempts

log = logging.getLogger(__name__)
MAX_ID = 2**31  # ids are 32-bit on PostgreSQL
GREETINGS = frozenset(
    {"hi", "hello", "hey", "start", "menu", "habari", "jambo", "mambo", "sasa", "menyu", "niaje"}
)


# Before the chat's language is read (that costs the database a flood would tax): both.
_TOO_FAST = Reply(f"{say('en', 'too_fast')}\n{say('sw', 'too_fast')}")


@dataclass(slots=True)
class _Chat:
    customer: CustomerRecord
    state: ChatState
    catalog: dict[str, ProductSpec]  # active products by sku, in catalog order

    @property
    def lang(self) -> str:
        return self.customer.language


def _load(
    conn: Connection, event: Inbound, now: datetime, configured: Sequence[ProductSpec]
) -> _Chat:
    customer = get_or_create_customer(conn, event.channel, event.chat_id, event.user_name, now)
    # Writing to us opens WhatsApp's 24-hour window, and means the bot is not blocked.
    update_customer(conn, customer.id, last_inbound_at=now, blocked_at=None)
    customer = dataclasses.replace(customer, blocked=False, last_inbound_at=now)
    saved = load_chat_state(conn, event.channel, event.chat_id)
    state = ChatState.from_json(saved) if saved else ChatState()
    catalog = {p.sku: p for p in with_translations(active_products(conn), configured)}
    # Products taken off the catalog leave every saved cart.
    state.cart = {sku: qty for sku, qty in state.cart.items() if sku in catalog}
    return _Chat(customer, state, catalog)


class Conversation:
    def __init__(
        self,
        database: Database,
        payments: PaymentService,
        shop_name: str,
        clock: Callable[[], datetime] = utc_now,
        *,
        paybill: str | None = None,
        flood: FloodGate | None = None,
        catalog: Sequence[ProductSpec] = (),
        shop_name_sw: str = "",
    ) -> None:
        self._flood = flood or FloodGate()
        self._db = database
        self._payments = payments
        self._shop = shop_name
        self._shop_sw = shop_name_sw
        # The configured products: the database keeps no Swahili names, these do.
        self._configured = tuple(catalog)
        self._clock = clock
        self._paybill = paybill  # the Paybill number, when paying by hand is offered
        # chat -> (its lock, how many events hold or await it); dropped at zero, so the
        # table stays as small as the set of chats being served right now.
        self._turns: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def _chat_turn(self, event: Inbound) -> AsyncIterator[None]:
        """One event per chat at a time, replies included, so two taps cannot interleave."""
        key = (event.channel, event.chat_id)
        lock, users = self._turns.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._turns[key]

    async def handle(self, event: Inbound) -> list[Reply]:
        verdict = self._flood.admit((event.channel, event.chat_id))
        if verdict is not Verdict.ADMIT:
            return [_TOO_FAST] if verdict is Verdict.WARN else []
        async with self._chat_turn(event):
            return await self._handle(event)

    async def _handle(self, event: Inbound) -> list[Reply]:
        chat = await self._db.transaction(_load, event, self._clock(), self._configured)
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
        verdict = self._flood.admit((event.channel, event.chat_id))
        if verdict is not Verdict.ADMIT:
            if verdict is Verdict.WARN:  # once; the rest of the flood is not answered
                await channel.send(event.chat_id, _TOO_FAST)
            return
        async with self._chat_turn(event):
            for reply in await self._handle(event):
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
        if event.unsupported:
            rows = ((Button(say(chat.lang, "btn_menu"), "menu"),),)
            return [Reply(say(chat.lang, "only_text"), rows)]
        if event.contact_phone is not None:
            return await self._contact(chat, event)
        if event.button is not None:
            return await self._button(chat, event.button)
        text = (event.text or "").strip()
        if text.startswith("/"):
            return await self._command(chat, text.split()[0].lower().split("@")[0])
        if text.lower().strip("!.? ") in GREETINGS and chat.state.step != "awaiting_phone":
            return await self._command(chat, "/start")  # WhatsApp customers just say hello
        if chat.state.step == "awaiting_phone" and text:
            return await self._pay_with_text(chat, text)
        return [Reply(say(chat.lang, "hint"), ((Button(say(chat.lang, "btn_menu"), "menu"),),))]

    # --- commands ------------------------------------------------------------------------

    async def _command(self, chat: _Chat, command: str) -> list[Reply]:
        lang = chat.lang
        if command == "/start":
            chat.state.step, chat.state.picking = "browsing", None
            # One message, not two: WhatsApp allows about one message in six seconds per user.
            menu = self._menu(chat)
            text = f"{say(lang, 'welcome', shop=self._shop_in(lang))}\n\n{menu.text}"
            return [dataclasses.replace(menu, text=text)]
        if command == "/cart":
            return [screens.cart(lang, chat.state.cart, chat.catalog, edit=False)]
        if command == "/orders":
            return [await self._orders(chat)]
        if command == "/help":
            return [Reply(say(lang, "help"), ((Button(say(lang, "btn_menu"), "menu"),),))]
        if command == "/cancel":
            return [await self._cancel_step(chat)]
        if command == "/language":
            rows = ((Button("English", "lang:en"), Button("Kiswahili", "lang:sw")),)
            return [Reply(say(lang, "choose_language"), rows)]
        return [Reply(say(lang, "hint"), ((Button(say(lang, "btn_menu"), "menu"),),))]

    async def _cancel_step(self, chat: _Chat) -> Reply:
        """/cancel: leaving the phone step drops its order (unless a payment is under way),
        and the reply says which of the two happened."""
        lang, state = chat.lang, chat.state
        order = None
        if state.step == "awaiting_phone" and state.order_id is not None:
            order = await self._own_order(chat, state.order_id)
        state.step, state.order_id, state.picking = "browsing", None, None
        if order is None:
            return Reply(say(lang, "cancelled_step"), screens.menu_buttons(lang))
        if await self._cancel_to_cart(chat, order.id):
            text = say(lang, "order_cancelled_to_cart", reference=order.reference)
            return Reply(text, screens.cart_and_menu_buttons(lang, state.cart))
        latest = await self._own_order(chat, order.id)
        status = status_text(lang, (latest or order).status)
        text = say(lang, "cancel_kept_order", reference=order.reference, status=status)
        return Reply(text, screens.menu_buttons(lang))

    async def _cancel_to_cart(self, chat: _Chat, order_id: int) -> bool:
        """Cancel the order if it can be, and put its items back in the cart."""
        items = await self._db.transaction(_cancel_returning_items, order_id, self._clock())
        if items is None:
            return False
        cart = chat.state.cart
        for item in items:
            if item.sku in chat.catalog:  # a product taken off the catalog stays out
                cart[item.sku] = min(screens.MAX_QUANTITY, cart.get(item.sku, 0) + item.quantity)
        return True

    def _shop_in(self, lang: str) -> str:
        return (self._shop_sw if lang == "sw" else "") or self._shop

    def _menu(self, chat: _Chat, *, edit: bool = False) -> Reply:
        return screens.menu(chat.lang, list(chat.catalog.values()), chat.state.cart, edit=edit)

    async def _orders(self, chat: _Chat) -> Reply:
        found = await self._db.transaction(_orders_to_list, chat.customer.id)
        return screens.orders(chat.lang, found)

    # --- buttons -------------------------------------------------------------------------

    async def _button(self, chat: _Chat, data: str) -> list[Reply]:
        name, _, arg = data.partition(":")
        state, lang = chat.state, chat.lang
        if name == "menu":
            state.picking = None
            return [self._menu(chat, edit=arg != "new")]
        if name == "cat":
            return [screens.category(lang, list(chat.catalog.values()), arg, state.cart)]
        if name in {"prod", "qty", "add", "drop"}:
            return self._product_button(chat, name, arg)
        if name in {"cart", "inc", "dec", "rm", "empty"}:
            return self._cart_button(chat, name, arg)
        if name == "checkout":
            if not state.cart:
                return [screens.cart(lang, state.cart, chat.catalog)]
            if over := self._over_limit(chat):
                return [over]
            return [screens.summary(lang, state.cart, chat.catalog)]
        if name == "confirm":
            return await self._confirm(chat)
        if name == "phone":
            return await self._phone_choice(chat, arg)
        if name in {"retry", "other", "cancel", "paybill", "pay"}:
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
            menu = self._menu(chat)
            text = f"{say(chat.lang, 'product_gone')}\n\n{menu.text}"
            return [dataclasses.replace(menu, text=text, edit=False)]
        if name == "drop":
            return [screens.drop_offer(chat.lang, spec, chat.state.cart)]
        quantity = _count(qty_text) or 1
        quantity = max(1, min(screens.MAX_QUANTITY, quantity))
        if name == "add":
            if chat.state.picking != (sku, quantity):
                # A second tap on the same "Add" (or a stale screen): already added once.
                return [screens.cart(chat.lang, chat.state.cart, chat.catalog)]
            cart = chat.state.cart
            before = cart.get(sku, 0)
            cart[sku] = min(screens.MAX_QUANTITY, before + quantity)
            chat.state.picking = None
            text = self._added_text(chat, spec, added=cart[sku] - before, wanted=quantity)
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

    def _added_text(self, chat: _Chat, spec: ProductSpec, *, added: int, wanted: int) -> str:
        """What "Add to cart" did: never a count that was not added (the cap stops it)."""
        lang, cart = chat.lang, chat.state.cart
        values = {
            "name": spec.name_in(lang),
            "total": kes(screens.cart_total(cart, chat.catalog)),
            "count": screens.MAX_QUANTITY,
        }
        if added == wanted:
            return say(lang, "added", quantity=added, **values)
        if added == 0:
            return say(lang, "nothing_added", **values)
        return say(lang, "added_capped", quantity=added, **values)

    def _cart_button(self, chat: _Chat, name: str, sku: str) -> list[Reply]:
        cart = chat.state.cart
        capped = False
        if name == "empty":
            cart.clear()
        elif sku in cart:
            if name == "inc":
                capped = cart[sku] >= screens.MAX_QUANTITY
                cart[sku] = min(screens.MAX_QUANTITY, cart[sku] + 1)
            elif name == "dec":
                cart[sku] -= 1
            if name == "rm" or cart[sku] < 1:
                del cart[sku]
        reply = screens.cart(chat.lang, cart, chat.catalog)
        if capped:
            spec = chat.catalog[sku]
            cap = say(
                chat.lang, "quantity_cap", count=screens.MAX_QUANTITY, name=spec.name_in(chat.lang)
            )
            reply = dataclasses.replace(reply, text=f"{cap}\n\n{reply.text}")
        return [reply]

    # --- checkout and payment ------------------------------------------------------------

    async def _confirm(self, chat: _Chat) -> list[Reply]:
        cart = {sku: q for sku, q in chat.state.cart.items() if sku in chat.catalog}
        if not cart:
            return [await self._confirmed_already(chat)]
        if over := self._over_limit(chat):
            return [over]
        items = [
            NewOrderItem(sku, chat.catalog[sku].name, chat.catalog[sku].price, qty)
            for sku, qty in cart.items()
        ]
        order = await self._db.transaction(_create_order, chat.customer.id, items, self._clock())
        chat.state.cart.clear()
        chat.state.step, chat.state.order_id = "awaiting_phone", order.id
        return [self._phone_question(chat, order.total)]

    async def _confirmed_already(self, chat: _Chat) -> Reply:
        """A second tap on "Confirm order" (the cart became the order): the order's current
        step again, not "your cart is empty"."""
        if chat.state.step == "awaiting_phone":
            order = await self._current_order(chat)
            if order is not None:
                return self._phone_question(chat, order.total)
        return await self._waiting_reply(chat) or screens.cart(chat.lang, {}, chat.catalog)

    async def _waiting_reply(self, chat: _Chat) -> Reply | None:
        """ "Waiting for your PIN", when one of the customer's payment prompts is open."""
        waiting = await self._db.transaction(_waiting_for_pin, chat.customer.id)
        if waiting is None:
            return None
        text = say(chat.lang, "payment_in_progress", reference=waiting)
        return Reply(text, screens.menu_buttons(chat.lang))

    def _over_limit(self, chat: _Chat) -> Reply | None:
        total = screens.cart_total(chat.state.cart, chat.catalog)
        if total <= MAX_AMOUNT:
            return None
        text = say(chat.lang, "over_limit", limit=kes(MAX_AMOUNT), total=kes(total))
        return Reply(text, screens.cart(chat.lang, chat.state.cart, chat.catalog).buttons)

    def _ask_phone(self, chat: _Chat, total: int) -> Reply:
        text = say(chat.lang, "ask_phone", total=kes(total))
        return Reply(text, ask_contact=say(chat.lang, "btn_share_number"))

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
        return self._ask_phone(chat, total)

    async def _phone_choice(self, chat: _Chat, choice: str) -> list[Reply]:
        order = await self._current_order(chat)
        if order is None:
            # A stale "Yes, pay" (the prompt went out already): say what it is waiting for.
            return [await self._waiting_reply(chat) or self._menu(chat)]
        if choice == "yes" and chat.customer.msisdn:
            return await self._pay(chat, order.id, normalize_msisdn(chat.customer.msisdn))
        if choice == "typed" and chat.state.typed_msisdn:
            number, chat.state.typed_msisdn = chat.state.typed_msisdn, None
            return await self._pay(chat, order.id, normalize_msisdn(number), warn=False)
        chat.state.typed_msisdn = None
        return [self._ask_phone(chat, order.total)]

    async def _contact(self, chat: _Chat, event: Inbound) -> list[Reply]:
        if chat.state.step != "awaiting_phone":
            return [Reply(say(chat.lang, "hint"), screens.menu_buttons(chat.lang))]
        if not event.contact_is_own:
            return [
                Reply(
                    say(chat.lang, "contact_not_own"),
                    ask_contact=say(chat.lang, "btn_share_number"),
                )
            ]
        return await self._pay_with_text(chat, event.contact_phone or "", typed=False)

    async def _pay_with_text(self, chat: _Chat, text: str, *, typed: bool = True) -> list[Reply]:
        order = await self._current_order(chat)
        if order is None:
            chat.state.step = "browsing"
            return [self._menu(chat)]
        try:
            number = normalize_msisdn(text)
        except InvalidPhoneNumber as exc:
            text = say(chat.lang, f"phone_{exc.problem}")
            return [Reply(text, ask_contact=say(chat.lang, "btn_share_number"))]
        if not typed:  # the platform vouches that a shared contact is the sender's own
            return await self._pay(chat, order.id, number)
        # A typo would send a PIN prompt to a stranger: the customer confirms first.
        chat.state.typed_msisdn = number.msisdn
        lang = chat.lang
        text = say(
            lang, "confirm_typed_phone", total=kes(order.total), phone=display_msisdn(number.msisdn)
        )
        if warning := self._network_warning(lang, number):
            text = f"{warning}\n\n{text}"
        rows = (
            (
                Button(say(lang, "btn_yes_pay"), "phone:typed"),
                Button(say(lang, "btn_other_number"), "phone:other"),
            ),
        )
        return [Reply(text, rows, close_keyboard=True)]

    async def _current_order(self, chat: _Chat) -> _OrderView | None:
        """The order of the phone step, while it can still be paid; else leave the step."""
        order = None
        if chat.state.order_id is not None:
            order = await self._own_order(chat, chat.state.order_id)
        if order is None or order.status != "awaiting_payment":
            chat.state.step, chat.state.order_id = "browsing", None
            return None
        return order

    async def _own_order(self, chat: _Chat, order_id: int) -> _OrderView | None:
        if not 0 < order_id < MAX_ID:  # button data can be forged: keep the id in range
            return None
        order = await self._db.transaction(get_order, order_id)
        if order is None or order.customer_id != chat.customer.id:
            return None
        return _OrderView(order.id, order.reference, order.total, order.status)

    async def _pay(
        self, chat: _Chat, order_id: int, number: MpesaNumber, *, warn: bool = True
    ) -> list[Reply]:
        lang = chat.lang
        await self._db.transaction(update_customer, chat.customer.id, msisdn=number.msisdn)
        chat.customer = dataclasses.replace(chat.customer, msisdn=number.msisdn)
        try:
            started = await self._payments.start_payment(order_id, number)
        except PaymentNotStarted as exc:
            chat.state.step, chat.state.order_id = "browsing", None
            return [await self._not_started(chat, order_id, exc)]
        except (DarajaError, InvalidPushRequest) as exc:
            reason = exc.reason if isinstance(exc, DarajaError) else FailureReason.OTHER
            chat.state.step = "browsing"
            text = say(lang, "payment_refused", reason=reason_text(lang, reason))
            buttons = screens.failed_payment_buttons(
                lang, order_id, paybill=self._paybill is not None
            )
            return [Reply(text, buttons)]
        chat.state.step, chat.state.order_id = "browsing", None
        total = kes(started.amount)
        key = "check_phone" if started.status is PaymentStatus.PENDING else "push_unknown"
        text = say(lang, key, total=total, shop=self._shop_in(lang))
        if warn and (warning := self._network_warning(lang, number)):
            text = f"{warning}\n\n{text}"
        return [Reply(text, tag=f"payment:{started.payment_id}", close_keyboard=True)]

    @staticmethod
    def _network_warning(lang: str, number: MpesaNumber) -> str | None:
        """Number portability makes the prefix a hint only: a warning, never a refusal."""
        if number.is_safaricom_prefix:
            return None
        network = number.carrier or say(lang, "another_network")
        return say(
            lang, "phone_other_network", phone=display_msisdn(number.msisdn), network=network
        )

    async def _not_started(self, chat: _Chat, order_id: int, exc: PaymentNotStarted) -> Reply:
        order = await self._own_order(chat, order_id)
        reference = order.reference if order else ""
        if isinstance(exc, PaymentInProgress):
            return Reply(say(chat.lang, "payment_in_progress", reference=reference))
        if isinstance(exc, TooManyPrompts):
            text = say(chat.lang, f"limit_{exc.hit.kind}", wait=minutes(chat.lang, exc.minutes))
            # No dead end: another number, the Paybill, or cancelling stay open.
            paybill = self._paybill is not None
            return Reply(text, screens.failed_payment_buttons(chat.lang, order_id, paybill=paybill))
        status = status_text(chat.lang, order.status) if order else ""
        return Reply(say(chat.lang, "order_not_payable", reference=reference, status=status))

    async def _after_failure(self, chat: _Chat, action: str, arg: str) -> list[Reply]:
        order_id = _count(arg)
        order = await self._own_order(chat, order_id) if order_id is not None else None
        if order is None:
            return [Reply(say(chat.lang, "not_your_order"))]
        if action == "cancel":
            # As /cancel does: the order's items go back into the cart.
            if not await self._cancel_to_cart(chat, order.id):
                text = say(chat.lang, "cannot_cancel", reference=order.reference)
                return [Reply(text, screens.menu_buttons(chat.lang), edit=True)]
            if chat.state.order_id == order.id:
                chat.state.step, chat.state.order_id = "browsing", None
            text = say(chat.lang, "order_cancelled_to_cart", reference=order.reference)
            buttons = screens.cart_and_menu_buttons(chat.lang, chat.state.cart)
            return [Reply(text, buttons, edit=True)]
        if order.status == "cancelled":
            text = say(chat.lang, "retry_cancelled", reference=order.reference)
            return [Reply(text, screens.cart_and_menu_buttons(chat.lang, chat.state.cart))]
        if order.status != "awaiting_payment":
            status = status_text(chat.lang, order.status)
            line = say(
                chat.lang,
                "order_line",
                reference=order.reference,
                total=kes(order.total),
                status=status,
            )
            return [Reply(line, screens.menu_buttons(chat.lang))]
        if action == "paybill" and self._paybill is not None:
            # Paying by hand: the order's reference is the account number; the C2B
            # confirmation pays the order like a callback would, and the result comes here.
            chat.state.step, chat.state.order_id = "browsing", None
            text = say(
                chat.lang,
                "paybill",
                paybill=self._paybill,
                reference=order.reference,
                amount=kes(order.total),
            )
            rows = ((Button(say(chat.lang, "btn_cancel_order"), f"cancel:{order.id}"),),)
            return [Reply(text, rows)]
        chat.state.step, chat.state.order_id = "awaiting_phone", order.id
        if action == "pay":  # from /orders: resume the order at its phone question
            return [self._phone_question(chat, order.total)]
        if action == "retry" and chat.customer.msisdn:
            return await self._pay(chat, order.id, normalize_msisdn(chat.customer.msisdn))
        return [self._ask_phone(chat, order.total)]


@dataclass(frozen=True, slots=True)
class _OrderView:
    id: int
    reference: str
    total: int
    status: str


def _count(text: str) -> int | None:
    """A whole number typed in ASCII digits ("²" is a digit to ``str.isdigit``, not to int)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 12 else None


def _waiting_for_pin(conn: Connection, customer_id: int) -> str | None:
    """The reference of the customer's order whose M-Pesa prompt is still open, if any."""
    return conn.execute(
        select(orders.c.reference)
        .join(payment_attempts, payment_attempts.c.order_id == orders.c.id)
        .where(
            orders.c.customer_id == customer_id,
            orders.c.status == "awaiting_payment",
            payment_attempts.c.status.in_(OPEN_PAYMENT_STATUSES),
        )
        .order_by(payment_attempts.c.id.desc())
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


def _cancel_returning_items(
    conn: Connection, order_id: int, now: datetime
) -> list[OrderItemRecord] | None:
    """Cancel the order and return its items, in one transaction; None if it cannot be."""
    if not ledger.cancel_order(conn, order_id, now):
        return None
    return get_order_items(conn, order_id)


def _create_order(
    conn: Connection, customer_id: int, items: list[NewOrderItem], now: datetime
) -> _OrderView:
    order = create_order(conn, customer_id, items, now)
    return _OrderView(order.id, order.reference, order.total, order.status)
