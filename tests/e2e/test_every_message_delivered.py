"""Every outbox message kind reaches every channel, inside and outside WhatsApp's 24-hour
window: delivered, or, where a platform truly cannot take it, refused loudly (an ERROR log
record and a count in ``OutboxDispatcher.undeliverable``), never silently lost.

One Duka per database serves Telegram (the fake Bot API), WhatsApp (the fake Graph API, which
enforces the window and accepts only the configured template names) and the terminal chat.
In four rounds, one per window state, real customers and orders are created on each channel,
the chats' ``last_inbound_at`` is set as the product would have written it, one outbox row per
kind is queued as the payments core queues it (``insert_outbox`` inside a transaction), and
``deliver_due`` runs. The tests then read what each platform received, one test per
kind × channel × window, so the pytest report is the delivery table.

The window states (what ``customers.last_inbound_at`` says of the chat, and Meta agrees):

* ``inside``: the customer (or merchant) wrote 1 hour ago: free-form text or buttons;
* ``outside``: they wrote 2 days ago: only the approved template gets through;
* ``never``: they never wrote (merchants usually never do): the template;
* ``lapsed`` (WhatsApp only): our record says 1 hour ago but Meta says the window is closed,
  so the free-form send is refused with 131047 and the template goes out instead.

The payloads come from the real producers where those are pure (``settle``, ``expire``) and
are written field for field as the product writes them where the producer also changes other
rows (``review.resolve_order``, ``unmatched.record_unmatched``). A new ``MessageKind`` fails
these tests until it has a producer here, an approved template shape, and a delivery path on
every channel.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Connection, select

from bot.app import DATABASE, DISPATCHER
from bot.channels.terminal import MERCHANT_CHAT, TerminalChannel
from bot.chat.turn import low_stock_alert
from bot.config import DEFAULT_TEMPLATES, AppConfig, WhatsAppSettings
from bot.daily_summary import summary_message
from bot.fulfilment import Fulfilment, progress_message
from bot.notifications import OutboxDispatcher
from bot.rendering import ORDERLESS_KINDS
from bot.reports import PaidOrder
from payments.outbox import insert_outbox
from payments.phone import mask_msisdn
from payments.refunds import cancelled_by_shop, refund_sent
from payments.results import ResultSource, StkResult
from payments.service import utc_now
from payments.settlement import (
    Audience,
    MessageKind,
    OutboxMessage,
    PaymentSnapshot,
    Settlement,
    expire,
    not_confirmed_alert,
    settle,
)
from payments.states import OrderStatus, PaymentStatus
from storage.orders import (
    CustomerRecord,
    NewOrderItem,
    OrderRecord,
    create_order,
    get_or_create_customer,
    update_customer,
)
from storage.schema import outbox
from storage.stock import Crossing
from tests.conftest import (
    POSTGRES_URL,
    REQUIRE_POSTGRES,
    TEST_TOML,
    RunningDuka,
    _reset_postgres,
    make_config,
    start_duka,
)
from tests.e2e.test_telegram_shop import CATALOG, telegram_env
from tests.e2e.test_telegram_shop import MERCHANT as TELEGRAM_MERCHANT
from tests.e2e.test_whatsapp_shop import MERCHANT_NUMBER, whatsapp_env
from tests.fakes.graph_api import FakeGraph, Sent, WaUser
from tests.fakes.telegram_api import FakeTelegram


class Window(StrEnum):
    INSIDE = "inside"
    OUTSIDE = "outside"
    NEVER = "never"
    LAPSED = "lapsed"


# When the chat last wrote, as the database records it (None: never).
WROTE_AGO: dict[Window, timedelta | None] = {
    Window.NEVER: None,
    Window.OUTSIDE: timedelta(days=2),
    Window.INSIDE: timedelta(hours=1),
    Window.LAPSED: timedelta(hours=1),
}
# Merchant chats are the same in every round, so the rounds go the way time does for them:
# never wrote, wrote long ago, wrote recently.
ROUNDS = (Window.NEVER, Window.OUTSIDE, Window.INSIDE, Window.LAPSED)
CHANNELS = ("telegram", "whatsapp", "terminal")
# (channel, window) pairs of the table; "lapsed" is a WhatsApp-only situation.
TARGETS = [(c, w) for c in CHANNELS for w in (Window.INSIDE, Window.OUTSIDE, Window.NEVER)] + [
    ("whatsapp", Window.LAPSED)
]
MERCHANT_CHATS = {
    "telegram": str(TELEGRAM_MERCHANT),
    "whatsapp": MERCHANT_NUMBER,
    "terminal": MERCHANT_CHAT,
}
# The round's customers speak Kiswahili in one round: their template parameters are Swahili.
LANGUAGE = {Window.OUTSIDE: "sw"}
# Queued a minute ago: past the grace the dispatcher gives a "check your phone" message to be
# remembered (a result arriving within seconds of the push waits for it, to edit it in place).
QUEUED_AGO = timedelta(minutes=1)
PAYER = "254712345678"

# The body variables of the templates a shop registers in WhatsApp Manager, by kind. Meta
# refuses a template send whose parameter count differs (132000), so the count is part of the
# contract between the code and the approved templates (README "Connecting a WhatsApp
# Business number" documents the first three).
APPROVED_TEMPLATE_VARIABLES: dict[MessageKind, tuple[str, ...]] = {
    MessageKind.PAYMENT_PAID: ("order reference", "amount", "receipt"),
    MessageKind.PAYMENT_FAILED: ("order reference", "reason"),
    MessageKind.PAYMENT_UNDER_REVIEW: ("order reference", "amount paid"),
    MessageKind.PAYMENT_UNCONFIRMED: ("order reference", "amount"),
    MessageKind.ORDER_RESOLVED: ("order reference", "outcome"),
    MessageKind.ORDER_PAID: (
        "order reference",
        "amount",
        "receipt",
        "customer name",
        "paid orders waiting",
    ),
    MessageKind.PAYMENT_NEEDS_REVIEW: ("order reference", "why", "amount paid", "receipt"),
    MessageKind.PAYMENT_CHECK: ("order reference", "amount", "masked phone"),
    MessageKind.UNMATCHED_PAYMENT: ("amount", "masked phone", "receipt"),
    MessageKind.PAYMENT_CHECKING: ("order reference", "amount"),
    MessageKind.PAYMENT_NOT_CONFIRMED: ("order reference", "amount", "masked phone", "answer"),
    MessageKind.LOW_STOCK: ("product", "left"),
    MessageKind.ORDER_PROGRESS: ("order reference", "where it is"),
    MessageKind.ORDER_CANCELLED_BY_SHOP: ("order reference", "amount", "reason"),
    MessageKind.ORDER_REFUNDED: ("order reference", "amount"),
    MessageKind.DAILY_SUMMARY: ("day", "paid orders", "total"),
}


# --- the messages, as the product queues them ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sale:
    """What one message is about: a real order (none for money that matches no order), and
    the payment, receipt, review and unmatched-money ids its payload names. The dispatcher
    reads no payments row, so none is written; the ids only have to be unique."""

    number: int  # unique in the run
    order: OrderRecord | None

    @property
    def receipt(self) -> str:
        return f"TX{self.number:08d}"

    @property
    def marker(self) -> str:
        """What the message must show: the order reference, else the M-Pesa receipt."""
        return self.order.reference if self.order is not None else self.receipt

    def paid_order(self) -> OrderRecord:
        assert self.order is not None, "this kind is about an order"
        return self.order


def _snapshot(sale: Sale) -> PaymentSnapshot:
    order = sale.paid_order()
    return PaymentSnapshot(
        payment_id=sale.number,
        order_id=order.id,
        customer_id=order.customer_id,
        order_reference=order.reference,
        order_status=OrderStatus.AWAITING_PAYMENT,
        order_total=order.total,
        status=PaymentStatus.PENDING,
        amount=order.total,
        msisdn=PAYER,
        checkout_request_id=f"ws_CO_{sale.number}",
    )


def _callback(sale: Sale, code: str = "0", paid: int | None = None) -> StkResult:
    succeeded = code == "0"
    return StkResult(
        checkout_request_id=f"ws_CO_{sale.number}",
        merchant_request_id=f"mr-{sale.number}",
        result_code=code,
        result_desc="ok" if succeeded else "Request cancelled by user",
        source=ResultSource.CALLBACK,
        amount=Decimal(paid if paid is not None else sale.paid_order().total)
        if succeeded
        else None,
        receipt=sale.receipt if succeeded else None,
        transaction_at=utc_now() if succeeded else None,
        msisdn=PAYER if succeeded else None,
    )


def _one(settlement: Settlement, kind: MessageKind) -> OutboxMessage:
    [message] = [m for m in settlement.messages if m.kind is kind]
    return message


def _resolved(sale: Sale) -> OutboxMessage:
    """As ``payments.review.resolve_order`` queues it when the merchant refunds."""
    order = sale.paid_order()
    return OutboxMessage(
        MessageKind.ORDER_RESOLVED,
        payment_id=None,
        order_id=order.id,
        customer_id=order.customer_id,
        payload={
            "order_reference": order.reference,
            "action": "refund",
            # A merchant's note may span lines; it is for the text, not the template.
            "note": "Sent back to 0712 345 678.\nPole sana!",
            "paid_amount": order.total,
        },
        subject=f"review:{sale.number}",
    )


def _unmatched(sale: Sale) -> OutboxMessage:
    """As ``payments.unmatched.record_unmatched`` queues it for a C2B payment to no order."""
    return OutboxMessage(
        MessageKind.UNMATCHED_PAYMENT,
        payment_id=None,
        order_id=None,
        customer_id=None,
        payload={
            "unmatched_id": sale.number,
            "receipt": sale.receipt,
            "paid_amount": 450,
            "paid_amount_exact": "450.00",
            "masked_phone": mask_msisdn(PAYER),
            "account": "XJ4K",
            "reason": "unknown_account",
        },
        subject=f"unmatched:{sale.number}",
    )


def _daily_summary(sale: Sale) -> OutboxMessage:
    """As ``bot.daily_summary`` queues it, each sale a day of its own (one summary a day). A
    product's name carries the marker into the words, the day's label into the template."""
    day = date(2026, 1, 1) + timedelta(days=sale.number)
    item = (f"Sukari {sale.receipt}", 1, 160)
    sold = PaidOrder("DK-SUMMARY", utc_now(), "Wanjiru", (item,), 160, (), "new")
    message = summary_message(day, [sold])
    return dataclasses.replace(
        message, payload={**message.payload, "date": f"{day} {sale.receipt}"}
    )


def _paid(s: Sale) -> Settlement:
    return settle(_snapshot(s), _callback(s))


def _short(s: Sale) -> Settlement:  # ten shillings short: the order goes to review
    return settle(_snapshot(s), _callback(s, paid=s.paid_order().total - 10))


PRODUCERS: dict[MessageKind, Callable[[Sale], OutboxMessage]] = {
    MessageKind.PAYMENT_PAID: lambda s: _one(_paid(s), MessageKind.PAYMENT_PAID),
    MessageKind.ORDER_PAID: lambda s: _one(_paid(s), MessageKind.ORDER_PAID),
    MessageKind.PAYMENT_FAILED: lambda s: _one(
        settle(_snapshot(s), _callback(s, code="1032")), MessageKind.PAYMENT_FAILED
    ),
    MessageKind.PAYMENT_UNDER_REVIEW: lambda s: _one(_short(s), MessageKind.PAYMENT_UNDER_REVIEW),
    MessageKind.PAYMENT_NEEDS_REVIEW: lambda s: _one(_short(s), MessageKind.PAYMENT_NEEDS_REVIEW),
    MessageKind.PAYMENT_UNCONFIRMED: lambda s: _one(
        expire(_snapshot(s), confirmed=False), MessageKind.PAYMENT_UNCONFIRMED
    ),
    MessageKind.PAYMENT_CHECK: lambda s: _one(
        expire(_snapshot(s), confirmed=False), MessageKind.PAYMENT_CHECK
    ),
    # Queued with a delay (sent only if confirming takes a while); here, due at once.
    MessageKind.PAYMENT_CHECKING: lambda s: dataclasses.replace(
        _one(
            settle(_snapshot(s), dataclasses.replace(_callback(s), needs_confirmation=True)),
            MessageKind.PAYMENT_CHECKING,
        ),
        delay=timedelta(0),
    ),
    MessageKind.PAYMENT_NOT_CONFIRMED: lambda s: not_confirmed_alert(
        _snapshot(s), "1032 Request cancelled by user"
    ),
    MessageKind.ORDER_RESOLVED: _resolved,
    MessageKind.UNMATCHED_PAYMENT: _unmatched,
    # As the chat queues it when an order takes a product down to its mark; the product's
    # name carries the marker, as a receipt would.
    MessageKind.ORDER_PROGRESS: lambda s: progress_message(s.paid_order(), Fulfilment.ON_ITS_WAY),
    # As payments.refunds queues them for /cancel REF reason and /refunded REF note.
    MessageKind.ORDER_CANCELLED_BY_SHOP: lambda s: cancelled_by_shop(
        s.paid_order(), s.paid_order().total, "out of stock"
    ),
    MessageKind.ORDER_REFUNDED: lambda s: refund_sent(
        s.paid_order(), s.paid_order().total, "Reversal QKX9Z8Y7W6.\nPole!"
    ),
    MessageKind.LOW_STOCK: lambda s: low_stock_alert(
        Crossing("sukari", f"Sukari {s.receipt}", 2, 3), s.number
    ),
    MessageKind.DAILY_SUMMARY: _daily_summary,
}
ITEMS = (NewOrderItem("sukuma", "Sukuma wiki", 30, 2), NewOrderItem("unga", "Unga 2kg", 210, 1))


# --- setting the scene in the database -------------------------------------------------------


def _chat(
    conn: Connection, channel: str, chat_id: str, name: str, language: str, window: Window
) -> CustomerRecord:
    """The customers row of a chat, with ``last_inbound_at`` as the product writes it when the
    chat writes (for a WhatsApp merchant too: channel "whatsapp", chat id = the number)."""
    now = utc_now()
    customer = get_or_create_customer(conn, channel, chat_id, name, now)
    ago = WROTE_AGO[window]
    update_customer(
        conn,
        customer.id,
        language=language,
        last_inbound_at=None if ago is None else now - ago,
    )
    return customer


def _set_merchant_windows(conn: Connection, window: Window) -> None:
    for channel, chat_id in MERCHANT_CHATS.items():
        if WROTE_AGO[window] is not None:
            _chat(conn, channel, chat_id, "Mama Njeri", "en", window)


def _new_order(conn: Connection, customer: CustomerRecord) -> OrderRecord:
    return create_order(conn, customer.id, ITEMS, utc_now())


def _queue(conn: Connection, messages: list[OutboxMessage]) -> None:
    insert_outbox(conn, messages, utc_now() - QUEUED_AGO)


def _outbox(conn: Connection) -> dict[str, dict[str, Any]]:
    return {row.dedupe_key: row._asdict() for row in conn.execute(select(outbox))}


async def _deliver_everything(dispatcher: OutboxDispatcher) -> None:
    """Run delivery passes until one sends nothing (a pass takes at most 50 rows)."""
    for _ in range(10):
        if await dispatcher.deliver_due() == 0:
            return


# --- the delivery table ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Queued:
    """One cell of the table: a message queued for one chat in one window state."""

    kind: MessageKind
    channel: str
    window: Window
    chat_id: str  # where the platform delivers it
    dedupe_key: str  # of the row that must end "sent" (a merchant's copy: key@recipient)
    marker: str  # the order reference, or the receipt of money that matches no order


@dataclasses.dataclass
class Matrix:
    telegram: FakeTelegram
    graph: FakeGraph
    terminal: TerminalChannel
    whatsapp: WhatsAppSettings
    queued: dict[tuple[MessageKind, str, Window], Queued] = dataclasses.field(default_factory=dict)
    outbox: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    undeliverable: Counter[tuple[str, str]] = dataclasses.field(default_factory=Counter)
    loud: list[str] = dataclasses.field(default_factory=list)  # WARNING and worse, logged


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def _wa_user(window: Window) -> WaUser:
    n = ROUNDS.index(window) + 1
    if window is Window.NEVER:  # known by phone only, from before Meta sent user ids
        return WaUser(f"25471100000{n}", name="Achieng")
    return WaUser(f"25471100000{n}", user_id=f"KE.500{n}", name="Achieng")


def _set_meta_window(fake: FakeGraph, who: WaUser | str, window: Window) -> None:
    """Meta's side of the window (the fake enforces it), agreeing with ours but for "lapsed"."""
    if window is Window.INSIDE:
        fake.open_window(who)
    elif window in {Window.OUTSIDE, Window.LAPSED}:
        fake.expire_window(who)
    else:
        assert not fake.window_open(who), "this chat must never have written"


async def _play_round(
    duka: RunningDuka, matrix: Matrix, window: Window, numbers: Iterator[int]
) -> None:
    """Customers and orders on each channel, one message per kind, then delivery."""
    user = _wa_user(window)
    channels = ("whatsapp",) if window is Window.LAPSED else CHANNELS
    chats = {
        "telegram": str(2000 + ROUNDS.index(window)),
        "whatsapp": user.user_id or user.wa_id,
        "terminal": f"customer-{window}",
    }
    names = {"telegram": "Wanjiru Kamau", "whatsapp": "Achieng Otieno", "terminal": "Baraka"}
    language = LANGUAGE.get(window, "en")

    def scene(conn: Connection) -> list[Queued]:
        _set_merchant_windows(conn, window)
        customers = {c: _chat(conn, c, chats[c], names[c], language, window) for c in channels}
        messages: list[OutboxMessage] = []
        cells: list[Queued] = []
        for kind in MessageKind:
            produce = PRODUCERS.get(kind)
            if produce is None:
                continue  # its cells stay empty, and fail
            if kind.audience is Audience.CUSTOMER:
                for channel in channels:
                    sale = Sale(next(numbers), _new_order(conn, customers[channel]))
                    message = produce(sale)
                    messages.append(message)
                    cells.append(
                        Queued(
                            kind, channel, window, chats[channel], message.dedupe_key, sale.marker
                        )
                    )
                continue
            order = None if kind in ORDERLESS_KINDS else _new_order(conn, customers["whatsapp"])
            sale = Sale(next(numbers), order)
            message = produce(sale)
            messages.append(message)
            for channel in channels:  # each merchant chat gets its own copy of the row
                recipient = f"{channel}:{MERCHANT_CHATS[channel]}"
                cells.append(
                    Queued(
                        kind,
                        channel,
                        window,
                        MERCHANT_CHATS[channel],
                        f"{message.dedupe_key}@{recipient}",
                        sale.marker,
                    )
                )
        _queue(conn, messages)
        return cells

    cells = await duka.app[DATABASE].transaction(scene)
    matrix.queued.update({(c.kind, c.channel, c.window): c for c in cells})
    _set_meta_window(matrix.graph, user, window)
    _set_meta_window(matrix.graph, MERCHANT_NUMBER, window)
    await _deliver_everything(duka.app[DISPATCHER])


async def _database_for(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'duka.sqlite3'}"
    problem = await _reset_postgres()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(problem)
        pytest.skip(problem)
    return POSTGRES_URL


APPROVED_NAMES = frozenset(name for _, name in DEFAULT_TEMPLATES)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def matrix(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Matrix]:
    """Duka with Telegram, WhatsApp and the terminal chat, after every round was delivered."""
    tmp_path = tmp_path_factory.mktemp(f"matrix-{request.param}")
    database_url = await _database_for(request.param, tmp_path)
    terminal = TerminalChannel(show=lambda _: None)
    async with FakeTelegram() as telegram, FakeGraph(approved_templates=APPROVED_NAMES) as fake:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            env = {**telegram_env(telegram), **whatsapp_env(fake)}
            config = make_config(
                database_url, sock.getsockname()[1], tmp_path, toml=TEST_TOML + CATALOG, **env
            )
            assert config.whatsapp is not None
            duka, runner = await start_duka(config, sock, run_dispatcher=False, terminal=terminal)
            result = Matrix(telegram, fake, terminal, config.whatsapp)
            collect = _Collect(result.loud)
            logging.getLogger().addHandler(collect)
            try:
                numbers = iter(range(1, 10_000))
                for window in ROUNDS:
                    await _play_round(duka, result, window, numbers)
                result.outbox = await duka.app[DATABASE].transaction(_outbox)
                result.undeliverable = Counter(duka.app[DISPATCHER].undeliverable)
                yield result
            finally:
                logging.getLogger().removeHandler(collect)
                await runner.cleanup()


# --- what each platform received ------------------------------------------------------------


def _free_text(sent: Sent) -> str:
    if sent.type == "text":
        return str(sent.body["text"]["body"])
    if sent.type == "interactive":
        return str(sent.body["interactive"].get("body", {}).get("text", ""))
    return ""


def _parameters(template: dict[str, Any]) -> list[str]:
    return [
        str(p.get("text"))
        for component in template.get("components", [])
        if component.get("type") == "body"
        for p in component.get("parameters", [])
    ]


def _check_telegram(matrix: Matrix, cell: Queued) -> None:
    chat = int(cell.chat_id)
    texts = [
        str(call.params.get("text", ""))
        for call in matrix.telegram.calls
        if call.method.lower() in {"sendmessage", "editmessagetext"}
        and not call.failed
        and call.params.get("chat_id") == chat
    ]
    assert any(cell.marker in text for text in texts), (
        f"no message with {cell.marker} reached Telegram chat {chat}; it got {texts}"
    )


def _check_terminal(matrix: Matrix, cell: Queued) -> None:
    texts = matrix.terminal.messages.get(cell.chat_id, [])
    assert any(cell.marker in text for text in texts), (
        f"no message with {cell.marker} in terminal chat {cell.chat_id}: {texts}"
    )


def _check_whatsapp(matrix: Matrix, cell: Queued) -> None:
    mine = [s for s in matrix.graph.sent_to(cell.chat_id) if cell.marker in _content(s)]
    free = [s for s in mine if s.type in {"text", "interactive"}]
    templates = [s.body["template"] for s in mine if s.type == "template" and s.accepted]
    shown = _describe(mine)
    if cell.window is Window.INSIDE:
        assert any(s.accepted for s in free), f"no free-form message accepted:\n{shown}"
        assert templates == [], f"inside the window the words go out, not a template:\n{shown}"
        return
    if cell.window is Window.LAPSED:
        # We thought the window open; Meta refused the free-form message: then the template.
        assert [s.error_code for s in free] == [131047], shown
    else:
        # Known to be closed: the template straight away, no doomed free-form try.
        assert free == [], f"a free-form message was tried outside the window:\n{shown}"
    assert len(templates) == 1, f"expected one accepted template:\n{shown}"
    [template] = templates
    assert template["name"] == matrix.whatsapp.template_for(cell.kind)
    # In the customer's language (its Swahili translation for Kiswahili); merchants: English.
    customer = MessageKind(cell.kind).audience is Audience.CUSTOMER
    language = LANGUAGE.get(cell.window, "en") if customer else None
    assert template["language"] == {"code": matrix.whatsapp.template_language_for(language)}
    variables = APPROVED_TEMPLATE_VARIABLES.get(cell.kind)
    assert variables is not None, f"record the approved template's variables for {cell.kind}"
    parameters = _parameters(template)
    assert len(parameters) == len(variables), f"{parameters} do not fill {variables}"
    for name, value in zip(variables, parameters, strict=True):
        # Meta refuses (132018) parameters with new lines, tabs or more than 4 spaces in a row.
        assert value.strip(), f"{name} is empty"
        assert not {"\n", "\t"} & set(value), f"{name} is not one line: {value!r}"
        assert "     " not in value, f"{name} has more than 4 spaces in a row: {value!r}"


def _content(sent: Sent) -> str:
    if sent.type == "template":
        return " ".join(_parameters(sent.body["template"]))
    return _free_text(sent)


def _describe(sends: list[Sent]) -> str:
    return (
        "\n".join(
            f"  {s.type} -> {s.to}: {_content(s)!r} "
            + ("accepted" if s.accepted else f"refused {s.error_code}: {s.details}")
            for s in sends
        )
        or "  (nothing was sent about it)"
    )


CHECKS: dict[str, Callable[[Matrix, Queued], None]] = {
    "telegram": _check_telegram,
    "whatsapp": _check_whatsapp,
    "terminal": _check_terminal,
}
CELLS = [(kind, channel, window) for kind in list(MessageKind) for channel, window in TARGETS]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("kind", "channel", "window"), CELLS, ids=[f"{k}-{c}-{w}" for k, c, w in CELLS]
)
async def test_every_message_kind_reaches_every_channel_inside_and_outside_the_window(
    matrix: Matrix, kind: MessageKind, channel: str, window: Window
) -> None:
    """The row ends "sent" and the chat got it: on WhatsApp as words inside the window, as the
    kind's approved template (one-line parameters, the right count) outside it."""
    cell = matrix.queued.get((kind, channel, window))
    assert cell is not None, (
        f"{kind} is never queued by this test: add its producer to PRODUCERS (as the product "
        "queues it) and its template's variables to APPROVED_TEMPLATE_VARIABLES"
    )
    row = matrix.outbox[cell.dedupe_key]
    assert row["status"] == "sent", (
        f"outbox row {row['id']} is {row['status']}: {row['last_error']}"
    )
    CHECKS[channel](matrix, cell)


@pytest.mark.asyncio(loop_scope="module")
async def test_no_queued_message_is_left_undelivered_or_refused(matrix: Matrix) -> None:
    """Every row ends sent (a merchant row: expanded into one sent copy per merchant chat);
    nothing was refused, and no ERROR was logged."""
    not_sent = {
        key: (row["status"], row["last_error"])
        for key, row in matrix.outbox.items()
        if row["status"] != "sent"
        and not (row["status"] == "expanded" and row["audience"] == "merchant")
    }
    assert not_sent == {}
    expanded = [k for k, r in matrix.outbox.items() if r["status"] == "expanded"]
    for key in expanded:
        copies = {r["recipient"] for k, r in matrix.outbox.items() if k.startswith(f"{key}@")}
        assert copies == {f"{c}:{chat}" for c, chat in MERCHANT_CHATS.items()}, key
    assert matrix.undeliverable == Counter()
    assert [line for line in matrix.loud if line.startswith(("ERROR", "CRITICAL"))] == []


# --- the loud path: a platform that truly cannot take a message -----------------------------


@pytest.fixture
async def strict_graph() -> AsyncIterator[FakeGraph]:
    async with FakeGraph(approved_templates=APPROVED_NAMES) as fake:
        yield fake


def _without_template(config: AppConfig, kind: MessageKind) -> AppConfig:
    """The shop never registered (or configured) a template for ``kind``. The config file
    cannot say so (an empty name is refused at start-up), so the settings are built here."""
    assert config.whatsapp is not None
    templates = tuple(t for t in config.whatsapp.templates if t[0] != kind)
    return dataclasses.replace(
        config, whatsapp=dataclasses.replace(config.whatsapp, templates=templates)
    )


@pytest.mark.parametrize("kind", list(MessageKind), ids=str)
async def test_a_kind_without_a_template_fails_loudly_outside_the_window(
    kind: MessageKind,
    sqlite_url: str,
    tmp_path: Path,
    strict_graph: FakeGraph,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Outside the window a kind with no template cannot go out: its row ends "failed", an
    ERROR names it, and ``undeliverable`` counts it. (SQLite only: the refusal is decided in
    the channel and the dispatcher, not in SQL.)"""
    produce = PRODUCERS.get(kind)
    assert produce is not None, f"{kind} is never queued by this test: add it to PRODUCERS"
    user = WaUser("254711999000", name="Achieng")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        config = make_config(
            sqlite_url,
            sock.getsockname()[1],
            tmp_path,
            toml=TEST_TOML + CATALOG,
            **whatsapp_env(strict_graph),
        )
        duka, runner = await start_duka(_without_template(config, kind), sock, run_dispatcher=False)
        try:

            def scene(conn: Connection) -> tuple[str, str]:
                # The customer wrote two days ago; the merchant never did.
                customer = _chat(conn, "whatsapp", user.wa_id, user.name, "en", Window.OUTSIDE)
                order = None if kind in ORDERLESS_KINDS else _new_order(conn, customer)
                sale = Sale(1, order)
                message = produce(sale)
                _queue(conn, [message])
                if kind.audience is Audience.MERCHANT:
                    return f"{message.dedupe_key}@whatsapp:{MERCHANT_NUMBER}", sale.marker
                return message.dedupe_key, sale.marker

            key, marker = await duka.app[DATABASE].transaction(scene)
            strict_graph.expire_window(user)
            dispatcher = duka.app[DISPATCHER]
            with caplog.at_level(logging.ERROR, logger="bot.notifications"):
                await _deliver_everything(dispatcher)
            rows = await duka.app[DATABASE].transaction(_outbox)
        finally:
            await runner.cleanup()
    assert rows[key]["status"] == "failed"
    assert f"no template for {kind}" in rows[key]["last_error"]
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name == "bot.notifications" and kind in r.getMessage()
    ]
    assert errors, f"no ERROR names {kind}: {[r.getMessage() for r in caplog.records]}"
    assert dispatcher.undeliverable == Counter({("whatsapp", str(kind)): 1})
    assert not [s for s in strict_graph.sent if marker in str(s.body)], "nothing may go out"
