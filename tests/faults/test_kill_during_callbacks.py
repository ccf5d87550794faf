"""Fault matrix: SIGKILL in the middle of a burst of Daraja callbacks.

Daraja sends each callback once; an HTTP 200 is our promise that it is kept. The real
``duka serve`` takes bursts of 2,000 callbacks on 50 keep-alive connections and is
killed (SIGKILL, no shutdown code) once 10%, 50% and 90% of them were acknowledged.
After each restart every acknowledged callback must be applied (payment and order paid,
one customer and one merchant message), and sending the whole burst again (as a
sender that never saw its answer would) must double nothing.
"""

from __future__ import annotations

from tests.faults.process import DukaProcess
from tests.faults.seeding import (
    PaymentState,
    callbacks_for,
    post_callbacks,
    read_payments,
    seed_pending_payments,
    use_fixed_callback_url,
)

BURST = 2000
KILL_AFTER = (0.10, 0.50, 0.90)  # of the burst acknowledged


def _settled_once(state: PaymentState) -> bool:
    """Paid, order paid, one customer and one merchant message, its callback applied."""
    return (
        state.status == "paid"
        and state.order_status == "paid"
        and state.outbox == ("customer", "merchant")
        # Its callback applied once; any later copies recorded as duplicates.
        and [e for e in state.events if e != "callback:duplicate"] == ["callback:applied"]
    )


def _untouched(state: PaymentState) -> bool:
    return (
        state.status == "pending"
        and state.order_status == "awaiting_payment"
        and state.outbox == ()
        and state.events == ()
    )


async def test_no_acknowledged_callback_is_lost_or_doubled_by_a_sigkill_mid_burst(
    duka_process: DukaProcess,
) -> None:
    """Three SIGKILLs mid-burst: every 200 is applied after restart; a full resend doubles
    nothing and settles the rest."""
    url = use_fixed_callback_url(duka_process)
    await seed_pending_payments(duka_process.database, BURST * len(KILL_AFTER))
    await duka_process.start()
    kills = acknowledged_total = lost_total = doubled_total = 0
    for round_number, fraction in enumerate(KILL_AFTER):
        group = range(round_number * BURST + 1, (round_number + 1) * BURST + 1)
        callbacks = callbacks_for(url, group)
        burst = await post_callbacks(
            duka_process.url, callbacks, stop_after=int(BURST * fraction), on_stop=duka_process.kill
        )
        assert duka_process.process is not None
        assert duka_process.process.poll() is not None, "not killed"
        kills += 1
        assert not burst.answered, f"answers other than 200: {burst.answered}"
        assert len(burst.acknowledged) >= BURST * fraction

        await duka_process.start()
        after_kill = read_payments(duka_process.database)
        lost = [i for i in burst.acknowledged if not _settled_once(after_kill[i])]
        # Not acknowledged: stored and applied whole, or not at all (one transaction).
        torn = [i for i in group if not (_settled_once(after_kill[i]) or _untouched(after_kill[i]))]
        assert not lost, f"acknowledged but not applied: {[after_kill[i] for i in lost[:3]]}"
        assert not torn, f"half-applied: {[after_kill[i] for i in torn[:3]]}"

        resend = await post_callbacks(duka_process.url, callbacks)
        assert resend.acknowledged == set(group), (resend.answered, len(resend.unanswered))
        after_resend = read_payments(duka_process.database)
        already_paid = [i for i in group if after_kill[i].status == "paid"]
        changed = [i for i in already_paid if after_resend[i] != _with_duplicate(after_kill[i])]
        not_settled = [i for i in group if not _settled_once(after_resend[i])]
        assert not changed, f"changed by a resend: {[after_resend[i] for i in changed[:3]]}"
        assert not not_settled, f"not settled once: {[after_resend[i] for i in not_settled[:3]]}"
        acknowledged_total += len(burst.acknowledged)
        lost_total += len(lost)
        doubled_total += len(changed)
        print(
            f"kill {kills} after {fraction:.0%}: {len(burst.acknowledged)} acknowledged, "
            f"{len(already_paid)} applied before the kill, {len(burst.unanswered)} cut off; "
            f"resend: {len(already_paid)} duplicates, {BURST - len(already_paid)} applied"
        )
    print(
        f"{kills} kills, {acknowledged_total} acknowledged callbacks, "
        f"{lost_total} lost, {doubled_total} doubled"
    )


def _with_duplicate(state: PaymentState) -> PaymentState:
    """What a resent callback may change about a paid payment: one more event, a duplicate."""
    return PaymentState(
        state.status,
        state.order_status,
        state.updated_at,
        state.order_updated_at,
        state.receipt,
        state.settled_by,
        state.outbox,
        tuple(sorted((*state.events, "callback:duplicate"))),
    )
