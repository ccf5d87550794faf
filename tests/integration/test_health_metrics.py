"""/readyz and /metrics over real HTTP, against a running Duka and a real database."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from alembic.config import Config as AlembicConfig
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection

from bot.app import BACKGROUND, CONVERSATION, METRICS_URL, PAYMENTS, RECONCILER
from bot.channels.terminal import MERCHANT_CHAT, TerminalChannel
from bot.chat.model import Inbound
from payments.webhook import INBOX
from storage.engine import MIGRATIONS_DIR
from tests.conftest import RunningDuka, make_config, start_duka
from tests.helpers import make_order, wait_for_payment_status, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def get(url: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url, headers=headers)


def parse(text: str) -> Samples:
    """Every sample by (name, sorted labels); the parser refuses anything not Prometheus'."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@contextlib.asynccontextmanager
async def running(
    database_url: str, sock: socket.socket, tmp_path: Path, **options: Any
) -> AsyncIterator[RunningDuka]:
    env = options.pop("env", {})
    config = make_config(database_url, sock.getsockname()[1], tmp_path, **env)
    duka, runner = await start_duka(config, sock, **options)
    try:
        yield duka
    finally:
        await runner.cleanup()


async def test_ready_when_the_database_and_every_background_task_answer(
    duka: RunningDuka,
) -> None:
    answer = await get(f"{duka.base_url}/readyz")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ready"
    assert body["failing"] == []
    assert {"database", "migrations", "callback_inbox", "outbox_dispatcher"} <= set(body["checks"])


async def test_unready_names_the_background_task_that_stopped(
    sqlite_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    """Stopped through the app's own objects; /healthz (liveness) is not /readyz's business."""
    async with running(sqlite_url, free_socket, tmp_path, run_reconciler=True) as duka:
        assert (await get(f"{duka.base_url}/readyz")).status_code == 200
        reconciler = duka.app[BACKGROUND].task("reconciler")
        reconciler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reconciler
        answer = await get(f"{duka.base_url}/readyz")
        assert answer.status_code == 503
        assert answer.json()["failing"] == ["reconciler"]
        assert answer.json()["checks"]["reconciler"] == "not running"

        await duka.app[INBOX].stop()
        answer = await get(f"{duka.base_url}/readyz")
        assert answer.json()["failing"] == ["callback_inbox", "reconciler"]


async def test_unready_when_the_database_is_not_at_the_code_s_migration(
    duka: RunningDuka,
) -> None:
    def downgrade(conn: Connection) -> None:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        command.downgrade(config, "-1")

    async with duka.engine.begin() as conn:
        await conn.run_sync(downgrade)
    answer = await get(f"{duka.base_url}/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["failing"] == ["migrations"]
    assert body["checks"]["migrations"].startswith("database at ")
    assert body["checks"]["database"] == "ok"


async def test_metrics_show_a_chat_event_a_paid_callback_and_a_reconciler_query(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    terminal = TerminalChannel(show=lambda _: None)
    async with running(database_url, free_socket, tmp_path, terminal=terminal) as duka:
        await duka.app[CONVERSATION].reply_through(
            terminal, Inbound("terminal", "7", text="/start")
        )
        paid = await make_order(duka.engine)
        await duka.app[PAYMENTS].start_payment(paid.id, "0712 345 678")
        await wait_for_payment_status(duka.engine, paid.id, "paid")
        await wait_until(
            lambda: bool(terminal.messages.get(MERCHANT_CHAT)), what="the merchant's message"
        )
        dropped = await make_order(duka.engine, chat_id="43")
        await duka.app[PAYMENTS].start_payment(dropped.id, "0712000006")  # callback dropped
        await asyncio.sleep(0.3)  # past query_after_seconds
        assert (await duka.app[RECONCILER].sweep()).settled == 1

        answer = await get(f"{duka.base_url}/metrics")
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = parse(answer.text)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("duka_callbacks_total", outcome="applied") == 1
    assert value("duka_stk_pushes_total", outcome="accepted") == 2
    assert value("duka_stk_queries_total", outcome="succeeded") == 1
    assert value("duka_daraja_request_seconds_count", endpoint="stk_push") == 2
    assert value("duka_daraja_request_seconds_count", endpoint="oauth") == 1
    assert value("duka_chat_events_total", channel="terminal") == 1
    assert value("duka_chat_event_seconds_count", channel="terminal") == 1
    assert value("duka_outbox_sent_total", channel="terminal") >= 1
    assert value("duka_payments_open", status="pending") == 0
    # The customers' "paid" messages wait (up to 10 s) for a prompt these orders never had;
    # the second merchant message may still be on its way.
    assert value("duka_outbox_backlog") >= 2
    assert value("duka_outbox_oldest_age_seconds") > 0
    assert value("duka_unmatched_payments_open") == 0
    assert value("duka_database_up") == 1
    assert value("duka_background_task_up", task="outbox_dispatcher") == 1


async def test_metrics_on_their_own_port_want_the_bearer_token(
    sqlite_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    env = {"DUKA_METRICS_PORT": "0", "DUKA_METRICS_TOKEN": "scrape-secret"}
    async with running(sqlite_url, free_socket, tmp_path, env=env) as duka:
        assert (await get(f"{duka.base_url}/metrics")).status_code == 404  # not on the public port
        url = f"{duka.app[METRICS_URL]}/metrics"
        assert (await get(url)).status_code == 401
        assert (await get(url, Authorization="Bearer wrong")).status_code == 401
        answer = await get(url, Authorization="Bearer scrape-secret")
        assert answer.status_code == 200
        assert ("duka_database_up", ()) in parse(answer.text)
