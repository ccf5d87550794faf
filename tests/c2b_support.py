"""Shared pieces of the C2B (Paybill fallback) tests: Duka with C2B on, Daraja's exact
confirmation body, and readers for what a confirmation stores."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.channels.terminal import TerminalChannel
from storage.schema import unmatched_payments
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka

# Hex only: no chance of spelling a word Safaricom bans in callback URLs.
C2B_SECRET = "c2b0" + "9f8e7d6c5b4a3928" * 2  # 36 characters
SHORT_CODE = "174379"  # the simulator's (and Safaricom sandbox's) paybill
MASKED_PHONE = "2547 ***** 126"  # as M-Pesa sends it
SHOWN_PHONE = "07XX XXX 126"  # as Duka shows it
SUCCESS = {"ResultCode": 0, "ResultDesc": "Success"}
ACCEPTED = {"ResultCode": "0", "ResultDesc": "Accepted"}


def c2b_url(port: int, secret: str = C2B_SECRET) -> str:
    return f"http://127.0.0.1:{port}/hooks/c2b/{secret}"


@dataclass
class PaybillDuka:
    """A running Duka with the Paybill fallback on, and where Daraja posts to it."""

    duka: RunningDuka
    runner: web.AppRunner

    @property
    def engine(self) -> AsyncEngine:
        return self.duka.engine

    @property
    def confirmation_url(self) -> str:
        return self.duka.config.daraja.c2b_confirmation_url

    @property
    def validation_url(self) -> str:
        return self.duka.config.daraja.c2b_validation_url


async def start_paybill_duka(
    database_url: str,
    tmp_path: Path,
    *,
    c2b: bool = True,
    toml: str = "",
    terminal: TerminalChannel | None = None,
    **options: Any,
) -> PaybillDuka:
    """Duka with its embedded simulator; ``c2b`` sets MPESA_C2B_CONFIRMATION_URL; the
    ``options`` go to ``build_app`` (a clock, say)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    env = {"MPESA_C2B_CONFIRMATION_URL": c2b_url(port)} if c2b else {}
    config = make_config(database_url, port, tmp_path, toml=toml or TEST_TOML, **env)
    duka, runner = await start_duka(config, sock, terminal=terminal, **options)
    return PaybillDuka(duka, runner)


def confirmation_body(
    trans_id: str,
    account: str,
    amount: str,
    *,
    msisdn: str = MASKED_PHONE,
    balance: str = "25.00",
) -> dict[str, str]:
    """Daraja's v2 C2B confirmation, field for field (daraja.md §8): every value a string."""
    return {
        "TransactionType": "Pay Bill",
        "TransID": trans_id,
        "TransTime": "20231121121325",
        "TransAmount": amount,
        "BusinessShortCode": SHORT_CODE,
        "BillRefNumber": account,
        "InvoiceNumber": "",
        "OrgAccountBalance": balance,
        "ThirdPartyTransID": "",
        "MSISDN": msisdn,
        "FirstName": "NICHOLAS",
        "MiddleName": "",
        "LastName": "",
    }


async def post_raw(url: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await client.post(url, content=body, headers={"Content-Type": "application/json"})


async def post_json(url: str, body: dict[str, Any]) -> httpx.Response:
    return await post_raw(url, json.dumps(body).encode())


async def unmatched_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        query = select(unmatched_payments).order_by(unmatched_payments.c.id)
        return list((await conn.execute(query)).all())
