"""What every channel offers the dispatcher and the conversation, and how it fails."""

from __future__ import annotations

from typing import Protocol

from bot.chat.model import Reply


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


class Channel(Protocol):
    name: str

    async def send(self, chat_id: str, reply: Reply, *, replace: str | None = None) -> str:
        """Send ``reply`` (editing message ``replace`` where possible); the message's id."""
        ...
