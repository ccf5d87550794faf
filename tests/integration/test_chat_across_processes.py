"""One chat's events reaching two processes at once (issue 10, PostgreSQL): they are taken
one at a time, each on the state the other left, so nothing a customer did is lost.

Each "process" is a whole Duka app (its own engine, connections and in-memory locks) on
the same PostgreSQL database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.app import CONVERSATION
from bot.chat.model import Inbound
from tests.integration.test_conversation import open_shop

TAPS = 12


async def test_taps_sent_to_two_processes_at_once_all_count(
    postgres_url: str, tmp_path: Path
) -> None:
    database_url = postgres_url  # one SQLite file is served by one process
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first, first_runner = await open_shop(database_url, tmp_path / "a")
    second, second_runner = await open_shop(database_url, tmp_path / "b")
    try:
        tap = Inbound("terminal", "4242", "Wanjiru", text="1 unga")  # typed: adds one
        for _ in range(TAPS // 2):
            await asyncio.gather(
                first.app[CONVERSATION].handle(tap), second.app[CONVERSATION].handle(tap)
            )
        [cart] = await first.app[CONVERSATION].handle(
            Inbound("terminal", "4242", "Wanjiru", button="cart")
        )
        assert f"{TAPS} × Unga 2kg" in cart.text, cart.text
        # A new customer's first words, to both at once: one customer, both items.
        for n in range(5):
            chat = f"new-{n}"
            both = Inbound("terminal", chat, "Achieng", text="1 sukari")
            await asyncio.gather(
                first.app[CONVERSATION].handle(both), second.app[CONVERSATION].handle(both)
            )
            [cart] = await second.app[CONVERSATION].handle(
                Inbound("terminal", chat, "Achieng", button="cart")
            )
            assert "2 × Sukari 1kg" in cart.text, cart.text
    finally:
        await second_runner.cleanup()
        await first_runner.cleanup()
