"""The Daraja simulator over real HTTP on loopback: httpx in, aiohttp callbacks out."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web

from payments.credentials import NAIROBI, daraja_timestamp, parse_daraja_timestamp, stk_password
from payments.simulator import RunningSimulator, SimulatorConfig, rules, start_simulator

FAST = SimulatorConfig(callback_delay_seconds=0.05)
KEY, SECRET = FAST.consumer_key, FAST.consumer_secret


@dataclass
class Receiver:
    """A merchant's callback endpoint: records raw text and parsed JSON, in arrival order."""

    url: str
    texts: list[str] = field(default_factory=list)
    arrived: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def next_body(self, within_seconds: float = 5.0) -> tuple[str, dict[str, Any]]:
        text = await asyncio.wait_for(self.arrived.get(), within_seconds)
        return text, json.loads(text)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(url="")

    async def take(request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        text = await request.text()
        state.texts.append(text)
        state.arrived.put_nowait(text)
        return web.json_response({"ResultCode": 0, "ResultDesc": "Accepted"})

    app = web.Application()
    app.router.add_post("/hooks/stk/{secret}", take)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/hooks/stk/s3cr3t"
    yield state
    await runner.cleanup()


async def _started(config: SimulatorConfig) -> RunningSimulator:
    return await start_simulator(config, "127.0.0.1", 0)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await _started(FAST)
    yield running
    await running.stop()


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5.0) as http:
        yield http


async def get_token(client: httpx.AsyncClient) -> str:
    response = await client.get(
        "/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=(KEY, SECRET)
    )
    assert response.status_code == 200
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def push_body(phone: str, callback_url: str, amount: int = 1250, **changes: Any) -> dict[str, Any]:
    timestamp = daraja_timestamp()
    body: dict[str, Any] = {
        "BusinessShortCode": 174379,
        "Password": stk_password("174379", FAST.passkey, timestamp),
        "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": amount,
        "PartyA": phone,
        "PartyB": 174379,
        "PhoneNumber": phone,
        "CallBackURL": callback_url,
        "AccountReference": "DK-7F3K2Q",
        "TransactionDesc": "Duka order",
    }
    body.update(changes)
    return body


def query_body(checkout_request_id: str) -> dict[str, Any]:
    timestamp = daraja_timestamp()
    return {
        "BusinessShortCode": "174379",
        "Password": stk_password("174379", FAST.passkey, timestamp),
        "Timestamp": timestamp,
        "CheckoutRequestID": checkout_request_id,
    }


async def push(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(
        "/mpesa/stkpush/v1/processrequest",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )


async def query(client: httpx.AsyncClient, token: str, checkout_request_id: str) -> httpx.Response:
    return await client.post(
        "/mpesa/stkpushquery/v1/query",
        json=query_body(checkout_request_id),
        headers={"Authorization": f"Bearer {token}"},
    )


def assert_daraja_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"requestId", "errorCode", "errorMessage"}
    assert (body["errorCode"], body["errorMessage"]) == (code, message)


# --- OAuth --------------------------------------------------------------------------------------


async def test_oauth_issues_a_token_with_a_string_expiry(
    client: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    response = await client.get(
        "/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=(KEY, SECRET)
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in"}
    assert body["expires_in"] == "3599"
    assert sim.simulator.oauth_calls == 1


async def test_oauth_refusals(client: httpx.AsyncClient, sim: RunningSimulator) -> None:
    """Wrong grant type, no Basic header, wrong secret: Daraja's 400.008.0x answers."""
    wrong_grant = await client.get(
        "/oauth/v1/generate", params={"grant_type": "password"}, auth=(KEY, SECRET)
    )
    assert_daraja_error(wrong_grant, 400, "400.008.02", "Invalid grant type passed")
    no_auth = await client.get("/oauth/v1/generate", params={"grant_type": "client_credentials"})
    assert_daraja_error(no_auth, 400, "400.008.01", "Invalid Authentication passed")
    wrong_secret = await client.get(
        "/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=(KEY, "nope")
    )
    assert_daraja_error(wrong_secret, 400, "400.008.01", "Invalid Authentication passed")
    assert sim.simulator.oauth_calls == 3


async def test_a_new_token_invalidates_the_old_one(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """Why Duka's workers must share one cached token."""
    old = await get_token(client)
    new = await get_token(client)
    stale = await push(client, old, push_body("254708374149", receiver.url))
    assert_daraja_error(stale, 404, "404.001.03", "Invalid Access Token")
    fresh = await push(client, new, push_body("254708374149", receiver.url))
    assert fresh.status_code == 200


async def test_missing_and_expired_tokens_are_refused(
    client: httpx.AsyncClient, sim: RunningSimulator, receiver: Receiver
) -> None:
    body = push_body("254708374149", receiver.url)
    missing = await client.post("/mpesa/stkpush/v1/processrequest", json=body)
    assert_daraja_error(missing, 404, "404.001.03", "Invalid Access Token")
    token = await get_token(client)
    sim.simulator.expire_tokens()
    expired = await push(client, token, body)
    assert_daraja_error(expired, 404, "404.001.03", "Invalid Access Token")
    assert len(sim.simulator.push_requests) == 2  # recorded even when refused
    assert sim.simulator.transactions == {}


# --- STK push -----------------------------------------------------------------------------------


async def test_push_with_the_right_password_is_accepted(
    client: httpx.AsyncClient, sim: RunningSimulator, receiver: Receiver
) -> None:
    token = await get_token(client)
    response = await push(client, token, push_body("254708374149", receiver.url))
    assert response.status_code == 200
    body = response.json()
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == "Success. Request accepted for processing"
    assert body["CustomerMessage"] == "Success. Request accepted for processing"
    assert re.fullmatch(r"ws_CO_\d{17}708374149\d*", body["CheckoutRequestID"])
    assert body["CheckoutRequestID"] in sim.simulator.transactions
    again = await push(client, token, push_body("254708374149", receiver.url))
    assert again.json()["CheckoutRequestID"] != body["CheckoutRequestID"]
    assert again.json()["MerchantRequestID"] != body["MerchantRequestID"]


async def test_push_with_a_wrong_password_is_wrong_credentials(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    token = await get_token(client)
    body = push_body("254708374149", receiver.url, Password="d3Jvbmc=")
    response = await push(client, token, body)
    assert_daraja_error(response, 500, "500.001.1001", "[MerchantValidate] - Wrong credentials")


async def test_push_field_errors_and_protocol_quirks(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    token = await get_token(client)
    auth = {"Authorization": f"Bearer {token}"}
    decimal_amount = await push(client, token, push_body("254708374149", receiver.url, Amount=10.5))
    assert_daraja_error(decimal_amount, 400, "400.002.02", "Bad Request - Invalid Amount")
    banned = await push(client, token, push_body("254708374149", receiver.url + "/mpesa"))
    assert_daraja_error(banned, 400, "400.002.02", "Bad Request - Invalid CallBackURL")
    as_form = await client.post(
        "/mpesa/stkpush/v1/processrequest",
        data={"BusinessShortCode": "174379"},
        headers=auth,
    )
    assert_daraja_error(as_form, 400, "400.002.02", "Bad Request - Invalid BusinessShortCode")
    malformed = await client.post(
        "/mpesa/stkpush/v1/processrequest",
        content=b"{not json",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert_daraja_error(malformed, 400, "400.002.05", "Invalid Request Payload")
    unknown_path = await client.post("/mpesa/stkpush/v2/processrequest", json={}, headers=auth)
    assert_daraja_error(unknown_path, 404, "404.001.01", "Resource not found")


async def test_success_callback_arrives_with_darajas_exact_shape(
    client: httpx.AsyncClient, sim: RunningSimulator, receiver: Receiver
) -> None:
    """Amount as text 1250.00, a valueless Balance, PhoneNumber and TransactionDate numbers."""
    token = await get_token(client)
    accepted = (await push(client, token, push_body("254708374149", receiver.url))).json()
    text, body = await receiver.next_body()
    assert re.search(r'\{"Name": "Amount", "Value": 1250\.00\}', text)
    callback = body["Body"]["stkCallback"]
    assert callback["MerchantRequestID"] == accepted["MerchantRequestID"]
    assert callback["CheckoutRequestID"] == accepted["CheckoutRequestID"]
    assert callback["ResultCode"] == 0
    assert callback["ResultDesc"] == "The service request is processed successfully."
    items = callback["CallbackMetadata"]["Item"]
    assert [item["Name"] for item in items] == [
        "Amount",
        "MpesaReceiptNumber",
        "Balance",
        "TransactionDate",
        "PhoneNumber",
    ]
    assert items[2] == {"Name": "Balance"}
    assert re.fullmatch(r"[A-Z0-9]{10}", items[1]["Value"])
    assert items[4]["Value"] == 254708374149  # a JSON number, not a string
    assert isinstance(items[3]["Value"], int)
    paid_at = parse_daraja_timestamp(items[3]["Value"])
    assert abs(paid_at - datetime.now(NAIROBI)) < timedelta(minutes=1)  # Nairobi time
    sent = await sim.simulator.wait_for_callbacks(1)
    assert sent[0][0] == receiver.url
    assert sent[0][2] == 200


async def test_failure_callback_has_a_numeric_code_and_no_metadata(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    token = await get_token(client)
    await push(client, token, push_body("254712345001", receiver.url))
    _, body = await receiver.next_body()
    assert body["Body"]["stkCallback"]["ResultCode"] == 1032
    assert body["Body"]["stkCallback"]["ResultDesc"] == "Request cancelled by user."
    assert "CallbackMetadata" not in body["Body"]["stkCallback"]


async def test_buy_goods_with_the_wrong_till_calls_back_sfc_ic0003(
    receiver: Receiver,
) -> None:
    running = await _started(SimulatorConfig(callback_delay_seconds=0.01, till_number="600200"))
    try:
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            token = await get_token(http)
            body = push_body(
                "254708374149",
                receiver.url,
                TransactionType="CustomerBuyGoodsOnline",
                PartyB="600100",
            )
            assert (await push(http, token, body)).status_code == 200
            text, parsed = await receiver.next_body()
        assert '"ResultCode": "SFC_IC0003"' in text
        assert parsed["Body"]["stkCallback"]["ResultDesc"] == "The operator does not exist."
    finally:
        await running.stop()


async def test_subscriber_lock_refuses_the_push_synchronously(
    client: httpx.AsyncClient, sim: RunningSimulator, receiver: Receiver
) -> None:
    token = await get_token(client)
    response = await push(client, token, push_body("254712345008", receiver.url))
    assert_daraja_error(
        response,
        500,
        "500.001.1001",
        "Unable to lock subscriber, a transaction is already in process for the current subscriber",
    )
    assert sim.simulator.transactions == {}


# --- STK query ----------------------------------------------------------------------------------


async def test_query_is_being_processed_until_resolved_then_answers_a_string_code(
    receiver: Receiver,
) -> None:
    """Pending is an HTTP 500 error; after resolution ResultCode is the string "0"."""
    running = await _started(SimulatorConfig(callback_delay_seconds=60))
    try:
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            token = await get_token(http)
            accepted = (await push(http, token, push_body("254708374149", receiver.url))).json()
            checkout_id = accepted["CheckoutRequestID"]
            pending = await query(http, token, checkout_id)
            assert_daraja_error(pending, 500, "500.001.1001", "The transaction is being processed")
            assert pending.json()["requestId"] == checkout_id
            running.simulator.resolve(checkout_id)
            done = await query(http, token, checkout_id)
        assert done.status_code == 200
        assert done.json() == {
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successfully",
            "MerchantRequestID": accepted["MerchantRequestID"],
            "CheckoutRequestID": checkout_id,
            "ResultCode": "0",
            "ResultDesc": "The service request is processed successfully.",
        }
        await receiver.next_body()  # resolving by hand still calls back
    finally:
        await running.stop()


async def test_query_for_an_unknown_id_is_a_bad_request(client: httpx.AsyncClient) -> None:
    token = await get_token(client)
    response = await query(client, token, "ws_CO_000000000000000000")
    assert_daraja_error(response, 400, "400.002.02", "Bad Request - Invalid CheckoutRequestID")


async def test_never_resolving_push_stays_being_processed(
    client: httpx.AsyncClient, sim: RunningSimulator, receiver: Receiver
) -> None:
    token = await get_token(client)
    checkout_id = (await push(client, token, push_body("254712345007", receiver.url))).json()[
        "CheckoutRequestID"
    ]
    with pytest.raises(TimeoutError):
        await sim.simulator.wait_resolved(checkout_id, timeout=0.3)  # 6x the callback delay
    pending = await query(client, token, checkout_id)
    assert_daraja_error(pending, 500, "500.001.1001", "The transaction is being processed")
    assert receiver.texts == []


# --- delivery rules -----------------------------------------------------------------------------


async def test_rule_005_delivers_two_identical_callbacks(
    client: httpx.AsyncClient, sim: RunningSimulator, receiver: Receiver
) -> None:
    token = await get_token(client)
    await push(client, token, push_body("254712345005", receiver.url))
    first, _ = await receiver.next_body()
    second, _ = await receiver.next_body()
    assert first == second
    sent = await sim.simulator.wait_for_callbacks(2)
    assert sent[0] == sent[1]


async def test_rule_006_drops_the_callback_but_the_query_says_paid(
    client: httpx.AsyncClient, sim: RunningSimulator, receiver: Receiver
) -> None:
    token = await get_token(client)
    checkout_id = (await push(client, token, push_body("254712345006", receiver.url))).json()[
        "CheckoutRequestID"
    ]
    transaction = await sim.simulator.wait_resolved(checkout_id)
    assert transaction.receipt is not None
    answer = await query(client, token, checkout_id)
    assert answer.status_code == 200
    assert answer.json()["ResultCode"] == "0"
    # A dropped callback starts no delivery at all, so nothing can still be in flight.
    assert sim.simulator.callbacks_sent == []
    assert receiver.texts == []


async def test_failed_callback_delivery_is_recorded_and_not_retried(
    client: httpx.AsyncClient, sim: RunningSimulator
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}/hooks/stk/s3cr3t"
    token = await get_token(client)
    await push(client, token, push_body("254708374149", url))
    sent = await sim.simulator.wait_for_callbacks(1)
    assert sent[0][0] == url
    assert sent[0][2] is None
    assert len(sim.simulator.callbacks_sent) == 1


async def test_fail_next_push_processes_it_but_answers_500(
    client: httpx.AsyncClient, sim: RunningSimulator, receiver: Receiver
) -> None:
    """The push reached Daraja: the prompt and callback happen even though the answer failed."""
    token = await get_token(client)
    sim.simulator.fail_next_push(delay_seconds=0.01)
    response = await push(client, token, push_body("254708374149", receiver.url))
    assert_daraja_error(response, 500, "500.003.1001", "Internal Server Error")
    assert len(sim.simulator.push_requests) == 1
    [transaction] = sim.simulator.transactions.values()
    _, callback = await receiver.next_body()
    assert callback["Body"]["stkCallback"]["CheckoutRequestID"] == transaction.checkout_request_id
    after = await push(client, token, push_body("254708374149", receiver.url))
    assert after.status_code == 200  # the fault was for one push only


async def test_forced_outcome_overrides_the_phone_rule_once(
    client: httpx.AsyncClient, sim: RunningSimulator, receiver: Receiver
) -> None:
    token = await get_token(client)
    sim.simulator.force_next_outcome(rules.INSUFFICIENT_FUNDS)
    await push(client, token, push_body("254708374149", receiver.url))
    _, forced = await receiver.next_body()
    assert forced["Body"]["stkCallback"]["ResultCode"] == 1
    await push(client, token, push_body("254708374149", receiver.url))
    _, normal = await receiver.next_body()
    assert normal["Body"]["stkCallback"]["ResultCode"] == 0
