"""Delivery or pickup, as pure steps: asked once the cart is confirmed and before the
order exists, so that the order is created with its delivery fee in its total (and in
the M-Pesa amount) and with where it goes.

Pickup: the order is created at once, with the pickup point in the answer. Delivery: the
zone (skipped when there is one), then a shared location or a typed address or landmark.
Any other event leaves these steps (``leave_if_elsewhere``); the cart stays the cart.
"""

from __future__ import annotations

from dataclasses import replace

from bot.chat import checkout, screens
from bot.chat.buttons import ChooseHandover, ChooseZone, encode
from bot.chat.effects import Outcome
from bot.chat.events import ChatEvent, Pressed, SharedLocation, Typed
from bot.chat.facts import Facts
from bot.chat.model import Button, ChatState, Reply, Step
from bot.handover import MAX_ADDRESS, Handover, Zone
from bot.texts import kes, say
from storage.orders import OrderHandover

HANDOVER_STEPS = frozenset({Step.CHOOSING_HANDOVER, Step.CHOOSING_ZONE, Step.AWAITING_ADDRESS})
MIN_ADDRESS = 4  # characters: "CBD" alone does not find a door


def leave_if_elsewhere(state: ChatState, event: ChatEvent) -> ChatState:
    """Back to browsing on an event these steps do not take: a later word must not be
    read as an address the customer never meant to give."""
    if state.step not in HANDOVER_STEPS:
        return state
    match event:
        case Pressed(action=ChooseHandover() | ChooseZone()) | SharedLocation():
            return state
        case Typed() if state.step is Step.AWAITING_ADDRESS:
            return state
    return replace(state, step=Step.BROWSING, zone=None)


def confirm(state: ChatState, facts: Facts) -> Outcome:
    """ "Confirm order": ask how the order reaches the customer, when the shop asks."""
    options = facts.shop.handover
    if not state.cart or not options.asks:
        return checkout.confirm(state, facts)
    if refused := checkout.cart_refused(state, facts):
        return refused
    if options.offers == (Handover.PICKUP,):
        return _pick_up(state, facts)
    if options.offers == (Handover.DELIVERY,):
        return _delivery(state, facts)
    lang = facts.lang
    total = kes(screens.cart_total(state.cart, facts.catalog))
    rows = (
        (
            Button(say(lang, "btn_pickup"), encode(ChooseHandover(Handover.PICKUP))),
            Button(say(lang, "btn_delivery"), encode(ChooseHandover(Handover.DELIVERY))),
        ),
    )
    text = "\n".join([say(lang, "handover_question", total=total), "", _pickup_note(facts)])
    state = replace(state, step=Step.CHOOSING_HANDOVER, zone=None)
    return Outcome(state, (Reply(text, rows),))


def chosen(state: ChatState, action: ChooseHandover, facts: Facts) -> Outcome:
    """Pickup or Delivery pressed (also from an older question: the cart decides)."""
    if not state.cart or action.way not in facts.shop.handover.offers:
        return confirm(state, facts)
    if action.way is Handover.PICKUP:
        return _pick_up(state, facts)
    return _delivery(state, facts)


def zone_chosen(state: ChatState, action: ChooseZone, facts: Facts) -> Outcome:
    zones = facts.shop.handover.zones
    if not state.cart or Handover.DELIVERY not in facts.shop.handover.offers:
        return confirm(state, facts)
    if not 0 <= action.index < len(zones):  # the zones changed since the question
        return _delivery(state, facts)
    return _ask_address(state, facts, zones[action.index])


def address(state: ChatState, event: Typed | SharedLocation, facts: Facts) -> Outcome:
    """A typed address or landmark, or a shared location, for the zone chosen."""
    lang = facts.lang
    if state.step is not Step.AWAITING_ADDRESS:  # a location sent out of the blue
        text = say(lang, "location_not_needed")
        return Outcome(state, (Reply(text, screens.menu_buttons(lang)),))
    zone = facts.shop.handover.zone(state.zone)
    if zone is None or not state.cart:  # the zone is gone from the shop's list
        return confirm(replace(state, step=Step.BROWSING, zone=None), facts)
    if isinstance(event, SharedLocation):
        place = event.place.strip()[:MAX_ADDRESS] or None
        chosen = OrderHandover(
            Handover.DELIVERY, zone.name, place, (event.latitude, event.longitude)
        )
        return _deliver(state, facts, zone, chosen, place or say(lang, "shared_location"))
    text = " ".join(event.text.split())
    if len(text) < MIN_ADDRESS:
        return Outcome(state, (_address_reply(lang, say(lang, "address_too_short")),))
    if len(text) > MAX_ADDRESS:
        too_long = say(lang, "address_too_long", count=MAX_ADDRESS)
        return Outcome(state, (_address_reply(lang, too_long),))
    chosen = OrderHandover(Handover.DELIVERY, zone.name, text)
    return _deliver(state, facts, zone, chosen, text)


def _pick_up(state: ChatState, facts: Facts) -> Outcome:
    return checkout.confirm(
        state, facts, OrderHandover(Handover.PICKUP), note=_pickup_note(facts, for_order=True)
    )


def _pickup_note(facts: Facts, *, for_order: bool = False) -> str:
    options = facts.shop.handover
    if Handover.PICKUP not in options.offers:
        return ""
    hours = f" ({options.pickup_hours})" if options.pickup_hours else ""
    note = say(facts.lang, "pickup_note", point=options.pickup_point, hours=hours)
    return note if for_order or len(options.offers) > 1 else ""


def _delivery(state: ChatState, facts: Facts) -> Outcome:
    """Which zone; with one zone only, straight to the address."""
    lang, zones = facts.lang, facts.shop.handover.zones
    if len(zones) == 1:
        return _ask_address(state, facts, zones[0])
    total = kes(screens.cart_total(state.cart, facts.catalog))
    lines = [say(lang, "zone_question", total=total), ""]
    lines += [f"• {zone.name}: {_fee(lang, zone.fee)}" for zone in zones]
    buttons = [Button(zone.name, encode(ChooseZone(i))) for i, zone in enumerate(zones)]
    rows = tuple(tuple(buttons[i : i + 2]) for i in range(0, len(buttons), 2))
    state = replace(state, step=Step.CHOOSING_ZONE, zone=None)
    return Outcome(state, (Reply("\n".join(lines), rows),))


def _ask_address(state: ChatState, facts: Facts, zone: Zone) -> Outcome:
    lang = facts.lang
    if refused := checkout.cart_refused(state, facts, zone.fee):  # the fee may pass the limit
        return refused
    text = say(lang, "address_question", zone=zone.name, fee=_fee(lang, zone.fee))
    state = replace(state, step=Step.AWAITING_ADDRESS, zone=zone.name)
    return Outcome(state, (_address_reply(lang, text),))


def _address_reply(lang: str, text: str) -> Reply:
    return Reply(text, ask_location=say(lang, "btn_send_location"))


def _deliver(
    state: ChatState, facts: Facts, zone: Zone, chosen: OrderHandover, where: str
) -> Outcome:
    lang = facts.lang
    fee = _fee(lang, zone.fee)
    note = say(lang, "delivery_note", zone=zone.name, address=where, fee=fee)
    return checkout.confirm(state, facts, chosen, fee=zone.fee, note=note)


def _fee(lang: str, fee: int) -> str:
    return kes(fee) if fee else say(lang, "free")
