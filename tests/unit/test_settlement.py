"""Every way a result can meet a payment: the transitions and the messages they queue."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from payments.results import ResultSource, StkResult
from payments.settlement import EventStatus, PaymentSnapshot, expire, settle
from payments.states import (
    ORDER_TRANSITIONS,
    PAYMENT_TRANSITIONS,
    IllegalTransition,
    OrderStatus,
    PaymentStatus,
    check_order_transition,
    check_payment_transition,
)

PENDING = PaymentSnapshot(
    payment_id=7,
    order_id=3,
    customer_id=1,
    order_reference="DK-7KX3M9",
    order_status=OrderStatus.AWAITING_PAYMENT,
    order_total=1250,
    status=PaymentStatus.PENDING,
    amount=1250,
    msisdn="254712345678",
    checkout_request_id="ws_CO_1",
)
PAID_CALLBACK = StkResult(
    "ws_CO_1",
    "m-1",
    "0",
    "The service request is processed successfully.",
    ResultSource.CALLBACK,
    Decimal("1250.00"),
    "NLJ7RT61SV",
    None,
    "254712345678",
)
CANCELLED_CALLBACK = StkResult(
    "ws_CO_1", "m-1", "1032", "Request cancelled by user", ResultSource.CALLBACK
)
PAID_QUERY = StkResult("ws_CO_1", "m-1", "0", "ok", ResultSource.QUERY)
FAILED_QUERY = StkResult("ws_CO_1", "m-1", "1032", "cancelled", ResultSource.QUERY)


def kinds(settlement_messages: tuple[object, ...]) -> list[tuple[str, str]]:
    return sorted((str(m.audience), str(m.kind)) for m in settlement_messages)  # type: ignore[attr-defined]


def test_success_pays_the_payment_and_the_order_and_tells_both() -> None:
    s = settle(PENDING, PAID_CALLBACK)
    assert s.event_status is EventStatus.APPLIED
    assert (s.after.status, s.after.order_status) == (PaymentStatus.PAID, OrderStatus.PAID)
    assert (s.after.mpesa_receipt, s.after.paid_amount) == ("NLJ7RT61SV", 1250)
    assert kinds(s.messages) == [("customer", "payment_paid"), ("merchant", "order_paid")]
    assert s.messages[0].payload["receipt"] == "NLJ7RT61SV"
    assert s.messages[1].payload["masked_phone"] == "07XX XXX 678"


def test_failure_fails_the_payment_but_leaves_the_order_payable() -> None:
    s = settle(PENDING, CANCELLED_CALLBACK)
    assert s.after.status is PaymentStatus.FAILED
    assert s.after.order_status is OrderStatus.AWAITING_PAYMENT
    [message] = s.messages
    assert (message.kind, message.payload["reason"]) == ("payment_failed", "cancelled")


def test_duplicate_success_changes_nothing() -> None:
    paid = settle(PENDING, PAID_CALLBACK).after
    again = settle(paid, PAID_CALLBACK)
    assert again.event_status is EventStatus.DUPLICATE
    assert again.after is paid
    assert again.messages == ()


def test_duplicate_failure_changes_nothing() -> None:
    failed = settle(PENDING, CANCELLED_CALLBACK).after
    again = settle(failed, CANCELLED_CALLBACK)
    assert again.event_status is EventStatus.DUPLICATE
    assert again.messages == ()


def test_query_success_pays_without_receipt_and_a_late_callback_adds_it_silently() -> None:
    by_query = settle(PENDING, PAID_QUERY)
    assert by_query.after.status is PaymentStatus.PAID
    assert by_query.after.mpesa_receipt is None
    assert by_query.after.paid_amount == 1250
    assert len(by_query.messages) == 2
    late = settle(by_query.after, PAID_CALLBACK)
    assert late.event_status is EventStatus.APPLIED
    assert late.after.mpesa_receipt == "NLJ7RT61SV"
    assert late.messages == ()


def test_query_never_downgrades_a_paid_payment() -> None:
    paid = settle(PENDING, PAID_CALLBACK).after
    s = settle(paid, FAILED_QUERY)
    assert s.after is paid
    assert s.event_status is EventStatus.DUPLICATE


def test_query_does_not_override_a_failure_a_callback_reported() -> None:
    failed = settle(PENDING, CANCELLED_CALLBACK).after
    s = settle(failed, PAID_QUERY)
    assert s.event_status is EventStatus.IGNORED
    assert s.after is failed


def test_a_late_paid_callback_revives_an_expired_attempt() -> None:
    """The customer typed the PIN after we gave up: the money moved, so it is paid."""
    expired = expire(PENDING, confirmed=True).after
    s = settle(expired, PAID_CALLBACK)
    assert s.after.status is PaymentStatus.PAID
    assert s.after.order_status is OrderStatus.PAID


def test_a_late_paid_callback_after_a_failure_is_recorded_as_paid() -> None:
    failed = settle(PENDING, CANCELLED_CALLBACK).after
    assert settle(failed, PAID_CALLBACK).after.status is PaymentStatus.PAID


def test_expiry_tells_the_customer_there_was_no_answer() -> None:
    s = expire(PENDING, confirmed=True)
    assert s.after.status is PaymentStatus.EXPIRED
    [message] = s.messages
    assert message.payload["reason"] == "no_answer"


def test_expiry_without_mpesas_word_never_says_failed() -> None:
    """The push answer was lost (or every query failed): the money may have moved."""
    unknown = replace(PENDING, status=PaymentStatus.UNKNOWN, checkout_request_id=None)
    s = expire(unknown, confirmed=False)
    assert s.after.status is PaymentStatus.EXPIRED
    assert s.after.result_code == "unconfirmed"
    assert kinds(s.messages) == [
        ("customer", "payment_unconfirmed"),
        ("merchant", "payment_check"),
    ]
    assert "payment_failed" not in {m.kind for m in s.messages}


def test_a_failure_after_the_order_was_paid_another_way_tells_nobody() -> None:
    """Paid by Paybill while the STK prompt was still open; the prompt then times out."""
    paid_elsewhere = replace(PENDING, order_status=OrderStatus.PAID)
    s = settle(paid_elsewhere, CANCELLED_CALLBACK)
    assert s.after.status is PaymentStatus.FAILED
    assert s.after.order_status is OrderStatus.PAID
    assert s.messages == ()


@pytest.mark.parametrize("paid", [Decimal("1249"), Decimal("1251.00"), Decimal("1250.50")])
def test_wrong_amount_is_paid_money_but_the_order_needs_review(paid: Decimal) -> None:
    s = settle(PENDING, replace(PAID_CALLBACK, amount=paid))
    assert s.after.status is PaymentStatus.PAID
    assert s.after.order_status is OrderStatus.NEEDS_REVIEW
    assert kinds(s.messages) == [
        ("customer", "payment_under_review"),
        ("merchant", "payment_needs_review"),
    ]
    assert s.messages[1].payload["why"] == "amount_mismatch"


def test_second_payment_for_a_paid_order_is_flagged_not_lost() -> None:
    other_attempt = replace(PENDING, payment_id=8, order_status=OrderStatus.PAID)
    s = settle(other_attempt, PAID_CALLBACK)
    assert s.after.status is PaymentStatus.PAID
    assert s.after.order_status is OrderStatus.PAID
    assert s.messages[1].payload["why"] == "order_already_paid"


def test_money_for_a_cancelled_order_needs_review() -> None:
    s = settle(replace(PENDING, order_status=OrderStatus.CANCELLED), PAID_CALLBACK)
    assert s.after.order_status is OrderStatus.NEEDS_REVIEW
    assert s.messages[1].payload["why"] == "order_cancelled"


def test_messages_have_one_dedupe_key_per_fact() -> None:
    first = settle(PENDING, PAID_CALLBACK).messages
    assert [m.dedupe_key for m in first] == [
        "payment:7:payment_paid:customer",
        "payment:7:order_paid:merchant",
    ]


@pytest.mark.parametrize("current", list(PaymentStatus))
@pytest.mark.parametrize("target", list(PaymentStatus))
def test_payment_transition_table_is_enforced(
    current: PaymentStatus, target: PaymentStatus
) -> None:
    if target in PAYMENT_TRANSITIONS[current]:
        check_payment_transition(current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_payment_transition(current, target)


def test_paid_is_final_and_only_a_refund_takes_a_paid_order_back() -> None:
    assert PAYMENT_TRANSITIONS[PaymentStatus.PAID] == frozenset()
    assert ORDER_TRANSITIONS[OrderStatus.PAID] == {OrderStatus.REFUND_PENDING}
    assert ORDER_TRANSITIONS[OrderStatus.REFUND_PENDING] == {OrderStatus.REFUNDED}
    assert ORDER_TRANSITIONS[OrderStatus.REFUNDED] == frozenset()


def test_every_order_status_is_reachable_from_a_new_order() -> None:
    reached, frontier = {OrderStatus.AWAITING_PAYMENT}, [OrderStatus.AWAITING_PAYMENT]
    while frontier:
        for target in ORDER_TRANSITIONS[frontier.pop()] - reached:
            reached.add(target)
            frontier.append(target)
    assert reached == set(OrderStatus)


@pytest.mark.parametrize("status", [OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED])
def test_money_for_an_order_the_shop_called_off_is_extra_and_keeps_its_status(
    status: OrderStatus,
) -> None:
    """Late money for an order being refunded: the order stays as it is (no way back to
    paid), and the merchant is asked to look at it."""
    s = settle(replace(PENDING, order_status=status), PAID_CALLBACK)
    assert (s.after.status, s.after.order_status) == (PaymentStatus.PAID, status)
    assert s.messages[1].payload["why"] == "order_refunded"
    failed = settle(replace(PENDING, order_status=status), CANCELLED_CALLBACK)
    assert failed.messages == ()  # its money was paid: "failed" would only alarm


@pytest.mark.parametrize("current", list(OrderStatus))
@pytest.mark.parametrize("target", list(OrderStatus))
def test_order_transition_table_is_enforced(current: OrderStatus, target: OrderStatus) -> None:
    if target in ORDER_TRANSITIONS[current]:
        check_order_transition(current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_order_transition(current, target)


def test_callback_from_another_phone_needs_review() -> None:
    s = settle(PENDING, replace(PAID_CALLBACK, msisdn="254799999999"))
    assert s.after.status is PaymentStatus.PAID
    assert s.after.order_status is OrderStatus.NEEDS_REVIEW
    assert s.messages[1].payload["why"] == "phone_mismatch"


def test_late_receipt_with_a_different_amount_is_flagged_for_the_merchant() -> None:
    by_query = settle(PENDING, PAID_QUERY).after
    late = settle(by_query, replace(PAID_CALLBACK, amount=Decimal("1000.00")))
    assert late.after.paid_amount == 1000
    assert late.after.mpesa_receipt == "NLJ7RT61SV"
    [flag] = late.messages
    assert (flag.kind, flag.payload["why"]) == ("payment_needs_review", "amount_mismatch")


def test_query_answer_after_expiry_is_ignored() -> None:
    s = settle(expire(PENDING, confirmed=True).after, PAID_QUERY)
    assert s.event_status is EventStatus.IGNORED


UNVOUCHED_PAID_CALLBACK = replace(PAID_CALLBACK, needs_confirmation=True)


@pytest.mark.parametrize(
    "payment",
    [
        PENDING,
        expire(PENDING, confirmed=False).after,
        settle(PENDING, CANCELLED_CALLBACK).after,
    ],
    ids=["pending", "expired-unconfirmed", "failed"],
)
def test_a_success_needing_confirmation_changes_nothing_and_only_schedules_a_notice(
    payment: PaymentSnapshot,
) -> None:
    s = settle(payment, UNVOUCHED_PAID_CALLBACK)
    assert s.event_status is EventStatus.HELD
    assert s.after is payment  # nothing paid, no receipt, no order change
    [notice] = s.messages
    assert (notice.kind, notice.audience) == ("payment_checking", "customer")
    assert notice.delay.total_seconds() >= 5  # only if confirming takes a while


def test_a_claim_needing_confirmation_adds_nothing_to_a_paid_payment() -> None:
    paid_by_query = settle(PENDING, PAID_QUERY).after  # paid, no receipt yet
    s = settle(paid_by_query, UNVOUCHED_PAID_CALLBACK)
    assert (s.event_status, s.after, s.messages) == (EventStatus.DUPLICATE, paid_by_query, ())
    paid = settle(PENDING, PAID_CALLBACK).after
    other_receipt = replace(UNVOUCHED_PAID_CALLBACK, receipt="QQQ0000000")
    assert settle(paid, other_receipt).event_status is EventStatus.DUPLICATE
