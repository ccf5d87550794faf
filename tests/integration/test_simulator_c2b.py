"""The simulator's C2B over real HTTP on loopback: httpx registers and pays, a merchant app on
127.0.0.1 answers validations and takes confirmations."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web

from payments.credentials import NAIROBI, parse_daraja_timestamp
from payments.simulator import (
    C2BStatus,
    DecidedBy,
    RequestRejectedError,
    RunningSimulator,
    SimulatorConfig,
    start_simulator,
)

# Short enough that a silent ValidationURL costs a test a fraction of a second.
FAST = SimulatorConfig(c2b_validation_timeout_seconds=0.2)
KEY, SECRET = FAST.consumer_key, FAST.consumer_secret
REGISTER_V1 = "/mpesa/c2b/v1/registerurl"
REGISTER_V2 = "/mpesa/c2b/v2/registerurl"
SIMULATE = "/mpesa/c2b/v1/simulate"
ACCEPT = {"ResultCode": "0", "ResultDesc": "Accepted"}
CONFIRMATION_FIELDS = [
    "TransactionType",
    "TransID",
    "TransTime",
    "TransAmount",
    "BusinessShortCode",
    "BillRefNumber",
    "InvoiceNumber",
    "OrgAccountBalance",
    "ThirdPartyTransID",
    "MSISDN",
    "FirstName",
    "MiddleName",
    "LastName",
]


@dataclass
class Merchant:
    """The merchant's C2B endpoints. ``validation_answer`` None: the ValidationURL never answers."""

    base_url: str = ""
    validation_answer: dict[str, Any] | None = field(default_factory=lambda: dict(ACCEPT))
    validations: list[dict[str, Any]] = field(default_factory=list)
    confirmation_texts: list[str] = field(default_factory=list)
    confirmations: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    content_types: list[str] = field(default_factory=list)
    # Set at teardown so a validation handler left hanging can finish.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def validation_url(self) -> str:
        return f"{self.base_url}/hooks/c2b/validate/s3cr3t"

    @property
    def confirmation_url(self) -> str:
        return f"{self.base_url}/hooks/c2b/confirm/s3cr3t"

    async def next_confirmation(self, within_seconds: float = 5.0) -> tuple[str, dict[str, Any]]:
        text = await asyncio.wait_for(self.confirmations.get(), within_seconds)
        return text, json.loads(text)


@pytest.fixture
async def merchant() -> AsyncIterator[Merchant]:
    state = Merchant()

    async def validate(request: web.Request) -> web.Response:
        state.content_types.append(request.content_type)
        state.validations.append(await request.json())
        answer = state.validation_answer
        if answer is None:
            await state.release.wait()
            answer = ACCEPT
        return web.json_response(answer)

    async def confirm(request: web.Request) -> web.Response:
        state.content_types.append(request.content_type)
        text = await request.text()
        state.confirmation_texts.append(text)
        state.confirmations.put_nowait(text)
        return web.json_response({"ResultCode": 0, "ResultDesc": "Success"})

    app = web.Application()
    app.router.add_post("/hooks/c2b/validate/{secret}", validate)
    app.router.add_post("/hooks/c2b/confirm/{secret}", confirm)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    state.release.set()
    await runner.cleanup()


@pytest.fixture
def config() -> SimulatorConfig:
    """Overridden by parametrizing ``config`` indirectly, or by tests that start their own."""
    return FAST


@pytest.fixture
async def sim(config: SimulatorConfig) -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(config, "127.0.0.1", 0)
    yield running
    await running.stop()


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5.0) as http:
        yield http


@pytest.fixture
async def token(client: httpx.AsyncClient) -> str:
    response = await client.get(
        "/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=(KEY, SECRET)
    )
    assert response.status_code == 200
    value = response.json()["access_token"]
    assert isinstance(value, str)
    return value


def register_body(merchant: Merchant, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ShortCode": "174379",
        "ResponseType": "Completed",
        "ConfirmationURL": merchant.confirmation_url,
        "ValidationURL": merchant.validation_url,
    }
    body.update(changes)
    return body


def simulate_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ShortCode": 174379,
        "CommandID": "CustomerPayBillOnline",
        "Amount": "270",
        "Msisdn": 254712345126,
        "BillRefNumber": "dk-7f3k2q ",
    }
    body.update(changes)
    return body


async def post(
    client: httpx.AsyncClient, path: str, token: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})


async def register(
    client: httpx.AsyncClient, token: str, merchant: Merchant, **changes: Any
) -> httpx.Response:
    return await post(client, REGISTER_V2, token, register_body(merchant, **changes))


def assert_daraja_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"requestId", "errorCode", "errorMessage"}
    assert (body["errorCode"], body["errorMessage"]) == (code, message)


# --- registerurl -------------------------------------------------------------------------------


async def test_registration_answers_success_with_safaricoms_misspelt_key(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    response = await register(client, token, merchant, ShortCode=174379)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"OriginatorCoversationID", "ResponseCode", "ResponseDescription"}
    assert (body["ResponseCode"], body["ResponseDescription"]) == ("0", "Success")
    registration = sim.simulator.c2b_registration
    assert registration is not None
    assert registration.confirmation_url == merchant.confirmation_url
    assert registration.validation_url == merchant.validation_url
    assert registration.response_type == "Completed"


async def test_a_second_registration_is_refused_like_production(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    """v1 and v2 share the registration; the old URLs stay."""
    first = await post(client, REGISTER_V1, token, register_body(merchant))
    assert first.status_code == 200
    again = await register(client, token, merchant, ResponseType="Cancelled")
    assert_daraja_error(again, 500, "500.003.1001", "Urls are already registered")
    registration = sim.simulator.c2b_registration
    assert registration is not None
    assert registration.response_type == "Completed"
    assert len(sim.simulator.c2b_register_requests) == 2


@pytest.mark.parametrize("config", [SimulatorConfig(c2b_allow_reregistration=True)])
async def test_reregistration_replaces_the_urls_when_the_sandbox_flag_is_set(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    new_url = merchant.confirmation_url + "-v2"
    again = await register(client, token, merchant, ConfirmationURL=new_url)
    assert again.status_code == 200
    registration = sim.simulator.c2b_registration
    assert registration is not None
    assert registration.confirmation_url == new_url


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"ShortCode": "600000"}, "ShortCode"),
        ({"ShortCode": "17437A"}, "ShortCode"),
        ({"ResponseType": "completed"}, "ResponseType"),
        ({"ResponseType": None}, "ResponseType"),
        ({"ConfirmationURL": "https://shop.example.co.ke/MPesa/confirm"}, "ConfirmationURL"),
        ({"ConfirmationURL": "shop.example.co.ke/confirm"}, "ConfirmationURL"),
        ({"ValidationURL": "https://shop.example.co.ke/validate?Query=1"}, "ValidationURL"),
        ({"ValidationURL": "ftp://shop.example.co.ke/validate"}, "ValidationURL"),
        ({"ValidationURL": "https://shop.example.co.ke/run.EXE"}, "ValidationURL"),
    ],
)
async def test_registration_field_errors_name_the_field(
    client: httpx.AsyncClient,
    sim: RunningSimulator,
    token: str,
    merchant: Merchant,
    changes: dict[str, Any],
    field_name: str,
) -> None:
    response = await register(client, token, merchant, **changes)
    assert_daraja_error(response, 400, "400.002.02", f"Bad Request - Invalid {field_name}")
    assert sim.simulator.c2b_registration is None


async def test_a_body_that_is_not_json_is_an_invalid_payload(
    client: httpx.AsyncClient, token: str
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    as_form = await client.post(REGISTER_V2, data={"ShortCode": "174379"}, headers=auth)
    assert_daraja_error(as_form, 400, "400.002.05", "Invalid Request Payload")
    malformed = await client.post(
        SIMULATE, content=b"{nope", headers={**auth, "Content-Type": "application/json"}
    )
    assert_daraja_error(malformed, 400, "400.002.05", "Invalid Request Payload")


async def test_c2b_endpoints_refuse_a_missing_or_expired_token(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    for path, body in ((REGISTER_V2, register_body(merchant)), (SIMULATE, simulate_body())):
        missing = await client.post(path, json=body)
        assert_daraja_error(missing, 404, "404.001.03", "Invalid Access Token")
    sim.simulator.expire_tokens()
    expired = await register(client, token, merchant)
    assert_daraja_error(expired, 404, "404.001.03", "Invalid Access Token")
    assert sim.simulator.c2b_registration is None
    assert sim.simulator.c2b_payments == {}


# --- simulate: refusals ------------------------------------------------------------------------


async def test_simulate_without_registered_urls_is_refused(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str
) -> None:
    response = await post(client, SIMULATE, token, simulate_body())
    assert_daraja_error(
        response, 500, "500.003.1001", "C2B URLs are not registered for this ShortCode"
    )
    assert sim.simulator.c2b_payments == {}


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"ShortCode": "600000"}, "ShortCode"),
        ({"CommandID": "CustomerBuyGoodsOnline"}, "CommandID"),
        ({"CommandID": "BusinessPayBill"}, "CommandID"),
        ({"Amount": 10.5}, "Amount"),
        ({"Amount": 0}, "Amount"),
        ({"Amount": 250_001}, "Amount"),
        ({"Msisdn": "0712345126"}, "Msisdn"),
        ({"Msisdn": "255712345126"}, "Msisdn"),
        ({"BillRefNumber": "X" * 21}, "BillRefNumber"),
        ({"BillRefNumber": ""}, "BillRefNumber"),
    ],
)
async def test_simulate_field_errors_name_the_field(
    client: httpx.AsyncClient,
    sim: RunningSimulator,
    token: str,
    merchant: Merchant,
    changes: dict[str, Any],
    field_name: str,
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    response = await post(client, SIMULATE, token, simulate_body(**changes))
    assert_daraja_error(response, 400, "400.002.02", f"Bad Request - Invalid {field_name}")
    assert sim.simulator.c2b_payments == {}


# --- simulate: the payment ---------------------------------------------------------------------


async def test_accepted_payment_is_validated_then_confirmed_with_string_fields(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    response = await post(client, SIMULATE, token, simulate_body())
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"OriginatorCoversationID", "ResponseCode", "ResponseDescription"}
    assert answer["ResponseCode"] == "0"
    assert answer["ResponseDescription"] == "Accept the service request successfully."

    text, confirmation = await merchant.next_confirmation()
    assert list(confirmation) == CONFIRMATION_FIELDS
    assert all(isinstance(value, str) for value in confirmation.values())
    assert '"TransAmount": "270.00"' in text
    assert confirmation["TransactionType"] == "Pay Bill"
    assert re.fullmatch(r"[A-Z][A-Z0-9]{9}", confirmation["TransID"])
    paid_at = parse_daraja_timestamp(confirmation["TransTime"])
    assert abs(paid_at - datetime.now(NAIROBI)) < timedelta(minutes=1)  # Nairobi time
    assert confirmation["BusinessShortCode"] == "174379"
    assert confirmation["BillRefNumber"] == "dk-7f3k2q "  # exactly what the customer typed
    assert confirmation["MSISDN"] == "2547 ***** 126"
    assert confirmation["FirstName"] == "JOHN"
    assert confirmation["OrgAccountBalance"] == "270.00"
    assert (confirmation["InvoiceNumber"], confirmation["ThirdPartyTransID"]) == ("", "")
    assert (confirmation["MiddleName"], confirmation["LastName"]) == ("", "")

    [validation] = merchant.validations
    assert validation == {**confirmation, "OrgAccountBalance": ""}
    assert merchant.content_types == ["application/json", "application/json"]
    [sent_validation] = sim.simulator.c2b_validations_sent
    assert sent_validation == (merchant.validation_url, validation, 200, ACCEPT)
    [sent] = await sim.simulator.wait_for_c2b_confirmations(1)
    assert sent == (merchant.confirmation_url, confirmation, 200)
    payment = sim.simulator.c2b_payments[confirmation["TransID"]]
    assert payment.originator_conversation_id == answer["OriginatorCoversationID"]
    assert (payment.status, payment.decided_by, payment.result_code) == (
        C2BStatus.COMPLETED,
        DecidedBy.VALIDATION,
        "0",
    )


async def test_validation_rejection_moves_no_money_and_sends_no_confirmation(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    merchant.validation_answer = {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
    assert (await post(client, SIMULATE, token, simulate_body())).status_code == 200
    [payment] = sim.simulator.c2b_payments.values()
    settled = await sim.simulator.wait_c2b_settled(payment.trans_id)
    assert settled.rejected
    assert (settled.decided_by, settled.result_code) == (DecidedBy.VALIDATION, "C2B00012")
    # A rejection starts no delivery, so nothing can still be in flight.
    assert sim.simulator.c2b_confirmations_sent == []
    assert merchant.confirmation_texts == []

    merchant.validation_answer = ACCEPT
    accepted = await sim.simulator.pay_bill("254712345126", "DK-7F3K2Q", 100)
    assert accepted.org_account_balance == "100.00"  # the rejected 270 never arrived


async def test_a_numeric_accept_code_proceeds_and_third_party_id_is_echoed(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    merchant.validation_answer = {"ResultCode": 0, "ThirdPartyTransID": "DUKA-42"}
    assert (await post(client, SIMULATE, token, simulate_body())).status_code == 200
    _, confirmation = await merchant.next_confirmation()
    assert confirmation["ThirdPartyTransID"] == "DUKA-42"
    assert merchant.validations[0]["ThirdPartyTransID"] == ""


@pytest.mark.parametrize(
    ("response_type", "confirmed"), [("Completed", True), ("Cancelled", False)]
)
async def test_a_silent_validation_url_gets_the_registered_response_type(
    client: httpx.AsyncClient,
    sim: RunningSimulator,
    token: str,
    merchant: Merchant,
    response_type: str,
    confirmed: bool,
) -> None:
    registered = await register(client, token, merchant, ResponseType=response_type)
    assert registered.status_code == 200
    merchant.validation_answer = None
    payment = await sim.simulator.pay_bill("254712345126", "DK-7F3K2Q", 270)
    assert payment.decided_by is DecidedBy.RESPONSE_TYPE
    assert payment.result_code is None
    assert payment.rejected is not confirmed
    [validation] = sim.simulator.c2b_validations_sent
    assert (validation.status, validation.answer) == (None, None)
    expected = 1 if confirmed else 0
    assert len(sim.simulator.c2b_confirmations_sent) == expected
    assert len(merchant.confirmation_texts) == expected


@pytest.mark.parametrize("config", [SimulatorConfig(c2b_validation_active=False)])
async def test_without_external_validation_only_the_confirmation_is_sent(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    payment = await sim.simulator.pay_bill("254112345678", "DK-7F3K2Q", 50)
    assert payment.decided_by is DecidedBy.NO_VALIDATION
    _, confirmation = await merchant.next_confirmation()
    assert confirmation["MSISDN"] == "2541 ***** 678"
    assert merchant.validations == []
    assert sim.simulator.c2b_validations_sent == []


# --- steering and pay_bill ---------------------------------------------------------------------


async def test_duplicate_steering_posts_the_same_confirmation_twice_once(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    sim.simulator.duplicate_next_c2b_confirmation()
    assert (await post(client, SIMULATE, token, simulate_body())).status_code == 200
    first, _ = await merchant.next_confirmation()
    second, _ = await merchant.next_confirmation()
    assert first == second
    sent = await sim.simulator.wait_for_c2b_confirmations(2)
    assert sent[0] == sent[1]
    later = await sim.simulator.pay_bill("254712345126", "DK-7F3K2Q", 100)
    assert len(sim.simulator.c2b_confirmations_sent) == 3  # the steering was for one payment
    assert later.trans_id != sent[0].body["TransID"]


async def test_drop_steering_records_the_confirmation_as_dropped(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    sim.simulator.drop_next_c2b_confirmation()
    payment = await sim.simulator.pay_bill("254712345126", "DK-7F3K2Q", 270)
    assert payment.status is C2BStatus.COMPLETED  # the money moved; only the POST is lost
    [dropped] = sim.simulator.c2b_confirmations_dropped
    assert dropped.body["TransID"] == payment.trans_id
    assert sim.simulator.c2b_confirmations_sent == []
    assert merchant.confirmation_texts == []


async def test_pay_bill_keeps_a_running_balance_and_unique_trans_ids(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    first = await sim.simulator.pay_bill("254712345126", "DK-1", 270, first_name="WANJIRU")
    second = await sim.simulator.pay_bill("254712345126", "DK-2", 1000)
    assert (first.org_account_balance, second.org_account_balance) == ("270.00", "1270.00")
    assert first.trans_id != second.trans_id
    sent = await sim.simulator.wait_for_c2b_confirmations(2)
    assert [entry.body["FirstName"] for entry in sent] == ["WANJIRU", "JOHN"]
    with pytest.raises(RequestRejectedError) as caught:
        await sim.simulator.pay_bill("0712345126", "DK-3", 100)
    assert caught.value.error.error_message == "Bad Request - Invalid Msisdn"


@pytest.mark.parametrize("config", [SimulatorConfig(till_number="600200")])
async def test_a_till_takes_only_buy_goods_without_an_account(
    client: httpx.AsyncClient, sim: RunningSimulator, token: str, merchant: Merchant
) -> None:
    assert (await register(client, token, merchant)).status_code == 200
    pay_bill = await post(client, SIMULATE, token, simulate_body())
    assert_daraja_error(pay_bill, 400, "400.002.02", "Bad Request - Invalid CommandID")
    buy_goods = {"CommandID": "CustomerBuyGoodsOnline"}
    with_account = await post(client, SIMULATE, token, simulate_body(**buy_goods))
    assert_daraja_error(with_account, 400, "400.002.02", "Bad Request - Invalid BillRefNumber")
    ok = await post(client, SIMULATE, token, simulate_body(**buy_goods, BillRefNumber=""))
    assert ok.status_code == 200
    _, confirmation = await merchant.next_confirmation()
    assert (confirmation["TransactionType"], confirmation["BillRefNumber"]) == ("Buy Goods", "")
