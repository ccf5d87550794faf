"""Scripted Telegram customers for ``bench.chat``, and what they see on screen.

The customers live in the benchmark's process, next to the fake Bot API
(``tests.fakes.telegram_api.FakeTelegram``) that the bot under test talks to. They act
through the fake (``user_sends_text``, ``user_presses_button``, ``user_shares_contact``:
the update is queued for the bot's ``getUpdates``) and read their screen from what the
fake accepted: ``WatchedTelegram`` hands every recorded call to a ``Watcher`` the moment
the fake records it, and the watcher files it under its chat. So "on screen" means the
instant the fake accepted the send or edit, which with ``round_trip_seconds`` is half a
round trip after the bot sent it, as on a real network.

Each customer runs the same script: act, wait until the answer is on screen (a message
sent or edited after the action that shows what the step expects), think, act again.
Pressing a button means finding it on screen by its label, as a person does.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fakes.telegram_api import Call, FakeTelegram

# Calls that put or change a message on screen: what Telegram's flood limits count.
MESSAGE_METHODS = frozenset({"sendmessage", "editmessagetext", "editmessagereplymarkup"})
PROMPT = "Check your phone"  # Duka's answer to a shared number: the M-Pesa prompt is out
PAID = "Paid!"


@dataclass(frozen=True)
class Step:
    """One customer action and what its answer must show (in text or a button label)."""

    kind: Literal["text", "press", "contact"]
    value: str = ""  # the text to send, or the label of the button to press
    expect: str = ""  # "" : any message sent or edited after the action


# Duka's shop, in its own words and buttons (the bench's catalog, see bench/chat.py).
DUKA_SCRIPT = (
    Step("text", "/start", expect="Staples"),
    Step("press", "Staples", expect="Unga 2kg"),
    Step("press", "Unga 2kg", expect="Add to cart"),
    Step("press", "Add to cart", expect="Added 1 × Unga 2kg"),
    Step("text", "2 sukari", expect="Added 2 × Sukari 1kg"),  # the second product, typed
    Step("press", "Checkout", expect="Confirm order"),
    Step("press", "Confirm order", expect="M-Pesa number"),
    Step("contact", expect=PROMPT),
)
# The floor's: the same actions, each answered by one message with a "Next" button.
FLOOR_SCRIPT = tuple(
    Step(s.kind, "Next" if s.kind == "press" else s.value, expect="") for s in DUKA_SCRIPT
)


@dataclass(frozen=True)
class Shown:
    """A message as it appeared on screen (sent or edited): when, and what it showed."""

    at: float  # time.perf_counter()
    wall: float  # time.time(), to compare with timestamps Duka stored
    message: dict[str, Any]

    def shows(self, words: str) -> bool:
        if words in str(self.message.get("text", "")):
            return True
        rows = self.message.get("reply_markup", {}).get("inline_keyboard", [])
        return any(words in str(button.get("text", "")) for row in rows for button in row)


class Screen:
    """One chat's messages from the bot, in the order they appeared (edits included)."""

    def __init__(self) -> None:
        self.shown: list[Shown] = []
        self.current: dict[int, dict[str, Any]] = {}  # message_id -> as it looks now
        self._changed = asyncio.Event()

    def add(self, shown: Shown) -> None:
        self.shown.append(shown)
        self.current[shown.message["message_id"]] = shown.message
        self._changed.set()

    async def wait_for(self, words: str, since: int) -> tuple[int, Shown]:
        """The first message shown at index ``since`` or later that shows ``words``."""
        while True:
            for index in range(since, len(self.shown)):
                if self.shown[index].shows(words):
                    return index, self.shown[index]
            since = len(self.shown)
            self._changed.clear()
            await self._changed.wait()

    def button(self, label: str) -> tuple[int, str]:
        """(message_id, callback_data) of the newest message's button with this label."""
        for message_id in sorted(self.current, reverse=True):
            rows = self.current[message_id].get("reply_markup", {}).get("inline_keyboard", [])
            for row in rows:
                for button in row:
                    if label in button.get("text", "") and "callback_data" in button:
                        return message_id, button["callback_data"]
        raise LookupError(f"no button {label!r} on screen")


@dataclass
class Watcher:
    """Every call the fake records, filed as it happens (by ``WatchedTelegram``)."""

    screens: dict[int, Screen] = field(default_factory=dict)  # customers' chats only
    polled: asyncio.Event = field(default_factory=asyncio.Event)  # the bot is polling
    acknowledged: dict[str, float] = field(default_factory=dict)  # callback query id -> at
    refusals: list[float] = field(default_factory=list)  # each 429's time, any method
    message_calls: int = 0  # sends and edits into customers' chats, refused ones included
    other_failures: list[str] = field(default_factory=list)
    paid_calls: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))
    merchant_chat: int | None = None
    merchant_messages: int = 0  # accepted sends into the merchant's chat

    def saw(self, call: Call) -> None:
        at = time.perf_counter()
        key = call.method.lower()
        if key == "getupdates":
            self.polled.set()
        if call.failed:
            if call.status == 429:
                self.refusals.append(at)
            elif len(self.other_failures) < 20:
                self.other_failures.append(f"{call.method} {call.status}: {call.result}")
        chat_id = call.params.get("chat_id")
        if key == "sendmessage" and chat_id == self.merchant_chat and not call.failed:
            self.merchant_messages += 1
        if key in MESSAGE_METHODS and chat_id in self.screens:
            self.message_calls += 1
            if not call.failed and isinstance(call.result, dict):
                if PAID in str(call.result.get("text", "")):
                    self.paid_calls[chat_id] += 1
                self.screens[chat_id].add(Shown(at, time.time(), call.result))
        elif key == "answercallbackquery" and not call.failed:
            self.acknowledged[str(call.params.get("callback_query_id"))] = at


class WatchedTelegram(FakeTelegram):
    """The fake Bot API, telling a ``Watcher`` about each call as it is recorded."""

    def __init__(self, watcher: Watcher, **options: Any) -> None:
        super().__init__(**options)
        self.watcher = watcher

    def _record(self, call: Call) -> None:
        super()._record(call)
        self.watcher.saw(call)


@dataclass
class Walk:
    """What one customer measured."""

    chat_id: int
    latencies: list[float] = field(default_factory=list)  # per action, seconds
    presses: dict[str, float] = field(default_factory=dict)  # callback query id -> pressed at
    prompt_to_paid: float | None = None
    paid_wall: float | None = None  # when "Paid!" appeared, time.time()
    paid_text: str = ""
    error: str | None = None


class Customer:
    """One person in the rush: acts, waits for the answer, thinks, acts again."""

    def __init__(
        self,
        fake: FakeTelegram,
        screen: Screen,
        chat_id: int,
        phone: str,
        think_seconds: float,
        seed: int,
    ) -> None:
        self.fake, self.screen, self.chat_id, self.phone = fake, screen, chat_id, phone
        self.think_seconds = think_seconds
        self.random = random.Random(seed)
        self.walk = Walk(chat_id)

    async def shop(self, script: tuple[Step, ...], wait_paid: bool, patience: float) -> Walk:
        """Run ``script`` (and wait for "Paid!"); each wait gives up after ``patience`` s."""
        step: Step | str = "start"
        try:
            prompt_index, prompt = -1, None
            for number, step in enumerate(script):
                if number:
                    # People read before they tap: the mean think time, +/- 50%.
                    await asyncio.sleep(self.think_seconds * self.random.uniform(0.5, 1.5))
                since = len(self.screen.shown)
                started = self._act(step)
                async with asyncio.timeout(patience):
                    index, answer = await self.screen.wait_for(step.expect, since)
                self.walk.latencies.append(answer.at - started)
                if step.kind == "contact":
                    prompt_index, prompt = index, answer
            if wait_paid and prompt is not None:
                step = "waiting for Paid!"
                async with asyncio.timeout(patience):
                    _, paid = await self.screen.wait_for(PAID, prompt_index + 1)
                self.walk.prompt_to_paid = paid.at - prompt.at
                self.walk.paid_wall = paid.wall
                self.walk.paid_text = str(paid.message.get("text", ""))
        except (TimeoutError, LookupError) as exc:
            on_screen = [m.get("text", "")[:60] for m in self.screen.current.values()][-3:]
            self.walk.error = f"{step}: {type(exc).__name__} {exc} (last on screen: {on_screen})"
        return self.walk

    def _act(self, step: Step) -> float:
        if step.kind == "press":
            message_id, data = self.screen.button(step.value)
            started = time.perf_counter()
            update = self.fake.user_presses_button(self.chat_id, data, message_id=message_id)
            self.walk.presses[update["callback_query"]["id"]] = started
            return started
        started = time.perf_counter()
        if step.kind == "text":
            self.fake.user_sends_text(self.chat_id, step.value)
        else:
            self.fake.user_shares_contact(self.chat_id, self.phone, contact_user_id=self.chat_id)
        return started
