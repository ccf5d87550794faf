"""Telegram's sending budget (bot/channels/telegram_budget.py): counted calls are spaced
to the rate, the most urgent waiting call goes first, uncounted calls (button
acknowledgements) never wait, and a 429 pauses the counted calls, then retries once."""

from __future__ import annotations

import asyncio
import itertools
import warnings
from datetime import timedelta
from typing import Any

import pytest
from telegram.error import RetryAfter
from telegram.ext import ExtBot

from bot.channels.telegram_budget import Priority, PriorityRateLimiter
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram

RATE = 50.0  # calls a second: fast enough for a test, slow enough to queue


class Calls:
    """The Bot API as the limiter sees it: records when each call went, by its name."""

    def __init__(self) -> None:
        self.went: list[tuple[str, float]] = []
        self.refuse: dict[str, int] = {}  # name -> 429s still to answer

    async def call(self, name: str) -> dict[str, Any]:
        self.went.append((name, asyncio.get_running_loop().time()))
        if self.refuse.get(name):
            self.refuse[name] -= 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raise RetryAfter(timedelta(milliseconds=100))
        return {"ok": name}

    def names(self) -> list[str]:
        return [name for name, _ in self.went]


async def send(
    limiter: PriorityRateLimiter,
    calls: Calls,
    name: str,
    priority: Priority | None = None,
    *,
    counted: bool = True,
    chat: str | None = None,  # by default each name is its own chat
) -> Any:
    data = {"chat_id": chat or name} if counted else {"callback_query_id": "7"}
    return await limiter.process_request(
        calls.call, (name,), {}, "sendMessage", data, None if priority is None else int(priority)
    )


async def test_counted_calls_never_go_faster_than_the_rate() -> None:
    limiter, calls = PriorityRateLimiter(RATE), Calls()
    await asyncio.gather(*(send(limiter, calls, f"m{i}") for i in range(10)))
    times = [t for _, t in calls.went]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / RATE * 0.95  # the loop's clock, not a stopwatch: exact spacing


async def test_a_process_sharing_the_bot_with_another_keeps_to_half_the_rate() -> None:
    limiter, calls = PriorityRateLimiter(RATE), Calls()
    limiter.share_with(2)
    await asyncio.gather(*(send(limiter, calls, f"m{i}") for i in range(6)))
    times = [t for _, t in calls.went]
    # Never faster than half the bot's rate: together the two keep to the bot's budget.
    assert min(b - a for a, b in itertools.pairwise(times)) >= 2 / RATE * 0.95


async def test_a_payment_result_overtakes_the_replies_already_waiting() -> None:
    limiter, calls = PriorityRateLimiter(RATE), Calls()
    replies = [asyncio.create_task(send(limiter, calls, f"reply{i}")) for i in range(6)]
    await asyncio.sleep(0)  # the replies are queued (the first one has gone)
    merchant = asyncio.create_task(send(limiter, calls, "merchant", Priority.MERCHANT))
    await asyncio.sleep(0)
    paid = asyncio.create_task(send(limiter, calls, "paid", Priority.PAYMENT_RESULT))
    await asyncio.gather(*replies, merchant, paid)
    names = calls.names()
    assert names[:2] == ["reply0", "paid"]
    assert names[-1] == "merchant"
    assert [n for n in names if n.startswith("reply")] == [f"reply{i}" for i in range(6)]


async def test_an_uncounted_call_does_not_wait_for_the_queue() -> None:
    """answerCallbackQuery has no chat_id: Telegram does not count it, nor do we."""
    limiter, calls = PriorityRateLimiter(RATE), Calls()
    queued = [asyncio.create_task(send(limiter, calls, f"reply{i}")) for i in range(10)]
    await asyncio.sleep(0)
    await send(limiter, calls, "ack", counted=False)
    assert calls.names()[:2] == ["reply0", "ack"]
    await asyncio.gather(*queued)


async def test_a_429_pauses_the_counted_calls_then_the_call_is_tried_once_more() -> None:
    limiter, calls = PriorityRateLimiter(RATE), Calls()
    calls.refuse["first"] = 1  # "first" and "second" are different chats: the pause is for all
    first = asyncio.create_task(send(limiter, calls, "first"))
    await asyncio.sleep(0.01)  # "first" was refused: the pause is set
    await send(limiter, calls, "second")
    assert await first == {"ok": "first"}
    went = dict(reversed(calls.went))  # each name's first time
    assert calls.names().count("first") == 2
    assert went["second"] - went["first"] >= 0.1  # waited for retry_after


async def test_a_second_429_reaches_the_caller() -> None:
    limiter, calls = PriorityRateLimiter(RATE), Calls()
    calls.refuse["stubborn"] = 2
    with pytest.raises(RetryAfter):
        await send(limiter, calls, "stubborn")


async def test_a_caller_that_gives_up_does_not_use_a_slot() -> None:
    limiter, calls = PriorityRateLimiter(RATE), Calls()
    first = asyncio.create_task(send(limiter, calls, "first"))
    quitter = asyncio.create_task(send(limiter, calls, "quitter"))
    last = asyncio.create_task(send(limiter, calls, "last"))
    await asyncio.sleep(0)
    quitter.cancel()
    await asyncio.gather(first, last)
    assert calls.names() == ["first", "last"]
    await limiter.shutdown()


async def test_through_ptb_a_payment_result_still_overtakes() -> None:
    """The priority travels through PTB's ``rate_limit_args`` (which drops a falsy one):
    sent through a real bot to the fake Bot API, "Paid!" overtakes the waiting replies."""
    async with FakeTelegram() as fake:
        bot = ExtBot(
            DEFAULT_TOKEN,
            base_url=f"{fake.base_url}/bot",
            rate_limiter=PriorityRateLimiter(RATE),
        )
        async with bot:
            replies = [
                asyncio.create_task(bot.send_message(chat, f"reply{chat}")) for chat in range(1, 7)
            ]
            await asyncio.sleep(0.01)  # the replies are queued (the first one has gone)
            await bot.send_message(7, "Paid!", rate_limit_args=Priority.PAYMENT_RESULT)
            await asyncio.gather(*replies)
        sent = [c.params["text"] for c in fake.calls if c.method == "sendMessage"]
    assert sent[:2] == ["reply1", "Paid!"]


async def test_one_busy_chat_waits_alone() -> None:
    """After its burst a chat gets about one notice a second; other chats go meanwhile."""
    limiter = PriorityRateLimiter(RATE, chat_per_second=10, chat_burst=2)
    calls = Calls()
    busy = [
        asyncio.create_task(send(limiter, calls, f"merchant{i}", Priority.MERCHANT, chat="m"))
        for i in range(4)
    ]
    await asyncio.sleep(0)
    # Less urgent notices to other chats: they still go while the busy chat waits.
    others = [
        asyncio.create_task(send(limiter, calls, f"customer{i}", Priority.OTHER)) for i in range(3)
    ]
    await asyncio.gather(*busy, *others)
    names = calls.names()
    assert names[:2] == ["merchant0", "merchant1"]  # the burst
    assert names[2:5] == ["customer0", "customer1", "customer2"]  # not behind the busy chat
    went = dict(calls.went)
    # Four messages with a burst of two: two more tenths of a second to earn the others.
    assert went["merchant3"] - went["merchant0"] >= 2 / 10 * 0.95


async def test_a_customers_replies_are_not_held_to_the_chat_limit() -> None:
    """Replies keep pace with the customer's taps: only merchant notices wait for it."""
    limiter = PriorityRateLimiter(RATE, chat_per_second=1, chat_burst=2)
    calls = Calls()
    await asyncio.gather(*(send(limiter, calls, f"reply{i}", chat="c") for i in range(5)))
    times = [t for _, t in calls.went]
    assert times[-1] - times[0] < 1.0  # five replies well inside the second a notice needs
