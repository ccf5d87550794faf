"""The same callbacks reaching two processes at once (issue 10, PostgreSQL): a batch in
each locks overlapping payments, in the same order, so nothing deadlocks; each payment is
paid once and the second copy of each callback is a duplicate.

Each "process" is a whole Duka app (engine, callback inbox, group commit) on one
PostgreSQL database, served over HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select

from bench import loadgen
from bench.callbacks_pg import seed
from storage.schema import outbox, payment_events, payments
from tests.conftest import RunningDuka, make_config, start_duka

CALLBACKS = 300
CONNECTIONS_EACH = 25


def _fresh(directory: Path) -> Path:
    directory.mkdir()
    return directory


async def _shop(postgres_url: str, directory: Path) -> tuple[RunningDuka, web.AppRunner]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return await start_duka(make_config(postgres_url, sock.getsockname()[1], directory), sock)


async def test_the_same_callbacks_at_two_processes_at_once_deadlock_nothing_and_pay_once(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    first, first_runner = await _shop(postgres_url, _fresh(tmp_path / "a"))
    second, second_runner = await _shop(postgres_url, _fresh(tmp_path / "b"))
    try:
        await seed(first.engine, [(loadgen.MEASURED_GROUP, CALLBACKS, 1)])
        paths = loadgen.attempt_paths(first.callback_url, 1, CALLBACKS)
        assert paths == loadgen.attempt_paths(second.callback_url, 1, CALLBACKS)
        bodies = loadgen.bodies(loadgen.MEASURED_GROUP, CALLBACKS)
        statuses: list[int] = []

        async def post_all(base_url: str) -> None:
            room = asyncio.Semaphore(CONNECTIONS_EACH)
            async with aiohttp.ClientSession() as session:

                async def post(path: str, body: bytes) -> None:
                    async with room, session.post(base_url + path, data=body) as response:
                        statuses.append(response.status)

                await asyncio.gather(*(post(p, b) for p, b in zip(paths, bodies, strict=True)))

        await asyncio.gather(post_all(first.base_url), post_all(second.base_url))

        assert statuses == [200] * (2 * CALLBACKS)
        logged = [r.getMessage() for r in caplog.records]
        assert not [m for m in logged if "deadlock" in m.lower() or "batch of" in m], logged
        async with first.engine.connect() as conn:
            paid = await conn.scalar(
                select(func.count()).select_from(payments).where(payments.c.status == "paid")
            )
            by_status = select(payment_events.c.status, func.count()).group_by(
                payment_events.c.status
            )
            events = {str(status): int(n) for status, n in (await conn.execute(by_status)).all()}
            messages = await conn.scalar(select(func.count()).select_from(outbox))
        assert paid == CALLBACKS
        assert events == {"applied": CALLBACKS, "duplicate": CALLBACKS}
        assert messages == 2 * CALLBACKS  # a customer's and the merchant's, once per order
    finally:
        await second_runner.cleanup()
        await first_runner.cleanup()
