"""Telegram's sending budget, spent by priority: a PTB rate limiter.

Telegram lets a bot send about 30 messages a second in all. PTB's ``AIORateLimiter``
spends them first come, first served, so in a rush a customer's "Paid!" waits behind
every other customer's browsing. This limiter hands out the same budget (spaced evenly,
so no burst trips a 429) to the most urgent call waiting: payment results first, then
replies to what a customer just did, then the merchant's messages, then the rest. The
merchant's notices also keep to their chat's own limit (about one a second after a short
burst), so that the busy merchant chat waits alone in a rush rather than earning a 429
that stops every chat.
``rate_limit_args`` carries a call's ``Priority`` (PTB passes it through every bot method).

Calls without a ``chat_id`` (``answerCallbackQuery``, ``getUpdates``) are not counted
by Telegram and are not held here: a button press is acknowledged at once. After a 429
every counted call waits ``retry_after``, then the call is tried once more.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

MESSAGES_PER_SECOND = 29.0  # Telegram's ~30, with a little room for its clock and ours
# One chat: Telegram asks for about one message a second, short bursts allowed.
CHAT_PER_SECOND = 0.9  # a little under, as for the overall rate
CHAT_BURST = 3.0
MAX_CHATS_REMEMBERED = 10_000


class Priority(IntEnum):
    """Lower goes first. None is 0: PTB drops a falsy ``rate_limit_args`` before it gets here."""

    PAYMENT_RESULT = 1  # paid, failed, under review...: the customer is waiting for it
    REPLY = 2  # the answer to the customer's own latest tap or message
    MERCHANT = 3
    OTHER = 4  # order progress, summaries


JSON = bool | dict[str, Any] | list[dict[str, Any]]


@dataclass(slots=True)
class _ChatAllowance:
    """One chat's own limit: a few messages at once, then about one a second."""

    per_second: float
    burst: float
    tokens: float
    at: float  # loop time the tokens were counted at

    def ready_at(self, now: float) -> float:
        """When this chat may have its next message (``now`` if it may now)."""
        tokens = self._tokens(now)
        return now if tokens >= 1 else now + (1 - tokens) / self.per_second

    def take(self, now: float) -> None:
        self.tokens, self.at = self._tokens(now) - 1, now

    def _tokens(self, now: float) -> float:
        return min(self.burst, self.tokens + (now - self.at) * self.per_second)


class PriorityRateLimiter(BaseRateLimiter[int]):
    def __init__(
        self,
        per_second: float = MESSAGES_PER_SECOND,
        max_retries: int = 1,
        *,
        chat_per_second: float = CHAT_PER_SECOND,
        chat_burst: float = CHAT_BURST,
    ) -> None:
        self._per_second = per_second
        self._interval = 1.0 / per_second
        self._chat_limit = (chat_per_second, chat_burst)
        self._max_retries = max_retries
        # Sorted: (priority, arrival, chat, waiter); the arrival number is unique.
        self._waiting: list[tuple[int, int, str, asyncio.Future[None]]] = []
        self._order = itertools.count()  # equal priorities go in arrival order
        self._next_slot = 0.0  # loop time at which the next counted call may go
        self._paused_until = 0.0  # after a 429: nothing counted goes before this
        self._chats: dict[str, _ChatAllowance] = {}
        self._pump: asyncio.Task[None] | None = None

    def share_with(self, processes: int) -> None:
        """Telegram's budget is the bot's, not the process's: with ``processes`` sending for
        the same bot, each keeps to its share (the process registry says how many run)."""
        interval = max(1, processes) / self._per_second
        if interval != self._interval:
            log.info("Telegram budget: %.1f messages/s, 1/%d of the bot's", 1 / interval, processes)
        self._interval = interval

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        for *_, waiter in self._waiting:
            waiter.cancel()
        self._waiting.clear()

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, JSON]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> JSON:
        chat = data.get("chat_id")  # what Telegram's flood limits count
        priority = Priority.REPLY if rate_limit_args is None else rate_limit_args
        for attempt in range(self._max_retries + 1):
            if chat is not None:
                await self._turn(priority, str(chat))
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                if attempt == self._max_retries:
                    raise
                wait = exc.retry_after
                seconds = wait if isinstance(wait, int | float) else wait.total_seconds()
                log.warning("Telegram asked to slow down (%s): waiting %.1f s", endpoint, seconds)
                loop = asyncio.get_running_loop()
                self._paused_until = max(self._paused_until, loop.time() + seconds + 0.1)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _turn(self, priority: int, chat: str) -> None:
        """Until this call may go: at once when nothing waits and a slot is free."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if (
            not self._waiting
            and now >= max(self._next_slot, self._paused_until)
            and self._chat_ready_at(priority, chat, now) <= now
        ):
            self._go(chat, now)
            return
        waiter: asyncio.Future[None] = loop.create_future()
        bisect.insort(self._waiting, (priority, next(self._order), chat, waiter))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._hand_out(), name="telegram-budget")
        await waiter

    async def _hand_out(self) -> None:
        """One slot at a time, to the most urgent call waiting whose chat may have one (a
        busy chat, such as the merchant's, waits alone instead of earning every chat a
        429 and its pause)."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            now = loop.time()
            start = max(self._next_slot, self._paused_until)
            if start > now:
                await asyncio.sleep(start - now)
                continue
            self._waiting = [w for w in self._waiting if not w[3].done()]  # callers gone
            soonest = now + 1.0
            for index, (priority, _, chat, waiter) in enumerate(self._waiting):
                ready = self._chat_ready_at(priority, chat, now)
                if ready <= now:
                    del self._waiting[index]
                    self._go(chat, now)
                    waiter.set_result(None)
                    break
                soonest = min(soonest, ready)
            else:
                if self._waiting:
                    await asyncio.sleep(soonest - now)

    def _chat_ready_at(self, priority: int, chat: str, now: float) -> float:
        """When the chat's own limit lets this call go. Only the merchant's notices wait
        for it: a rush sends one per paid order into the one chat, which is what trips
        Telegram's per-chat limit. A customer's messages keep pace with the customer's own
        taps (and the merchant's progress, minutes apart): holding them would only make
        quick taps slow."""
        if priority != Priority.MERCHANT:
            return now
        return self._allowance(chat, now).ready_at(now)

    def _allowance(self, chat: str, now: float) -> _ChatAllowance:
        allowance = self._chats.get(chat)
        if allowance is None:
            if len(self._chats) > MAX_CHATS_REMEMBERED:  # forget the chats long quiet
                full = self._chat_limit[1] / self._chat_limit[0]  # seconds to refill
                quiet = [c for c, a in self._chats.items() if now - a.at > full]
                for gone in quiet:
                    del self._chats[gone]
            per_second, burst = self._chat_limit
            allowance = self._chats[chat] = _ChatAllowance(per_second, burst, burst, now)
        return allowance

    def _go(self, chat: str, now: float) -> None:
        self._next_slot = now + self._interval
        self._allowance(chat, now).take(now)
