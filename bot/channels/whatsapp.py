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
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime

import httpx
from aiohttp import web

from bot.channels.base import DeliveryError, RetryLater, Undeliverable
from bot.channels.whatsapp_api import (
    MAX_BODY,
    MAX_BUTTON_TITLE,
    MAX_BUTTONS,
    MAX_LIST_ROWS,
    MAX_ROW_DESCRIPTION,
    MAX_ROW_TITLE,
    OUTSIDE_WINDOW,
    RATE_LIMITED,
    GraphError,
    ListRow,
    WhatsAppClient,
    WhatsAppLimitError,
    buttons_message,
    contact_request_message,
    list_message,
    template_message,
    text_message,
)
from bot.channels.whatsapp_inbound import WaMessage, read_webhook, signature_matches
from bot.chat.engine import Conversation
from bot.chat.model import Inbound, Reply
from bot.config import WhatsAppSettings
from storage.engine import Database
from storage.orders import claim_inbound

log = logging.getLogger(__name__)
MORE = "wa:more"  # our own list row: the next page of a long list
LIST_BUTTON = "Choose · Chagua"  # both languages: the channel does not know the customer's
PAIR_RATE_PAUSE = 6.0  # Meta allows about one message per six seconds to one user


class WhatsAppChannel:
    name = "whatsapp"

    def __init__(
        self,
        settings: WhatsAppSettings,
        client: WhatsAppClient,
        conversation: Conversation,
        database: Database,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._client = client
        self._conversation = conversation
        self._db = database
        self._clock = clock
        self._more: dict[str, list[list[ListRow]]] = {}  # chat -> pages still to show
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
        body = await request.read()
        signature = request.headers.get("X-Hub-Signature-256", "")
        if not signature:
            return web.json_response({"error": "missing X-Hub-Signature-256"}, status=401)
        if not signature_matches(self._settings.app_secret, body, signature):
            return web.json_response({"error": "signature does not match"}, status=403)
        try:
            payload = json.loads(body)
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        messages, statuses = read_webhook(payload)
        for status in statuses:
            if status.status == "failed":
                log.warning("WhatsApp message %s failed: %s", status.message_id, status.error_codes)
        fresh = await self._db.transaction(
            claim_inbound, self.name, [m.id for m in messages], self._clock()
        )
        for message in messages:
            if message.id in fresh:
                # Answer Meta now; handle the message after (it may push an STK prompt).
                task = asyncio.create_task(self._handle(message))
                self._work.add(task)
                task.add_done_callback(self._work.discard)
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        """Let messages being handled finish."""
        if self._work:
            await asyncio.wait(self._work, timeout=10)
        for task in self._work:
            task.cancel()

    async def _handle(self, message: WaMessage) -> None:
        try:
            if message.button == MORE:
                await self._next_page(message.chat_id)
                return
            event = Inbound(
                self.name,
                message.chat_id,
                message.name,
                text=message.text,
                button=message.button,
                contact_phone=message.contact_phone,
                contact_is_own=message.contact_is_own,
                unsupported=message.kind == "unsupported",
            )
            await self._conversation.reply_through(self, event)
        except Exception:
            log.exception("WhatsApp message %s could not be handled", message.id)

    # --- messages out ----------------------------------------------------------------------

    async def send(self, chat_id: str, reply: Reply, *, replace: str | None = None) -> str:
        """Send ``reply`` (WhatsApp cannot edit: ``replace`` is ignored); the wamid."""
        try:
            message = self._render(chat_id, reply)
            return await self._client.send(chat_id, message)
        except WhatsAppLimitError as exc:
            log.error("WhatsApp message for %s breaks a limit: %s", chat_id[-4:], exc)
            raise Undeliverable(str(exc)) from exc
        except GraphError as exc:
            if exc.code == OUTSIDE_WINDOW and reply.template is not None:
                return await self._send_template(chat_id, reply.template)
            raise _delivery_error(exc) from exc
        except httpx.TransportError as exc:
            raise DeliveryError(f"WhatsApp unreachable ({type(exc).__name__})") from exc

    async def _send_template(self, chat_id: str, template: tuple[str, tuple[str, ...]]) -> str:
        kind, parameters = template
        name = self._settings.template_for(kind)
        if name is None:
            raise Undeliverable(f"outside the 24-hour window and no template for {kind}")
        message = template_message(name, self._settings.template_language, list(parameters))
        try:
            return await self._client.send(chat_id, message)
        except GraphError as exc:
            raise _delivery_error(exc) from exc

    def _render(self, chat_id: str, reply: Reply) -> dict[str, object]:
        text = reply.text
        if reply.ask_contact is not None:
            return contact_request_message(_fit(text, MAX_BODY))
        choices = list({b.data: b for row in reply.buttons for b in row}.values())
        if not choices:
            return text_message(text)
        if (
            len(choices) <= MAX_BUTTONS
            and all(len(b.label) <= MAX_BUTTON_TITLE for b in choices)
            and len({b.label for b in choices}) == len(choices)
        ):
            return buttons_message(_fit(text, MAX_BODY), [(b.data, b.label) for b in choices])
        rows = [
            ListRow(
                b.data,
                _fit(b.label, MAX_ROW_TITLE),
                b.label if len(b.label) > MAX_ROW_TITLE else "",
            )
            for b in choices
        ]
        rows = [ListRow(r.id, r.title, _fit(r.description, MAX_ROW_DESCRIPTION)) for r in rows]
        pages = _pages(rows)
        self._more[chat_id] = pages[1:]
        return list_message(_fit(text, MAX_BODY), LIST_BUTTON, pages[0])

    async def _next_page(self, chat_id: str) -> None:
        pages = self._more.get(chat_id)
        if not pages:
            # Pages live in memory; after a restart the customer starts from the menu.
            await self._conversation.reply_through(self, Inbound(self.name, chat_id, text="/start"))
            return
        page, self._more[chat_id] = pages[0], pages[1:]
        await self._client.send(chat_id, list_message("…", LIST_BUTTON, page))


def _pages(rows: list[ListRow]) -> list[list[ListRow]]:
    """Ten rows a page; a page that is not the last gives its tenth row to "More"."""
    if len(rows) <= MAX_LIST_ROWS:
        return [rows]
    size = MAX_LIST_ROWS - 1
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    more = ListRow(MORE, "More…")
    return [[*chunk, more] if n < len(chunks) - 1 else chunk for n, chunk in enumerate(chunks)]


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _delivery_error(exc: GraphError) -> DeliveryError:
    if exc.code in RATE_LIMITED:
        return RetryLater(PAIR_RATE_PAUSE)
    if exc.status >= 500 or exc.code == 131000:  # Meta's "something went wrong"
        return DeliveryError(str(exc))
    return Undeliverable(str(exc))
