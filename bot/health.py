"""Readiness (``/readyz``): the database answers, its schema is the code's, and every
background task that keeps money and messages moving is alive.

``/healthz`` (in ``bot.app``) stays a liveness check: it asks nothing of the database, so a
database outage makes the process unready (taken out of rotation) but not restarted.

Each cleanup context that starts a background task registers it here, by name, with a
way to tell it is alive: the task object itself (alive until it is done, whether it
ended, raised or was cancelled) or, for an object that owns its task, a predicate.

With several processes on one database (``bot.processes``), the body also lists every live
one, so that a second process is never silent; the list informs, it does not decide
readiness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from storage.engine import Database
from storage.schema_version import schema_problem

log = logging.getLogger(__name__)
DATABASE_TIMEOUT_SECONDS = 5.0
# The live processes on the database, as /readyz lists them (bot.processes).
ProcessList = Callable[[], Awaitable[list[dict[str, Any]]]]


class BackgroundTasks:
    """The background work that must be running for Duka to be ready, by name."""

    def __init__(self) -> None:
        self._alive: dict[str, Callable[[], bool]] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    def watch(self, name: str, alive: Callable[[], bool]) -> None:
        self._alive[name] = alive

    def watch_task(self, name: str, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        self._tasks[name] = task
        self.watch(name, lambda: not task.done())
        return task

    def task(self, name: str) -> asyncio.Task[Any]:
        """The task registered under ``name`` (for shutdown code and the tests)."""
        return self._tasks[name]

    def states(self) -> dict[str, bool]:
        """Each watched task's name and whether it is alive."""
        return {name: alive() for name, alive in sorted(self._alive.items())}


async def readiness(
    database: Database | None, background: BackgroundTasks
) -> tuple[bool, dict[str, str]]:
    """Whether Duka is ready, and each check's answer (``ok`` or what is wrong)."""
    checks: dict[str, str] = {}
    checks["database"], checks["migrations"] = await _database_checks(database)
    for name, alive in background.states().items():
        checks[name] = "ok" if alive else "not running"
    return all(answer == "ok" for answer in checks.values()), checks


async def _database_checks(database: Database | None) -> tuple[str, str]:
    if database is None:
        return "not open", "unknown"
    try:
        # Through the writer, as the callbacks go: a writer stuck behind a lock is unready.
        problem = await asyncio.wait_for(
            database.transaction(schema_problem), DATABASE_TIMEOUT_SECONDS
        )
    except TimeoutError:
        return f"no answer within {DATABASE_TIMEOUT_SECONDS:g} s", "unknown"
    except Exception as exc:
        log.warning("readiness: the database does not answer", exc_info=True)
        return f"error: {type(exc).__name__}", "unknown"
    return "ok", problem or "ok"


async def ready_response(
    database: Database | None,
    background: BackgroundTasks,
    processes: ProcessList | None = None,
) -> web.Response:
    """200 ``{"status": "ready", ...}``, else 503 naming what is failing; with ``processes``,
    also ``"processes": [...]`` (``null`` when the database cannot say)."""
    ready, checks = await readiness(database, background)
    failing = sorted(name for name, answer in checks.items() if answer != "ok")
    body: dict[str, Any] = {
        "status": "ready" if ready else "not ready",
        "failing": failing,
        "checks": checks,
    }
    if processes is not None:
        body["processes"] = await _processes(processes) if checks["database"] == "ok" else None
    return web.json_response(body, status=200 if ready else 503)


async def _processes(processes: ProcessList) -> list[dict[str, Any]] | None:
    try:
        return await asyncio.wait_for(processes(), DATABASE_TIMEOUT_SECONDS)
    except Exception:
        log.warning("readiness: cannot list the processes", exc_info=True)
        return None
