"""Shared fixtures: databases (a SQLite file; PostgreSQL where reachable) and a running Duka."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import ENGINE, SIMULATOR, access_logger_for, build_app
from bot.config import AppConfig, load_config
from payments.simulator import DarajaSimulator
from storage.sealing import generate_key

# The server to test on; each test run gets a database of its own on it (named after this
# one), created on first use and dropped at the end, so two runs at once cannot collide.
SERVER_URL = os.environ.get(
    "DUKA_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
RUN_DATABASE = f"{make_url(SERVER_URL).database or 'test'}_{os.getpid()}_{secrets.token_hex(3)}"
POSTGRES_URL = make_url(SERVER_URL).set(database=RUN_DATABASE).render_as_string(hide_password=False)
# CI sets this so that an unreachable PostgreSQL fails the run instead of skipping.
REQUIRE_POSTGRES = os.environ.get("DUKA_REQUIRE_POSTGRES") == "1"
_run_database_created = False


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _reset_postgres() -> str | None:
    """Empty this run's test database (creating it first); the reason it cannot be used."""
    global _run_database_created
    try:
        if not _run_database_created:
            admin = await asyncpg.connect(_dsn(SERVER_URL), timeout=3)
            try:
                await admin.execute(f'CREATE DATABASE "{RUN_DATABASE}"')
            finally:
                await admin.close()
            _run_database_created = True
        conn = await asyncpg.connect(_dsn(POSTGRES_URL), timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {_dsn(SERVER_URL)} is not usable ({exc})"
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    return None


async def _drop_run_database() -> None:
    admin = await asyncpg.connect(_dsn(SERVER_URL), timeout=3)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{RUN_DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _run_database_created:
        asyncio.run(_drop_run_database())


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'duka.sqlite3'}"
    return await fresh_postgres_url()


async def fresh_postgres_url() -> str:
    """This run's PostgreSQL database, emptied; the test is skipped (failed in CI) when
    PostgreSQL cannot be used."""
    problem = await _reset_postgres()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(problem)
        pytest.skip(problem)
    return POSTGRES_URL


@pytest.fixture
async def postgres_url() -> str:
    """A fresh, empty PostgreSQL database (for what only PostgreSQL does: several processes)."""
    return await fresh_postgres_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'duka.sqlite3'}"


@pytest.fixture
def free_socket() -> Iterator[socket.socket]:
    """A listening-ready socket on 127.0.0.1, so the callback URL knows its port up front."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


CALLBACK_SECRET = "test-secret-0123456789abcdefghijklmnop"
# The run's own data key (phone numbers are sealed at rest with it): made, never stored.
DATA_KEY = generate_key()
TEST_TOML = """
[shop]
name = "Test Duka"
[simulator]
callback_delay_seconds = 0.05
[reconciliation]
query_after_seconds = 0.2
query_interval_seconds = 0.2
expire_after_seconds = 1.0
max_queries_per_second = 50
sweep_interval_seconds = 0.1
[limits]
# Tests tap faster than people; the flood gate itself is tested with its own numbers.
chat_events_per_10_seconds = 60
"""


def make_config(
    database_url: str, port: int, tmp_path: Path, toml: str = "", **env: str
) -> AppConfig:
    config_file = tmp_path / "config.toml"
    config_file.write_text(toml or TEST_TOML)
    environment = {
        "DUKA_DATABASE_URL": database_url,
        "DUKA_HTTP_PORT": str(port),
        "MPESA_ENVIRONMENT": "simulator",
        "MPESA_CALLBACK_URL": f"http://127.0.0.1:{port}/hooks/stk/{CALLBACK_SECRET}",
        "DUKA_DATA_KEY": DATA_KEY,
        **env,
    }
    return load_config(env=environment, path=config_file)


@dataclass
class RunningDuka:
    app: web.Application
    base_url: str
    config: AppConfig

    @property
    def engine(self) -> AsyncEngine:
        return self.app[ENGINE]

    @property
    def simulator(self) -> DarajaSimulator:
        return self.app[SIMULATOR].simulator

    @property
    def callback_url(self) -> str:
        return self.config.daraja.callback_url


async def start_duka(
    config: AppConfig, sock: socket.socket, *, run_reconciler: bool = False, **options: Any
) -> tuple[RunningDuka, web.AppRunner]:
    app = build_app(config, run_reconciler=run_reconciler, **options)
    runner = web.AppRunner(app, shutdown_timeout=2, access_log_class=access_logger_for(config))
    await runner.setup()
    await web.SockSite(runner, sock).start()
    host, port = sock.getsockname()[:2]
    return RunningDuka(app, f"http://{host}:{port}", config), runner


@pytest.fixture
async def duka(
    database_url: str, free_socket: socket.socket, tmp_path: Path
) -> AsyncIterator[RunningDuka]:
    """Duka with its embedded simulator, on SQLite and on PostgreSQL; reconciler off."""
    config = make_config(database_url, free_socket.getsockname()[1], tmp_path)
    running, runner = await start_duka(config, free_socket)
    try:
        yield running
    finally:
        await runner.cleanup()


@pytest.fixture
async def duka_sqlite(
    sqlite_url: str, free_socket: socket.socket, tmp_path: Path
) -> AsyncIterator[RunningDuka]:
    """Duka on SQLite only, for tests that are about HTTP, not the database."""
    config = make_config(sqlite_url, free_socket.getsockname()[1], tmp_path)
    running, runner = await start_duka(config, free_socket)
    try:
        yield running
    finally:
        await runner.cleanup()
