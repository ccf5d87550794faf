"""The chat platforms misbehave while customers pay (issue 9's fault matrix), against the real
``duka serve``: Telegram down and back, a 429 storm, and WhatsApp's 131047 (outside the
24-hour window), 130429 (rate limit) and 500. Each customer ends with the truth, once.

Telegram customers are ``bench.chat_customers``' scripted ones (they act through the fake Bot
API and wait for each answer on screen); WhatsApp customers post signed webhooks. The embedded
simulator pays each push ``CALLBACK_DELAY`` seconds after it was accepted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.chat_bots import CONFIG_TOML
from bench.chat_customers import (
    DUKA_SCRIPT,
    PAID,
    PROMPT,
    Customer,
    Screen,
    WatchedTelegram,
    Watcher,
)
from tests.e2e.test_telegram_shop import CATALOG
from tests.e2e.test_whatsapp_shop import WANJIRU, whatsapp_env
from tests.fakes.graph_api import (
    FakeGraph,
    WaUser,
)
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram, FloodLimits
from tests.faults.process import DukaProcess

CALLBACK_DELAY = 2.0  # push accepted -> callback: room to break the platform before "Paid!"
SIMULATOR = f"\n[simulator]\ncallback_delay_seconds = {CALLBACK_DELAY}\n"
LIMITS = "\n[limits]\nchat_events_per_10_seconds = 60\n"
MERCHANT = 600_001
FIRST_CHAT = 700_001
# The outage is two minutes; the outbox retries after 1, 2, 4, 8... s, so a shorter
# one shows the same thing (attempts refused, then one delivery) within the suite's budget.
OUTAGE_SECONDS = 6.0
PATIENCE = 30.0
NEW_PAID_ORDER = "New paid order"


def _phone(index: int) -> str:
    """Ends in 500: the simulator simply pays it (as bench.chat's customers' numbers)."""
    return f"+2547{20_000_000 + index * 1000 + 500:08d}"


async def _telegram_shop(process: DukaProcess, fake: FakeTelegram) -> None:
    process.env |= {
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_BASE_URL": fake.base_url,
        "DUKA_MERCHANT_TELEGRAM_IDS": str(MERCHANT),
    }
    (process.workdir / "config.toml").write_text(CONFIG_TOML + SIMULATOR + LIMITS)
    await process.start()
    await fake.wait_for(lambda f: bool(f.calls_of("getUpdates")), timeout=15)


def _customers(fake: FakeTelegram, watcher: Watcher, n: int) -> list[Customer]:
    customers = []
    for index in range(n):
        chat = FIRST_CHAT + index
        watcher.screens[chat] = Screen()
        customers.append(Customer(fake, watcher.screens[chat], chat, _phone(index), 0.0, index))
    return customers


def _merchant_notices(fake: FakeTelegram) -> list[str]:
    return [m["text"] for m in fake.sent_messages(MERCHANT) if NEW_PAID_ORDER in str(m.get("text"))]


def _paid_on_screen(screen: Screen) -> int:
    """Messages showing "Paid!" now (an edit replaces the message it edits)."""
    return sum(PAID in str(m.get("text", "")) for m in screen.current.values())


async def test_telegram_down_while_a_payment_lands_then_back_delivers_paid_once(
    duka_process: DukaProcess,
) -> None:
    """Every send refused (502) from before the callback until OUTAGE_SECONDS later."""
    watcher = Watcher(merchant_chat=MERCHANT)
    async with WatchedTelegram(watcher) as fake:
        await _telegram_shop(duka_process, fake)
        [customer] = _customers(fake, watcher, 1)
        walk = await customer.shop(DUKA_SCRIPT, wait_paid=False, patience=PATIENCE)
        assert walk.error is None, walk.error
        fake.set_down(True)  # the push is out; its callback lands within CALLBACK_DELAY
        await asyncio.sleep(OUTAGE_SECONDS)
        refused = [
            c for c in fake.calls if c.failed and c.params.get("chat_id") == customer.chat_id
        ]
        fake.set_down(False)
        screen = watcher.screens[customer.chat_id]
        async with asyncio.timeout(PATIENCE):
            await screen.wait_for(PAID, 0)
        await fake.wait_for(lambda f: bool(_merchant_notices(f)), timeout=PATIENCE)
        await asyncio.sleep(1.0)  # a second "Paid!" or notice would show by now
    assert len(refused) >= 2, "no delivery was attempted during the outage"
    assert all(c.status == 502 for c in refused)
    assert watcher.paid_calls[customer.chat_id] == 1
    assert _paid_on_screen(screen) == 1
    assert len(_merchant_notices(fake)) == 1


async def test_telegram_429_storm_delivers_every_message_once_in_order(
    duka_process: DukaProcess,
) -> None:
    """Telegram's flood limits, plus forced 429s (retry_after 1 s) on sends and edits, while
    five customers shop with no pause and pay at once."""
    watcher = Watcher(merchant_chat=MERCHANT)
    async with WatchedTelegram(watcher, flood_limits=FloodLimits()) as fake:
        await _telegram_shop(duka_process, fake)
        customers = _customers(fake, watcher, 5)
        fake.fail_next("sendMessage", 429, retry_after=1)
        fake.fail_next("editMessageText", 429, retry_after=1)
        walks = await asyncio.gather(
            *(c.shop(DUKA_SCRIPT, wait_paid=True, patience=PATIENCE) for c in customers)
        )
        # Each customer saw every step's answer after the step, in the script's order, then paid.
        assert [w.error for w in walks] == [None] * len(customers)
        await fake.wait_for(lambda f: len(_merchant_notices(f)) >= len(customers), timeout=20)
        await asyncio.sleep(1.0)  # a duplicate would show by now
    assert len(watcher.refusals) > 2, "no 429 storm happened"
    for customer in customers:
        screen = watcher.screens[customer.chat_id]
        assert watcher.paid_calls[customer.chat_id] == 1
        assert _paid_on_screen(screen) == 1
        prompts = [s for s in fake.sent_messages(customer.chat_id) if PROMPT in s["text"]]
        assert len(prompts) == 1  # "Check your phone" once, then edited into "Paid!"
    notices = _merchant_notices(fake)
    assert len(notices) == len(customers)
    assert len(set(notices)) == len(customers)  # one per order, none twice


# --- WhatsApp -----------------------------------------------------------------------------


class WhatsAppCustomer:
    """One customer writing to the shop through Meta's webhooks (signed by the fake)."""

    def __init__(self, graph: FakeGraph, webhook: str, user: WaUser) -> None:
        self.graph, self.webhook, self.user = graph, webhook, user

    async def deliver(self, payload: dict[str, Any]) -> None:
        before = len(self.graph.sent)
        assert await self.graph.post_webhook(self.webhook, payload) == 200
        await self.graph.wait_for(lambda g: len(g.sent) > before, timeout=10)

    async def sees(self, words: str) -> None:
        await self.graph.wait_for(lambda g: any(words in t for t in g.texts_to(self.user)), 10)

    async def taps(self, title: str) -> None:
        def choice() -> tuple[str, str, str] | None:
            last = self.graph.last_interactive(self.user) or {}
            action = last.get("action", {})
            if last.get("type") == "button":
                options = [("button", b["reply"]["id"], b["reply"]["title"]) for b in
                           action["buttons"]]  # fmt: skip
            elif last.get("type") == "list":
                options = [("list", r["id"], r["title"]) for s in action["sections"] for r in
                           s["rows"]]  # fmt: skip
            else:
                options = []
            return next((o for o in options if title in o[2]), None)

        await self.graph.wait_for(lambda g: choice() is not None, timeout=10)
        found = choice()
        assert found is not None
        kind, choice_id, shown = found
        if kind == "button":
            await self.deliver(self.graph.button_reply(self.user, choice_id, shown))
        else:
            await self.deliver(self.graph.list_reply(self.user, choice_id, shown))

    async def orders_and_pays(self) -> None:
        """Up to "Check your phone": the push is out, the callback comes CALLBACK_DELAY later."""
        await self.deliver(self.graph.text(self.user, "Hi"))
        await self.sees("Karibu")
        await self.taps("Vegetables")
        await self.taps("Sukuma wiki")
        await self.taps("Add to cart")
        await self.taps("Checkout")
        await self.taps("Confirm order")
        await self.sees("Which M-Pesa number")
        await self.deliver(
            self.graph.contact(self.user, "+" + self.user.wa_id, origin="contact_request")
        )
        await self.sees("Check your phone")

    def paid_texts(self) -> list[str]:
        return [t for t in self.graph.texts_to(self.user) if PAID in t]


async def _whatsapp_shop(process: DukaProcess, graph: FakeGraph) -> WhatsAppCustomer:
    # No merchant number: the fault injected must land on the customer's notice.
    env = whatsapp_env(graph)
    del env["DUKA_MERCHANT_WHATSAPP_NUMBERS"]
    process.env |= env
    (process.workdir / "config.toml").write_text(
        '[shop]\nname = "Test Duka"\n' + CATALOG + SIMULATOR + LIMITS
    )
    await process.start()
    customer = WhatsAppCustomer(graph, f"{process.url}/whatsapp/webhook", WANJIRU)
    await customer.orders_and_pays()
    return customer


async def test_whatsapp_131047_outside_the_window_sends_the_paid_template_once(
    duka_process: DukaProcess,
) -> None:
    """Meta says the window closed (Duka thought it open): the approved template goes, once."""
    async with FakeGraph() as graph:
        customer = await _whatsapp_shop(duka_process, graph)
        graph.expire_window(WANJIRU)  # more than a day before the PIN was entered
        await graph.wait_for(lambda g: bool(g.templates_to(WANJIRU)), timeout=PATIENCE)
        await asyncio.sleep(1.5)  # a second template or a late free-form would show by now
    refused = [s for s in graph.sent_to(WANJIRU) if not s.accepted]
    assert [s.error_code for s in refused] == [131047]
    [template] = graph.templates_to(WANJIRU)
    assert template["name"] == "duka_payment_paid"
    assert customer.paid_texts() == []


async def test_whatsapp_130429_rate_limit_delivers_paid_once(duka_process: DukaProcess) -> None:
    async with FakeGraph() as graph:
        customer = await _whatsapp_shop(duka_process, graph)
        graph.fail_next(400, 130429)  # waited out in place (a second one: 6 s, a third: 30 s)
        await graph.wait_for(lambda g: bool(customer.paid_texts()), timeout=PATIENCE)
        await asyncio.sleep(1.5)
    assert [s.error_code for s in graph.sent_to(WANJIRU) if not s.accepted] == [130429]
    assert len(customer.paid_texts()) == 1


async def test_whatsapp_500_then_back_delivers_paid_once(duka_process: DukaProcess) -> None:
    async with FakeGraph() as graph:
        customer = await _whatsapp_shop(duka_process, graph)
        graph.set_down(True)
        await graph.wait_for(
            lambda g: sum(not s.accepted for s in g.sent_to(WANJIRU)) >= 2, timeout=PATIENCE
        )
        graph.set_down(False)
        await graph.wait_for(lambda g: bool(customer.paid_texts()), timeout=PATIENCE)
        await asyncio.sleep(1.5)
    refused = [s for s in graph.sent_to(WANJIRU) if not s.accepted]
    assert len(refused) >= 2
    assert {s.status for s in refused} == {500}
    assert len(customer.paid_texts()) == 1
