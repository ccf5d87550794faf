"""The fake Bot API server against the real python-telegram-bot client, over loopback HTTP.

These tests pin down that PTB 22 accepts what the fake serves (objects de-serialize, errors map to
the right exceptions) and that the fake's bookkeeping matches what a user would see, so that bot
tests built on it fail for real reasons only.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    Update,
)
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)
from telegram.ext import Application, CommandHandler, ContextTypes

from tests.fakes.telegram_api import DEFAULT_TOKEN, ButtonNotFoundError, FakeTelegram

CHAT = 1


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(DEFAULT_TOKEN, base_url=fake.bot_base_url) as client:
        yield client


def _keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(d.title(), callback_data=d) for d in data]])


def _seconds(value: int | float | dtm.timedelta) -> float:
    # PTB 22 returns an int unless PTB_TIMEDELTA is set, in which case it is a timedelta.
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


async def test_get_me_returns_the_test_bot(bot: Bot, fake: FakeTelegram) -> None:
    me = await bot.get_me()

    assert me.username == "duka_test_bot"
    assert me.is_bot
    assert me.id == 123456  # Telegram takes the bot id from the token
    assert [call.method for call in fake.calls] == ["getMe", "getMe"]  # initialize() + ours


async def test_send_message_round_trips_text_and_inline_keyboard(
    bot: Bot, fake: FakeTelegram
) -> None:
    sent = await bot.send_message(CHAT, "123", reply_markup=_keyboard("add:p1", "checkout"))

    assert sent.text == "123"  # a plain string stays a string, not JSON-decoded to 123
    assert sent.chat.id == CHAT
    assert sent.from_user is not None
    assert sent.from_user.username == "duka_test_bot"
    assert sent.reply_markup == _keyboard("add:p1", "checkout")
    assert abs(sent.date.timestamp() - dtm.datetime.now(dtm.UTC).timestamp()) < 60
    [recorded] = fake.sent_messages(CHAT)
    assert recorded["message_id"] == sent.message_id
    assert recorded["chat_id"] == CHAT
    assert fake.last_markup(CHAT) == {
        "inline_keyboard": [
            [
                {"text": "Add:P1", "callback_data": "add:p1"},
                {"text": "Checkout", "callback_data": "checkout"},
            ]
        ]
    }
    second = await bot.send_message(CHAT, "again")
    assert second.message_id == sent.message_id + 1
    assert fake.last_markup(CHAT) is None


async def test_reply_keyboards_are_recorded_but_not_echoed(bot: Bot, fake: FakeTelegram) -> None:
    # Telegram's Message.reply_markup holds inline keyboards only; echoing a reply keyboard
    # would make PTB fail to parse the Message.
    share = KeyboardButton("Share phone", request_contact=True)
    sent = await bot.send_message(
        CHAT, "Your M-Pesa number?", reply_markup=ReplyKeyboardMarkup([[share]])
    )

    assert sent.reply_markup is None
    markup = fake.last_markup(CHAT)
    assert markup is not None
    assert markup["keyboard"][0][0]["request_contact"] is True


async def test_edit_message_text_changes_what_the_user_sees(bot: Bot, fake: FakeTelegram) -> None:
    await bot.send_message(CHAT, "Welcome")
    cart = await bot.send_message(CHAT, "Cart: empty", reply_markup=_keyboard("add:p1"))
    await bot.send_message(2, "Another buyer")

    edited = await bot.edit_message_text(
        "Cart: 1 x Unga", chat_id=CHAT, message_id=cart.message_id, reply_markup=_keyboard("pay")
    )

    assert isinstance(edited, Message)
    assert edited.edit_date is not None
    assert fake.texts_to(CHAT) == ["Welcome", "Cart: 1 x Unga"]
    assert fake.texts_to(2) == ["Another buyer"]
    assert [edit["text"] for edit in fake.edits(CHAT)] == ["Cart: 1 x Unga"]
    assert fake.last_markup(CHAT) == {
        "inline_keyboard": [[{"text": "Pay", "callback_data": "pay"}]]
    }


async def test_an_edit_that_changes_nothing_is_a_bad_request(bot: Bot, fake: FakeTelegram) -> None:
    sent = await bot.send_message(CHAT, "Cart: empty", reply_markup=_keyboard("add:p1"))

    # PTB drops Telegram's "Bad Request: " prefix and str.capitalize()s the rest.
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text(
            "Cart: empty",
            chat_id=CHAT,
            message_id=sent.message_id,
            reply_markup=_keyboard("add:p1"),
        )
    assert fake.calls[-1].failed
    assert fake.calls[-1].status == 400


async def test_editing_a_message_the_bot_never_sent_is_a_bad_request(bot: Bot) -> None:
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=CHAT, message_id=99)


# PTB 22 warns about retry_after's future type as soon as RetryAfter is built (its __init__
# reads the property); the test handles both types, so the warning is noise here.
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_injected_429_raises_retry_after(bot: Bot, fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage", 429, retry_after=1)

    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(CHAT, "hello")

    assert _seconds(caught.value.retry_after) == 1
    failed = fake.calls[-1]
    assert (failed.method, failed.failed, failed.status) == ("sendMessage", True, 429)
    assert fake.sent_messages() == []
    # One failure only: the retry goes through.
    await bot.send_message(CHAT, "hello")
    assert fake.texts_to(CHAT) == ["hello"]


async def test_injected_403_raises_forbidden(bot: Bot, fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage", 403, times=2)

    for _ in range(2):
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await bot.send_message(CHAT, "hello")
    await bot.send_message(CHAT, "hello")
    assert [call.failed for call in fake.calls_of("sendMessage")] == [True, True, False]


async def test_a_down_api_answers_502_to_sends_only(bot: Bot, fake: FakeTelegram) -> None:
    fake.set_down(True)

    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(CHAT, "hello")
    assert (await bot.get_me()).username == "duka_test_bot"  # reads still work
    fake.set_down(False)
    await bot.send_message(CHAT, "hello")
    assert fake.texts_to(CHAT) == ["hello"]


async def test_a_wrong_token_is_rejected(fake: FakeTelegram) -> None:
    stranger = Bot("999:WRONG", base_url=fake.bot_base_url)
    with pytest.raises(InvalidToken):
        await stranger.initialize()  # calls getMe
    await stranger.shutdown()
    assert fake.calls == []


async def test_users_can_only_press_buttons_that_exist(bot: Bot, fake: FakeTelegram) -> None:
    with pytest.raises(ButtonNotFoundError):
        fake.user_presses_button(CHAT, "add:p1")  # no bot message yet
    menu = await bot.send_message(CHAT, "Menu", reply_markup=_keyboard("add:p1"))
    await bot.send_message(CHAT, "Plain text, no buttons")
    with pytest.raises(ButtonNotFoundError, match="add:p9"):
        fake.user_presses_button(CHAT, "add:p9")

    raw = fake.user_presses_button(CHAT, "add:p1")

    update = Update.de_json(raw, bot)
    query = update.callback_query
    assert query is not None
    assert query.data == "add:p1"
    assert query.from_user.id == CHAT
    assert query.message is not None
    assert query.message.is_accessible  # a real date, not 0
    assert query.message.message_id == menu.message_id
    assert await query.answer()
    with pytest.raises(BadRequest, match="query id is invalid"):
        await bot.answer_callback_query("no-such-query")


async def test_get_updates_long_polls_and_acknowledges_by_offset(
    bot: Bot, fake: FakeTelegram
) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await fake.wait_for(lambda f: bool(f.calls_of("getMe")) and not poll.done())
    fake.user_sends_text(CHAT, "/start")
    fake.user_shares_contact(CHAT, "+254712345678", contact_user_id=CHAT)

    first = await poll  # woken by the first update rather than waiting out the timeout
    assert len(first) >= 1
    assert first[0].message is not None
    assert first[0].message.text == "/start"
    rest = await bot.get_updates(offset=first[-1].update_id + 1, timeout=0)
    updates = [*first, *rest]
    last = updates[-1].message
    assert last is not None
    assert last.contact is not None
    assert last.contact.phone_number == "+254712345678"
    assert last.contact.user_id == CHAT
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == ()
    assert fake.pending_updates == []


async def test_deliver_to_webhook_sends_the_secret_header(bot: Bot, fake: FakeTelegram) -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []

    async def webhook(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/telegram/webhook", webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/telegram/webhook"
    try:
        assert await bot.set_webhook(url, secret_token="s3cret")
        update = fake.user_sends_text(CHAT, "hi")

        assert await fake.deliver_to_webhook(update) == 200
        assert await fake.deliver_to_webhook(update, url, None) == 200
    finally:
        await runner.cleanup()

    assert received == [("s3cret", update), (None, update)]
    assert (await bot.get_webhook_info()).url == url
    with pytest.raises(Conflict, match="webhook is active"):
        await bot.get_updates(timeout=0)


# timeout=0 makes PTB poll in a tight loop (fine, but ~500 getUpdates a second); a real long poll
# parks in the fake until the update arrives and is cancelled by PTB on stop().
@pytest.mark.parametrize("poll_timeout", [0, 10])
async def test_application_polling_replies_to_start(fake: FakeTelegram, poll_timeout: int) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text("Karibu Duka!", reply_markup=_keyboard("catalog"))

    app = Application.builder().token(DEFAULT_TOKEN).base_url(fake.bot_base_url).build()
    app.add_handler(CommandHandler("start", start))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=poll_timeout)
    try:
        fake.user_sends_text(CHAT, "/start")
        await fake.wait_for(lambda f: bool(f.sent_messages(CHAT)))
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()

    assert fake.texts_to(CHAT) == ["Karibu Duka!"]
    fake.user_presses_button(CHAT, "catalog")  # the reply's button is on screen
    # Updater.stop() acknowledges what it consumed with a final getUpdates.
    assert [u["update_id"] for u in fake.pending_updates] == [fake.updates[-1]["update_id"]]
