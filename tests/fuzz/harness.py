"""The fuzzing harness: one Duka with all four webhooks on, table snapshots, the server's
500s, and Hypothesis driven from an async test.

Hypothesis runs in a worker thread and hands each example to the test's event loop, where
Duka serves: one Duka per test, and shrinking works as in any other property test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import TELEGRAM
from storage.schema import inbound_messages, metadata, payment_events
from storage.sealing import SealedText, SealedValue, sealer_of
from tests.conftest import TEST_TOML, RunningDuka, make_config, start_duka
from tests.e2e.test_telegram_shop import CATALOG
from tests.every_channel import every_channel_env
from tests.fakes.graph_api import (
    FakeGraph,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.fuzz.wire import ANSWER_SECONDS, Answer, Wire, exchange, http_request

T = TypeVar("T")

TELEGRAM_SECRET = "fuzz_secret-0123456789"
WHATSAPP_PATH = "/whatsapp/webhook"

FUZZ_SETTINGS = settings(
    database=None,  # no example database: every run, local or CI, tries the same examples
    derandomize=True,
    deadline=None,  # one example is a real HTTP exchange and two table snapshots
    print_blob=False,
    # Bodies up to 70 KB and 20,000-level nesting are the point here, not a slow strategy.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# --- what the server did -----------------------------------------------------------------------

Rows = dict[str, list[tuple[Any, ...]]]
EVENT_COLUMNS = tuple(payment_events.columns.keys())


class Snapshots:
    """Every row of every table (they stay small: only what one fuzz test wrote), read in
    one go: two snapshots per example must stay cheap.

    SQLite's file is read directly with the standard library (WAL lets it read while Duka
    writes, and each query sees everything committed before it); PostgreSQL answers one
    query that aggregates every table as JSON.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._tables = {table.name: tuple(table.columns.keys()) for table in metadata.sorted_tables}
        order = {t.name: ", ".join(c.name for c in t.primary_key) for t in metadata.sorted_tables}
        url = engine.url
        self._file = url.database if url.get_backend_name() == "sqlite" else None
        self._queries = {
            # Table and column names from our own schema, not from any input.
            name: f"SELECT {', '.join(columns)} FROM {name} ORDER BY {order[name]}"  # noqa: S608
            for name, columns in self._tables.items()
        }
        aggregate = "(SELECT coalesce(json_agg(row_to_json(t) ORDER BY {}), '[]') FROM {} t)"
        members = ", ".join(
            f"'{name}', {aggregate.format(order[name], name)}" for name in self._tables
        )
        self._aggregate = text(f"SELECT json_build_object({members})")
        sealer = sealer_of(engine.sync_engine.dialect)
        self._openers = {
            table.name: tuple(
                sealer.open_value
                if isinstance(column.type, SealedValue)
                else sealer.open_text
                if isinstance(column.type, SealedText)
                else None
                for column in table.columns
            )
            for table in metadata.sorted_tables
        }

    async def take(self) -> Rows:
        """The rows as our code reads them: sealed values opened (see storage.sealing)."""
        return {
            name: [self._open(name, row) for row in rows]
            for name, rows in (await self._take()).items()
        }

    def _open(self, table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
        openers = self._openers[table]
        return tuple(
            value if value is None or opener is None else opener(value)
            for value, opener in zip(row, openers, strict=True)
        )

    async def _take(self) -> Rows:
        if self._file is None:
            async with self._engine.connect() as conn:
                found = (await conn.execute(self._aggregate)).scalar_one()
            if isinstance(found, str):  # unless the engine has a JSON codec
                found = json.loads(found)
            return {
                name: [tuple(row[column] for column in columns) for row in found[name]]
                for name, columns in self._tables.items()
            }
        with contextlib.closing(sqlite3.connect(f"file:{self._file}?mode=ro", uri=True)) as db:
            return {name: db.execute(query).fetchall() for name, query in self._queries.items()}


@dataclass(frozen=True, slots=True)
class Change:
    tables: tuple[str, ...]  # tables other than payment_events whose rows differ
    events_rewritten: bool  # a payment_events row that existed before differs or is gone
    new_events: tuple[dict[str, Any], ...]

    @property
    def state_kept(self) -> bool:
        """No table changed but for new payment events (which the caller judges)."""
        return not self.tables and not self.events_rewritten

    @property
    def none(self) -> bool:
        return self.state_kept and not self.new_events

    def __str__(self) -> str:
        events = [{k: e[k] for k in ("source", "status", "note")} for e in self.new_events]
        return (
            f"tables changed: {list(self.tables)}, old events rewritten: "
            f"{self.events_rewritten}, new events: {events}"
        )


def compare(before: Rows, after: Rows) -> Change:
    tables = tuple(
        name for name in after if name != payment_events.name and before[name] != after[name]
    )
    old, new = before[payment_events.name], after[payment_events.name]
    return Change(
        tables,
        new[: len(old)] != old,
        tuple(dict(zip(EVENT_COLUMNS, row, strict=True)) for row in new[len(old) :]),
    )


class ServerErrors(logging.Handler):
    """What the error middleware (bot.app) logs: each record is a request it answered 500,
    seen even when the client was gone before it could be answered."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("unhandled error"):
            self.records.append(record)

    def check_since(self, mark: int, example: object, answer: Answer) -> None:
        """Fail, chained to the server's own exception, if a 500 was logged after ``mark``: so
        Hypothesis tells the different causes apart and shrinks each one."""
        for record in self.records[mark:]:
            cause = record.exc_info[1] if record.exc_info else None
            raise AssertionError(
                f"the server answered 500 ({type(cause).__name__}: {cause}); "
                f"client saw {answer} for {example!r}"
            ) from cause


# --- Duka with every webhook on -------------------------------------------------------------


@dataclass
class FuzzDuka:
    duka: RunningDuka
    telegram: FakeTelegram
    graph: FakeGraph
    errors: ServerErrors
    port: int
    snapshots: Snapshots

    @property
    def engine(self) -> AsyncEngine:
        return self.duka.engine

    @property
    def stk_path(self) -> str:
        return _path(self.duka.config.daraja.callback_url)

    @property
    def c2b_path(self) -> str:
        return _path(self.duka.config.daraja.c2b_confirmation_url)

    @property
    def c2b_validation_path(self) -> str:
        return _path(self.duka.config.daraja.c2b_validation_url)

    async def send(self, wire: Wire) -> Answer:
        return await exchange(self.port, wire)

    async def assert_still_answering(self) -> None:
        answer = await self.send(http_request("GET", "/healthz", [], b""))
        assert answer.status == 200, f"/healthz answered {answer}"

    async def settle(self, quiet_for: float = 0.1) -> None:
        """Wait until no table has changed for ``quiet_for`` seconds (at most 5 s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        last, since = await self.snapshots.take(), loop.time()
        while loop.time() - since < quiet_for and loop.time() < deadline:
            await asyncio.sleep(0.01)
            now = await self.snapshots.take()
            if now != last:
                last, since = now, loop.time()

    async def quiet(self) -> None:
        """Wait until the updates and messages already accepted have been handled, so that
        the next example's snapshot is not moved by this one's background work."""
        queue = self.duka.app[TELEGRAM].application.update_queue
        unhandled = (
            select(func.count())
            .select_from(inbound_messages)
            .where(inbound_messages.c.handled_at.is_(None))
        )
        try:
            async with asyncio.timeout(ANSWER_SECONDS):
                await queue.join()
                while True:
                    async with self.engine.connect() as conn:
                        if not (await conn.execute(unhandled)).scalar_one():
                            return
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise AssertionError(
                f"accepted updates or messages still unhandled after {ANSWER_SECONDS:g} s"
            ) from None


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


@contextlib.asynccontextmanager
async def open_fuzz_duka(database_url: str, tmp_path: Path) -> AsyncIterator[FuzzDuka]:
    """Duka with the STK callback, C2B, the Telegram webhook and the WhatsApp webhook, its
    embedded Daraja simulator, a fake Bot API and a fake Graph API; no background dispatcher
    or reconciler, so nothing moves between two snapshots but what a request did."""
    errors = ServerErrors()
    logging.getLogger().addHandler(errors)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        async with FakeTelegram() as telegram, FakeGraph() as graph:
            env = every_channel_env(port, telegram, graph, TELEGRAM_SECRET)
            config = make_config(database_url, port, tmp_path, toml=TEST_TOML + CATALOG, **env)
            duka, runner = await start_duka(config, sock, run_dispatcher=False)
            try:
                yield FuzzDuka(duka, telegram, graph, errors, port, Snapshots(duka.engine))
            finally:
                await runner.cleanup()
    finally:
        sock.close()
        logging.getLogger().removeHandler(errors)


# --- Hypothesis from an async test ----------------------------------------------------------


async def fuzz(
    strategy: st.SearchStrategy[T],
    check: Callable[[T], Coroutine[Any, Any, None]],
    *,
    examples: int,
    shrink: bool = True,
) -> None:
    """Check every example Hypothesis draws from ``strategy``. Hypothesis runs in a worker
    thread (its ``@given`` is synchronous); each example runs on this loop, where Duka is.
    ``shrink=False`` reports a failure as found, for where shrinking would cost too long.

    Rather than ``@given`` on the async test with a function-scoped Duka fixture (which needs
    the function_scoped_fixture health check silenced, and shares one Duka across examples
    behind pytest-asyncio's back), the test owns its Duka and its loop, and Hypothesis only
    draws and shrinks."""
    loop = asyncio.get_running_loop()
    phases = tuple(p for p in Phase if shrink or p not in (Phase.shrink, Phase.explain))

    @settings(FUZZ_SETTINGS, max_examples=examples, phases=phases)
    @given(strategy)
    def property_holds(example: T) -> None:
        asyncio.run_coroutine_threadsafe(check(example), loop).result(timeout=120)

    await asyncio.to_thread(property_holds)
