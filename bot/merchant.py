"""The merchant's commands in Telegram: /today, /pending, /order REF.

Only chats listed in the configuration get answers; anyone else is treated as a customer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta

from sqlalchemy import Connection, func, select

from bot.chat.model import Reply
from bot.texts import item_lines, kes, say, status_text
from payments.credentials import NAIROBI
from payments.phone import mask_msisdn
from storage.engine import Database
from storage.orders import customer_by_id, get_order_items, order_by_reference
from storage.references import normalize_reference
from storage.schema import orders, payments


class MerchantDesk:
    def __init__(
        self, database: Database, merchant_chat_ids: set[str], clock: Callable[[], datetime]
    ):
        self._db = database
        self._merchants = merchant_chat_ids
        self._clock = clock

    def is_merchant(self, chat_id: str) -> bool:
        return chat_id in self._merchants

    async def handle(self, chat_id: str, text: str) -> Reply | None:
        """An answer for a merchant's command; None when this is not one (or not a merchant)."""
        words = text.strip().split()
        if not words or not self.is_merchant(chat_id):
            return None
        command = words[0].lower().split("@")[0]
        if command == "/today":
            return Reply(await self._db.transaction(_today, self._clock()))
        if command == "/pending":
            return Reply(await self._db.transaction(_pending))
        if command == "/order":
            if len(words) < 2:
                return Reply(say("en", "m_order_usage"))
            reference = normalize_reference("".join(words[1:]))  # "dk 7kx3m9" works too
            return Reply(await self._db.transaction(_order, reference))
        return None


def _today(conn: Connection, now: datetime) -> str:
    local_midnight = datetime.combine(now.astimezone(NAIROBI).date(), time(), tzinfo=NAIROBI)
    count, total = conn.execute(
        select(func.count(orders.c.id), func.coalesce(func.sum(orders.c.total), 0))
        .where(orders.c.status == "paid")
        .where(orders.c.paid_at >= local_midnight)
        .where(orders.c.paid_at < local_midnight + timedelta(days=1))
    ).one()
    return say("en", "m_today", count=count, total=kes(int(total)))


def _pending(conn: Connection) -> str:
    rows = conn.execute(
        select(orders.c.reference, orders.c.total, orders.c.created_at)
        .where(orders.c.status == "awaiting_payment")
        .order_by(orders.c.id.desc())
        .limit(20)
    ).all()
    if not rows:
        return say("en", "m_pending_none")
    lines = "\n".join(
        f"• {r.reference} {kes(r.total)} ({r.created_at.astimezone(NAIROBI):%d %b %H:%M})"
        for r in rows
    )
    return say("en", "m_pending", lines=lines)


def _order(conn: Connection, reference: str) -> str:
    order = order_by_reference(conn, reference)
    if order is None:
        return say("en", "m_no_order", reference=reference)
    customer = customer_by_id(conn, order.customer_id)
    items = item_lines(get_order_items(conn, order.id))
    attempts = conn.execute(
        select(payments).where(payments.c.order_id == order.id).order_by(payments.c.id)
    ).all()
    attempt_lines = (
        "\n".join(
            say(
                "en",
                "m_attempt",
                when=f"{a.created_at.astimezone(NAIROBI):%d %b %H:%M}",
                phone=mask_msisdn(a.msisdn),
                status=a.status,
                detail=" ".join(x for x in (a.mpesa_receipt, a.result_code, a.result_desc) if x),
            )
            for a in attempts
        )
        or "-"
    )
    return say(
        "en",
        "m_order",
        reference=order.reference,
        status=status_text("en", order.status),
        total=kes(order.total),
        lines=items,
        customer=customer.name if customer else "-",
        attempts=attempt_lines,
    )
