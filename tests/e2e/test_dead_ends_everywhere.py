"""No dead ends, over the wire: every fix of tests/integration/test_no_dead_ends.py, proven on
both real channels through Duka's real HTTP paths (Telegram: PTB polling the fake Bot API;
WhatsApp: signed webhooks in, the fake Graph API out).

Each scenario is written once against ``Chat``, a customer's view of one channel, and runs on
Telegram and on WhatsApp. The two differ where the platforms do: Telegram edits the message
whose button was pressed and keeps old buttons only on messages nobody edited; WhatsApp
cannot edit (every answer is a new message) and shows more than three buttons as a list.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.texts import kes, reason_text, say, status_text
from payments.result_codes import FailureReason
from storage.schema import orders
from tests.conftest import RunningDuka
from tests.e2e import test_telegram_shop as tg
from tests.e2e import test_whatsapp_shop as wa
from tests.fakes.graph_api import FakeGraph, WaUser
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers import payment_rows

EN = "en"
SHOP_NAME = "Test Duka"  # tests.conftest.TEST_TOML
# The cart every checkout below makes: 2 × Sukuma wiki and 1 × Unga 2kg (tests.e2e CATALOG).
TOTAL = 270
ASK_PHONE = say(EN, "ask_phone", total=kes(TOTAL))
CHECK_PHONE = say(EN, "check_phone", total=kes(TOTAL), shop=SHOP_NAME)
ITEM_LINES = f"2 × Sukuma wiki = {kes(60)}\n1 × Unga 2kg = {kes(210)}"
CART = say(
    EN,
    "cart",
    lines="\n".join(
        [
            say(EN, "cart_line", quantity=2, name="Sukuma wiki", price=kes(30), line_total=kes(60)),
            say(EN, "cart_line", quantity=1, name="Unga 2kg", price=kes(210), line_total=kes(210)),
        ]
    ),
    total=kes(TOTAL),
)
# What a payment with these numbers does in the simulator (payments/simulator/rules.py).
PAYS = "0712345678"
CANCELS = "0712 000 001"
NEVER_ANSWERS = "0712 000 007"
# Telegram's message sends and edits: every answer the shop gives is one of these.
TELEGRAM_ANSWERS = frozenset({"sendMessage", "editMessageText"})
TELEGRAM_CHANGES = frozenset({"sendMessage", "editMessageText", "editMessageReplyMarkup"})


@dataclass(frozen=True)
class Order:
    id: int
    reference: str
    status: str
    total: int


class Chat(ABC):
    """One customer's chat with the shop on one channel, as the customer sees and uses it.

    Every action waits for the shop's answer to it (a send or an edit, even a refused one),
    so the next look at the screen sees that answer; waits are bounded by the fakes' own
    ``wait_for`` timeouts, which list what was sent when they expire.
    """

    channel: str

    def __init__(self, duka: RunningDuka) -> None:
        self.duka = duka

    # --- what each channel provides ------------------------------------------------------

    @abstractmethod
    def _answers(self) -> int:
        """How many messages the shop sent or edited in this chat, failed attempts included."""

    @abstractmethod
    def _latest(self) -> tuple[str, list[str]]:
        """(text, button labels) of the message the shop sent or changed last."""

    @abstractmethod
    def texts(self) -> list[str]:
        """Every message's text, as the customer sees it now, oldest first."""

    @abstractmethod
    async def _wait(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds (bounded; fails with what was sent)."""

    @abstractmethod
    async def _write(self, text: str) -> None: ...

    @abstractmethod
    async def _press(self, label: str, *, latest_only: bool) -> None:
        """Press the button whose label contains ``label``: on the latest message only, or
        on the newest message that carries one."""

    @abstractmethod
    async def _send_sticker(self) -> None: ...

    # --- what a scenario uses ------------------------------------------------------------

    def latest_text(self) -> str:
        return self._latest()[0]

    def labels(self) -> list[str]:
        """The buttons (or list rows) of the latest message."""
        return self._latest()[1]

    async def says(self, text: str) -> None:
        await self._answered(lambda: self._write(text))

    async def taps(self, label: str) -> None:
        """Tap ``label`` on the latest message, once it is there."""
        await self._wait(lambda: any(label in shown for shown in self.labels()))
        await self._answered(lambda: self._press(label, latest_only=True))

    async def taps_again(self, label: str) -> None:
        """Tap ``label`` on the newest message still showing it, however old: a stale button
        (WhatsApp keeps every message's buttons; Telegram those of messages not edited)."""
        await self._answered(lambda: self._press(label, latest_only=False))

    async def sends_sticker(self) -> None:
        await self._answered(self._send_sticker)

    async def sees(self, words: str, times: int = 1) -> None:
        await self._wait(lambda: sum(words in text for text in self.texts()) >= times)

    async def _answered(self, action: Callable[[], Awaitable[None]]) -> None:
        before = self._answers()
        await action()
        await self._wait(lambda: self._answers() > before)

    async def orders(self) -> list[Order]:
        """The shop's orders (this chat's customer is the only one), oldest first."""
        query = select(orders.c.id, orders.c.reference, orders.c.status, orders.c.total)
        async with self.duka.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(orders.c.id))).all()
        return [Order(row.id, row.reference, row.status, row.total) for row in rows]


class TelegramChat(Chat):
    channel = "telegram"

    def __init__(self, duka: RunningDuka, fake: FakeTelegram, chat_id: int = tg.CUSTOMER) -> None:
        super().__init__(duka)
        self.fake = fake
        self.chat_id = chat_id

    def _answers(self) -> int:
        return sum(
            c.method in TELEGRAM_ANSWERS and c.params.get("chat_id") == self.chat_id
            for c in self.fake.calls
        )

    def _latest_message(self) -> dict[str, Any] | None:
        for call in reversed(self.fake.calls):
            if (
                call.failed
                or call.method not in TELEGRAM_CHANGES
                or call.params.get("chat_id") != self.chat_id
            ):
                continue
            sent = call.method == "sendMessage"
            message_id = call.result["message_id"] if sent else call.params.get("message_id")
            return next(
                (m for m in self.fake.messages_to(self.chat_id) if m["message_id"] == message_id),
                None,
            )
        return None

    def _latest(self) -> tuple[str, list[str]]:
        message = self._latest_message()
        if message is None:
            return "", []
        return str(message.get("text", "")), [label for label, _ in _inline_buttons(message)]

    def texts(self) -> list[str]:
        return self.fake.texts_to(self.chat_id)

    async def _wait(self, condition: Callable[[], bool]) -> None:
        await self.fake.wait_for(lambda _: condition())

    async def _write(self, text: str) -> None:
        self.fake.user_sends_text(self.chat_id, text)

    async def _press(self, label: str, *, latest_only: bool) -> None:
        latest = self._latest_message()
        if latest_only:
            messages = [latest] if latest is not None else []
        else:
            messages = list(reversed(self.fake.messages_to(self.chat_id)))
        for message in messages:
            for shown, data in _inline_buttons(message):
                if label in shown:
                    self.fake.user_presses_button(self.chat_id, data, message["message_id"])
                    return
        on_screen = [[shown for shown, _ in _inline_buttons(m)] for m in messages]
        raise AssertionError(f"no {label!r} button on screen; buttons: {on_screen}")

    async def _send_sticker(self) -> None:
        self.fake.user_sends_sticker(self.chat_id)


def _inline_buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return [(str(b["text"]), str(b["callback_data"])) for row in rows for b in row]


class WhatsAppChat(Chat):
    channel = "whatsapp"

    def __init__(self, shop: wa.Shop, user: WaUser = wa.WANJIRU) -> None:
        super().__init__(shop.duka)
        self.shop = shop
        self.graph: FakeGraph = shop.graph
        self.user = user

    def _answers(self) -> int:
        return len(self.graph.sent_to(self.user))

    def _shown(self) -> list[dict[str, Any]]:
        """The messages the customer received (bodies of text or interactive), newest first."""
        return [
            {"type": s.type, **s.body}
            for s in reversed(self.graph.sent_to(self.user))
            if s.accepted and s.type in {"text", "interactive"}
        ]

    def _latest(self) -> tuple[str, list[str]]:
        shown = self._shown()
        if not shown:
            return "", []
        message = shown[0]
        if message["type"] == "text":
            return str(message["text"]["body"]), []
        interactive = message["interactive"]
        return str(interactive["body"]["text"]), [title for _, _, title in wa.choices(interactive)]

    def texts(self) -> list[str]:
        return self.graph.texts_to(self.user)

    async def _wait(self, condition: Callable[[], bool]) -> None:
        await self.graph.wait_for(lambda _: condition())

    async def _post(self, payload: dict[str, Any]) -> None:
        assert await self.graph.post_webhook(self.shop.webhook, payload) == 200

    async def _write(self, text: str) -> None:
        await self._post(self.graph.text(self.user, text))

    async def _press(self, label: str, *, latest_only: bool) -> None:
        shown = self._shown()
        messages = shown[:1] if latest_only else shown
        interactive = [m["interactive"] for m in messages if m["type"] == "interactive"]
        for body in interactive:
            for kind, choice_id, title in wa.choices(body):
                if label in title:
                    if kind == "button":
                        payload = self.graph.button_reply(self.user, choice_id)
                    else:
                        payload = self.graph.list_reply(self.user, choice_id)
                    await self._post(payload)
                    return
        on_screen = [[title for _, _, title in wa.choices(body)] for body in interactive]
        raise AssertionError(f"no {label!r} button or row on screen; choices: {on_screen}")

    async def _send_sticker(self) -> None:
        await self._post(self.graph.unsupported(self.user, "sticker"))


@pytest.fixture(params=["telegram", "whatsapp"])
async def chat(
    request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Chat]:
    """A customer's chat with a running shop, on each channel (SQLite: the conversation,
    not the database, is what these tests are about; both databases are covered by
    tests/integration/test_no_dead_ends.py)."""
    if request.param == "telegram":
        async with FakeTelegram() as fake:
            telegram_shop = await tg.open_shop(sqlite_url, tmp_path, fake)
            try:
                yield TelegramChat(telegram_shop.duka, fake)
            finally:
                await telegram_shop.runner.cleanup()
    else:
        async with FakeGraph() as graph:
            whatsapp_shop = await wa.open_shop(sqlite_url, tmp_path, graph)
            try:
                yield WhatsAppChat(whatsapp_shop)
            finally:
                await whatsapp_shop.runner.cleanup()


# --- steps every scenario shares ------------------------------------------------------------


async def fill_cart_and_confirm(chat: Chat) -> None:
    """2 × Sukuma wiki and 1 × Unga 2kg, checked out and confirmed: the phone question."""
    await chat.says("/start")
    await chat.sees(say(EN, "welcome", shop=SHOP_NAME))
    await chat.taps("Vegetables")
    await chat.taps("Sukuma wiki")
    await chat.taps("+")
    await chat.taps("Add to cart")
    await chat.taps("Menu")
    await chat.taps("Staples")
    await chat.taps("Unga 2kg")
    await chat.taps("Add to cart")
    await chat.taps("Checkout")
    assert chat.latest_text().endswith(f"Total: {kes(TOTAL)}\n\nConfirm to pay with M-Pesa.")
    await chat.taps("Confirm order")
    assert chat.latest_text() == ASK_PHONE


async def pays_from(chat: Chat, number: str) -> None:
    """Type the number, and say yes to it (a typed number is always confirmed)."""
    await chat.says(number)
    await chat.taps("Yes, pay")
    await chat.sees(CHECK_PHONE)


async def the_order(chat: Chat) -> Order:
    [order] = await chat.orders()
    return order


def failed_text(order: Order, reason: FailureReason) -> str:
    return say(EN, "failed", reference=order.reference, reason=reason_text(EN, reason))


def order_line(order: Order) -> str:
    status = status_text(EN, order.status)
    return say(EN, "order_line", reference=order.reference, total=kes(order.total), status=status)


# --- the scenarios ----------------------------------------------------------------------------


async def test_paid_carries_menu_and_menu_opens_the_shop_below_the_receipt(chat: Chat) -> None:
    await fill_cart_and_confirm(chat)
    await pays_from(chat, PAYS)
    order = await the_order(chat)
    await chat.sees("Paid!")
    [payment] = await payment_rows(chat.duka.engine, order.id)
    paid = say(
        EN,
        "paid",
        amount=kes(TOTAL),
        reference=order.reference,
        receipt=payment.mpesa_receipt,
        lines=ITEM_LINES,
    )
    assert chat.latest_text() == paid
    assert chat.labels() == ["Menu"]
    await chat.taps("Menu")
    assert chat.latest_text() == say(EN, "choose_category")
    assert chat.labels() == ["Vegetables", "Staples", "Cart"]
    assert paid in chat.texts(), "the receipt must stay in the chat, above the menu"


async def test_failed_payment_offers_next_steps_and_cancel_puts_items_back(chat: Chat) -> None:
    await fill_cart_and_confirm(chat)
    await pays_from(chat, CANCELS)
    order = await the_order(chat)
    failed = failed_text(order, FailureReason.CANCELLED)
    await chat.sees(failed)
    assert chat.latest_text() == failed
    assert chat.labels() == ["Try again", "Use another number", "Cancel order"]
    await chat.taps("Cancel order")
    assert chat.latest_text() == say(EN, "order_cancelled_to_cart", reference=order.reference)
    assert chat.labels() == ["Cart (3)", "Menu"]
    assert (await the_order(chat)).status == "cancelled"
    await chat.taps("Cart")
    assert chat.latest_text() == CART
    assert len(chat.duka.simulator.push_requests) == 1


async def test_orders_lists_unpaid_orders_with_pay_and_cancel_and_pay_resumes(
    chat: Chat,
) -> None:
    """Two unpaid orders: both can be paid or cancelled from /orders, Menu comes last, and
    Pay on the older one asks for the number to pay *its* total, and pays it."""
    await fill_cart_and_confirm(chat)  # KES 270, left at its phone question
    await chat.says("/start")
    await chat.taps("Staples")
    await chat.taps("Unga 2kg")
    await chat.taps("Add to cart")
    await chat.taps("Checkout")
    await chat.taps("Confirm order")  # KES 210
    older, newer = await chat.orders()
    assert (older.total, newer.total) == (TOTAL, 210)

    await chat.says("/orders")
    lines = "\n".join([order_line(newer), order_line(older)])
    assert chat.latest_text() == say(EN, "orders", lines=lines)
    assert chat.labels() == [
        f"Pay {newer.reference}",
        f"Cancel {newer.reference}",
        f"Pay {older.reference}",
        f"Cancel {older.reference}",
        "Menu",
    ]
    await chat.taps(f"Pay {older.reference}")
    assert chat.latest_text() == ASK_PHONE
    await pays_from(chat, PAYS)
    await chat.sees(f"Paid! {kes(TOTAL)} for order {older.reference}.")
    [push] = chat.duka.simulator.push_requests
    assert push["AccountReference"] == older.reference


async def test_stale_yes_pay_and_pay_from_orders_say_the_prompt_waits_for_the_pin(
    chat: Chat,
) -> None:
    await fill_cart_and_confirm(chat)
    await pays_from(chat, NEVER_ANSWERS)
    order = await the_order(chat)
    waiting = say(EN, "payment_in_progress", reference=order.reference)

    await chat.taps_again("Yes, pay")
    assert chat.latest_text() == waiting
    assert chat.labels() == ["Menu"]

    await chat.says("/orders")
    assert chat.labels() == [f"Pay {order.reference}", f"Cancel {order.reference}", "Menu"]
    await chat.taps(f"Pay {order.reference}")
    assert chat.latest_text() == waiting, "Pay on an order whose prompt is open: say so at once"
    assert chat.labels() == ["Menu"]
    assert len(chat.duka.simulator.push_requests) == 1


async def test_try_again_on_a_cancelled_order_says_so_and_offers_the_cart(chat: Chat) -> None:
    await fill_cart_and_confirm(chat)
    await pays_from(chat, CANCELS)
    order = await the_order(chat)
    await chat.sees(failed_text(order, FailureReason.CANCELLED))
    # Cancelled from /orders, so the failed message (and its Try again) stays on screen.
    await chat.says("/orders")
    await chat.taps(f"Cancel {order.reference}")
    assert chat.latest_text() == say(EN, "order_cancelled_to_cart", reference=order.reference)

    await chat.taps_again("Try again")
    assert chat.latest_text() == say(EN, "retry_cancelled", reference=order.reference)
    assert chat.labels() == ["Cart (3)", "Menu"]
    assert len(chat.duka.simulator.push_requests) == 1
    await chat.taps("Cart")
    assert chat.latest_text() == CART


async def test_second_confirm_shows_the_phone_question_not_an_empty_cart(chat: Chat) -> None:
    await fill_cart_and_confirm(chat)
    await chat.taps_again("Confirm order")  # on the order summary, above the phone question
    await chat.sees(ASK_PHONE, times=2)
    assert chat.latest_text() == ASK_PHONE
    assert not any(say(EN, "cart_empty") in text for text in chat.texts())
    order = await the_order(chat)  # still one order
    await pays_from(chat, PAYS)
    await chat.sees(f"Paid! {kes(TOTAL)} for order {order.reference}.")


async def test_cancel_command_after_the_order_was_created_cancels_it(chat: Chat) -> None:
    await fill_cart_and_confirm(chat)
    await chat.says("/cancel")
    order = await the_order(chat)
    assert chat.latest_text() == say(EN, "order_cancelled_to_cart", reference=order.reference)
    assert chat.labels() == ["Cart (3)", "Menu"]
    assert order.status == "cancelled"
    await chat.taps("Cart")
    assert chat.latest_text() == CART


async def test_quantity_cap_is_stated_and_minus_at_one_offers_to_leave_out_or_remove(
    chat: Chat,
) -> None:
    unga = "Unga 2kg"
    capped = [
        say(EN, "quantity", quantity=50, total=kes(50 * 210)),
        say(EN, "quantity_cap", count=50, name=unga),
    ]
    await chat.says("/start")
    await chat.taps("Staples")
    await chat.taps(unga)
    await chat.says("50")
    assert chat.latest_text().splitlines()[-2:] == capped
    await chat.taps("+")
    assert chat.latest_text().splitlines()[-2:] == capped
    assert not any("Quantity: 51" in text for text in chat.texts())

    await chat.says("1")
    assert chat.latest_text().splitlines()[-1] == say(EN, "quantity", quantity=1, total=kes(210))
    await chat.taps("−")
    assert chat.latest_text() == say(EN, "leave_out_offer", name=unga)
    assert chat.labels() == ["Leave it out", "Add to cart"]
    await chat.taps("Leave it out")
    assert chat.latest_text() == say(EN, "category_products", category="Staples")

    # In the cart already: "−" at 1 offers to remove it.
    await chat.taps(unga)
    await chat.taps("Add to cart")
    await chat.taps("Menu")
    await chat.taps("Staples")
    await chat.taps(unga)
    await chat.taps("−")
    assert chat.latest_text() == say(EN, "remove_offer", name=unga)
    assert chat.labels() == ["Remove", "Keep"]
    await chat.taps("Remove")
    assert chat.latest_text() == say(EN, "cart_empty")
    assert chat.labels() == ["Menu"]


async def test_not_understood_and_stickers_come_with_menu(chat: Chat) -> None:
    await chat.says("when do you deliver to Kilimani estate")
    assert chat.latest_text() == say(EN, "hint")
    assert chat.labels() == ["Menu"]
    await chat.sends_sticker()
    assert chat.latest_text() == say(EN, "only_text")
    assert chat.labels() == ["Menu"]
    await chat.taps("Menu")
    assert chat.latest_text() == say(EN, "choose_category")
