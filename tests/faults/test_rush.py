"""A rush (issue 9's fault matrix): Telegram customers order and pay at once against the
real ``duka serve`` on SQLite, through the fake Bot API (no flood limits, no round trip) and
the embedded Daraja simulator. Every order ends paid and every customer gets one "Paid!".

The customers are ``bench.chat_customers``' scripted ones with no think time: /start, a
category, a product, Add to cart, a typed second product, Checkout, Confirm order, their own
contact; then they wait for "Paid!".

500 customers take about 160 s, nearly all of it Telegram's budget (29 messages/s for
4,500 messages), so the test mostly waits and runs beside the rest of the suite.
``DUKA_RUSH_CUSTOMERS`` sets another number (e.g. 50 while working on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections import Counter

from bench.chat_bots import CONFIG_TOML
from bench.chat_customers import DUKA_SCRIPT, PAID, Customer, Screen, WatchedTelegram, Watcher
from tests.fakes.telegram_api import DEFAULT_TOKEN
from tests.faults.process import DukaProcess

CUSTOMERS = int(os.environ.get("DUKA_RUSH_CUSTOMERS", "500"))
FIRST_CHAT = 700_001
# Per step. Every customer acts at once with no pause, so one step waits for everyone's
# previous one: about 20 ms of server time each on a loaded 2-core machine.
PATIENCE = max(40.0, CUSTOMERS * 0.2)
TOML = (
    CONFIG_TOML
    + """
[simulator]
callback_delay_seconds = 0.2
[limits]
chat_events_per_10_seconds = 60
"""
)


def _phone(index: int) -> str:
    """Ends in 500: the simulator simply pays it (as bench.chat's customers' numbers)."""
    return f"+2547{20_000_000 + index * 1000 + 500:08d}"


def _statuses(database: str) -> tuple[Counter[str], Counter[str]]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        orders = Counter(status for (status,) in db.execute("SELECT status FROM orders"))
        payments = Counter(status for (status,) in db.execute("SELECT status FROM payments"))
    return orders, payments


async def test_a_rush_of_customers_order_and_pay_at_once_and_each_sees_paid_once(
    duka_process: DukaProcess,
) -> None:
    watcher = Watcher()
    async with WatchedTelegram(watcher) as fake:
        duka_process.env |= {
            "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
            "TELEGRAM_API_BASE_URL": fake.base_url,
        }
        (duka_process.workdir / "config.toml").write_text(TOML)
        await duka_process.start()
        await fake.wait_for(lambda f: bool(f.calls_of("getUpdates")), timeout=15)
        customers = []
        for index in range(CUSTOMERS):
            chat = FIRST_CHAT + index
            watcher.screens[chat] = Screen()
            screen = watcher.screens[chat]
            customers.append(Customer(fake, screen, chat, _phone(index), 0.0, index))
        walks = await asyncio.gather(
            *(c.shop(DUKA_SCRIPT, wait_paid=True, patience=PATIENCE) for c in customers)
        )
        await asyncio.sleep(1.0)  # a second "Paid!" would show by now
        errors = [w.error for w in walks if w.error is not None]
        assert errors == [], f"{len(errors)} customers stuck, e.g. {errors[:3]}"
        orders, payments = _statuses(str(duka_process.database))
    assert orders == Counter({"paid": CUSTOMERS}), orders
    assert payments == Counter({"paid": CUSTOMERS}), payments
    paid_messages = Counter(watcher.paid_calls[c.chat_id] for c in customers)
    assert paid_messages == Counter({1: CUSTOMERS}), f"customers by Paid! calls: {paid_messages}"
    on_screen = Counter(
        sum(PAID in str(m.get("text", "")) for m in watcher.screens[c.chat_id].current.values())
        for c in customers
    )
    assert on_screen == Counter({1: CUSTOMERS}), f"customers by Paid! on screen: {on_screen}"
