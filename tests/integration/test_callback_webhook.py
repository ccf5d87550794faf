"""The callback endpoint over real HTTP: what it accepts, what it refuses, what it keeps."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from bot.app import PAYMENTS
from payments.http_body import MAX_CALLBACK_BYTES
from payments.simulator import rules
from tests.conftest import CALLBACK_SECRET, RunningDuka
from tests.helpers import event_rows, make_order, outbox_rows, payment_rows, wait_until


def success_body(checkout_id: str, amount: str = "350.00", receipt: str = "TST0000001") -> bytes:
    return (
        '{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1",'
        f'"CheckoutRequestID":"{checkout_id}","ResultCode":0,'
        '"ResultDesc":"The service request is processed successfully.",'
        '"CallbackMetadata":{"Item":['
        f'{{"Name":"Amount","Value":{amount}}},'
        f'{{"Name":"MpesaReceiptNumber","Value":"{receipt}"}},'
        '{"Name":"Balance"},'
        '{"Name":"TransactionDate","Value":20261126102115},'
        '{"Name":"PhoneNumber","Value":254712345678}]}}}}'
    ).encode()


async def post(duka: RunningDuka, body: bytes, url: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            url or duka.callback_url, content=body, headers={"Content-Type": "application/json"}
        )


async def test_callback_is_acknowledged_in_darajas_format(duka: RunningDuka) -> None:
    response = await post(duka, success_body("ws_CO_unknown_1"))
    assert response.status_code == 200
    assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}


async def test_wrong_secret_is_a_plain_404_and_stores_nothing(duka_sqlite: RunningDuka) -> None:
    wrong = duka_sqlite.callback_url.replace(CALLBACK_SECRET, "x" * len(CALLBACK_SECRET))
    response = await post(duka_sqlite, success_body("ws_CO_forged"), url=wrong)
    assert response.status_code == 404
    other_path = await post(duka_sqlite, b"{}", url=duka_sqlite.base_url + "/hooks/other")
    assert other_path.status_code == 404
    assert await event_rows(duka_sqlite.engine) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "top level is missing or not an object"),
        (b'{"Body":{}}', "Body.stkCallback is missing"),
        (b'{"Body":{"stkCallback":{"ResultCode":0}}}', "CheckoutRequestID is missing"),
        (b'{"Body":{"stkCallback":{"CheckoutRequestID":"ws_CO_1"}}}', "ResultCode is missing"),
        (
            b'{"Body":{"stkCallback":{"CheckoutRequestID":"ws_CO_1","ResultCode":0}}}',
            "CallbackMetadata is missing",
        ),
        (b"\xff\xfe garbage", "not valid JSON"),
    ],
)
async def test_malformed_callback_gets_400_with_reason_and_is_kept(
    duka_sqlite: RunningDuka, body: bytes, reason: str
) -> None:
    response = await post(duka_sqlite, body)
    assert response.status_code == 400
    assert reason in response.json()["ResultDesc"]
    [event] = await event_rows(duka_sqlite.engine)
    assert event.status == "rejected"
    assert reason in event.note
    assert event.raw  # the raw body is kept for audit, even when it is garbage


async def test_oversized_callback_gets_413_and_a_truncated_copy_is_kept(
    duka_sqlite: RunningDuka,
) -> None:
    response = await post(duka_sqlite, b"{" + b" " * (MAX_CALLBACK_BYTES * 2) + b"}")
    assert response.status_code == 413
    [event] = await event_rows(duka_sqlite.engine)
    assert event.status == "rejected"
    assert len(event.raw) == MAX_CALLBACK_BYTES


async def test_malformed_callback_changes_no_payment(duka: RunningDuka) -> None:
    order = await make_order(duka.engine)
    duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    started = await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    [payment] = await payment_rows(duka.engine, order.id)
    bad = json.dumps(
        {
            "Body": {
                "stkCallback": {"CheckoutRequestID": payment.checkout_request_id, "ResultCode": 0}
            }
        }
    ).encode()
    assert (await post(duka, bad)).status_code == 400
    assert (await payment_rows(duka.engine, order.id))[0].status == "pending"
    assert await outbox_rows(duka.engine) == []
    assert started.status == "pending"


async def test_callback_for_unknown_id_is_kept_then_applied_when_attempt_appears(
    duka: RunningDuka,
) -> None:
    """The callback can beat the push answer: its own URL names the attempt, so it applies."""
    order = await make_order(duka.engine)
    duka.simulator.answer_next_push_after_callback()
    started = await duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    assert started.status == "pending"
    [payment] = await payment_rows(duka.engine, order.id)
    assert payment.status == "paid"
    callbacks = await event_rows(duka.engine, "callback")
    assert [e.status for e in callbacks] == ["applied"]
    assert len(await outbox_rows(duka.engine, order.id)) == 2


async def test_string_result_code_fails_the_payment(duka: RunningDuka) -> None:
    order = await make_order(duka.engine)
    duka.simulator.force_next_outcome(rules.OPERATOR_DOES_NOT_EXIST)
    await duka.app[PAYMENTS].start_payment(order.id, "0712345678")

    async def failed() -> bool:
        return bool((await payment_rows(duka.engine, order.id))[0].status == "failed")

    await wait_until(failed, what="the SFC_IC0003 callback")
    [message] = await outbox_rows(duka.engine, order.id)
    assert message["payload"]["reason"] == "shop_setup"


async def test_callback_secret_never_reaches_the_logs(
    duka_sqlite: RunningDuka, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    order = await make_order(duka_sqlite.engine)
    await duka_sqlite.app[PAYMENTS].start_payment(order.id, "0712345678")
    await post(duka_sqlite, b"{broken")
    await post(duka_sqlite, success_body("ws_CO_x"))
    # httpx's records are this test's own client announcing the URL it calls.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any("/hooks/stk/***" in message for message in ours)  # the access log ran
    assert all(CALLBACK_SECRET not in message for message in ours)
    assert all("254712345678" not in message for message in ours)


async def test_a_body_with_a_false_content_encoding_gets_400_and_is_kept(
    duka: RunningDuka,
) -> None:
    """The framing lies (says gzip, is not): a plain 400, never a 500, and nothing applied."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            duka.callback_url,
            content=success_body("ws_CO_gzip"),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
    assert answer.status_code == 400
    [event] = await event_rows(duka.engine, "callback")
    assert (event.status, event.note) == (
        "rejected",
        "the body could not be read (RequestPayloadError)",
    )


@pytest.mark.parametrize("bad", ["\\u0000", "\\ud800"])
async def test_text_no_database_can_store_is_a_malformed_callback(
    duka: RunningDuka, bad: str
) -> None:
    """A NUL (PostgreSQL refuses it) or a lone surrogate (SQLite does) in a field: 400,
    the body kept, instead of a 503 and a body lost."""
    body = success_body(f"ws_CO_{bad}x").replace(b"\\\\", b"\\")
    answer = await post(duka, body)
    assert answer.status_code == 400
    [event] = await event_rows(duka.engine, "callback")
    assert event.status == "rejected"
