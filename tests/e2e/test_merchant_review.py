"""The merchant's way out of review, end to end on Telegram and on WhatsApp: /review,
/unmatched, /pending, /match and /resolve against the real server, the Daraja simulator,
real callbacks and a real database (SQLite and PostgreSQL).

Each test runs once per channel: ``side`` plays the customer and the merchant in the
fake Telegram Bot API or the fake WhatsApp Cloud API, and reads what each was sent.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.app import DATABASE, RECONCILER
from payments.phone import mask_msisdn
from payments.settlement import ArrivedMoney
from payments.simulator import rules
from payments.unmatched import UnmatchedReason, record_unmatched
from storage.schema import orders, payments, products, review_actions, unmatched_payments
from tests.conftest import RunningDuka
from tests.e2e import test_telegram_shop as tg
from tests.e2e import test_whatsapp_shop as wa
from tests.fakes.graph_api import FakeGraph, WaUser
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers import outbox_rows, payment_rows, wait_until

NEEDS_REVIEW_PHONE = "0712 000 009"  # the simulator pays the requested amount minus 1
STRANGER = "254799888777"  # a phone none of our pushes went to
# What the merchant desk answers starts with one of these; alerts from the outbox do not.
REPLY_STARTS = (
    "To review:",
    "Nothing to review",
    "Done:",
    "Not done:",
    "Waiting for payment",
    "No orders are waiting",
    "Send /",
    "Order ",
    "Not changed:",
)
HINT = "I did not understand that"


# --- the two channels, seen from the customer's and the merchant's phones --------------------


class ChatSide(abc.ABC):
    """One channel's customer and merchant, as the tests drive and observe them."""

    total: int  # the total of the order ``confirm_order`` places
    actor: str  # how review_actions names the merchant
    duka: RunningDuka

    @abc.abstractmethod
    async def confirm_order(self) -> None:
        """The customer fills a cart and confirms: an order awaiting payment."""

    @abc.abstractmethod
    async def pay_with(self, number: str) -> None:
        """At the phone step, the customer types ``number`` and agrees to pay."""

    @abc.abstractmethod
    def customer_texts(self) -> list[str]:
        """What the customer's chat shows now, oldest first."""

    @abc.abstractmethod
    def customer_deliveries(self, words: str) -> int:
        """How many times a message containing ``words`` was put in the customer's chat
        (a Telegram edit counts as a delivery)."""

    @abc.abstractmethod
    def merchant_notices(self) -> list[str]:
        """Everything the merchant was sent (template parameters joined by spaces)."""

    @abc.abstractmethod
    async def _merchant_writes(self, text: str) -> None: ...

    @abc.abstractmethod
    async def _customer_writes(self, text: str) -> None: ...

    @abc.abstractmethod
    def _merchant_texts(self) -> list[str]: ...

    async def merchant_sends(self, text: str) -> str:
        """The merchant sends a command; the desk's answer."""
        before = len(self._merchant_texts())

        def answered() -> bool:
            return any(t.startswith(REPLY_STARTS) for t in self._merchant_texts()[before:])

        await self._merchant_writes(text)
        await wait_until(answered, what=f"an answer to {text!r} in the merchant's chat")
        return next(t for t in self._merchant_texts()[before:] if t.startswith(REPLY_STARTS))

    async def customer_sends(self, text: str) -> str:
        """The customer sends ``text``; the bot's first answer in their chat."""
        before = len(self.customer_texts())
        await self._customer_writes(text)
        await wait_until(lambda: len(self.customer_texts()) > before, what=f"an answer to {text!r}")
        return self.customer_texts()[before]

    async def customer_sees(self, words: str, timeout: float = 5.0) -> str:  # noqa: ASYNC109
        await wait_until(
            lambda: any(words in t for t in self.customer_texts()),
            timeout,
            f"{words!r} in the customer's chat",
        )
        return next(t for t in self.customer_texts() if words in t)

    async def merchant_sees(self, *words: str) -> str:
        def found() -> str | None:
            return next((t for t in self.merchant_notices() if all(w in t for w in words)), None)

        await wait_until(lambda: found() is not None, what=f"{words} in the merchant's chat")
        return found() or ""


class TelegramSide(ChatSide):
    total = 270
    actor = f"telegram:{tg.MERCHANT}"

    def __init__(self, shop: tg.Shop) -> None:
        self.shop = shop
        self.duka = shop.duka
        self.fake = shop.telegram

    async def confirm_order(self) -> None:
        await tg.fill_cart_and_confirm(self.fake)

    async def pay_with(self, number: str) -> None:
        await tg.types_number(self.fake, tg.CUSTOMER, number)

    def customer_texts(self) -> list[str]:
        return self.fake.texts_to(tg.CUSTOMER)

    def customer_deliveries(self, words: str) -> int:
        return sum(
            words in str(call.params.get("text"))
            for call in self.fake.calls
            if call.method in {"sendMessage", "editMessageText"}
            and not call.failed
            and call.params.get("chat_id") == tg.CUSTOMER
        )

    def merchant_notices(self) -> list[str]:
        return self.fake.texts_to(tg.MERCHANT)

    def _merchant_texts(self) -> list[str]:
        return self.fake.texts_to(tg.MERCHANT)

    async def _merchant_writes(self, text: str) -> None:
        self.fake.user_sends_text(tg.MERCHANT, text, first_name="Mama Mboga")

    async def _customer_writes(self, text: str) -> None:
        self.fake.user_sends_text(tg.CUSTOMER, text)


MERCHANT_USER = WaUser(wa.MERCHANT_NUMBER, name="Mama Mboga")


class WhatsAppSide(ChatSide):
    total = 60
    actor = f"whatsapp:{wa.MERCHANT_NUMBER}"

    def __init__(self, shop: wa.Shop) -> None:
        self.shop = shop
        self.duka = shop.duka
        self.graph = shop.graph

    async def confirm_order(self) -> None:
        await wa.confirm_an_order(self.shop)

    async def pay_with(self, number: str) -> None:
        await wa.writes(self.shop, wa.WANJIRU, number)
        await wa.taps(self.shop, wa.WANJIRU, "Yes, pay")

    def customer_texts(self) -> list[str]:
        return self.graph.texts_to(wa.WANJIRU)

    def customer_deliveries(self, words: str) -> int:
        templates = [_template_text(t) for t in self.graph.templates_to(wa.WANJIRU)]
        return sum(words in t for t in [*self.customer_texts(), *templates])

    def merchant_notices(self) -> list[str]:
        templates = [_template_text(t) for t in self.graph.templates_to(MERCHANT_USER)]
        return [*self._merchant_texts(), *templates]

    def _merchant_texts(self) -> list[str]:
        return self.graph.texts_to(MERCHANT_USER)

    async def _merchant_writes(self, text: str) -> None:
        payload = self.graph.text(MERCHANT_USER, text)
        assert await self.graph.post_webhook(self.shop.webhook, payload) == 200

    async def _customer_writes(self, text: str) -> None:
        payload = self.graph.text(wa.WANJIRU, text)
        assert await self.graph.post_webhook(self.shop.webhook, payload) == 200


def _template_text(template: dict[str, Any]) -> str:
    values = [p["text"] for c in template.get("components", []) for p in c["parameters"]]
    return " ".join([template["name"], *values])


@pytest.fixture(params=["telegram", "whatsapp"])
async def side(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[ChatSide]:
    """A running Duka on one channel (the reconciler off: tests sweep when they choose)."""
    if request.param == "telegram":
        async with FakeTelegram() as telegram:
            shop = await tg.open_shop(database_url, tmp_path, telegram)
            try:
                yield TelegramSide(shop)
            finally:
                await shop.runner.cleanup()
    else:
        async with FakeGraph() as graph:
            wa_shop = await wa.open_shop(database_url, tmp_path, graph)
            try:
                yield WhatsAppSide(wa_shop)
            finally:
                await wa_shop.runner.cleanup()


# --- money and orders, through the real paths ------------------------------------------------


def daraja_paid_callback(checkout_id: str, receipt: str, amount: str, phone: str) -> bytes:
    """A successful STK callback exactly as Daraja writes it (Amount as ``270.00``)."""
    when = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return (
        '{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1",'
        f'"CheckoutRequestID":"{checkout_id}","ResultCode":0,'
        '"ResultDesc":"The service request is processed successfully.",'
        '"CallbackMetadata":{"Item":['
        f'{{"Name":"Amount","Value":{amount}}},'
        f'{{"Name":"MpesaReceiptNumber","Value":"{receipt}"}},'
        '{"Name":"Balance"},'
        f'{{"Name":"TransactionDate","Value":{when}}},'
        f'{{"Name":"PhoneNumber","Value":{phone}}}]'
        "}}}}"
    ).encode()


async def orphan_callback_arrives(
    duka: RunningDuka, receipt: str, amount: str, phone: str = STRANGER
) -> None:
    """Daraja reports money for a CheckoutRequestID that none of our attempts has."""
    body = daraja_paid_callback(f"ws_CO_orphan_{receipt}", receipt, amount, phone)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            duka.callback_url, content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200
    assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}


async def sweep_until_unmatched(duka: RunningDuka, receipt: str) -> Any:
    """Sweep as the reconciler does until the orphan is old enough to become unmatched money."""

    async def recorded() -> bool:
        await duka.app[RECONCILER].sweep()
        if await unmatched(duka, receipt) is not None:
            return True
        await asyncio.sleep(0.1)
        return False

    await wait_until(recorded, what=f"{receipt} to become unmatched money")
    return await unmatched(duka, receipt)


async def money_recorded_unmatched(duka: RunningDuka, receipt: str, amount: int) -> None:
    """Unmatched money written straight through ``record_unmatched`` (pure command tests)."""
    money = ArrivedMoney(
        source="stk_callback",
        receipt=receipt,
        amount=Decimal(amount),
        msisdn=STRANGER,
        masked_phone=mask_msisdn(STRANGER),
        transaction_at=datetime.now(UTC),
        checkout_request_id=f"ws_CO_orphan_{receipt}",
    )
    now = datetime.now(UTC)
    await duka.app[DATABASE].transaction(
        record_unmatched, money, UnmatchedReason.NO_ATTEMPT, "{}", now
    )


async def order_in_review(side: ChatSide) -> Any:
    """The customer pays KES 1 short (the simulator's …009 rule): the order needs review."""
    await side.confirm_order()
    await side.pay_with(NEEDS_REVIEW_PHONE)
    await side.customer_sees("The shop is checking it")
    order = await latest_order(side.duka)
    assert order.status == "needs_review"
    return order


# --- reading the database --------------------------------------------------------------------


async def latest_order(duka: RunningDuka) -> Any:
    async with duka.engine.connect() as conn:
        query = select(orders).order_by(orders.c.id.desc()).limit(1)
        return (await conn.execute(query)).one()


async def order_by_id(duka: RunningDuka, order_id: int) -> Any:
    async with duka.engine.connect() as conn:
        return (await conn.execute(select(orders).where(orders.c.id == order_id))).one()


async def paid_payments(duka: RunningDuka, order_id: int) -> list[Any]:
    query = (
        select(payments)
        .where(payments.c.order_id == order_id, payments.c.status == "paid")
        .order_by(payments.c.id)
    )
    async with duka.engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def unmatched(duka: RunningDuka, receipt: str) -> Any:
    query = select(unmatched_payments).where(unmatched_payments.c.receipt == receipt)
    async with duka.engine.connect() as conn:
        return (await conn.execute(query)).one_or_none()


async def audit_rows(duka: RunningDuka) -> list[Any]:
    async with duka.engine.connect() as conn:
        query = select(review_actions).order_by(review_actions.c.id)
        return list((await conn.execute(query)).all())


async def a_moment_later() -> None:
    """Give the dispatcher a moment, so that a message wrongly queued would have arrived."""
    await asyncio.sleep(0.3)


# --- 1. what waits for the merchant ----------------------------------------------------------


async def test_review_lists_the_order_in_review_and_the_unmatched_money(side: ChatSide) -> None:
    """/review shows both; /unmatched only the money; /pending adds both to its list."""
    duka = side.duka
    await orphan_callback_arrives(duka, "TKR1A2B3C4", "500.00")
    order = await order_in_review(side)
    [paid] = await paid_payments(duka, order.id)
    money = await sweep_until_unmatched(duka, "TKR1A2B3C4")
    assert (money.status, money.amount, money.reason) == ("open", 500, "no_attempt")
    await side.merchant_sees("KES 500", "07XX XXX 777", "TKR1A2B3C4")

    review = await side.merchant_sends("/review")
    assert review.startswith("To review:")
    money_line = "• TKR1A2B3C4 KES 500 from 07XX XXX 777"
    assert money_line in review
    assert "unmatched: no payment attempt of ours fits it" in review
    order_line = (
        f"• {order.reference} being checked KES {side.total}: "
        f"paid KES {side.total - 1} ({paid.mpesa_receipt})"
    )
    assert order_line in review

    only_money = await side.merchant_sends("/unmatched")
    assert money_line in only_money
    assert order.reference not in only_money

    pending = await side.merchant_sends("/pending")
    assert "No orders are waiting for payment." in pending
    assert "To review:" in pending
    assert money_line in pending
    assert order_line in pending


# --- 2. and 3. deciding an order in review ---------------------------------------------------


async def test_resolve_paid_pays_the_order_and_tells_the_customer_once(side: ChatSide) -> None:
    """/resolve REF paid: the order is paid, the customer gets "Paid!" once, and it is audited."""
    duka = side.duka
    order = await order_in_review(side)
    [paid] = await paid_payments(duka, order.id)

    answer = await side.merchant_sends(f"/resolve {order.reference} paid seen in the statement")
    assert answer == f"Done: order {order.reference} is now paid (paid)."
    message = await side.customer_sees("Paid!")
    assert f"Paid! KES {side.total - 1} for order {order.reference}." in message
    assert f"M-Pesa receipt: {paid.mpesa_receipt}" in message
    assert (await order_by_id(duka, order.id)).status == "paid"
    [audit] = await audit_rows(duka)
    assert (audit.actor, audit.subject, audit.reference, audit.action, audit.note) == (
        side.actor,
        "order",
        order.reference,
        "paid",
        "seen in the statement",
    )
    assert audit.order_id == order.id
    await a_moment_later()
    assert side.customer_deliveries("Paid!") == 1
    assert side.customer_deliveries(f"Order {order.reference}:") == 0
    assert await side.merchant_sends("/review") == (
        "Nothing to review: no orders in review and no unmatched money."
    )


async def test_resolve_refund_cancels_the_order_and_shows_the_note(side: ChatSide) -> None:
    """/resolve REF refund NOTE: the order is cancelled, the customer is told with the note."""
    duka = side.duka
    order = await order_in_review(side)

    answer = await side.merchant_sends(f"/resolve {order.reference} refund Tutarudisha kesho")
    assert answer == f"Done: order {order.reference} is now cancelled (refund)."
    message = await side.customer_sees(f"Order {order.reference}:")
    assert message == (
        f"Order {order.reference}: the shop will refund your payment of "
        f"KES {side.total - 1}; the order is cancelled.\n"
        "Note from the shop: Tutarudisha kesho"
    )
    assert (await order_by_id(duka, order.id)).status == "cancelled"
    [audit] = await audit_rows(duka)
    assert (audit.actor, audit.subject, audit.reference, audit.action, audit.note) == (
        side.actor,
        "order",
        order.reference,
        "refund",
        "Tutarudisha kesho",
    )
    await a_moment_later()
    assert side.customer_deliveries("Paid!") == 0
    assert side.customer_deliveries("the shop will refund") == 1


# --- 4. and 5. attaching unmatched money to an order -----------------------------------------


async def test_match_with_the_exact_amount_pays_the_order(side: ChatSide) -> None:
    """/match RECEIPT REF: the order is paid with that receipt, both sides are told, the money
    is matched; matching the same receipt again is refused."""
    duka = side.duka
    await orphan_callback_arrives(duka, "TKM5N6P7Q8", f"{side.total}.00")
    # The customer stops at the phone step; M-Pesa reports money no attempt of ours explains.
    await side.confirm_order()
    order = await latest_order(duka)
    assert order.status == "awaiting_payment"
    await sweep_until_unmatched(duka, "TKM5N6P7Q8")

    matched_at = asyncio.get_running_loop().time()
    answer = await side.merchant_sends(f"/match tkm5n6p7q8 {order.reference.lower()}")
    assert answer == f"Done: TKM5N6P7Q8 attached to order {order.reference}, which is now paid."
    assert (await order_by_id(duka, order.id)).status == "paid"
    [payment] = await paid_payments(duka, order.id)
    assert (payment.mpesa_receipt, payment.paid_amount) == ("TKM5N6P7Q8", side.total)
    money = await unmatched(duka, "TKM5N6P7Q8")
    assert (money.status, money.order_id, money.resolved_by) == ("matched", order.id, side.actor)
    [audit] = await audit_rows(duka)
    assert (audit.actor, audit.subject, audit.reference, audit.order_id) == (
        side.actor,
        "unmatched",
        "TKM5N6P7Q8",
        order.id,
    )
    assert audit.action == f"match {order.reference}"
    await side.merchant_sees("New paid order", order.reference, "TKM5N6P7Q8")

    again = await side.merchant_sends(f"/match TKM5N6P7Q8 {order.reference}")
    assert again == "Not done: TKM5N6P7Q8 is already matched"
    assert len(await audit_rows(duka)) == 1
    assert len(await paid_payments(duka, order.id)) == 1

    # The customer is told too, and promptly: the desk wakes the dispatcher at once.
    message = await side.customer_sees("Paid!", timeout=15)
    told_after = asyncio.get_running_loop().time() - matched_at
    assert f"Paid! KES {side.total} for order {order.reference}." in message
    assert "M-Pesa receipt: TKM5N6P7Q8" in message
    await a_moment_later()
    assert side.customer_deliveries("Paid!") == 1
    waits = [
        (row["attempts"], row["last_error"])
        for row in await outbox_rows(duka.engine, order.id)
        if row["kind"] == "payment_paid"
    ]
    assert told_after < 3.0, (
        f"the customer's Paid! came {told_after:.1f} s after /match; "
        f"its outbox row (attempts, last error): {waits}"
    )


async def test_match_with_another_amount_is_refused_and_changes_nothing(side: ChatSide) -> None:
    """/match of money KES 230 over the total names the difference and leaves all as it was."""
    duka = side.duka
    received = side.total + 230
    await orphan_callback_arrives(duka, "TKD9E8F7G6", f"{received}.00")
    await side.confirm_order()
    order = await latest_order(duka)
    await sweep_until_unmatched(duka, "TKD9E8F7G6")

    answer = await side.merchant_sends(f"/match TKD9E8F7G6 {order.reference}")
    assert answer.startswith("Not done: ")
    assert (await order_by_id(duka, order.id)).status == "awaiting_payment"
    assert await paid_payments(duka, order.id) == []
    money = await unmatched(duka, "TKD9E8F7G6")
    assert (money.status, money.order_id) == ("open", None)
    assert await audit_rows(duka) == []
    await a_moment_later()
    assert side.customer_deliveries("Paid!") == 0
    assert answer == (
        f"Not done: TKD9E8F7G6 is KES {received:,} but order {order.reference} is "
        f"KES {side.total:,}: KES 230 more than the order"
    )


async def test_match_with_less_money_names_the_shortfall(side: ChatSide) -> None:
    """/match of money short of the total says by how much, and nothing changes."""
    duka = side.duka
    await side.confirm_order()
    order = await latest_order(duka)
    await money_recorded_unmatched(duka, "TKS1S2S3S4", side.total - 10)

    answer = await side.merchant_sends(f"/match TKS1S2S3S4 {order.reference}")
    assert answer.endswith(": KES 10 less than the order")
    assert (await order_by_id(duka, order.id)).status == "awaiting_payment"
    assert (await unmatched(duka, "TKS1S2S3S4")).status == "open"
    assert await audit_rows(duka) == []


# --- 6. closing unmatched money by hand ------------------------------------------------------


async def test_resolve_receipt_kept_and_refunded_close_the_money(side: ChatSide) -> None:
    """/resolve RECEIPT kept|refunded NOTE closes unmatched money, with an audit row each."""
    duka = side.duka
    await money_recorded_unmatched(duka, "TKK1K2K3K4", 150)
    await money_recorded_unmatched(duka, "TKF1F2F3F4", 80)

    kept = await side.merchant_sends("/resolve TKK1K2K3K4 kept tip from a regular")
    assert kept.startswith("Done: TKK1K2K3K4")
    assert kept.endswith("marked kept.")
    refunded = await side.merchant_sends("/resolve tkf1f2f3f4 refunded sent back by M-Pesa")
    assert refunded.startswith("Done: TKF1F2F3F4")
    assert refunded.endswith("marked refunded.")

    for receipt, status, note in (
        ("TKK1K2K3K4", "kept", "tip from a regular"),
        ("TKF1F2F3F4", "refunded", "sent back by M-Pesa"),
    ):
        money = await unmatched(duka, receipt)
        assert (money.status, money.resolved_by, money.note) == (status, side.actor, note)
        assert money.resolved_at is not None
        assert money.order_id is None
    audits = [(a.actor, a.subject, a.reference, a.action, a.note) for a in await audit_rows(duka)]
    assert audits == [
        (side.actor, "unmatched", "TKK1K2K3K4", "kept", "tip from a regular"),
        (side.actor, "unmatched", "TKF1F2F3F4", "refunded", "sent back by M-Pesa"),
    ]
    assert await side.merchant_sends("/unmatched") == (
        "Nothing to review: no orders in review and no unmatched money."
    )
    again = await side.merchant_sends("/resolve TKK1K2K3K4 refunded")
    assert again == "Not done: TKK1K2K3K4 is already kept"
    assert len(await audit_rows(duka)) == 2


# --- 7. customers cannot use the desk --------------------------------------------------------


async def test_a_customer_sending_merchant_commands_gets_no_merchant_data(
    side: ChatSide,
) -> None:
    """/review, /unmatched, /match and /resolve from a customer's chat: the hint, no change."""
    duka = side.duka
    order = await order_in_review(side)
    await money_recorded_unmatched(duka, "TKC1C2C3C4", side.total - 1)

    for command in (
        "/review",
        "/unmatched",
        "/pending",
        f"/match TKC1C2C3C4 {order.reference}",
        f"/resolve {order.reference} paid",
        f"/resolve {order.reference} refund",
        "/resolve TKC1C2C3C4 kept",
    ):
        answer = await side.customer_sends(command)
        assert HINT in answer, (command, answer)
    await a_moment_later()
    for text in side.customer_texts():
        assert "TKC1C2C3C4" not in text
        assert not text.startswith(REPLY_STARTS)
    assert (await order_by_id(duka, order.id)).status == "needs_review"
    assert (await unmatched(duka, "TKC1C2C3C4")).status == "open"
    assert await audit_rows(duka) == []
    assert side.customer_deliveries("Paid!") == 0


async def test_a_customer_trying_every_shop_command_changes_and_learns_nothing(
    side: ChatSide,
) -> None:
    """The shop's own commands (stock, prices, moving orders on, refunds, reports, the CSV)
    from a customer's chat: answered as a customer's words, and nothing changes."""
    duka = side.duka
    order = await order_in_review(side)
    ref = order.reference
    async with duka.engine.connect() as conn:
        before = (await conn.execute(select(products).order_by(products.c.sku))).all()
    for command in (
        "/today",
        f"/order {ref}",
        "/stock",
        "/stock unga 1",
        "/price unga 1",
        "/hide unga",
        "/show unga",
        f"/ready {ref}",
        f"/out {ref}",
        f"/delivered {ref}",
        f"/collected {ref}",
        f"/cancel {ref} no reason",
        f"/refunded {ref}",
        "/report week",
        "/export week",
    ):
        answer = await side.customer_sends(command)
        assert not answer.startswith(REPLY_STARTS), (command, answer)
        assert ref not in answer or command.startswith("/cancel"), (command, answer)
    await a_moment_later()
    for text in side.customer_texts():
        assert not text.startswith(("Paid today", "Paid 20", "No order was paid", "Stock, "))
    after_order = await order_by_id(duka, order.id)
    assert (after_order.status, after_order.fulfilment) == ("needs_review", None)
    async with duka.engine.connect() as conn:
        assert (await conn.execute(select(products).order_by(products.c.sku))).all() == before
    assert await audit_rows(duka) == []


# --- 8. mistakes in the commands -------------------------------------------------------------


async def test_bad_usage_gets_the_usage_or_the_refusal_and_changes_nothing(
    side: ChatSide,
) -> None:
    """Missing arguments, unknown decisions, references and receipts are refused in words."""
    duka = side.duka
    order = await order_in_review(side)
    await money_recorded_unmatched(duka, "TKU1U2U3U4", 300)
    resolve_usage = (
        "Not done: Send /resolve REF paid|refund|cancel [note] for an order, or "
        "/resolve RECEIPT refunded|kept [note] for unmatched money."
    )
    cases = {
        "/match TKU1U2U3U4": "Not done: Send /match RECEIPT REF, e.g. /match QKX1A2B3C4 DK-7KX3M9.",
        "/match": "Not done: Send /match RECEIPT REF, e.g. /match QKX1A2B3C4 DK-7KX3M9.",
        "/resolve": resolve_usage,
        f"/resolve {order.reference}": resolve_usage,
        f"/resolve {order.reference} maybe": resolve_usage,
        "/resolve TKU1U2U3U4 paid": resolve_usage,
        "/resolve DK-XXXXXX paid": "Not done: no order DK-XXXXXX",
        # "kept" is said of money: the receipt is named as unknown.
        "/resolve TKNOSUCH99 kept": "Not done: no unmatched payment has receipt TKNOSUCH99",
        f"/match TKNOSUCH99 {order.reference}": (
            "Not done: no unmatched payment has receipt TKNOSUCH99"
        ),
        "/match TKU1U2U3U4 DK-XXXXXX": "Not done: no order DK-XXXXXX",
        f"/match TKU1U2U3U4 {order.reference}": (
            f"Not done: order {order.reference} is in review, not waiting for payment; "
            f"use /resolve {order.reference}"
        ),
    }
    for command, expected in cases.items():
        assert await side.merchant_sends(command) == expected, command
    assert (await order_by_id(duka, order.id)).status == "needs_review"
    assert (await unmatched(duka, "TKU1U2U3U4")).status == "open"
    assert await audit_rows(duka) == []
    await a_moment_later()
    assert side.customer_deliveries(f"Order {order.reference}:") == 0
    assert side.customer_deliveries("Paid!") == 0


async def test_an_order_already_decided_cannot_be_decided_again(side: ChatSide) -> None:
    """A second /resolve of the same order is refused and queues nothing."""
    duka = side.duka
    order = await order_in_review(side)
    await side.merchant_sends(f"/resolve {order.reference} cancel")
    await side.customer_sees("the shop has cancelled this order.")
    again = await side.merchant_sends(f"/resolve {order.reference} paid")
    assert again == f"Not done: order {order.reference} is cancelled; there is nothing to decide"
    assert (await order_by_id(duka, order.id)).status == "cancelled"
    assert [a.action for a in await audit_rows(duka)] == ["cancel"]
    await a_moment_later()
    assert side.customer_deliveries("the shop has cancelled this order.") == 1


async def test_match_while_the_orders_push_is_open_does_not_pay_the_order_twice(
    side: ChatSide,
) -> None:
    """/match while the order's PIN prompt is open: once the PIN is entered, the order must not
    carry two payments (/resolve refuses in this state with "under way"; /match does not)."""
    duka = side.duka
    await orphan_callback_arrives(duka, "TKW1W2W3W4", f"{side.total}.00")
    # The money is unmatched first, so that the push below is still open (not yet expired
    # by the sweeps) when the merchant sends /match.
    await sweep_until_unmatched(duka, "TKW1W2W3W4")
    await side.merchant_sees("TKW1W2W3W4")  # its alert is out before the customer starts
    await side.confirm_order()
    duka.simulator.force_next_outcome(dataclasses.replace(rules.SUCCESS, never_resolves=True))
    await side.pay_with("0712 345 678")
    await side.customer_sees("Check your phone")
    order = await latest_order(duka)
    [push] = await payment_rows(duka.engine, order.id)
    assert push.status == "pending"

    answer = await side.merchant_sends(f"/match TKW1W2W3W4 {order.reference}")
    duka.simulator.resolve(push.checkout_request_id)  # the customer enters the PIN

    async def push_paid() -> bool:
        rows = await payment_rows(duka.engine, order.id)
        return any(r.id == push.id and r.status == "paid" for r in rows)

    await wait_until(push_paid, what="the open push to be paid")
    receipts = [p.mpesa_receipt for p in await paid_payments(duka, order.id)]
    assert len(receipts) == 1, (
        f"order paid twice ({receipts}); /match answered {answer!r}; "
        f"the customer saw {side.customer_texts()[-2:]}"
    )
