"""Fault matrix: Daraja down, and a SIGKILL while Daraja holds a push's answer.

The real ``duka serve`` with a Telegram customer (PTB polling the fake Bot API) and the
Daraja simulator as its own HTTP server in this process, so the test can stop it, start
it again on the same port, or hold a push's answer. What the customer was charged is
what the simulator recorded: the transactions it opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from payments.simulator import RunningSimulator, SimulatorConfig, start_simulator
from tests.e2e.test_telegram_shop import CATALOG, CUSTOMER, MERCHANT, buttons, press, sees
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram
from tests.faults.process import DukaProcess, free_port
from tests.faults.seeding import (
    PaymentState,
    outbox_messages,
    read_payments,
    use_fixed_callback_url,
)

TOML = (
    """
[shop]
name = "Fault Duka"
[reconciliation]
query_after_seconds = 0.5
query_interval_seconds = 0.5
expire_after_seconds = 600
max_queries_per_second = 20
sweep_interval_seconds = 0.2
"""
    + CATALOG
)
PHONE = "0712345678"  # the simulator's rules: ...678 pays


class Daraja:
    """The simulator on a fixed port, so it can go down and come back at the same URL."""

    def __init__(self) -> None:
        self.port = free_port()
        # Callbacks only when a test resolves a push: nothing races the test's steps.
        self.config = SimulatorConfig(callback_delay_seconds=3600)
        self.running: RunningSimulator | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> RunningSimulator:
        self.running = await start_simulator(self.config, port=self.port)
        return self.running

    async def down(self) -> None:
        if self.running is not None:
            await self.running.stop()
            self.running = None


@pytest.fixture
async def daraja() -> AsyncIterator[Daraja]:
    daraja = Daraja()
    try:
        yield daraja
    finally:
        await daraja.down()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def shop(duka_process: DukaProcess, daraja: Daraja, telegram: FakeTelegram) -> DukaProcess:
    (duka_process.workdir / "config.toml").write_text(TOML)
    use_fixed_callback_url(duka_process)
    duka_process.env |= {
        "MPESA_BASE_URL": daraja.base_url,
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_BASE_URL": telegram.base_url,
        "DUKA_MERCHANT_TELEGRAM_IDS": str(MERCHANT),
    }
    return duka_process


async def _order_and_type_number(fake: FakeTelegram) -> None:
    """One bunch of sukuma (KES 30), confirmed, and the M-Pesa number typed."""
    fake.user_sends_text(CUSTOMER, "/start")
    await press(fake, CUSTOMER, "Vegetables")
    await press(fake, CUSTOMER, "Sukuma wiki")
    await press(fake, CUSTOMER, "Add to cart")
    await press(fake, CUSTOMER, "Checkout")
    await press(fake, CUSTOMER, "Confirm order")
    await sees(fake, CUSTOMER, "Which M-Pesa number")
    fake.user_sends_text(CUSTOMER, PHONE)


async def _tap_pay(fake: FakeTelegram) -> None:
    """Tap "Yes, pay" without waiting for an answer (the push may be held)."""
    await fake.wait_for(lambda f: any("Yes, pay" in text for text, _ in buttons(f, CUSTOMER)))
    data = next(data for text, data in buttons(fake, CUSTOMER) if "Yes, pay" in text)
    fake.user_presses_button(CUSTOMER, data)


async def _until(predicate: Callable[[], object], what: str, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {what}")


def _statuses(shop: DukaProcess) -> list[str]:
    return [p.status for p in read_payments(shop.database).values()]


def _one_payment(shop: DukaProcess) -> PaymentState:
    [payment] = read_payments(shop.database).values()
    return payment


async def test_a_push_daraja_accepted_before_a_sigkill_is_paid_once_after_restart(
    shop: DukaProcess, daraja: Daraja, telegram: FakeTelegram
) -> None:
    """Daraja opened the transaction (the prompt is on the phone) but its answer never
    reached Duka, killed meanwhile: after the restart the late callback pays the order,
    once, and the customer and the merchant hear it once."""
    sim = (await daraja.up()).simulator
    sim.fail_next_push(delay_seconds=60)  # processed now, answered (500) much later
    await shop.start()
    await _order_and_type_number(telegram)
    await _tap_pay(telegram)
    await _until(lambda: sim.transactions, "Daraja has the push")
    shop.kill()

    await shop.start()
    [checkout_id] = sim.transactions
    # Killed before the push's answer: no CheckoutRequestID, so nothing to query; only the
    # callback (at the attempt's own URL) can tell.
    assert _one_payment(shop).status == "created"
    sim.resolve(checkout_id)  # the customer enters the PIN; Daraja calls back
    [(_, _, status)] = await sim.wait_for_callbacks(1)
    assert status == 200
    await sees(telegram, MERCHANT, "New paid order")
    paid = _one_payment(shop)
    assert (paid.status, paid.order_status) == ("paid", "paid")
    assert paid.receipt == sim.transactions[checkout_id].receipt
    assert len(sim.push_requests) == 1, "pushed again: a second prompt, a second charge"
    # The customer's "Paid!" is queued once; it goes out once its prompt's grace is over
    # (bot/notifications.py PROMPT_GRACE: the "check your phone" message was never sent).
    assert outbox_messages(shop.database) == {
        ("customer", "payment_paid"): 1,
        ("merchant", "order_paid"): 1,
    }
    assert sum("New paid order" in t for t in telegram.texts_to(MERCHANT)) == 1


async def test_daraja_down_fails_the_attempt_clearly_and_a_retry_pays_once_it_is_back(
    shop: DukaProcess, daraja: Daraja, telegram: FakeTelegram
) -> None:
    """Nothing listens at Daraja's URL when the customer pays: the customer is told it did
    not go through, nothing is charged; with Daraja back, paying again works, once."""
    await shop.start()
    await _order_and_type_number(telegram)
    await _tap_pay(telegram)
    await _until(lambda: _statuses(shop) not in ([], ["created"]), "the attempt ends")
    await sees(telegram, CUSTOMER, "We could not reach M-Pesa. Please try again in a minute.")
    [refused] = read_payments(shop.database).values()
    # Nothing reached Daraja (no token even): a definite failure, no money moved.
    assert (refused.status, refused.order_status) == ("failed", "awaiting_payment")
    assert refused.outbox == ()  # told at once, in the chat, not by a queued message

    sim = (await daraja.up()).simulator
    await press(telegram, CUSTOMER, "Try again")
    await sees(telegram, CUSTOMER, "Check your phone")
    [checkout_id] = sim.transactions
    sim.resolve(checkout_id)
    await sees(telegram, CUSTOMER, "Paid! KES 30")
    await sees(telegram, MERCHANT, "New paid order")
    assert sorted(_statuses(shop)) == ["failed", "paid"]
    assert len(sim.push_requests) == 1
    assert outbox_messages(shop.database) == {
        ("customer", "payment_paid"): 1,
        ("merchant", "order_paid"): 1,
    }
