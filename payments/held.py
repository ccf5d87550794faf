"""Success callbacks held until Daraja confirms them (``DUKA_CONFIRM_PAID``).

Daraja signs nothing. A success callback from a sender we cannot vouch for (an address not
on the list, or any sender with ``always``) is stored as ``held``: it pays nothing and
tells nobody (``settlement.settle``). The reconciler then asks M-Pesa with an STK query,
whose answer comes over our own HTTPS request to Daraja, and calls one of these:

- ``confirm_held``: the query says the attempt was paid; the held callback is applied
  as if it had come from a listed address (the query carries no receipt, the callback
  does), exactly once;
- ``refute_held``: the query says failed (or "still being processed" when the prompt's
  life is over); the held callbacks are marked ``forged`` and the merchant is told that
  a callback claimed a payment Daraja does not confirm.

Either way the customer's delayed "checking your payment" message is withdrawn if it has
not gone out yet.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, select

from payments import ledger
from payments.outbox import insert_outbox, withdraw
from payments.results import MalformedCallback
from payments.settlement import (
    EventStatus,
    Settlement,
    checking_notice_key,
    not_confirmed_alert,
)
from payments.states import PaymentStatus
from storage.schema import payment_events

log = logging.getLogger(__name__)


def _held_claims(conn: Connection, payment_id: int) -> list[tuple[int, str, int | None]]:
    """(event id, raw body, attempt id) of this payment's held callbacks, oldest first."""
    query = (
        select(payment_events.c.id, payment_events.c.raw, payment_events.c.attempt_id)
        .where(payment_events.c.payment_id == payment_id)
        .where(payment_events.c.status == str(EventStatus.HELD))
        .order_by(payment_events.c.id)
    )
    return [(row.id, row.raw, row.attempt_id) for row in conn.execute(query)]


def confirm_held(
    conn: Connection, payment_id: int, now: datetime
) -> tuple[int, Settlement | None] | None:
    """Apply the oldest held callback of a payment Daraja just said was paid: (its event id,
    what it did). None when nothing is held. Any other held callback (a repeat, or a rival
    claim with another receipt) is set aside: one M-Pesa payment, one receipt."""
    claims = _held_claims(conn, payment_id)
    if not claims:
        return None
    withdraw(conn, checking_notice_key(payment_id))
    snapshot = ledger.snapshot_by_id(conn, payment_id)
    first, *others = claims
    if snapshot is None or snapshot.status is PaymentStatus.PAID:
        # Paid meanwhile on a callback we could vouch for: nothing left to confirm.
        others = claims
        confirmed: tuple[int, Settlement | None] | None = (first[0], None)
    else:
        event_id, raw, attempt_id = first
        try:
            result = ledger.stored_result(raw, attempt_id, needs_confirmation=False)
        except MalformedCallback:  # it parsed when it was held; only a damaged row fails
            log.exception("held callback %d cannot be read again", event_id)
            return None
        [settlement] = ledger.apply_results(conn, [(event_id, result)], now, raw)
        confirmed = (event_id, settlement)
    note = "not applied: another callback for this payment was applied"
    ledger.mark_events(conn, [(eid, EventStatus.DUPLICATE, note, payment_id) for eid, *_ in others])
    return confirmed


def refute_held(conn: Connection, payment_id: int, answer: str, now: datetime) -> int:
    """Daraja's answer (``answer``) says this payment was not paid: its held callbacks are
    forged, and the merchant is told. Returns how many there were."""
    claims = _held_claims(conn, payment_id)
    if not claims:
        return 0
    withdraw(conn, checking_notice_key(payment_id))
    note = f"Daraja does not confirm it: {answer}"
    ledger.mark_events(
        conn, [(event_id, EventStatus.FORGED, note, payment_id) for event_id, *_ in claims]
    )
    snapshot = ledger.snapshot_by_id(conn, payment_id)
    if snapshot is not None:
        insert_outbox(conn, [not_confirmed_alert(snapshot, answer)], now)
    log.warning(
        "payment %d: %d callback(s) claimed payment that Daraja does not confirm (%s)",
        payment_id,
        len(claims),
        answer,
    )
    return len(claims)
