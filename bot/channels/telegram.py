"""Telegram through python-telegram-bot 22, inside our one aiohttp process.

PTB does the Bot API work (requests, update parsing, flood limits); the conversation
itself is ours and lives in the database. Polling when only ``TELEGRAM_BOT_TOKEN`` is
set; with ``TELEGRAM_WEBHOOK_URL`` too, PTB's custom-webhook pattern: ``updater(None)``,
our aiohttp route checks ``X-Telegram-Bot-Api-Secret-Token`` and feeds the update queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from aiohttp import web
from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.constants import FileSizeLimit, MessageLimit
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import Application, ContextTypes, TypeHandler, Updater

from bot.channels.base import (
    DeliveryError,
    Notice,
    RecipientGone,
    RetryLater,
    Undeliverable,
    handle_inbound,
)
from bot.channels.telegram_budget import Priority, PriorityRateLimiter
from bot.chat.engine import Conversation
from bot.chat.model import PAYMENT_TAG, Document, Inbound, Location, Reply
from bot.config import TelegramSettings
from bot.merchant import MerchantDesk
from bot.texts import say
from payments.http_body import MAX_BODY_READ_SECONDS, chat_webhook_refusal, read_limited
from payments.service import utc_now
from payments.settlement import PAYMENT_RESULTS, Audience, MessageKind
from storage.engine import Database
from storage.orders import claim_inbound, inbound_handled, pending_inbound

log = logging.getLogger(__name__)
NOT_MODIFIED = "message is not modified"
# Updates handled at once. Many: a handler that waits for the sending budget must not keep
# another customer's button press from being acknowledged (answerCallbackQuery is free).
CONCURRENT_UPDATES = 1024
# The outbox's messages, by urgency: what a customer waits for with the phone in hand first.
NOTICE_PRIORITY: dict[str, Priority] = {
    **{kind: Priority.PAYMENT_RESULT for kind in PAYMENT_RESULTS},
    **{kind: Priority.MERCHANT for kind in MessageKind if kind.audience is Audience.MERCHANT},
}
STARTUP_WAIT_SECONDS = 10.0
# At a stop, how long PTB's poll loop gets to end by itself, and how often it is then
# cancelled (``_stop_polling``): within the 5 s a SIGTERM gives the whole process.
POLL_STOP_SECONDS = 0.5
POLL_STOP_CANCELS = 2
MAX_UPDATE_BYTES = 1024 * 1024  # Telegram's updates are a few KB: a bigger body is not one
# What a body that is not an update makes json.loads or PTB's de_json raise: bad JSON or
# text (ValueError), nesting too deep for the parser, a date past datetime's range.
RESUME_WINDOW = timedelta(hours=1)  # an update acknowledged longer ago is stale
NOT_AN_UPDATE = (
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    RecursionError,
    OverflowError,
)


class TelegramChannel:
    name = "telegram"

    def __init__(
        self,
        settings: TelegramSettings,
        conversation: Conversation,
        merchant: MerchantDesk,
        *,
        read_seconds: float = MAX_BODY_READ_SECONDS,
        database: Database | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        # Webhook mode: each update is stored before Telegram hears "200", so one
        # acknowledged just before a crash is handled after the restart, and a redelivered
        # one is handled once (as WhatsApp's messages are). Polling asks Telegram again.
        self._intake = database if settings.webhook_url else None
        self._clock = clock
        self._read_seconds = read_seconds  # for a webhook body to arrive whole
        self._conversation = conversation
        self._merchant = merchant
        # The bot's sending budget (bot/channels/telegram_budget.py), shared out among the
        # processes sending for this bot (``budget.share_with``).
        self.budget = PriorityRateLimiter(max_retries=1)
        # One retry after a 429, waiting retry_after; a second 429 reaches our code.
        # Updates of different chats run side by side (a push can take seconds); the
        # conversation keeps each chat's own events in order.
        builder = (
            Application.builder()
            .token(settings.token)
            .rate_limiter(self.budget)
            .concurrent_updates(CONCURRENT_UPDATES)
        )
        if settings.api_base_url:
            builder = builder.base_url(f"{settings.api_base_url}/bot")
        if settings.webhook_url:
            builder = builder.updater(None)
        self.application = builder.build()
        self._starter: asyncio.Task[None] | None = None
        self.application.add_handler(TypeHandler(Update, self._on_update))
        self.application.add_error_handler(self._on_error)

    # --- lifecycle (driven by the aiohttp app's cleanup context) ------------------------

    async def start_in_background(self) -> None:
        """Start now if Telegram answers, else keep trying in the background."""
        self._starter = asyncio.create_task(self._start_with_retry(), name="telegram-start")
        await asyncio.wait({self._starter}, timeout=STARTUP_WAIT_SECONDS)

    async def _start_with_retry(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.start()
                return
            except InvalidToken:
                log.error(
                    "Telegram refuses TELEGRAM_BOT_TOKEN: the Telegram channel stays off. "
                    "Fix: copy the token from @BotFather and restart."
                )
                return
            except (NetworkError, TelegramError) as exc:
                log.warning("Telegram is not reachable (%s); trying again in %g s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300.0)

    async def start(self) -> None:
        app = self.application
        await app.initialize()
        if self._settings.webhook_url:
            await app.bot.set_webhook(
                self._settings.webhook_url,
                secret_token=self._settings.webhook_secret,
                allowed_updates=["message", "callback_query"],
            )
        await app.start()
        await self.resume()
        if app.updater is not None:
            await app.updater.start_polling(allowed_updates=["message", "callback_query"])
        log.info(
            "Telegram channel started (%s)", "webhook" if self._settings.webhook_url else "polling"
        )

    @property
    def running(self) -> bool:
        """Started, and still polling when it polls (what ``/readyz`` asks)."""
        app = self.application
        return app.running and (app.updater is None or app.updater.running)

    async def stop(self) -> None:
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        app = self.application
        if app.updater is not None and app.updater.running:
            await _stop_polling(app.updater)
        if app.running:
            await app.stop()
        with contextlib.suppress(RuntimeError):  # never initialized: nothing to shut down
            await app.shutdown()

    async def webhook(self, request: web.Request) -> web.Response:
        """Our route for Telegram's POSTs (webhook mode); the secret header is required."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not _same_secret(given, self._settings.webhook_secret):
            return web.json_response({"error": "wrong secret token"}, status=403)
        read = await read_limited(request, MAX_UPDATE_BYTES, self._read_seconds)
        if (refusal := chat_webhook_refusal(read, "Telegram")) is not None:
            return refusal
        try:
            update = self._update_from(read.data)
        except NOT_AN_UPDATE:
            return web.json_response({"error": "not a Telegram update"}, status=400)
        if self._intake is not None:
            claim = [(str(update.update_id), read.data.decode("utf-8", "replace"))]
            try:
                fresh = await self._intake.transaction(
                    claim_inbound, self.name, claim, self._clock()
                )
            except Exception:
                # Not stored: Telegram sends it again later if it is not told "200".
                log.warning("could not store a Telegram update; asking for it again later")
                return web.json_response({"error": "try again"}, status=503)
            if not fresh:
                return web.json_response({"ok": True})  # a redelivery: handled once already
        await self.application.update_queue.put(update)
        return web.json_response({"ok": True})

    async def resume(self) -> None:
        """Webhook mode: put back what was acknowledged but not handled when the process last
        stopped (an update older than an hour is stale and is not acted on)."""
        if self._intake is None:
            return
        since = self._clock() - RESUME_WINDOW
        for body in await self._intake.transaction(pending_inbound, self.name, since):
            with contextlib.suppress(*NOT_AN_UPDATE):
                await self.application.update_queue.put(self._update_from(body.encode()))

    async def _handled(self, update: Update) -> None:
        if self._intake is not None:
            with contextlib.suppress(Exception):  # at worst handled again after a restart
                await self._intake.transaction(
                    inbound_handled, self.name, str(update.update_id), self._clock()
                )

    def _update_from(self, body: bytes) -> Update:
        # Parsed from the bytes, not request.json(): the declared charset may be one Python
        # does not know, and json.loads finds UTF-8, -16 or -32 on its own.
        data = json.loads(body)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        update = Update.de_json(data, self.application.bot)
        if not _typed_as_promised(update):
            raise TypeError("a field we read is not of the Bot API's type")
        return update

    # --- updates in ----------------------------------------------------------------------

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        try:
            await self._handle_update(update)
        finally:
            await self._handled(update)

    async def _handle_update(self, update: Update) -> None:
        chat, user = update.effective_chat, update.effective_user
        if chat is None or user is None or chat.type != "private":
            return
        chat_id = str(chat.id)
        name = _storable(user.full_name)
        pressed: str | None = None
        query = update.callback_query
        if query is not None:
            try:
                await query.answer()
            except TelegramError as exc:  # e.g. "query is too old" after downtime
                log.info("could not answer a button press: %s", exc)
            if query.message is not None:
                pressed = str(query.message.message_id)
            event = Inbound(self.name, chat_id, name, button=_storable(query.data or ""))
        elif update.message is not None and update.message.contact is not None:
            contact = update.message.contact
            # Only the sender's own contact counts: a forwarded card can be anyone's.
            event = Inbound(
                self.name,
                chat_id,
                name,
                contact_phone=_storable(contact.phone_number),
                contact_is_own=contact.user_id == user.id,
            )
        elif update.message is not None and update.message.location is not None:
            event = Inbound(self.name, chat_id, name, location=_location(update.message))
        elif update.message is not None and update.message.text is not None:
            event = Inbound(self.name, chat_id, name, text=_storable(update.message.text))
        elif update.message is not None:
            # Stickers, photos, voice notes: we only read text and buttons, and say so.
            event = Inbound(self.name, chat_id, name, unsupported=True)
        else:
            return
        # Merchants are known by their chat: ``telegram:<chat id>``.
        await handle_inbound(
            self,
            event,
            self._conversation,
            merchant=self._merchant,
            who=f"{self.name}:{chat_id}",
            pressed_message=pressed,
        )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("error handling a Telegram update", exc_info=context.error)

    # --- messages out --------------------------------------------------------------------

    async def notify(self, chat_id: str, notice: Notice, *, replace: str | None = None) -> str:
        """Outbox messages go out like any reply (no window limits what we may send), in
        the order of their urgency when the budget is short (``telegram_budget``)."""
        priority = NOTICE_PRIORITY.get(notice.kind, Priority.OTHER)
        return await self.send(chat_id, notice.reply, replace=replace, priority=priority)

    async def send(
        self,
        chat_id: str,
        reply: Reply,
        *,
        replace: str | None = None,
        priority: Priority = Priority.REPLY,
    ) -> str:
        """Send (or edit in place) and return the message id; raises the base.* errors."""
        if reply.tag is not None and reply.tag.startswith(PAYMENT_TAG):
            # "Check your phone": the message its payment's result replaces. Sent as urgently
            # as the result, it goes first (same priority, first come): in a rush a result
            # sent ahead of it would be followed by a stale "check your phone".
            priority = min(priority, Priority.PAYMENT_RESULT)
        if reply.document is not None:
            return await self._send_document(chat_id, reply, reply.document)
        bot = self.application.bot
        inline = _inline_keyboard(reply)
        try:
            if replace is not None and reply.ask_contact is None and reply.ask_location is None:
                try:
                    await bot.edit_message_text(
                        reply.text,
                        chat_id=int(chat_id),
                        message_id=int(replace),
                        reply_markup=inline,
                        rate_limit_args=priority,
                    )
                    return replace
                except BadRequest as exc:
                    if NOT_MODIFIED in str(exc).lower():
                        return replace
                    # Too old, deleted, or not editable with this markup: send a new one.
                    log.info("could not edit message %s (%s); sending a new one", replace, exc)
            markup: InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | None
            if reply.ask_contact is not None:
                markup = ReplyKeyboardMarkup(
                    [[KeyboardButton(reply.ask_contact, request_contact=True)]],
                    one_time_keyboard=True,
                    resize_keyboard=True,
                )
            elif reply.ask_location is not None:
                markup = ReplyKeyboardMarkup(
                    [[KeyboardButton(reply.ask_location, request_location=True)]],
                    one_time_keyboard=True,
                    resize_keyboard=True,
                )
            elif reply.close_keyboard and inline is None:
                # The "share my number" keyboard has done its job. (A message carries one
                # keyboard: inline buttons win, and a later message closes it.)
                markup = ReplyKeyboardRemove()
            else:
                markup = inline
            message = await bot.send_message(
                int(chat_id), reply.text, reply_markup=markup, rate_limit_args=priority
            )
            return str(message.message_id)
        except RetryAfter as exc:
            raise RetryLater(_seconds(exc.retry_after)) from exc
        except Forbidden as exc:
            raise RecipientGone(str(exc)) from exc
        except BadRequest as exc:
            # Chat not found, text too long, bad markup: sending it again will not help.
            raise Undeliverable(f"BadRequest: {exc}") from exc
        except (NetworkError, TelegramError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc

    async def _send_document(self, chat_id: str, reply: Reply, document: Document) -> str:
        """The file, with the words as its caption; they go first on their own when they
        are too long for a caption or ask for a contact (a reply keyboard). A file Telegram
        refuses, or that cannot get there, is answered with a message that says so: the
        merchant asked for it and must not be left waiting."""
        caption: str | None = reply.text
        markup = _inline_keyboard(reply)
        if _utf16_length(reply.text) > MessageLimit.CAPTION_LENGTH or reply.ask_contact:
            await self.send(chat_id, dataclasses.replace(reply, document=None))
            caption, markup = None, None
        size = len(document.content)
        if size > FileSizeLimit.FILESIZE_UPLOAD:
            # Telegram would answer 413, which PTB raises as a NetworkError: a retry's error.
            why = f"it is {size / 1e6:.0f} MB; Telegram takes at most 50 MB from a bot"
        else:
            try:
                message = await self.application.bot.send_document(
                    int(chat_id),
                    document.content,
                    caption=caption,
                    reply_markup=markup,
                    filename=document.filename,
                )
                return str(message.message_id)
            except RetryAfter as exc:
                raise RetryLater(_seconds(exc.retry_after)) from exc
            except Forbidden as exc:
                raise RecipientGone(str(exc)) from exc
            except TelegramError as exc:  # refused (BadRequest), or lost on the way
                log.warning("Telegram did not take %s: %s", document.filename, exc)
                why = f"Telegram answered “{exc}”"
        refusal = say("en", "m_file_not_sent", filename=document.filename, why=why)
        return await self.send(chat_id, Reply(refusal))


async def _stop_polling(updater: Updater) -> None:
    """``Updater.stop`` waits for PTB's poll loop, which sleeps out its backoff (up to 30 s
    after errors, ``retry_after`` after a 429) before it looks at the stop: past
    ``POLL_STOP_SECONDS`` the sleep is cancelled (twice at most: the cancel can land in the
    last getUpdates that marks the updates read, which a cancel cuts short too)."""
    stopping = asyncio.ensure_future(updater.stop())
    for _ in range(POLL_STOP_CANCELS + 1):
        done, _pending = await asyncio.wait({stopping}, timeout=POLL_STOP_SECONDS)
        if done:
            break
        log.info("Telegram polling is backing off; cutting its wait short to stop")
        stopping.cancel()
    if not stopping.done():  # the last cancel: let it land, so no task is left pending
        await asyncio.wait({stopping}, timeout=POLL_STOP_SECONDS)
    if stopping.done() and not stopping.cancelled() and stopping.exception() is not None:
        log.warning("stopping Telegram polling failed", exc_info=stopping.exception())


def _typed_as_promised(update: Update) -> bool:
    """PTB builds an update from any JSON without checking types, and a chat id that is a
    float or a text that is a number would fail later, in the background, far from the
    request: what we read must have the Bot API's types."""
    chat, user, query, message = (
        update.effective_chat,
        update.effective_user,
        update.callback_query,
        update.message,
    )
    ids: list[object] = [update.update_id]  # integers (update_id keys the stored update)
    texts: list[object] = []  # strings
    optional: list[object] = []  # strings where present
    if chat is not None:
        ids.append(chat.id)
        optional.append(chat.type)
    if user is not None:
        ids.append(user.id)
        texts.append(user.first_name)
        optional.append(user.last_name)
    if query is not None:
        optional.append(query.data)
        if query.message is not None:
            ids.append(query.message.message_id)
    if message is not None:
        optional.append(message.text)
        if message.contact is not None:
            texts.append(message.contact.phone_number)
    texts += [t for t in optional if t is not None]
    return all(_is_int(i) for i in ids) and all(isinstance(t, str) for t in texts)


def _is_int(value: object) -> bool:
    # True is an int to Python, not a chat id to anyone.
    return isinstance(value, int) and not isinstance(value, bool)


def _storable(text: str) -> str:
    """NUL dropped (PostgreSQL refuses it), lone surrogates "?" (not UTF-8: SQLite refuses
    them): what a customer typed, kept as near as the database allows."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode()


def _location(message: Message) -> Location:
    """A pin, or a venue (a place picked from the map: its name and address come too)."""
    where = message.location
    assert where is not None  # the caller checked
    venue = message.venue
    place = f"{venue.title}, {venue.address}" if venue is not None else ""
    return Location(where.latitude, where.longitude, _storable(place))


def _same_secret(given: str, expected: str) -> bool:
    """Constant-time; header bytes that are not UTF-8 reach us as lone surrogates, which
    ``surrogateescape`` turns back into those bytes instead of raising."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _inline_keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(b.label, callback_data=b.data) for b in row]
            for row in reply.buttons
        ]
    )


def _utf16_length(text: str) -> int:
    """Telegram counts a caption's length in UTF-16 code units: an emoji can count twice."""
    return len(text.encode("utf-16-le")) // 2


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
