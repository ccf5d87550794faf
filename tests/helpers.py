"""Small helpers the tests share: creating orders in code and reading what was stored."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from payments.callback_urls import attempt_callback_url
from storage.orders import NewOrderItem, OrderRecord, create_order, get_or_create_customer
from storage.schema import orders, outbox, payment_events, payments


async def make_order(
    engine: AsyncEngine, *items: tuple[str, int, int], chat_id: str = "42"
) -> OrderRecord:
    """An order awaiting payment; items are (name, unit price, quantity)."""
    now = datetime.now(UTC)
    lines = items or (("Sukuma wiki", 50, 2), ("Unga 2kg", 250, 1))
    order_items = [
        NewOrderItem(name.lower().replace(" ", "-"), name, price, qty) for name, price, qty in lines
    ]

    def create(conn: Connection) -> OrderRecord:
        customer = get_or_create_customer(conn, "terminal", chat_id, "Wanjiru", now)
        return create_order(conn, customer.id, order_items, now)

    async with engine.begin() as conn:
        return await conn.run_sync(create)


async def payment_rows(engine: AsyncEngine, order_id: int) -> list[Any]:
    async with engine.connect() as conn:
        query = select(payments).where(payments.c.order_id == order_id).order_by(payments.c.id)
        return list((await conn.execute(query)).all())


async def order_status(engine: AsyncEngine, order_id: int) -> str:
    async with engine.connect() as conn:
        query = select(orders.c.status).where(orders.c.id == order_id)
        return str((await conn.execute(query)).scalar_one())


async def outbox_rows(engine: AsyncEngine, order_id: int | None = None) -> list[dict[str, Any]]:
    query = select(outbox).order_by(outbox.c.id)
    if order_id is not None:
        query = query.where(outbox.c.order_id == order_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [{**row._asdict(), "payload": json.loads(row.payload)} for row in rows]


async def event_rows(engine: AsyncEngine, source: str | None = None) -> list[Any]:
    query = select(payment_events).order_by(payment_events.c.id)
    if source is not None:
        query = query.where(payment_events.c.source == source)
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,  # noqa: ASYNC109 - a default keeps a broken test from hanging
    what: str = "condition",
) -> None:
    """Poll ``condition`` (sync or async) until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _holds(condition):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    value = condition()
    return bool(await value) if inspect.isawaitable(value) else bool(value)


async def wait_for_payment_status(
    engine: AsyncEngine,
    order_id: int,
    status: str,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> Any:
    async def reached() -> bool:
        rows = await payment_rows(engine, order_id)
        return bool(rows) and rows[-1].status == status

    await wait_until(reached, timeout, f"payment of order {order_id} to become {status}")
    return (await payment_rows(engine, order_id))[-1]


def attempt_url(callback_url: str, payment_id: int) -> str:
    """The CallBackURL a push for this attempt carried (its callbacks count only there)."""
    return attempt_callback_url(callback_url, payment_id)
