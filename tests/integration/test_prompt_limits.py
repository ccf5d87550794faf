"""Prompt limits: nobody can make a phone show PIN prompt after PIN prompt, on SQLite and
PostgreSQL, over real HTTP to the Daraja simulator; a refused prompt is never sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from bot.app import CONVERSATION, PAYMENTS
from bot.chat.model import Inbound
from payments.limits import LimitKind
from payments.service import TooManyPrompts
from payments.simulator import rules
from storage.schema import payments
from tests.conftest import RunningDuka
from tests.helpers import make_order, payment_rows

STRANGER = "0712000001"  # the simulator cancels these: each push ends quickly


async def push(duka: RunningDuka, phone: str, chat_id: str) -> None:
    order = await make_order(duka.engine, chat_id=chat_id)
    await duka.app[PAYMENTS].start_payment(order.id, phone)


async def test_a_fourth_prompt_to_one_number_in_ten_minutes_is_refused(duka: RunningDuka) -> None:
    for chat in ("1", "2", "3"):
        await push(duka, STRANGER, chat)
    with pytest.raises(TooManyPrompts) as refused:
        await push(duka, STRANGER, "4")
    assert refused.value.hit.kind is LimitKind.PHONE
    assert 9 <= refused.value.minutes <= 10
    assert len(duka.simulator.push_requests) == 3  # the fourth never left
    await push(duka, "0712000004", "4")  # another number is fine


async def test_ten_prompts_to_one_number_in_a_day_is_the_most(duka: RunningDuka) -> None:
    for n in range(10):
        await push(duka, STRANGER, str(n))
        async with duka.engine.begin() as conn:  # set-up: spread them over the day
            await conn.execute(
                update(payments)
                .where(payments.c.created_at > datetime.now(UTC) - timedelta(minutes=5))
                .values(created_at=datetime.now(UTC) - timedelta(hours=1 + n))
            )
    with pytest.raises(TooManyPrompts) as refused:
        await push(duka, STRANGER, "11")
    assert refused.value.hit.kind is LimitKind.PHONE
    assert refused.value.minutes > 60  # the oldest of the ten leaves the day in ~14 hours


async def test_one_customer_cannot_prompt_more_than_five_numbers_in_ten_minutes(
    duka: RunningDuka,
) -> None:
    for n in range(5):
        await push(duka, f"071200010{n}", "same-chat")
    with pytest.raises(TooManyPrompts) as refused:
        await push(duka, "0712000199", "same-chat")
    assert refused.value.hit.kind is LimitKind.CUSTOMER


async def test_rule_limited_waits_two_minutes_for_the_same_phone_and_amount(
    duka: RunningDuka,
) -> None:
    """Daraja answered 17: the same phone and amount get no second push within 2 minutes."""
    order = await make_order(duka.engine, chat_id="1")
    # No callback may overwrite the result code set below.
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await duka.app[PAYMENTS].start_payment(order.id, "0712000004")
    async with duka.engine.begin() as conn:  # set-up: that attempt ended "rule limited"
        await conn.execute(
            update(payments).where(payments.c.order_id == order.id).values(result_code="17")
        )
    with pytest.raises(TooManyPrompts) as refused:
        await push(duka, "0712000004", "2")  # same total (make_order's default)
    assert refused.value.hit.kind is LimitKind.RULE_LIMITED
    assert refused.value.minutes <= 2
    other_amount = await make_order(duka.engine, ("Milk", 65, 1), chat_id="3")
    await duka.app[PAYMENTS].start_payment(other_amount.id, "0712000004")
    assert len(await payment_rows(duka.engine, other_amount.id)) == 1


async def test_the_customer_is_told_plainly_how_long_to_wait_and_keeps_a_way_on(
    duka: RunningDuka,
) -> None:
    for chat in ("1", "2", "3"):
        await push(duka, STRANGER, chat)
    order = await make_order(duka.engine, chat_id="4")
    conversation = duka.app[CONVERSATION]
    replies = await conversation.handle(Inbound("terminal", "4", text="/orders"))
    assert replies  # the customer exists in the conversation
    replies = await conversation.handle(
        Inbound("terminal", "4", button=f"retry:{order.id}")
    )  # no saved number yet: asks for one
    replies = await conversation.handle(
        Inbound("terminal", "4", contact_phone=STRANGER, contact_is_own=True)
    )
    [reply] = replies
    assert "Too many payment requests to this number; try again in" in reply.text
    assert "minutes" in reply.text
    labels = [b.label for row in reply.buttons for b in row]
    assert "Use another number" in labels
    assert "Cancel order" in labels


async def test_a_flood_of_messages_is_answered_once(duka: RunningDuka) -> None:
    conversation = duka.app[CONVERSATION]
    limit = duka.config.chat_events_per_10_seconds  # [limits] in the tests' config.toml
    answered = [
        await conversation.handle(Inbound("terminal", "flood", text=f"spam {n}"))
        for n in range(limit + 5)
    ]
    assert all(answered[:limit])
    assert "sending messages very fast" in answered[limit][0].text
    assert answered[limit + 1 :] == [[], [], [], []]
