"""Telegram's sending budget, spent by priority: a PTB rate limiter.

Telegram lets a bot send about 30 messages a second in all. PTB's ``AIORateLimiter``
spends them first come, first served, so in a rush a customer's "Paid!" waits behind
every other customer's browsing. This limiter hands out the same budget (spaced evenly,
so no burst trips a 429) to the most urgent call waiting: payment results first, then
replies to what a customer just did, then the merchant's messages, then the rest.
``rate_limit_args`` carries a call's ``Priority`` (PTB passes it through every bot method).

Calls without a ``chat_id`` (``answerCallbackQuery``, ``getUpdates``) are not counted
by Telegram and are not held here: a button press is acknowledged at once. After a 429
every counted call waits ``retry_after``, then the call is tried once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Callable, Coroutine
from enum import IntEnum
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

MESSAGES_PER_SECOND = 29.0  # Telegram's ~30, with a little room for its clock and ours


class Priority(IntEnum):
    """Lower goes first. None is 0: PTB drops a falsy ``rate_limit_args`` before it gets here."""

    PAYMENT_RESULT = 1  # paid, failed, under review...: the customer is waiting for it
    REPLY = 2  # the answer to the customer's own latest tap or message
    MERCHANT = 3
    OTHER = 4  # order progress, summaries


JSON = bool | dict[str, Any] | list[dict[str, Any]]


class PriorityRateLimiter(BaseRateLimiter[int]):
    def __init__(self, per_second: float = MESSAGES_PER_SECOND, max_retries: int = 1) -> None:
        self._interval = 1.0 / per_second
        self._max_retries = max_retries
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # equal priorities go in arrival order
        self._next_slot = 0.0  # loop time at which the next counted call may go
        self._paused_until = 0.0  # after a 429: nothing counted goes before this
        self._pump: asyncio.Task[None] | None = None

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        for _, _, waiter in self._waiting:
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
        counted = data.get("chat_id") is not None  # what Telegram's flood limits count
        priority = Priority.REPLY if rate_limit_args is None else rate_limit_args
        for attempt in range(self._max_retries + 1):
            if counted:
                await self._turn(priority)
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

    async def _turn(self, priority: int) -> None:
        """Until this call may go: at once when nothing waits and a slot is free."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._waiting and now >= max(self._next_slot, self._paused_until):
            self._next_slot = now + self._interval
            return
        waiter: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), waiter))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._hand_out(), name="telegram-budget")
        await waiter

    async def _hand_out(self) -> None:
        """One slot at a time, to the most urgent call waiting."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            now = loop.time()
            start = max(self._next_slot, self._paused_until)
            if start > now:
                await asyncio.sleep(start - now)
                continue
            _, _, waiter = heapq.heappop(self._waiting)
            if waiter.done():  # its caller gave up (cancelled): the slot goes to the next
                continue
            self._next_slot = now + self._interval
            waiter.set_result(None)
