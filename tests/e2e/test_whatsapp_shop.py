"""A WhatsApp customer shops and pays, end to end: signed webhooks into the real server,
replies to a fake Cloud API on 127.0.0.1, the Daraja simulator, and a real database."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.app import DATABASE
from bot.channels.whatsapp_inbound import read_webhook
from payments.simulator import rules
from storage.orders import claim_inbound
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.e2e.test_telegram_shop import CATALOG
from tests.fakes.graph_api import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_APP_SECRET,
    DEFAULT_PHONE_NUMBER_ID,
    DEFAULT_VERIFY_TOKEN,
    FakeGraph,
    WaUser,
)
from tests.helpers import payment_rows

WANJIRU = WaUser("254712345678", user_id="KE.1001", name="Wanjiru")
MERCHANT_NUMBER = "254722000999"


@dataclasses.dataclass
class Shop:
    duka: RunningDuka
    graph: FakeGraph
    runner: web.AppRunner

    @property
    def webhook(self) -> str:
        return f"{self.duka.base_url}/whatsapp/webhook"


def whatsapp_env(graph: FakeGraph) -> dict[str, str]:
    return {
        "WHATSAPP_ACCESS_TOKEN": DEFAULT_ACCESS_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": DEFAULT_PHONE_NUMBER_ID,
        "WHATSAPP_APP_SECRET": DEFAULT_APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": DEFAULT_VERIFY_TOKEN,
        "WHATSAPP_API_BASE_URL": graph.graph_url,
        "DUKA_MERCHANT_WHATSAPP_NUMBERS": "0722 000 999",
    }


async def open_shop(database_url: str, tmp_path: Path, graph: FakeGraph, **env: str) -> Shop:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    environment = {**whatsapp_env(graph), **env}
    config = make_config(
        database_url, sock.getsockname()[1], tmp_path, toml=TEST_TOML + CATALOG, **environment
    )
    duka, runner = await start_duka(config, sock, dispatch_seconds=0.05)
    return Shop(duka, graph, runner)


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    async with FakeGraph() as fake:
        yield fake


@pytest.fixture
async def shop(database_url: str, tmp_path: Path, graph: FakeGraph) -> AsyncIterator[Shop]:
    opened = await open_shop(database_url, tmp_path, graph)
    try:
        yield opened
    finally:
        await opened.runner.cleanup()


def choices(interactive: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, id, title) of every button or list row in an interactive message."""
    body = interactive
    action = body.get("action", {})
    if body.get("type") == "button":
        return [("button", b["reply"]["id"], b["reply"]["title"]) for b in action["buttons"]]
    if body.get("type") == "list":
        return [("list", r["id"], r["title"]) for s in action["sections"] for r in s["rows"]]
    return []


async def deliver(shop: Shop, payload: dict[str, Any]) -> None:
    before = len(shop.graph.sent)
    assert await shop.graph.post_webhook(shop.webhook, payload) == 200
    await shop.graph.wait_for(lambda g: len(g.sent) > before)


async def writes(shop: Shop, user: WaUser, text: str) -> None:
    await deliver(shop, shop.graph.text(user, text))


async def taps(shop: Shop, user: WaUser, title: str) -> None:
    """Tap the button or list row whose title contains ``title`` on the latest message
    (waiting for it: the answer to the previous tap may still be on its way)."""
    await shop.graph.wait_for(
        lambda g: any(title in c[2] for c in choices(g.last_interactive(user) or {}))
    )
    last = shop.graph.last_interactive(user)
    assert last is not None, "no interactive message on screen"
    options = choices(last)
    kind, choice_id, shown = next((c for c in options if title in c[2]), ("", "", ""))
    assert choice_id, f"no {title!r} among {[c[2] for c in options]}"
    if kind == "button":
        payload = shop.graph.button_reply(user, choice_id, shown)
    else:
        payload = shop.graph.list_reply(user, choice_id, shown)
    await deliver(shop, payload)


async def sees(shop: Shop, user: WaUser, words: str, times: int = 1) -> None:
    await shop.graph.wait_for(lambda g: sum(words in t for t in g.texts_to(user)) >= times)


async def confirm_an_order(shop: Shop, user: WaUser = WANJIRU) -> None:
    await writes(shop, user, "Hi")
    await sees(shop, user, "Karibu to Test Duka")
    await taps(shop, user, "Vegetables")
    await taps(shop, user, "Sukuma wiki")
    await taps(shop, user, "+")
    await taps(shop, user, "Add to cart")
    await taps(shop, user, "Checkout")
    await sees(shop, user, "Total: KES 60")
    await taps(shop, user, "Confirm order")
    await sees(shop, user, "Which M-Pesa number")
    last = shop.graph.last_interactive(user)
    assert last is not None
    assert last["type"] == "request_contact_info"


async def test_whole_order_on_whatsapp_is_paid_and_the_merchant_gets_a_template(
    shop: Shop,
) -> None:
    graph = shop.graph
    await confirm_an_order(shop)
    await deliver(shop, graph.contact(WANJIRU, "+254 712 345 678", origin="contact_request"))
    await sees(shop, WANJIRU, "Check your phone: M-Pesa will ask for your PIN to pay KES 60")
    await sees(shop, WANJIRU, "Paid! KES 60")
    [payment] = await payment_rows(shop.duka.engine, 1)
    paid = next(t for t in graph.texts_to(WANJIRU) if t.startswith("Paid!"))
    assert payment.mpesa_receipt in paid
    assert "2 × Sukuma wiki = KES 60" in paid
    # Customers are keyed on the business-scoped id, and replies go to it.
    assert {s.to for s in graph.sent_to(WANJIRU)} == {"KE.1001"}
    # The merchant never wrote to the shop: outside the window, so a template.
    await graph.wait_for(lambda g: bool(g.templates_to(MERCHANT_NUMBER)))
    [template] = graph.templates_to(MERCHANT_NUMBER)
    assert template["name"] == "duka_order_paid"
    values = [p["text"] for p in template["components"][0]["parameters"]]
    assert values[1:] == ["KES 60", payment.mpesa_receipt, "Wanjiru", "1"]  # 1 waits


async def test_paid_message_carries_a_menu_button_on_whatsapp(shop: Shop) -> None:
    """ "Paid!" is not a dead end: it comes as a message with a Menu button that works."""
    await confirm_an_order(shop)
    await deliver(shop, shop.graph.contact(WANJIRU, "+254712345678", origin="contact_request"))
    await sees(shop, WANJIRU, "Paid! KES 60")
    paid = shop.graph.last_interactive(WANJIRU)
    assert paid is not None
    assert paid["body"]["text"].startswith("Paid! KES 60")
    assert choices(paid) == [("button", "menu:new", "Menu")]
    await taps(shop, WANJIRU, "Menu")
    await sees(shop, WANJIRU, "Pick a category:")


async def test_failed_payment_then_try_again_on_whatsapp(shop: Shop) -> None:
    await confirm_an_order(shop)
    await writes(shop, WANJIRU, "0712 000 011")  # cancelled the first time
    await sees(shop, WANJIRU, "Pay KES 60 from 0712 000 011?")
    await taps(shop, WANJIRU, "Yes, pay")
    await sees(shop, WANJIRU, "did not go through. The request was cancelled on your phone.")
    await taps(shop, WANJIRU, "Try again")
    await sees(shop, WANJIRU, "Paid! KES 60")
    assert [p.status for p in await payment_rows(shop.duka.engine, 1)] == ["failed", "paid"]


async def test_typed_words_find_products_and_typed_quantities_add_them_on_whatsapp(
    shop: Shop,
) -> None:
    """Typing works as well as tapping: a word searches, "3" sets the quantity on the
    product screen, and "2 sukuma" adds two from anywhere."""
    await writes(shop, WANJIRU, "sukuma")
    await sees(shop, WANJIRU, "Products matching “sukuma”:")
    await taps(shop, WANJIRU, "Sukuma wiki")
    await writes(shop, WANJIRU, "3")
    await sees(shop, WANJIRU, "Quantity: 3 (KES 90)")
    await taps(shop, WANJIRU, "Add to cart")
    await sees(shop, WANJIRU, "Added 3 × Sukuma wiki. Your cart: KES 90.")
    await writes(shop, WANJIRU, "2 sukuma")
    await sees(shop, WANJIRU, "Added 2 × Sukuma wiki. Your cart: KES 150.")
    await writes(shop, WANJIRU, "mango")
    await sees(shop, WANJIRU, "No product matches “mango”.")
    last = shop.graph.last_interactive(WANJIRU)
    assert last is not None
    assert ("button", "menu", "Menu") in choices(last)


async def test_saved_number_prompt_states_the_amount_and_pays_on_whatsapp(shop: Shop) -> None:
    """The second order offers the number paid from before, with the amount and the
    same "Yes, pay" as a typed number."""
    await confirm_an_order(shop)
    await deliver(shop, shop.graph.contact(WANJIRU, "+254712345678", origin="contact_request"))
    await sees(shop, WANJIRU, "Paid! KES 60")
    await writes(shop, WANJIRU, "2 sukuma")
    await taps(shop, WANJIRU, "Checkout")
    await taps(shop, WANJIRU, "Confirm order")
    await sees(shop, WANJIRU, "Pay KES 60 from 07XX XXX 678?")
    await taps(shop, WANJIRU, "Yes, pay")
    await sees(shop, WANJIRU, "Paid! KES 60", times=2)


async def test_bad_or_missing_signature_is_refused_and_nothing_happens(shop: Shop) -> None:
    graph = shop.graph
    payload = graph.text(WANJIRU, "Hi")
    assert await graph.post_webhook(shop.webhook, payload, signature="bad") == 403
    assert await graph.post_webhook(shop.webhook, payload, signature="missing") == 401
    await asyncio.sleep(0.2)  # time for a wrongly accepted message to be answered
    assert graph.sent_to(WANJIRU) == []


async def test_replayed_message_is_handled_once(shop: Shop) -> None:
    graph = shop.graph
    payload = graph.text(WANJIRU, "Hi")
    assert await graph.post_webhook(shop.webhook, payload) == 200
    await sees(shop, WANJIRU, "Karibu")
    assert await graph.post_webhook(shop.webhook, payload) == 200
    await writes(shop, WANJIRU, "/help")  # a later message still gets its answer
    assert sum("Karibu" in t for t in graph.texts_to(WANJIRU)) == 1


async def test_paid_notice_outside_the_window_goes_out_as_a_template(shop: Shop) -> None:
    graph = shop.graph
    await confirm_an_order(shop)
    shop.duka.simulator.force_next_outcome(dataclasses.replace(rules.SUCCESS, never_resolves=True))
    await deliver(shop, graph.contact(WANJIRU, "+254712345678", origin="contact_request"))
    await sees(shop, WANJIRU, "Check your phone")
    graph.expire_window(WANJIRU)  # the customer took more than a day to enter the PIN
    [payment] = await payment_rows(shop.duka.engine, 1)
    shop.duka.simulator.resolve(payment.checkout_request_id)
    await graph.wait_for(lambda g: bool(g.templates_to(WANJIRU)))
    [template] = graph.templates_to(WANJIRU)
    assert template["name"] == "duka_payment_paid"
    values = [p["text"] for p in template["components"][0]["parameters"]]
    [paid] = await payment_rows(shop.duka.engine, 1)
    assert values[1:] == ["KES 60", paid.mpesa_receipt]
    assert not any("Paid!" in t for t in graph.texts_to(WANJIRU))


async def test_a_kiswahili_customer_gets_the_template_in_swahili_or_else_the_default(
    shop: Shop,
) -> None:
    """Outside the window: the Swahili translation; where the shop has none, the English one."""
    graph = shop.graph
    await writes(shop, WANJIRU, "/language")
    await taps(shop, WANJIRU, "Kiswahili")
    await confirm_an_order_in_swahili(shop)
    shop.duka.simulator.force_next_outcome(dataclasses.replace(rules.SUCCESS, never_resolves=True))
    await deliver(shop, graph.contact(WANJIRU, "+254712345678", origin="contact_request"))
    await sees(shop, WANJIRU, "Angalia simu yako")
    graph.expire_window(WANJIRU)
    graph.approved_languages = {"en"}  # the shop made its templates in English only
    [payment] = await payment_rows(shop.duka.engine, 1)
    shop.duka.simulator.resolve(payment.checkout_request_id)
    await graph.wait_for(lambda g: bool(g.templates_to(WANJIRU)))
    refused = [s for s in graph.sent_to(WANJIRU) if s.type == "template" and not s.accepted]
    assert [s.body["template"]["language"]["code"] for s in refused] == ["sw"]
    [template] = graph.templates_to(WANJIRU)
    assert (template["name"], template["language"]["code"]) == ("duka_payment_paid", "en")


async def confirm_an_order_in_swahili(shop: Shop, user: WaUser = WANJIRU) -> None:
    await writes(shop, user, "Habari")
    await sees(shop, user, "Karibu")
    await taps(shop, user, "Vegetables")
    await taps(shop, user, "Sukuma wiki")
    await taps(shop, user, "Weka kikapuni")
    await taps(shop, user, "Endelea kulipa")
    await taps(shop, user, "Thibitisha agizo")
    await sees(shop, user, "Ulipe KES 30 kwa namba gani ya M-Pesa?")


async def test_rate_limited_notice_is_retried_and_sent_once(shop: Shop) -> None:
    graph = shop.graph
    await confirm_an_order(shop)
    shop.duka.simulator.force_next_outcome(dataclasses.replace(rules.SUCCESS, never_resolves=True))
    await deliver(shop, graph.contact(WANJIRU, "+254712345678", origin="contact_request"))
    await sees(shop, WANJIRU, "Check your phone")
    graph.fail_next(400, 131056, "Pair rate limit hit", to=WANJIRU)  # not the merchant's
    [payment] = await payment_rows(shop.duka.engine, 1)
    shop.duka.simulator.resolve(payment.checkout_request_id)
    await graph.wait_for(lambda g: any("Paid!" in t for t in g.texts_to(WANJIRU)), timeout=15)
    assert sum("Paid!" in t for t in graph.texts_to(WANJIRU)) == 1
    assert any(s.error_code == 131056 for s in graph.sent_to(WANJIRU))


async def test_someone_elses_contact_card_is_refused(shop: Shop) -> None:
    await confirm_an_order(shop)
    card = shop.graph.contact(
        WANJIRU, "+254799999999", origin="other", contact_wa_id="254799999999"
    )
    await deliver(shop, card)
    await sees(shop, WANJIRU, "That contact is not your own number")
    assert shop.duka.simulator.push_requests == []


async def test_stickers_get_a_polite_answer(shop: Shop) -> None:
    await deliver(shop, shop.graph.unsupported(WANJIRU, "sticker"))
    await sees(shop, WANJIRU, "I can read text and buttons only.")


async def test_webhook_verification(shop: Shop) -> None:
    graph = shop.graph
    assert await graph.verify_webhook(shop.webhook, token=DEFAULT_VERIFY_TOKEN) == (
        200,
        "1158201444",
    )
    status, _ = await graph.verify_webhook(shop.webhook, token="wrong")
    assert status == 403
    status, _ = await graph.verify_webhook(
        shop.webhook, mode="unsubscribe", token=DEFAULT_VERIFY_TOKEN
    )
    assert status == 403


async def test_telegram_and_whatsapp_customers_order_at_once_without_crossing(
    database_url: str, tmp_path: Path, graph: FakeGraph
) -> None:
    """One process, one database, two channels: each customer gets only their own order."""
    from tests.e2e import test_telegram_shop as tg
    from tests.fakes.telegram_api import FakeTelegram

    async with FakeTelegram() as telegram:
        shop = await open_shop(database_url, tmp_path, graph, **tg.telegram_env(telegram))
        try:

            async def on_telegram() -> None:
                await tg.fill_cart_and_confirm(telegram)
                await tg.types_number(telegram, tg.CUSTOMER, "0712 000 100")
                await tg.sees(telegram, tg.CUSTOMER, "Paid! KES 270")

            async def on_whatsapp() -> None:
                await confirm_an_order(shop)
                await writes(shop, WANJIRU, "0712 000 200")
                await taps(shop, WANJIRU, "Yes, pay")
                await sees(shop, WANJIRU, "Paid! KES 60")

            await asyncio.gather(on_telegram(), on_whatsapp())
        finally:
            await shop.runner.cleanup()
    telegram_paid = next(t for t in telegram.texts_to(tg.CUSTOMER) if t.startswith("Paid!"))
    whatsapp_paid = next(t for t in graph.texts_to(WANJIRU) if t.startswith("Paid!"))
    reference_tg = telegram_paid.split()[5].rstrip(".")
    reference_wa = whatsapp_paid.split()[5].rstrip(".")
    assert reference_tg != reference_wa
    assert "Unga 2kg" in telegram_paid
    assert "Unga" not in whatsapp_paid
    assert not any(reference_wa in t for t in telegram.texts_to(tg.CUSTOMER))
    assert not any(reference_tg in t for t in graph.texts_to(WANJIRU))
    pushes = {p["PhoneNumber"] for p in shop.duka.simulator.push_requests}
    assert pushes == {"254712000100", "254712000200"}


async def test_several_messages_in_one_post_are_all_answered(shop: Shop) -> None:
    graph = shop.graph
    otieno = WaUser("254733000111", name="Otieno")
    payload = graph.several(graph.text(WANJIRU, "Hi"), graph.text(otieno, "Habari"))
    assert await graph.post_webhook(shop.webhook, payload) == 200
    await sees(shop, WANJIRU, "Karibu to Test Duka")
    await sees(shop, otieno, "Karibu to Test Duka")


async def test_a_customer_known_only_by_business_scoped_id_orders_and_pays(shop: Shop) -> None:
    """A WhatsApp username hides the phone: the M-Pesa number must come from the customer."""
    hidden = WaUser("254700000000", user_id="KE.2002", name="Achieng", phone_hidden=True)
    await confirm_an_order(shop, hidden)
    await writes(shop, hidden, "0712345678")
    await taps(shop, hidden, "Yes, pay")
    await sees(shop, hidden, "Paid! KES 60")
    assert {s.to for s in shop.graph.sent_to(hidden)} == {"KE.2002"}


async def test_a_phone_known_customer_keeps_their_cart_when_meta_adds_a_user_id(
    shop: Shop,
) -> None:
    before = WaUser("254711222333", name="Kamau")
    await writes(shop, before, "Hi")
    await taps(shop, before, "Vegetables")
    await taps(shop, before, "Sukuma wiki")
    await taps(shop, before, "Add to cart")
    after = dataclasses.replace(before, user_id="KE.3003")
    await writes(shop, after, "/cart")
    await sees(shop, after, "1 × Sukuma wiki @ KES 30 = KES 30")


async def test_a_message_acknowledged_but_not_handled_is_handled_after_a_restart(
    database_url: str, tmp_path: Path, graph: FakeGraph
) -> None:
    """Meta heard "200" and will not resend; the process stopped before answering."""
    first = await open_shop(database_url, tmp_path, graph)
    payload = graph.text(WANJIRU, "Hi")  # what Meta delivered just before the stop
    [message], _ = read_webhook(payload)
    claim = [(message.id, json.dumps(dataclasses.asdict(message)))]
    await first.duka.app[DATABASE].transaction(claim_inbound, "whatsapp", claim, datetime.now(UTC))
    await first.runner.cleanup()
    assert graph.sent_to(WANJIRU) == []

    second = await open_shop(database_url, tmp_path, graph)
    try:
        await sees(second, WANJIRU, "Karibu to Test Duka")
        assert await graph.post_webhook(second.webhook, payload) == 200  # Meta retries anyway
        await writes(second, WANJIRU, "/help")
        assert sum("Karibu" in t for t in graph.texts_to(WANJIRU)) == 1
    finally:
        await second.runner.cleanup()
