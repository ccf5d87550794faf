"""A Telegram customer shops and pays, end to end: the real server, PTB polling a fake
Bot API on 127.0.0.1, the Daraja simulator, and a real database."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from bot.app import DATABASE, DISPATCHER
from payments.simulator import rules
from storage.orders import claim_inbound
from storage.schema import customers, outbox
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram
from tests.helpers import payment_rows, wait_until

CUSTOMER = 1001
MERCHANT = 999
CATALOG = """
[[catalog.products]]
sku = "sukuma"
name = "Sukuma wiki"
price = 30
category = "Vegetables"
[[catalog.products]]
sku = "unga"
name = "Unga 2kg"
price = 210
category = "Staples"
"""


@dataclasses.dataclass
class Shop:
    duka: RunningDuka
    telegram: FakeTelegram
    runner: web.AppRunner
    config_args: tuple[str, Path, dict[str, str]]


def telegram_env(fake: FakeTelegram, **extra: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_BASE_URL": fake.base_url,
        "DUKA_MERCHANT_TELEGRAM_IDS": str(MERCHANT),
        **extra,
    }


async def open_shop(database_url: str, tmp_path: Path, fake: FakeTelegram, **env: str) -> Shop:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    environment = telegram_env(fake, **env)
    config = make_config(database_url, port, tmp_path, toml=TEST_TOML + CATALOG, **environment)
    duka, runner = await start_duka(config, sock, dispatch_seconds=0.05)
    return Shop(duka, fake, runner, (database_url, tmp_path, environment))


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def shop(database_url: str, tmp_path: Path, telegram: FakeTelegram) -> AsyncIterator[Shop]:
    opened = await open_shop(database_url, tmp_path, telegram)
    try:
        yield opened
    finally:
        await opened.runner.cleanup()


def buttons(fake: FakeTelegram, chat: int) -> list[tuple[str, str]]:
    """(label, data) of every inline button on screen, newest message first."""
    found = []
    for message in reversed(fake.messages_to(chat)):
        for row in message.get("reply_markup", {}).get("inline_keyboard", []):
            found += [(b["text"], b["callback_data"]) for b in row]
    return found


async def press(fake: FakeTelegram, chat: int, label: str) -> None:
    """Wait for a button whose label contains ``label``, then press it."""
    await fake.wait_for(lambda f: any(label in text for text, _ in buttons(f, chat)))
    data = next(data for text, data in buttons(fake, chat) if label in text)
    seen = len(fake.calls)
    fake.user_presses_button(chat, data)
    # Every button gets an answer on screen: wait for it before the next press.
    await fake.wait_for(
        lambda f: any(c.method in {"sendMessage", "editMessageText"} for c in f.calls[seen:])
    )


async def says(fake: FakeTelegram, chat: int, text: str) -> None:
    fake.user_sends_text(chat, text)


async def types_number(fake: FakeTelegram, chat: int, number: str) -> None:
    """Type the M-Pesa number and confirm it (a typed number is always confirmed)."""
    await says(fake, chat, number)
    await press(fake, chat, "Yes, pay")


async def sees(fake: FakeTelegram, chat: int, words: str, times: int = 1) -> None:
    await fake.wait_for(lambda f: sum(words in t for t in f.texts_to(chat)) >= times)


async def fill_cart_and_confirm(fake: FakeTelegram, chat: int = CUSTOMER) -> None:
    await says(fake, chat, "/start")
    await press(fake, chat, "Vegetables")
    await press(fake, chat, "Sukuma wiki")
    await press(fake, chat, "+")
    await press(fake, chat, "Add to cart")
    await press(fake, chat, "Menu")
    await press(fake, chat, "Staples")
    await press(fake, chat, "Unga 2kg")
    await press(fake, chat, "Add to cart")
    await press(fake, chat, "Checkout")
    await sees(fake, chat, "Total: KES 270")
    await press(fake, chat, "Confirm order")
    await sees(fake, chat, "Which M-Pesa number")


async def test_customer_orders_and_pays_and_the_merchant_is_told(shop: Shop) -> None:
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    assert fake.last_markup(CUSTOMER) == {
        "keyboard": [[{"text": "Share my number", "request_contact": True}]],
        "one_time_keyboard": True,
        "resize_keyboard": True,
    }
    fake.user_shares_contact(CUSTOMER, "+254712345678", contact_user_id=CUSTOMER)
    await sees(fake, CUSTOMER, "Check your phone: M-Pesa will ask for your PIN to pay KES 270")
    await sees(fake, CUSTOMER, "Paid! KES 270")
    paid = next(t for t in fake.texts_to(CUSTOMER) if t.startswith("Paid!"))
    [payment] = await payment_rows(shop.duka.engine, 1)
    assert f"M-Pesa receipt: {payment.mpesa_receipt}" in paid
    assert "2 × Sukuma wiki = KES 60" in paid
    assert "1 × Unga 2kg = KES 210" in paid
    # The "check your phone" message became the paid message, in place.
    assert not any(t.startswith("Check your phone") for t in fake.texts_to(CUSTOMER))
    await sees(fake, MERCHANT, "New paid order")
    [note] = fake.texts_to(MERCHANT)
    assert payment.mpesa_receipt in note
    assert "Wanjiru" in note
    assert "07XX XXX 678" in note


async def test_each_business_event_is_one_log_line_with_order_masked_phone_and_checkout(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    fake.user_shares_contact(CUSTOMER, "+254712345678", contact_user_id=CUSTOMER)
    await sees(fake, MERCHANT, "New paid order")
    [payment] = await payment_rows(shop.duka.engine, 1)
    rows = {row.kind: row for row in await _outbox(shop)}
    order_reference = json.loads(rows["payment_paid"].payload)["order_reference"]
    checkout = payment.checkout_request_id
    assert checkout.endswith("712345678")
    masked_checkout = checkout[:-9] + "XXXXXX678"

    def lines(start: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]

    assert lines("push accepted:") == [
        f"push accepted: order {order_reference}, 07XX XXX 678, KES 270, checkout {masked_checkout}"
    ]
    assert lines("callback applied:") == [
        f"callback applied: order {order_reference}, 07XX XXX 678, checkout {masked_checkout}, "
        f"ResultCode 0 (The service request is processed successfully.), "
        f"receipt {payment.mpesa_receipt}"
    ]
    await wait_until(lambda: len(lines("message sent:")) == 2)
    assert sorted(lines("message sent:")) == [
        f"message sent: order_paid to the merchant, order {order_reference} "
        f"(outbox {rows['order_paid'].id}), on telegram",
        f"message sent: payment_paid to the customer, order {order_reference} "
        f"(outbox {rows['payment_paid'].id}), on telegram",
    ]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "712345678" not in logged, "a phone number (or a CheckoutRequestID) in clear"


async def test_paid_message_carries_a_menu_button(shop: Shop) -> None:
    """ "Paid!" is not a dead end: its Menu button opens the shop below the receipt."""
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    await types_number(fake, CUSTOMER, "0712345678")
    await sees(fake, CUSTOMER, "Paid! KES 270")
    paid = next(m for m in fake.messages_to(CUSTOMER) if m.get("text", "").startswith("Paid!"))
    assert paid["reply_markup"] == {
        "inline_keyboard": [[{"text": "Menu", "callback_data": "menu:new"}]]
    }
    await press(fake, CUSTOMER, "Menu")
    await fake.wait_for(lambda f: f.texts_to(CUSTOMER)[-1] == "Pick a category:")
    assert any(t.startswith("Paid! KES 270") for t in fake.texts_to(CUSTOMER))


async def test_typed_words_find_products_and_typed_quantities_add_them(shop: Shop) -> None:
    """Typing works as well as tapping: a word searches, "3" sets the quantity on the
    product screen, and "2 unga" adds two from anywhere."""
    fake = shop.telegram
    await says(fake, CUSTOMER, "sukuma")
    await sees(fake, CUSTOMER, "Products matching “sukuma”:")
    await press(fake, CUSTOMER, "Sukuma wiki — KES 30")
    await says(fake, CUSTOMER, "3")
    await sees(fake, CUSTOMER, "Quantity: 3 (KES 90)")
    await press(fake, CUSTOMER, "Add to cart")
    await sees(fake, CUSTOMER, "Added 3 × Sukuma wiki. Your cart: KES 90.")
    await says(fake, CUSTOMER, "2 unga")
    await sees(fake, CUSTOMER, "Added 2 × Unga 2kg. Your cart: KES 510.")
    await says(fake, CUSTOMER, "mango")
    await sees(fake, CUSTOMER, "No product matches “mango”.")
    assert ("Menu", "menu") in buttons(fake, CUSTOMER)[:2]


async def test_saved_number_prompt_states_the_amount_and_pays(shop: Shop) -> None:
    """The second order offers the number paid from before, with the amount and the
    same "Yes, pay" as a typed number."""
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    await types_number(fake, CUSTOMER, "0712345678")
    await sees(fake, CUSTOMER, "Paid! KES 270")
    await fill_cart_and_confirm_again(fake)
    await sees(fake, CUSTOMER, "Pay KES 270 from 07XX XXX 678?")
    await press(fake, CUSTOMER, "Yes, pay")
    await sees(fake, CUSTOMER, "Paid! KES 270", times=2)


async def fill_cart_and_confirm_again(fake: FakeTelegram, chat: int = CUSTOMER) -> None:
    await says(fake, chat, "2 sukuma")
    await says(fake, chat, "unga 1")
    await sees(fake, chat, "Added 1 × Unga 2kg. Your cart: KES 270.")
    await press(fake, chat, "Checkout")
    await press(fake, chat, "Confirm order")


async def test_failed_payment_then_try_again(shop: Shop) -> None:
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    await types_number(fake, CUSTOMER, "0712 000 011")  # the simulator cancels the first push
    await sees(fake, CUSTOMER, "did not go through. The request was cancelled on your phone.")
    await press(fake, CUSTOMER, "Try again")
    await sees(fake, CUSTOMER, "Paid! KES 270")
    statuses = [p.status for p in await payment_rows(shop.duka.engine, 1)]
    assert statuses == ["failed", "paid"]
    await sees(fake, MERCHANT, "New paid order")


async def test_forged_contact_is_refused_and_nothing_is_pushed(shop: Shop) -> None:
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    fake.user_shares_contact(CUSTOMER, "+254799999999", contact_user_id=4242)
    await sees(fake, CUSTOMER, "That contact is not your own number")
    assert shop.duka.simulator.push_requests == []
    fake.user_shares_contact(CUSTOMER, "+254712345678", contact_user_id=None)
    await sees(fake, CUSTOMER, "That contact is not your own number", times=2)
    assert shop.duka.simulator.push_requests == []


async def test_invalid_typed_number_gets_another_try(shop: Shop) -> None:
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    await says(fake, CUSTOMER, "0712 34")
    await sees(fake, CUSTOMER, "is not a Kenyan mobile number")
    await types_number(fake, CUSTOMER, "0712345678")
    await sees(fake, CUSTOMER, "Paid! KES 270")


async def test_duplicate_callback_gives_one_paid_message(shop: Shop) -> None:
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    await types_number(fake, CUSTOMER, "0712 000 005")  # the simulator sends the callback twice
    await sees(fake, CUSTOMER, "Paid! KES 270")
    await shop.duka.simulator.wait_for_callbacks(2)
    await shop.duka.app[DISPATCHER].deliver_due()
    assert sum("Paid!" in t for t in fake.texts_to(CUSTOMER)) == 1
    assert sum("New paid order" in t for t in fake.texts_to(MERCHANT)) == 1
    sends = [c for c in fake.calls if c.method in {"sendMessage", "editMessageText"}]
    assert sum("Paid!" in str(c.params.get("text")) for c in sends) == 1


async def test_message_waits_while_telegram_is_down_and_arrives_once(shop: Shop) -> None:
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    shop.duka.simulator.force_next_outcome(dataclasses.replace(rules.SUCCESS, never_resolves=True))
    await types_number(fake, CUSTOMER, "0712345678")
    await sees(fake, CUSTOMER, "Check your phone")
    fake.set_down(True)
    [payment] = await payment_rows(shop.duka.engine, 1)
    shop.duka.simulator.resolve(payment.checkout_request_id)  # the callback lands now

    async def failed_once() -> bool:
        return any(row.attempts >= 1 for row in await _outbox(shop))

    await wait_until(failed_once, what="a delivery attempt while Telegram is down")
    assert not any("Paid!" in t for t in fake.texts_to(CUSTOMER))
    fake.set_down(False)
    await fake.wait_for(lambda f: any("Paid!" in t for t in f.texts_to(CUSTOMER)), timeout=10)
    await sees(fake, MERCHANT, "New paid order")
    assert sum("Paid!" in t for t in fake.texts_to(CUSTOMER)) == 1


async def test_rate_limit_waits_retry_after_then_sends(shop: Shop) -> None:
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    fake.fail_next("sendMessage", 429, retry_after=1, times=1)
    fake.fail_next("editMessageText", 429, retry_after=1, times=1)
    await types_number(fake, CUSTOMER, "0712345678")
    await fake.wait_for(lambda f: any("Paid!" in t for t in f.texts_to(CUSTOMER)), timeout=10)
    assert sum("Paid!" in t for t in fake.texts_to(CUSTOMER)) == 1
    assert any(c.failed and c.status == 429 for c in fake.calls)


async def test_customer_who_blocked_the_bot_is_recorded_and_not_retried(shop: Shop) -> None:
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    shop.duka.simulator.force_next_outcome(dataclasses.replace(rules.SUCCESS, never_resolves=True))
    await types_number(fake, CUSTOMER, "0712345678")
    await sees(fake, CUSTOMER, "Check your phone")
    blocked = "Forbidden: bot was blocked by the user"
    fake.fail_next("editMessageText", 403, description=blocked, times=1)
    fake.fail_next("sendMessage", 403, description=blocked, times=5)
    [payment] = await payment_rows(shop.duka.engine, 1)
    shop.duka.simulator.resolve(payment.checkout_request_id)

    async def given_up() -> bool:
        rows = [r for r in await _outbox(shop) if r.audience == "customer"]
        return bool(rows) and all(r.status == "failed" for r in rows)

    await wait_until(given_up, what="the customer's message to be given up")
    async with shop.duka.engine.connect() as conn:
        blocked_at = (await conn.execute(select(customers.c.blocked_at))).scalar_one()
    assert blocked_at is not None

    def refused_to_customer() -> int:
        return sum(c.status == 403 and c.params.get("chat_id") == CUSTOMER for c in fake.calls)

    refusals = refused_to_customer()
    await shop.duka.app[DISPATCHER].deliver_due()
    assert refused_to_customer() == refusals == 1


async def test_cart_and_step_survive_a_restart(
    database_url: str, tmp_path: Path, telegram: FakeTelegram
) -> None:
    first = await open_shop(database_url, tmp_path, telegram)
    try:
        await says(telegram, CUSTOMER, "/start")
        await press(telegram, CUSTOMER, "Vegetables")
        await press(telegram, CUSTOMER, "Sukuma wiki")
        await press(telegram, CUSTOMER, "Add to cart")
    finally:
        await first.runner.cleanup()
    second = await open_shop(database_url, tmp_path, telegram)
    try:
        await press(telegram, CUSTOMER, "Checkout")
        await sees(telegram, CUSTOMER, "1 × Sukuma wiki @ KES 30 = KES 30")
        await press(telegram, CUSTOMER, "Confirm order")
        await sees(telegram, CUSTOMER, "Which M-Pesa number")
    finally:
        await second.runner.cleanup()
    third = await open_shop(database_url, tmp_path, telegram)
    try:
        await types_number(telegram, CUSTOMER, "0712345678")  # still the phone step after a restart
        await sees(telegram, CUSTOMER, "Paid! KES 30")
    finally:
        await third.runner.cleanup()


async def test_merchant_commands_answer_only_the_merchant(shop: Shop) -> None:
    fake = shop.telegram
    await fill_cart_and_confirm(fake)
    await types_number(fake, CUSTOMER, "0712345678")
    await sees(fake, MERCHANT, "New paid order")
    await says(fake, MERCHANT, "/today")
    await sees(fake, MERCHANT, "Paid today (Nairobi time): 1 orders, KES 270.")
    reference = next(t for t in fake.texts_to(MERCHANT) if "New paid order" in t).split()[3]
    await says(fake, MERCHANT, f"/order {reference.rstrip(':').lower()}")
    await sees(fake, MERCHANT, f"Order {reference.rstrip(':')} — paid — KES 270")
    await says(fake, MERCHANT, "/pending")
    await sees(fake, MERCHANT, "No orders are waiting for payment.")
    await says(fake, CUSTOMER, "/today")
    await sees(fake, CUSTOMER, "I did not understand that")
    assert not any("Paid today" in t for t in fake.texts_to(CUSTOMER))


async def test_webhook_mode_refuses_a_wrong_secret(
    database_url: str, tmp_path: Path, telegram: FakeTelegram
) -> None:
    # The public URL Telegram is given; the test delivers to our server's same path.
    shop = await open_shop(
        database_url, tmp_path, telegram, TELEGRAM_WEBHOOK_URL="http://127.0.0.1:1/telegram/hook"
    )
    try:
        assert telegram.webhook.url == "http://127.0.0.1:1/telegram/hook"
        secret = telegram.webhook.secret_token
        assert secret
        url = f"{shop.duka.base_url}/telegram/hook"
        update = telegram.user_sends_text(CUSTOMER, "/start")
        assert await telegram.deliver_to_webhook(update, url, secret_token="wrong") == 403
        assert await telegram.deliver_to_webhook(update, url, secret_token=None) == 403
        assert not telegram.sent_messages(CUSTOMER)
        assert await telegram.deliver_to_webhook(update, url, secret_token=secret) == 200
        await sees(telegram, CUSTOMER, "Karibu to Test Duka")
    finally:
        await shop.runner.cleanup()


WEBHOOK = "http://127.0.0.1:1/telegram/hook"  # the public URL Telegram is given


async def test_webhook_update_delivered_twice_is_handled_once(
    database_url: str, tmp_path: Path, telegram: FakeTelegram
) -> None:
    """Telegram sends an update again when it did not hear "200" in time."""
    shop = await open_shop(database_url, tmp_path, telegram, TELEGRAM_WEBHOOK_URL=WEBHOOK)
    try:
        url, secret = f"{shop.duka.base_url}/telegram/hook", telegram.webhook.secret_token
        update = telegram.user_sends_text(CUSTOMER, "/start")
        for _ in range(2):
            assert await telegram.deliver_to_webhook(update, url, secret_token=secret) == 200
        await sees(telegram, CUSTOMER, "Karibu to Test Duka")
        # Another update after it: once its answer is there, a second "Karibu" would be too.
        second = telegram.user_sends_text(CUSTOMER, "/help")
        assert await telegram.deliver_to_webhook(second, url, secret_token=secret) == 200
        await telegram.wait_for(lambda f: len(f.texts_to(CUSTOMER)) >= 2)
        assert sum("Karibu to Test Duka" in t for t in telegram.texts_to(CUSTOMER)) == 1
    finally:
        await shop.runner.cleanup()


async def test_webhook_update_acknowledged_before_a_crash_is_handled_after_the_restart(
    database_url: str, tmp_path: Path, telegram: FakeTelegram
) -> None:
    """Stored before the "200": a process that died before handling it (its row still
    pending) leaves it for the next start, which handles it once."""
    update = telegram.user_sends_text(CUSTOMER, "/start")
    shop = await open_shop(database_url, tmp_path, telegram, TELEGRAM_WEBHOOK_URL=WEBHOOK)
    try:
        # What the webhook stored for it, as if the process had died right after the 200.
        await shop.duka.app[DATABASE].transaction(
            claim_inbound,
            "telegram",
            [(str(update["update_id"]), json.dumps(update))],
            datetime.now(UTC),
        )
    finally:
        await shop.runner.cleanup()
    assert not telegram.texts_to(CUSTOMER)
    again = await open_shop(database_url, tmp_path, telegram, TELEGRAM_WEBHOOK_URL=WEBHOOK)
    try:
        await sees(telegram, CUSTOMER, "Karibu to Test Duka")
        url, secret = f"{again.duka.base_url}/telegram/hook", telegram.webhook.secret_token
        assert await telegram.deliver_to_webhook(update, url, secret_token=secret) == 200
        await asyncio.sleep(0.3)  # a second answer would be on its way by now
        assert sum("Karibu to Test Duka" in t for t in telegram.texts_to(CUSTOMER)) == 1
    finally:
        await again.runner.cleanup()


async def _outbox(shop: Shop) -> list[Any]:
    async with shop.duka.engine.connect() as conn:
        return list((await conn.execute(select(outbox).order_by(outbox.c.id))).all())
