"""A person holding the base callback secret and every CheckoutRequestID still cannot get an
order marked paid: each push carries a callback URL of its own, and a callback counts only
there. Over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from bot.app import PAYMENTS
from payments.simulator import rules
from tests.conftest import RunningDuka
from tests.helpers import (
    attempt_url,
    event_rows,
    make_order,
    order_status,
    outbox_rows,
    payment_rows,
)
from tests.integration.test_callback_webhook import post, success_body


async def pending(duka: RunningDuka, chat_id: str) -> tuple[int, int, str]:
    """(order id, attempt id, CheckoutRequestID) of a push nobody has answered yet."""
    order = await make_order(duka.engine, chat_id=chat_id)
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    [attempt] = await payment_rows(duka.engine, order.id)
    return order.id, attempt.id, attempt.checkout_request_id


async def nothing_paid(duka: RunningDuka, order_id: int) -> None:
    assert [p.status for p in await payment_rows(duka.engine, order_id)] == ["pending"]
    assert await order_status(duka.engine, order_id) == "awaiting_payment"
    assert await outbox_rows(duka.engine) == []


async def test_each_push_carries_its_own_callback_url(duka: RunningDuka) -> None:
    _, attempt_id, _ = await pending(duka, "1")
    [push] = duka.simulator.push_requests
    assert push["CallBackURL"] == attempt_url(duka.callback_url, attempt_id)
    assert push["CallBackURL"].startswith(duka.callback_url + "/")


async def test_a_forged_paid_callback_with_the_base_secret_but_a_wrong_token_pays_nothing(
    duka: RunningDuka,
) -> None:
    order_id, attempt_id, checkout_id = await pending(duka, "1")
    forged_url = f"{duka.callback_url}/{attempt_id}/{'0' * 32}"
    answer = await post(duka, success_body(checkout_id, "350.00", "FRG0000001"), forged_url)
    assert answer.status_code == 404
    await nothing_paid(duka, order_id)
    [event] = await event_rows(duka.engine, "callback")
    assert (event.status, event.source_ip) == ("forged", "127.0.0.1")  # kept, with its source
    assert "FRG0000001" in event.raw


async def test_a_callback_for_one_attempt_at_anothers_url_pays_nothing(duka: RunningDuka) -> None:
    first_order, _, first_checkout = await pending(duka, "1")
    second_order, second_attempt, _ = await pending(duka, "2")
    own_url_of_second = attempt_url(duka.callback_url, second_attempt)
    answer = await post(
        duka, success_body(first_checkout, "350.00", "FRG0000002"), own_url_of_second
    )
    assert answer.status_code == 404
    for order_id in (first_order, second_order):
        assert [p.status for p in await payment_rows(duka.engine, order_id)] == ["pending"]
    [event] = await event_rows(duka.engine, "callback")
    assert event.status == "forged"


async def test_a_paid_callback_at_the_bare_url_pays_nothing(duka: RunningDuka) -> None:
    """The base secret and the CheckoutRequestID are not enough."""
    order_id, _, checkout_id = await pending(duka, "1")
    answer = await post(duka, success_body(checkout_id, "350.00", "FRG0000003"))
    assert answer.status_code == 404
    await nothing_paid(duka, order_id)
    [event] = await event_rows(duka.engine, "callback")
    assert event.status == "forged"


async def test_the_real_callback_at_its_own_url_still_pays(duka: RunningDuka) -> None:
    order_id, attempt_id, checkout_id = await pending(duka, "1")
    own = attempt_url(duka.callback_url, attempt_id)
    assert (
        await post(duka, success_body(checkout_id, "350.00", "RL00000001"), own)
    ).status_code == 200
    assert [p.status for p in await payment_rows(duka.engine, order_id)] == ["paid"]
    assert await order_status(duka.engine, order_id) == "paid"


async def test_a_wrong_base_secret_is_a_plain_404_and_stores_nothing(duka: RunningDuka) -> None:
    _, attempt_id, checkout_id = await pending(duka, "1")
    own = attempt_url(duka.callback_url, attempt_id)
    wrong_base = own.replace("test-secret", "test-secreT")
    assert (await post(duka, success_body(checkout_id), wrong_base)).status_code == 404
    assert await event_rows(duka.engine, "callback") == []
