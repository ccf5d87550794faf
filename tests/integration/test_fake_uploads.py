"""The fakes' file uploads, against the real clients over loopback HTTP: Telegram's
sendDocument through python-telegram-bot, WhatsApp's ``/media`` upload and document message
through a plain HTTP client. Each keeps the file's bytes and refuses what the platform
refuses, at the platform's own limits (50 MB and 1024-character captions on Telegram; Meta's
MIME types, 100 MB documents and known media ids on WhatsApp)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from telegram import Bot
from telegram.error import BadRequest, NetworkError

from tests.fakes.graph_api import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_PHONE_NUMBER_ID,
    FakeGraph,
    WaUser,
)
from tests.fakes.telegram_api import DEFAULT_TOKEN, UPLOAD_LIMIT, FakeTelegram

CHAT = 1
CSV = b"order,total_kes\r\nDK-7KX3M9,270\r\n"
USER = WaUser("254712345678", name="Wanjiru")


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def bot(telegram: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(DEFAULT_TOKEN, base_url=telegram.bot_base_url) as client:
        yield client


async def test_telegram_keeps_a_sent_document_and_its_file_id_sends_it_again(
    bot: Bot, telegram: FakeTelegram
) -> None:
    sent = await bot.send_document(CHAT, CSV, filename="sales.csv", caption="Paid today")
    assert sent.document is not None
    assert (sent.document.file_name, sent.document.mime_type) == ("sales.csv", "text/csv")
    assert sent.document.file_size == len(CSV)
    assert sent.caption == "Paid today"
    again = await bot.send_document(CHAT, sent.document.file_id)
    [first, second] = telegram.documents_to(CHAT)
    assert (first.filename, first.content, first.caption) == ("sales.csv", CSV, "Paid today")
    assert (second.content, second.caption, again.caption) == (CSV, None, None)
    assert telegram.texts_to(CHAT) == ["Paid today"]


@pytest.mark.parametrize(
    ("document", "caption", "refusal"),
    [
        (CSV, "x" * 1025, "Message caption is too long"),
        (CSV, "😀" * 513, "Message caption is too long"),  # 1026 UTF-16 code units
        (b"", None, "File must be non-empty"),
        ("BQACAgQAAxkDAAI-not-sent", None, "Wrong file identifier/http url specified"),
    ],
)
async def test_telegram_refuses_a_document_as_telegram_does(
    bot: Bot, telegram: FakeTelegram, document: bytes | str, caption: str | None, refusal: str
) -> None:
    with pytest.raises(BadRequest, match=refusal):
        await bot.send_document(CHAT, document, filename="sales.csv", caption=caption)
    assert telegram.documents == []


async def test_telegram_refuses_an_upload_over_50_mb_with_413(
    bot: Bot, telegram: FakeTelegram
) -> None:
    await bot.send_document(CHAT, b"x" * UPLOAD_LIMIT, filename="exactly-50-mb.csv")
    # PTB has no exception of its own for 413: a NetworkError, as against Telegram.
    with pytest.raises(NetworkError, match="Request Entity Too Large"):
        await bot.send_document(CHAT, b"x" * (UPLOAD_LIMIT + 1), filename="too-big.csv")
    assert [d.filename for d in telegram.documents] == ["exactly-50-mb.csv"]
    assert telegram.calls_of("sendDocument")[-1].status == 413


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    async with FakeGraph() as server:
        server.open_window(USER)
        yield server


@pytest.fixture
async def http(graph: FakeGraph) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {DEFAULT_ACCESS_TOKEN}"}
    url = f"{graph.graph_url}/{DEFAULT_PHONE_NUMBER_ID}"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        yield client


async def upload(http: httpx.AsyncClient, content: bytes, mime: str) -> httpx.Response:
    data = {"messaging_product": "whatsapp", "type": mime}
    return await http.post("/media", data=data, files={"file": ("sales.csv", content, mime)})


async def send_document(http: httpx.AsyncClient, document: dict[str, Any]) -> httpx.Response:
    body = {"messaging_product": "whatsapp", "to": USER.wa_id, "type": "document"}
    return await http.post("/messages", json={**body, "document": document})


def details(response: httpx.Response) -> tuple[int, int, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["error_data"]["details"]


async def test_whatsapp_keeps_an_upload_and_delivers_it_as_a_document(
    graph: FakeGraph, http: httpx.AsyncClient
) -> None:
    uploaded = await upload(http, CSV, "text/plain")
    assert uploaded.status_code == 200
    media_id = uploaded.json()["id"]
    document = {"id": media_id, "filename": "sales.csv", "caption": "Paid today"}
    assert (await send_document(http, document)).status_code == 200
    [received] = graph.documents_to(USER)
    assert (received.filename, received.mime_type) == ("sales.csv", "text/plain")
    assert (received.content, received.caption) == (CSV, "Paid today")
    assert graph.texts_to(USER) == ["Paid today"]


async def test_whatsapp_refuses_an_upload_as_meta_does(
    graph: FakeGraph, http: httpx.AsyncClient
) -> None:
    status, code, why = details(await upload(http, CSV, "text/csv"))
    assert (status, code) == (400, 100)
    assert why.endswith("Received file of type 'text/csv'.")  # Meta takes no CSV
    no_product = await http.post(
        "/media", data={"type": "text/plain"}, files={"file": ("a.txt", CSV, "text/plain")}
    )
    assert details(no_product) == (400, 100, "The parameter messaging_product is required.")
    assert (await upload(http, b"x" * 100_000_000, "text/plain")).status_code == 200
    status, code, why = details(await upload(http, b"x" * 100_000_001, "text/plain"))
    assert (status, code) == (400, 131053)
    assert "100 MB" in why
    assert [u.accepted for u in graph.uploads] == [False, False, True, False]


async def test_whatsapp_refuses_a_document_naming_no_upload(
    graph: FakeGraph, http: httpx.AsyncClient
) -> None:
    unknown = await send_document(http, {"id": "1000000000000999", "filename": "sales.csv"})
    assert details(unknown)[:2] == (400, 100)
    assert "not a valid whatsapp business account media attachment ID" in details(unknown)[2]
    media_id = (await upload(http, CSV, "text/plain")).json()["id"]
    both = await send_document(http, {"id": media_id, "link": "https://example.com/a.csv"})
    assert details(both)[:2] == (400, 100)
    too_long = await send_document(http, {"id": media_id, "caption": "x" * 1025})
    assert details(too_long)[:2] == (400, 100)
    assert graph.documents_to(USER) == []
