"""A fake Telegram Bot API server for loopback tests.

``FakeTelegram`` is an aiohttp app that speaks enough of the Bot API wire protocol for
python-telegram-bot (PTB) 22, pointed at it with ``base_url=f"{fake.base_url}/bot"``, to run a
shop conversation end to end, in polling or webhook mode:

* it answers ``POST /bot<token>/<method>`` with Telegram's envelope (``{"ok": true, "result":
  ...}`` or ``{"ok": false, "error_code": ..., "description": ...}``) and the matching HTTP status,
  so PTB raises the same exceptions it would against Telegram;
* it records every call (``calls``) and keeps what the user would see in each chat (the bot's
  messages with their edits and inline keyboards), so tests assert on outcomes, not on mocks;
* it plays the user: ``user_sends_text``, ``user_presses_button`` and ``user_shares_contact`` build
  real ``Update`` JSON, queue it for ``getUpdates`` and return it for webhook delivery;
* it injects faults: ``fail_next`` (429 with ``retry_after``, 403, 500, 502, ...) and
  ``set_down`` (every sending method answers 502 until it is back up);
* opt-in, for load tests and benchmarks: ``flood_limits=FloodLimits()`` enforces Telegram's flood
  limits (about 30 messages a second overall and 1 a second per chat, answering 429 with
  ``retry_after`` as Telegram does), and ``round_trip_seconds`` delays every call by a network's
  round trip (half on the way in, half on the way out). Both are off by default.

It is strict where Telegram is strict and a test would otherwise pass for the wrong reason:
editing a message the bot never sent, an edit that changes nothing, pressing a button that does
not exist, answering an unknown callback query, and ``getUpdates`` while a webhook is set all fail
as they do on Telegram. Known simplifications: ``parse_mode`` markup is kept verbatim (no HTML or
Markdown rendering), only private and basic group chats exist, and of the uploads only documents
are kept (``documents``: name, type and bytes, within Telegram's 50 MB and 1024-character caption
limits); photos and the like are recorded but not stored.

See docs/channels.md section 1 (in the shared research notes) for the PTB facts this relies on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

__all__ = [
    "DEFAULT_TOKEN",
    "ButtonNotFoundError",
    "Call",
    "FakeTelegram",
    "FloodLimits",
    "SentDocument",
    "Upload",
]

DEFAULT_TOKEN: Final = "123456:TEST-TOKEN"
BOT_USERNAME: Final = "duka_test_bot"

# PTB form-encodes every parameter, JSON-encoding all values except plain strings, which go raw.
# So only these fields may be JSON-decoded: decoding everything would turn text="123" into 123.
# Fields whose value must be an object or array: an undecodable value is a 400, as on Telegram.
_JSON_OBJECT_FIELDS: Final = frozenset(
    {
        "allowed_updates",
        "caption_entities",
        "commands",
        "entities",
        "link_preview_options",
        "media",
        "message_ids",
        "prices",
        "reply_markup",
        "reply_parameters",
        "results",
        "scope",
    }
)
# Scalar fields PTB JSON-encodes (numbers, booleans). ``chat_id`` may also be a raw "@username",
# so a value that is not valid JSON is kept as the string it is.
_JSON_SCALAR_FIELDS: Final = frozenset(
    {
        "allow_sending_without_reply",
        "cache_time",
        "chat_id",
        "disable_notification",
        "disable_web_page_preview",
        "drop_pending_updates",
        "from_chat_id",
        "is_personal",
        "limit",
        "max_connections",
        "message_id",
        "message_thread_id",
        "offset",
        "protect_content",
        "reply_to_message_id",
        "show_alert",
        "timeout",
        "user_id",
    }
)

# Telegram's own wording, because PTB passes the description through (minus "Bad Request: ")
# and application code may match on it, e.g. to ignore "message is not modified".
NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup are"
    " exactly the same as a current content and reply markup of the message"
)
EDIT_NOT_FOUND: Final = "Bad Request: message to edit not found"
DELETE_NOT_FOUND: Final = "Bad Request: message to delete not found"
TEXT_EMPTY: Final = "Bad Request: message text is empty"
CHAT_ID_EMPTY: Final = "Bad Request: chat_id is empty"
QUERY_INVALID: Final = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
# Uploads (sendDocument). A bot may upload 50 MB (PTB's FileSizeLimit.FILESIZE_UPLOAD); over that
# Telegram answers HTTP 413, which PTB raises as a NetworkError. Captions hold 1024 characters.
UPLOAD_LIMIT: Final = 50_000_000
CAPTION_LIMIT: Final = 1024
TOO_LARGE: Final = "Request Entity Too Large"
CAPTION_TOO_LONG: Final = "Bad Request: message caption is too long"
FILE_EMPTY: Final = "Bad Request: file must be non-empty"
NO_DOCUMENT: Final = "Bad Request: there is no document in the request"
WRONG_FILE_ID: Final = "Bad Request: wrong file identifier/HTTP URL specified"
WEBHOOK_CONFLICT: Final = (
    "Conflict: can't use getUpdates method while webhook is active;"
    " use deleteWebhook to delete the webhook first"
)
_DEFAULT_DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
}

# Methods that ``set_down`` takes down: everything that sends or changes what a user sees. Polling
# and webhook management keep working, so a test can still feed updates to a bot whose replies
# fail, which is the interesting case.
_SENDING_PREFIXES: Final = ("send", "edit", "answer", "copy", "forward", "delete")
_NOT_SENDING: Final = frozenset({"deletewebhook", "deletemycommands"})

# Chat ids are ints for real chats; "@channelusername" strings are accepted by Telegram too.
ChatId = int | str


@dataclass
class Call:
    """One Bot API request as the fake received and answered it.

    ``params`` holds the decoded parameters (JSON fields decoded, plain strings raw). ``failed`` is
    True when the fake answered with an error (injected or genuine); ``status`` is the HTTP status
    and ``result`` the ``result`` (on success) or ``description`` (on failure) it sent back.
    """

    method: str
    params: dict[str, Any]
    failed: bool = False
    status: int = 200
    result: Any = None


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request, as received."""

    filename: str
    content_type: str
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class SentDocument:
    """A document the bot sent (sendDocument), as the user received it."""

    chat_id: ChatId
    message_id: int
    filename: str
    mime_type: str
    content: bytes = field(repr=False)
    caption: str | None = None


class ButtonNotFoundError(LookupError):
    """The simulated user tried to press an inline button that no bot message carries."""


class _ApiError(Exception):
    """Raised inside a method handler to answer with a Bot API error envelope."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


@dataclass(frozen=True)
class FloodLimits:
    """Telegram's flood limits, enforced when passed as ``FakeTelegram(flood_limits=...)``.

    Telegram's own guidance (docs/channels.md 1(f)): about 30 messages a second from a bot
    overall, about 1 a second into one chat, short bursts tolerated. The fake keeps a token
    bucket for the bot (``per_second``, holding at most ``burst``) and one per chat
    (``per_chat_per_second``, at most ``per_chat_burst``); every bucket starts full. A call
    counts when it puts or changes a message on screen: ``send*`` (not sendChatAction),
    ``edit*``, ``copy*`` and ``forward*``. answerCallbackQuery, deleteMessage, getUpdates and
    the rest are free. A call over a limit is refused as Telegram refuses it: HTTP 429, "Too
    Many Requests: retry after N" and ``parameters.retry_after`` N, in whole seconds and at
    least 1 (when the emptiest bucket has a token again). A refused call uses no budget.
    """

    per_second: float = 30.0
    burst: float = 30.0
    per_chat_per_second: float = 1.0
    per_chat_burst: float = 3.0


class _TokenBucket:
    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.stamp = capacity, now

    def seconds_until_token(self, now: float) -> float:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


class _FloodControl:
    """``FloodLimits`` applied: which calls Telegram would refuse with 429 right now."""

    def __init__(self, limits: FloodLimits) -> None:
        self._limits = limits
        self._overall = _TokenBucket(limits.per_second, limits.burst, time.monotonic())
        self._chats: dict[ChatId, _TokenBucket] = {}

    def refusal(self, method: str, params: Mapping[str, Any]) -> _ApiError | None:
        key = _canonical(method)
        if not key.startswith(("send", "edit", "copy", "forward")) or key == "sendchataction":
            return None
        now = time.monotonic()
        buckets = [self._overall]
        chat_id = params.get("chat_id")
        if isinstance(chat_id, int | str) and chat_id != "":
            if chat_id not in self._chats:
                limits = self._limits
                self._chats[chat_id] = _TokenBucket(
                    limits.per_chat_per_second, limits.per_chat_burst, now
                )
            buckets.append(self._chats[chat_id])
        wait = max(bucket.seconds_until_token(now) for bucket in buckets)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return _ApiError(429, f"Too Many Requests: retry after {seconds}", seconds)
        for bucket in buckets:
            bucket.take()
        return None


@dataclass
class _Fault:
    status: int
    description: str
    retry_after: int | None


@dataclass
class _BotMessage:
    """A message the bot sent, as the user currently sees it."""

    message: dict[str, Any]
    deleted: bool = False


@dataclass
class _Webhook:
    url: str = ""
    secret_token: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _canonical(method: str) -> str:
    # Telegram method names are case-insensitive; compare on one spelling.
    return method.lower()


def _is_sending(method: str) -> bool:
    key = _canonical(method)
    return key.startswith(_SENDING_PREFIXES) and key not in _NOT_SENDING


def _decode_params(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Upload]]:
    """Decode the known JSON-typed fields; leave every other value exactly as it arrived.
    Uploads come back apart, with their bytes; the parameters only describe them, so that
    calls stay printable."""
    params: dict[str, Any] = {}
    uploads: dict[str, Upload] = {}
    for name, value in raw.items():
        if isinstance(value, web.FileField):
            content = value.file.read()
            uploads[name] = Upload(value.filename, value.content_type, content)
            params[name] = {
                "filename": value.filename,
                "content_type": value.content_type,
                "size": len(content),
            }
            continue
        if isinstance(value, str) and (name in _JSON_OBJECT_FIELDS or name in _JSON_SCALAR_FIELDS):
            try:
                value = json.loads(value)
            except ValueError:
                if name in _JSON_OBJECT_FIELDS:
                    raise _ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
        params[name] = value
    return params, uploads


def _utf16_length(text: str) -> int:
    # Telegram measures text in UTF-16 code units (as its entity offsets are).
    return len(text.encode("utf-16-le")) // 2


def _inline_callback_data(markup: Any) -> list[str]:
    """Every callback_data carried by an inline keyboard (empty for other markups)."""
    if not isinstance(markup, dict):
        return []
    rows = markup.get("inline_keyboard") or []
    return [
        button["callback_data"]
        for row in rows
        for button in row
        if isinstance(button, dict) and "callback_data" in button
    ]


def _is_inline_keyboard(markup: Any) -> bool:
    return isinstance(markup, dict) and "inline_keyboard" in markup


class FakeTelegram:
    """A Bot API server on loopback that records calls and plays the user.

    Use ``await fake.start()`` / ``await fake.stop()`` (or ``async with FakeTelegram() as fake``)
    and point PTB at ``f"{fake.base_url}/bot"``.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = BOT_USERNAME,
        bot_first_name: str = "Duka Test Bot",
        max_poll_seconds: float = 1.0,
        flood_limits: FloodLimits | None = None,
        round_trip_seconds: float = 0.0,
    ) -> None:
        if round_trip_seconds < 0:
            raise ValueError("round_trip_seconds must not be negative")
        self.token = token
        # Telegram derives the bot's user id from the token's numeric prefix.
        prefix = token.split(":", 1)[0]
        self.bot_user: dict[str, Any] = {
            "id": int(prefix) if prefix.isdigit() else 1,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        # getUpdates waits at most this long, whatever timeout the client asks for, so that a
        # poller never holds up a test (or stop()) for Telegram's usual 10-50 s.
        self.max_poll_seconds = max_poll_seconds
        # Opt-in (benchmarks): Telegram's flood limits, and a network's round trip per call.
        self._flood = _FloodControl(flood_limits) if flood_limits is not None else None
        self.round_trip_seconds = round_trip_seconds

        self.calls: list[Call] = []
        self.documents: list[SentDocument] = []  # every document sent, oldest first
        self._files: dict[str, SentDocument] = {}  # file_id -> the document, for resending
        self._file_ids = itertools.count(1)
        self.updates: list[dict[str, Any]] = []
        self.webhook = _Webhook()
        self.commands: list[dict[str, Any]] = []

        self._queue: deque[dict[str, Any]] = deque()
        self._update_ids = itertools.count(10_000)
        self._callback_ids = itertools.count(1)
        self._message_ids: defaultdict[ChatId, itertools.count[int]] = defaultdict(
            lambda: itertools.count(1)
        )
        self._bot_messages: dict[tuple[ChatId, int], _BotMessage] = {}
        self._open_callbacks: set[str] = set()
        self._faults: defaultdict[str, deque[_Fault]] = defaultdict(deque)
        self._down = False
        self._closing = False
        # Every change (a recorded call, a queued update) sets the current event and replaces it,
        # so waiters wake exactly when something happened instead of sleeping in a loop. An Event
        # rather than a Condition because the user_* helpers are synchronous.
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (port 0 picks a free one); see ``base_url``."""
        if self._runner is not None:
            raise RuntimeError("FakeTelegram is already running")
        # Room for a 50 MB upload and its multipart framing; the limit itself is checked
        # per file, to answer as Telegram does.
        app = web.Application(client_max_size=UPLOAD_LIMIT + 1024 * 1024)
        handler = self._handle if self.round_trip_seconds == 0 else self._handle_across_network
        app.router.add_route("*", "/bot{token}/{method}", handler)
        # A short shutdown_timeout: clients' keep-alive connections must not stall stop().
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._closing = False
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving; pending long polls return at once with no updates."""
        if self._runner is None:
            return
        self._closing = True
        self._notify()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server; PTB's base_url is this plus ``/bot``."""
        if self._base_url is None:
            raise RuntimeError("FakeTelegram is not running; await start() first")
        return self._base_url

    @property
    def bot_base_url(self) -> str:
        """The value for PTB's ``base_url`` (PTB appends the token)."""
        return f"{self.base_url}/bot"

    # ------------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        status: int,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` answer with this error.

        The body is Telegram's error envelope, with ``parameters.retry_after`` only when
        ``retry_after`` is given (PTB then raises RetryAfter whatever the status). Faults queued
        for the same method are used in order.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if description is None:
            description = _DEFAULT_DESCRIPTIONS.get(status, f"Error {status}")
            if status == 429 and retry_after is not None:
                description = f"Too Many Requests: retry after {retry_after}"
        fault = _Fault(status, description, retry_after)
        self._faults[_canonical(method)].extend([fault] * times)

    def set_down(self, down: bool) -> None:
        """While down, every sending method (send*, edit*, answer*, delete*, ...) answers 502."""
        self._down = down

    # ----------------------------------------------------------------------------- recording

    def calls_of(self, method: str) -> list[Call]:
        """The recorded calls of one method (case-insensitive), failed ones included."""
        key = _canonical(method)
        return [call for call in self.calls if _canonical(call.method) == key]

    def sent_messages(self, chat_id: ChatId | None = None) -> list[dict[str, Any]]:
        """Successful sendMessage params, each with the ``message_id`` it was given."""
        return [
            {**call.params, "message_id": call.result["message_id"]}
            for call in self.calls_of("sendMessage")
            if not call.failed and (chat_id is None or call.params.get("chat_id") == chat_id)
        ]

    def edits(self, chat_id: ChatId | None = None) -> list[dict[str, Any]]:
        """Params of successful editMessageText / editMessageReplyMarkup calls, in order."""
        kinds = {"editmessagetext", "editmessagereplymarkup"}
        return [
            dict(call.params)
            for call in self.calls
            if _canonical(call.method) in kinds
            and not call.failed
            and (chat_id is None or call.params.get("chat_id") == chat_id)
        ]

    def messages_to(self, chat_id: ChatId) -> list[dict[str, Any]]:
        """The bot's messages in a chat as the user sees them now (edits applied, deleted gone)."""
        return [
            stored.message
            for (chat, _), stored in self._bot_messages.items()
            if chat == chat_id and not stored.deleted
        ]

    def texts_to(self, chat_id: ChatId) -> list[str]:
        """The current text (or caption) of every bot message in the chat, oldest first."""
        texts: list[str] = []
        for message in self.messages_to(chat_id):
            text = message.get("text", message.get("caption"))
            if text is not None:
                texts.append(text)
        return texts

    def documents_to(self, chat_id: ChatId) -> list[SentDocument]:
        """The documents the bot sent to the chat (sendDocument accepted), oldest first."""
        return [document for document in self.documents if document.chat_id == chat_id]

    def last_markup(self, chat_id: ChatId) -> dict[str, Any] | None:
        """The reply_markup of the bot's latest successful send or edit in the chat.

        None when that call carried no markup. Any kind of markup counts (inline keyboard, reply
        keyboard with request_contact, ReplyKeyboardRemove), so tests can check all of them.
        """
        for call in reversed(self.calls):
            key = _canonical(call.method)
            if call.failed or call.params.get("chat_id") != chat_id:
                continue
            if key.startswith(("send", "edit")) and key != "sendchataction":
                markup = call.params.get("reply_markup")
                return markup if isinstance(markup, dict) else None
        return None

    async def wait_for(
        self,
        predicate: Callable[[FakeTelegram], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a default keeps a broken test from hanging
    ) -> None:
        """Wait until ``predicate(self)`` holds, re-checking on every call or queued update.

        Raises TimeoutError listing the recorded calls if it does not hold within ``timeout``.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # Take the event before checking: anything that happens after the check
                    # sets this very event, so no change can be missed.
                    changed = self._changed
                    if predicate(self):
                        return
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"condition not met within {timeout} s; recorded calls:\n{self.describe_calls()}"
            ) from None

    def describe_calls(self, limit: int = 60) -> str:
        """A readable list of the recorded calls; runs of identical polls are collapsed."""
        lines: list[str] = []
        for (method, failed, status), group in itertools.groupby(
            self.calls, key=lambda call: (call.method, call.failed, call.status)
        ):
            batch = list(group)
            if method == "getUpdates" and not failed:
                updates = sum(len(call.result) for call in batch)
                lines.append(f"  getUpdates x{len(batch)} (returned {updates} updates)")
                continue
            for call in batch:
                params = json.dumps(call.params, ensure_ascii=False, default=str)
                if len(params) > 300:
                    params = params[:297] + "..."
                outcome = f" -> FAILED {status}: {call.result}" if failed else ""
                lines.append(f"  {method} {params}{outcome}")
        if not lines:
            return "  (none)"
        if len(lines) > limit:
            lines = [f"  ... {len(lines) - limit} earlier entries omitted", *lines[-limit:]]
        return "\n".join(lines)

    # ---------------------------------------------------------------------- playing the user

    def user_sends_text(
        self,
        chat_id: int,
        text: str,
        user_id: int | None = None,
        first_name: str = "Wanjiru",
    ) -> dict[str, Any]:
        """A user types ``text``; a leading "/command" gets its bot_command entity."""
        message = self._user_message(chat_id, user_id, first_name)
        message["text"] = text
        if text.startswith("/"):
            # CommandHandler only matches messages whose first entity is a bot_command at 0.
            command = text.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self._queue_update({"message": message})

    def user_sends_sticker(
        self, chat_id: int, user_id: int | None = None, first_name: str = "Wanjiru"
    ) -> dict[str, Any]:
        """A user sends a sticker, shaped as the Bot API sends one (no text)."""
        message = self._user_message(chat_id, user_id, first_name)
        message["sticker"] = {
            "file_id": "CAACAgIAAxkBAAEBdukaStickerFileId",
            "file_unique_id": "AgADsticker",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "\U0001f44d",
        }
        return self._queue_update({"message": message})

    def user_shares_contact(
        self,
        chat_id: int,
        phone_number: str,
        contact_user_id: int | None,
        user_id: int | None = None,
        first_name: str = "Wanjiru",
    ) -> dict[str, Any]:
        """A user shares a contact card; ``contact_user_id`` None means not on Telegram.

        The card's user_id need not be the sender's: a forwarded card belongs to someone else,
        which is exactly what the bot has to check.
        """
        message = self._user_message(chat_id, user_id, first_name)
        contact: dict[str, Any] = {"phone_number": phone_number, "first_name": first_name}
        if contact_user_id is not None:
            contact["user_id"] = contact_user_id
        message["contact"] = contact
        return self._queue_update({"message": message})

    def user_shares_location(
        self,
        chat_id: int,
        latitude: float,
        longitude: float,
        venue: tuple[str, str] | None = None,
        user_id: int | None = None,
        first_name: str = "Wanjiru",
    ) -> dict[str, Any]:
        """A user sends a pin, or a venue (``(title, address)``: a place picked on the map;
        Telegram sends its location both in ``venue`` and in ``location``)."""
        message = self._user_message(chat_id, user_id, first_name)
        location = {"latitude": latitude, "longitude": longitude}
        message["location"] = location
        if venue is not None:
            message["venue"] = {"location": location, "title": venue[0], "address": venue[1]}
        return self._queue_update({"message": message})

    def user_presses_button(
        self,
        chat_id: int,
        data: str,
        message_id: int | None = None,
        user_id: int | None = None,
        first_name: str = "Wanjiru",
    ) -> dict[str, Any]:
        """A user presses the inline button carrying ``data``.

        The button must exist: on the bot message ``message_id`` if given, else on the latest bot
        message in the chat that carries it. Raises ButtonNotFoundError otherwise, since a real
        user cannot press a button that is not on screen.
        """
        stored = self._find_button(chat_id, data, message_id)
        query_id = str(next(self._callback_ids))
        self._open_callbacks.add(query_id)
        callback = {
            "id": query_id,
            "from": self._user(chat_id, user_id, first_name),
            # chat_instance identifies the chat across bots; any stable string will do.
            "chat_instance": f"instance-{chat_id}",
            "data": data,
            # A copy, so later edits do not rewrite an update that was already delivered.
            "message": json.loads(json.dumps(stored.message)),
        }
        return self._queue_update({"callback_query": callback})

    async def deliver_to_webhook(
        self,
        update: dict[str, Any],
        url: str | None = None,
        secret_token: str | None = None,
    ) -> int:
        """POST ``update`` to a webhook as Telegram does and return the HTTP status.

        With ``url`` None, the webhook registered by setWebhook is used, with its secret unless
        ``secret_token`` is given. With an explicit ``url``, exactly ``secret_token`` is sent (None:
        no X-Telegram-Bot-Api-Secret-Token header), so tests can check the rejection paths.
        """
        if url is None:
            if not self.webhook.url:
                raise RuntimeError("no webhook registered; pass url= or call setWebhook first")
            url = self.webhook.url
            if secret_token is None:
                secret_token = self.webhook.secret_token
        headers = {"Content-Type": "application/json"}
        if secret_token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret_token
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=json.dumps(update), headers=headers) as response,
        ):
            await response.read()
            return response.status

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates queued for getUpdates and not yet acknowledged by a higher offset."""
        return list(self._queue)

    def _user(self, chat_id: int, user_id: int | None, first_name: str) -> dict[str, Any]:
        if user_id is None:
            if chat_id <= 0:
                raise ValueError("group chats need an explicit user_id")
            user_id = chat_id  # in a private chat the chat id is the user's id
        return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}

    def _chat(self, chat_id: ChatId) -> dict[str, Any]:
        if isinstance(chat_id, int) and chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Wanjiru"}
        return {"id": chat_id, "type": "group", "title": "Duka test group"}

    def _user_message(self, chat_id: int, user_id: int | None, first_name: str) -> dict[str, Any]:
        return {
            "message_id": next(self._message_ids[chat_id]),
            "from": self._user(chat_id, user_id, first_name),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
        }

    def _queue_update(self, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), **payload}
        self.updates.append(update)
        self._queue.append(update)
        self._notify()
        return update

    def _find_button(self, chat_id: int, data: str, message_id: int | None) -> _BotMessage:
        candidates = [
            stored
            for (chat, mid), stored in self._bot_messages.items()
            if chat == chat_id
            and not stored.deleted
            and (message_id is None or mid == message_id)
            and data in _inline_callback_data(stored.message.get("reply_markup"))
        ]
        if candidates:
            return candidates[-1]
        on_screen = {
            mid: _inline_callback_data(stored.message.get("reply_markup"))
            for (chat, mid), stored in self._bot_messages.items()
            if chat == chat_id and not stored.deleted
        }
        where = f"message {message_id}" if message_id is not None else f"chat {chat_id}"
        raise ButtonNotFoundError(
            f"no inline button with callback_data {data!r} in {where}; "
            f"buttons on screen by message_id: {on_screen}"
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ----------------------------------------------------------------------------- the server

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            # Telegram answers an unknown token with 401 (PTB: InvalidToken). Not recorded:
            # the call never reached "our" bot.
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        raw: dict[str, Any] = {}
        try:
            raw = await self._read_params(request)
            params, uploads = _decode_params(raw)
        except _ApiError as error:
            # Record what arrived, undecoded, so the failure shows the offending value.
            return self._record_failure(method, raw, error)

        fault = self._take_fault(method)
        if fault is not None:
            return self._record_failure(
                method, params, _ApiError(fault.status, fault.description, fault.retry_after)
            )
        if self._down and _is_sending(method):
            return self._record_failure(method, params, _ApiError(502, "Bad Gateway"))
        if self._flood is not None and (refusal := self._flood.refusal(method, params)) is not None:
            return self._record_failure(method, params, refusal)

        try:
            result = await self._dispatch(method, params, uploads)
        except _ApiError as error:
            return self._record_failure(method, params, error)
        except Exception as exc:
            # A bug in the fake (or a request it cannot handle): answer 500 and record it, so the
            # test's failure output shows the cause instead of a bare NetworkError.
            return self._record_failure(method, params, _ApiError(500, f"fake error: {exc!r}"))
        self._record(Call(method, params, result=result))
        return web.json_response({"ok": True, "result": result})

    async def _handle_across_network(self, request: web.Request) -> web.Response:
        """``_handle`` as a client far away sees it: the request travels half the round trip
        before the fake acts on it (records it, puts it on screen), the answer the other half."""
        half = self.round_trip_seconds / 2
        await asyncio.sleep(half)
        response = await self._handle(request)
        await asyncio.sleep(half)
        return response

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        """The request's parameters as sent: query string, then JSON or form body."""
        raw: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _ApiError(400, "Bad Request: can't parse JSON") from None
            if not isinstance(body, dict):
                raise _ApiError(400, "Bad Request: JSON object expected")
            raw.update(body)
        elif request.can_read_body:
            # Covers application/x-www-form-urlencoded and multipart/form-data (uploads).
            try:
                raw.update(await request.post())
            except web.HTTPRequestEntityTooLarge:
                raise _ApiError(413, TOO_LARGE) from None
        # No body at all: PTB's parameterless calls such as getMe.
        return raw

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(_canonical(method))
        return queue.popleft() if queue else None

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._notify()

    def _record_failure(
        self, method: str, params: dict[str, Any], error: _ApiError
    ) -> web.Response:
        self._record(
            Call(method, params, failed=True, status=error.status, result=error.description)
        )
        body: dict[str, Any] = {
            "ok": False,
            "error_code": error.status,
            "description": error.description,
        }
        if error.retry_after is not None:
            body["parameters"] = {"retry_after": error.retry_after}
        return web.json_response(body, status=error.status)

    async def _dispatch(
        self, method: str, params: dict[str, Any], uploads: Mapping[str, Upload]
    ) -> Any:
        key = _canonical(method)
        if key == "getme":
            return self.bot_user
        if key == "getupdates":
            return await self._get_updates(params)
        if key == "setwebhook":
            return self._set_webhook(params)
        if key == "deletewebhook":
            self.webhook = _Webhook()
            if params.get("drop_pending_updates"):
                self._queue.clear()
            return True
        if key == "getwebhookinfo":
            return {
                "url": self.webhook.url,
                "has_custom_certificate": False,
                "pending_update_count": len(self._queue) if self.webhook.url else 0,
            }
        if key == "setmycommands":
            self.commands = list(params.get("commands") or [])
            return True
        if key == "getmycommands":
            return self.commands
        if key == "sendmessage":
            text = params.get("text")
            if not isinstance(text, str) or not text.strip():
                raise _ApiError(400, TEXT_EMPTY)
            return self._store_sent(params, {"text": text})
        if key == "editmessagetext":
            return self._edit(params, text_edit=True)
        if key == "editmessagereplymarkup":
            return self._edit(params, text_edit=False)
        if key == "answercallbackquery":
            query_id = params.get("callback_query_id")
            if query_id not in self._open_callbacks:
                raise _ApiError(400, QUERY_INVALID)
            self._open_callbacks.discard(query_id)
            return True
        if key == "deletemessage":
            stored = self._target(params)
            if stored is None:
                raise _ApiError(400, DELETE_NOT_FOUND)
            stored.deleted = True
            return True
        if key == "senddocument":
            return self._send_document(params, uploads)
        if key.startswith("send") and key not in {"sendchataction", "sendmediagroup"}:
            # sendPhoto, sendInvoice...: PTB expects a Message back. The media
            # itself is not modelled; the caption and keyboard are, so buttons can be pressed.
            extra = {"caption": params["caption"]} if "caption" in params else {}
            return self._store_sent(params, extra)
        # Anything else (sendChatAction, setChatMenuButton, ...) is recorded and succeeds.
        return True

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook.url:
            raise _ApiError(409, WEBHOOK_CONFLICT)
        offset = int(params.get("offset") or 0)
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        wait = min(float(params.get("timeout") or 0), self.max_poll_seconds)
        if offset < 0:
            # Telegram: a negative offset returns the last -offset updates, forgetting the rest.
            while len(self._queue) > -offset:
                self._queue.popleft()
            offset = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            # An offset acknowledges every update below it, as on Telegram.
            while self._queue and self._queue[0]["update_id"] < offset:
                self._queue.popleft()
            ready = list(itertools.islice(self._queue, limit))
            remaining = deadline - loop.time()
            if ready or self._closing or remaining <= 0:
                return ready
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return []

    def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = params.get("url")
        if not isinstance(url, str):
            raise _ApiError(400, "Bad Request: bad webhook: URL must be provided")
        if url == "":
            # Telegram treats setWebhook with an empty url as deleteWebhook.
            self.webhook = _Webhook()
            return True
        secret = params.get("secret_token")
        self.webhook = _Webhook(
            url=url, secret_token=secret if isinstance(secret, str) else None, params=params
        )
        if params.get("drop_pending_updates"):
            self._queue.clear()
        return True

    def _store_sent(self, params: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _ApiError(400, CHAT_ID_EMPTY)
        message: dict[str, Any] = {
            "message_id": next(self._message_ids[chat_id]),
            "from": self.bot_user,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        if "entities" in params:
            message["entities"] = params["entities"]
        markup = params.get("reply_markup")
        # Telegram echoes only inline keyboards in the returned Message; reply keyboards,
        # ReplyKeyboardRemove and ForceReply are not part of Message.reply_markup (and PTB would
        # fail to parse them there).
        if _is_inline_keyboard(markup):
            message["reply_markup"] = markup
        self._bot_messages[(chat_id, message["message_id"])] = _BotMessage(message)
        return message

    def _send_document(
        self, params: dict[str, Any], uploads: Mapping[str, Upload]
    ) -> dict[str, Any]:
        """A document uploaded in this request (as the ``document`` part, or a part named by
        ``attach://<name>``), or one sent before, named by its file_id; checked as Telegram
        checks it and kept with its bytes."""
        caption = params.get("caption")
        if isinstance(caption, str) and _utf16_length(caption) > CAPTION_LIMIT:
            raise _ApiError(400, CAPTION_TOO_LONG)
        reference = params.get("document")
        upload = uploads.get("document")
        if upload is None and isinstance(reference, str) and reference.startswith("attach://"):
            upload = uploads.get(reference.removeprefix("attach://"))
        if upload is None and isinstance(reference, str) and reference in self._files:
            before = self._files[reference]
            upload = Upload(before.filename, before.mime_type, before.content)
        if upload is None:
            raise _ApiError(400, WRONG_FILE_ID if reference else NO_DOCUMENT)
        if len(upload.content) > UPLOAD_LIMIT:
            raise _ApiError(413, TOO_LARGE)
        if not upload.content:
            raise _ApiError(400, FILE_EMPTY)
        number = next(self._file_ids)
        file_id = f"BQACAgQAAxkDAAI{number:08d}"
        document = {
            "file_id": file_id,
            "file_unique_id": f"AgAD{number:08d}",
            "file_name": upload.filename,
            "mime_type": upload.content_type,
            "file_size": len(upload.content),
        }
        content: dict[str, Any] = {"document": document}
        if isinstance(caption, str) and caption:
            content["caption"] = caption
        message = self._store_sent(params, content)
        sent = SentDocument(
            chat_id=params["chat_id"],
            message_id=message["message_id"],
            filename=upload.filename,
            mime_type=upload.content_type,
            content=upload.content,
            caption=content.get("caption"),
        )
        self.documents.append(sent)
        self._files[file_id] = sent
        return message

    def _target(self, params: dict[str, Any]) -> _BotMessage | None:
        """The live bot message named by chat_id + message_id, if there is one."""
        chat_id, message_id = params.get("chat_id"), params.get("message_id")
        if not isinstance(chat_id, int | str) or not isinstance(message_id, int):
            return None
        stored = self._bot_messages.get((chat_id, message_id))
        return None if stored is None or stored.deleted else stored

    def _edit(self, params: dict[str, Any], *, text_edit: bool) -> dict[str, Any] | bool:
        if "inline_message_id" in params:
            # Messages sent via inline mode are not tracked; Telegram answers True for them.
            return True
        stored = self._target(params)
        if stored is None:
            raise _ApiError(400, EDIT_NOT_FOUND)
        current = stored.message
        updated = dict(current)
        if text_edit:
            text = params.get("text")
            if not isinstance(text, str) or not text.strip():
                raise _ApiError(400, TEXT_EMPTY)
            if "text" not in current:
                raise _ApiError(400, "Bad Request: there is no text in the message to edit")
            updated["text"] = text
            updated.pop("entities", None)
            if "entities" in params:
                updated["entities"] = params["entities"]
        # On Telegram an edit without reply_markup removes the inline keyboard, for text edits
        # as well as markup edits, so "no markup" is a change when there was one.
        markup = params.get("reply_markup")
        updated.pop("reply_markup", None)
        if _is_inline_keyboard(markup):
            updated["reply_markup"] = markup
        if {k: v for k, v in updated.items() if k != "edit_date"} == {
            k: v for k, v in current.items() if k != "edit_date"
        }:
            raise _ApiError(400, NOT_MODIFIED)
        updated["edit_date"] = int(time.time())
        stored.message = updated
        return updated
