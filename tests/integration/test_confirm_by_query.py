"""Confirm by query (DUKA_CONFIRM_PAID): a success callback from an unlisted address pays
nothing until Daraja's own STK query answer confirms it, over real HTTP.

The embedded simulator calls back from 127.0.0.1; listing only a Safaricom address makes
it (and a forger on this machine) an unlisted sender.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import PAYMENTS, RECONCILER
from bot.config import ConfigError
from payments.simulator import rules
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.helpers import (
    attempt_url,
    event_rows,
    make_order,
    order_status,
    outbox_rows,
    payment_rows,
    wait_until,
)
from tests.integration.test_callback_webhook import success_body

SAFARICOM = "196.201.214.200"
FORGED_RECEIPT = "FRG0000001"


@pytest.fixture
async def unlisted(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> AsyncIterator[RunningDuka]:
    """Only Safaricom's address is listed, so every callback here is from an unlisted one;
    the reconciler is swept by hand, so each step can be looked at."""
    port = free_socket.getsockname()[1]
    config = make_config(database_url, port, tmp_path, DUKA_CALLBACK_IPS=SAFARICOM)
    duka, runner = await start_duka(config, free_socket)
    try:
        yield duka
    finally:
        await runner.cleanup()


async def forge_success(duka: RunningDuka, attempt: Any) -> httpx.Response:
    """A success callback at the attempt's own URL: the base secret and the token leaked."""
    async with httpx.AsyncClient() as client:
        return await client.post(
            attempt_url(duka.callback_url, attempt.id),
            content=success_body(attempt.checkout_request_id, receipt=FORGED_RECEIPT),
            headers={"Content-Type": "application/json"},
        )


async def held_callback(duka: RunningDuka) -> Any:
    async def one_held() -> bool:
        return any(e.status == "held" for e in await event_rows(duka.engine, "callback"))

    await wait_until(one_held, what="a held callback")
    [event] = [e for e in await event_rows(duka.engine, "callback") if e.status == "held"]
    return event


def kinds(rows: list[dict[str, Any]]) -> list[str]:
    """The messages queued for good (whatever became of them), not those taken back."""
    return sorted(r["kind"] for r in rows if r["status"] != "withdrawn")


async def test_an_unlisted_success_callback_pays_only_once_the_query_confirms_it(
    unlisted: RunningDuka,
) -> None:
    order = await make_order(unlisted.engine)
    await unlisted.app[PAYMENTS].start_payment(order.id, "0712345678")
    held = await held_callback(unlisted)  # the simulator's own callback, from 127.0.0.1

    [attempt] = await payment_rows(unlisted.engine, order.id)
    assert attempt.status == "pending"
    assert await order_status(unlisted.engine, order.id) == "awaiting_payment"
    assert held.needs_confirmation
    assert held.source_ip == "127.0.0.1"
    assert kinds(await outbox_rows(unlisted.engine, order.id)) == ["payment_checking"]

    await unlisted.app[RECONCILER].sweep()  # the query: the simulator says paid

    [attempt] = await payment_rows(unlisted.engine, order.id)
    assert attempt.status == "paid"
    assert attempt.mpesa_receipt is not None  # from the held callback: queries carry none
    assert await order_status(unlisted.engine, order.id) == "paid"
    rows = await outbox_rows(unlisted.engine, order.id)
    assert kinds(rows) == ["order_paid", "payment_paid"]  # one message each
    [checking] = [r for r in rows if r["kind"] == "payment_checking"]
    assert checking["status"] == "withdrawn"  # confirmed within seconds: never sent
    [callback] = await event_rows(unlisted.engine, "callback")
    assert callback.status == "applied"
    [query] = [e for e in await event_rows(unlisted.engine, "query") if e.status == "applied"]
    assert query.note == f"confirms the callback held as event {callback.id}"

    await unlisted.app[RECONCILER].sweep()  # nothing left to ask, nothing doubled
    assert kinds(await outbox_rows(unlisted.engine, order.id)) == ["order_paid", "payment_paid"]


async def test_a_success_callback_that_daraja_denies_pays_nothing_and_alerts_the_merchant(
    unlisted: RunningDuka,
) -> None:
    order = await make_order(unlisted.engine)
    # The customer cancels the prompt; M-Pesa's callback is lost. A forger sends "paid".
    unlisted.simulator.force_next_outcome(
        replace(rules.CANCELLED_BY_USER, callback=rules.CallbackMode.DROPPED)
    )
    await unlisted.app[PAYMENTS].start_payment(order.id, "0712345678")
    [attempt] = await payment_rows(unlisted.engine, order.id)
    assert (await forge_success(unlisted, attempt)).status_code == 200  # stored, held
    await held_callback(unlisted)

    async def failed() -> bool:
        await unlisted.app[RECONCILER].sweep()
        [attempt] = await payment_rows(unlisted.engine, order.id)
        return bool(attempt.status == "failed")

    await wait_until(failed, what="the query to say cancelled")

    assert await order_status(unlisted.engine, order.id) == "awaiting_payment"
    [attempt] = await payment_rows(unlisted.engine, order.id)
    assert attempt.mpesa_receipt is None
    [callback] = await event_rows(unlisted.engine, "callback")
    assert callback.status == "forged"
    assert callback.note.startswith("Daraja does not confirm it: 1032")
    rows = await outbox_rows(unlisted.engine, order.id)
    assert kinds(rows) == ["payment_failed", "payment_not_confirmed"]
    [alert] = [r for r in rows if r["kind"] == "payment_not_confirmed"]
    assert alert["audience"] == "merchant"
    assert alert["payload"]["answer"].startswith("1032")
    [checking] = [r for r in rows if r["kind"] == "payment_checking"]
    assert checking["status"] == "withdrawn"


async def test_the_customer_hears_checking_only_when_confirmation_is_slow(
    unlisted: RunningDuka,
) -> None:
    order = await make_order(unlisted.engine)
    unlisted.simulator.force_next_outcome(rules.NEVER_RESOLVES)  # "being processed" for now
    await unlisted.app[PAYMENTS].start_payment(order.id, "0712345678")
    [attempt] = await payment_rows(unlisted.engine, order.id)
    await forge_success(unlisted, attempt)
    await held_callback(unlisted)
    await unlisted.app[RECONCILER].sweep()  # "being processed": still held

    [checking] = await outbox_rows(unlisted.engine, order.id)
    assert (checking["kind"], checking["status"]) == ("payment_checking", "pending")
    assert checking["next_attempt_at"] - checking["created_at"] >= timedelta(seconds=5)
    assert (await payment_rows(unlisted.engine, order.id))[0].status == "pending"
    assert [e.status for e in await event_rows(unlisted.engine, "callback")] == ["held"]


async def test_always_holds_even_a_listed_sender_and_the_reconciler_wakes_for_it(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    port = free_socket.getsockname()[1]
    # A sweep every minute: paid within seconds means the held callback woke the reconciler.
    toml = TEST_TOML.replace("sweep_interval_seconds = 0.1", "sweep_interval_seconds = 60")
    config = make_config(database_url, port, tmp_path, toml, DUKA_CONFIRM_PAID="always")
    duka, runner = await start_duka(config, free_socket, run_reconciler=True)
    try:
        order = await make_order(duka.engine)
        await duka.app[PAYMENTS].start_payment(order.id, "0712345678")

        async def paid() -> bool:
            return await order_status(duka.engine, order.id) == "paid"

        await wait_until(paid, timeout=10, what="the held callback to be confirmed")
        [callback] = await event_rows(duka.engine, "callback")
        assert callback.source_ip == "127.0.0.1"  # listed (the simulator), held all the same
        assert callback.needs_confirmation
        assert callback.status == "applied"
    finally:
        await runner.cleanup()


def test_a_wrong_confirm_setting_is_one_line_naming_the_key(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'duka.sqlite3'}"
    with pytest.raises(ConfigError) as caught:
        make_config(url, 8080, tmp_path, DUKA_CONFIRM_PAID="sometimes")
    message = str(caught.value)
    assert message.startswith("Configuration error in DUKA_CONFIRM_PAID:")
    assert "\n" not in message
    assert message.endswith("use unlisted, always or never")
