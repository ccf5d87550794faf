"""The people of ``duka demo``: customers who type, press buttons and share their number
or location in the terminal chat, and the merchant who types commands. They go through
the same conversation and merchant desk as Telegram and WhatsApp users."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from bot.channels.terminal import MERCHANT_CHAT, TerminalChannel
from bot.chat.engine import Conversation
from bot.chat.model import Inbound, Location
from bot.merchant import MerchantDesk
from payments.daraja_client import DarajaClient
from payments.phone import normalize_msisdn

Say = Callable[[str], None]
DEMO_PHONE = "0712 345 678"
WAIT_SECONDS = 30.0
# Where a demo customer "is" when they share their location: Kencom, Nairobi CBD.
DEMO_LOCATION = Location(-1.28412, 36.82331, "Kencom House, Moi Avenue")
REFERENCE = re.compile(r"DK-\w+")


class DemoFailed(Exception):
    pass


class Customer:
    """A customer in the terminal chat: says things and presses buttons by label."""

    def __init__(
        self,
        conversation: Conversation,
        terminal: TerminalChannel,
        chat_id: str,
        name: str,
        say: Say,
    ) -> None:
        self.conversation, self.terminal, self.chat_id = conversation, terminal, chat_id
        self.name, self._say = name, say

    async def types(self, text: str) -> None:
        self._say(f"[{self.name}] {text}")
        await self._send(Inbound("terminal", self.chat_id, self.name, text=text))

    async def presses(self, label: str) -> None:
        button = self.terminal.button(self.chat_id, label)
        if button is None:
            raise DemoFailed(f"{self.name} sees no button {label!r}")
        self._say(f"[{self.name} presses] {button.label}")
        await self._send(Inbound("terminal", self.chat_id, self.name, button=button.data))

    async def shares_number(self, phone: str) -> None:
        self._say(f"[{self.name} shares their number] {phone}")
        await self._send(
            Inbound("terminal", self.chat_id, self.name, contact_phone=phone, contact_is_own=True)
        )

    async def shares_location(self, where: Location = DEMO_LOCATION) -> None:
        self._say(f"[{self.name} shares their location] {where.place}")
        await self._send(Inbound("terminal", self.chat_id, self.name, location=where))

    async def _send(self, event: Inbound) -> None:
        await self.conversation.reply_through(self.terminal, event)

    async def waits_for(self, words: str) -> str:
        """Until a message containing ``words`` reaches this chat; that message."""
        await wait_for_messages(self.terminal, self.chat_id, words, 1)
        return next(m for m in self.terminal.messages[self.chat_id] if words in m)

    def last_message(self) -> str:
        return self.terminal.messages.get(self.chat_id, [""])[-1]


class Merchant:
    """The shop's owner in the terminal: commands go to the merchant desk, answers are
    printed in the merchant's chat."""

    def __init__(self, desk: MerchantDesk, terminal: TerminalChannel, say: Say) -> None:
        self.desk, self.terminal, self._say = desk, terminal, say

    async def types(self, text: str, *, echo: bool = True) -> bool:
        """False when ``text`` is no merchant command."""
        if echo:
            self._say(f"[merchant] {text}")
        reply = await self.desk.handle(f"{self.terminal.name}:{MERCHANT_CHAT}", text)
        if reply is None:
            return False
        await self.terminal.send(MERCHANT_CHAT, reply)
        return True


async def pay_by_paybill(
    daraja: DarajaClient, say: Say, who: str, phone: str, reference: str, amount: int
) -> None:
    """The customer's own M-Pesa menu: Lipa na M-Pesa → Paybill → account → amount."""
    say(f"[{who} pays by Paybill from {phone}] account {reference}, KES {amount:,}")
    await daraja.simulate_c2b(normalize_msisdn(phone).msisdn, amount, reference)


async def wait_for_messages(
    terminal: TerminalChannel, chat_id: str, words: str, count: int
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while sum(words in text for text in terminal.messages.get(chat_id, [])) < count:
        if loop.time() > deadline:
            raise DemoFailed(f"{chat_id} never got {count} message(s) with {words!r}")
        await asyncio.sleep(0.05)


def reference_in(text: str) -> str:
    found = REFERENCE.search(text)
    if found is None:
        raise DemoFailed(f"no order reference in {text!r}")
    return found.group(0)
