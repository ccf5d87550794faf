"""Every running ``duka serve`` on one database, registered in ``processes`` (issue 10), so
that a second process is never silent: it is listed in ``/readyz``, and a configuration
that cannot run as several processes refuses to start the second one, with one line.

At start, in one transaction (on PostgreSQL under an advisory lock, so two processes
starting at once cannot both miss each other), a process deletes the rows of processes
that are gone, looks at the live ones, and either refuses or inserts its own row. It then
renews ``seen_at`` every ``RENEW_SECONDS`` and deletes its row at shutdown.

A row is gone when its ``seen_at`` is older than ``STALE_AFTER`` (the process crashed or
hangs), or at once when it is on this host and its pid is not running (a SIGKILL and a
restart must not wait out ``STALE_AFTER``). A row on this host with this pid is a former
run of this very process (a container restarted as pid 1) or, in the tests, another app in
the same Python process: never counted as another process.

Who may start, given the other live processes::

    this process \\ others     none   any (SQLite)   one polls Telegram   none polls (PostgreSQL)
    polls Telegram             yes    no             no                   no
    webhook or no Telegram     yes    no             no                   yes

SQLite is one process per file (the server lock is shared, so it does not stop a second
``duka serve``; this does). Polling Telegram is one process per bot: a second poller gets
409 Conflict, and a webhook set by another process ends polling (and polling's
``deleteWebhook`` ends the webhook). So several processes need PostgreSQL and, with
Telegram, ``TELEGRAM_WEBHOOK_URL`` on every one of them.

Times are each process's clock: processes sharing a database are assumed to keep time
(NTP) to well within ``STALE_AFTER - RENEW_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import Connection, delete, insert, select, text, update

from bot.config import AppConfig, ConfigError
from bot.health import BackgroundTasks, ProcessList
from bot.outbox_claims import release_claims
from payments.service import utc_now
from storage.engine import Database
from storage.schema import leases, processes

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(seconds=30)
RENEW_SECONDS = 10.0
SEVERAL_PROCESSES_DOC = "docs/deploy.md"
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('duka-processes', 0))")
_PACKAGE = "duka"  # pyproject.toml's project name


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One registered process, as stored."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime
    polls_telegram: bool

    def describe(self, now: datetime) -> str:
        """``pid 41 on web-1, started 2026-12-02 09:00:00 UTC, last seen 4 s ago``."""
        ago = max(0, round((now - self.seen_at).total_seconds()))
        return (
            f"pid {self.pid} on {self.host}, started {self.started_at:%Y-%m-%d %H:%M:%S} UTC, "
            f"last seen {ago} s ago"
        )


@dataclass(frozen=True, slots=True)
class ThisProcess:
    """What this process registers as."""

    id: str
    polls_telegram: bool
    host: str
    pid: int
    version: str

    @classmethod
    def here(cls, process_id: str, *, polls_telegram: bool) -> ThisProcess:
        return cls(process_id, polls_telegram, this_host(), os.getpid(), version())

    def is_me_or_my_former_run(self, row: ProcessRow) -> bool:
        # Two live processes that see the same pids (``this_host``) never share a pid.
        return row.id == self.id or (row.host == self.host and row.pid == self.pid)


def this_host() -> str:
    """The host name, and the pid namespace where pids are looked up: containers sharing a
    host name (host networking) each have their own, and a pid seen in one says nothing of
    another (both may run as pid 1)."""
    name = socket.gethostname()
    with contextlib.suppress(OSError):
        name += " " + os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    return name[:255]


def version() -> str:
    try:
        return importlib.metadata.version(_PACKAGE)[:32]
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def pid_running(pid: int) -> bool:
    """Whether a process with this pid runs on this host (whoever's it is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def is_gone(
    row: ProcessRow, me: ThisProcess, now: datetime, pid_running: Callable[[int], bool]
) -> bool:
    """Crashed or hung: its row may be deleted."""
    if row.seen_at < now - STALE_AFTER:
        return True
    return row.host == me.host and row.pid != me.pid and not pid_running(row.pid)


def certainly_dead(row: ProcessRow, me: ThisProcess, pid_running: Callable[[int], bool]) -> bool:
    """Another run on this host that is not running any more (its pid is gone, or is now
    this process's): what it held can be taken at once, not when its leases lapse."""
    if row.id == me.id or row.host != me.host:
        return False
    return row.pid == me.pid or not pid_running(row.pid)


def release_work_of(conn: Connection, process_ids: Sequence[str]) -> None:
    """Give up the outbox claims and leases of processes known to be dead, so that another
    sends their messages and runs their jobs now (a restart after a crash is immediate)."""
    if not process_ids:
        return
    release_claims(conn, process_ids)
    conn.execute(delete(leases).where(leases.c.holder.in_(process_ids)))


def refusal(
    me: ThisProcess,
    others: Sequence[ProcessRow],
    now: datetime,
    *,
    sqlite: bool,
    database_key: str,
) -> ConfigError | None:
    """Why this process may not start beside ``others`` (live, not this one), if it may not."""
    if not others:
        return None
    if sqlite:
        return ConfigError(
            database_key,
            f"another duka serve ({others[0].describe(now)}) uses this SQLite database",
            f"run one server per SQLite file, or move to PostgreSQL ({SEVERAL_PROCESSES_DOC})",
        )
    poller = next((row for row in others if row.polls_telegram), None)
    if poller is not None:
        return ConfigError(
            "TELEGRAM_WEBHOOK_URL",
            f"another duka serve ({poller.describe(now)}) polls Telegram on this database, "
            "and a second process would take its updates away (409 Conflict)",
            "set TELEGRAM_WEBHOOK_URL (webhook mode) on every process to run several, "
            "then restart that one first",
        )
    if me.polls_telegram:
        return ConfigError(
            "TELEGRAM_WEBHOOK_URL",
            f"this process would poll Telegram, but another duka serve ({others[0].describe(now)}) "
            "runs on this database: Telegram gives updates to one poller only",
            "set TELEGRAM_WEBHOOK_URL (webhook mode) to run several processes",
        )
    return None


class ProcessRegistry:
    """This process's row in ``processes``: registered at start, renewed, deleted at stop."""

    def __init__(
        self,
        database: Database,
        me: ThisProcess,
        *,
        database_key: str = "DUKA_DATABASE_URL",
        clock: Callable[[], datetime] = utc_now,
        renew_seconds: float = RENEW_SECONDS,
        pid_running: Callable[[int], bool] = pid_running,
        on_count: Callable[[int], None] | None = None,
    ) -> None:
        self._database = database
        # Told how many processes run (this one included) at start and at each renewal:
        # Telegram's budget is the bot's, shared out among them.
        self._on_count = on_count
        self.processes = 1  # live processes at the last count, this one included
        self.me = me
        self._database_key = database_key
        self._clock = clock
        self._renew_seconds = renew_seconds
        self._pid_running = pid_running
        self._started_at: datetime | None = None

    async def register(self) -> None:
        """Insert this process's row, or raise ``ConfigError`` if it may not run beside the
        live ones."""
        self._started_at = self._clock()
        await self._database.transaction(self._register, self._started_at)
        await self._count()
        log.info("registered as pid %d on %s (process %s)", self.me.pid, self.me.host, self.me.id)

    def _register(self, conn: Connection, now: datetime) -> None:
        if not self._database.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serializes
            conn.execute(_LOCK)
        rows = _rows(conn)
        dead = [r.id for r in rows if certainly_dead(r, self.me, self._pid_running)]
        release_work_of(conn, dead)
        gone = [r.id for r in rows if r.id in dead or is_gone(r, self.me, now, self._pid_running)]
        if gone:
            conn.execute(delete(processes).where(processes.c.id.in_(gone)))
        others = [r for r in rows if r.id not in gone and not self.me.is_me_or_my_former_run(r)]
        problem = refusal(
            self.me, others, now, sqlite=self._database.is_sqlite, database_key=self._database_key
        )
        if problem is not None:
            raise problem
        self._insert(conn, now)

    def _insert(self, conn: Connection, now: datetime) -> None:
        assert self._started_at is not None
        conn.execute(
            insert(processes).values(
                id=self.me.id,
                host=self.me.host,
                pid=self.me.pid,
                version=self.me.version,
                started_at=self._started_at,
                seen_at=now,
                polls_telegram=self.me.polls_telegram,
            )
        )

    async def renew(self) -> None:
        """Mark this process as seen now (and register it again if its row was taken away)."""
        await self._database.transaction(self._renew, self._clock())
        await self._count()

    async def _count(self) -> None:
        if self._on_count is not None:
            self.processes = max(1, len(await self.live()))
            self._on_count(self.processes)

    def _renew(self, conn: Connection, now: datetime) -> None:
        dead = [r.id for r in _rows(conn) if certainly_dead(r, self.me, self._pid_running)]
        if dead:
            release_work_of(conn, dead)
            conn.execute(delete(processes).where(processes.c.id.in_(dead)))
        renewed = conn.execute(
            update(processes).where(processes.c.id == self.me.id).values(seen_at=now)
        )
        if renewed.rowcount == 0:
            # Another process found this one silent for STALE_AFTER (a stall, a database
            # outage) and deleted its row; it may even have started where this one would
            # have refused it. Say so, and be listed again.
            log.warning(
                "this process's registration was deleted as stale (no renewal for %d s); "
                "registering again",
                STALE_AFTER.total_seconds(),
            )
            if not self._database.is_sqlite:
                conn.execute(_LOCK)
            self._insert(conn, now)

    async def run_forever(self) -> None:
        """Renew every ``renew_seconds`` until cancelled; a failed renewal is tried again."""
        while True:
            await asyncio.sleep(self._renew_seconds)
            try:
                await self.renew()
            except Exception:
                # The database being away is /readyz's to report; the row lapses meanwhile.
                log.warning("could not renew this process's registration", exc_info=True)

    async def unregister(self) -> None:
        """Delete this process's row; if the database is away, it lapses by itself."""
        try:
            await self._database.transaction(self._delete)
        except Exception:
            log.warning("could not delete this process's registration", exc_info=True)

    def _delete(self, conn: Connection) -> None:
        conn.execute(delete(processes).where(processes.c.id == self.me.id))

    async def live(self) -> list[ProcessRow]:
        """The processes seen within ``STALE_AFTER``, oldest first."""
        return await self._database.transaction(_live, self._clock() - STALE_AFTER)

    async def listing(self) -> list[dict[str, Any]]:
        """The live processes as ``/readyz`` shows them."""
        return [
            {
                "host": row.host,
                "pid": row.pid,
                "version": row.version,
                "started_at": row.started_at.isoformat(),
                "seen_at": row.seen_at.isoformat(),
                "polls_telegram": row.polls_telegram,
                "this": row.id == self.me.id,
            }
            for row in await self.live()
        ]

    @contextlib.asynccontextmanager
    async def running(self, background: BackgroundTasks) -> AsyncIterator[None]:
        """Registered, and renewed by a task ``background`` watches, until the block ends."""
        await self.register()
        task = background.watch_task(
            "process_registry", asyncio.create_task(self.run_forever(), name="process-registry")
        )
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.unregister()


def _rows(conn: Connection) -> list[ProcessRow]:
    return [ProcessRow(**row._mapping) for row in conn.execute(select(processes))]


def _live(conn: Connection, since: datetime) -> list[ProcessRow]:
    query = (
        select(processes)
        .where(processes.c.seen_at >= since)
        .order_by(processes.c.started_at, processes.c.id)
    )
    return [ProcessRow(**row._mapping) for row in conn.execute(query)]


REGISTRY = web.AppKey("process_registry", ProcessRegistry)


def polls_telegram(config: AppConfig) -> bool:
    """Whether ``duka serve`` with this configuration fetches Telegram updates by polling."""
    return config.telegram is not None and not config.telegram.webhook_url


def registry_context(
    config: AppConfig,
    process_id: str,
    database: Callable[[], Database],
    background: BackgroundTasks,
    *,
    clock: Callable[[], datetime] = utc_now,
    renew_seconds: float = RENEW_SECONDS,
    on_count: Callable[[int], None] | None = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that registers this process (after the database is open, before
    any channel starts): start-up fails with a ``ConfigError`` where it may not run."""

    async def registered(app: web.Application) -> AsyncIterator[None]:
        registry = ProcessRegistry(
            database(),
            ThisProcess.here(process_id, polls_telegram=polls_telegram(config)),
            database_key=config.database_url_key,
            clock=clock,
            renew_seconds=renew_seconds,
            on_count=on_count,
        )
        async with registry.running(background):
            app[REGISTRY] = registry
            yield

    return registered


def readyz_processes(app: web.Application) -> ProcessList | None:
    """What ``bot.health.ready_response`` lists as ``processes``: None before registration."""
    registry = app.get(REGISTRY)
    return None if registry is None else registry.listing
