"""Every webhook gives a body a deadline to arrive whole: a sender that sends its headers and
then dribbles the body a byte at a time (slowloris) is answered 408 when the deadline
passes, not held forever. Over real HTTP on 127.0.0.1, on SQLite and PostgreSQL; the refused
STK and C2B bodies are kept raw with the reason, and nothing else changes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from bot.app import PAYMENTS
from payments.http_body import MAX_BODY_READ_SECONDS, not_received_within
from payments.simulator import rules
from storage.schema import inbound_messages
from tests.c2b_support import confirmation_body, unmatched_rows
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.e2e.test_telegram_shop import CATALOG
from tests.every_channel import TELEGRAM_PATH, every_channel_env
from tests.fakes.graph_api import (
    FakeGraph,
    WaUser,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.helpers import (
    attempt_url,
    event_rows,
    make_order,
    order_status,
    outbox_rows,
    payment_rows,
)
from tests.integration.test_callback_webhook import success_body

DEADLINE = 0.6  # seconds; the product's own is MAX_BODY_READ_SECONDS
BYTE_EVERY = 0.3  # the dribble: a whole body would take many seconds
LATE = 2.0  # an answer this long after the deadline did not come "at the deadline"
TELEGRAM_SECRET = "deadline_secret-0123456789"
WHATSAPP_PATH = "/whatsapp/webhook"
CUSTOMER = 1001


@dataclass
class Everything:
    """Duka with all four webhooks on (STK, C2B, Telegram, WhatsApp) and a short deadline."""

    duka: RunningDuka
    telegram: FakeTelegram
    graph: FakeGraph

    @property
    def c2b_confirmation_url(self) -> str:
        return self.duka.config.daraja.c2b_confirmation_url


@pytest.fixture
async def everything(database_url: str, tmp_path: Path) -> AsyncIterator[Everything]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with FakeTelegram() as telegram, FakeGraph() as graph:
        env = every_channel_env(port, telegram, graph, TELEGRAM_SECRET)
        config = make_config(database_url, port, tmp_path, toml=TEST_TOML + CATALOG, **env)
        duka, runner = await start_duka(config, sock, read_seconds=DEADLINE)
        try:
            yield Everything(duka, telegram, graph)
        finally:
            await runner.cleanup()
            sock.close()


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: the server closed without answering
    seconds: float  # from the end of the headers to the answer


async def dribble(
    url: str, body: bytes, headers: Mapping[str, str] | None = None, *, sent_whole: bool = False
) -> Answer:
    """POST with the headers at once (a true Content-Length) and the body one byte every
    BYTE_EVERY seconds; ``sent_whole`` sends the body in two halves, BYTE_EVERY apart (slow
    but within the deadline). The answer's status line, and how long it took."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"  # our own server only
    assert parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: 127.0.0.1:{parts.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    loop = asyncio.get_running_loop()
    started = loop.time()
    half = len(body) // 2
    pieces = [body[:half], body[half:]] if sent_whole else [bytes([b]) for b in body]

    async def send_slowly() -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(BYTE_EVERY)

    sender = asyncio.create_task(send_slowly())
    try:
        status_line = await asyncio.wait_for(reader.readline(), DEADLINE + 10)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    seconds = loop.time() - started
    return Answer(int(status_line.split()[1]) if status_line else None, seconds)


def at_the_deadline(answer: Answer) -> None:
    assert answer.status == 408, answer
    assert DEADLINE - 0.05 <= answer.seconds < DEADLINE + LATE, answer


def a_prefix_of(raw: str, body: bytes) -> None:
    """Kept raw: the bytes that had arrived, some but far from all."""
    assert raw
    assert body.decode().startswith(raw)
    assert len(raw) < len(body) // 2


async def test_the_product_deadline_is_ten_seconds() -> None:
    """Daraja, Telegram and Meta send a body in well under a second."""
    assert MAX_BODY_READ_SECONDS == 10
    assert not_received_within(MAX_BODY_READ_SECONDS) == (
        "the body was not received within 10 seconds"
    )


async def test_a_dribbled_stk_callback_gets_408_and_is_kept_raw_and_pays_nothing(
    everything: Everything,
) -> None:
    duka = everything.duka
    order = await make_order(duka.engine)
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    [attempt] = await payment_rows(duka.engine, order.id)
    body = success_body(attempt.checkout_request_id)

    at_the_deadline(await dribble(attempt_url(duka.callback_url, attempt.id), body))

    [event] = await event_rows(duka.engine, "callback")
    assert (event.status, event.note) == ("rejected", not_received_within(DEADLINE))
    assert event.source_ip == "127.0.0.1"
    a_prefix_of(event.raw, body)
    assert [p.status for p in await payment_rows(duka.engine, order.id)] == ["pending"]
    assert await order_status(duka.engine, order.id) == "awaiting_payment"
    assert await outbox_rows(duka.engine) == []


async def test_a_dribbled_c2b_confirmation_gets_408_and_is_kept_raw_and_pays_nothing(
    everything: Everything,
) -> None:
    duka = everything.duka
    order = await make_order(duka.engine)
    body = json.dumps(confirmation_body("SLW0000001", order.reference, str(order.total))).encode()

    at_the_deadline(await dribble(everything.c2b_confirmation_url, body))

    [event] = await event_rows(duka.engine, "c2b")
    assert (event.status, event.note) == ("rejected", not_received_within(DEADLINE))
    assert event.source_ip == "127.0.0.1"
    a_prefix_of(event.raw, body)
    assert await order_status(duka.engine, order.id) == "awaiting_payment"
    assert await payment_rows(duka.engine, order.id) == []
    assert await unmatched_rows(duka.engine) == []
    assert await outbox_rows(duka.engine) == []


async def test_a_dribbled_c2b_validation_gets_408_with_a_rejection(
    everything: Everything,
) -> None:
    order = await make_order(everything.duka.engine)
    body = json.dumps(confirmation_body("SLW0000002", order.reference, str(order.total))).encode()
    url = everything.duka.config.daraja.c2b_validation_url
    at_the_deadline(await dribble(url, body))
    assert await event_rows(everything.duka.engine) == []  # validation stores nothing


async def test_a_c2b_confirmation_slow_but_whole_within_the_deadline_still_pays(
    everything: Everything,
) -> None:
    duka = everything.duka
    order = await make_order(duka.engine)
    body = json.dumps(confirmation_body("SLW0000003", order.reference, str(order.total))).encode()
    answer = await dribble(everything.c2b_confirmation_url, body, sent_whole=True)
    assert answer.status == 200, answer
    assert await order_status(duka.engine, order.id) == "paid"


async def test_a_dribbled_telegram_update_gets_408_and_reaches_no_chat(
    everything: Everything,
) -> None:
    telegram = everything.telegram
    update = telegram.user_sends_text(CUSTOMER, "/start")
    body = json.dumps(update).encode()
    url = f"{everything.duka.base_url}{TELEGRAM_PATH}"
    headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}

    at_the_deadline(await dribble(url, body, headers))

    await asyncio.sleep(0.2)  # time enough for a reply, had the update been taken in
    assert telegram.sent_messages(CUSTOMER) == []


async def test_a_dribbled_whatsapp_webhook_gets_408_and_nothing_is_taken_in(
    everything: Everything,
) -> None:
    graph = everything.graph
    body = graph.webhook_body(graph.text(WaUser("254712345678", name="Wanjiru"), "hi"))
    url = f"{everything.duka.base_url}{WHATSAPP_PATH}"

    at_the_deadline(await dribble(url, body, {"X-Hub-Signature-256": graph.sign(body)}))

    async with everything.duka.engine.connect() as conn:
        taken = (await conn.execute(select(func.count()).select_from(inbound_messages))).scalar()
    assert taken == 0
    assert graph.sent == []
