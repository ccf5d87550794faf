"""The source-address layer over real HTTP: logged or enforced, and every callback kept
with where it came from (after trusted-proxy handling)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.app import PAYMENTS
from payments.simulator import rules
from tests.conftest import RunningDuka, make_config, start_duka
from tests.helpers import attempt_url, event_rows, make_order, payment_rows
from tests.integration.test_callback_webhook import success_body

SAFARICOM = "196.201.214.200"


async def start(
    database_url: str, free_socket: socket.socket, tmp_path: Path, **env: str
) -> tuple[RunningDuka, object]:
    port = free_socket.getsockname()[1]
    return await start_duka(make_config(database_url, port, tmp_path, **env), free_socket)


@pytest.fixture
async def enforcing(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> AsyncIterator[RunningDuka]:
    """Only Safaricom's address is listed; 127.0.0.1 is our reverse proxy."""
    duka, runner = await start(
        database_url,
        free_socket,
        tmp_path,
        DUKA_CALLBACK_IP_MODE="enforce",
        DUKA_CALLBACK_IPS=SAFARICOM,
        DUKA_TRUSTED_PROXIES="127.0.0.1",
    )
    try:
        yield duka
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


async def paid_callback(duka: RunningDuka, forwarded_for: str | None) -> tuple[int, int]:
    """(HTTP status, order id) for a real-looking paid callback at its attempt's URL."""
    order = await make_order(duka.engine)
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    [attempt] = await payment_rows(duka.engine, order.id)
    headers = {"Content-Type": "application/json"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            attempt_url(duka.callback_url, attempt.id),
            content=success_body(attempt.checkout_request_id),
            headers=headers,
        )
    return answer.status_code, order.id


async def test_enforce_refuses_an_unlisted_source_and_keeps_the_body(
    enforcing: RunningDuka,
) -> None:
    status, order_id = await paid_callback(enforcing, "203.0.113.9")
    assert status == 403
    assert [p.status for p in await payment_rows(enforcing.engine, order_id)] == ["pending"]
    [event] = await event_rows(enforcing.engine, "callback")
    assert (event.status, event.source_ip) == ("rejected", "203.0.113.9")


async def test_enforce_accepts_safaricom_through_our_proxy(enforcing: RunningDuka) -> None:
    status, order_id = await paid_callback(enforcing, SAFARICOM)
    assert status == 200
    assert [p.status for p in await payment_rows(enforcing.engine, order_id)] == ["paid"]
    [event] = await event_rows(enforcing.engine, "callback")
    assert event.source_ip == SAFARICOM


async def test_a_forwarded_header_from_an_untrusted_peer_is_ignored(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> None:
    duka, runner = await start(
        database_url,
        free_socket,
        tmp_path,
        DUKA_CALLBACK_IP_MODE="enforce",
        DUKA_CALLBACK_IPS=SAFARICOM,
    )
    try:
        status, _ = await paid_callback(duka, SAFARICOM)  # claims Safaricom; the peer is not
        assert status == 403
        [event] = await event_rows(duka.engine, "callback")
        assert event.source_ip == "127.0.0.1"
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


async def test_log_mode_accepts_an_unlisted_source_and_says_so(
    database_url: str,
    free_socket: socket.socket,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # With confirmation by query off, the callback alone pays (see test_confirm_by_query).
    duka, runner = await start(
        database_url, free_socket, tmp_path, DUKA_CALLBACK_IPS=SAFARICOM, DUKA_CONFIRM_PAID="never"
    )
    try:
        status, order_id = await paid_callback(duka, None)
        assert status == 200
        assert [p.status for p in await payment_rows(duka.engine, order_id)] == ["paid"]
        assert any("not a listed address" in r.getMessage() for r in caplog.records)
        [event] = await event_rows(duka.engine, "callback")
        assert event.source_ip == "127.0.0.1"
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
