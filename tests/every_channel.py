"""The environment of a Duka with every channel on (Paybill, Telegram webhook, WhatsApp),
each pointed at this test's fakes: for tests that speak to every webhook."""

from __future__ import annotations

from tests.c2b_support import c2b_url
from tests.fakes.graph_api import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_APP_SECRET,
    DEFAULT_PHONE_NUMBER_ID,
    DEFAULT_VERIFY_TOKEN,
    FakeGraph,
)
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram

TELEGRAM_PATH = "/telegram/hook"


def every_channel_env(
    port: int, telegram: FakeTelegram, graph: FakeGraph, telegram_secret: str
) -> dict[str, str]:
    return {
        "MPESA_C2B_CONFIRMATION_URL": c2b_url(port),
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_BASE_URL": telegram.base_url,
        "TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{port}{TELEGRAM_PATH}",
        "TELEGRAM_WEBHOOK_SECRET": telegram_secret,
        "WHATSAPP_ACCESS_TOKEN": DEFAULT_ACCESS_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": DEFAULT_PHONE_NUMBER_ID,
        "WHATSAPP_APP_SECRET": DEFAULT_APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": DEFAULT_VERIFY_TOKEN,
        "WHATSAPP_API_BASE_URL": graph.graph_url,
    }
