"""A long WhatsApp list's "More…" is answered by whichever process gets the tap, and after
a restart (issue 10): the pages are in the database, not in the process that sent them."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import TEST_TOML, make_config, start_duka
from tests.e2e.test_whatsapp_shop import WANJIRU, Shop, choices, taps, whatsapp_env, writes
from tests.fakes.graph_api import FakeGraph

# Thirteen products in one category: more than a list's ten rows.
LONG_CATALOG = "".join(
    f'[[catalog.products]]\nsku = "item{n:02d}"\nname = "Item {n:02d}"\nprice = {100 + n}\n'
    'category = "Staples"\n'
    for n in range(1, 14)
)


def fresh_dir(path: Path) -> Path:
    path.mkdir()
    return path


async def open_long_shop(database_url: str, tmp_path: Path, graph: FakeGraph) -> Shop:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = make_config(
        database_url,
        sock.getsockname()[1],
        tmp_path,
        toml=TEST_TOML + LONG_CATALOG,
        **whatsapp_env(graph),
    )
    duka, runner = await start_duka(config, sock, dispatch_seconds=0.05)
    return Shop(duka, graph, runner)


def on_screen(graph: FakeGraph) -> str:
    """The titles of the latest list's rows, as one text."""
    last = graph.last_interactive(WANJIRU)
    assert last is not None
    return " | ".join(title for _, _, title in choices(last))


async def test_more_is_answered_after_a_restart(database_url: str, tmp_path: Path) -> None:
    async with FakeGraph() as graph:
        first = await open_long_shop(database_url, fresh_dir(tmp_path / "first"), graph)
        try:
            await writes(first, WANJIRU, "Hi")  # one category: its products at once
            assert "Item 01" in on_screen(graph)
            assert "Item 13" not in on_screen(graph)
        finally:
            await first.runner.cleanup()
        again = await open_long_shop(database_url, fresh_dir(tmp_path / "again"), graph)
        try:
            await taps(again, WANJIRU, "More")
            assert "Item 13" in on_screen(graph), "page two, not the menu again"
        finally:
            await again.runner.cleanup()


async def test_more_tapped_on_another_process_shows_the_next_page(
    postgres_url: str, tmp_path: Path
) -> None:
    database_url = postgres_url  # one SQLite file is served by one process
    async with FakeGraph() as graph:
        first = await open_long_shop(database_url, fresh_dir(tmp_path / "first"), graph)
        second = await open_long_shop(database_url, fresh_dir(tmp_path / "second"), graph)
        try:
            await writes(first, WANJIRU, "Hi")  # one category: its products at once
            await taps(second, WANJIRU, "More")  # Meta delivered the tap to the other one
            assert "Item 13" in on_screen(graph)
        finally:
            await second.runner.cleanup()
            await first.runner.cleanup()
