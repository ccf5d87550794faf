"""``duka demo``: the whole payment path on this machine, with no accounts and no internet.

Starts the real server with its embedded Daraja simulator and a fresh SQLite file,
creates two orders in code and pays them over real HTTP: one straight away, one
cancelled on the phone and then retried. Exits 0 only if both end paid with a
receipt and exactly the expected messages queued.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import ENGINE, PAYMENTS, SIMULATOR, access_logger_for, build_app
from bot.config import load_config
from bot.texts import kes, outbox_text
from payments.phone import display_msisdn, normalize_msisdn
from payments.service import PaymentService
from storage.orders import NewOrderItem, OrderRecord, create_order, get_or_create_customer
from storage.schema import outbox, payments

Say = Callable[[str], None]
FINAL_STATUS_TIMEOUT_SECONDS = 30.0


async def run_demo(say: Say = print, callback_delay_seconds: float = 1.0) -> bool:
    with tempfile.TemporaryDirectory(prefix="duka-demo-") as workdir, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config_path = Path(workdir) / "demo.toml"
        config_path.write_text(
            f'[shop]\nname = "Mama Njeri\'s Duka"\n'
            f"[simulator]\ncallback_delay_seconds = {callback_delay_seconds}\n"
        )
        database = Path(workdir) / "duka.sqlite3"
        config = load_config(
            env={
                "DUKA_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
                "DUKA_HTTP_PORT": str(port),
                "MPESA_ENVIRONMENT": "simulator",
            },
            path=config_path,
        )
        app = build_app(config)
        runner = web.AppRunner(app, access_log_class=access_logger_for(config))
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            say(
                f"{config.shop_name}: server on http://127.0.0.1:{port}, "
                f"Daraja simulator on {app[SIMULATOR].base_url}, database {database}"
            )
            engine, service = app[ENGINE], app[PAYMENTS]
            first = await _pay(engine, service, say, "Wanjiru", ["0712 345 678"])
            second = await _pay(engine, service, say, "Otieno", ["0712 000 011", "0712 000 011"])
            return first and second
        finally:
            await runner.cleanup()


async def _pay(
    engine: AsyncEngine, service: PaymentService, say: Say, name: str, phones: list[str]
) -> bool:
    now = datetime.now(UTC)
    items = [
        NewOrderItem("sukuma", "Sukuma wiki", 50, 2),
        NewOrderItem("unga-2kg", "Unga 2kg", 250, 1),
    ]

    def create(conn: Connection) -> OrderRecord:
        customer = get_or_create_customer(conn, "terminal", name, name, now)
        return create_order(conn, customer.id, items, now)

    async with engine.begin() as conn:
        order = await conn.run_sync(create)
    lines = ", ".join(f"{i.quantity} x {i.name} @ {kes(i.unit_price)}" for i in items)
    say(f"\n[{name}] order {order.reference}: {lines}; total {kes(order.total)}")
    shown = 0
    for attempt, phone in enumerate(phones, start=1):
        number = normalize_msisdn(phone)
        say(
            f"  attempt {attempt}: STK push to {display_msisdn(number.msisdn)} "
            f"(M-Pesa asks for the PIN to pay {kes(order.total)})"
        )
        started = await service.start_payment(order.id, number)
        status = await _wait_final(engine, started.payment_id)
        say(f"  -> payment {status}")
        shown = await _show_messages(engine, order.id, shown, say)
        if status == "paid":
            break
    async with engine.connect() as conn:
        paid = (
            await conn.execute(
                select(payments.c.mpesa_receipt).where(
                    payments.c.order_id == order.id, payments.c.status == "paid"
                )
            )
        ).all()
        kinds = [
            (row.audience, row.kind)
            for row in await conn.execute(
                select(outbox.c.audience, outbox.c.kind).where(outbox.c.order_id == order.id)
            )
        ]
    receipt = paid[0].mpesa_receipt if len(paid) == 1 else None
    ok = (
        receipt is not None
        and kinds.count(("customer", "payment_paid")) == 1
        and kinds.count(("merchant", "order_paid")) == 1
    )
    outcome = f"paid, M-Pesa receipt {receipt}" if ok else "did NOT end as expected"
    say(f"  {'OK' if ok else 'FAILED'}: order {order.reference} {outcome}")
    return ok


async def _wait_final(engine: AsyncEngine, payment_id: int) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FINAL_STATUS_TIMEOUT_SECONDS
    while loop.time() < deadline:
        async with engine.connect() as conn:
            status = (
                await conn.execute(select(payments.c.status).where(payments.c.id == payment_id))
            ).scalar_one()
        if status not in {"created", "pending", "unknown"}:
            return str(status)
        await asyncio.sleep(0.1)
    return "still pending (timed out)"


async def _show_messages(engine: AsyncEngine, order_id: int, already: int, say: Say) -> int:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.audience, outbox.c.kind, outbox.c.payload)
                .where(outbox.c.order_id == order_id)
                .order_by(outbox.c.id)
            )
        ).all()
    for row in rows[already:]:
        say(f"     message to {row.audience}: {outbox_text(row.kind, json.loads(row.payload))}")
    return len(rows)
