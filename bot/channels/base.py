"""What every channel offers the dispatcher and the conversation, how it fails, and the
handling of one customer event that every chat channel shares."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot.chat.model import Inbound, Reply
from bot.texts import say

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """Sending failed for a reason that may pass (network, 5xx): try again later."""


class RetryLater(DeliveryError):
    """The platform asked us to slow down (HTTP 429)."""

    def __init__(self, after_seconds: float) -> None:
        super().__init__(f"rate limited; retry after {after_seconds:g} s")
        self.after_seconds = after_seconds


class Undeliverable(DeliveryError):
    """The platform refused this message for good (e.g. chat not found): do not retry."""


class RecipientGone(Undeliverable):
    """The customer blocked the bot: do not retry, and remember it."""


@dataclass(frozen=True, slots=True)
class Notice:
    """An outbox message for one chat, as the dispatcher hands it over: the words, and
    what a channel that cannot always send free-form text needs to send it another way
    (WhatsApp: an approved template outside the 24-hour window)."""

    reply: Reply
    kind: str  # the message kind (a MessageKind): it names the template
    parameters: tuple[str, ...]  # the same facts as single-line template parameters
    language: str  # the language the words are in
    last_inbound_at: datetime | None  # when the recipient last wrote to the shop


class Channel(Protocol):
    name: str

    async def send(self, chat_id: str, reply: Reply, *, replace: str | None = None) -> str:
        """Send ``reply`` (editing message ``replace`` where possible); the message's id."""
        ...

    async def notify(self, chat_id: str, notice: Notice, *, replace: str | None = None) -> str:
        """Deliver an outbox message: as ``send`` does, or as the platform allows."""
        ...


# The conversation and the merchant desk as the channels see them. Protocols, not the
# classes: bot.chat.engine imports this module, so importing it here would be a cycle.


class Conversing(Protocol):
    """bot.chat.engine.Conversation: one event in, its replies out through ``channel``."""

    async def reply_through(
        self, channel: Channel, event: Inbound, pressed_message: str | None = None
    ) -> None: ...


class MerchantCommands(Protocol):
    """bot.merchant.MerchantDesk: ``who`` is ``<channel>:<id>``, as configured."""

    def is_merchant(self, who: str) -> bool: ...

    async def handle(self, who: str, text: str) -> Reply | None: ...


async def handle_inbound(
    channel: Channel,
    event: Inbound,
    conversation: Conversing,
    *,
    merchant: MerchantCommands | None = None,
    who: str | None = None,
    pressed_message: str | None = None,
    on_merchant: Callable[[], Awaitable[object]] | None = None,
    before_conversation: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Answer one customer event through ``channel``, never raising.

    A merchant's command (text from ``who``, or a button of theirs) is answered by the
    desk; anything else by the conversation, a reply marked ``edit`` replacing
    ``pressed_message``. A channel's own steps: ``on_merchant`` runs when the sender is a
    merchant, before their command is read; ``before_conversation`` runs before the
    conversation is asked, and returning True means the channel answered the event itself.
    """
    try:
        command = _command_in(event)
        if command and merchant is not None and who is not None and merchant.is_merchant(who):
            if on_merchant is not None:
                await on_merchant()
            reply = await merchant.handle(who, command)
            if reply is not None:
                await channel.send(event.chat_id, reply)
                return
            # Not a command: a merchant may shop like anyone else.
        if before_conversation is not None and await before_conversation():
            return
        await conversation.reply_through(channel, event, pressed_message)
    except Exception:
        # Never silence: the customer hears that something broke, the log has the why.
        log.exception("%s: a customer's event could not be handled", channel.name)
        # In both languages: the customer's choice may be what could not be read.
        sorry = f"{say('en', 'sorry')}\n{say('sw', 'sorry')}"
        with contextlib.suppress(Exception):  # e.g. the chat is unreachable: logged above
            await channel.send(event.chat_id, Reply(sorry))


def _command_in(event: Inbound) -> str | None:
    """What a merchant would have typed: their text, or the command a merchant button
    carries as its data (bot.merchant.move_command). No customer button's data starts
    with "/" (bot.chat.buttons), so a merchant shopping still reaches the conversation;
    anyone else pressing such data is not asked for a command at all."""
    if event.text:
        return event.text
    if event.button and event.button.startswith("/"):
        return event.button
    return None
