"""Limits on PIN prompts: a typed number is confirmed by the person typing it, not by the
phone's owner, so without limits anyone could make a stranger's phone show prompt after
prompt. Checked inside the transaction that writes the attempt, before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Connection, select

from payments.states import PaymentStatus
from storage.schema import orders, payments

RULE_LIMITED_CODE = "17"  # Daraja: same phone and amount again within 2 minutes
RULE_LIMITED_WAIT = timedelta(minutes=2)
SHORT_WINDOW = timedelta(minutes=10)
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class PromptLimits:
    per_phone_short: int = 3  # prompts to one phone number per 10 minutes
    per_phone_day: int = 10  # and per day
    per_customer_short: int = 5  # prompts one customer (chat) may ask for per 10 minutes


class LimitKind(StrEnum):
    PHONE = "phone"
    CUSTOMER = "customer"
    RULE_LIMITED = "rule_limited"


@dataclass(frozen=True, slots=True)
class LimitHit:
    kind: LimitKind
    wait: timedelta  # until a prompt is allowed again


def prompt_limit_hit(
    conn: Connection,
    limits: PromptLimits,
    *,
    msisdn: str,
    customer_id: int,
    amount: int,
    now: datetime,
) -> LimitHit | None:
    """The first limit a new prompt to ``msisdn`` would break, or None."""
    # Every attempt counts, except pushes Daraja refused outright (no prompt was shown).
    prompted = ~(
        (payments.c.status == str(PaymentStatus.FAILED)) & (payments.c.settled_by == "push")
    )
    to_phone = select(payments.c.created_at).where(payments.c.msisdn == msisdn, prompted)
    rule_limited = conn.execute(
        select(payments.c.created_at)
        .where(payments.c.msisdn == msisdn, payments.c.amount == amount)
        .where(payments.c.result_code == RULE_LIMITED_CODE)
        .where(payments.c.created_at > now - RULE_LIMITED_WAIT)
        .order_by(payments.c.created_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    if rule_limited is not None:
        return LimitHit(LimitKind.RULE_LIMITED, rule_limited + RULE_LIMITED_WAIT - now)
    by_customer = (
        select(payments.c.created_at)
        .join(orders, orders.c.id == payments.c.order_id)
        .where(orders.c.customer_id == customer_id, prompted)
    )
    for query, window, allowed, kind in (
        (to_phone, SHORT_WINDOW, limits.per_phone_short, LimitKind.PHONE),
        (to_phone, DAY, limits.per_phone_day, LimitKind.PHONE),
        (by_customer, SHORT_WINDOW, limits.per_customer_short, LimitKind.CUSTOMER),
    ):
        times = (
            conn.execute(
                query.where(payments.c.created_at > now - window)
                .order_by(payments.c.created_at.desc())
                .limit(allowed)
            )
            .scalars()
            .all()
        )
        if len(times) >= allowed:
            # Allowed again when the oldest of the last ``allowed`` leaves the window.
            return LimitHit(kind, times[-1] + window - now)
    return None
