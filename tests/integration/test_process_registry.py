"""Every ``duka serve`` registers itself, and a second process is never silent (issue 10):
it is listed in /readyz, and where it cannot run (a second one on a SQLite file, a second
process beside a Telegram poller) it refuses to start with one line.

Two parts. ``ProcessRegistry`` driven directly, each "process" with a ``Database`` of its own
on the same SQLite file or PostgreSQL database. Then the real ``duka serve`` as subprocesses
(``duka serve`` exiting 2, both listed in ``/readyz``, a restart after a SIGKILL).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, insert, select

from bot.config import ConfigError
from bot.health import BackgroundTasks, ready_response
from bot.notifications import _due, _fan_out_to_merchants
from bot.processes import STALE_AFTER, ProcessRegistry, ProcessRow, ThisProcess, refusal
from payments.outbox import insert_outbox
from storage.engine import Database, migrate
from storage.leases import hold_lease, lease_holder
from storage.schema import outbox, processes
from storage.sealing import Sealer
from tests.conftest import fresh_postgres_url
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram
from tests.faults.process import DukaProcess
from tests.integration.conftest import databases_on
from tests.integration.test_outbox_concurrency import low_stock

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
HERE = "this-host"
ELSEWHERE = "other-host"


def me(name: str, *, polls: bool = False, host: str = ELSEWHERE, pid: int = 100) -> ThisProcess:
    """A process on another host than the test's, so that its pid is never looked up."""
    return ThisProcess(name, polls, host, pid, "0.1.0")


@pytest.fixture
async def pg_databases(postgres_url: str) -> AsyncIterator[Callable[[], Database]]:
    """``databases`` on PostgreSQL only: one SQLite file refuses a second process."""
    async with databases_on(postgres_url) as open_one:
        yield open_one


def registry(
    database: Database,
    process: ThisProcess,
    *,
    clock: Callable[[], datetime] = lambda: NOW,
    running: Callable[[int], bool] = lambda pid: True,
) -> ProcessRegistry:
    return ProcessRegistry(database, process, clock=clock, pid_running=running)


def is_postgres(database: Database) -> bool:
    return not database.is_sqlite


async def stored(database: Database) -> list[str]:
    def ids(conn: Connection) -> list[str]:
        return list(conn.execute(select(processes.c.id).order_by(processes.c.id)).scalars())

    return await database.transaction(ids)


async def put_row(database: Database, row: ProcessRow) -> None:
    def put(conn: Connection) -> None:
        conn.execute(insert(processes).values(**dataclasses.asdict(row)))

    await database.transaction(put)


def row(
    name: str, *, seen: datetime = NOW, host: str = ELSEWHERE, pid: int = 7, polls: bool = False
) -> ProcessRow:
    return ProcessRow(name, host, pid, "0.0.9", seen - timedelta(hours=1), seen, polls)


# --- ProcessRegistry on real databases ---------------------------------------------------


async def test_a_second_process_on_one_sqlite_file_is_refused_in_one_line(
    sqlite_url: str,
) -> None:
    sealer = Sealer(secrets.token_bytes(32))
    first_db, second_db = Database(sqlite_url, sealer), Database(sqlite_url, sealer)
    try:
        await migrate(first_db.engine)
        await registry(first_db, me("first", pid=41)).register()

        with pytest.raises(ConfigError) as refused:
            await registry(second_db, me("second", pid=42)).register()

        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith("Configuration error in DUKA_DATABASE_URL: another duka serve")
        assert f"pid 41 on {ELSEWHERE}, started 2026-12-02 09:00:00 UTC" in message
        assert "Fix: run one server per SQLite file, or move to PostgreSQL" in message
        assert await stored(first_db) == ["first"]
    finally:
        await first_db.dispose()
        await second_db.dispose()


async def test_a_second_telegram_poller_is_refused(
    databases: Callable[[], Database],
) -> None:
    """On PostgreSQL for the poller's reason; on SQLite a second process is refused anyway."""
    first = databases()
    await registry(first, me("first", polls=True)).register()

    with pytest.raises(ConfigError) as refused:
        await registry(databases(), me("second", polls=True, pid=101)).register()

    expected = "TELEGRAM_WEBHOOK_URL" if is_postgres(first) else "DUKA_DATABASE_URL"
    assert refused.value.key == expected
    if is_postgres(first):
        assert "polls Telegram" in refused.value.problem
        assert "set TELEGRAM_WEBHOOK_URL (webhook mode)" in refused.value.fix
    assert await stored(first) == ["first"]


async def test_webhook_processes_run_side_by_side_on_postgresql(
    pg_databases: Callable[[], Database],
) -> None:
    databases = pg_databases  # several processes are PostgreSQL's
    first = databases()
    registries = [
        registry(databases(), me(name, pid=pid)) for name, pid in (("a", 1), ("b", 2), ("c", 3))
    ]
    for each in registries:
        await each.register()

    assert await stored(first) == ["a", "b", "c"]
    listed = await registries[1].listing()
    assert [(p["pid"], p["this"]) for p in listed] == [(1, False), (2, True), (3, False)]
    assert {p["host"] for p in listed} == {ELSEWHERE}
    assert {p["polls_telegram"] for p in listed} == {False}


async def test_each_process_is_told_how_many_share_the_bot(
    pg_databases: Callable[[], Database],
) -> None:
    """So that each keeps to its share of Telegram's ~30 messages/s."""
    databases = pg_databases  # several processes are PostgreSQL's
    first = databases()
    counts: dict[str, list[int]] = {"a": [], "b": []}

    def told(name: str, pid: int) -> ProcessRegistry:
        return ProcessRegistry(
            first,
            me(name, pid=pid),
            clock=lambda: NOW,
            pid_running=lambda _: True,
            on_count=counts[name].append,
        )

    a, b = told("a", 1), told("b", 2)
    await a.register()
    await b.register()
    await a.renew()
    await b.unregister()
    await a.renew()
    assert counts == {"a": [1, 2, 1], "b": [2]}
    assert a.processes == 1


async def test_a_poller_is_refused_beside_a_webhook_process_and_the_other_way_round(
    pg_databases: Callable[[], Database],
) -> None:
    """A poller's deleteWebhook would end the other's webhook; a webhook ends the polling."""
    databases = pg_databases  # several processes are PostgreSQL's
    first = databases()
    webhook = registry(first, me("webhook"))
    await webhook.register()
    with pytest.raises(ConfigError, match="would poll Telegram") as refused:
        await registry(databases(), me("poller", polls=True, pid=101)).register()
    assert refused.value.key == "TELEGRAM_WEBHOOK_URL"
    await webhook.unregister()

    await registry(first, me("poller", polls=True)).register()
    with pytest.raises(ConfigError, match="polls Telegram"):
        await registry(databases(), me("webhook", pid=101)).register()
    assert await stored(first) == ["poller"]


async def test_two_pollers_starting_at_the_same_moment_one_is_refused(
    databases: Callable[[], Database],
) -> None:
    """The check and the insert are one transaction, under a lock on PostgreSQL."""
    contenders = [
        registry(databases(), me(f"p{i}", polls=True, pid=200 + i)).register() for i in range(4)
    ]

    outcomes = await asyncio.gather(*contenders, return_exceptions=True)

    assert sum(outcome is None for outcome in outcomes) == 1, outcomes
    assert all(isinstance(o, ConfigError) for o in outcomes if o is not None), outcomes


async def test_a_process_not_seen_for_the_stale_time_does_not_block_and_is_deleted(
    databases: Callable[[], Database],
) -> None:
    first = databases()
    await put_row(first, row("crashed", seen=NOW - STALE_AFTER - timedelta(seconds=1), polls=True))
    await put_row(first, row("old", seen=NOW - timedelta(days=3)))

    await registry(databases(), me("new", polls=True)).register()

    assert await stored(first) == ["new"]


async def test_a_process_seen_just_now_still_blocks(databases: Callable[[], Database]) -> None:
    first = databases()
    await put_row(first, row("alive", seen=NOW - STALE_AFTER + timedelta(seconds=1), polls=True))

    with pytest.raises(ConfigError, match=r"pid 7 on other-host, .*last seen 29 s ago"):
        await registry(databases(), me("new", polls=True)).register()


async def test_a_killed_process_on_this_host_does_not_block_its_restart(
    databases: Callable[[], Database],
) -> None:
    """SIGKILL then restart: its pid is not running here, so it need not go stale first."""
    first = databases()
    await put_row(first, row("killed", host=HERE, pid=300, polls=True))
    await put_row(first, row("alive", host=HERE, pid=301, polls=True))

    def running(pid: int) -> bool:
        return pid == 301

    with pytest.raises(ConfigError, match="pid 301 on this-host"):
        await registry(databases(), me("new", host=HERE, pid=302), running=running).register()
    assert await stored(first) == ["alive", "killed"], "a refused start changes nothing"

    await first.transaction(
        lambda conn: conn.execute(processes.delete().where(processes.c.pid == 301))
    )
    await registry(databases(), me("new", host=HERE, pid=302), running=running).register()
    assert await stored(first) == ["new"]


async def test_a_dead_process_outbox_claims_and_leases_are_freed_at_once(
    databases: Callable[[], Database],
) -> None:
    """Killed and restarted on this host: its claimed messages and its reconciler lease
    go to whoever is free now, not after their 60 s."""
    first = databases()
    await put_row(first, row("killed", host=HERE, pid=300))

    def work_of_the_killed(conn: Connection) -> None:
        insert_outbox(conn, [low_stock("unga")], NOW)
        _fan_out_to_merchants(conn, ["slow:1"], NOW)
        assert len(_due(conn, NOW, 10, "killed")) == 1
        assert hold_lease(conn, "reconciler", "killed", NOW, timedelta(seconds=60))

    await first.transaction(work_of_the_killed)
    await registry(databases(), me("new", host=HERE, pid=302), running=lambda _: False).register()

    def claimed(conn: Connection) -> list[object]:
        pending = select(outbox.c.claimed_by).where(outbox.c.status == "pending")
        return list(conn.execute(pending).scalars())

    assert await first.transaction(claimed) == [None]
    assert await first.transaction(lease_holder, "reconciler", NOW) is None


async def test_a_former_run_with_this_host_and_pid_is_not_another_process(
    databases: Callable[[], Database],
) -> None:
    """A container restarted as pid 1 finds its former run's row, with its own pid."""
    first = databases()
    await put_row(first, row("former", host=HERE, pid=1, polls=True))

    await registry(databases(), me("now", host=HERE, pid=1, polls=True)).register()

    # Its former run cannot be running (the pid is this one's): its row, claims and leases
    # go at once, so the count of processes sharing the bot is right from the start.
    assert await stored(first) == ["now"]


async def test_registered_while_running_renewed_and_deleted_at_stop(
    databases: Callable[[], Database],
) -> None:
    database = databases()
    now = [NOW]
    background = BackgroundTasks()
    process = registry(database, me("running"), clock=lambda: now[0])

    async with process.running(background):
        assert await stored(database) == ["running"]
        assert background.states() == {"process_registry": True}
        now[0] = NOW + timedelta(minutes=5)
        await process.renew()
        (listed,) = await process.listing()
        assert listed["seen_at"] == now[0].isoformat()
        assert listed["started_at"] == NOW.isoformat()
        assert listed["this"] is True

    assert await stored(database) == []
    assert background.states() == {"process_registry": False}


async def test_a_row_taken_away_as_stale_is_registered_again_at_renewal(
    databases: Callable[[], Database],
) -> None:
    database = databases()
    process = registry(database, me("stalled"))
    await process.register()
    await database.transaction(lambda conn: conn.execute(processes.delete()))

    await process.renew()

    assert await stored(database) == ["stalled"]


async def test_the_renewal_task_renews_seen_at(databases: Callable[[], Database]) -> None:
    database = databases()
    ticks = iter(NOW + timedelta(seconds=s) for s in range(1000))
    process = ProcessRegistry(
        database, me("ticking"), clock=lambda: next(ticks), renew_seconds=0.01
    )
    async with process.running(BackgroundTasks()):
        await asyncio.sleep(0.2)

        def seen(conn: Connection) -> datetime:
            when: datetime = conn.execute(select(processes.c.seen_at)).scalar_one()
            return when

        assert await database.transaction(seen) > NOW + timedelta(seconds=2)


async def test_readyz_lists_the_live_processes(databases: Callable[[], Database]) -> None:
    database = databases()
    await put_row(database, row("gone", seen=NOW - timedelta(hours=1)))
    process = registry(database, me("this", pid=8))
    await process.register()
    await put_row(database, row("other", seen=NOW, polls=True))  # came later, somehow

    answer = await ready_response(database, BackgroundTasks(), process.listing)

    body = json.loads(answer.text or "")
    assert answer.status == 200
    assert [(p["pid"], p["this"]) for p in body["processes"]] == [(7, False), (8, True)]
    assert set(body["processes"][1]) == {
        "host",
        "pid",
        "version",
        "started_at",
        "seen_at",
        "polls_telegram",
        "this",
    }


async def test_readyz_without_a_registry_has_no_process_list(
    databases: Callable[[], Database],
) -> None:
    answer = await ready_response(databases(), BackgroundTasks())
    assert "processes" not in json.loads(answer.text or "")


# --- the decision, on its own ------------------------------------------------------------


def test_alone_anything_may_start() -> None:
    for sqlite in (True, False):
        for polls in (True, False):
            assert refusal(me("x", polls=polls), [], NOW, sqlite=sqlite, database_key="K") is None


def test_sqlite_is_named_by_the_key_the_url_came_from() -> None:
    problem = refusal(me("x"), [row("y")], NOW, sqlite=True, database_key="database.url")
    assert problem is not None
    assert problem.key == "database.url"


# --- the real ``duka serve``, as subprocesses ---------------------------------------------


def refused_start(process: DukaProcess, timeout: float = 30.0) -> tuple[int, list[str]]:
    """Run ``duka serve`` expecting it to stop by itself: (exit code, what it printed)."""
    done = subprocess.run(  # noqa: S603 - our own command
        [str(Path(sys.executable).parent / "duka"), "serve"],
        cwd=process.workdir,
        env=process.env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stderr.decode().splitlines()


def the_one_refusal(code: int, printed: list[str], first: DukaProcess) -> str:
    """The refused start's single error line, which names the first process's pid."""
    assert code == 2, printed
    errors = [line for line in printed if line.startswith("Configuration error")]
    assert len(errors) == 1, printed
    assert not any("Traceback" in line for line in printed), printed
    assert f"(pid {pid_of(first)} on " in errors[0]
    assert first.process is not None
    assert first.process.poll() is None, "the first one runs on"
    return errors[0]


async def test_a_second_duka_serve_on_one_sqlite_file_exits_2_naming_the_first(
    tmp_path: Path,
) -> None:
    first = DukaProcess(tmp_path)
    second = DukaProcess(
        workdir(tmp_path, "second"), DUKA_DATABASE_URL=first.env["DUKA_DATABASE_URL"]
    )
    try:
        await first.start()
        assert first.process is not None

        line = the_one_refusal(*await asyncio.to_thread(refused_start, second), first)

        assert line.startswith("Configuration error in DUKA_DATABASE_URL: another duka serve ")
        assert "Fix: run one server per SQLite file, or move to PostgreSQL" in line
    finally:
        first.stop_quietly()


async def test_duka_serve_restarts_at_once_after_a_sigkill_on_sqlite(tmp_path: Path) -> None:
    """Its row is still fresh, but its pid is gone: no waiting out the stale time."""
    process = DukaProcess(tmp_path)
    try:
        await process.start()
        process.kill()
        await process.start()
        body = (await get_json(f"{process.url}/readyz"))["processes"]
        assert [(p["pid"], p["this"]) for p in body] == [(pid_of(process), True)]
    finally:
        process.stop_quietly()


async def test_two_duka_serve_on_postgresql_both_run_and_list_each_other(
    tmp_path: Path,
) -> None:
    url = await fresh_postgres_url()
    started = [DukaProcess(workdir(tmp_path, name), DUKA_DATABASE_URL=url) for name in "ab"]
    try:
        for each in started:
            await each.start(ready_path="/readyz")
        for each in started:
            listed = (await get_json(f"{each.url}/readyz"))["processes"]
            assert {p["pid"] for p in listed} == {pid_of(p) for p in started}
            assert [p["pid"] for p in listed if p["this"]] == [pid_of(each)]

        code, _ = await started[1].terminate()
        assert code == 0
        listed = (await get_json(f"{started[0].url}/readyz"))["processes"]
        assert [p["this"] for p in listed] == [True], "a stopped process deletes its row"
    finally:
        for each in started:
            each.stop_quietly()


async def test_a_second_telegram_poller_on_postgresql_exits_2_asking_for_webhook_mode(
    tmp_path: Path,
) -> None:
    url = await fresh_postgres_url()
    async with FakeTelegram() as fake:
        telegram = {"TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN, "TELEGRAM_API_BASE_URL": fake.base_url}
        first = DukaProcess(workdir(tmp_path, "a"), DUKA_DATABASE_URL=url, **telegram)
        second = DukaProcess(workdir(tmp_path, "b"), DUKA_DATABASE_URL=url, **telegram)
        try:
            await first.start()
            assert first.process is not None

            line = the_one_refusal(*await asyncio.to_thread(refused_start, second), first)

            assert line.startswith("Configuration error in TELEGRAM_WEBHOOK_URL: another duka ")
            assert "Fix: set TELEGRAM_WEBHOOK_URL (webhook mode)" in line
        finally:
            first.stop_quietly()


def workdir(parent: Path, name: str) -> Path:
    (parent / name).mkdir()
    return parent / name


def pid_of(process: DukaProcess) -> int:
    assert process.process is not None
    return process.process.pid


async def get_json(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(url)
    body: dict[str, Any] = answer.json()
    return body
