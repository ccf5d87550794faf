"""The outbox dispatcher: delivers the messages the payments core queued.

Rows are written in the same transaction as the payment change that caused them; this
task sends them to the customer's chat and to every merchant, marks a row sent only
after the platform accepted it, backs off while a platform fails, and stops for good
when a customer has blocked the bot. A merchant row is first copied once per merchant
chat, so one merchant's failure never delays or repeats another's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    Connection,
    case,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from bot.channels.base import (
    Channel,
    DeliveryError,
    Notice,
    RecipientGone,
    RetryLater,
    Undeliverable,
)
from bot.channels.whatsapp_api import MAX_BUTTONS
from bot.chat.model import Reply, payment_tag
from bot.outbox_claims import (
    CLAIM_LEASE,
    CLAIM_RENEW_SECONDS,
    UNCLAIMED,
    held_elsewhere,
    one_process_at_a_time,
    release_claims,
    renew_claims,
)
from bot.rendering import (
    MERCHANT_RENDERERS,
    ORDERLESS_KINDS,
    CustomerFacts,
    MerchantFacts,
    render_customer,
)
from bot.texts import item_lines
from payments.metrics import Metrics
from payments.outbox import OutboxStatus
from payments.settlement import PAYMENT_RESULTS, Audience, MessageKind
from payments.states import OrderStatus
from storage.engine import Database
from storage.orders import (
    customer_by_chat,
    customer_by_id,
    get_order,
    get_order_items,
    order_handover,
    remember_message,
    remembered_message,
    update_customer,
)
from storage.schema import orders, outbox

log = logging.getLogger(__name__)
MAX_BACKOFF = timedelta(minutes=5)
# At a stop, the pass under way may finish this long: SIGTERM must end within 5 s (a send
# held by a long retry_after is cancelled; its row stays pending and goes out later).
STOP_GRACE_SECONDS = 3.0
PROMPT_GRACE = timedelta(seconds=10)  # how long a result waits for its prompt's message id
UNPROMPTED = frozenset({"c2b", "match"})  # payments made by hand: no prompt to wait for
BATCH = 200  # rows read per delivery pass
CHATS_AT_ONCE = 32  # chats being sent to at the same time (each chat's rows in order)
# A pass ends when its slowest chat is done: a chat Telegram holds to a message a second
# (the merchant's, one notice per paid order in a rush) must not keep the next pass's
# payment results waiting behind its whole backlog.
ROWS_PER_CHAT_PER_PASS = 2
GIVE_UP_AFTER_ATTEMPTS = 60  # about four hours of failures at the longest back-off
# How many buttons a merchant's chat shows under one message: an inline keyboard holds 100,
# WhatsApp three reply buttons; other chats (the terminal demo) none a merchant can press.
MERCHANT_BUTTON_ROOM = {"telegram": 100, "whatsapp": MAX_BUTTONS}


@dataclass(frozen=True, slots=True)
class _Due:
    id: int
    kind: MessageKind
    audience: Audience
    customer_id: int | None
    order_id: int | None
    recipient: str | None
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Delivery:
    """A rendered message and where it goes."""

    channel: str
    chat_id: str
    notice: Notice
    replace: str | None  # the message to edit in place ("check your phone"), if any
    blocked_customer: int | None = None


class OutboxDispatcher:
    def __init__(
        self,
        database: Database,
        channels: Mapping[str, Channel],
        merchant_recipients: Sequence[str],
        clock: Callable[[], datetime],
        poll_seconds: float = 1.0,
        paybill: str | None = None,
        metrics: Metrics | None = None,
        claimant: str | None = None,
    ) -> None:
        self._db = database
        # PostgreSQL, several processes: rows are claimed by this id before they are sent
        # (see ``_due``). None: this process is the only sender (SQLite, the tests).
        self._claimant = None if database.is_sqlite else claimant
        self._metrics = metrics or Metrics()
        self._paybill = paybill  # offered after a failed push, when the fallback is on
        # Messages a platform refused for good, by (channel, kind): loud, and counted.
        self.undeliverable: Counter[tuple[str, str]] = Counter()
        self._channels = channels
        self._merchants = list(merchant_recipients)  # "telegram:123", "terminal:merchant"
        self._clock = clock
        self._poll = poll_seconds
        self._wake = asyncio.Event()
        # One pass at a time: two passes would both see a row as pending and send it twice.
        # (Other processes are kept off this process's rows by their claims.)
        self._pass = asyncio.Lock()
        self._stopping = False

    def wake(self) -> None:
        """New messages may be waiting (called after a payment change commits)."""
        self._wake.set()

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Let the pass under way finish (a message half-sent would be sent again), then end."""
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_SECONDS)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_forever(self) -> None:
        claimant, renewing = self._claimant, None
        if claimant is not None:
            renewing = asyncio.create_task(self._renew_claims(claimant), name="outbox-claims")
        try:
            while not self._stopping:
                try:
                    await self.deliver_due()
                except SQLAlchemyError as exc:
                    # The database is away (/readyz says so): a line, not a traceback a second.
                    log.warning(
                        "outbox pass: database error (%s); trying again", type(exc).__name__
                    )
                except Exception:
                    log.exception("outbox delivery pass failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                self._wake.clear()
        finally:
            if claimant is not None and renewing is not None:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
                # Whatever this process claimed and did not send, others may send now.
                with contextlib.suppress(Exception):
                    await self._db.transaction(release_claims, [claimant])

    async def _renew_claims(self, claimant: str) -> None:
        """Keep this process's claims alive while its sends wait (a rate limit, a slow
        network): a lapsed claim would let another process send the same row again."""
        while True:
            await asyncio.sleep(CLAIM_RENEW_SECONDS)
            try:
                await self._db.transaction(renew_claims, claimant, self._clock())
            except Exception:
                log.exception("could not renew this process's outbox claims")

    async def deliver_due(self) -> int:
        """Send what is due now; the number of messages the platforms accepted."""
        async with self._pass:
            return await self._deliver_pass()

    async def _deliver_pass(self) -> int:
        """Due messages, many chats at once (a platform's round trip, not its rate, would
        otherwise set the pace), each chat's in order."""
        now = self._clock()
        await self._db.transaction(_fan_out_to_merchants, self._merchants, now)
        due = await self._db.transaction(_due, now, BATCH, self._claimant)
        chats: dict[tuple[str, object], list[_Due]] = {}
        for row in due:  # at most ROWS_PER_CHAT_PER_PASS of each chat (``_due``)
            chats.setdefault(_chat_of(row), []).append(row)
        room = asyncio.Semaphore(CHATS_AT_ONCE)

        async def one_chat(rows: list[_Due]) -> int:
            sent = 0
            async with room:
                for row in rows:
                    if self._stopping:
                        break
                    sent += await self._deliver_or_set_aside(row)
            return sent

        # Every chat's task ends before the pass does (none raises: see _deliver_or_set_aside),
        # so the next pass cannot meet a row this one is still sending.
        done = await asyncio.gather(*(one_chat(rows) for rows in chats.values()))
        return sum(done)

    async def _deliver_or_set_aside(self, row: _Due) -> bool:
        try:
            return await self._deliver(row)
        except SQLAlchemyError as exc:
            # The database, not the row: it stays pending (and this process's) for the next
            # pass. Setting it aside would lose a message that was never sent.
            log.warning("outbox %d: database error (%s); trying again", row.id, type(exc).__name__)
            return False
        except Exception as exc:
            # One bad row (a bug, odd data) must not hold up every message behind it.
            log.exception("outbox %d cannot be delivered; setting it aside", row.id)
            try:
                error = f"{type(exc).__name__}: {exc}"
                await self._db.transaction(_fail, row.id, error, self._clock())
            except SQLAlchemyError:
                log.warning("outbox %d: could not be set aside; trying again later", row.id)
                return False
            self._metrics.failed(_channel_of(row), "error")
            return False

    async def _deliver(self, row: _Due) -> bool:
        delivery = await self._db.transaction(_render, row, self._clock(), self._paybill)
        if delivery is _NOT_YET:
            # The "check your phone" message is being sent right now; edit it, a moment later.
            await self._db.transaction(_retry, row, 1.0, "waiting for the prompt", self._clock())
            return False
        if delivery is None:
            await self._db.transaction(_fail, row.id, "no recipient", self._clock())
            self._metrics.failed(_channel_of(row), "no_recipient")
            return False
        if delivery.blocked_customer is not None:
            await self._db.transaction(_fail, row.id, "the customer blocked the bot", self._clock())
            self._metrics.failed(delivery.channel, "blocked")
            return False
        channel = self._channels.get(delivery.channel)
        if channel is None:
            await self._db.transaction(
                _fail, row.id, f"channel {delivery.channel} is off", self._clock()
            )
            self._metrics.failed(delivery.channel, "channel_off")
            return False
        try:
            message_id = await channel.notify(
                delivery.chat_id, delivery.notice, replace=delivery.replace
            )
        except RecipientGone as exc:
            log.warning("message failed: %s; recipient gone (%s), not retrying", _about(row), exc)
            await self._db.transaction(_gone, row, str(exc), self._clock())
            self._metrics.failed(delivery.channel, "recipient_gone")
            return False
        except Undeliverable as exc:
            self.undeliverable[(delivery.channel, row.kind)] += 1
            log.error("message failed: %s; can never be delivered: %s", _about(row), exc)
            await self._db.transaction(_fail, row.id, str(exc), self._clock())
            self._metrics.failed(delivery.channel, "undeliverable")
            return False
        except RetryLater as exc:
            await self._db.transaction(_retry, row, exc.after_seconds, str(exc), self._clock())
            self._count_if_given_up(row, delivery.channel)
            return False
        except DeliveryError as exc:
            backoff = min(MAX_BACKOFF.total_seconds(), 2.0 ** min(row.attempts, 10))
            log.warning("message failed: %s; %s; retrying in %g s", _about(row), exc, backoff)
            await self._db.transaction(_retry, row, backoff, str(exc), self._clock())
            self._count_if_given_up(row, delivery.channel)
            return False
        self._metrics.sent(delivery.channel)
        # Shielded: a stop that cancels this pass must not undo the record of a message the
        # platform accepted, or it would be sent again.
        await asyncio.shield(self._mark_sent(row, delivery, message_id))
        log.info("message sent: %s, on %s", _about(row), delivery.channel)
        return True

    async def _mark_sent(self, row: _Due, delivery: _Delivery, message_id: str) -> None:
        # Once the platform accepted it, recording that must not be lost to a busy database:
        # an unrecorded row would be sent again.
        for attempt in range(3):
            try:
                await self._db.transaction(_sent, row.id, delivery, message_id, self._clock())
                return
            except Exception:
                log.exception(
                    "outbox %d was sent but could not be marked (try %d)", row.id, attempt + 1
                )
                await asyncio.sleep(0.5 * (attempt + 1))

    def _count_if_given_up(self, row: _Due, channel: str) -> None:
        """``_retry`` fails a row for good at its last attempt: counted as given up."""
        if row.attempts + 1 >= GIVE_UP_AFTER_ATTEMPTS:
            self._metrics.failed(channel, "gave_up")


def _about(row: _Due) -> str:
    """A message for a log line: its kind, whom it is for and its order (no chat ids:
    on WhatsApp they are phone numbers)."""
    order = row.payload.get("order_reference") or (f"id {row.order_id}" if row.order_id else "-")
    return f"{row.kind} to the {row.audience}, order {order} (outbox {row.id})"


def _channel_of(row: _Due) -> str:
    """The channel a row is for, as far as is known without rendering it."""
    return (row.recipient or "").partition(":")[0] or "unknown"


# --- blocking database work, run through Database.transaction ----------------------------


def _fan_out_to_merchants(conn: Connection, recipients: Sequence[str], now: datetime) -> None:
    one_process_at_a_time(conn)  # two would both copy a row out (and collide on its key)
    rows = conn.execute(
        select(outbox)
        .where(outbox.c.audience == Audience.MERCHANT)
        .where(outbox.c.recipient.is_(None))
        .where(outbox.c.status == OutboxStatus.PENDING)
    ).all()
    if rows and not recipients:
        log.warning("no merchant chat is configured; %d merchant messages not sent", len(rows))
    for row in rows:
        copies = [
            {
                "dedupe_key": f"{row.dedupe_key}@{recipient}",
                "kind": row.kind,
                "audience": row.audience,
                "customer_id": row.customer_id,
                "order_id": row.order_id,
                "payload": row.payload,
                "recipient": recipient,
                "status": OutboxStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for recipient in recipients
        ]
        if copies:
            conn.execute(insert(outbox), copies)
        conn.execute(
            update(outbox).where(outbox.c.id == row.id).values(status=OutboxStatus.EXPANDED)
        )


def _first_of_each_chat(rows: Sequence[_RowT]) -> list[_RowT]:
    """At most ``ROWS_PER_CHAT_PER_PASS`` of each chat's rows, in order: the rest wait for
    the next pass (and, with claims, stay free for whichever process is free then)."""
    taken: Counter[tuple[str, object]] = Counter()
    kept = []
    for row in rows:
        taken[_chat_of(row)] += 1
        if taken[_chat_of(row)] <= ROWS_PER_CHAT_PER_PASS:
            kept.append(row)
    return kept


class _Addressed(Protocol):
    """An outbox row as read (a ``_Due``, or a row of the table itself)."""

    @property
    def audience(self) -> str: ...
    @property
    def recipient(self) -> str | None: ...
    @property
    def customer_id(self) -> int | None: ...


_RowT = TypeVar("_RowT", bound=_Addressed)


def _chat_of(row: _Addressed) -> tuple[str, object]:
    """Whose chat a row goes to, as far as is known before rendering it."""
    if row.audience == Audience.MERCHANT:
        return ("merchant", row.recipient)
    return ("customer", row.customer_id)


def _due(conn: Connection, now: datetime, limit: int, claimant: str | None = None) -> list[_Due]:
    """The rows to send now. With a ``claimant`` (PostgreSQL, several processes) they are
    claimed for it until ``now + CLAIM_LEASE``, skipping rows other processes hold and
    every chat in which another process holds a row, so each chat is sent in order by one
    process at a time. Claiming is serialized across processes (one short transaction at
    a time), so two processes never pick rows of one chat in the same moment."""
    # Payment results first: in a rush they are what customers wait for, phone in hand.
    urgent = case((outbox.c.kind.in_(sorted(PAYMENT_RESULTS)), 0), else_=1)
    query = (
        select(outbox)
        .where(outbox.c.status == OutboxStatus.PENDING)
        .where(outbox.c.next_attempt_at <= now)
        .where((outbox.c.audience == Audience.CUSTOMER) | outbox.c.recipient.is_not(None))
        .order_by(urgent, outbox.c.id)
        .limit(limit)
    )
    if claimant is None:
        rows = _first_of_each_chat(conn.execute(query).all())
    else:
        one_process_at_a_time(conn)
        query = query.where(~held_elsewhere(outbox, claimant, now))
        rows = _first_of_each_chat(
            conn.execute(query.with_for_update(of=outbox, skip_locked=True)).all()
        )
        if rows:
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_([r.id for r in rows]))
                .values(claimed_by=claimant, claimed_until=now + CLAIM_LEASE)
            )
    return [
        _Due(
            r.id,
            MessageKind(r.kind),
            Audience(r.audience),
            r.customer_id,
            r.order_id,
            r.recipient,
            json.loads(r.payload),
            r.attempts,
            r.created_at,
        )
        for r in rows
    ]


_NOTHING = Notice(Reply(""), "", (), "en", None)
_NOT_YET = _Delivery("", "", _NOTHING, None)  # render again in a moment


def _render(
    conn: Connection, row: _Due, now: datetime, paybill: str | None = None
) -> _Delivery | None:
    kind = row.kind
    customer = customer_by_id(conn, row.customer_id) if row.customer_id else None
    order = get_order(conn, row.order_id) if row.order_id else None
    if kind not in ORDERLESS_KINDS and (order is None or customer is None):
        return None
    lines = item_lines(get_order_items(conn, order.id)) if order is not None else ""
    payload = row.payload
    if row.audience is Audience.MERCHANT:
        if row.recipient is None:
            return None
        channel, _, chat_id = row.recipient.partition(":")
        name = (customer.name if customer is not None else "") or "-"
        room = MERCHANT_BUTTON_ROOM.get(channel, 0)
        way = order_handover(conn, order.id) if order is not None else None
        about = MerchantFacts(lines, name, _paid_not_moved_on(conn), room, way)
        rendered = MERCHANT_RENDERERS[kind](payload, about)
        # Merchants rarely write to the shop's number: when one last did matters to a
        # channel with a window (WhatsApp), as it does for customers.
        merchant_chat = customer_by_chat(conn, channel, chat_id)
        wrote = merchant_chat.last_inbound_at if merchant_chat is not None else None
        notice = Notice(rendered.reply, kind, rendered.parameters, "en", wrote)
        return _Delivery(channel, chat_id, notice, None)
    if customer is None or order is None:
        return None
    if customer.blocked:
        return _Delivery(
            customer.channel, customer.chat_id, _NOTHING, None, blocked_customer=customer.id
        )
    tag = payment_tag(payload.get("payment_id"))
    replace = remembered_message(conn, customer.channel, customer.chat_id, tag)
    prompted = "payment_id" in payload and payload.get("settled_by") not in UNPROMPTED
    if replace is None and now - row.created_at < PROMPT_GRACE and prompted:
        return _NOT_YET
    facts = CustomerFacts(customer.language, lines, order.id, order.status, tag, paybill)
    rendered = render_customer(kind, payload, facts)
    notice = Notice(
        rendered.reply, kind, rendered.parameters, customer.language, customer.last_inbound_at
    )
    return _Delivery(customer.channel, customer.chat_id, notice, replace)


def _paid_not_moved_on(conn: Connection) -> int:
    """Paid orders waiting for the merchant: fulfilment stays NULL until first moved on."""
    query = (
        select(func.count())
        .select_from(orders)
        .where(orders.c.status == OrderStatus.PAID, orders.c.fulfilment.is_(None))
    )
    return int(conn.execute(query).scalar_one())


def _sent(
    conn: Connection, outbox_id: int, delivery: _Delivery, message_id: str, now: datetime
) -> None:
    conn.execute(
        update(outbox)
        .where(outbox.c.id == outbox_id)
        .values(
            status=OutboxStatus.SENT,
            sent_at=now,
            attempts=outbox.c.attempts + 1,
            last_error=None,
            **UNCLAIMED,
        )
    )
    if tag := delivery.notice.reply.tag:
        remember_message(conn, delivery.channel, delivery.chat_id, tag, message_id, now)


def _retry(conn: Connection, row: _Due, after_seconds: float, error: str, now: datetime) -> None:
    if row.attempts + 1 >= GIVE_UP_AFTER_ATTEMPTS:
        _fail(conn, row.id, f"gave up: {error}", now)
        return
    conn.execute(
        update(outbox)
        .where(outbox.c.id == row.id)
        .values(
            attempts=row.attempts + 1,
            last_error=error[:500],
            next_attempt_at=now + timedelta(seconds=after_seconds),
            **UNCLAIMED,
        )
    )


def _gone(conn: Connection, row: _Due, error: str, now: datetime) -> None:
    if row.audience is Audience.CUSTOMER and row.customer_id is not None:
        update_customer(conn, row.customer_id, blocked_at=now)
    _fail(conn, row.id, error, now)


def _fail(conn: Connection, outbox_id: int, error: str, now: datetime) -> None:
    """Refused for good, or given up on: kept with the error, never sent again."""
    conn.execute(
        update(outbox)
        .where(outbox.c.id == outbox_id)
        .values(
            status=OutboxStatus.FAILED,
            last_error=error[:500],
            attempts=outbox.c.attempts + 1,
            **UNCLAIMED,
        )
    )
