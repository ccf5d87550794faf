"""The fake WhatsApp Cloud API against a plain HTTP client and a tiny webhook receiver.

These tests pin down that the fake answers like Meta (success envelope, Graph errors with the
right code, status and details, the 24-hour window) and that the webhooks it builds are signed
the way Meta signs them, so channel tests built on it fail for real reasons only. Everything
runs over loopback HTTP; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.fakes.graph_api import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_APP_SECRET,
    DEFAULT_PHONE_NUMBER_ID,
    DEFAULT_VERIFY_TOKEN,
    RE_ENGAGEMENT_DETAILS,
    ButtonNotFoundError,
    FakeGraph,
    WaUser,
)

USER = WaUser("254712345678", user_id="KE.1234567890123456789", name="Wanjiru Kamau")


@pytest.fixture
async def fake() -> AsyncIterator[FakeGraph]:
    async with FakeGraph() as server:
        yield server


@pytest.fixture
async def graph(fake: FakeGraph) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {DEFAULT_ACCESS_TOKEN}"}
    async with httpx.AsyncClient(base_url=fake.graph_url, headers=headers) as client:
        yield client


class Receiver:
    """A minimal webhook endpoint that checks Meta's signature over the raw bytes."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._post)
        app.router.add_get("/webhook", self._get)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/webhook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        header = request.headers.get("X-Hub-Signature-256")
        if header is None:
            return web.Response(status=401)
        expected = hmac.new(DEFAULT_APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(header.removeprefix("sha256="), expected):
            return web.Response(status=403)
        self.received.append(json.loads(raw))
        return web.Response(status=200)

    async def _get(self, request: web.Request) -> web.Response:
        query = request.query
        token = query.get("hub.verify_token", "")
        if query.get("hub.mode") == "subscribe" and hmac.compare_digest(
            token.encode(), DEFAULT_VERIFY_TOKEN.encode()
        ):
            return web.Response(text=query.get("hub.challenge", ""))
        return web.Response(status=403)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _text(to: str, body: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}}


def _buttons(to: str, *titles: str, body: str = "Add to cart?") -> dict[str, Any]:
    buttons = [
        {"type": "reply", "reply": {"id": f"b{i}", "title": title}}
        for i, title in enumerate(titles)
    ]
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "interactive",
        "interactive": {"type": "button", "body": {"text": body}, "action": {"buttons": buttons}},
    }


def _list(to: str, rows: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": "Our catalog"},
            "action": {"button": "Catalog", "sections": [{"title": "Groceries", "rows": rows}]},
        },
    }


def _template(to: str) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {"name": "order_paid", "language": {"code": "en"}},
    }


async def _send(graph: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    return await graph.post(f"/{DEFAULT_PHONE_NUMBER_ID}/messages", json=payload)


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_a_text_inside_the_window_is_accepted_and_recorded(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "habari")  # the user writes first: their window opens

    response = await _send(graph, _text("+254 712 345678", "Karibu! What would you like?"))

    assert response.status_code == 200
    reply = response.json()
    assert reply["messaging_product"] == "whatsapp"
    assert reply["contacts"] == [{"input": "+254 712 345678", "wa_id": "254712345678"}]
    wamid = reply["messages"][0]["id"]
    assert wamid.startswith("wamid.")
    [sent] = fake.sent
    assert (sent.to, sent.type, sent.accepted, sent.error_code) == (
        "+254 712 345678",
        "text",
        True,
        None,
    )
    assert sent.message_id == wamid
    # Sends by phone and by BSUID both reach the same user.
    assert fake.texts_to(USER) == ["Karibu! What would you like?"]
    assert fake.texts_to(USER.user_id or "") == ["Karibu! What would you like?"]


async def test_a_send_by_bsuid_answers_with_user_id(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")
    payload = _text("", "Karibu")
    del payload["to"]
    payload["recipient"] = "KE.1234567890123456789"

    response = await _send(graph, payload)

    assert response.status_code == 200
    assert response.json()["contacts"] == [
        {"input": "KE.1234567890123456789", "user_id": "KE.1234567890123456789"}
    ]
    assert fake.texts_to(USER) == ["Karibu"]


async def test_four_reply_buttons_are_refused(fake: FakeGraph, graph: httpx.AsyncClient) -> None:
    fake.text(USER, "hi")

    response = await _send(graph, _buttons(USER.wa_id, "One", "Two", "Three", "Four"))

    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == 131009
    assert error["message"] == "(#131009) Parameter value is not valid"
    assert error["type"] == "OAuthException"
    assert "Max allowed buttons: 3" in error["error_data"]["details"]
    assert error["fbtrace_id"].startswith("A")
    assert fake.sent[-1].accepted is False
    assert fake.sent[-1].error_code == 131009
    assert fake.texts_to(USER) == []
    assert fake.last_interactive(USER) is None


async def test_a_21_character_button_title_is_refused(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")

    response = await _send(graph, _buttons(USER.wa_id, "Add sugar", "x" * 21))

    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == 131009
    assert error["error_data"]["details"] == (
        "Button title length invalid. Min length: 1, Max length: 20"
    )
    # Exactly 20 is fine.
    assert (await _send(graph, _buttons(USER.wa_id, "Add sugar", "x" * 20))).status_code == 200


async def test_a_list_with_eleven_rows_is_refused(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")
    rows = [{"id": f"p{i}", "title": f"Product {i}"} for i in range(11)]

    response = await _send(graph, _list(USER.wa_id, rows))

    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == 131009
    assert "max allowed count: 10" in error["error_data"]["details"]
    assert (await _send(graph, _list(USER.wa_id, rows[:10]))).status_code == 200


async def test_a_25_character_row_title_is_refused(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")

    response = await _send(graph, _list(USER.wa_id, [{"id": "p1", "title": "y" * 25}]))

    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == 131009
    assert "Row title" in error["error_data"]["details"]
    assert "Max length: 24" in error["error_data"]["details"]


async def test_a_text_over_4096_characters_is_refused(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")

    response = await _send(graph, _text(USER.wa_id, "a" * 4097))

    assert response.status_code == 400
    assert _error(response)["code"] == 100
    assert "4096" in _error(response)["error_data"]["details"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", DEFAULT_ACCESS_TOKEN])
async def test_a_wrong_or_missing_token_is_401_code_190(
    fake: FakeGraph, authorization: str | None
) -> None:
    fake.text(USER, "hi")
    headers = {} if authorization is None else {"Authorization": authorization}

    async with httpx.AsyncClient(base_url=fake.graph_url) as client:
        response = await client.post(
            f"/{DEFAULT_PHONE_NUMBER_ID}/messages", json=_text(USER.wa_id, "x"), headers=headers
        )

    assert response.status_code == 401
    error = _error(response)
    assert error["code"] == 190
    assert error["message"] == "Invalid OAuth access token."
    assert error["type"] == "OAuthException"
    assert "error_data" not in error
    assert fake.texts_to(USER) == []


async def test_an_unknown_phone_number_id_is_refused(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")

    response = await graph.post("/999/messages", json=_text(USER.wa_id, "x"))

    assert response.status_code == 400
    assert _error(response)["code"] == 100
    assert _error(response)["message"] == "(#100) Invalid parameter"


async def test_outside_the_window_only_templates_go_through(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")
    fake.expire_window(USER)

    refused = await _send(graph, _text(USER.wa_id, "Your order shipped"))
    accepted = await _send(graph, _template(USER.wa_id))

    assert refused.status_code == 400
    error = _error(refused)
    assert error["code"] == 131047
    assert error["message"] == "(#131047) Re-engagement message"
    assert error["error_data"]["details"] == RE_ENGAGEMENT_DETAILS
    assert accepted.status_code == 200
    assert accepted.json()["messages"][0]["id"].startswith("wamid.")
    assert [t["name"] for t in fake.templates_to(USER)] == ["order_paid"]
    assert fake.texts_to(USER) == []
    # The user's reply reopens the window.
    fake.text(USER, "asante")
    assert (await _send(graph, _text(USER.wa_id, "Karibu tena"))).status_code == 200


async def test_a_user_who_never_wrote_has_no_window(graph: httpx.AsyncClient) -> None:
    response = await _send(graph, _text("254700111222", "Hello"))

    assert _error(response)["code"] == 131047


async def test_fail_next_injects_a_rate_limit_once(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")
    fake.fail_next(400, 130429)

    first = await _send(graph, _text(USER.wa_id, "one"))
    second = await _send(graph, _text(USER.wa_id, "one"))

    assert first.status_code == 400
    assert _error(first)["code"] == 130429
    assert _error(first)["message"] == "(#130429) Rate limit hit"
    assert second.status_code == 200
    assert [(s.accepted, s.error_code) for s in fake.sent] == [(False, 130429), (True, None)]
    assert fake.texts_to(USER) == ["one"]


async def test_set_down_answers_500_until_back_up(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")
    fake.set_down(True)

    response = await _send(graph, _text(USER.wa_id, "x"))

    assert response.status_code == 500
    assert _error(response)["code"] == 131000
    fake.set_down(False)
    assert (await _send(graph, _text(USER.wa_id, "x"))).status_code == 200


async def test_button_reply_points_at_the_message_that_carried_the_button(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")
    with pytest.raises(ButtonNotFoundError):
        fake.button_reply(USER, "b0")  # nothing sent yet
    sent = await _send(graph, _buttons(USER.wa_id, "Add sugar", "Checkout"))
    wamid = sent.json()["messages"][0]["id"]

    payload = fake.button_reply(USER, "b1", "Checkout")

    [entry] = payload["entry"]
    [change] = entry["changes"]
    value = change["value"]
    assert change["field"] == "messages"
    assert value["metadata"] == {
        "display_phone_number": "254700000000",
        "phone_number_id": DEFAULT_PHONE_NUMBER_ID,
    }
    assert value["contacts"] == [
        {
            "profile": {"name": "Wanjiru Kamau"},
            "wa_id": "254712345678",
            "user_id": "KE.1234567890123456789",
        }
    ]
    [message] = value["messages"]
    assert message["from"] == "254712345678"
    assert message["from_user_id"] == "KE.1234567890123456789"
    assert isinstance(message["timestamp"], str)
    assert message["context"] == {"from": "254700000000", "id": wamid}
    assert message["interactive"] == {
        "type": "button_reply",
        "button_reply": {"id": "b1", "title": "Checkout"},
    }
    with pytest.raises(ValueError, match="WhatsApp reports what the user saw"):
        fake.button_reply(USER, "b1", "Pay")


async def test_list_reply_and_shared_contact_payloads(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "menu")
    rows = [{"id": "p1", "title": "Sugar 1kg", "description": "KES 150"}]
    wamid = (await _send(graph, _list(USER.wa_id, rows))).json()["messages"][0]["id"]

    picked = fake.list_reply(USER, "p1")
    shared = fake.contact(USER, "+254 712 345678", contact_wa_id="254712345678")

    [message] = picked["entry"][0]["changes"][0]["value"]["messages"]
    assert message["context"]["id"] == wamid
    assert message["interactive"] == {
        "type": "list_reply",
        "list_reply": {"id": "p1", "title": "Sugar 1kg", "description": "KES 150"},
    }
    [card_message] = shared["entry"][0]["changes"][0]["value"]["messages"]
    assert card_message["type"] == "contacts"
    [card] = card_message["contacts"]
    assert card["origin"] == "contact_request"
    assert card["phones"] == [{"phone": "+254 712 345678", "type": "CELL", "wa_id": "254712345678"}]
    with pytest.raises(ButtonNotFoundError):
        fake.list_reply(USER, "p9")


async def test_read_receipts_do_not_consume_injected_faults(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")
    fake.fail_next(400, 131056)
    receipt = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in"}

    assert (await _send(graph, receipt)).json() == {"success": True}
    reply = await _send(graph, _text(USER.wa_id, "Karibu"))

    assert _error(reply)["code"] == 131056


async def test_unapproved_template_names_are_refused_when_a_list_is_given() -> None:
    async with (
        FakeGraph(approved_templates={"order_paid"}) as fake,
        httpx.AsyncClient(
            base_url=fake.graph_url, headers={"Authorization": f"Bearer {DEFAULT_ACCESS_TOKEN}"}
        ) as graph,
    ):
        unknown = _template(USER.wa_id)
        unknown["template"]["name"] = "order_shipped"

        assert _error(await _send(graph, unknown))["code"] == 132001
        assert (await _send(graph, _template(USER.wa_id))).status_code == 200


async def test_several_merges_messages_into_one_delivery(fake: FakeGraph) -> None:
    first, second = fake.text(USER, "one"), fake.text(USER, "two")

    merged = fake.several(first, second)
    by_entry = fake.several(first, second, layout="entries")

    [value] = [c["value"] for e in merged["entry"] for c in e["changes"]]
    assert [m["text"]["body"] for m in value["messages"]] == ["one", "two"]
    assert len(value["contacts"]) == 1
    assert len(by_entry["entry"]) == 2
    ids = [m["id"] for m in value["messages"]]
    assert len(set(ids)) == 2


async def test_post_webhook_signs_the_exact_bytes(fake: FakeGraph, receiver: Receiver) -> None:
    # Non-ASCII on purpose: Meta escapes it, and the signature covers the escaped bytes.
    payload = fake.text(USER, "Nataka sukari ya Kenya, asante 🙏 — é")

    valid = await fake.post_webhook(receiver.url, payload)
    bad = await fake.post_webhook(receiver.url, payload, signature="bad")
    missing = await fake.post_webhook(receiver.url, payload, signature="missing")

    assert (valid, bad, missing) == (200, 403, 401)
    assert receiver.received == [payload]  # only the correctly signed delivery got through
    body = fake.webhook_body(payload)
    assert b"\\ud83d\\ude4f" in body  # escaped, lowercase hex
    assert fake.sign(body) == (
        "sha256=" + hmac.new(DEFAULT_APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    )


async def test_verify_webhook_round_trip(fake: FakeGraph, receiver: Receiver) -> None:
    assert await fake.verify_webhook(receiver.url) == (200, "1158201444")
    assert (await fake.verify_webhook(receiver.url, token="nope"))[0] == 403
    assert (await fake.verify_webhook(receiver.url, mode="unsubscribe"))[0] == 403


async def test_wait_for_wakes_on_a_send_and_times_out_helpfully(
    fake: FakeGraph, graph: httpx.AsyncClient
) -> None:
    fake.text(USER, "hi")
    # The task starts waiting while the send below is in flight, so it is woken by the send.
    waiter = asyncio.create_task(fake.wait_for(lambda f: f.texts_to(USER) == ["done"]))

    await _send(graph, _text(USER.wa_id, "done"))

    await asyncio.wait_for(waiter, timeout=2)
    with pytest.raises(TimeoutError, match=r"recorded sends:\n.*done"):
        await fake.wait_for(lambda f: False, timeout=0.05)
