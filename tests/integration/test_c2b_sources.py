"""The source-address layer on the C2B routes, over real HTTP on SQLite and PostgreSQL: the
same DUKA_CALLBACK_IP_MODE as the STK callback, and every C2B confirmation kept with where
it came from (after trusted-proxy handling)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage.orders import OrderRecord
from tests.c2b_support import C2B_SECRET, c2b_url, confirmation_body, unmatched_rows
from tests.conftest import RunningDuka, make_config, start_duka
from tests.helpers import event_rows, make_order, order_status, outbox_rows, payment_rows

SAFARICOM = "196.201.214.200"
STRANGER = "203.0.113.9"


async def start(database_url: str, tmp_path: Path, **env: str) -> tuple[RunningDuka, Any]:
    """Duka with the Paybill routes on and the given source settings."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = make_config(
        database_url, port, tmp_path, MPESA_C2B_CONFIRMATION_URL=c2b_url(port), **env
    )
    return await start_duka(config, sock)


@pytest.fixture
async def enforcing(database_url: str, tmp_path: Path) -> AsyncIterator[RunningDuka]:
    """Only Safaricom's address is listed; 127.0.0.1 is our reverse proxy."""
    duka, runner = await start(
        database_url,
        tmp_path,
        DUKA_CALLBACK_IP_MODE="enforce",
        DUKA_CALLBACK_IPS=SAFARICOM,
        DUKA_TRUSTED_PROXIES="127.0.0.1",
    )
    try:
        yield duka
    finally:
        await runner.cleanup()


async def post(
    duka: RunningDuka, body: bytes, forwarded_for: str | None, *, validation: bool = False
) -> httpx.Response:
    daraja = duka.config.daraja
    url = daraja.c2b_validation_url if validation else daraja.c2b_confirmation_url
    headers = {"Content-Type": "application/json"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await client.post(url, content=body, headers=headers)


def paying(order: OrderRecord, trans_id: str) -> bytes:
    """Daraja's confirmation of exactly what ``order`` awaits."""
    return json.dumps(confirmation_body(trans_id, order.reference, str(order.total))).encode()


async def nothing_paid(duka: RunningDuka, order: OrderRecord) -> None:
    assert await order_status(duka.engine, order.id) == "awaiting_payment"
    assert await payment_rows(duka.engine, order.id) == []
    assert await unmatched_rows(duka.engine) == []
    assert await outbox_rows(duka.engine) == []


async def test_enforce_refuses_an_unlisted_c2b_confirmation_and_keeps_it_with_its_source(
    enforcing: RunningDuka,
) -> None:
    order = await make_order(enforcing.engine)
    answer = await post(enforcing, paying(order, "SRC0000001"), STRANGER)
    assert answer.status_code == 403
    await nothing_paid(enforcing, order)
    [event] = await event_rows(enforcing.engine, "c2b")
    assert (event.status, event.source_ip) == ("rejected", STRANGER)
    assert event.note == f"source {STRANGER} is not listed"
    assert "SRC0000001" in event.raw


async def test_enforce_accepts_safaricom_through_our_proxy_and_keeps_the_source(
    enforcing: RunningDuka,
) -> None:
    order = await make_order(enforcing.engine)
    answer = await post(enforcing, paying(order, "SRC0000002"), SAFARICOM)
    assert answer.status_code == 200
    assert await order_status(enforcing.engine, order.id) == "paid"
    [event] = await event_rows(enforcing.engine, "c2b")
    assert (event.status, event.source_ip) == ("applied", SAFARICOM)


async def test_enforce_refuses_an_unlisted_c2b_validation(enforcing: RunningDuka) -> None:
    order = await make_order(enforcing.engine)
    answer = await post(enforcing, paying(order, "SRC0000003"), STRANGER, validation=True)
    assert answer.status_code == 403
    assert answer.json()["ResultCode"] != "0"
    listed = await post(enforcing, paying(order, "SRC0000003"), SAFARICOM, validation=True)
    assert (listed.status_code, listed.json()["ResultCode"]) == (200, "0")
    await nothing_paid(enforcing, order)  # validation only answers


async def test_a_refused_body_is_kept_with_its_source_too(enforcing: RunningDuka) -> None:
    answer = await post(enforcing, b'{"TransID": ', SAFARICOM)
    assert answer.status_code == 400
    [event] = await event_rows(enforcing.engine, "c2b")
    assert (event.status, event.source_ip) == ("rejected", SAFARICOM)


async def test_a_forwarded_header_from_an_untrusted_peer_is_ignored(
    database_url: str, tmp_path: Path
) -> None:
    duka, runner = await start(
        database_url, tmp_path, DUKA_CALLBACK_IP_MODE="enforce", DUKA_CALLBACK_IPS=SAFARICOM
    )
    try:
        order = await make_order(duka.engine)
        # Claims Safaricom; the peer (127.0.0.1) is no proxy of ours.
        answer = await post(duka, paying(order, "SRC0000004"), SAFARICOM)
        assert answer.status_code == 403
        await nothing_paid(duka, order)
        [event] = await event_rows(duka.engine, "c2b")
        assert (event.status, event.source_ip) == ("rejected", "127.0.0.1")
    finally:
        await runner.cleanup()


async def test_log_mode_accepts_an_unlisted_c2b_confirmation_and_stores_its_source(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    duka, runner = await start(database_url, tmp_path, DUKA_CALLBACK_IPS=SAFARICOM)
    try:
        order = await make_order(duka.engine)
        caplog.set_level(logging.WARNING, logger="payments.c2b_webhook")
        answer = await post(duka, paying(order, "SRC0000005"), None)
        assert answer.status_code == 200
        assert await order_status(duka.engine, order.id) == "paid"
        [event] = await event_rows(duka.engine, "c2b")
        assert (event.status, event.source_ip) == ("applied", "127.0.0.1")
        [warning] = [r.getMessage() for r in caplog.records if "not a listed" in r.getMessage()]
        assert "127.0.0.1" in warning
        # The address only: neither the body nor the path's secret reaches the log.
        assert "SRC0000005" not in warning
        assert C2B_SECRET not in warning
    finally:
        await runner.cleanup()


async def test_unmatched_money_is_kept_with_its_source(enforcing: RunningDuka) -> None:
    order = await make_order(enforcing.engine)
    body = json.dumps(confirmation_body("SRC0000006", order.reference, "1.00")).encode()
    answer = await post(enforcing, body, SAFARICOM)
    assert answer.status_code == 200
    assert len(await unmatched_rows(enforcing.engine)) == 1
    [event] = await event_rows(enforcing.engine, "c2b")
    assert (event.status, event.source_ip) == ("unmatched", SAFARICOM)
