"""The database schema as SQLAlchemy Core tables; Alembic migrations create it.

Core rather than ORM objects: the hot paths (callback settlement) work in batches of
rows, and plain rows keep the data layer explicit. Money is whole KES in integers.
Phone numbers (and what embeds one) are ``Sealed*`` columns, encrypted at rest: see
``storage.sealing``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

from storage.sealing import SealedLongValue, SealedText, SealedValue

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite would otherwise hand back naive datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """Remember the last conversion: a batch binds the same ``now`` many times over."""
        convert = super().bind_processor(dialect)
        if convert is None:
            return None
        last: tuple[Any, Any] = (object(), None)  # one tuple, swapped whole: thread-safe

        def process(value: Any) -> Any:
            nonlocal last
            seen = last
            if value is seen[0]:
                return seen[1]
            converted = convert(value)
            last = (value, converted)
            return converted

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


customers = Table(
    "customers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("channel", String(16), nullable=False),  # telegram | whatsapp | terminal
    Column("chat_id", SealedValue, nullable=False),  # a WhatsApp chat id is a phone number
    Column("name", String(128), nullable=False, server_default=""),
    Column("msisdn", SealedValue),
    Column("language", String(2), nullable=False, server_default="en"),
    Column("blocked_at", UtcDateTime),  # the customer blocked the bot: stop sending
    # When the customer last wrote: WhatsApp allows free-form messages for 24 h after.
    Column("last_inbound_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("channel", "chat_id"),
)

products = Table(
    "products",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sku", String(64), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("price", Integer, nullable=False),
    Column("category", String(64), nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("stock", Integer),  # what is left; NULL: not counted (unlimited)
    Column("low_stock", Integer),  # tell the merchant when stock falls to this
)

orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reference", String(12), nullable=False, unique=True),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("status", String(24), nullable=False),
    Column("total", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("paid_at", UtcDateTime),
    # After payment: ready, on_its_way, delivered, collected (NULL: not moved on yet).
    Column("fulfilment", String(16)),
    # How the customer gets it: pickup | delivery (NULL: the shop asked nothing). Where
    # to deliver is personal data: sealed at rest, as phone numbers are.
    Column("handover", String(8)),
    Column("delivery_zone", String(64)),
    Column("delivery_address", SealedLongValue),
    Column("delivery_location", SealedValue),  # "latitude,longitude"
    Index("ix_orders_status_paid_at", "status", "paid_at"),
)

order_items = Table(
    "order_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", ForeignKey("orders.id"), nullable=False, index=True),
    Column("product_id", ForeignKey("products.id")),
    Column("sku", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("unit_price", Integer, nullable=False),
    Column("quantity", Integer, nullable=False),
)

# Stock taken for an order: held until it is paid (sold) or given back (released).
stock_holds = Table(
    "stock_holds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", ForeignKey("orders.id"), nullable=False, index=True),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_stock_holds_status_expires_at", "status", "expires_at"),
)

# Payment statuses in which an attempt is still open; at most one per order (see the index).
# payments.states.PaymentStatus.is_open reads this too.
OPEN_PAYMENT_STATUSES = ("created", "pending", "unknown")
_OPEN_ATTEMPT = text("status IN ({})".format(", ".join(f"'{s}'" for s in OPEN_PAYMENT_STATUSES)))

payments = Table(
    "payments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", ForeignKey("orders.id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("msisdn", SealedValue, nullable=False),
    Column("amount", Integer, nullable=False),
    # Sealed too: Daraja's CheckoutRequestIDs end in the phone number.
    Column("checkout_request_id", SealedValue, unique=True),
    Column("merchant_request_id", String(64)),
    Column("result_code", String(32)),
    Column("result_desc", Text),
    Column("mpesa_receipt", String(32), unique=True),
    Column("paid_amount", Integer),
    Column("paid_msisdn", SealedValue),
    Column("transaction_at", UtcDateTime),
    Column("settled_by", String(16)),  # callback | query | expiry | push
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("push_accepted_at", UtcDateTime),
    Column("query_count", Integer, nullable=False, server_default="0"),
    Column("next_query_at", UtcDateTime),
    # Pushed with a CallBackURL of its own (base URL + attempt id + a token only we can
    # make): its callback is accepted at that URL only, never at the bare base URL.
    Column("own_callback_url", Boolean, nullable=False, server_default=text("false")),
    Index(
        "uq_payments_one_open_attempt_per_order",
        "order_id",
        unique=True,
        sqlite_where=_OPEN_ATTEMPT,
        postgresql_where=_OPEN_ATTEMPT,
    ),
    Index("ix_payments_status_next_query_at", "status", "next_query_at"),
)

payment_events = Table(
    "payment_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(16), nullable=False),  # callback | query | push
    Column("received_at", UtcDateTime, nullable=False),
    Column("raw", SealedText, nullable=False),
    Column("checkout_request_id", SealedValue, index=True),
    Column("payment_id", ForeignKey("payments.id")),
    # received | applied | duplicate | orphan | rejected | error
    Column("status", String(16), nullable=False),
    Column("note", SealedText, nullable=False, server_default=""),
    # The attempt its URL named (per-attempt callback URLs), kept to apply it again later.
    Column("attempt_id", Integer),
    Column("source_ip", String(45)),  # who sent it, after trusted-proxy handling
    # A success callback from a sender we cannot vouch for (DUKA_CONFIRM_PAID): it pays
    # nothing until an STK query confirms it ("held" until then).
    Column("needs_confirmation", Boolean, nullable=False, server_default=text("false")),
    Index("ix_payment_events_status", "status"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    # One message per fact: a duplicate callback cannot queue a second "paid" message.
    # Sealed: a merchant message's key ends in its recipient, a WhatsApp number.
    Column("dedupe_key", SealedValue, nullable=False, unique=True),
    Column("kind", String(32), nullable=False),  # payment_paid | payment_failed | ...
    Column("audience", String(16), nullable=False),  # customer | merchant
    Column("customer_id", ForeignKey("customers.id")),
    Column("order_id", ForeignKey("orders.id")),
    Column("payload", SealedText, nullable=False),  # JSON facts; the channel renders them
    # Where it goes, "<channel>:<chat id>"; empty for customer messages until dispatched.
    Column("recipient", SealedValue),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_error", SealedText),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    # PostgreSQL with several processes: the process sending it, and until when its claim
    # holds (a crashed process's claims lapse and another sends the row).
    Column("claimed_by", String(64)),
    Column("claimed_until", UtcDateTime),
    Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
)

# Each chat's place in the conversation and its cart, so both survive restarts.
conversations = Table(
    "conversations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("channel", String(16), nullable=False),
    Column("chat_id", SealedValue, nullable=False),
    Column("state", SealedText, nullable=False),  # JSON, see bot.conversation.state
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("channel", "chat_id"),
)

# Messages we may edit later ("check your phone" becomes "paid"), by a tag we choose.
message_refs = Table(
    "message_refs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("channel", String(16), nullable=False),
    Column("chat_id", SealedValue, nullable=False),
    Column("tag", String(64), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("channel", "chat_id", "tag"),
)

# Inbound platform messages already handled, by their id: webhooks are redelivered.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("channel", String(16), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("payload", SealedText, nullable=False, server_default=""),  # what to handle (JSON)
    Column("handled_at", UtcDateTime),  # null: acknowledged to the platform, not yet handled
    UniqueConstraint("channel", "message_id"),
)

# Money that reached the till but could not be tied to exactly one order: an STK callback
# with no (or no single) attempt, or a C2B payment for an unknown account or a wrong amount.
# The merchant attaches it to an order (matched) or settles it by hand (refunded, kept).
unmatched_payments = Table(
    "unmatched_payments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(16), nullable=False),  # stk_callback | c2b
    Column("receipt", String(32), nullable=False, unique=True),  # MpesaReceiptNumber / TransID
    Column("amount", Integer, nullable=False),  # whole KES, rounded down
    Column("amount_exact", String(32), nullable=False),  # as Daraja reported it, e.g. "270.50"
    Column("msisdn", SealedValue),  # full number when Daraja gave one (STK), else null
    Column("masked_phone", String(64), nullable=False),  # as shown; C2B v1 sends a hash
    Column("account", String(32), nullable=False, server_default=""),  # C2B BillRefNumber
    Column("checkout_request_id", SealedValue),
    Column("reason", String(32), nullable=False),  # why it matched nothing, see ledger
    Column("raw", SealedText, nullable=False),  # the event as received, for the audit trail
    Column("transaction_at", UtcDateTime),
    Column("received_at", UtcDateTime, nullable=False),
    Column("status", String(16), nullable=False),  # open | matched | refunded | kept
    Column("order_id", ForeignKey("orders.id")),  # set when matched
    Column("resolved_at", UtcDateTime),
    Column("resolved_by", SealedValue),
    Column("note", SealedText, nullable=False, server_default=""),
    Index("ix_unmatched_payments_status", "status"),
)

# Every decision a merchant makes about money by hand (/match, /resolve): who, when, what.
review_actions = Table(
    "review_actions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", SealedValue, nullable=False),  # "<channel>:<chat id>" of the merchant
    Column("subject", String(16), nullable=False),  # order | unmatched
    Column("reference", String(32), nullable=False),  # order reference or receipt
    Column("action", String(16), nullable=False),  # paid | refund | cancel | match | kept...
    Column("note", SealedText, nullable=False, server_default=""),
    Column("order_id", ForeignKey("orders.id")),
)


# --- several processes on one database (issue 10) ---------------------------------------

# A job only one process may run at a time (the reconciler, pruning), held by ``holder``
# until ``expires_at``; the holder renews it, another process takes it once it lapses.
leases = Table(
    "leases",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# Daraja's OAuth token, shared: a new token invalidates the previous one, so every process
# uses the one stored here and only one fetches a new one.
daraja_tokens = Table(
    "daraja_tokens",
    metadata,
    Column("app", String(64), primary_key=True),  # which Daraja app (a digest, no secret)
    Column("token", SealedValue, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# Every running ``duka serve``: shown in /readyz, and how a second one is noticed.
processes = Table(
    "processes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(32), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("seen_at", UtcDateTime, nullable=False),  # renewed while it runs
    Column("polls_telegram", Boolean, nullable=False, server_default=text("false")),
)

# A WhatsApp chat's latest list, page by page, for its "More" row: any process may get
# the tap.
whatsapp_lists = Table(
    "whatsapp_lists",
    metadata,
    Column("chat_id", SealedValue, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("body", Text, nullable=False),  # the shop's words above the list: no one's data
    Column("pages", SealedText, nullable=False),  # JSON
    Column("updated_at", UtcDateTime, nullable=False),
)
