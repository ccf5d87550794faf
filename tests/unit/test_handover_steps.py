"""Delivery or pickup at checkout, as pure steps (bot/chat/handover_steps.py): asked after
"Confirm order" and before the order exists, so that the order is created with its fee."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.chat.buttons import (
    ChooseHandover,
    ChooseZone,
    ConfirmOrder,
    Menu,
    ShowCart,
    decode,
    encode,
)
from bot.chat.effects import CreateOrder
from bot.chat.events import SharedLocation, Typed, read_event
from bot.chat.facts import Facts, OrderView
from bot.chat.model import ChatState, Inbound, Location, Step
from bot.handover import DELIVERY_SKU, MAX_ADDRESS, Handover, HandoverOptions, Zone
from bot.texts import kes, say
from payments.daraja_client import MAX_AMOUNT
from storage.orders import NewOrderItem, OrderHandover
from tests.unit.test_chat_steps import (
    SAVED,
    ask_phone,
    browsing,
    datas,
    facts,
    only,
    order,
    press,
    run,
    saved_question,
)

BOTH = HandoverOptions(
    (Handover.PICKUP, Handover.DELIVERY),
    "Shop 12, Kenyatta Market",
    "8:00-19:00",
    (Zone("CBD", 100), Zone("Westlands", 250)),
)
CART = {"unga": 2, "sukuma": 3}  # KES 510
ITEMS = (NewOrderItem("unga", "Unga 2kg", 210, 2), NewOrderItem("sukuma", "Sukuma wiki", 30, 3))
PICKUP_NOTE = "🏪 Pick up at Shop 12, Kenyatta Market (8:00-19:00)."


def shop(
    options: HandoverOptions = BOTH, *orders: OrderView, lang: str = "en", saved: str | None = None
) -> Facts:
    f = facts(*orders, lang=lang, saved=saved)
    return replace(f, shop=replace(f.shop, handover=options))


def at_address(zone: str = "CBD", cart: dict[str, int] | None = None) -> ChatState:
    return ChatState(Step.AWAITING_ADDRESS, dict(cart or CART), zone=zone)


def fee_line(zone: str, fee: int) -> NewOrderItem:
    return NewOrderItem(DELIVERY_SKU, f"Delivery ({zone})", fee, 1)


def test_a_shop_that_offers_nothing_asks_nothing() -> None:
    outcome = run(browsing(CART), press(ConfirmOrder()), shop(HandoverOptions()))
    assert outcome.effects == (CreateOrder(ITEMS),)


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_confirm_asks_delivery_or_pickup_and_keeps_the_cart(lang: str) -> None:
    outcome = run(browsing(CART), press(ConfirmOrder()), shop(lang=lang))
    assert outcome.state == ChatState(Step.CHOOSING_HANDOVER, CART)
    assert outcome.effects == ()
    reply = only(outcome)
    assert reply.text.startswith(say(lang, "handover_question", total=kes(510)))
    assert "Shop 12, Kenyatta Market" in reply.text
    assert datas(reply) == ["way:pickup", "way:delivery"]


def test_pickup_creates_the_order_without_a_fee_and_says_where() -> None:
    start = ChatState(Step.CHOOSING_HANDOVER, CART)
    outcome = run(start, press(ChooseHandover(Handover.PICKUP)), shop(saved=SAVED))
    assert outcome.effects == (CreateOrder(ITEMS, OrderHandover(Handover.PICKUP)),)
    assert outcome.state == ChatState(Step.AWAITING_PHONE, {})
    question = saved_question(510)
    assert only(outcome) == replace(question, text=f"{PICKUP_NOTE}\n\n{question.text}")


def test_delivery_asks_the_zone_with_each_fee() -> None:
    start = ChatState(Step.CHOOSING_HANDOVER, CART)
    outcome = run(start, press(ChooseHandover(Handover.DELIVERY)), shop())
    assert outcome.state == ChatState(Step.CHOOSING_ZONE, CART)
    reply = only(outcome)
    assert "• CBD: KES 100" in reply.text
    assert "• Westlands: KES 250" in reply.text
    assert datas(reply) == ["zone:0", "zone:1"]
    assert [b.label for row in reply.buttons for b in row] == ["CBD", "Westlands"]


def test_a_zone_asks_for_a_location_or_an_address() -> None:
    outcome = run(ChatState(Step.CHOOSING_ZONE, CART), press(ChooseZone(1)), shop())
    assert outcome.state == at_address("Westlands")
    reply = only(outcome)
    assert reply.text == say("en", "address_question", zone="Westlands", fee="KES 250")
    assert reply.ask_location == say("en", "btn_send_location")


def test_a_typed_address_creates_the_order_with_the_fee_in_its_total() -> None:
    outcome = run(at_address(), Typed("  near   Kencom stage "), shop())
    chosen = OrderHandover(Handover.DELIVERY, "CBD", "near Kencom stage")
    assert outcome.effects == (CreateOrder((*ITEMS, fee_line("CBD", 100)), chosen),)
    assert outcome.state == ChatState(Step.AWAITING_PHONE, {})
    note = "🚚 Delivery to CBD (KES 100): near Kencom stage."
    assert only(outcome) == replace(ask_phone(610), text=f"{note}\n\n{ask_phone(610).text}")


def test_a_shared_place_is_the_address_and_its_location_is_kept() -> None:
    event = SharedLocation(-1.2841, 36.8233, "Kencom House, Moi Avenue")
    outcome = run(at_address(), event, shop(saved=SAVED))
    chosen = OrderHandover(Handover.DELIVERY, "CBD", "Kencom House, Moi Avenue", (-1.2841, 36.8233))
    assert outcome.effects == (CreateOrder((*ITEMS, fee_line("CBD", 100)), chosen),)
    reply = only(outcome)
    assert reply.text.endswith(saved_question(610).text)
    assert reply.close_keyboard  # the "send my location" keyboard goes
    assert datas(reply) == ["phone:yes", "phone:other"]


def test_a_bare_pin_has_no_address_and_says_the_location_was_received() -> None:
    outcome = run(at_address(), SharedLocation(-1.28, 36.82, ""), shop())
    chosen = OrderHandover(Handover.DELIVERY, "CBD", None, (-1.28, 36.82))
    assert outcome.effects == (CreateOrder((*ITEMS, fee_line("CBD", 100)), chosen),)
    assert "the location you sent" in only(outcome).text


def test_a_free_zone_adds_no_line() -> None:
    options = replace(BOTH, zones=(Zone("Estate", 0),))
    outcome = run(at_address("Estate"), Typed("House 4, Block B"), shop(options))
    chosen = OrderHandover(Handover.DELIVERY, "Estate", "House 4, Block B")
    assert outcome.effects == (CreateOrder(ITEMS, chosen),)
    assert "(free)" in only(outcome).text


@pytest.mark.parametrize(
    ("typed", "key"), [("cbd", "address_too_short"), ("x" * (MAX_ADDRESS + 1), "address_too_long")]
)
def test_an_address_too_short_or_too_long_is_asked_again(typed: str, key: str) -> None:
    outcome = run(at_address(), Typed(typed), shop())
    assert outcome.state == at_address()
    assert outcome.effects == ()
    assert only(outcome).text == say("en", key, count=MAX_ADDRESS)
    assert only(outcome).ask_location is not None


@pytest.mark.parametrize("start", [Step.CHOOSING_HANDOVER, Step.CHOOSING_ZONE])
def test_typing_instead_of_choosing_leaves_the_question_and_searches(start: Step) -> None:
    outcome = run(ChatState(start, CART), Typed("sukari"), shop())
    assert outcome.state == ChatState(Step.BROWSING, CART)
    assert "sukari" in datas(only(outcome))[0]  # the search result's product button


def test_another_button_leaves_the_address_step_so_a_later_word_is_a_search() -> None:
    left = run(at_address(), press(ShowCart()), shop())
    assert left.state == ChatState(Step.BROWSING, CART)
    searched = run(left.state, Typed("sukari"), shop())
    assert searched.effects == ()
    assert searched.state.step is Step.BROWSING


def test_a_location_when_none_was_asked_for_gets_the_menu() -> None:
    outcome = run(browsing(CART), SharedLocation(-1.28, 36.82, ""), shop())
    assert outcome.state == browsing(CART)
    assert only(outcome).text == say("en", "location_not_needed")
    assert datas(only(outcome)) == ["menu"]


def test_a_zone_no_longer_offered_asks_the_zones_again() -> None:
    outcome = run(ChatState(Step.CHOOSING_ZONE, CART), press(ChooseZone(5)), shop())
    assert outcome.state.step is Step.CHOOSING_ZONE
    assert datas(only(outcome)) == ["zone:0", "zone:1"]


def test_a_shop_that_only_delivers_to_one_zone_asks_only_the_address() -> None:
    options = HandoverOptions((Handover.DELIVERY,), zones=(Zone("CBD", 100),))
    outcome = run(browsing(CART), press(ConfirmOrder()), shop(options))
    assert outcome.state == at_address("CBD")


def test_a_shop_that_only_has_pickup_creates_the_order_at_once() -> None:
    options = HandoverOptions((Handover.PICKUP,), "Shop 12, Kenyatta Market")
    outcome = run(browsing(CART), press(ConfirmOrder()), shop(options))
    assert outcome.effects == (CreateOrder(ITEMS, OrderHandover(Handover.PICKUP)),)
    assert only(outcome).text.startswith("🏪 Pick up at Shop 12, Kenyatta Market.")


def test_a_fee_that_takes_the_order_past_the_mpesa_limit_is_refused_at_the_zone() -> None:
    options = replace(BOTH, zones=(Zone("Far", 10_000),))
    cart = {"unga": MAX_AMOUNT // 210}  # just under the limit without the fee
    outcome = run(ChatState(Step.CHOOSING_ZONE, cart), press(ChooseZone(0)), shop(options))
    assert outcome.effects == ()
    assert outcome.state.step is not Step.AWAITING_ADDRESS
    assert kes(MAX_AMOUNT) in only(outcome).text


def test_an_old_delivery_button_after_the_order_exists_repeats_its_question() -> None:
    """The cart became order 7 already: no second order, the phone question again."""
    state = ChatState(Step.AWAITING_PHONE, {}, 7)
    outcome = run(state, press(ChooseHandover(Handover.DELIVERY)), shop(BOTH, order(total=610)))
    assert outcome.effects == ()
    assert only(outcome) == ask_phone(610)


def test_menu_from_the_zone_question_keeps_the_cart() -> None:
    outcome = run(ChatState(Step.CHOOSING_ZONE, CART), press(Menu()), shop())
    assert outcome.state == ChatState(Step.BROWSING, CART)


# --- the parts the steps stand on -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "action"),
    [
        ("way:pickup", ChooseHandover(Handover.PICKUP)),
        ("way:delivery", ChooseHandover(Handover.DELIVERY)),
        ("zone:1", ChooseZone(1)),
        ("way:teleport", None),
        ("zone:", None),
        ("zone:-1", None),
        ("zone:²", None),
    ],
)
def test_handover_buttons_decode_and_forged_ones_do_not(
    data: str, action: ChooseHandover | ChooseZone | None
) -> None:
    assert decode(data) == action
    if action is not None:
        assert encode(action) == data


def test_the_zone_survives_a_restart() -> None:
    state = at_address("Westlands")
    assert ChatState.from_json(state.to_json()) == state


def test_a_shared_location_is_its_own_event() -> None:
    inbound = Inbound("telegram", "1", location=Location(-1.28, 36.82, "Kencom"))
    assert read_event(inbound) == SharedLocation(-1.28, 36.82, "Kencom")
