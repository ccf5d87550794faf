"""``duka backup FILE`` and ``duka restore FILE`` (see storage.backup and docs/operations.md).

Exit codes: 0 done; 2 nothing was done (the message says why and what to do). On
PostgreSQL both print the command of PostgreSQL's own tools to run instead, and exit 2,
so that a nightly job that copies nothing does not look like one that worked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bot.config import load_config
from storage.backup import (
    BackupError,
    ServerRunning,
    backup_sqlite,
    check_backup,
    pg_commands,
    restore_sqlite,
    sqlite_file,
)


def backup(file: Path, say: Callable[[str], None]) -> int:
    """Copy the configured database to ``file``, consistently, while the server runs."""
    config = load_config(with_catalog=False)
    database = sqlite_file(config.database_url)
    if database is None:
        command, _ = pg_commands(config.database_url, file)
        say(
            f"{config.database_url_key} is a PostgreSQL database, which pg_dump backs up: "
            f"run {command} (the password from PGPASSWORD or ~/.pgpass)"
        )
        return 2
    try:
        size = backup_sqlite(database, file)
    except (BackupError, OSError) as exc:
        say(f"No backup made: {_reason(exc)}")
        return 2
    say(f"Backed up {database} to {file} ({size} bytes).")
    return 0


def restore(file: Path, say: Callable[[str], None]) -> int:
    """Put backup ``file`` in place of the configured database (no server may run on it)."""
    config = load_config(with_catalog=False)
    database = sqlite_file(config.database_url)
    if database is None:
        _, command = pg_commands(config.database_url, file)
        say(
            f"{config.database_url_key} is a PostgreSQL database, which pg_restore restores: "
            f"stop duka, then run {command} (the password from PGPASSWORD or ~/.pgpass)"
        )
        return 2
    try:
        revision = check_backup(file)
        kept = restore_sqlite(file, database)
    except ServerRunning as exc:
        say(f"Nothing restored: {exc}. Stop it first (and start it again afterwards).")
        return 2
    except (BackupError, OSError) as exc:
        say(f"Nothing restored: {_reason(exc)}")
        return 2
    before = f"; the database it replaced is kept as {kept}" if kept else ""
    say(
        f"Restored {file} (schema revision {revision}) to {database}{before}. "
        "duka serve brings its schema up to date when it starts."
    )
    return 0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    return str(exc)
