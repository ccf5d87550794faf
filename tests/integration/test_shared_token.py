"""One Daraja token for every process on PostgreSQL (issue 10), against the simulator over
real HTTP. Each "process" is a DarajaClient with its own httpx client and its own
``Database`` (engine and pool) on the same PostgreSQL database."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from bot.config import SIMULATOR_CONSUMER_KEY
from payments.daraja_client import DarajaClient, StkPushRequest
from payments.shared_token import SharedToken, app_digest
from payments.simulator import RunningSimulator, SimulatorConfig, rules, start_simulator
from storage.engine import Database, migrate
from storage.schema import daraja_tokens
from storage.sealing import Sealer
from tests.integration.test_daraja_client import simulator_settings

PROCESSES = 3


@dataclass
class Process:
    database: Database
    http: httpx.AsyncClient
    client: DarajaClient


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(SimulatorConfig(callback_delay_seconds=0.05))
    yield running
    await running.stop()


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(secrets.token_bytes(32))  # one deployment: every process has its key


async def start_processes(url: str, sealer: Sealer, sim: RunningSimulator) -> list[Process]:
    processes = []
    for _ in range(PROCESSES):
        database = Database(url, sealer)
        http = httpx.AsyncClient()
        client = DarajaClient(simulator_settings(sim.base_url), http, database=database)
        processes.append(Process(database, http, client))
    await migrate(processes[0].database.engine)
    return processes


async def stop_processes(processes: list[Process]) -> None:
    for process in processes:
        await process.http.aclose()
        await process.database.dispose()


@pytest.fixture
async def processes(
    postgres_url: str, sealer: Sealer, sim: RunningSimulator
) -> AsyncIterator[list[Process]]:
    started = await start_processes(postgres_url, sealer, sim)
    try:
        yield started
    finally:
        await stop_processes(started)


def push(n: int) -> StkPushRequest:
    return StkPushRequest(f"2547{n:02d}345678", 10 + n, f"DK-{n:06d}")


async def push_and_query_from_each(processes: list[Process], per_process: int) -> None:
    """Concurrent pushes from every process, then concurrent queries of each push."""
    pushes = [
        (process, push(i * per_process + n))
        for i, process in enumerate(processes)
        for n in range(per_process)
    ]
    accepted = await asyncio.gather(*(p.client.stk_push(request) for p, request in pushes))
    queries = [
        process.client.stk_query(answer.checkout_request_id)
        for (process, _), answer in zip(pushes, accepted, strict=True)
    ]
    await asyncio.gather(*queries)


async def stored_rows(database: Database) -> list[tuple[str, str]]:
    """(app, token) as stored: the token column read as plain text, not opened."""
    plain = sa.table("daraja_tokens", sa.column("app", sa.String), sa.column("token", sa.String))
    async with database.engine.connect() as conn:
        rows = (await conn.execute(sa.select(plain.c.app, plain.c.token))).all()
    return [(row.app, row.token) for row in rows]


async def test_three_processes_make_one_oauth_call_for_the_token_lifetime(
    processes: list[Process], sim: RunningSimulator
) -> None:
    """Concurrent pushes and queries from three processes: one OAuth call in all, and
    none refused, again on a second round."""
    await push_and_query_from_each(processes, per_process=5)
    assert sim.simulator.oauth_calls == 1
    await push_and_query_from_each(processes, per_process=5)
    assert sim.simulator.oauth_calls == 1


async def test_a_token_refused_in_every_process_is_refreshed_once(
    processes: list[Process], sim: RunningSimulator
) -> None:
    """All three hold the same token when Daraja starts refusing it: one refresh, by
    whichever process locks first; the others take its token from the database."""
    sim.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    accepted = await processes[0].client.stk_push(push(1))
    checkout_id = accepted.checkout_request_id
    await asyncio.gather(*(p.client.stk_query(checkout_id) for p in processes))
    assert sim.simulator.oauth_calls == 1
    sim.simulator.expire_tokens()
    answers = await asyncio.gather(
        *(p.client.stk_query(checkout_id) for p in processes for _ in range(4))
    )
    assert all(answer.pending for answer in answers)
    assert sim.simulator.oauth_calls == 2


async def test_a_process_refused_after_another_refreshed_takes_the_stored_token(
    processes: list[Process], sim: RunningSimulator
) -> None:
    """One at a time: the first refused process refreshes; the next ones, refused in turn
    with the old token, read the new one without an OAuth call."""
    await push_and_query_from_each(processes, per_process=1)
    sim.simulator.expire_tokens()
    for n, process in enumerate(processes):
        await process.client.stk_push(push(50 + n))
        assert sim.simulator.oauth_calls == 2


async def test_a_token_due_for_refresh_is_fetched_by_one_process(
    postgres_url: str, sealer: Sealer
) -> None:
    """When the stored token reaches its refresh time, three processes asking at once
    make one fetch, and all get its token."""
    clock = FakeClock()
    fetch = CountingFetch()
    databases = [Database(postgres_url, sealer) for _ in range(PROCESSES)]
    try:
        await migrate(databases[0].engine)
        tokens = [SharedToken(db, "app", fetch, clock) for db in databases]
        assert set(await asyncio.gather(*(t.get() for t in tokens))) == {"token-1"}
        clock.now += timedelta(seconds=3599 - 301)
        assert set(await asyncio.gather(*(t.get() for t in tokens))) == {"token-1"}
        clock.now += timedelta(seconds=2)
        asked = [t.get() for t in tokens for _ in range(5)]
        assert set(await asyncio.gather(*asked)) == {"token-2"}
        assert fetch.calls == 2
    finally:
        for db in databases:
            await db.dispose()


async def test_the_stored_token_is_sealed_and_names_its_app_by_digest(
    processes: list[Process], sim: RunningSimulator
) -> None:
    """Neither the token nor the consumer key can be read from the table."""
    await push_and_query_from_each(processes, per_process=1)
    [(app, sealed)] = await stored_rows(processes[0].database)
    assert app == app_digest(sim.base_url, SIMULATOR_CONSUMER_KEY)
    assert SIMULATOR_CONSUMER_KEY not in app
    assert sealed.startswith("v1.")
    async with processes[0].database.engine.connect() as conn:
        opened = (await conn.execute(sa.select(daraja_tokens.c.token))).scalar_one()
    assert opened != sealed
    assert len(opened) == 28  # the simulator's token, opened through SealedValue


async def test_on_sqlite_the_token_stays_in_memory(
    sqlite_url: str, sealer: Sealer, sim: RunningSimulator
) -> None:
    """SQLite is one process: the token never goes through the database."""
    database = Database(sqlite_url, sealer)
    await migrate(database.engine)
    try:
        async with httpx.AsyncClient() as http:
            client = DarajaClient(simulator_settings(sim.base_url), http, database=database)
            accepted = await asyncio.gather(*(client.stk_push(push(n)) for n in range(5)))
            await client.stk_query(accepted[0].checkout_request_id)
            sim.simulator.expire_tokens()
            await client.stk_query(accepted[0].checkout_request_id)
        assert sim.simulator.oauth_calls == 2
        assert await stored_rows(database) == []
    finally:
        await database.dispose()


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class CountingFetch:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> tuple[str, float]:
        self.calls += 1
        await asyncio.sleep(0.05)  # the other processes pile up behind the lock
        return f"token-{self.calls}", 3599.0
