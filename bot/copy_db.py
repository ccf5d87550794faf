"""``duka copy-db --from URL --to URL``: a whole Duka database into a new, empty one.

Its use is moving from SQLite to PostgreSQL (docs/deploy.md, step by step). The target is
migrated to this version's schema, then every table is copied as stored, in one
transaction (``storage.copy``). Each table's row count is printed, then one final line.

Refused, with one line naming the option and the fix, exit 2, and nothing written: a
database that cannot be opened; a source whose schema is not this version's (the source
is never written, so it is not migrated here: ``duka migrate`` does that); a target that
already holds rows (a copy never merges); a SQLite source (or target) that a
``duka serve`` has open, since what it wrote after the copy began would be missing from
the copy. A PostgreSQL source cannot be checked so: stop its servers first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import ConfigError
from bot.processes import STALE_AFTER
from bot.startup import database_reason, sqlstate
from storage.backup import sqlite_file
from storage.copy import (
    CopyRefused,
    NoSealing,
    copy_tables,
    count_rows,
    known_revisions,
    live_servers,
    no_server_on,
    occupied_tables,
    read_snapshot,
    schema_refusal,
    source_engine,
)
from storage.engine import create_engine, migrate
from storage.schema_version import stored_heads

DRIVERS = ("sqlite+aiosqlite://", "postgresql+asyncpg://")
HELP = (
    "copy a whole Duka database into a new, empty one, e.g. from SQLite to PostgreSQL: "
    "the target is migrated to this version's schema, then every table is copied as stored "
    "(phone numbers stay sealed: the same DUKA_DATA_KEY opens them) in one transaction. "
    "Stop duka serve first: it refuses while a server has the SQLite source open, and "
    "cannot tell for a PostgreSQL one. Refuses a target that holds any rows (never merges) "
    "and a source not at this version's schema (run duka migrate on it first); the source "
    "is only read"
)


async def copy_db(source_url: str, target_url: str, say: Callable[[str], None]) -> int:
    """Copy ``source_url`` into the empty ``target_url``; refusals raise ``ConfigError``."""
    _check_urls(source_url, target_url)
    with _no_server("--from", source_url), _no_server("--to", target_url):
        counts = await _copy(source_url, target_url, say)
    say(
        f"Copied {sum(counts.values())} rows in {len(counts)} tables from {_shown(source_url)} "
        f"to {_shown(target_url)}. Point DUKA_DATABASE_URL at the copy and start duka serve."
    )
    return 0


@contextlib.contextmanager
def _no_server(option: str, url: str) -> Iterator[None]:
    try:
        with no_server_on(url):
            yield
    except CopyRefused as exc:
        raise ConfigError(
            option,
            str(exc),
            "stop it first: what it wrote after the copy began would be missing from the copy",
        ) from None


async def _copy(source_url: str, target_url: str, say: Callable[[str], None]) -> dict[str, int]:
    source = source_engine(source_url)
    target = create_engine(target_url, NoSealing())
    try:
        await _reachable(source, "--from", source_url)
        async with read_snapshot(source) as reading:
            problem = await reading.run_sync(schema_refusal)
            if problem is not None:
                raise ConfigError(
                    "--from",
                    problem,
                    "bring it to this version's schema first with "
                    "DUKA_DATABASE_URL=<the --from URL> duka migrate (copy-db never writes to "
                    "it), or copy with the Duka version that made it",
                )
            since = datetime.now(UTC) - STALE_AFTER
            running = await reading.run_sync(live_servers, since)
            if running:
                raise ConfigError(
                    "--from",
                    f"{running} duka serve process(es) still use it, and what they write "
                    "after the copy starts would be left behind",
                    "stop them first (they are listed in /readyz)",
                )
            await _prepare_target(target, target_url)
            async with target.begin() as writing:
                _refuse_rows(await writing.run_sync(occupied_tables), target_url)
                counts = await copy_tables(reading, writing, lambda t, n: say(f"{t}: {n} rows"))
                if await writing.run_sync(count_rows) != counts:
                    raise ConfigError(  # raised inside the transaction: rolled back
                        "--to",
                        "the copy's row counts differ from the source's; nothing was written",
                        "run it again; if it happens again, report it",
                    )
        return counts
    except DBAPIError as exc:
        raise ConfigError(
            "--to",
            "the copy failed and was rolled back, the target is as it was "
            f"({database_reason(exc)})",
            "correct the cause and run duka copy-db again",
        ) from None
    finally:
        await source.dispose()
        await target.dispose()


async def _prepare_target(target: AsyncEngine, url: str) -> None:
    """Refuse a target with rows or a newer schema, before changing anything; migrate it."""
    await _reachable(target, "--to", url)
    async with target.connect() as conn:
        _refuse_rows(await conn.run_sync(occupied_tables), url)
        stored = await conn.run_sync(stored_heads)
    if not stored <= known_revisions():
        raise ConfigError(
            "--to",
            f"{_shown(url)} has a schema made by a newer Duka ({', '.join(sorted(stored))})",
            "copy into a new, empty database",
        )
    await migrate(target)


def _refuse_rows(occupied: list[str], url: str) -> None:
    if occupied:
        shown = ", ".join(occupied[:3]) + (", ..." if len(occupied) > 3 else "")
        raise ConfigError(
            "--to",
            f"{_shown(url)} already holds rows (in {shown}), and copy-db never merges",
            "copy into a new, empty database (e.g. createdb duka_new), or drop this one's "
            "tables yourself if it holds nothing you need",
        )


async def _reachable(engine: AsyncEngine, option: str, url: str) -> None:
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_nothing)
    except (OSError, DBAPIError) as exc:
        raise _unusable(option, url, exc) from None


def _nothing(_conn: Connection) -> None:
    pass


def _check_urls(source_url: str, target_url: str) -> None:
    for option, url in (("--from", source_url), ("--to", target_url)):
        if not url.startswith(DRIVERS):
            raise ConfigError(
                option,
                f"{url.split('://')[0]!r} is not a supported async driver",
                "use sqlite+aiosqlite:///path/to/file.sqlite3 or postgresql+asyncpg://user@host/db",
            )
    source = sqlite_file(source_url)
    if source is not None and not source.is_file():
        raise ConfigError(
            "--from",
            f"there is no SQLite database at {source}",
            "give the URL duka serve uses (its DUKA_DATABASE_URL, default "
            "sqlite+aiosqlite:///./var/duka.sqlite3, relative to where it runs)",
        )
    if _same_database(source_url, target_url):
        raise ConfigError("--to", "is the same database as --from", "copy into another database")


def _same_database(first: str, second: str) -> bool:
    one, other = sqlite_file(first), sqlite_file(second)
    if one is not None and other is not None:
        return one.resolve() == other.resolve()
    return make_url(first) == make_url(second)


def _unusable(option: str, url: str, exc: BaseException) -> ConfigError:
    """One line for a database that cannot be opened (as bot.startup does for serve)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return ConfigError(
            option,
            f"cannot open the SQLite file {Path(parsed.database or '')} ({database_reason(exc)})",
            "check the path and that this user may read it (and write it and its directory, "
            "for --to)",
        )
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    state = sqlstate(exc)
    if state == "3D000":
        return ConfigError(
            option,
            f"the database {parsed.database} does not exist on {where}",
            f"create it (createdb {parsed.database}) or correct the database name",
        )
    if state in {"28000", "28P01"}:
        return ConfigError(
            option,
            f"{where} refused the login of user {parsed.username} ({database_reason(exc)})",
            "correct the user and password, or allow the login in pg_hba.conf",
        )
    return ConfigError(
        option,
        f"cannot reach the database at {where} ({database_reason(exc)})",
        "start PostgreSQL there, or correct the host and port",
    )


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
