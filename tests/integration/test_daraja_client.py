"""Our Daraja client against the simulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.config import SANDBOX_PASSKEY, SIMULATOR_CONSUMER_KEY, SIMULATOR_CONSUMER_SECRET
from payments.daraja_client import DarajaClient, InvalidPushRequest, StkPushRequest
from payments.errors import (
    DarajaConfigError,
    DarajaUnavailable,
    PushOutcomeUnknown,
    PushRefused,
    SubscriberBusy,
)
from payments.result_codes import FailureReason
from payments.settings import DarajaEnvironment, DarajaSettings
from payments.simulator import RunningSimulator, SimulatorConfig, rules, start_simulator

CALLBACK = "http://127.0.0.1:9/hooks/stk/abcdefghijklmnopqrstuvwxyz012345"
PUSH = StkPushRequest("254712345678", 100, "DK-7KX3M9")


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(
        SimulatorConfig(callback_delay_seconds=0.05, till_number="600100")
    )
    yield running
    await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def client_for(sim: RunningSimulator, http: httpx.AsyncClient, **changes: Any) -> DarajaClient:
    return client_at(sim.base_url, http, **changes)


def client_at(base_url: str, http: httpx.AsyncClient, **changes: Any) -> DarajaClient:
    return DarajaClient(dataclasses.replace(simulator_settings(base_url), **changes), http)


def simulator_settings(base_url: str) -> DarajaSettings:
    """The simulator's own credentials, at ``base_url``."""
    return DarajaSettings(
        environment=DarajaEnvironment.SIMULATOR,
        base_url=base_url,
        consumer_key=SIMULATOR_CONSUMER_KEY,
        consumer_secret=SIMULATOR_CONSUMER_SECRET,
        passkey=SANDBOX_PASSKEY,
        short_code="174379",
        till_number=None,
        callback_url=CALLBACK,
        request_timeout_seconds=5.0,
    )


async def test_query_says_pending_until_resolved_then_gives_the_string_code(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    client = client_for(sim, http)
    sim.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    accepted = await client.stk_push(PUSH)
    assert accepted.checkout_request_id.startswith("ws_CO_")
    pending = await client.stk_query(accepted.checkout_request_id)
    assert pending.pending  # "The transaction is being processed" is not a failure
    sim.simulator.resolve(accepted.checkout_request_id)
    answer = await client.stk_query(accepted.checkout_request_id)
    assert answer.result is not None
    assert answer.result.result_code == "1037"
    assert not answer.result.succeeded


async def test_one_oauth_call_for_many_concurrent_pushes(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    client = client_for(sim, http)
    pushes = [StkPushRequest(f"2547{i:02d}345678", 10 + i, f"DK-{i:06d}") for i in range(20)]
    accepted = await asyncio.gather(*(client.stk_push(p) for p in pushes))
    assert sim.simulator.oauth_calls == 1
    assert len({a.checkout_request_id for a in accepted}) == 20


async def test_expired_token_is_refreshed_once_and_the_push_sent_once(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    client = client_for(sim, http)
    await client.stk_push(PUSH)
    sim.simulator.expire_tokens()
    await client.stk_push(dataclasses.replace(PUSH, amount=101))
    assert sim.simulator.oauth_calls == 2
    # Three requests reached the push endpoint; the one refused for its token did nothing.
    assert len(sim.simulator.push_requests) == 3
    assert len(sim.simulator.transactions) == 2


async def test_no_second_push_after_a_timeout(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    """The push reached Daraja but the answer did not come back in time: never resend."""
    client = client_for(sim, http, request_timeout_seconds=0.3)
    sim.simulator.fail_next_push(delay_seconds=1.0)
    with pytest.raises(PushOutcomeUnknown):
        await client.stk_push(PUSH)
    assert len(sim.simulator.push_requests) == 1


async def test_no_second_push_after_a_5xx(sim: RunningSimulator, http: httpx.AsyncClient) -> None:
    client = client_for(sim, http)
    sim.simulator.fail_next_push(status=500)
    with pytest.raises(PushOutcomeUnknown) as caught:
        await client.stk_push(PUSH)
    assert caught.value.error_code == "500.003.1001"
    assert len(sim.simulator.push_requests) == 1


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_a_token_outage_is_daraja_unavailable_not_a_wrong_key_and_nothing_is_pushed(
    sim: RunningSimulator, http: httpx.AsyncClient, status: int
) -> None:
    client = client_for(sim, http)
    sim.simulator.fail_next_token(status)
    with pytest.raises(DarajaUnavailable, match=f"HTTP {status}") as caught:
        await client.stk_push(PUSH)
    assert caught.value.reason is FailureReason.UNREACHABLE  # "could not reach M-Pesa"
    assert sim.simulator.push_requests == []
    accepted = await client.stk_push(PUSH)  # Daraja back: the next try goes through
    assert accepted.checkout_request_id
    assert len(sim.simulator.push_requests) == 1


async def test_a_push_answered_429_is_refused_and_not_sent_again_by_itself(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    """A 4xx is a refusal (a gateway's 429 did not process it): the customer may try
    again; the client never repeats a push on its own."""
    client = client_for(sim, http)
    sim.simulator.fail_next_push(status=429)
    with pytest.raises(PushRefused):
        await client.stk_push(PUSH)
    assert len(sim.simulator.push_requests) == 1


async def test_locked_subscriber_is_a_typed_retry_later_error(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    client = client_for(sim, http)
    with pytest.raises(SubscriberBusy) as caught:
        await client.stk_push(dataclasses.replace(PUSH, msisdn="254712000008"))
    assert caught.value.error_code == "500.001.1001"
    assert "Unable to lock subscriber" in caught.value.error_message
    assert caught.value.reason is FailureReason.MPESA_BUSY


async def test_wrong_passkey_is_a_configuration_error(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    client = client_for(sim, http, passkey="not-the-passkey")
    with pytest.raises(DarajaConfigError) as caught:
        await client.stk_push(PUSH)
    assert "Wrong credentials" in caught.value.error_message
    assert caught.value.reason is FailureReason.SHOP_SETUP


async def test_wrong_consumer_secret_is_a_configuration_error(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    client = client_for(sim, http, consumer_secret="wrong")
    with pytest.raises(DarajaConfigError, match="MPESA_CONSUMER_SECRET"):
        await client.stk_push(PUSH)
    assert sim.simulator.push_requests == []


async def test_banned_callback_url_is_a_configuration_error(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    client = client_for(sim, http, callback_url="http://127.0.0.1:9/mpesa/callback/abc")
    with pytest.raises(DarajaConfigError) as caught:
        await client.stk_push(PUSH)
    assert caught.value.error_code == "400.002.02"
    assert "CallBackURL" in caught.value.error_message


async def test_buy_goods_push_uses_store_number_and_till(
    sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    client = client_for(sim, http, till_number="600100")
    accepted = await client.stk_push(PUSH)
    body = sim.simulator.push_requests[-1]
    assert body["TransactionType"] == "CustomerBuyGoodsOnline"
    assert (body["BusinessShortCode"], body["PartyB"]) == ("174379", "600100")
    transaction = await sim.simulator.wait_resolved(accepted.checkout_request_id)
    assert transaction.outcome.succeeded


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (StkPushRequest("254712345678", 0, "DK-1"), "KES 1 to 250,000"),
        (StkPushRequest("254712345678", 250_001, "DK-1"), "KES 1 to 250,000"),
        (StkPushRequest("254712345678", 10.5, "DK-1"), "whole shillings"),  # type: ignore[arg-type]
        (StkPushRequest("0712345678", 10, "DK-1"), "254 followed by 9 digits"),
        (StkPushRequest("254712345678", 10, "DK-123456789012"), "1-12"),
        (StkPushRequest("254712345678", 10, "DK#1"), "1-12"),
    ],
)
async def test_invalid_push_is_refused_before_sending(
    sim: RunningSimulator, http: httpx.AsyncClient, request_: StkPushRequest, problem: str
) -> None:
    client = client_for(sim, http)
    with pytest.raises(InvalidPushRequest, match=problem):
        await client.stk_push(request_)
    assert sim.simulator.push_requests == []
    assert sim.simulator.oauth_calls == 0


async def test_a_token_refused_twice_is_a_configuration_error(http: httpx.AsyncClient) -> None:
    """A gateway that refuses every token (say, the product is not on the app)."""
    calls = {"oauth": 0, "push": 0}

    async def token(request: web.Request) -> web.Response:
        calls["oauth"] += 1
        return web.json_response({"access_token": f"t{calls['oauth']}", "expires_in": "3599"})

    async def push(request: web.Request) -> web.Response:
        calls["push"] += 1
        refusal = {
            "requestId": "1",
            "errorCode": "404.001.03",
            "errorMessage": "Invalid Access Token",
        }
        return web.json_response(refusal, status=404)

    gateway = web.Application()
    gateway.add_routes(
        [web.get("/oauth/v1/generate", token), web.post("/mpesa/stkpush/v1/processrequest", push)]
    )
    runner = web.AppRunner(gateway)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        client = client_at(f"http://127.0.0.1:{runner.addresses[0][1]}", http)
        with pytest.raises(DarajaConfigError, match="refuses a fresh access token"):
            await client.stk_push(PUSH)
        assert calls == {"oauth": 2, "push": 2}
    finally:
        await runner.cleanup()
