"""A chat in the terminal, for ``duka demo``: you are the customer; the merchant's
notifications are printed too. Buttons are numbered; typing a number presses one."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from bot.chat.model import Button, Reply

MERCHANT_CHAT = "merchant"


class TerminalChannel:
    name = "terminal"

    def __init__(self, show: Callable[[str], None] = print) -> None:
        self._show = show
        self._ids = itertools.count(1)
        self.buttons: dict[str, list[Button]] = {}  # chat -> buttons of its latest message
        self.messages: dict[str, list[str]] = {}  # chat -> every text shown, in order

    async def send(self, chat_id: str, reply: Reply, *, replace: str | None = None) -> str:
        lines = [f"[shop → {chat_id}] {reply.text}"]
        buttons = [button for row in reply.buttons for button in row]
        if buttons:
            self.buttons[chat_id] = buttons
            lines += [f"    [{n}] {b.label}" for n, b in enumerate(buttons, start=1)]
        if reply.ask_contact:
            lines.append(f"    [share] {reply.ask_contact}")
        self.messages.setdefault(chat_id, []).append(reply.text)
        self._show("\n".join(lines))
        return replace or str(next(self._ids))

    def button(self, chat_id: str, choice: str) -> Button | None:
        """The button a typed number, or a piece of a label, points at."""
        buttons = self.buttons.get(chat_id, [])
        if choice.isdigit() and 1 <= int(choice) <= len(buttons):
            return buttons[int(choice) - 1]
        matches = [b for b in buttons if choice.lower() in b.label.lower()]
        return matches[0] if matches else None
