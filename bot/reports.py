"""What the shop sold: the merchant's /report and the CSV of ``duka export``.

Periods are Nairobi calendar days (the shop's), inclusive of both ends; an order counts
on the day it was paid. Only orders that are paid now count: one refunded by the
merchant (cancelled) does not. A paid order the shop called off (/cancel) is money going
back, so /report shows it on a line of its own rather than in the takings, with the
refunds still to send.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Connection, func, select

from bot.fulfilment import current
from bot.texts import kes, say, status_text
from payments.credentials import NAIROBI
from payments.states import OrderStatus, PaymentStatus
from storage.schema import customers, order_items, orders, payments

MAX_DAYS = 366
_RANGE = re.compile(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})")
CSV_COLUMNS = (
    "order",
    "paid_at",
    "customer",
    "items",
    "total_kes",
    "mpesa_receipts",
    "fulfilment",
)


class BadPeriod(ValueError):
    """The period cannot be read; the message says how to write one."""


@dataclass(frozen=True, slots=True)
class Period:
    first: date
    last: date  # inclusive

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), tzinfo=NAIROBI)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), tzinfo=NAIROBI)

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first} to {self.last}"


@dataclass(frozen=True, slots=True)
class PaidOrder:
    reference: str
    paid_at: datetime
    customer: str
    items: tuple[tuple[str, int, int], ...]  # (name, quantity, line total)
    total: int
    receipts: tuple[str, ...]
    fulfilment: str


@dataclass(frozen=True, slots=True)
class RefundSummary:
    called_off: int = 0  # orders paid in the period, since called off by the shop
    called_off_total: int = 0
    pending: int = 0  # refunds not sent yet, whenever their orders were paid
    pending_total: int = 0


def period_from(words: list[str], today: date) -> Period:
    """ "" (today), "week" (the last 7 days), "YYYY-MM-DD" or "YYYY-MM-DD..YYYY-MM-DD"."""
    text = " ".join(words).strip().lower()
    if text in {"", "today"}:
        return Period(today, today)
    if text == "week":
        return Period(today - timedelta(days=6), today)
    found = _RANGE.fullmatch(text)
    try:
        first, last = (
            (date.fromisoformat(found[1]), date.fromisoformat(found[2]))
            if found
            else (date.fromisoformat(text), date.fromisoformat(text))
        )
    except ValueError as exc:
        raise BadPeriod("write today, week, 2026-12-01 or 2026-12-01..2026-12-07") from exc
    if last < first or (last - first).days >= MAX_DAYS:
        raise BadPeriod(f"the first day comes first, and a period is at most {MAX_DAYS} days")
    return Period(first, last)


def paid_orders(conn: Connection, period: Period) -> list[PaidOrder]:
    rows = conn.execute(
        select(
            orders.c.id,
            orders.c.reference,
            orders.c.paid_at,
            orders.c.total,
            orders.c.fulfilment,
            customers.c.name,
        )
        .join(customers, customers.c.id == orders.c.customer_id)
        .where(orders.c.status == OrderStatus.PAID)
        .where(orders.c.paid_at >= period.start, orders.c.paid_at < period.end)
        .order_by(orders.c.paid_at, orders.c.id)
    ).all()
    receipts: dict[int, list[str]] = {}
    items: dict[int, list[tuple[str, int, int]]] = {}
    if rows:
        # One query for every order's lines, not one per order.
        for item in conn.execute(
            select(
                order_items.c.order_id,
                order_items.c.name,
                order_items.c.unit_price,
                order_items.c.quantity,
            )
            .where(order_items.c.order_id.in_([r.id for r in rows]))
            .order_by(order_items.c.id)
        ):
            line = (item.name, item.quantity, item.unit_price * item.quantity)
            items.setdefault(item.order_id, []).append(line)
        for payment in conn.execute(
            select(payments.c.order_id, payments.c.mpesa_receipt)
            .where(payments.c.order_id.in_([r.id for r in rows]))
            .where(payments.c.status == PaymentStatus.PAID)
            .order_by(payments.c.id)
        ):
            if payment.mpesa_receipt:
                receipts.setdefault(payment.order_id, []).append(payment.mpesa_receipt)
    return [
        PaidOrder(
            reference=r.reference,
            paid_at=r.paid_at,
            customer=r.name or "-",
            items=tuple(items.get(r.id, ())),
            total=r.total,
            receipts=tuple(receipts.get(r.id, ())),
            fulfilment=str(current(r.fulfilment)),
        )
        for r in rows
    ]


def refund_summary(conn: Connection, period: Period) -> RefundSummary:
    """Paid orders the shop called off: those paid in ``period``, and every refund still to
    send. Amounts are the order totals, as the takings are."""
    called_off = (OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED)
    count_and_total = (func.count(orders.c.id), func.coalesce(func.sum(orders.c.total), 0))
    in_period = conn.execute(
        select(*count_and_total)
        .where(orders.c.status.in_([str(s) for s in called_off]))
        .where(orders.c.paid_at >= period.start, orders.c.paid_at < period.end)
    ).one()
    pending = conn.execute(
        select(*count_and_total).where(orders.c.status == str(OrderStatus.REFUND_PENDING))
    ).one()
    return RefundSummary(in_period[0], int(in_period[1]), pending[0], int(pending[1]))


def report_text(period: Period, sold: list[PaidOrder], refunds: RefundSummary | None = None) -> str:
    """The merchant's summary: orders, money, what sold, how far the orders got; then the
    orders called off with a refund, apart from the takings."""
    text = _sold_text(period, sold)
    if refunds is not None and refunds.called_off:
        total = kes(refunds.called_off_total)
        text += "\n" + say("en", "m_report_called_off", count=refunds.called_off, total=total)
    if refunds is not None and refunds.pending:
        total = kes(refunds.pending_total)
        text += "\n" + say("en", "m_report_refunds", count=refunds.pending, total=total)
    return text


def _sold_text(period: Period, sold: list[PaidOrder]) -> str:
    if not sold:
        return say("en", "m_report_none", period=period)
    by_product: Counter[str] = Counter()
    takings: Counter[str] = Counter()
    for order in sold:
        for name, quantity, line_total in order.items:
            by_product[name] += quantity
            takings[name] += line_total
    products = "\n".join(
        say("en", "m_report_product", name=name, quantity=quantity, total=kes(takings[name]))
        for name, quantity in sorted(by_product.items(), key=lambda kv: (-takings[kv[0]], kv[0]))
    )
    steps = Counter(order.fulfilment for order in sold)
    progress = ", ".join(
        f"{count} {status_text('en', step) if step != 'new' else 'not moved on yet'}"
        for step, count in sorted(steps.items())
    )
    return say(
        "en",
        "m_report",
        period=period,
        count=len(sold),
        total=kes(sum(order.total for order in sold)),
        products=products,
        progress=progress,
    )


def export_filename(period: Period) -> str:
    """The CSV's name in the merchant's chat: the period in it, so that saved files sort."""
    days = str(period.first) if period.first == period.last else f"{period.first}_{period.last}"
    return f"duka-paid-{days}.csv"


def report_csv(sold: list[PaidOrder]) -> str:
    """One row per paid order; amounts in whole shillings, times in Nairobi time."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for order in sold:
        writer.writerow(
            [
                order.reference,
                order.paid_at.astimezone(NAIROBI).strftime("%Y-%m-%d %H:%M"),
                _cell(order.customer),
                _cell("; ".join(f"{quantity} × {name}" for name, quantity, _ in order.items)),
                order.total,
                " ".join(order.receipts),
                order.fulfilment,
            ]
        )
    return out.getvalue()


def _cell(text: str) -> str:
    """Text a customer chose (their name) opened in a spreadsheet must stay text: a
    leading = + - @ would make it a formula."""
    return f"'{text}" if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text
