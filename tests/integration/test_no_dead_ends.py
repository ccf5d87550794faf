"""No dead ends: every reply offers a next step, stale buttons say what happened, and the
quantity cap is stated (issue 11), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from bot.chat.model import Button, Reply
from bot.rendering import CUSTOMER_RENDERERS, CustomerFacts, render_customer
from bot.texts import reason_text, say
from payments.result_codes import FailureReason
from payments.settlement import MessageKind
from payments.simulator import errors, rules
from tests.conftest import RunningDuka
from tests.helpers import order_status, wait_for_payment_status
from tests.integration.test_conversation import Customer, count_orders

MENU = (Button("Menu", "menu"),)


@pytest.fixture
def duka(shop: RunningDuka) -> RunningDuka:
    """The three-product shop (tests/integration/conftest.py), on SQLite and PostgreSQL."""
    return shop


def buttons(reply: Reply) -> list[tuple[str, str]]:
    return [(b.label, b.data) for row in reply.buttons for b in row]


def test_paid_message_offers_the_menu() -> None:
    """ "Paid!" is not the end of the chat: it carries a Menu button, in both languages,
    which sends the menu below the receipt rather than over it."""
    facts = CustomerFacts("sw", "1 × Unga 2kg = KES 210", 7, "paid", "payment:1", None)
    payload = {"order_reference": "DK-7KX3M9", "paid_amount": 210, "receipt": "QKX1A2B3C4"}
    reply = render_customer(MessageKind.PAYMENT_PAID, payload, facts).reply
    assert reply.text.startswith("Umelipa! KES 210 kwa agizo DK-7KX3M9.")
    assert reply.buttons == ((Button("Menyu", "menu:new"),),)
    english = render_customer(
        MessageKind.PAYMENT_PAID, payload, CustomerFacts("en", "", 7, "paid", "", None)
    ).reply
    assert english.buttons == ((Button("Menu", "menu:new"),),)


CUSTOMER_PAYLOAD = {
    "order_reference": "DK-7KX3M9",
    "paid_amount": 210,
    "amount": 210,
    "receipt": "QKX1A2B3C4",
    "reason": "cancelled",
    "action": "paid",
    "note": "",
    "fulfilment": "ready",
}


@pytest.mark.parametrize("kind", sorted(CUSTOMER_RENDERERS))
@pytest.mark.parametrize("order_status", ["awaiting_payment", "paid", "cancelled"])
def test_every_customer_message_offers_a_next_step(kind: MessageKind, order_status: str) -> None:
    """Whatever the message and whatever became of the order, at least one button."""
    facts = CustomerFacts("en", "1 × Unga 2kg = KES 210", 7, order_status, "payment:1", None)
    reply = render_customer(kind, CUSTOMER_PAYLOAD, facts).reply
    assert reply.buttons, f"{kind} for an order {order_status} has no button"


async def test_cancelled_order_message_offers_the_cart_and_menu(duka: RunningDuka) -> None:
    customer = Customer(duka, "2001")
    order = await customer.confirms_an_order()
    [answer] = await customer.presses(f"cancel:{order.id}")
    assert answer.text == f"Order {order.reference} is cancelled; its items are back in your cart."
    assert buttons(answer) == [("Cart (3)", "cart"), ("Menu", "menu")]


async def test_not_understood_offers_the_menu_for_text_and_contacts(duka: RunningDuka) -> None:
    """ "I did not understand that" always comes with Menu, a stray contact included."""
    customer = Customer(duka, "2001")
    hint = "I did not understand that. Tap Menu to shop, or send /help."
    assert await customer.says("where is my order") == [Reply(hint, (MENU,))]
    assert await customer.shares_contact("+254712345678") == [Reply(hint, (MENU,))]


async def test_stale_yes_pay_while_the_prompt_is_open_says_it_waits_for_the_pin(
    duka: RunningDuka,
) -> None:
    customer = Customer(duka, "2001")
    order = await customer.confirms_an_order()
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    [pushed] = await customer.pays_from("0712345678")
    assert pushed.text.startswith("Check your phone")
    for stale in ["phone:typed", "phone:yes"]:
        [again] = await customer.presses(stale)
        assert again.text == (
            f"A payment for order {order.reference} is already waiting for your PIN. "
            "Check your phone."
        )
        assert again.buttons == (MENU,)
    assert len(duka.simulator.push_requests) == 1


async def test_try_again_on_a_cancelled_order_says_so_and_offers_the_cart(
    duka: RunningDuka,
) -> None:
    customer = Customer(duka, "2001")
    order = await customer.confirms_an_order()
    await customer.presses(f"cancel:{order.id}")  # its 3 items go back in the cart
    await customer.adds("unga", 1)
    [again] = await customer.presses(f"retry:{order.id}")
    assert again.text == (
        f"Order {order.reference} is cancelled, so it cannot be paid. Tap Cart to see your "
        "cart, or Menu to shop."
    )
    assert buttons(again) == [("Cart (4)", "cart"), ("Menu", "menu")]
    assert duka.simulator.push_requests == []


async def test_the_quantity_cap_is_stated_on_the_product_screen(duka: RunningDuka) -> None:
    customer = Customer(duka, "2001")
    await customer.presses("prod:unga")
    [screen] = await customer.presses("qty:unga:50")
    assert screen.text.splitlines()[-2:] == [
        "Quantity: 50 (KES 10,500)",
        "50 is the most one order can take of Unga 2kg.",
    ]
    assert ("+", "qty:unga:50") in buttons(screen)


async def test_adding_past_the_cap_says_what_was_really_added(duka: RunningDuka) -> None:
    """45 in the cart, then 11 more: 5 are added; then 11 again: nothing, and it says so."""
    customer = Customer(duka, "2001")
    await customer.adds("unga", 45)
    partly = await customer.adds("unga", 11)
    assert partly.text == (
        "Added 5 × Unga 2kg: you now have 50, the most one order can take. Your cart: KES 10,500."
    )
    nothing = await customer.adds("unga", 11)
    assert nothing.text == (
        "Nothing added: your cart already has 50 × Unga 2kg, the most one order can take. "
        "Your cart: KES 10,500."
    )
    assert "Added 11" not in partly.text + nothing.text


async def test_plus_in_the_cart_at_the_cap_states_the_cap(duka: RunningDuka) -> None:
    customer = Customer(duka, "2001")
    await customer.adds("unga", 50)
    [cart] = await customer.presses("inc:unga")
    assert cart.text.startswith("50 is the most one order can take of Unga 2kg.\n\nYour cart:")
    assert cart.text.endswith("Total: KES 10,500")


async def test_minus_at_one_offers_to_remove_or_leave_out(duka: RunningDuka) -> None:
    """At quantity 1, "−" offers to remove a product in the cart, or to leave a new one out."""
    customer = Customer(duka, "2001")
    [screen] = await customer.presses("prod:unga")
    assert buttons(screen)[0] == ("−", "drop:unga")
    [offer] = await customer.presses("drop:unga")
    assert offer.text == "1 is the fewest you can add. Leave Unga 2kg out?"
    assert buttons(offer) == [("Leave it out", "cat:Staples"), ("Add to cart", "add:unga:1")]

    await customer.adds("unga", 2)
    await customer.presses("prod:unga")
    [offer] = await customer.presses("drop:unga")
    assert offer.text == "Remove Unga 2kg from your cart?"
    assert buttons(offer) == [("Remove", "rm:unga"), ("Keep", "prod:unga")]
    [cart] = await customer.presses("rm:unga")
    assert cart.text == "Your cart is empty. Tap Menu to pick products."


# --- /orders --------------------------------------------------------------------------------


async def test_orders_offers_pay_and_cancel_for_every_unpaid_order_and_ends_with_menu(
    duka: RunningDuka,
) -> None:
    """Six unpaid orders and a newer cancelled one: all six get Pay and Cancel (not only
    the last five), the cancelled one is listed without them, and Menu comes last."""
    customer = Customer(duka, "2001")
    unpaid = [await customer.confirms_an_order("unga:1") for _ in range(6)]
    cancelled = await customer.confirms_an_order("sukari:1")
    await customer.presses(f"cancel:{cancelled.id}")

    [listing] = await customer.says("/orders")
    lines = listing.text.splitlines()
    assert lines[0] == "Your recent orders:"
    assert lines[1] == f"• {cancelled.reference} — KES 160 — cancelled"
    assert lines[2:] == [
        f"• {o.reference} — KES 210 — waiting for payment" for o in reversed(unpaid)
    ]
    assert buttons(listing) == [
        *(
            pair
            for o in reversed(unpaid)
            for pair in [
                (f"Pay {o.reference}", f"pay:{o.id}"),
                (f"Cancel {o.reference}", f"cancel:{o.id}"),
            ]
        ),
        ("Menu", "menu"),
    ]


async def test_orders_with_none_yet_offers_the_menu(duka: RunningDuka) -> None:
    assert await Customer(duka, "2001").says("/orders") == [
        Reply("You have no orders yet.", (MENU,))
    ]


async def test_pay_from_orders_resumes_an_old_order_at_its_phone_question(
    duka: RunningDuka,
) -> None:
    """Pay on an older unpaid order asks for its number, and the prompt pays that order."""
    customer = Customer(duka, "2001")
    old = await customer.confirms_an_order("unga:1")
    await customer.confirms_an_order("sukuma:2")
    [question] = await customer.presses(f"pay:{old.id}")
    assert question.text.startswith("Which M-Pesa number should pay KES 210?")
    [pushed] = await customer.pays_from("0712345678")
    assert pushed.text.startswith("Check your phone: M-Pesa will ask for your PIN to pay KES 210")
    [push] = duka.simulator.push_requests
    assert push["AccountReference"] == old.reference


# --- cancelling gives the items back ----------------------------------------------------------


async def test_cancel_order_after_a_failed_payment_puts_the_items_back_in_the_cart(
    duka: RunningDuka,
) -> None:
    customer = Customer(duka, "2001")
    order = await customer.confirms_an_order("sukuma:2", "unga:1")
    await customer.pays_from("0712 000 011")  # the simulator cancels this push
    await wait_for_payment_status(duka.engine, order.id, "failed")
    [answer] = await customer.presses(f"cancel:{order.id}")
    assert answer.text == f"Order {order.reference} is cancelled; its items are back in your cart."
    assert buttons(answer) == [("Cart (3)", "cart"), ("Menu", "menu")]
    assert await order_status(duka.engine, order.id) == "cancelled"
    [cart] = await customer.presses("cart")
    assert cart.text.endswith("Total: KES 270")


async def test_cancel_command_after_the_order_was_created_says_it_is_cancelled(
    duka: RunningDuka,
) -> None:
    customer = Customer(duka, "2001")
    order = await customer.confirms_an_order("sukuma:2", "unga:1")
    [stopped] = await customer.says("/cancel")
    assert stopped.text == f"Order {order.reference} is cancelled; its items are back in your cart."
    assert buttons(stopped) == [("Cart (3)", "cart"), ("Menu", "menu")]
    assert await order_status(duka.engine, order.id) == "cancelled"


async def test_pay_from_orders_while_its_prompt_is_open_says_so_at_once(
    duka: RunningDuka,
) -> None:
    """Pay on an order whose PIN prompt is open: "waiting for your PIN" straight away, no
    phone question, no second push; /cancel then has no order to drop and keeps it."""
    customer = Customer(duka, "2001")
    order = await customer.confirms_an_order()
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await customer.pays_from("0712345678")
    [waiting] = await customer.presses(f"pay:{order.id}")
    assert waiting.text == (
        f"A payment for order {order.reference} is already waiting for your PIN. Check your phone."
    )
    assert waiting.buttons == (MENU,)
    [stopped] = await customer.says("/cancel")
    assert stopped.text == "Stopped. Your cart is kept. Tap Menu to carry on."
    assert await order_status(duka.engine, order.id) == "awaiting_payment"
    assert len(duka.simulator.push_requests) == 1


# --- a second tap on Confirm order ------------------------------------------------------------


async def test_second_confirm_shows_the_orders_phone_question_not_an_empty_cart(
    duka: RunningDuka,
) -> None:
    customer = Customer(duka, "2001")
    await customer.confirms_an_order("sukuma:2", "unga:1")
    [again] = await customer.presses("confirm")
    assert again.text.startswith("Which M-Pesa number should pay KES 270?")
    assert await count_orders(duka) == 1


async def test_confirm_after_the_prompt_went_out_says_it_waits_for_the_pin(
    duka: RunningDuka,
) -> None:
    customer = Customer(duka, "2001")
    order = await customer.confirms_an_order()
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await customer.pays_from("0712345678")
    [again] = await customer.presses("confirm")
    assert again.text == (
        f"A payment for order {order.reference} is already waiting for your PIN. Check your phone."
    )
    assert again.buttons == (MENU,)
    assert await count_orders(duka) == 1


# --- the saved number ------------------------------------------------------------------------


async def test_saved_number_prompt_states_the_amount_with_the_typed_numbers_buttons(
    duka: RunningDuka,
) -> None:
    """A wrong PIN is no reason to stop offering the number: it comes back, with the
    amount, as "Pay KES 210 from 07XX XXX 003?" and the same buttons as a typed one."""
    customer = Customer(duka, "2001")
    order = await customer.confirms_an_order()
    await customer.pays_from("0712345003")  # the simulator answers: wrong PIN
    await wait_for_payment_status(duka.engine, order.id, "failed")
    await customer.adds("unga", 1)
    [question] = await customer.presses("confirm")
    assert question.text == "Pay KES 210 from 07XX XXX 003?"
    assert buttons(question) == [("Yes, pay", "phone:yes"), ("Use another number", "phone:other")]


async def test_a_number_mpesa_refused_is_not_offered_again(duka: RunningDuka) -> None:
    """M-Pesa refused the push for the number itself: the next order asks for a number."""
    customer = Customer(duka, "2001")
    await customer.confirms_an_order()
    refused = errors.bad_request("PhoneNumber")
    duka.simulator.force_next_outcome(
        rules.Outcome(refused.error_code, refused.error_message, sync_error=refused)
    )
    [answer] = await customer.pays_from("0712345678")
    reason = reason_text("en", FailureReason.INVALID_NUMBER)
    assert answer.text == say("en", "payment_refused", reason=reason)
    await customer.adds("unga", 1)
    [question] = await customer.presses("confirm")
    assert question.text.startswith("Which M-Pesa number should pay KES 210?")
    assert question.ask_contact == "Share my number"
