"""The shop on WhatsApp (Cloud API), from the same process and database as Telegram.

Webhooks: Meta's GET verification; POSTs signed with ``X-Hub-Signature-256`` (checked
over the raw bytes before anything is parsed: missing 401, wrong 403), acknowledged at
once, each message handled once however often Meta redelivers it. Replies: WhatsApp
cannot edit messages or show more than three buttons, so a reply with more choices
becomes a list (ten rows at most, the rest behind "More"); outside the 24-hour window
the paid and failed notices go out as approved templates.
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

import httpx
from aiohttp import web
from sqlalchemy import Connection

from bot.channels.base import (
    DeliveryError,
    Notice,
    RetryLater,
    Undeliverable,
    handle_inbound,
)
from bot.channels.whatsapp_api import (
    MAX_BODY,
    MAX_BUTTON_TITLE,
    MAX_BUTTONS,
    MAX_CAPTION,
    MAX_LIST_ROWS,
    MAX_ROW_DESCRIPTION,
    MAX_ROW_TITLE,
    MAX_TEXT,
    OUTSIDE_WINDOW,
    RATE_LIMITED,
    GraphError,
    ListRow,
    WhatsAppClient,
    WhatsAppLimitError,
    buttons_message,
    contact_request_message,
    document_message,
    list_message,
    location_request_message,
    template_message,
    text_message,
)
from bot.channels.whatsapp_inbound import WaMessage, read_webhook, signature_matches
from bot.chat.engine import Conversation
from bot.chat.model import Button, Document, Inbound, Location, Reply
from bot.config import WhatsAppSettings
from bot.merchant import MerchantDesk
from bot.texts import say
from payments.http_body import MAX_BODY_READ_SECONDS, chat_webhook_refusal, read_limited
from storage.engine import Database
from storage.list_pages import Page, latest_list, save_list
from storage.orders import (
    claim_inbound,
    inbound_handled,
    pending_inbound,
    record_inbound,
    rekey_chat,
)

log = logging.getLogger(__name__)
EXPIRED_TOKEN = 190
MAX_WEBHOOK_BYTES = 4 * 1024 * 1024  # Meta's webhooks reach about 3 MB
NO_TRANSLATION = 132001  # "Template name does not exist in the translation"
RESUME_WINDOW = timedelta(hours=1)  # older unhandled messages are stale: not acted on
# The customer-service window, less a margin for the message to get there.
SERVICE_WINDOW = timedelta(hours=24) - timedelta(minutes=10)
MORE = "wa:more"  # our own list row: the next page of a long list
LIST_BUTTON = "Choose · Chagua"  # both languages: the channel does not know the customer's
PAIR_RATE_PAUSE = 6.0  # Meta allows about one message per six seconds to one user
RATE_LIMIT_PAUSES = (1.0, PAIR_RATE_PAUSE)  # waited out in place before handing back


class WhatsAppChannel:
    name = "whatsapp"

    def __init__(
        self,
        settings: WhatsAppSettings,
        client: WhatsAppClient,
        conversation: Conversation,
        database: Database,
        clock: Callable[[], datetime],
        merchant: MerchantDesk | None = None,
        *,
        read_seconds: float = MAX_BODY_READ_SECONDS,
    ) -> None:
        self._settings = settings
        self._read_seconds = read_seconds  # for a webhook body to arrive whole
        self._client = client
        self._conversation = conversation
        self._merchant = merchant
        self._db = database
        self._clock = clock
        self._work: set[asyncio.Task[None]] = set()

    # --- webhook ---------------------------------------------------------------------------

    async def verify(self, request: web.Request) -> web.Response:
        """Meta's subscription handshake: echo the challenge for the right token only."""
        query = request.query
        token = query.get("hub.verify_token", "")
        if query.get("hub.mode") == "subscribe" and hmac.compare_digest(
            token.encode(), self._settings.verify_token.encode()
        ):
            return web.Response(text=query.get("hub.challenge", ""))
        return web.Response(status=403, text="verification refused")

    async def receive(self, request: web.Request) -> web.Response:
        read = await read_limited(request, MAX_WEBHOOK_BYTES, self._read_seconds)
        if (refusal := chat_webhook_refusal(read, "WhatsApp")) is not None:
            return refusal
        body = read.data
        signature = request.headers.get("X-Hub-Signature-256", "")
        if not signature:
            return web.json_response({"error": "missing X-Hub-Signature-256"}, status=401)
        if not signature_matches(self._settings.app_secret, body, signature):
            return web.json_response({"error": "signature does not match"}, status=403)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json reads
            return web.json_response({"error": "body is not JSON"}, status=400)
        messages, statuses = read_webhook(payload)
        for status in statuses:
            if status.status == "failed":
                log.warning("WhatsApp message %s failed: %s", status.message_id, status.error_codes)
        # Stored before Meta hears "200", so a message cannot be lost between the two.
        claims = [(m.id, json.dumps(dataclasses.asdict(m))) for m in messages]
        fresh = await self._db.transaction(claim_inbound, self.name, claims, self._clock())
        for message in messages:
            if message.id in fresh:
                # Answer Meta now; handle the message after (it may push an STK prompt).
                self._spawn(message)
        return web.json_response({"ok": True})

    async def resume(self) -> None:
        """Handle what was acknowledged but not handled when the process last stopped."""
        since = self._clock() - RESUME_WINDOW
        for payload in await self._db.transaction(pending_inbound, self.name, since):
            self._spawn(WaMessage(**json.loads(payload)))

    def _spawn(self, message: WaMessage) -> None:
        task = asyncio.create_task(self._handle(message))
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def stop(self) -> None:
        """Let messages being handled finish."""
        if self._work:
            await asyncio.wait(self._work, timeout=10)
        for task in self._work:
            task.cancel()

    async def _handle(self, message: WaMessage) -> None:
        event = Inbound(
            self.name,
            message.chat_id,
            message.name,
            text=message.text,
            button=message.button,
            contact_phone=message.contact_phone,
            contact_is_own=message.contact_is_own,
            location=_location(message),
            unsupported=message.kind == "unsupported",
        )
        await handle_inbound(
            self,
            event,
            self._conversation,
            merchant=self._merchant,
            # Merchants are known by their phone number, not by the chat's id.
            who=f"{self.name}:{message.wa_id}" if message.wa_id else None,
            on_merchant=lambda: self._merchant_wrote(message),
            before_conversation=lambda: self._answered_here(message),
        )
        # Handled, or answered with an apology: either way, not to be handled again.
        with contextlib.suppress(Exception):
            await self._db.transaction(inbound_handled, self.name, message.id, self._clock())

    async def _merchant_wrote(self, message: WaMessage) -> None:
        """A merchant writing opens WhatsApp's window: their alerts can go out as plain text."""
        if message.wa_id:  # always: it is what made them a merchant
            await self._db.transaction(
                record_inbound, self.name, message.wa_id, message.name, self._clock()
            )

    async def _answered_here(self, message: WaMessage) -> bool:
        """The channel's own part before the conversation's; True when it answered."""
        if message.button and message.button.startswith(f"{MORE}:"):
            # Our own "More" row: a list's next page (a button, so never a merchant's command).
            await self._next_page(message.chat_id, message.button)
            return True
        if message.wa_id and message.chat_id != message.wa_id:
            # Known by phone before Meta sent a business-scoped id: same customer.
            await self._db.transaction(rekey_chat, self.name, message.wa_id, message.chat_id)
        return False

    # --- messages out ----------------------------------------------------------------------

    async def send(self, chat_id: str, reply: Reply, *, replace: str | None = None) -> str:
        """Send ``reply`` (WhatsApp cannot edit: ``replace`` is ignored); the wamid."""
        try:
            return await self._send_free_form(chat_id, reply)
        except GraphError as exc:
            raise _delivery_error(exc) from exc

    async def notify(self, chat_id: str, notice: Notice, *, replace: str | None = None) -> str:
        """An outbox message: free-form inside the customer-service window, else (or when
        Meta says the window closed) the kind's approved template."""
        last = notice.last_inbound_at
        if last is None or self._clock() - last > SERVICE_WINDOW:
            # Meta would accept a free-form message and fail it later (131047): the
            # template goes straight away.
            return await self._send_template(chat_id, notice)
        try:
            return await self._send_free_form(chat_id, notice.reply)
        except GraphError as exc:
            if exc.code == OUTSIDE_WINDOW:
                return await self._send_template(chat_id, notice)
            raise _delivery_error(exc) from exc

    async def _send_free_form(self, chat_id: str, reply: Reply) -> str:
        if reply.document is not None:
            return await self._send_document(chat_id, reply, reply.document)
        try:
            message_id = ""
            for message in await self._render(chat_id, reply):
                message_id = await self._send_paced(chat_id, message)
            return message_id
        except WhatsAppLimitError as exc:
            log.error("WhatsApp message for %s breaks a limit: %s", chat_id[-4:], exc)
            raise Undeliverable(str(exc)) from exc

    async def _send_document(self, chat_id: str, reply: Reply, document: Document) -> str:
        """Upload the file, then send it with the words as its caption; the words go first on
        their own when they are too long for a caption or carry buttons (a document message
        has none). A file Meta refuses, or that cannot get there, is answered with a message
        that says so: the merchant asked for it and must not be left waiting."""
        caption = reply.text
        if len(caption) > MAX_CAPTION or reply.buttons or reply.ask_contact is not None:
            await self._send_free_form(chat_id, dataclasses.replace(reply, document=None))
            caption = ""
        try:
            media_id = await self._client.upload(
                document.content, document.filename, document.mime_type
            )
            message = document_message(media_id, document.filename, caption)
            return await self._send_paced(chat_id, message)
        except (GraphError, WhatsAppLimitError, DeliveryError, httpx.TransportError) as exc:
            log.warning("WhatsApp did not take %s for %s: %s", document.filename, chat_id[-4:], exc)
            why = _why_not_sent(exc)
        refusal = say("en", "m_file_not_sent", filename=document.filename, why=why)
        return await self._send_free_form(chat_id, Reply(refusal))

    async def _send_paced(self, chat_id: str, message: dict[str, object]) -> str:
        """Send, waiting out Meta's rate limits a few times (a lost reply is worse than a
        late one); then let the caller retry later."""
        for pause in (*RATE_LIMIT_PAUSES, None):
            try:
                return await self._client.send(chat_id, message)
            except GraphError as exc:
                if exc.code not in RATE_LIMITED or pause is None:
                    raise
                await asyncio.sleep(pause)
            except httpx.TransportError as exc:
                raise DeliveryError(f"WhatsApp unreachable ({type(exc).__name__})") from exc
        raise AssertionError("unreachable")

    async def _send_template(self, chat_id: str, notice: Notice) -> str:
        kind, parameters = notice.kind, notice.parameters
        name = self._settings.template_for(kind)
        if name is None:
            raise Undeliverable(f"outside the 24-hour window and no template for {kind}")
        code = self._settings.template_language_for(notice.language)
        try:
            return await self._send_paced(chat_id, template_message(name, code, list(parameters)))
        except GraphError as exc:
            default = self._settings.template_language
            if exc.code != NO_TRANSLATION or code == default:
                raise _delivery_error(exc) from exc
            # No translation of this template in the customer's language: the default one
            # still tells them (its parameters stay in their language).
            log.warning("template %s has no %s translation; sending %s", name, code, default)
        try:
            return await self._send_paced(
                chat_id, template_message(name, default, list(parameters))
            )
        except GraphError as exc:
            raise _delivery_error(exc) from exc

    async def _render(self, chat_id: str, reply: Reply) -> list[dict[str, object]]:
        """The messages for ``reply``: usually one; a long text comes first on its own."""
        choices = list({b.data: b for row in reply.buttons for b in row}.values())
        if reply.ask_contact is None and reply.ask_location is None and not choices:
            return [text_message(chunk) for chunk in _chunks(reply.text, MAX_TEXT)]
        lead, body = _split_body(reply.text)
        messages = [text_message(chunk) for chunk in _chunks(lead, MAX_TEXT)] if lead else []
        if reply.ask_contact is not None:
            return [*messages, contact_request_message(body)]
        if reply.ask_location is not None:
            return [*messages, location_request_message(body)]
        if (
            len(choices) <= MAX_BUTTONS
            and all(len(b.label) <= MAX_BUTTON_TITLE for b in choices)
            and len({b.label for b in choices}) == len(choices)
        ):
            return [*messages, buttons_message(body, [(b.data, b.label) for b in choices])]
        pinned = [_row(b) for b in reply.buttons[-1]] if len(choices) > MAX_LIST_ROWS else []
        pinned_ids = {r.id for r in pinned}
        rows = [_row(b) for b in choices if b.data not in pinned_ids]
        pages = await self._db.transaction(
            _remember_list, chat_id, rows, pinned, body, self._clock()
        )
        return [*messages, list_message(body, LIST_BUTTON, pages[0])]

    async def _next_page(self, chat_id: str, data: str) -> None:
        _, _, rest = data.partition(f"{MORE}:")
        seq, _, page = rest.partition(":")
        stored = await self._db.transaction(latest_list, chat_id)
        if stored is None or str(stored[0]) != seq or not page.isdigit():
            # An older list (the chat has moved on): start again from the menu.
            await self._conversation.reply_through(self, Inbound(self.name, chat_id, text="/start"))
            return
        _, body, pages = stored
        index = min(int(page), len(pages) - 1)
        rows = [ListRow(*row) for row in pages[index]]
        await self._send_paced(chat_id, list_message(body, LIST_BUTTON, rows))


def _remember_list(
    conn: Connection,
    chat_id: str,
    rows: list[ListRow],
    pinned: list[ListRow],
    body: str,
    now: datetime,
) -> list[list[ListRow]]:
    """The list's pages, numbered as the chat's newest list and stored for "More…"."""
    built: list[list[ListRow]] = []

    def pages(seq: int) -> list[Page]:
        built.extend(_pages(rows, pinned, seq))
        return [[(r.id, r.title, r.description) for r in page] for page in built]

    save_list(conn, chat_id, body, pages, now)
    return built


def _row(button: Button) -> ListRow:
    long = len(button.label) > MAX_ROW_TITLE
    return ListRow(
        button.data,
        _fit(button.label, MAX_ROW_TITLE),
        _fit(button.label, MAX_ROW_DESCRIPTION) if long else "",
    )


def _split_body(text: str) -> tuple[str, str]:
    """(text to send first, interactive body): bodies hold 1024 characters at most."""
    if len(text) <= MAX_BODY:
        return "", text
    head, _, last = text.rstrip().rpartition("\n\n")
    if head and len(last) <= MAX_BODY:
        return head, last
    return text, "⬆️"


def _location(message: WaMessage) -> Location | None:
    if message.latitude is None or message.longitude is None:
        return None
    return Location(message.latitude, message.longitude, message.place)


def _chunks(text: str, limit: int) -> list[str]:
    """Split at line ends so that no message is over ``limit``."""
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            chunks.append(line[:limit])
            line = line[limit:]
        if current and len(current) + 1 + len(line) > limit:
            chunks.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    return [*chunks, current] if current or not chunks else chunks


def _pages(rows: list[ListRow], pinned: list[ListRow], seq: int) -> list[list[ListRow]]:
    """Ten rows a page. Long lists repeat the ``pinned`` rows (Checkout, Menu...) on every
    page and end each page but the last with "More", which names its list and page."""
    if len(rows) + len(pinned) <= MAX_LIST_ROWS:
        return [rows + pinned]
    size = MAX_LIST_ROWS - len(pinned) - 1
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    return [
        [*chunk, *pinned, ListRow(f"{MORE}:{seq}:{n + 1}", "More…")]
        if n < len(chunks) - 1
        else [*chunk, *pinned]
        for n, chunk in enumerate(chunks)
    ]


def _why_not_sent(exc: Exception) -> str:
    """Why a file did not go, in words a merchant can act on."""
    if isinstance(exc, GraphError):
        if exc.code in RATE_LIMITED:
            return "WhatsApp asked us to slow down"
        return f"WhatsApp refused it ({exc.details or exc})"
    if isinstance(exc, WhatsAppLimitError):
        return str(exc)
    return "WhatsApp could not be reached"


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _delivery_error(exc: GraphError) -> DeliveryError:
    if exc.code in RATE_LIMITED:
        return RetryLater(PAIR_RATE_PAUSE * 5)
    if exc.code == EXPIRED_TOKEN:
        log.error("WhatsApp refuses WHATSAPP_ACCESS_TOKEN (expired?); messages wait meanwhile")
        return DeliveryError(str(exc))
    if exc.status >= 500 or exc.code == 131000:  # Meta's "something went wrong"
        return DeliveryError(str(exc))
    return Undeliverable(str(exc))
