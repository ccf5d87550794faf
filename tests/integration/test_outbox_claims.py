"""Several processes sending one outbox (issue 10, PostgreSQL): each message is sent by
exactly one of them, each chat's messages in order, and a process that dies holding
claims has them taken over once its claims lapse.

Each "process" is an ``OutboxDispatcher`` with a ``Database`` (engine, connections) of its
own on the same PostgreSQL database, as separate ``duka serve`` processes would have."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.notifications import OutboxDispatcher, _due, _fan_out_to_merchants
from bot.outbox_claims import CLAIM_LEASE
from payments.outbox import insert_outbox
from storage.engine import Database
from storage.schema import outbox
from tests.integration.conftest import databases_on
from tests.integration.test_outbox_concurrency import SlowChannel, low_stock

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
MERCHANTS = [f"slow:{i}" for i in range(12)]
NAMES = [f"item-{i}" for i in range(5)]  # five messages for every merchant chat


@pytest.fixture
async def databases(postgres_url: str) -> AsyncIterator[Callable[[], Database]]:
    """Claims are PostgreSQL's: one SQLite file has one process."""
    async with databases_on(postgres_url) as open_one:
        yield open_one


async def test_three_processes_send_each_message_once_each_chat_in_order(
    databases: Callable[[], Database],
) -> None:
    first = databases()
    await first.transaction(insert_outbox, [low_stock(n) for n in NAMES], NOW)
    channel = SlowChannel()  # one platform, as the fake Bot API is for real processes
    dispatchers = [
        OutboxDispatcher(db, {"slow": channel}, MERCHANTS, lambda: NOW, claimant=name)
        for db, name in ((first, "a"), (databases(), "b"), (databases(), "c"))
    ]

    async def drain(dispatcher: OutboxDispatcher) -> int:
        sent = 0
        for _ in range(20):
            sent += await dispatcher.deliver_due()
        return sent

    sent = await asyncio.gather(*(drain(d) for d in dispatchers))

    assert sum(sent) == len(MERCHANTS) * len(NAMES)
    assert channel.got == {m.partition(":")[2]: NAMES for m in MERCHANTS}, "once, in order"
    async with first.engine.connect() as conn:
        left = (
            await conn.execute(select(outbox.c.claimed_by).where(outbox.c.status == "pending"))
        ).all()
    assert left == []


async def test_a_dead_process_claims_are_taken_over_after_they_lapse(
    databases: Callable[[], Database],
) -> None:
    first, second = databases(), databases()
    await first.transaction(insert_outbox, [low_stock(n) for n in NAMES[:2]], NOW)
    # "dead" claims both rows, as its pass would, and dies before sending them.
    await first.transaction(_fan_out_to_merchants, MERCHANTS[:1], NOW)
    assert len(await first.transaction(_due, NOW, 10, "dead")) == 2
    assert await first.transaction(_due, NOW, 10, "other") == [], "claims are respected"

    clock = [NOW]
    channel = SlowChannel()
    alive = OutboxDispatcher(
        second, {"slow": channel}, MERCHANTS[:1], lambda: clock[0], claimant="b"
    )
    assert await alive.deliver_due() == 0  # the claims hold
    clock[0] = NOW + CLAIM_LEASE + timedelta(seconds=1)
    assert await alive.deliver_due() == 2
    assert channel.got == {"0": NAMES[:2]}
