"""The merchant's commands, on every channel: /today, /pending, /order REF, the way out of
review: /review, /unmatched, /match RECEIPT REF, /resolve REF|RECEIPT DECISION [note], and
the shop's catalog: /stock [SKU N|off], /price SKU N, /hide SKU, /show SKU; and after
payment /ready, /out, /delivered, /collected REF, or /cancel REF reason (a refund, marked
done with /refunded REF [note]); /report [week|DAY|DAY..DAY], and
/export [week|DAY|DAY..DAY]: the same orders as a CSV file.

Only the chats listed in the configuration (``telegram:<chat id>``, ``whatsapp:<number>``,
``terminal:merchant``) get answers; anyone else is treated as a customer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta

from sqlalchemy import Connection, func, select, update

from bot import fulfilment, handover, reports
from bot.catalog import MAX_PRICE, MAX_STOCK
from bot.chat.model import Document, Reply
from bot.texts import item_lines, kes, say, status_text
from payments import refunds, review
from payments.credentials import NAIROBI
from payments.phone import mask_msisdn
from storage import stock
from storage.engine import Database
from storage.orders import customer_by_id, get_order_items, order_by_reference, order_handover
from storage.references import normalize_reference
from storage.schema import orders, payments, products

MAX_REVIEW_LINES = 25  # of about 100 characters: well inside one message on every channel


class MerchantDesk:
    def __init__(
        self,
        database: Database,
        merchants: set[str],
        clock: Callable[[], datetime],
        on_change: Callable[[], None] | None = None,
    ):
        self._db = database
        self._merchants = merchants  # "<channel>:<chat id>"
        self._clock = clock
        self._on_change = on_change  # e.g. wake the outbox dispatcher: a customer is told

    def is_merchant(self, who: str) -> bool:
        return who in self._merchants

    async def handle(self, who: str, text: str) -> Reply | None:
        """An answer for a merchant's command; None when this is not one (or not a merchant).
        ``who`` is ``<channel>:<chat id>`` (on WhatsApp the sender's phone number)."""
        words = text.strip().split()
        if not words or not self.is_merchant(who):
            return None
        command = words[0].lower().split("@")[0]
        if command == "/today":
            return Reply(await self._db.transaction(_today, self._clock()))
        if command == "/pending":
            return Reply(await self._db.transaction(_pending, self._clock()))
        if command == "/order":
            if len(words) < 2:
                return Reply(say("en", "m_order_usage"))
            reference = normalize_reference("".join(words[1:]))  # "dk 7kx3m9" works too
            return Reply(await self._db.transaction(_order, reference))
        if command in {"/review", "/unmatched"}:
            only_money = command == "/unmatched"
            return Reply(await self._db.transaction(_review, self._clock(), only_money))
        if command == "/match":
            return await self._decide(_match, who, words[1:])
        if command == "/resolve":
            return await self._decide(_resolve, who, words[1:])
        if command == "/cancel" and len(words) > 1:
            # A bare /cancel stays the customer's "stop": a merchant may shop in this chat.
            return await self._decide(_cancel, who, words[1:])
        if command == "/refunded":
            return await self._decide(_refunded, who, words[1:])
        if command == "/report":
            return Reply(await self._db.transaction(_report, words[1:], self._clock()))
        if command == "/export":
            return await self._export(words[1:])
        if command in _MOVES:
            return await self._move_on(command, words[1:])
        if command == "/stock":
            return Reply(await self._db.transaction(_stock, words[1:]))
        if command == "/price":
            return Reply(await self._db.transaction(_price, words[1:]))
        if command in {"/hide", "/show"}:
            return Reply(await self._db.transaction(_on_sale, words[1:], command == "/show"))
        return None

    async def _export(self, args: list[str]) -> Reply:
        """/export [period]: the orders /report counts, as a CSV file in the chat (the same
        file as ``duka export``), with the totals as its caption."""
        try:
            period = reports.period_from(args, self._clock().astimezone(NAIROBI).date())
        except reports.BadPeriod as exc:
            return Reply(say("en", "m_export_usage", why=str(exc)))
        sold = await self._db.transaction(reports.paid_orders, period)
        if not sold:
            return Reply(say("en", "m_report_none", period=period))
        name = reports.export_filename(period)
        total = kes(sum(order.total for order in sold))
        text = say("en", "m_export", period=period, count=len(sold), total=total, filename=name)
        # Built outside the transaction: a year of orders is a few MB of text to write.
        content = reports.report_csv(sold).encode("utf-8")
        return Reply(text, document=Document(name, content, "text/csv"))

    async def _move_on(self, command: str, args: list[str]) -> Reply:
        """/ready, /out, /delivered, /collected REF: the order moves on, the customer hears."""
        if not args:
            return Reply(say("en", "m_move_usage"))
        reference = normalize_reference("".join(args))
        to = _MOVES[command]
        try:
            reference = await self._db.transaction(fulfilment.advance, reference, to, self._clock())
        except fulfilment.NotMovedOn as exc:
            return Reply(say("en", "m_not_moved", why=str(exc)))
        if self._on_change is not None:
            self._on_change()
        return Reply(say("en", "m_moved", reference=reference, what=to.replace("_", " ")))

    async def _decide(self, decide: _Decision, who: str, args: list[str]) -> Reply:
        try:
            done = await self._db.transaction(decide, args, who, self._clock())
        except review.ReviewRefused as exc:
            return Reply(say("en", "m_refused", why=str(exc)))
        if self._on_change is not None:
            self._on_change()
        return Reply(say("en", "m_done", what=done))


_MOVES = {
    "/ready": fulfilment.Fulfilment.READY,
    "/out": fulfilment.Fulfilment.ON_ITS_WAY,
    "/delivered": fulfilment.Fulfilment.DELIVERED,
    "/collected": fulfilment.Fulfilment.COLLECTED,
}


def move_command(to: fulfilment.Fulfilment, reference: str) -> str:
    """The command that moves order ``reference`` on to ``to``. The buttons under the
    merchant's paid-order notification carry it as their data, so that a press is read
    exactly as the typed command is, and a forged press is no more than typing it."""
    command = next(command for command, step in _MOVES.items() if step is to)
    return f"{command} {reference}"


_Decision = Callable[[Connection, list[str], str, datetime], str]


def _match(conn: Connection, args: list[str], who: str, now: datetime) -> str:
    if len(args) < 2:
        raise review.ReviewRefused(say("en", "m_match_usage"))
    reference = normalize_reference("".join(args[1:]))
    return review.match(conn, args[0], reference, actor=who, now=now)


def _resolve(conn: Connection, args: list[str], who: str, now: datetime) -> str:
    if len(args) < 2:
        raise review.ReviewRefused(say("en", "m_resolve_usage"))
    subject, decision, note = args[0], args[1].lower(), " ".join(args[2:])
    if review.is_unmatched_receipt(conn, subject):
        # Either spelling: "refund"/"refunded", "keep"/"kept".
        word = {"refund": "refunded", "keep": "kept"}.get(decision, decision)
        if word not in set(review.UnmatchedDecision):
            raise review.ReviewRefused(say("en", "m_resolve_usage"))
        unmatched_decision = review.UnmatchedDecision(word)
        return review.resolve_unmatched(conn, subject, unmatched_decision, note, actor=who, now=now)
    if decision in {"refunded", "kept", "keep"}:  # words for money, not for an order
        raise review.ReviewRefused(f"no unmatched payment has receipt {subject.upper()}")
    word = {"cancelled": "cancel", "canceled": "cancel"}.get(decision, decision)
    if word not in set(review.OrderDecision):
        raise review.ReviewRefused(say("en", "m_resolve_usage"))
    reference = normalize_reference(subject)
    return review.resolve_order(
        conn, reference, review.OrderDecision(word), note, actor=who, now=now
    )


def _cancel(conn: Connection, args: list[str], who: str, now: datetime) -> str:
    """/cancel REF reason: a paid order is called off; the customer hears why."""
    if len(args) < 2:  # the customer is always told why
        raise review.ReviewRefused(say("en", "m_cancel_usage"))
    reference, reason = normalize_reference(args[0]), " ".join(args[1:])
    return refunds.cancel_paid_order(conn, reference, reason, actor=who, now=now)


def _refunded(conn: Connection, args: list[str], who: str, now: datetime) -> str:
    if not args:
        raise review.ReviewRefused(say("en", "m_refunded_usage"))
    reference, note = normalize_reference(args[0]), " ".join(args[1:])
    return refunds.mark_refunded(conn, reference, note, actor=who, now=now)


def _refund_lines(conn: Connection, now: datetime) -> list[str]:
    return [
        say(
            "en",
            "m_review_refund",
            reference=refund.reference,
            amount=kes(refund.received.amount),
            detail=refund.received.where(),
            when=_since(refund.cancelled_at, now),
            note=refund.reason,
        )
        for refund in refunds.pending_refunds(conn)
    ]


def _since(at: datetime | None, now: datetime) -> str:
    """``02 Dec 10:02 (3 days ago)``: how long a customer has waited for their money."""
    if at is None:
        return "-"
    days = (now - at).days
    ago = "" if days < 1 else f" ({days} day{'s' if days > 1 else ''} ago)"
    return f"{at.astimezone(NAIROBI):%d %b %H:%M}{ago}"


def _review(conn: Connection, now: datetime, only_money: bool) -> str:
    found = review.review_list(conn, now)
    lines = [
        say(
            "en",
            "m_review_unmatched",
            receipt=m.receipt,
            amount=kes(m.amount),
            phone=m.masked_phone,
            when=f"{m.received_at.astimezone(NAIROBI):%d %b %H:%M}",
            why=say("en", f"unmatched_{m.reason}", account=m.account),
        )
        for m in found.unmatched
    ]
    if not only_money:
        lines += [
            say(
                "en",
                "m_review_order",
                reference=reference,
                status=status_text("en", status),
                total=kes(total),
                detail=why,
            )
            for reference, status, total, why in found.orders
        ]
        lines += _refund_lines(conn, now)  # until the shop says the money went back
        for attempt in found.unconfirmed:
            line = say(
                "en",
                "m_review_check",
                reference=attempt.reference,
                amount=kes(attempt.amount),
                phone=review.masked(attempt),
                when=f"{attempt.created_at.astimezone(NAIROBI):%d %b %H:%M}",
            )
            if attempt.same_money:
                line += f" (same phone and amount as unmatched {', '.join(attempt.same_money)})"
            lines.append(line)
    if not lines:
        return say("en", "m_review_none")
    if len(lines) > MAX_REVIEW_LINES:
        # A chat message holds 4096 characters: the oldest come first, the rest are counted.
        hidden = len(lines) - MAX_REVIEW_LINES
        lines = [*lines[:MAX_REVIEW_LINES], say("en", "m_review_more", count=hidden)]
    return say("en", "m_review_list", lines="\n".join(lines))


def _report(conn: Connection, args: list[str], now: datetime) -> str:
    try:
        period = reports.period_from(args, now.astimezone(NAIROBI).date())
    except reports.BadPeriod as exc:
        return say("en", "m_report_usage", why=str(exc))
    sold = reports.paid_orders(conn, period)
    return reports.report_text(period, sold, reports.refund_summary(conn, period))


def _stock(conn: Connection, args: list[str]) -> str:
    """/stock: what is left of every counted product; /stock SKU N|off: set it."""
    if not args:
        lines = [
            say(
                "en",
                "m_stock_line",
                sku=line.sku,
                name=line.name,
                stock=line.stock,
                note=_stock_note(line),
            )
            for line in stock.stock_lines(conn)
        ]
        return say("en", "m_stock", lines="\n".join(lines)) if lines else say("en", "m_stock_none")
    if len(args) != 2:
        return say("en", "m_stock_usage")
    sku, value = args
    count = None if value.lower() == "off" else _whole(value)
    if count is None and value.lower() != "off":
        return say("en", "m_stock_usage")
    name = _product_name(conn, sku)
    if name is None or not stock.set_stock(conn, sku, count):
        return say("en", "m_stock_unknown", sku=sku)
    if count is None:
        return say("en", "m_stock_off", sku=sku, name=name)
    return say("en", "m_stock_set", sku=sku, name=name, stock=count)


def _price(conn: Connection, args: list[str]) -> str:
    """/price SKU N: the price of new orders; confirmed ones keep theirs (order lines)."""
    price = _whole(args[1]) if len(args) == 2 else None
    if price is None or not 1 <= price <= MAX_PRICE:
        return say("en", "m_price_usage")
    sku = args[0]
    name = _product_name(conn, sku)
    if name is None:
        return say("en", "m_no_product", sku=sku)
    conn.execute(update(products).where(products.c.sku == sku).values(price=price))
    return say("en", "m_price_set", sku=sku, name=name, price=kes(price))


def _on_sale(conn: Connection, args: list[str], shown: bool) -> str:
    """/hide SKU, /show SKU: take a product off the shop, or put it back."""
    if len(args) != 1:
        return say("en", "m_show_usage")
    sku = args[0]
    name = _product_name(conn, sku)
    if name is None:
        return say("en", "m_no_product", sku=sku)
    conn.execute(update(products).where(products.c.sku == sku).values(active=shown))
    return say("en", "m_shown" if shown else "m_hidden", sku=sku, name=name)


def _product_name(conn: Connection, sku: str) -> str | None:
    return conn.execute(select(products.c.name).where(products.c.sku == sku)).scalar_one_or_none()


def _stock_note(line: stock.StockLine) -> str:
    if line.stock < 0:
        return say("en", "m_stock_short")
    note = (
        say("en", "m_stock_low", low=line.low_stock)
        if line.low_stock is not None and line.stock <= line.low_stock
        else ""
    )
    return note + ("" if line.active else say("en", "m_stock_hidden"))


def _whole(text: str) -> int | None:
    """A whole number the merchant typed (a count, a price): ASCII digits, at most a million."""
    if not (text.isascii() and text.isdigit()) or len(text) > 7:
        return None
    value = int(text)
    return value if value <= MAX_STOCK else None


def _today(conn: Connection, now: datetime) -> str:
    local_midnight = datetime.combine(now.astimezone(NAIROBI).date(), time(), tzinfo=NAIROBI)
    count, total = conn.execute(
        select(func.count(orders.c.id), func.coalesce(func.sum(orders.c.total), 0))
        .where(orders.c.status == "paid")
        .where(orders.c.paid_at >= local_midnight)
        .where(orders.c.paid_at < local_midnight + timedelta(days=1))
    ).one()
    return say("en", "m_today", count=count, total=kes(int(total)))


def _pending(conn: Connection, now: datetime) -> str:
    rows = conn.execute(
        select(orders.c.reference, orders.c.total, orders.c.created_at)
        .where(orders.c.status == "awaiting_payment")
        .order_by(orders.c.id.desc())
        .limit(20)
    ).all()
    waiting = "\n".join(
        f"• {r.reference} {kes(r.total)} ({r.created_at.astimezone(NAIROBI):%d %b %H:%M})"
        for r in rows
    )
    text = say("en", "m_pending", lines=waiting) if rows else say("en", "m_pending_none")
    # Orders in review and unmatched money wait for the merchant too.
    to_review = _review(conn, now, only_money=False)
    return f"{text}\n\n{to_review}"


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
    text = say(
        "en",
        "m_order",
        reference=order.reference,
        status=status_text("en", order.status),
        total=kes(order.total),
        lines=items,
        customer=customer.name if customer else "-",
        attempts=attempt_lines,
    )
    where = handover.for_merchant(order_handover(conn, order.id))
    return f"{text}\n{where}" if where else text
