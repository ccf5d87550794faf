"""The floor for ``bench.chat``: the least a python-telegram-bot 22 shop bot can do.

Run by ``bench.chat`` as its own process, as ``duka serve`` is::

    python -m bench.chat_floor --base-url http://127.0.0.1:PORT --token TOKEN

It polls the Bot API with PTB's stock flood control, ``AIORateLimiter``, kept at 29
messages/s (the margin Duka's own budget keeps under Telegram's 30: the fake enforces 30
exactly, and at 30 the two clocks' jitter alone brings 429s) and a 429 waited out up to
3 times (with PTB's default of none, or 1, an answer is lost when a second 429 comes), and
as many updates in flight as Duka allows
(``concurrent_updates(1024)``: a handler waiting for the rate limiter never holds up
another customer's button acknowledgement) and one ``TypeHandler`` for every update. It
answers every action with one message and nothing else: a button press with
``answerCallbackQuery`` and an edit of the pressed message (as Duka answers a button), a
text or a shared contact with ``sendMessage``. Every answer carries one inline button,
``Next``, for the customer's next press. No database, no state: what is left is PTB, HTTP
and the flood limits, which any bot pays.
"""

from __future__ import annotations

import argparse
import logging

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import AIORateLimiter, Application, ContextTypes, TypeHandler

NEXT_LABEL = "Next"
NEXT = InlineKeyboardMarkup([[InlineKeyboardButton(NEXT_LABEL, callback_data="next")]])
OVERALL_RATE = 29
CONCURRENT_UPDATES = 1024  # as bot/channels/telegram.py has it since the rush commit


async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    chat = update.effective_chat
    if chat is None:
        return
    query = update.callback_query
    if query is not None:
        await query.answer()
        # The update id keeps each edit's text new ("message is not modified" otherwise).
        text = f"You pressed {query.data} (update {update.update_id})."
        if query.message is not None:
            await context.bot.edit_message_text(
                text, chat_id=chat.id, message_id=query.message.message_id, reply_markup=NEXT
            )
        return
    message = update.message
    if message is None:
        return
    said = message.text or ("a contact" if message.contact is not None else "something")
    await context.bot.send_message(chat.id, f"You sent {said}.", reply_markup=NEXT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True, help="the Bot API's URL (we add /bot)")
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # as Duka: no line per request
    application = (
        Application.builder()
        .token(args.token)
        .base_url(f"{args.base_url}/bot")
        .rate_limiter(AIORateLimiter(overall_max_rate=OVERALL_RATE, max_retries=3))
        .concurrent_updates(CONCURRENT_UPDATES)
        .build()
    )
    application.add_handler(TypeHandler(Update, answer))
    # run_polling stops cleanly on SIGTERM, which is how bench.chat ends this process.
    application.run_polling(allowed_updates=["message", "callback_query"])


if __name__ == "__main__":
    main()
